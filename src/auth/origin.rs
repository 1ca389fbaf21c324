//! The origin policy: which browser origins may open sockets and read cross-origin, decided in
//! one place for the upgrade check, the subscribe probe and CORS.

/// `ALLOWED_ORIGINS`: which browser origins may open sockets and read cross-origin. An empty
/// list allows every origin; a request without `Origin` is not a browser and is always allowed.
#[derive(Debug, Clone, Copy)]
pub struct OriginPolicy<'a>(pub &'a [String]);

impl OriginPolicy<'_> {
    /// Whether a request with this `Origin` header (if any) may proceed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => self.0.is_empty() || self.0.iter().any(|a| a == o.trim_end_matches('/')),
        }
    }

    /// The origin to echo in `Access-Control-Allow-Origin` (never `*`), when the request has an
    /// allowed one.
    pub fn cors<'o>(&self, origin: Option<&'o str>) -> Option<&'o str> {
        origin.filter(|o| self.allows(Some(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let list = vec!["https://app.example".to_string()];
        let strict = OriginPolicy(&list);
        assert!(strict.allows(None), "not a browser");
        assert!(strict.allows(Some("https://app.example/")));
        assert!(!strict.allows(Some("https://evil.example")));
        assert_eq!(
            strict.cors(Some("https://app.example")),
            Some("https://app.example")
        );
        assert_eq!(strict.cors(Some("https://evil.example")), None);
        let open = OriginPolicy(&[]);
        assert!(open.allows(Some("https://anything.example")));
        assert_eq!(
            open.cors(Some("https://x.example")),
            Some("https://x.example")
        );
        assert_eq!(open.cors(None), None);
    }
}
