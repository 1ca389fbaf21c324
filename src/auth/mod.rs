//! Authentication: client JWTs (docs/protocol.md, "Connecting") and publish API keys.
//!
//! Pure Rust, no runtime types: the Worker passes in the settings, the header value and the time.
//!
//! A token is checked in two steps: [`TokenVerifier::inspect`] (structure, header, algorithm,
//! the candidate keys, and an HS256 signature with `jwt-compact`), then, for JWKS algorithms, a
//! signature check by the platform, then [`TokenVerifier::claims`]. On Workers the RS256, ES256
//! and EdDSA check is the runtime's WebCrypto (`src/glue/webcrypto.rs`): the same algorithms in
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
//!
//! One concept per file:
//!
//! | file | holds |
//! |---|---|
//! | `token.rs` | [`TokenVerifier`], [`AuthError`], [`Inspected`], [`Family`], signatures, [`sign_hs256`] |
//! | `claims.rs` | [`Claims`] and the claim checks (`exp`/`nbf` with [`LEEWAY_SECS`], `iss`, `aud`, `sub`, `rooms`) |
//! | `jwks.rs` | `JWT_JWKS` parsing and key shape checks ([`JwksKey`]), cached per isolate |
//! | `api_key.rs` | [`api_key_allowed`] (constant time) and [`bearer`] (the `Authorization` header) |
//! | `base64url.rs` | strict unpadded base64url |
//! | `credentials.rs` | [`Credentials`]: the client token or API key a request presents |
//! | `origin.rs` | [`OriginPolicy`]: `ALLOWED_ORIGINS`, for upgrades and CORS alike |
//!
//! The modules are private: every item is used as `crate::auth::X`.

mod api_key;
mod base64url;
mod claims;
mod credentials;
mod jwks;
mod origin;
mod token;

#[cfg(test)]
mod test_support;

pub use api_key::{api_key_allowed, bearer};
pub use claims::{Claims, LEEWAY_SECS};
pub use credentials::Credentials;
pub use jwks::JwksKey;
pub use origin::OriginPolicy;
pub use token::{sign_hs256, AuthError, Family, Inspected, TokenVerifier};
