//! Authentication: client JWTs (SPEC, "Connecting" and "Client tokens") and publish API keys.
//!
//! Pure Rust, no runtime types: the Worker passes in the settings, the header value and the time.
//!
//! A token is checked in two steps: [`TokenVerifier::inspect`] (structure, header, algorithm,
//! the candidate keys, and an HS256 signature with `jwt-compact`), then, for JWKS algorithms, a
//! signature check by the platform, then [`TokenVerifier::claims`]. On Workers the RS256, ES256
//! and EdDSA check is the runtime's WebCrypto (`src/webcrypto.rs`): the same algorithms in
//! pure Rust were a third of the wasm. Natively (unit tests) [`TokenVerifier::verify`] checks
//! them with `jwt-compact`. The claims are parsed only after the signature has verified, so a
//! forged token never learns anything about claim validation and every claim error names the
//! claim exactly.
//!
//! Accepted algorithms:
//!
//! | `alg` | verified against |
//! |---|---|
//! | `HS256` | `JWT_SECRET` only (never a JWKS key: no algorithm confusion) |
//! | `RS256` | `JWT_JWKS` keys with `kty:"RSA"`, modulus of 2048 to 4096 bits |
//! | `ES256` | `JWT_JWKS` keys with `kty:"EC"`, `crv:"P-256"` |
//! | `EdDSA`, `Ed25519` | `JWT_JWKS` keys with `kty:"OKP"`, `crv:"Ed25519"` |
//!
//! Anything else (`none`, `HS384`, `PS256`, ...) is refused as an unsupported algorithm.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_compact::alg::{Hs256, Hs256Key};
use jwt_compact::{Algorithm, AlgorithmSignature, UntrustedToken};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::Settings;
use crate::error::ApiError;
use crate::room_id::RoomId;

/// Clock leeway for exp/nbf in seconds.
pub const LEEWAY_SECS: i64 = 5;

/// Longest token accepted, in bytes. Real tokens are well under 2 KiB; this bounds the work an
/// anonymous caller can cause before any signature check.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Smallest RSA modulus accepted, in bits (RFC 7518, section 3.3).
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
const MAX_RSA_BITS: usize = 4096;

/// A verified client token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id; never empty.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// The `rooms` claim: exact room ids, or prefixes ending in `*`. Empty when absent.
    pub rooms: Vec<String>,
}

impl Claims {
    /// Whether this token may enter `room`:
    ///
    /// - `user_{sub}`, the token's own user room;
    /// - an exact entry of `rooms`;
    /// - an entry ending in `*` whose rest is a prefix of the room id (`"team_42_*"` admits
    ///   `team_42_a` and `team_42_` followed by anything, but not `team_420`).
    ///
    /// A lone `"*"` is the empty prefix, so it admits **every** room: that is how an issuer grants
    /// an admin or a back-office dashboard access to all rooms. A `*` anywhere but at the end is
    /// literal, and since room ids never contain `*`, such an entry matches nothing.
    pub fn may_enter(&self, room: &RoomId) -> bool {
        let room = room.as_str();
        if room.strip_prefix("user_") == Some(self.sub.as_str()) {
            return true;
        }
        self.rooms
            .iter()
            .any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => entry == room,
            })
    }
}

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
/// one-entry cache per isolate (`jwks_cached`).
#[derive(Clone)]
pub struct TokenVerifier {
    secret: Option<Hs256Key>,
    jwks: Arc<[JwksKey]>,
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

/// One usable public key of `JWT_JWKS`.
#[derive(Debug, Clone)]
pub struct JwksKey {
    kid: Option<String>,
    /// The JWK's own `alg` member, when it has one; then a token must use exactly that.
    alg: Option<String>,
    family: Family,
    /// The key as a JWK with only its key members (`kty`, `n`, `e` / `crv`, `x`, `y`), for
    /// WebCrypto's `importKey("jwk", …)`.
    jwk: String,
}

impl JwksKey {
    /// The key as a JWK with only its key members.
    pub fn jwk(&self) -> &str {
        &self.jwk
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
    fn of_alg(alg: &str) -> Option<Family> {
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
        let payload = b64url_decode(&token.payload).ok_or(AuthError::Malformed)?;
        let claims: Map<String, Value> =
            serde_json::from_slice(&payload).map_err(|_| AuthError::Malformed)?;
        self.check_claims(&claims, now)
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

    fn check_claims(&self, claims: &Map<String, Value>, now: i64) -> Result<Claims, AuthError> {
        let sub = match claims.get("sub") {
            None => return Err(AuthError::MissingClaim("sub")),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(AuthError::InvalidClaim("sub")),
        };
        let exp = match claims.get("exp") {
            None => return Err(AuthError::MissingClaim("exp")),
            Some(v) => unix_seconds(v).ok_or(AuthError::InvalidClaim("exp"))?,
        };
        // RFC 7519: valid only while now < exp.
        if now >= exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired);
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = unix_seconds(v).ok_or(AuthError::InvalidClaim("nbf"))?;
            // RFC 7519: valid from nbf on.
            if now.saturating_add(LEEWAY_SECS) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(expected) = &self.issuer {
            match claims.get("iss") {
                None => return Err(AuthError::MissingClaim("iss")),
                Some(Value::String(iss)) if iss == expected => {}
                Some(Value::String(_)) => return Err(AuthError::WrongIssuer),
                Some(_) => return Err(AuthError::InvalidClaim("iss")),
            }
        }
        if let Some(expected) = &self.audience {
            let found = match claims.get("aud") {
                None => return Err(AuthError::MissingClaim("aud")),
                Some(Value::String(aud)) => aud == expected,
                Some(Value::Array(auds)) => {
                    let mut found = false;
                    for aud in auds {
                        match aud {
                            Value::String(aud) => found |= aud == expected,
                            _ => return Err(AuthError::InvalidClaim("aud")),
                        }
                    }
                    found
                }
                Some(_) => return Err(AuthError::InvalidClaim("aud")),
            };
            if !found {
                return Err(AuthError::WrongAudience);
            }
        }
        let rooms = match claims.get("rooms") {
            None => Vec::new(),
            Some(Value::Array(entries)) => entries
                .iter()
                .map(|e| e.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or(AuthError::InvalidClaim("rooms"))?,
            Some(_) => return Err(AuthError::InvalidClaim("rooms")),
        };
        Ok(Claims { sub, exp, rooms })
    }
}

/// A NumericDate (RFC 7519): any JSON number, fractions dropped, saturating at the `i64` range.
fn unix_seconds(v: &Value) -> Option<i64> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        Some(i)
    } else if n.as_u64().is_some() {
        Some(i64::MAX)
    } else {
        // `as` saturates; JSON has no NaN or infinity.
        n.as_f64().map(|f| f.floor() as i64)
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
fn jwks_cached(raw: &str) -> Result<Arc<[JwksKey]>, ApiError> {
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
    let bytes = |name: &str| member(name).and_then(b64url_decode);
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
fn compact<A: Algorithm>(alg: &A, key: &A::SigningKey, header: &Value, claims: &Value) -> String {
    let mut out = b64url_encode(header.to_string().as_bytes());
    out.push('.');
    out.push_str(&b64url_encode(claims.to_string().as_bytes()));
    let signature = alg.sign(key, out.as_bytes());
    out.push('.');
    out.push_str(&b64url_encode(&signature.as_bytes()));
    out
}

/// Unpadded base64url (RFC 4648 §5), as JWS uses.
fn b64url_encode(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// Strict unpadded base64url decoding: no padding, no whitespace, zero trailing bits
/// (base64ct re-encodes the last block to refuse non-canonical forms).
fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    Base64UrlUnpadded::decode_vec(text).ok()
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive, surrounding spaces trimmed); None otherwise.
///
/// The token itself must be non-empty and contain no whitespace.
pub fn bearer(header_value: &str) -> Option<&str> {
    let value = header_value.trim();
    let (scheme, rest) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty() && !token.contains(|c: char| c.is_whitespace())).then_some(token)
}

/// Whether `presented` equals one of `keys`, in constant time with respect to key contents.
///
/// Both sides are hashed with SHA-256 first and the digests compared with
/// `subtle::ConstantTimeEq`, against every key without short-circuiting, so neither the
/// contents nor the lengths of the configured keys leak through timing (SHA-256's block count
/// reveals lengths only to within 64 bytes). An empty `presented` is refused outright.
pub fn api_key_allowed(keys: &[String], presented: &str) -> bool {
    if presented.is_empty() {
        return false;
    }
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut allowed = Choice::from(0u8);
    for key in keys {
        let key: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        allowed |= key.ct_eq(&presented);
    }
    allowed.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_compact::alg::{Ed25519, Es256, ModulusBits, Rsa, RsaPrivateKey, RsaPublicKey};
    use jwt_compact::jwk::JsonWebKey;
    use rand_core::OsRng;
    use std::sync::OnceLock;

    const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";
    const NOW: i64 = 1_700_000_000;

    type EsSigningKey = <Es256 as Algorithm>::SigningKey;
    type EdSigningKey = <Ed25519 as Algorithm>::SigningKey;

    fn settings(secret: Option<&str>, jwks: Option<&str>) -> Settings {
        Settings {
            jwt_secret: secret.map(str::to_owned),
            jwt_jwks: jwks.map(str::to_owned),
            ..Settings::default()
        }
    }

    fn verifier(secret: Option<&str>, jwks: Option<&str>) -> TokenVerifier {
        TokenVerifier::from_settings(&settings(secret, jwks)).unwrap()
    }

    fn claims(sub: &str) -> Value {
        json!({"sub": sub, "exp": NOW + 600, "iat": NOW})
    }

    fn hs(secret: &[u8], claims: &Value) -> String {
        compact(
            &Hs256,
            &Hs256Key::new(secret),
            &json!({"alg": "HS256"}),
            claims,
        )
    }

    fn header(alg: &str, kid: Option<&str>) -> Value {
        match kid {
            Some(kid) => json!({"alg": alg, "kid": kid}),
            None => json!({"alg": alg}),
        }
    }

    /// A JWK of `key` with optional `kid` and `alg` members, as JSON.
    fn jwk<'a>(key: impl Into<JsonWebKey<'a>>, kid: Option<&str>, alg: Option<&str>) -> Value {
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

    fn jwks(keys: &[Value]) -> String {
        json!({ "keys": keys }).to_string()
    }

    /// One 2048-bit RSA key for the whole test run (generation is slow in debug builds).
    fn rsa_key() -> &'static (RsaPrivateKey, RsaPublicKey) {
        static KEY: OnceLock<(RsaPrivateKey, RsaPublicKey)> = OnceLock::new();
        KEY.get_or_init(|| {
            let (sk, pk) = Rsa::generate(&mut OsRng, ModulusBits::TwoKibibytes).unwrap();
            (sk.into_inner(), pk.into_inner())
        })
    }

    fn es_key() -> EsSigningKey {
        EsSigningKey::random(&mut OsRng)
    }

    fn es_public(sk: &EsSigningKey) -> <Es256 as Algorithm>::VerifyingKey {
        *sk.verifying_key()
    }

    fn ed_key() -> (EdSigningKey, <Ed25519 as Algorithm>::VerifyingKey) {
        Ed25519::generate(&mut OsRng)
    }

    // ---- HS256 and claims ----

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
    fn expiry_honours_the_leeway() {
        let v = verifier(Some(SECRET), None);
        let at = |exp: i64| hs(SECRET.as_bytes(), &json!({"sub": "u1", "exp": exp}));
        assert_eq!(v.verify(&at(NOW - 3600), NOW), Err(AuthError::Expired));
        assert_eq!(
            v.verify(&at(NOW - LEEWAY_SECS), NOW),
            Err(AuthError::Expired)
        );
        assert!(v.verify(&at(NOW - LEEWAY_SECS + 1), NOW).is_ok());
        assert!(v.verify(&at(NOW - 1), NOW).is_ok());
        assert!(v.verify(&at(NOW), NOW).is_ok());
        // Extreme values saturate instead of overflowing.
        assert!(v.verify(&at(i64::MAX), NOW).is_ok());
        assert_eq!(v.verify(&at(i64::MIN), NOW), Err(AuthError::Expired));
        let huge = hs(SECRET.as_bytes(), &json!({"sub": "u1", "exp": 1e300}));
        assert_eq!(v.verify(&huge, NOW).unwrap().exp, i64::MAX);
        let big_u64 = hs(SECRET.as_bytes(), &json!({"sub": "u1", "exp": u64::MAX}));
        assert!(v.verify(&big_u64, NOW).is_ok());
        let fraction = hs(
            SECRET.as_bytes(),
            &json!({"sub": "u1", "exp": NOW as f64 + 10.7}),
        );
        assert_eq!(v.verify(&fraction, NOW).unwrap().exp, NOW + 10);
    }

    #[test]
    fn not_before_is_honoured() {
        let v = verifier(Some(SECRET), None);
        let nbf = |nbf: Value| {
            hs(
                SECRET.as_bytes(),
                &json!({"sub": "u1", "exp": NOW + 600, "nbf": nbf}),
            )
        };
        assert_eq!(
            v.verify(&nbf(json!(NOW + 60)), NOW),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            v.verify(&nbf(json!(NOW + LEEWAY_SECS + 1)), NOW),
            Err(AuthError::NotYetValid)
        );
        assert!(v.verify(&nbf(json!(NOW + LEEWAY_SECS)), NOW).is_ok());
        assert!(v.verify(&nbf(json!(NOW - 60)), NOW).is_ok());
        assert_eq!(
            v.verify(&nbf(json!("soon")), NOW),
            Err(AuthError::InvalidClaim("nbf"))
        );
    }

    #[test]
    fn sub_is_required_and_a_non_empty_string() {
        let v = verifier(Some(SECRET), None);
        let with = |c: Value| v.verify(&hs(SECRET.as_bytes(), &c), NOW);
        assert_eq!(
            with(json!({"exp": NOW + 60})),
            Err(AuthError::MissingClaim("sub"))
        );
        assert_eq!(
            with(json!({"sub": "", "exp": NOW + 60})),
            Err(AuthError::InvalidClaim("sub"))
        );
        assert_eq!(
            with(json!({"sub": 42, "exp": NOW + 60})),
            Err(AuthError::InvalidClaim("sub"))
        );
        assert_eq!(
            with(json!({"sub": null, "exp": NOW + 60})),
            Err(AuthError::InvalidClaim("sub"))
        );
    }

    #[test]
    fn exp_is_required_and_a_number() {
        let v = verifier(Some(SECRET), None);
        let with = |c: Value| v.verify(&hs(SECRET.as_bytes(), &c), NOW);
        assert_eq!(
            with(json!({"sub": "u1"})),
            Err(AuthError::MissingClaim("exp"))
        );
        assert_eq!(
            with(json!({"sub": "u1", "exp": "1700000600"})),
            Err(AuthError::InvalidClaim("exp"))
        );
        assert_eq!(
            with(json!({"sub": "u1", "exp": null})),
            Err(AuthError::InvalidClaim("exp"))
        );
    }

    #[test]
    fn claims_must_be_a_json_object() {
        let v = verifier(Some(SECRET), None);
        for c in [json!([1, 2]), json!("sub"), json!(null)] {
            assert_eq!(
                v.verify(&hs(SECRET.as_bytes(), &c), NOW),
                Err(AuthError::Malformed)
            );
        }
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

    // ---- JWKS algorithms ----

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

    // ---- settings ----

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

    // ---- iss / aud / rooms ----

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let mut s = settings(Some(SECRET), None);
        s.jwt_issuer = Some("https://auth.example".into());
        s.jwt_audience = Some("roomcast".into());
        let v = TokenVerifier::from_settings(&s).unwrap();
        let with = |extra: Value| {
            let mut c = claims("u1");
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v.verify(&hs(SECRET.as_bytes(), &c), NOW)
        };
        assert!(with(json!({"iss": "https://auth.example", "aud": "roomcast"})).is_ok());
        assert!(with(json!({"iss": "https://auth.example", "aud": ["other", "roomcast"]})).is_ok());
        assert_eq!(
            with(json!({"iss": "https://evil.example", "aud": "roomcast"})),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            with(json!({"aud": "roomcast"})),
            Err(AuthError::MissingClaim("iss"))
        );
        assert_eq!(
            with(json!({"iss": 1, "aud": "roomcast"})),
            Err(AuthError::InvalidClaim("iss"))
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": "other"})),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": ["a", "b"]})),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": []})),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example"})),
            Err(AuthError::MissingClaim("aud"))
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": 5})),
            Err(AuthError::InvalidClaim("aud"))
        );
        assert_eq!(
            with(json!({"iss": "https://auth.example", "aud": ["roomcast", 5]})),
            Err(AuthError::InvalidClaim("aud"))
        );
        // Not configured: iss and aud are ignored whatever they hold.
        let plain = verifier(Some(SECRET), None);
        let c = json!({"sub": "u1", "exp": NOW + 60, "iss": 5, "aud": {"x": 1}});
        assert!(plain.verify(&hs(SECRET.as_bytes(), &c), NOW).is_ok());
    }

    #[test]
    fn rooms_claim_is_an_array_of_strings() {
        let v = verifier(Some(SECRET), None);
        let with = |rooms: Value| {
            v.verify(
                &hs(
                    SECRET.as_bytes(),
                    &json!({"sub": "u1", "exp": NOW + 60, "rooms": rooms}),
                ),
                NOW,
            )
        };
        let got = with(json!(["request_abc", "team_42_*"])).unwrap();
        assert_eq!(got.rooms, vec!["request_abc", "team_42_*"]);
        assert!(got.may_enter(&RoomId::parse("request_abc").unwrap()));
        assert!(got.may_enter(&RoomId::parse("team_42_x").unwrap()));
        assert!(!got.may_enter(&RoomId::parse("request_abcd").unwrap()));
        assert!(!got.may_enter(&RoomId::parse("team_420").unwrap()));
        assert_eq!(with(json!([])).unwrap().rooms, Vec::<String>::new());
        for bad in [
            json!("request_abc"),
            json!({"a": 1}),
            json!(["ok", 1]),
            json!(null),
            json!(true),
        ] {
            assert_eq!(
                with(bad.clone()),
                Err(AuthError::InvalidClaim("rooms")),
                "{bad}"
            );
        }
    }

    #[test]
    fn may_enter_rules() {
        let room = |r: &str| RoomId::parse(r).unwrap();
        let c = Claims {
            sub: "u1".into(),
            exp: 0,
            rooms: vec!["request_r1".into(), "team_42_*".into(), "a*b".into()],
        };
        assert!(c.may_enter(&room("user_u1")));
        assert!(!c.may_enter(&room("user_u2")));
        assert!(!c.may_enter(&room("user_u10")));
        assert!(!c.may_enter(&room("user_")));
        assert!(!c.may_enter(&room("u1")));
        assert!(c.may_enter(&room("request_r1")));
        assert!(!c.may_enter(&room("request_r2")));
        assert!(c.may_enter(&room("team_42_")));
        assert!(c.may_enter(&room("team_42_chat")));
        assert!(!c.may_enter(&room("team_43_chat")));
        assert!(!c.may_enter(&room("team_42")));
        assert!(!c.may_enter(&room("ab")));
        let none = Claims {
            sub: "u1".into(),
            exp: 0,
            rooms: vec![],
        };
        assert!(!none.may_enter(&room("request_r1")));
        let all = Claims {
            sub: "u1".into(),
            exp: 0,
            rooms: vec!["*".into()],
        };
        assert!(all.may_enter(&room("anything")) && all.may_enter(&room("user_u2")));
        let empty_entry = Claims {
            sub: "u1".into(),
            exp: 0,
            rooms: vec![String::new()],
        };
        assert!(!empty_entry.may_enter(&room("a")));
    }

    // ---- errors ----

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

    // ---- base64url ----

    #[test]
    fn base64url_round_trips_and_is_strict() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
        ] {
            assert_eq!(b64url_encode(plain.as_bytes()), enc);
            assert_eq!(b64url_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(b64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(b64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        for bad in ["Z", "Zg==", "Zh", "Zm9", "Zm+v", "Zm/v", "Zm v"] {
            assert_eq!(b64url_decode(bad), None, "{bad}");
        }
        let mut x = 0x1234_5678_9abc_def0_u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut x) as u8).collect();
            assert_eq!(b64url_decode(&b64url_encode(&bytes)).unwrap(), bytes);
        }
    }

    // ---- bearer and API keys ----

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer("Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("  Bearer   abc  "), Some("abc"));
        assert_eq!(bearer("Bearer\tabc"), Some("abc"));
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer    "), None);
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearerabc"), None);
        assert_eq!(bearer("abc"), None);
        assert_eq!(bearer(""), None);
        assert_eq!(bearer("Bearer a b"), None);
        assert_eq!(bearer("Béarer abc"), None);
    }

    #[test]
    fn api_keys_allow_rotation_and_nothing_else() {
        let keys = vec![
            "key-old-0123456789".to_owned(),
            "key-new-9876543210".to_owned(),
        ];
        assert!(api_key_allowed(&keys, "key-old-0123456789"));
        assert!(api_key_allowed(&keys, "key-new-9876543210"));
        assert!(!api_key_allowed(&keys, "key-new-9876543211"));
        assert!(!api_key_allowed(&keys, "key-new-987654321"));
        assert!(!api_key_allowed(&keys, "key-new"));
        assert!(!api_key_allowed(&keys, "key-new-9876543210x"));
        assert!(!api_key_allowed(&keys, "KEY-NEW-9876543210"));
        assert!(!api_key_allowed(&keys, ""));
        assert!(!api_key_allowed(&[], "key-new-9876543210"));
        assert!(!api_key_allowed(&[], ""));
        assert!(!api_key_allowed(&[String::new()], ""));
    }

    // ---- no panics ----

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
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
                        if r % 17 == 0 {
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
