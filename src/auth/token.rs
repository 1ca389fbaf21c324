//! Client tokens: the verifier built from the settings, the structure, header and algorithm
//! checks, the signature check (HS256 here; RS256, ES256 and EdDSA by WebCrypto on Workers, in
//! Rust natively), the errors, and HS256 signing for the demo page.

use std::fmt;
use std::sync::Arc;

use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{Algorithm, AlgorithmSignature, UntrustedToken};
use serde::Deserialize;
use serde_json::{json, Value};

use super::base64url;
use super::claims::{self, Claims};
use super::jwks::{jwks_cached, JwksKey};
use crate::config::Settings;
use crate::error::ApiError;

/// Longest token accepted, in bytes. Real tokens are well under 2 KiB; this bounds the work an
/// anonymous caller can cause before any signature check.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a client token was refused. Every variant is a `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// Not three base64url parts, bad JSON, an unknown `crit` header, too long...
    Malformed,
    /// `alg` is `none`, not supported, or not allowed by the configured keys.
    UnsupportedAlgorithm,
    /// The header's `kid` names no key of `JWT_JWKS`.
    UnknownKey,
    /// No configured key verifies the signature.
    BadSignature,
    /// `exp` (plus leeway) is past.
    Expired,
    /// `nbf` (minus leeway) is in the future.
    NotYetValid,
    /// `iss` differs from `JWT_ISSUER`.
    WrongIssuer,
    /// `aud` does not contain `JWT_AUDIENCE`.
    WrongAudience,
    /// A required claim is absent.
    MissingClaim(&'static str),
    /// A claim has the wrong type or an unusable value.
    InvalidClaim(&'static str),
}

impl fmt::Display for AuthError {
    /// Short messages that never contain any part of the token or of a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Malformed => f.write_str("token is malformed"),
            AuthError::UnsupportedAlgorithm => {
                f.write_str("token algorithm is not accepted by the configured keys")
            }
            AuthError::UnknownKey => f.write_str("token `kid` names no configured key"),
            AuthError::BadSignature => f.write_str("token signature does not verify"),
            AuthError::Expired => f.write_str("token expired"),
            AuthError::NotYetValid => f.write_str("token is not valid yet (`nbf`)"),
            AuthError::WrongIssuer => f.write_str("token issuer (`iss`) is not accepted"),
            AuthError::WrongAudience => f.write_str("token audience (`aud`) is not accepted"),
            AuthError::MissingClaim(claim) => write!(f, "token has no `{claim}` claim"),
            AuthError::InvalidClaim(claim) => write!(f, "token `{claim}` claim is invalid"),
        }
    }
}

impl std::error::Error for AuthError {}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> ApiError {
        ApiError::Unauthorized(err.to_string())
    }
}

/// Keys that verify client tokens, built from the settings. Holds HS256 secret and/or JWKS public keys.
///
/// Cheap to build per request: the secret is copied, and the parsed JWKS is shared through a
/// one-entry cache per isolate (`jwks_cached`, in `jwks.rs`).
#[derive(Clone)]
pub struct TokenVerifier {
    secret: Option<Hs256Key>,
    /// `pub(super)`: the JWKS tests in `jwks.rs` read it.
    pub(super) jwks: Arc<[JwksKey]>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret itself.
        f.debug_struct("TokenVerifier")
            .field("has_secret", &self.secret.is_some())
            .field("jwks_keys", &self.jwks.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The key families a token's `alg` can be verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Hmac,
    Rsa,
    P256,
    Ed25519,
}

impl Family {
    /// The only `alg` values accepted, each with the one key family it may be checked against.
    pub(super) fn of_alg(alg: &str) -> Option<Family> {
        match alg {
            "HS256" => Some(Family::Hmac),
            "RS256" => Some(Family::Rsa),
            "ES256" => Some(Family::P256),
            "EdDSA" | "Ed25519" => Some(Family::Ed25519),
            _ => None,
        }
    }
}

/// A token that passed [`TokenVerifier::inspect`]: what is left is the signature (unless it was
/// HS256, checked already) and then the claims.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// The keys the signature may verify with; empty when the signature has been verified.
    pub keys: Vec<JwksKey>,
    pub family: Family,
    /// `header.payload`: the signed bytes.
    pub signed: String,
    pub signature: Vec<u8>,
    payload: String,
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    //! RS256, ES256 and EdDSA checked in Rust, where there is no WebCrypto (unit tests).
    use super::*;
    use jwt_compact::alg::{Ed25519, Es256, Rsa, RsaPublicKey};
    use jwt_compact::jwk::JsonWebKey;

    pub(super) fn verifies(key: &JwksKey, signed: &[u8], signature: &[u8]) -> bool {
        let Ok(jwk) = serde_json::from_str::<JsonWebKey<'_>>(&key.jwk) else {
            return false;
        };
        match key.family {
            Family::Rsa => RsaPublicKey::try_from(&jwk)
                .is_ok_and(|k| signature_ok(&Rsa::rs256(), &k, signed, signature)),
            Family::P256 => <Es256 as Algorithm>::VerifyingKey::try_from(&jwk)
                .is_ok_and(|k| signature_ok(&Es256, &k, signed, signature)),
            Family::Ed25519 => <Ed25519 as Algorithm>::VerifyingKey::try_from(&jwk)
                .is_ok_and(|k| signature_ok(&Ed25519, &k, signed, signature)),
            Family::Hmac => false,
        }
    }
}

/// Checks `signature` over `signed` with `alg`, never panicking on a signature of the wrong size
/// (jwt-compact's `try_from_slice` for HS256 and EdDSA assumes the length was checked first, as
/// its `Validator` does; we do the same check here).
fn signature_ok<A: Algorithm>(
    alg: &A,
    key: &A::VerifyingKey,
    signed: &[u8],
    signature: &[u8],
) -> bool {
    if let Some(len) = A::Signature::LENGTH {
        if signature.len() != len.get() {
            return false;
        }
    }
    match A::Signature::try_from_slice(signature) {
        Ok(signature) => alg.verify_signature(&signature, key, signed),
        Err(_) => false,
    }
}

/// Header members beyond the ones jwt-compact reads.
#[derive(Debug, Clone, Deserialize)]
struct HeaderExtras {
    /// RFC 7515 §4.1.11: extensions the recipient must understand. We understand none.
    #[serde(default)]
    crit: Option<Value>,
}

impl TokenVerifier {
    /// The verifier for `JWT_SECRET` and/or `JWT_JWKS`, with `JWT_ISSUER` / `JWT_AUDIENCE`.
    ///
    /// - Neither key setting: `ApiError::NotConfigured("JWT_SECRET or JWT_JWKS")` (fail closed).
    /// - `JWT_JWKS` not valid JSON, not a key set, or without a single usable key:
    ///   `ApiError::Misconfigured { setting: "JWT_JWKS", .. }`. Individual keys that cannot
    ///   verify here (other `kty` or curve, `use` other than `sig`, `key_ops` without `verify`,
    ///   an `alg` we do not accept, RSA under 2048 bits, `oct` keys) are skipped, not fatal.
    ///
    /// A JWKS that is set but broken fails even when `JWT_SECRET` is set too: a typo in the key
    /// set must be loud, not silently leave only HS256 working.
    pub fn from_settings(s: &Settings) -> Result<TokenVerifier, ApiError> {
        if s.jwt_secret.is_none() && s.jwt_jwks.is_none() {
            return Err(ApiError::NotConfigured("JWT_SECRET or JWT_JWKS"));
        }
        let jwks = match &s.jwt_jwks {
            Some(raw) => jwks_cached(raw)?,
            None => Arc::from(Vec::new()),
        };
        Ok(TokenVerifier {
            secret: s.jwt_secret.as_deref().map(|k| Hs256Key::new(k.as_bytes())),
            jwks,
            issuer: s.jwt_issuer.clone(),
            audience: s.jwt_audience.clone(),
        })
    }

    /// Checks a token's structure, header and algorithm, picks the keys its signature may
    /// verify with, and verifies an HS256 signature at once.
    ///
    /// Order: structure and header, algorithm and key selection, signature, then (in
    /// [`TokenVerifier::claims`]) claims. A `kid` in the header selects JWKS keys by id (an id the
    /// JWKS lacks is [`AuthError::UnknownKey`]); without one every key of the algorithm's family
    /// is a candidate. HS256 ignores `kid`: the secret has no id.
    pub fn inspect(&self, token: &str) -> Result<Inspected, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let parsed: UntrustedToken<'_, HeaderExtras> =
            UntrustedToken::try_from(token).map_err(|_| AuthError::Malformed)?;
        if parsed.header().other_fields.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        // UntrustedToken checked there are exactly three dot-separated base64url parts.
        let (signed, _) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
        let payload = token.split('.').nth(1).ok_or(AuthError::Malformed)?;
        let signature = parsed.signature_bytes();

        let alg = parsed.algorithm();
        let family = Family::of_alg(alg).ok_or(AuthError::UnsupportedAlgorithm)?;
        let keys = if family == Family::Hmac {
            let secret = self
                .secret
                .as_ref()
                .ok_or(AuthError::UnsupportedAlgorithm)?;
            if !signature_ok(&Hs256, secret, signed.as_bytes(), signature) {
                return Err(AuthError::BadSignature);
            }
            Vec::new()
        } else {
            let mut candidates: Vec<&JwksKey> = match parsed.header().key_id.as_deref() {
                Some(kid) => {
                    let named: Vec<&JwksKey> = self
                        .jwks
                        .iter()
                        .filter(|k| k.kid.as_deref() == Some(kid))
                        .collect();
                    if named.is_empty() {
                        return Err(AuthError::UnknownKey);
                    }
                    named
                }
                None => self.jwks.iter().collect(),
            };
            candidates.retain(|k| {
                k.family == family && k.alg.as_deref().is_none_or(|pinned| pinned == alg)
            });
            if candidates.is_empty() {
                return Err(AuthError::UnsupportedAlgorithm);
            }
            candidates.into_iter().cloned().collect()
        };
        Ok(Inspected {
            keys,
            family,
            signed: signed.to_owned(),
            signature: signature.to_vec(),
            payload: payload.to_owned(),
        })
    }

    /// The claims of a token whose signature has verified, checked at `now` (unix seconds).
    pub fn claims(&self, token: &Inspected, now: i64) -> Result<Claims, AuthError> {
        claims::check(
            &token.payload,
            now,
            self.issuer.as_deref(),
            self.audience.as_deref(),
        )
    }

    /// Verifies signature and claims at `now`, checking JWKS signatures in Rust (natively only:
    /// the Worker checks them with WebCrypto).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let t = self.inspect(token)?;
        let signed = t.signed.as_bytes();
        if !t.keys.is_empty()
            && !t
                .keys
                .iter()
                .any(|k| native::verifies(k, signed, &t.signature))
        {
            return Err(AuthError::BadSignature);
        }
        self.claims(&t, now)
    }
}

/// HS256-signs claims (used by the dev-only token minting of the demo page and by tests).
///
/// The token carries `sub`, `rooms`, `exp`, `iat` and the header `{"alg":"HS256","typ":"JWT"}`.
pub fn sign_hs256(secret: &str, sub: &str, rooms: &[String], exp: i64, iat: i64) -> String {
    let claims = json!({"sub": sub, "rooms": rooms, "exp": exp, "iat": iat});
    compact(
        &Hs256,
        &Hs256Key::new(secret.as_bytes()),
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims,
    )
}

/// Serialises and signs a JWS in compact form. `header` must carry the algorithm's `alg`.
pub(super) fn compact<A: Algorithm>(
    alg: &A,
    key: &A::SigningKey,
    header: &Value,
    claims: &Value,
) -> String {
    let mut out = base64url::encode(header.to_string().as_bytes());
    out.push('.');
    out.push_str(&base64url::encode(claims.to_string().as_bytes()));
    let signature = alg.sign(key, out.as_bytes());
    out.push('.');
    out.push_str(&base64url::encode(&signature.as_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::{
        b64url_decode, b64url_encode, claims, ed_key, es_key, es_public, header, hs, jwk, jwks,
        rsa_key, settings, verifier, xorshift, EsSigningKey, NOW, SECRET,
    };
    use crate::auth::{api_key_allowed, bearer};
    use jwt_compact::alg::{Ed25519, Es256, Rsa};
    use jwt_compact::jwk::JsonWebKey;

    #[test]
    fn hs256_good_token() {
        let v = verifier(Some(SECRET), None);
        let token = hs(SECRET.as_bytes(), &claims("u1"));
        let got = v.verify(&token, NOW).unwrap();
        assert_eq!(
            got,
            Claims {
                sub: "u1".into(),
                exp: NOW + 600,
                rooms: vec![]
            }
        );
    }

    #[test]
    fn sign_hs256_round_trips() {
        let v = verifier(Some(SECRET), None);
        let rooms = vec!["request_abc".to_owned(), "team_42_*".to_owned()];
        let token = sign_hs256(SECRET, "u1", &rooms, NOW + 60, NOW);
        assert_eq!(token.split('.').count(), 3);
        let got = v.verify(&token, NOW).unwrap();
        assert_eq!(
            got,
            Claims {
                sub: "u1".into(),
                exp: NOW + 60,
                rooms
            }
        );
        assert_eq!(
            v.verify(&sign_hs256("other", "u1", &[], NOW + 60, NOW), NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn wrong_secret_is_a_bad_signature() {
        let v = verifier(Some(SECRET), None);
        let token = hs(b"another-secret-that-is-at-least-32-bytes", &claims("u1"));
        assert_eq!(v.verify(&token, NOW), Err(AuthError::BadSignature));
        // A tampered payload under the right secret fails the same way.
        let good = hs(SECRET.as_bytes(), &claims("u1"));
        let forged_claims = b64url_encode(claims("admin").to_string().as_bytes());
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(v.verify(&forged, NOW), Err(AuthError::BadSignature));
        // A truncated signature too (and does not panic).
        assert_eq!(
            v.verify(&good[..good.len() - 3], NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let payload = b64url_encode(claims("u1").to_string().as_bytes());
        let none = format!("eyJhbGciOiJub25lIn0.{payload}.");
        assert_eq!(
            b64url_decode("eyJhbGciOiJub25lIn0").unwrap(),
            br#"{"alg":"none"}"#
        );
        let (_, pk) = ed_key();
        let set = jwks(&[jwk(&pk, None, None)]);
        for v in [
            verifier(Some(SECRET), None),
            verifier(None, Some(&set)),
            verifier(Some(SECRET), Some(&set)),
        ] {
            assert_eq!(v.verify(&none, NOW), Err(AuthError::UnsupportedAlgorithm));
            for alg in [
                "none", "None", "NONE", "HS384", "HS512", "RS384", "PS256", "ES384", "ES256K", "",
            ] {
                let header = b64url_encode(json!({"alg": alg}).to_string().as_bytes());
                let token = format!("{header}.{payload}.c2ln");
                assert_eq!(
                    v.verify(&token, NOW),
                    Err(AuthError::UnsupportedAlgorithm),
                    "{alg}"
                );
            }
        }
    }

    #[test]
    fn hs256_is_never_verified_against_a_public_key() {
        let (_, pk) = rsa_key();
        let pk_jwk = jwk(pk, None, None);
        let set = jwks(std::slice::from_ref(&pk_jwk));
        let JsonWebKey::Rsa {
            modulus,
            public_exponent,
            ..
        } = JsonWebKey::from(pk)
        else {
            unreachable!()
        };
        // PKCS#1 DER RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }.
        let der_int = |bytes: &[u8]| {
            let mut v = bytes.to_vec();
            if v[0] & 0x80 != 0 {
                v.insert(0, 0);
            }
            der(0x02, &v)
        };
        let der_n = der_int(&modulus);
        let der_e = der_int(&public_exponent);
        let pkcs1 = der(0x30, &[der_n, der_e].concat());
        let candidates: Vec<Vec<u8>> = vec![
            modulus.to_vec(),
            pkcs1,
            set.clone().into_bytes(),
            pk_jwk.to_string().into_bytes(),
            pk_jwk["n"].as_str().unwrap().as_bytes().to_vec(),
        ];
        let jwks_only = verifier(None, Some(&set));
        let both = verifier(Some(SECRET), Some(&set));
        for secret in &candidates {
            let token = hs(secret, &claims("u1"));
            assert_eq!(
                jwks_only.verify(&token, NOW),
                Err(AuthError::UnsupportedAlgorithm)
            );
            assert_eq!(both.verify(&token, NOW), Err(AuthError::BadSignature));
            // With a kid naming the RSA key, still no HMAC against it.
            let kid_token = compact(
                &Hs256,
                &Hs256Key::new(secret),
                &header("HS256", Some("r1")),
                &claims("u1"),
            );
            assert_eq!(
                jwks_only.verify(&kid_token, NOW),
                Err(AuthError::UnsupportedAlgorithm)
            );
        }
    }

    /// DER TLV with a definite length (short or long form).
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    #[test]
    fn rs256_es256_and_eddsa_tokens_verify() {
        let (rsa_sk, rsa_pk) = rsa_key();
        let es_sk = es_key();
        let (ed_sk, ed_pk) = ed_key();
        let set = jwks(&[
            jwk(rsa_pk, Some("r1"), Some("RS256")),
            jwk(&es_public(&es_sk), Some("e1"), None),
            jwk(&ed_pk, Some("d1"), None),
        ]);
        let v = verifier(None, Some(&set));
        let rs = compact(
            &Rsa::rs256(),
            rsa_sk,
            &header("RS256", Some("r1")),
            &claims("rsa-user"),
        );
        let es = compact(
            &Es256,
            &es_sk,
            &header("ES256", Some("e1")),
            &claims("ec-user"),
        );
        let ed = compact(
            &Ed25519,
            &ed_sk,
            &header("EdDSA", Some("d1")),
            &claims("ed-user"),
        );
        let ed_fully = compact(
            &Ed25519::with_specific_name(),
            &ed_sk,
            &header("Ed25519", None),
            &claims("ed2"),
        );
        assert_eq!(v.verify(&rs, NOW).unwrap().sub, "rsa-user");
        assert_eq!(v.verify(&es, NOW).unwrap().sub, "ec-user");
        assert_eq!(v.verify(&ed, NOW).unwrap().sub, "ed-user");
        assert_eq!(v.verify(&ed_fully, NOW).unwrap().sub, "ed2");
        // Without kid, every key of the family is tried.
        let es_nokid = compact(&Es256, &es_sk, &header("ES256", None), &claims("ec-user"));
        assert!(v.verify(&es_nokid, NOW).is_ok());
        let rs_nokid = compact(
            &Rsa::rs256(),
            rsa_sk,
            &header("RS256", None),
            &claims("rsa-user"),
        );
        assert!(v.verify(&rs_nokid, NOW).is_ok());
        // Claims are still checked after an asymmetric signature.
        let old = compact(
            &Es256,
            &es_sk,
            &header("ES256", None),
            &json!({"sub": "u", "exp": NOW - 60}),
        );
        assert_eq!(v.verify(&old, NOW), Err(AuthError::Expired));
        // No HS256 secret configured: an HS256 token is refused outright.
        assert_eq!(
            v.verify(&hs(SECRET.as_bytes(), &claims("u1")), NOW),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn a_key_verifies_only_its_own_algorithm_family() {
        let (rsa_sk, rsa_pk) = rsa_key();
        let es_sk = es_key();
        let (ed_sk, _) = ed_key();
        let v = verifier(None, Some(&jwks(&[jwk(rsa_pk, Some("r1"), None)])));
        // ES256 / EdDSA tokens against an RSA-only set.
        let es = compact(&Es256, &es_sk, &header("ES256", None), &claims("u"));
        assert_eq!(v.verify(&es, NOW), Err(AuthError::UnsupportedAlgorithm));
        let ed = compact(&Ed25519, &ed_sk, &header("EdDSA", Some("r1")), &claims("u"));
        assert_eq!(v.verify(&ed, NOW), Err(AuthError::UnsupportedAlgorithm));
        // PS256 (same key type, other padding) is not accepted either.
        let ps = compact(
            &Rsa::ps256(),
            rsa_sk,
            &header("PS256", Some("r1")),
            &claims("u"),
        );
        assert_eq!(v.verify(&ps, NOW), Err(AuthError::UnsupportedAlgorithm));
        // An RS256 header over a PS256 signature does not verify.
        let ps_as_rs = compact(
            &Rsa::ps256(),
            rsa_sk,
            &header("RS256", Some("r1")),
            &claims("u"),
        );
        assert_eq!(v.verify(&ps_as_rs, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn kid_selects_the_key() {
        let k1 = es_key();
        let k2 = es_key();
        let set = jwks(&[
            jwk(&es_public(&k1), Some("k1"), None),
            jwk(&es_public(&k2), Some("k2"), None),
        ]);
        let v = verifier(None, Some(&set));
        let sign = |sk: &EsSigningKey, kid: Option<&str>| {
            compact(&Es256, sk, &header("ES256", kid), &claims("u"))
        };
        assert!(v.verify(&sign(&k1, Some("k1")), NOW).is_ok());
        assert!(v.verify(&sign(&k2, Some("k2")), NOW).is_ok());
        // The kid is binding: k2's signature under k1's id fails.
        assert_eq!(
            v.verify(&sign(&k2, Some("k1")), NOW),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify(&sign(&k1, Some("k3")), NOW),
            Err(AuthError::UnknownKey)
        );
        assert!(v.verify(&sign(&k2, None), NOW).is_ok());
        let stranger = es_key();
        assert_eq!(
            v.verify(&sign(&stranger, None), NOW),
            Err(AuthError::BadSignature)
        );
        // A set without kids: a token with a kid names no key.
        let unnamed = verifier(None, Some(&jwks(&[jwk(&es_public(&k1), None, None)])));
        assert_eq!(
            unnamed.verify(&sign(&k1, Some("k1")), NOW),
            Err(AuthError::UnknownKey)
        );
        assert!(unnamed.verify(&sign(&k1, None), NOW).is_ok());
        // HS256 ignores kid: the secret has none.
        let hv = verifier(Some(SECRET), Some(&set));
        let hs_kid = compact(
            &Hs256,
            &Hs256Key::new(SECRET),
            &header("HS256", Some("whatever")),
            &claims("u"),
        );
        assert!(hv.verify(&hs_kid, NOW).is_ok());
    }

    #[test]
    fn a_jwk_alg_member_pins_the_algorithm() {
        let (ed_sk, ed_pk) = ed_key();
        let v = verifier(None, Some(&jwks(&[jwk(&ed_pk, Some("d1"), Some("EdDSA"))])));
        let eddsa = compact(&Ed25519, &ed_sk, &header("EdDSA", Some("d1")), &claims("u"));
        assert!(v.verify(&eddsa, NOW).is_ok());
        let named = compact(
            &Ed25519::with_specific_name(),
            &ed_sk,
            &header("Ed25519", Some("d1")),
            &claims("u"),
        );
        assert_eq!(v.verify(&named, NOW), Err(AuthError::UnsupportedAlgorithm));
    }

    #[test]
    fn crit_headers_are_refused() {
        let v = verifier(Some(SECRET), None);
        let token = compact(
            &Hs256,
            &Hs256Key::new(SECRET),
            &json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
            &claims("u"),
        );
        assert_eq!(v.verify(&token, NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn errors_are_short_401s_without_token_material() {
        let v = verifier(Some(SECRET), None);
        let token = hs(
            b"another-secret-that-is-at-least-32-bytes",
            &claims("victim-user"),
        );
        let err = v.verify(&token, NOW).unwrap_err();
        assert_eq!(err.to_string(), "token signature does not verify");
        let api: ApiError = err.into();
        assert_eq!(api.status(), 401);
        assert_eq!(api.code(), "unauthorized");
        assert_eq!(AuthError::Expired.to_string(), "token expired");
        assert_eq!(
            AuthError::MissingClaim("sub").to_string(),
            "token has no `sub` claim"
        );
        for e in [
            AuthError::Malformed,
            AuthError::UnsupportedAlgorithm,
            AuthError::UnknownKey,
            AuthError::NotYetValid,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::InvalidClaim("rooms"),
        ] {
            let msg = e.to_string();
            assert!(msg.starts_with("token") && msg.len() < 80, "{msg}");
            assert!(!msg.contains("victim") && !msg.contains(SECRET));
        }
    }

    #[test]
    fn malformed_tokens() {
        let v = verifier(Some(SECRET), None);
        let good = hs(SECRET.as_bytes(), &claims("u1"));
        let long = format!("{good}{}", "A".repeat(MAX_TOKEN_LEN));
        let cases = [
            "",
            ".",
            "..",
            "a.b",
            "a.b.c.d",
            "eyJhbGciOiJIUzI1NiJ9",
            "!!!.###.$$$",
            "eyJhbGciOiJIUzI1NiJ9.e30",
            "eyJhbGciOiJIUzI1NiJ9=.e30.AAAA",
            "bm90IGpzb24.e30.AAAA",
            &long,
        ];
        for bad in cases {
            assert_eq!(v.verify(bad, NOW), Err(AuthError::Malformed), "{bad:.40}");
        }
        let mut spaced = good.clone();
        spaced.insert(3, ' ');
        assert_eq!(v.verify(&spaced, NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let es_sk = es_key();
        let (ed_sk, ed_pk) = ed_key();
        let set = jwks(&[
            jwk(&es_public(&es_sk), Some("e1"), None),
            jwk(&ed_pk, None, None),
            jwk(&rsa_key().1, Some("r1"), None),
        ]);
        let v = verifier(Some(SECRET), Some(&set));
        let mut full = claims("u1");
        full["rooms"] = json!(["a", "b*"]);
        let seeds = [
            hs(SECRET.as_bytes(), &full),
            compact(&Es256, &es_sk, &header("ES256", Some("e1")), &full),
            compact(&Ed25519, &ed_sk, &header("EdDSA", None), &full),
            compact(
                &Rsa::rs256(),
                &rsa_key().0,
                &header("RS256", Some("r1")),
                &full,
            ),
            "eyJhbGciOiJub25lIn0.e30.".to_owned(),
        ];
        for seed in &seeds {
            assert!(v.verify(seed, NOW).is_ok() || seed.ends_with('.'));
        }
        let alphabet =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \t\"{}:,";
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..4000 {
            let r = xorshift(&mut x);
            let input: String = if i % 4 == 0 {
                // Random text over a token-ish alphabet, plus some arbitrary Unicode.
                let len = (r % 300) as usize;
                (0..len)
                    .map(|_| {
                        let r = xorshift(&mut x);
                        if r.is_multiple_of(17) {
                            char::from_u32((r >> 8) as u32 % 0x11_0000).unwrap_or('\u{fffd}')
                        } else {
                            char::from(alphabet[(r >> 8) as usize % alphabet.len()])
                        }
                    })
                    .collect()
            } else {
                // A valid token with a few byte-level mutations.
                let mut bytes = seeds[(r % seeds.len() as u64) as usize]
                    .clone()
                    .into_bytes();
                for _ in 0..1 + (r >> 8) % 4 {
                    let r = xorshift(&mut x);
                    let at = (r >> 16) as usize % (bytes.len() + 1);
                    let c = alphabet[(r >> 8) as usize % alphabet.len()];
                    match r % 4 {
                        0 if at < bytes.len() => bytes[at] = c,
                        1 => bytes.insert(at, c),
                        2 if at < bytes.len() => {
                            bytes.remove(at);
                        }
                        _ => bytes.truncate(at),
                    }
                }
                String::from_utf8(bytes).unwrap_or_default()
            };
            let _ = v.verify(&input, NOW);
            let _ = bearer(&input);
            let _ = bearer(&format!("Bearer {input}"));
            let _ = api_key_allowed(&[SECRET.to_owned()], &input);
            let _ = b64url_decode(&input);
            // Mutated claims payloads, validly signed, reach the claim checks.
            if let Some(payload) = input.split('.').nth(1) {
                let _ = v.verify(&hs(SECRET.as_bytes(), &json!({"raw": payload})), NOW);
                if let Some(bytes) = b64url_decode(payload) {
                    let token = format!("{}.{}", "eyJhbGciOiJIUzI1NiJ9", payload);
                    let sig = Hs256.sign(&Hs256Key::new(SECRET), token.as_bytes());
                    let signed = format!("{token}.{}", b64url_encode(&sig.as_bytes()));
                    let _ = v.verify(&signed, NOW);
                    let _ = bytes;
                }
            }
        }
        // Random JWKS text never panics the parser either.
        for _ in 0..500 {
            let r = xorshift(&mut x);
            let mut bytes = set.clone().into_bytes();
            let at = (r >> 8) as usize % bytes.len();
            bytes[at] = alphabet[(r >> 24) as usize % alphabet.len()];
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = TokenVerifier::from_settings(&settings(None, Some(&text)));
            }
        }
    }
}
