//! Keys, settings and tokens shared by the auth unit tests.

use std::sync::OnceLock;

use jwt_compact::alg::{
    Ed25519, Es256, Hs256, Hs256Key, ModulusBits, Rsa, RsaPrivateKey, RsaPublicKey,
};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::Algorithm;
use rand_core::OsRng;
use serde_json::{json, Value};

pub(super) use super::base64url::{decode as b64url_decode, encode as b64url_encode};
use super::token::compact;
use super::TokenVerifier;
use crate::config::Settings;

pub(super) const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";
pub(super) const NOW: i64 = 1_700_000_000;

pub(super) type EsSigningKey = <Es256 as Algorithm>::SigningKey;
pub(super) type EdSigningKey = <Ed25519 as Algorithm>::SigningKey;

pub(super) fn settings(secret: Option<&str>, jwks: Option<&str>) -> Settings {
    Settings {
        jwt_secret: secret.map(str::to_owned),
        jwt_jwks: jwks.map(str::to_owned),
        ..Settings::default()
    }
}

pub(super) fn verifier(secret: Option<&str>, jwks: Option<&str>) -> TokenVerifier {
    TokenVerifier::from_settings(&settings(secret, jwks)).unwrap()
}

pub(super) fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": NOW + 600, "iat": NOW})
}

pub(super) fn hs(secret: &[u8], claims: &Value) -> String {
    compact(
        &Hs256,
        &Hs256Key::new(secret),
        &json!({"alg": "HS256"}),
        claims,
    )
}

pub(super) fn header(alg: &str, kid: Option<&str>) -> Value {
    match kid {
        Some(kid) => json!({"alg": alg, "kid": kid}),
        None => json!({"alg": alg}),
    }
}

/// A JWK of `key` with optional `kid` and `alg` members, as JSON.
pub(super) fn jwk<'a>(
    key: impl Into<JsonWebKey<'a>>,
    kid: Option<&str>,
    alg: Option<&str>,
) -> Value {
    let mut v = serde_json::to_value(key.into()).unwrap();
    let obj = v.as_object_mut().unwrap();
    if let Some(kid) = kid {
        obj.insert("kid".into(), kid.into());
    }
    if let Some(alg) = alg {
        obj.insert("alg".into(), alg.into());
    }
    v
}

pub(super) fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// One 2048-bit RSA key for the whole test run (generation is slow in debug builds).
pub(super) fn rsa_key() -> &'static (RsaPrivateKey, RsaPublicKey) {
    static KEY: OnceLock<(RsaPrivateKey, RsaPublicKey)> = OnceLock::new();
    KEY.get_or_init(|| {
        let (sk, pk) = Rsa::generate(&mut OsRng, ModulusBits::TwoKibibytes).unwrap();
        (sk.into_inner(), pk.into_inner())
    })
}

pub(super) fn es_key() -> EsSigningKey {
    EsSigningKey::random(&mut OsRng)
}

pub(super) fn es_public(sk: &EsSigningKey) -> <Es256 as Algorithm>::VerifyingKey {
    *sk.verifying_key()
}

pub(super) fn ed_key() -> (EdSigningKey, <Ed25519 as Algorithm>::VerifyingKey) {
    Ed25519::generate(&mut OsRng)
}

pub(super) fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
