//! Publish API keys: the `Authorization: Bearer` header and the constant-time key check.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

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
}
