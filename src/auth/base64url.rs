//! Unpadded base64url (RFC 4648 §5), as JWS and JWK use.

use base64ct::{Base64UrlUnpadded, Encoding};

/// Unpadded base64url encoding.
pub(super) fn encode(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// Strict unpadded base64url decoding: no padding, no whitespace, zero trailing bits
/// (base64ct re-encodes the last block to refuse non-canonical forms).
pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
    Base64UrlUnpadded::decode_vec(text).ok()
}

#[cfg(test)]
mod tests {
    use super::{decode as b64url_decode, encode as b64url_encode};
    use crate::auth::test_support::xorshift;

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
}
