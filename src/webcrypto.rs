//! RS256, ES256 and EdDSA signatures checked by the runtime's WebCrypto (`crypto.subtle`).
//!
//! The same algorithms in pure Rust (bignums, curve arithmetic and their tables) were about a
//! third of the wasm: 223 KiB gzipped with them, 155 without (docs/benchmarks.md). Keys are
//! imported once per isolate and kept; a key the runtime refuses to import (a point not on its
//! curve, say) never verifies anything.

use crate::auth::{Family, Inspected};
use js_sys::{Array, Promise, Uint8Array};
use wasm_bindgen::prelude::*;

#[wasm_bindgen(inline_js = r#"
const keys = new Map();
const ALGS = {
  Rsa: [{ name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, { name: "RSASSA-PKCS1-v1_5" }],
  P256: [{ name: "ECDSA", namedCurve: "P-256" }, { name: "ECDSA", hash: "SHA-256" }],
  Ed25519: [{ name: "Ed25519" }, { name: "Ed25519" }],
};
function imported(jwk, family) {
  const id = family + jwk;
  let key = keys.get(id);
  if (!key) {
    key = crypto.subtle.importKey("jwk", JSON.parse(jwk), ALGS[family][0], false, ["verify"]).catch(() => null);
    keys.set(id, key);
  }
  return key;
}
export async function verifyAny(jwks, family, signed, signature) {
  for (const jwk of jwks) {
    const key = await imported(jwk, family);
    if (key && await crypto.subtle.verify(ALGS[family][1], key, signature, signed).catch(() => false)) return true;
  }
  return false;
}
"#)]
extern "C" {
    #[wasm_bindgen(js_name = verifyAny)]
    fn verify_any(
        jwks: &Array,
        family: &str,
        signed: &Uint8Array,
        signature: &Uint8Array,
    ) -> Promise;
}

/// A promise of whether `token`'s signature verifies with one of its candidate keys.
pub fn verify(token: &Inspected) -> Promise {
    let family = match token.family {
        Family::Rsa => "Rsa",
        Family::P256 => "P256",
        Family::Ed25519 => "Ed25519",
        // HS256 is checked in `inspect`; a token here has keys only for the others.
        Family::Hmac => return Promise::resolve(&JsValue::FALSE),
    };
    let jwks: Array = token
        .keys
        .iter()
        .map(|k| JsValue::from_str(k.jwk()))
        .collect();
    verify_any(
        &jwks,
        family,
        &Uint8Array::from(token.signed.as_bytes()),
        &Uint8Array::from(token.signature.as_slice()),
    )
}
