//! Every error the HTTP API can answer, mapped to its status and code in one place.

use serde_json::json;

/// An error answered over HTTP as
/// `{"success":false,"error":{"code":"<snake_case>","message":"<human readable>"}}`.
///
/// Messages never echo secrets, tokens or keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 404: no such route.
    NotFound,
    /// 405: the route exists with other methods.
    MethodNotAllowed { allow: &'static str },
    /// 400: the room id fails `^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`.
    InvalidRoomId,
    /// 400: the body is not JSON at all.
    InvalidJson(String),
    /// 400: the body is JSON but not a valid request.
    InvalidBody(String),
    /// 400: a notification `type` that is a protocol frame name.
    ReservedType(String),
    /// 400: a malformed query parameter.
    InvalidQuery(String),
    /// 409: a publish `id` the room already holds under another idempotency key.
    DuplicateId(String),
    /// 401: no credentials, or wrong ones.
    Unauthorized(String),
    /// 403: valid credentials that do not reach this room.
    Forbidden(String),
    /// 403: a browser `Origin` outside `ALLOWED_ORIGINS`.
    OriginNotAllowed,
    /// 413: a body over `MAX_MESSAGE_BYTES`.
    PayloadTooLarge { limit: usize },
    /// 415: a body that is not `application/json`.
    UnsupportedMediaType,
    /// 426: `/subscribe` without `Upgrade: websocket`.
    UpgradeRequired,
    /// 429: the room holds `MAX_CONNECTIONS_PER_ROOM` sockets.
    RoomFull { retry_after_secs: u32 },
    /// 429: this user holds `MAX_CONNECTIONS_PER_USER` sockets in the room.
    UserConnectionLimit { retry_after_secs: u32 },
    /// 503: a setting the route needs is missing (fail closed).
    NotConfigured(&'static str),
    /// 503: a setting is present but unusable.
    Misconfigured {
        setting: &'static str,
        reason: String,
    },
    /// 500: a fault of ours; details go to the log, not to the caller.
    Internal,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::InvalidRoomId
            | ApiError::InvalidJson(_)
            | ApiError::InvalidBody(_)
            | ApiError::ReservedType(_)
            | ApiError::InvalidQuery(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::DuplicateId(_) => 409,
            ApiError::Forbidden(_) | ApiError::OriginNotAllowed => 403,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType => 415,
            ApiError::UpgradeRequired => 426,
            ApiError::RoomFull { .. } | ApiError::UserConnectionLimit { .. } => 429,
            ApiError::NotConfigured(_) | ApiError::Misconfigured { .. } => 503,
            ApiError::Internal => 500,
        }
    }

    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::InvalidRoomId => "invalid_room_id",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::ReservedType(_) => "reserved_type",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::DuplicateId(_) => "duplicate_id",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UpgradeRequired => "upgrade_required",
            ApiError::RoomFull { .. } => "room_full",
            ApiError::UserConnectionLimit { .. } => "too_many_connections",
            ApiError::NotConfigured(_) => "not_configured",
            ApiError::Misconfigured { .. } => "misconfigured",
            ApiError::Internal => "internal_error",
        }
    }

    /// The human-readable explanation.
    pub fn message(&self) -> String {
        match self {
            ApiError::NotFound => "no such route; see GET /healthz and the README".into(),
            ApiError::MethodNotAllowed { allow } => format!("method not allowed; use {allow}"),
            ApiError::InvalidRoomId => {
                "room id must match ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$".into()
            }
            ApiError::InvalidJson(why) => format!("body is not valid JSON: {why}"),
            ApiError::InvalidBody(why)
            | ApiError::InvalidQuery(why)
            | ApiError::Unauthorized(why)
            | ApiError::Forbidden(why) => why.clone(),
            ApiError::ReservedType(t) => {
                format!("type {t:?} is a protocol frame name (or starts with presence.) and cannot be published")
            }
            ApiError::DuplicateId(id) => format!(
                "notification id {id:?} is already used in this room by a publish with another Idempotency-Key"
            ),
            ApiError::OriginNotAllowed => "Origin is not in ALLOWED_ORIGINS".into(),
            ApiError::PayloadTooLarge { limit } => {
                format!("body is larger than MAX_MESSAGE_BYTES ({limit} bytes)")
            }
            ApiError::UnsupportedMediaType => "Content-Type must be application/json".into(),
            ApiError::UpgradeRequired => {
                "this route is a WebSocket endpoint: send Upgrade: websocket".into()
            }
            ApiError::RoomFull { .. } => "room is at MAX_CONNECTIONS_PER_ROOM".into(),
            ApiError::UserConnectionLimit { .. } => {
                "this user is at MAX_CONNECTIONS_PER_USER in this room".into()
            }
            ApiError::NotConfigured(setting) => {
                format!("the server is not configured: set {setting}")
            }
            ApiError::Misconfigured { setting, reason } => {
                format!("the setting {setting} is unusable: {reason}")
            }
            ApiError::Internal => "internal error".into(),
        }
    }

    /// Seconds for a `Retry-After` header, where the error has one.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ApiError::RoomFull { retry_after_secs }
            | ApiError::UserConnectionLimit { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The `Allow` header for a 405.
    pub fn allow(&self) -> Option<&'static str> {
        match self {
            ApiError::MethodNotAllowed { allow } => Some(allow),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        json!({"success": false, "error": {"code": self.code(), "message": self.message()}})
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_spec_shape() {
        let v: serde_json::Value = serde_json::from_str(&ApiError::InvalidRoomId.body()).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["error"]["code"], "invalid_room_id");
        assert!(v["error"]["message"].as_str().unwrap().contains("room id"));
    }

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(ApiError::NotFound.status(), 404);
        assert_eq!(ApiError::MethodNotAllowed { allow: "GET" }.status(), 405);
        assert_eq!(ApiError::Unauthorized("x".into()).status(), 401);
        assert_eq!(ApiError::OriginNotAllowed.status(), 403);
        assert_eq!(ApiError::PayloadTooLarge { limit: 1 }.status(), 413);
        assert_eq!(ApiError::UnsupportedMediaType.status(), 415);
        assert_eq!(ApiError::UpgradeRequired.status(), 426);
        let full = ApiError::RoomFull {
            retry_after_secs: 5,
        };
        assert_eq!((full.status(), full.retry_after_secs()), (429, Some(5)));
        assert_eq!(ApiError::NotConfigured("JWT_SECRET").status(), 503);
        assert!(ApiError::NotConfigured("JWT_SECRET")
            .message()
            .contains("JWT_SECRET"));
    }
}
