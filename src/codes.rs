//! Every close code a room sends, with its reason, and every structured log event: the names
//! clients and operators match on, each defined once (docs/protocol.md and docs/operations.md
//! list them; a unit test checks that they still do).

use crate::json::Object;

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// 4001: the token expired while connected.
    TokenExpired,
    /// 4002: the 10th refused frame within the strike window (rate limits).
    RateLimited,
    /// 4003: the 10th invalid frame within the strike window.
    InvalidFrames,
    /// 4008: nothing received from the connection for `IDLE_TIMEOUT_SECONDS`.
    Idle,
    /// 1009: a frame over `MAX_MESSAGE_BYTES`.
    TooBig,
    /// 1011: the room failed while setting the connection up.
    Internal,
    /// The client closed: its code is echoed (see [`Close::echo`]).
    Echo(u16),
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Close::TokenExpired => 4001,
            Close::RateLimited => 4002,
            Close::InvalidFrames => 4003,
            Close::Idle => 4008,
            Close::TooBig => 1009,
            Close::Internal => 1011,
            Close::Echo(code) => code,
        }
    }

    /// The close frame's reason text (the client's own, for an echo, is passed separately).
    pub fn reason(self) -> &'static str {
        match self {
            Close::TokenExpired => "token expired",
            Close::RateLimited => "rate limit exceeded persistently",
            Close::InvalidFrames => "invalid messages persistently",
            Close::Idle => "idle",
            Close::TooBig => "frame larger than MAX_MESSAGE_BYTES",
            Close::Internal => "internal error",
            Close::Echo(_) => "",
        }
    }

    /// The answer to a client's close: its own code, except the ones a peer may not send
    /// (1005, 1006, 1015, and anything outside the sendable ranges), which become 1000.
    pub fn echo(code: u16) -> Close {
        Close::Echo(match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => code,
            _ => 1000,
        })
    }

    /// Every code the server chooses itself, for the docs check.
    pub const SERVER: [Close; 6] = [
        Close::TokenExpired,
        Close::RateLimited,
        Close::InvalidFrames,
        Close::Idle,
        Close::TooBig,
        Close::Internal,
    ];
}

/// Why the server refused a client frame: the `code` of its `{"type":"error"}` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not JSON, an unknown `type`, a wrong shape (counts toward the 4003 close).
    InvalidMessage,
    /// Over a rate (the frame rate, `presence.set`'s, `CLIENT_EVENT_RATE`); counts toward the
    /// 4002 close.
    RateLimited,
    /// A presence state or an event's `data` over its size limit (counts toward 4003).
    TooLarge,
    /// An `emit` whose event name `CLIENT_EVENT_TYPES` does not allow (counts toward 4003).
    EventNotAllowed,
}

impl FrameError {
    pub fn code(self) -> &'static str {
        match self {
            FrameError::InvalidMessage => "invalid_message",
            FrameError::RateLimited => "rate_limited",
            FrameError::TooLarge => "too_large",
            FrameError::EventNotAllowed => "event_not_allowed",
        }
    }

    /// Whether it counts toward the rate-limit close (4002) rather than the invalid-frame one.
    pub fn is_rate(self) -> bool {
        self == FrameError::RateLimited
    }

    pub const ALL: [FrameError; 4] = [
        FrameError::InvalidMessage,
        FrameError::RateLimited,
        FrameError::TooLarge,
        FrameError::EventNotAllowed,
    ];
}

/// A structured log line's `event`: one JSON object per line, never a token, key or secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEvent {
    /// A socket was accepted (room, connection, sub, since, replayed, connections, latencyMs).
    Connect,
    /// A socket closed (room, connection, code, reason).
    Disconnect,
    /// A notification was stored and sent (room, id, seq, type, requiresAck, broadcastCount,
    /// latencyMs), or an ephemeral one sent (ephemeral, no seq).
    Publish,
    /// Pending notifications were acked (room, connection, sub, ids, acked).
    Ack,
    /// A redelivery round went out (room, id, seq, attempt).
    Retry,
    /// A pending notification used up its rounds (room, id, seq, attempts).
    Failed,
    /// Pending notifications reached `HISTORY_TTL_SECONDS` unacked and became failed (room, pending).
    Expired,
    /// The room's alarm ran (room, lateMs, rounds, failed, tokensExpired, next).
    Alarm,
    /// The Worker refused a request with 401, 403, 429 or 503 (method, path, status, code);
    /// never the query string, which may hold a token.
    Refused,
    /// A room refused a connection at a connection limit (room, limit, sub).
    LimitRefused,
    /// A fault of ours (error, in): answered 500 or logged where nobody waits for an answer.
    InternalError,
}

impl LogEvent {
    pub fn name(self) -> &'static str {
        match self {
            LogEvent::Connect => "connect",
            LogEvent::Disconnect => "disconnect",
            LogEvent::Publish => "publish",
            LogEvent::Ack => "ack",
            LogEvent::Retry => "retry",
            LogEvent::Failed => "failed",
            LogEvent::Expired => "expired",
            LogEvent::Alarm => "alarm",
            LogEvent::Refused => "refused",
            LogEvent::LimitRefused => "limit_refused",
            LogEvent::InternalError => "internal_error",
        }
    }

    /// Starts this event's line: `LogEvent::Publish.line().str("room", id)…`.
    pub fn line(self) -> Object {
        Object::new().str("event", self.name())
    }

    pub const ALL: [LogEvent; 11] = [
        LogEvent::Connect,
        LogEvent::Disconnect,
        LogEvent::Publish,
        LogEvent::Ack,
        LogEvent::Retry,
        LogEvent::Failed,
        LogEvent::Expired,
        LogEvent::Alarm,
        LogEvent::Refused,
        LogEvent::LimitRefused,
        LogEvent::InternalError,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_only_sendable_codes() {
        assert_eq!(Close::echo(1000).code(), 1000);
        assert_eq!(Close::echo(4000).code(), 4000);
        assert_eq!(Close::echo(3000).code(), 3000);
        for unsendable in [1004, 1005, 1006, 1015, 0, 999, 2000, 5000] {
            assert_eq!(Close::echo(unsendable).code(), 1000, "{unsendable}");
        }
    }

    #[test]
    fn docs_list_every_close_code_and_log_event() {
        let protocol = include_str!("../docs/protocol.md");
        for close in Close::SERVER {
            assert!(
                protocol.contains(&format!("| {} |", close.code())),
                "docs/protocol.md's close code table lacks {}",
                close.code()
            );
        }
        for e in FrameError::ALL {
            assert!(
                protocol.contains(&format!("`{}`", e.code())),
                "docs/protocol.md does not describe the error code `{}`",
                e.code()
            );
        }
        let operations = include_str!("../docs/operations.md");
        for event in LogEvent::ALL {
            assert!(
                operations.contains(&format!("`{}`", event.name())),
                "docs/operations.md does not describe the log event `{}`",
                event.name()
            );
        }
    }

    #[test]
    fn lines_start_with_the_event() {
        assert_eq!(
            LogEvent::Publish.line().num("seq", 3).finish(),
            r#"{"event":"publish","seq":3}"#
        );
    }
}
