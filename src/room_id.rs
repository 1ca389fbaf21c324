//! Room identifiers: the only way to name a room, and only ever valid.

use std::fmt;

/// Longest room id accepted, in bytes (all accepted characters are ASCII).
pub const MAX_ROOM_ID_LEN: usize = 128;

/// A room id matching `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`.
///
/// Constructed only through [`RoomId::parse`], so holding one proves it is valid: the Worker
/// never forwards anything else to a Durable Object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(String);

/// Why a string is not a room id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRoomId;

impl RoomId {
    /// Validates `raw` (already percent-decoded or not: `%` is never accepted).
    pub fn parse(raw: &str) -> Result<RoomId, InvalidRoomId> {
        let bytes = raw.as_bytes();
        let first_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric);
        let rest_ok = bytes
            .iter()
            .skip(1)
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
        if first_ok && rest_ok && bytes.len() <= MAX_ROOM_ID_LEN {
            Ok(RoomId(raw.to_owned()))
        } else {
            Err(InvalidRoomId)
        }
    }

    /// The conventional per-user room, `user_{userId}`.
    pub fn for_user(user_id: &str) -> Result<RoomId, InvalidRoomId> {
        // An empty id names nobody: `user_` would be a caller's bug, not a room.
        if user_id.is_empty() {
            return Err(InvalidRoomId);
        }
        RoomId::parse(&format!("user_{user_id}"))
    }

    /// The conventional per-operation room, `request_{requestId}`.
    pub fn for_request(request_id: &str) -> Result<RoomId, InvalidRoomId> {
        if request_id.is_empty() {
            return Err(InvalidRoomId);
        }
        RoomId::parse(&format!("request_{request_id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RoomId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_conventional_names() {
        for ok in [
            "user_42",
            "request_abc-1",
            "a",
            "team:7.x",
            "A_b.c:d-e",
            "9",
        ] {
            assert_eq!(RoomId::parse(ok).unwrap().as_str(), ok);
        }
        assert_eq!(RoomId::for_user("u1").unwrap().as_str(), "user_u1");
        assert_eq!(RoomId::for_request("r1").unwrap().as_str(), "request_r1");
    }

    #[test]
    fn refuses_everything_else() {
        let long = "a".repeat(129);
        for bad in [
            "", ".", "..", "...", "_x", "-x", ":x", "a/b", "a%2Fb", "a b", "é", "a\0", "a\n", &long,
        ] {
            assert_eq!(RoomId::parse(bad), Err(InvalidRoomId), "{bad:?}");
        }
        assert!(RoomId::parse(&"a".repeat(128)).is_ok());
        assert!(RoomId::for_user("x/y").is_err());
        assert!(RoomId::for_user("").is_err());
        assert!(RoomId::for_request("").is_err());
        assert!(RoomId::for_user(&"a".repeat(124)).is_err());
    }
}
