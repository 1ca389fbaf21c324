//! The credential extractor: what a request presents as a client token or an API key, read
//! the same way on every route.

use super::{api_key_allowed, bearer};
use crate::error::ApiError;

/// The credentials a request presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `Authorization: Bearer <…>`: an API key or a client token.
    header: Option<String>,
    /// `?token=`: a client token (browsers cannot set headers on a WebSocket).
    query: Option<String>,
}

impl Credentials {
    /// From the `Authorization` header's value and the `token` query parameter.
    pub fn new(authorization: Option<&str>, query_token: Option<&str>) -> Credentials {
        Credentials {
            header: authorization.and_then(bearer).map(str::to_owned),
            query: query_token.filter(|t| !t.is_empty()).map(str::to_owned),
        }
    }

    /// A client token: the bearer header, else `?token=`.
    pub fn client_token(&self) -> Result<&str, ApiError> {
        self.header
            .as_deref()
            .or(self.query.as_deref())
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing token: send Authorization: Bearer <jwt> or ?token=<jwt>".into(),
                )
            })
    }

    /// Whether the bearer header holds one of `keys`. An API key counts only in the header:
    /// `?token=` is for client tokens, and a key in a URL ends up in logs and browser history.
    pub fn has_api_key(&self, keys: &[String]) -> bool {
        !keys.is_empty()
            && self
                .header
                .as_deref()
                .is_some_and(|k| api_key_allowed(keys, k))
    }

    /// The API key routes' check: `503` when no key is configured (fail closed), `401` when it
    /// is missing or wrong.
    pub fn require_api_key(&self, keys: &[String]) -> Result<(), ApiError> {
        if keys.is_empty() {
            return Err(ApiError::NotConfigured("BROADCAST_API_KEYS"));
        }
        match &self.header {
            Some(_) if self.has_api_key(keys) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized("invalid API key".into())),
            None => Err(ApiError::Unauthorized(
                "missing API key: send Authorization: Bearer <key>".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        vec!["k1".into(), "k2".into()]
    }

    #[test]
    fn client_tokens_come_from_the_header_first() {
        let both = Credentials::new(Some("Bearer h.t.s"), Some("q.t.s"));
        assert_eq!(both.client_token(), Ok("h.t.s"));
        let query = Credentials::new(None, Some("q.t.s"));
        assert_eq!(query.client_token(), Ok("q.t.s"));
        let none = Credentials::new(Some("Basic xyz"), Some(""));
        assert_eq!(none.client_token().unwrap_err().status(), 401);
    }

    #[test]
    fn api_keys_only_count_in_the_header() {
        assert!(Credentials::new(Some("Bearer k2"), None).has_api_key(&keys()));
        assert!(!Credentials::new(None, Some("k2")).has_api_key(&keys()));
        assert!(!Credentials::new(Some("Bearer k2"), None).has_api_key(&[]));
        let code = |c: Credentials, k: &[String]| c.require_api_key(k).map_err(|e| e.code());
        assert_eq!(
            code(Credentials::new(Some("Bearer k1"), None), &keys()),
            Ok(())
        );
        assert_eq!(
            code(Credentials::new(Some("Bearer nope"), None), &keys()),
            Err("unauthorized")
        );
        assert_eq!(
            code(Credentials::new(None, Some("k1")), &keys()),
            Err("unauthorized")
        );
        assert_eq!(
            code(Credentials::new(Some("Bearer k1"), None), &[]),
            Err("not_configured")
        );
    }
}
