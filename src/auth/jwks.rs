//! `JWT_JWKS`: the key set's parsing, the shape checks that keep only keys able to verify a
//! token here, and the per-isolate cache of the parsed set.

use std::cell::RefCell;
use std::sync::Arc;

use serde_json::{json, Value};

use super::base64url;
use super::Family;
use crate::error::ApiError;

/// Smallest RSA modulus accepted, in bits (RFC 7518, section 3.3).
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
const MAX_RSA_BITS: usize = 4096;

/// One usable public key of `JWT_JWKS`.
#[derive(Debug, Clone)]
pub struct JwksKey {
    pub(super) kid: Option<String>,
    /// The JWK's own `alg` member, when it has one; then a token must use exactly that.
    pub(super) alg: Option<String>,
    pub(super) family: Family,
    /// The key as a JWK with only its key members (`kty`, `n`, `e` / `crv`, `x`, `y`), for
    /// WebCrypto's `importKey("jwk", …)`.
    pub(super) jwk: String,
}

impl JwksKey {
    /// The key as a JWK with only its key members.
    pub fn jwk(&self) -> &str {
        &self.jwk
    }
}

thread_local! {
    /// The last `JWT_JWKS` text parsed, with its keys. Wasm is single-threaded, so this is one
    /// cache per isolate (natively, one per test thread).
    static JWKS_CACHE: RefCell<Option<(String, Arc<[JwksKey]>)>> = const { RefCell::new(None) };
}

/// `parse_jwks` behind a one-entry cache keyed by the raw setting text.
///
/// Why cache: the verifier is built per request, and parsing means JSON, base64url, and for EC
/// keys a point decompression and on-curve check (RSA is only big-integer decoding). Each is
/// microseconds, but they are paid on every WebSocket upgrade, and the cache is a few lines:
/// one string compare per request when the setting has not changed. A changed setting (new
/// deployment) simply misses and replaces the entry. Errors are not cached.
pub(super) fn jwks_cached(raw: &str) -> Result<Arc<[JwksKey]>, ApiError> {
    let hit = JWKS_CACHE
        .try_with(|cache| {
            cache.try_borrow().ok().and_then(|entry| {
                entry
                    .as_ref()
                    .filter(|(text, _)| text == raw)
                    .map(|(_, keys)| Arc::clone(keys))
            })
        })
        .ok()
        .flatten();
    if let Some(keys) = hit {
        return Ok(keys);
    }
    let keys: Arc<[JwksKey]> = Arc::from(parse_jwks(raw)?);
    let _ = JWKS_CACHE.try_with(|cache| {
        if let Ok(mut entry) = cache.try_borrow_mut() {
            *entry = Some((raw.to_owned(), Arc::clone(&keys)));
        }
    });
    Ok(keys)
}

fn misconfigured(reason: impl Into<String>) -> ApiError {
    ApiError::Misconfigured {
        setting: "JWT_JWKS",
        reason: reason.into(),
    }
}

/// Parses a JWK Set (`{"keys":[...]}`; a single JWK object is accepted too), keeping every
/// usable verification key and skipping the others.
fn parse_jwks(raw: &str) -> Result<Vec<JwksKey>, ApiError> {
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        // Line and column only: serde's message can quote the input.
        misconfigured(format!(
            "not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let entries: Vec<Value> = match value {
        Value::Object(mut set) if set.contains_key("keys") => match set.remove("keys") {
            Some(Value::Array(keys)) => keys,
            _ => return Err(misconfigured("`keys` must be an array of JWKs")),
        },
        single @ Value::Object(_) if single.get("kty").is_some() => vec![single],
        _ => {
            return Err(misconfigured(
                "expected a JSON Web Key Set: {\"keys\":[...]}",
            ))
        }
    };
    let keys: Vec<JwksKey> = entries.into_iter().filter_map(usable_key).collect();
    if keys.is_empty() {
        return Err(misconfigured(
            "no usable key: need a public signing key with kty RSA (2048 to 4096 bits, RS256), \
             EC crv P-256 (ES256) or OKP crv Ed25519 (EdDSA)",
        ));
    }
    Ok(keys)
}

/// The key of one JWK, or `None` when it cannot verify tokens here.
fn usable_key(jwk: Value) -> Option<JwksKey> {
    let obj = jwk.as_object()?;
    let text = |name: &str| -> Result<Option<String>, ()> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(()),
        }
    };
    let kid = text("kid").ok()?;
    let alg = text("alg").ok()?;
    if text("use").ok()?.is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = obj.get("key_ops") {
        if !ops
            .as_array()?
            .iter()
            .any(|op| op.as_str() == Some("verify"))
        {
            return None;
        }
    }
    // Checked here by shape; the runtime's importKey checks the rest (a point on the curve).
    let member = |name: &str| obj.get(name).and_then(Value::as_str);
    let bytes = |name: &str| member(name).and_then(base64url::decode);
    let (family, jwk) = match member("kty")? {
        "RSA" => {
            let n = bytes("n")?;
            let e = bytes("e")?;
            // 2048 to 4096 bits; an odd public exponent of at most 32 bits, over 1.
            let bits = modulus_bits(&n);
            let exponent = e.iter().skip_while(|&&b| b == 0).count();
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits)
                || exponent == 0
                || exponent > 4
                || e.last().is_none_or(|b| b & 1 == 0)
                || modulus_bits(&e) < 2
            {
                return None;
            }
            let jwk = json!({"kty": "RSA", "n": member("n")?, "e": member("e")?});
            (Family::Rsa, jwk)
        }
        "EC" => {
            if member("crv")? != "P-256" || bytes("x")?.len() != 32 || bytes("y")?.len() != 32 {
                return None;
            }
            let jwk = json!({"kty": "EC", "crv": "P-256", "x": member("x")?, "y": member("y")?});
            (Family::P256, jwk)
        }
        "OKP" => {
            if member("crv")? != "Ed25519" || bytes("x")?.len() != 32 {
                return None;
            }
            (
                Family::Ed25519,
                json!({"kty": "OKP", "crv": "Ed25519", "x": member("x")?}),
            )
        }
        // `oct` keys do not belong in a public key set; HS256 uses JWT_SECRET only.
        _ => return None,
    };
    if let Some(pinned) = &alg {
        // A key pinned to an algorithm we do not accept (RS384, PS256...) can never verify.
        if Family::of_alg(pinned) != Some(family) {
            return None;
        }
    }
    Some(JwksKey {
        kid,
        alg,
        family,
        jwk: jwk.to_string(),
    })
}

/// Bit length of a big-endian unsigned integer.
fn modulus_bits(be: &[u8]) -> usize {
    let mut significant = be.iter().skip_while(|&&b| b == 0);
    match significant.next() {
        None => 0,
        Some(&top) => significant.count() * 8 + (8 - top.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::{
        b64url_encode, ed_key, jwk, jwks, rsa_key, settings, verifier, SECRET,
    };
    use crate::auth::TokenVerifier;

    #[test]
    fn from_settings_fails_closed() {
        let err = TokenVerifier::from_settings(&settings(None, None)).unwrap_err();
        assert_eq!(err, ApiError::NotConfigured("JWT_SECRET or JWT_JWKS"));
        assert_eq!(err.status(), 503);
        let bad = |raw: &str| match TokenVerifier::from_settings(&settings(Some(SECRET), Some(raw)))
        {
            Err(ApiError::Misconfigured {
                setting: "JWT_JWKS",
                reason,
            }) => reason,
            other => panic!("{raw}: {other:?}"),
        };
        assert!(bad("{not json").contains("not valid JSON"));
        assert!(bad("[]").contains("Key Set"));
        assert!(bad(r#"{"keys":{}}"#).contains("array"));
        assert!(bad(r#"{"keys":[]}"#).contains("no usable key"));
        // Keys that cannot verify are skipped; none left is an error.
        let (_, ed_pk) = ed_key();
        let mut enc = jwk(&ed_pk, None, None);
        enc["use"] = json!("enc");
        let mut wrap_only = jwk(&ed_pk, None, None);
        wrap_only["key_ops"] = json!(["wrapKey"]);
        let oct = json!({"kty": "oct", "k": b64url_encode(SECRET.as_bytes())});
        let weak_rsa = json!({"kty": "RSA", "n": b64url_encode(&[0xff; 128]), "e": "AQAB"});
        let p384 = json!({"kty": "EC", "crv": "P-384", "x": b64url_encode(&[1; 48]), "y": b64url_encode(&[2; 48])});
        let x25519 = json!({"kty": "OKP", "crv": "X25519", "x": b64url_encode(&[9; 32])});
        let rs384 = jwk(&rsa_key().1, None, Some("RS384"));
        let mut numeric_kid = jwk(&ed_pk, None, None);
        numeric_kid["kid"] = json!(7);
        let unusable = [
            enc.clone(),
            wrap_only,
            oct,
            weak_rsa,
            p384,
            x25519,
            rs384,
            numeric_kid,
            json!({"kty": "XYZ"}),
            json!("string"),
            json!({"kty": "EC", "crv": "P-256", "x": "!!", "y": "??"}),
        ];
        for key in &unusable {
            assert!(
                bad(&jwks(std::slice::from_ref(key))).contains("no usable key"),
                "{key}"
            );
        }
        // Mixed with one good key: fine, and the bad ones are skipped.
        let mut all = unusable.to_vec();
        all.push(jwk(&ed_pk, Some("good"), None));
        let v = verifier(None, Some(&jwks(&all)));
        assert_eq!(v.jwks.len(), 1);
        // A single JWK object is accepted as a set of one; `use: sig` and `key_ops: [verify]` are fine.
        let mut single = jwk(&ed_pk, None, None);
        single["use"] = json!("sig");
        single["key_ops"] = json!(["verify"]);
        assert_eq!(verifier(None, Some(&single.to_string())).jwks.len(), 1);
        // Messages never quote the setting.
        assert!(!bad(r#"{"keys":"SECRETISH"}"#).contains("SECRETISH"));
        assert!(!bad(r#"{"keys":[SECRETISH]}"#).contains("SECRETISH"));
    }

    #[test]
    fn the_parsed_jwks_is_cached_per_text() {
        let (_, ed_pk) = ed_key();
        let set = jwks(&[jwk(&ed_pk, None, None)]);
        let a = verifier(None, Some(&set));
        let b = verifier(None, Some(&set));
        assert!(Arc::ptr_eq(&a.jwks, &b.jwks));
        let other = jwks(&[jwk(&ed_key().1, None, None)]);
        let c = verifier(None, Some(&other));
        assert!(!Arc::ptr_eq(&a.jwks, &c.jwks));
        // Debug shows no key material.
        let dbg = format!("{:?}", verifier(Some(SECRET), Some(&set)));
        assert!(
            !dbg.contains(SECRET) && dbg.contains("has_secret: true"),
            "{dbg}"
        );
    }
}
