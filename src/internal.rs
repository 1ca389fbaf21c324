//! The internal API between the Worker and a room's Durable Object.
//!
//! Only the Worker can reach a Durable Object, and it builds every internal request from
//! scratch, with only these headers: whatever a client sends (including headers of these
//! names) never reaches a room.

/// Base URL of internal requests (the host is never resolved).
pub const BASE: &str = "https://room.internal";

/// `GET /subscribe` (a WebSocket upgrade), `POST /publish`, `GET /history`, `GET /health`.
pub mod path {
    pub const SUBSCRIBE: &str = "/subscribe";
    pub const PUBLISH: &str = "/publish";
    pub const HISTORY: &str = "/history";
    pub const HEALTH: &str = "/health";
}

/// Header names set by the Worker only.
pub mod header {
    /// The room id (every request).
    pub const ROOM: &str = "x-roomcast-room";
    /// The verified token's `sub` (subscribe).
    pub const SUB: &str = "x-roomcast-sub";
    /// The verified token's `exp`, Unix seconds (subscribe).
    pub const EXP: &str = "x-roomcast-exp";
    /// `since=` (subscribe, history).
    pub const SINCE: &str = "x-roomcast-since";
    /// `types=` patterns, comma-separated and already validated (subscribe).
    pub const TYPES: &str = "x-roomcast-types";
    /// `limit=` (history).
    pub const LIMIT: &str = "x-roomcast-limit";
    /// Notification id (publish).
    pub const ID: &str = "x-roomcast-id";
    /// Notification type (publish).
    pub const TYPE: &str = "x-roomcast-type";
    /// Notification status (publish).
    pub const STATUS: &str = "x-roomcast-status";
    /// `1` when the notification requires an ack (publish).
    pub const ACK: &str = "x-roomcast-ack";
    /// Idempotency key (publish).
    pub const KEY: &str = "x-roomcast-key";
}
