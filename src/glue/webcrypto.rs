//! RS256, ES256 and EdDSA signatures checked by the runtime's WebCrypto (`crypto.subtle`,
//! through web-sys's `SubtleCrypto`).
//!
//! The same algorithms in pure Rust (bignums, curve arithmetic and their tables) were about a
//! third of the wasm (docs/benchmarks.md). Keys are imported once per isolate and kept; a key the
//! runtime refuses to import (a point not on its curve, say) never verifies anything.

use crate::auth::{Family, Inspected};
use js_sys::{Array, Object, Reflect, Uint8Array, JSON};
use std::cell::RefCell;
use std::collections::HashMap;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{CryptoKey, SubtleCrypto, WorkerGlobalScope};
use worker::wasm_bindgen_futures;

thread_local! {
    /// Imported keys by family and JWK text; `None` for a key the runtime refused.
    static KEYS: RefCell<HashMap<String, Option<CryptoKey>>> = RefCell::new(HashMap::new());
}

fn subtle() -> Result<SubtleCrypto, JsValue> {
    Ok(js_sys::global()
        .unchecked_into::<WorkerGlobalScope>()
        .crypto()?
        .subtle())
}

/// A plain object with these members.
fn object(members: &[(&str, &str)]) -> Object {
    let o = Object::new();
    for (k, v) in members {
        let _ = Reflect::set(&o, &JsValue::from_str(k), &JsValue::from_str(v));
    }
    o
}

/// `(import algorithm, verify algorithm)` for a key family.
fn algorithms(family: Family) -> Option<(Object, Object)> {
    Some(match family {
        Family::Rsa => (
            object(&[("name", "RSASSA-PKCS1-v1_5"), ("hash", "SHA-256")]),
            object(&[("name", "RSASSA-PKCS1-v1_5")]),
        ),
        Family::P256 => (
            object(&[("name", "ECDSA"), ("namedCurve", "P-256")]),
            object(&[("name", "ECDSA"), ("hash", "SHA-256")]),
        ),
        Family::Ed25519 => (
            object(&[("name", "Ed25519")]),
            object(&[("name", "Ed25519")]),
        ),
        // HS256 is checked in Rust (`TokenVerifier::inspect`).
        Family::Hmac => return None,
    })
}

/// The imported key for a JWK, importing it on first use.
async fn key(subtle: &SubtleCrypto, family: Family, jwk: &str, alg: &Object) -> Option<CryptoKey> {
    let id = format!("{family:?}{jwk}");
    if let Some(known) = KEYS.with(|k| k.borrow().get(&id).cloned()) {
        return known;
    }
    let usages = Array::of(&[JsValue::from_str("verify")]);
    let imported = async {
        let data: Object = JSON::parse(jwk).ok()?.dyn_into().ok()?;
        let promise = subtle
            .import_key_with_object("jwk", &data, alg, false, &usages)
            .ok()?;
        JsFuture::from(promise)
            .await
            .ok()?
            .dyn_into::<CryptoKey>()
            .ok()
    }
    .await;
    KEYS.with(|k| k.borrow_mut().insert(id, imported.clone()));
    imported
}

/// Whether `token`'s signature verifies with one of its candidate keys.
pub async fn verify(token: &Inspected) -> bool {
    let (Some((import, check)), Ok(subtle)) = (algorithms(token.family), subtle()) else {
        return false;
    };
    let signed = Uint8Array::from(token.signed.as_bytes());
    let signature = Uint8Array::from(token.signature.as_slice());
    for k in &token.keys {
        let Some(key) = key(&subtle, token.family, k.jwk(), &import).await else {
            continue;
        };
        let Ok(promise) = subtle
            .verify_with_object_and_js_u8_array_and_js_u8_array(&check, &key, &signature, &signed)
        else {
            continue;
        };
        if JsFuture::from(promise).await.ok() == Some(JsValue::TRUE) {
            return true;
        }
    }
    false
}
