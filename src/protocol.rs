//! The WebSocket wire protocol: frames a client may send, frames the server sends, and the
//! type filters that decide which notifications a connection receives (docs/protocol.md, "Frames").

use serde_json::{Map, Value};

/// Frame names of the protocol; a notification may not use them as its `type` (nor any type
/// starting with [`PRESENCE_PREFIX`]).
pub const RESERVED_TYPES: [&str; 12] = [
    "connected",
    "ping",
    "pong",
    "ack",
    "subscribe",
    "unsubscribe",
    "subscribed",
    "error",
    "event",
    "emit",
    "sync",
    "synced",
];

/// Presence frames' types (`presence.joined`, …) and the client's `presence.set`.
pub const PRESENCE_PREFIX: &str = "presence.";

/// Whether a notification `type` is a protocol name.
pub fn is_reserved(t: &str) -> bool {
    RESERVED_TYPES.contains(&t) || t.starts_with(PRESENCE_PREFIX)
}

/// Most ids one `ack` frame may carry, and most patterns one filter may hold.
pub const MAX_LIST_LEN: usize = 256;

/// A frame a client sent, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// The text frame `ping` (normally answered by the runtime's auto-response).
    TextPing,
    /// `{"type":"ping"}`.
    Ping,
    /// `{"type":"ack","notificationId":"…"}` or `{"type":"ack","ids":[…]}`.
    Ack(Vec<String>),
    /// `{"type":"subscribe","data":{"types":[…]}}`.
    Subscribe(Vec<TypePattern>),
    /// `{"type":"unsubscribe","data":{"types":[…]}}`.
    Unsubscribe(Vec<TypePattern>),
    /// `{"type":"presence.set","data":{…}}`: the state, as JSON object text.
    PresenceSet(String),
    /// `{"type":"emit","event":"typing.start","data":{…}?}`: the data as JSON object text.
    Emit { event: String, data: String },
    /// `{"type":"sync","since":n}`.
    Sync { since: u64 },
}

/// Why a client frame was refused; answered with an `invalid_message` error frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFrame(pub String);

fn invalid(msg: impl Into<String>) -> InvalidFrame {
    InvalidFrame(msg.into())
}

/// Largest integer a JavaScript client can hold exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

impl ClientFrame {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<ClientFrame, InvalidFrame> {
        if text == "ping" {
            return Ok(ClientFrame::TextPing);
        }
        let mut frame: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
            invalid(format!(
                "expected a JSON object frame with a known \"type\" ({e}); see docs/protocol.md"
            ))
        })?;
        // A member set to null counts as absent, as serde reads an optional field.
        frame.retain(|_, v| !v.is_null());
        let kind = match frame.remove("type") {
            Some(Value::String(k)) => k,
            _ => {
                return Err(invalid(
                    "a frame needs a string \"type\"; see docs/protocol.md",
                ))
            }
        };
        // Members a frame does not define are ignored (clients that stamp every message with
        // their own `id` and `timestamp` work as they are); defined ones must be well-formed,
        // and values the server sets (an event's `userId`) are never read.
        match kind.as_str() {
            "ping" => Ok(ClientFrame::Ping),
            "ack" => {
                let need = || {
                    invalid("an ack carries \"notificationId\" (a string) or \"ids\" (non-empty, strings)")
                };
                let mut ids: Vec<String> = match frame.remove("notificationId") {
                    Some(Value::String(one)) => vec![one],
                    None => Vec::new(),
                    Some(_) => return Err(need()),
                };
                match frame.remove("ids") {
                    Some(Value::Array(many)) if !many.is_empty() => {
                        for v in many {
                            match v {
                                Value::String(s) => ids.push(s),
                                _ => return Err(invalid("ack \"ids\" must be strings")),
                            }
                        }
                    }
                    None if !ids.is_empty() => {}
                    _ => return Err(need()),
                }
                if ids.len() > MAX_LIST_LEN {
                    return Err(invalid(format!(
                        "an ack carries at most {MAX_LIST_LEN} ids"
                    )));
                }
                Ok(ClientFrame::Ack(ids))
            }
            "subscribe" | "unsubscribe" => {
                let need = || invalid(format!("a {kind} frame needs \"data\":{{\"types\":[…]}}"));
                let Some(Value::Object(mut data)) = frame.remove("data") else {
                    return Err(need());
                };
                let Some(Value::Array(types)) = data.remove("types") else {
                    return Err(need());
                };
                let names = types
                    .iter()
                    .map(|t| t.as_str().ok_or_else(need))
                    .collect::<Result<Vec<&str>, _>>()?;
                let patterns = TypePattern::parse_list(names).map_err(InvalidFrame)?;
                Ok(if kind == "subscribe" {
                    ClientFrame::Subscribe(patterns)
                } else {
                    ClientFrame::Unsubscribe(patterns)
                })
            }
            "presence.set" => match frame.remove("data") {
                Some(state @ Value::Object(_)) => Ok(ClientFrame::PresenceSet(state.to_string())),
                _ => Err(invalid("presence.set needs \"data\": a JSON object")),
            },
            "emit" => {
                let event = match frame.remove("event") {
                    Some(Value::String(e)) if is_valid_type(&e) => e,
                    _ => {
                        return Err(invalid(
                            "emit needs \"event\": 1-128 characters of [A-Za-z0-9_.:-]",
                        ))
                    }
                };
                let data = match frame.remove("data") {
                    None | Some(Value::Null) => "{}".to_owned(),
                    Some(d @ Value::Object(_)) => d.to_string(),
                    Some(_) => return Err(invalid("emit \"data\" must be a JSON object")),
                };
                Ok(ClientFrame::Emit { event, data })
            }
            "sync" => match frame.remove("since").as_ref().and_then(Value::as_u64) {
                Some(since) if since <= MAX_SAFE_INTEGER => Ok(ClientFrame::Sync { since }),
                _ => Err(invalid("sync needs \"since\": an integer of at least 0")),
            },
            other => Err(invalid(format!(
                "unknown frame type {other:?}; expected ping, ack, subscribe, unsubscribe, \
                 presence.set, emit or sync"
            ))),
        }
    }
}

/// Whether `t` is a well-formed notification type: 1–128 chars of `[A-Za-z0-9_.:-]`.
pub fn is_valid_type(t: &str) -> bool {
    (1..=128).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// One pattern of a type filter: `*` (everything), `prefix.*` (the prefix and a dot, then
/// anything), or an exact type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypePattern(String);

impl TypePattern {
    /// Validates one pattern.
    pub fn parse(raw: &str) -> Result<TypePattern, String> {
        let ok = raw == "*"
            || raw
                .strip_suffix(".*")
                .map_or(is_valid_type(raw), is_valid_type);
        if ok {
            Ok(TypePattern(raw.to_owned()))
        } else {
            Err(format!(
                "invalid type pattern {raw:?}: use \"*\", an exact type, or \"prefix.*\""
            ))
        }
    }

    /// Validates a list (at most [`MAX_LIST_LEN`] patterns).
    pub fn parse_list<'a>(raw: impl IntoIterator<Item = &'a str>) -> Result<Vec<Self>, String> {
        let list = raw
            .into_iter()
            .map(TypePattern::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if list.len() > MAX_LIST_LEN {
            return Err(format!("at most {MAX_LIST_LEN} type patterns"));
        }
        Ok(list)
    }

    /// Whether a notification of type `t` matches.
    pub fn matches(&self, t: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some("") => true,
            // "note.*": "note." then at least one more char.
            Some(prefix) => t.len() > prefix.len() && t.starts_with(prefix),
            None => self.0 == t,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A connection's type filter. Empty means every type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter(Vec<TypePattern>);

impl TypeFilter {
    pub fn new(patterns: Vec<TypePattern>) -> TypeFilter {
        let mut f = TypeFilter::default();
        f.add(patterns);
        f
    }

    /// Parses the `types=` query value (comma-separated; empty means all).
    pub fn from_query(raw: &str) -> Result<TypeFilter, String> {
        let parts = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
        Ok(TypeFilter::new(TypePattern::parse_list(parts)?))
    }

    /// Adds patterns not already present (`subscribe`).
    pub fn add(&mut self, patterns: Vec<TypePattern>) {
        for p in patterns {
            if !self.0.contains(&p) {
                self.0.push(p);
            }
        }
        self.0.truncate(MAX_LIST_LEN);
    }

    /// Removes the given patterns (`unsubscribe`). Removing the last one widens the filter back
    /// to every type, as "an empty filter means all types" implies (docs/protocol.md).
    pub fn remove(&mut self, patterns: &[TypePattern]) {
        self.0.retain(|p| !patterns.contains(p));
    }

    /// Whether a notification of type `t` passes.
    pub fn matches(&self, t: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.matches(t))
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns, for the `subscribed` frame and the socket attachment.
    pub fn patterns(&self) -> Vec<String> {
        self.0.iter().map(|p| p.0.clone()).collect()
    }

    /// Rebuilds a filter from stored patterns (already validated when stored).
    pub fn from_stored(patterns: &[String]) -> TypeFilter {
        TypeFilter(
            patterns
                .iter()
                .filter_map(|p| TypePattern::parse(p).ok())
                .collect(),
        )
    }
}

/// Frames the server sends, other than notifications (which are rendered once per publish by
/// [`crate::notification`]).
pub mod server {
    use super::*;
    use crate::json::Object;

    /// `connected`, the first frame of every connection; `presence` is the room's presence
    /// summary for a connection that asked for it (`presence=1`).
    pub fn connected(
        room_id: &str,
        connection_id: &str,
        last_seq: u64,
        recovered: Option<bool>,
        server_time: &str,
        presence: Option<&str>,
    ) -> String {
        let mut frame = Object::new()
            .str("type", "connected")
            .str("roomId", room_id)
            .str("connectionId", connection_id)
            .num("lastSeq", last_seq)
            .str("serverTime", server_time);
        if let Some(r) = recovered {
            frame = frame.bool("recovered", r);
        }
        if let Some(p) = presence {
            frame = frame.raw("presence", p);
        }
        frame.finish()
    }

    /// `event`: a client event, stamped with its sender's `sub`.
    pub fn event(name: &str, data: &str, user: &str, timestamp: &str) -> String {
        Object::new()
            .str("type", "event")
            .str("event", name)
            .raw("data", data)
            .str("userId", user)
            .str("timestamp", timestamp)
            .finish()
    }

    /// `synced`, ending the replay a `sync` asked for.
    pub fn synced(last_seq: u64, recovered: bool) -> String {
        Object::new()
            .str("type", "synced")
            .num("lastSeq", last_seq)
            .bool("recovered", recovered)
            .finish()
    }

    /// `pong`, answering a JSON ping.
    pub fn pong(timestamp: &str) -> String {
        Object::new()
            .str("type", "pong")
            .str("timestamp", timestamp)
            .finish()
    }

    /// `subscribed`, answering subscribe/unsubscribe with the resulting filter.
    pub fn subscribed(filter: &TypeFilter) -> String {
        let types = Object::new().strs("types", &filter.patterns()).finish();
        Object::new()
            .str("type", "subscribed")
            .raw("data", &types)
            .finish()
    }

    /// `batch`: frames queued for a connection that accepts batches (`batch=1`), in order,
    /// each exactly as it would have been sent alone.
    pub fn batch<'a>(frames: impl IntoIterator<Item = &'a str>) -> String {
        let mut out = String::from(r#"{"type":"batch","frames":["#);
        for (i, f) in frames.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(f);
        }
        out.push_str("]}");
        out
    }

    /// `error`, for a frame the server refused.
    pub fn error(code: &str, message: &str) -> String {
        Object::new()
            .str("type", "error")
            .str("code", code)
            .str("message", message)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn pats(list: &[&str]) -> Vec<TypePattern> {
        TypePattern::parse_list(list.iter().copied()).unwrap()
    }

    #[test]
    fn parses_every_client_frame() {
        assert_eq!(ClientFrame::parse("ping"), Ok(ClientFrame::TextPing));
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping)
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ack","notificationId":"n1"}"#),
            Ok(ClientFrame::Ack(vec!["n1".into()]))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"ack","ids":["a","b"]}"#),
            Ok(ClientFrame::Ack(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"subscribe","data":{"types":["note.*"]}}"#),
            Ok(ClientFrame::Subscribe(pats(&["note.*"])))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"unsubscribe","data":{"types":["x"]}}"#),
            Ok(ClientFrame::Unsubscribe(pats(&["x"])))
        );
    }

    #[test]
    fn members_a_frame_does_not_define_are_ignored() {
        // Clients that stamp every message with `id` and `timestamp`.
        let stamp = r#""id":"m1","timestamp":"2026-01-20T10:00:00.000Z""#;
        let cases = [
            (format!(r#"{{"type":"ping",{stamp}}}"#), ClientFrame::Ping),
            (
                format!(r#"{{"type":"ack","notificationId":"n1",{stamp}}}"#),
                ClientFrame::Ack(vec!["n1".into()]),
            ),
            (
                format!(
                    r#"{{"type":"subscribe","data":{{"types":["note.*"],"channels":["x"]}},{stamp}}}"#
                ),
                ClientFrame::Subscribe(pats(&["note.*"])),
            ),
            (
                format!(r#"{{"type":"sync","since":4,{stamp}}}"#),
                ClientFrame::Sync { since: 4 },
            ),
            // Values the server sets are not taken from the frame, and not refused either.
            (
                format!(
                    r#"{{"type":"emit","event":"typing.start","userId":"mallory","sub":"x",{stamp}}}"#
                ),
                ClientFrame::Emit {
                    event: "typing.start".into(),
                    data: "{}".into(),
                },
            ),
            (
                r#"{"type":"ack","notificationId":"a","ids":["b"]}"#.into(),
                ClientFrame::Ack(vec!["a".into(), "b".into()]),
            ),
        ];
        for (text, frame) in cases {
            assert_eq!(ClientFrame::parse(&text), Ok(frame), "{text}");
        }
    }

    #[test]
    fn parses_two_way_frames() {
        assert_eq!(
            ClientFrame::parse(r#"{"type":"presence.set","data":{"typing":true}}"#),
            Ok(ClientFrame::PresenceSet(r#"{"typing":true}"#.into()))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"emit","event":"typing.start","data":{"to":"b"}}"#),
            Ok(ClientFrame::Emit {
                event: "typing.start".into(),
                data: r#"{"to":"b"}"#.into()
            })
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"emit","event":"cursor.move"}"#),
            Ok(ClientFrame::Emit {
                event: "cursor.move".into(),
                data: "{}".into()
            }),
            "data defaults to {{}}"
        );
        assert_eq!(
            ClientFrame::parse(r#"{"type":"sync","since":0}"#),
            Ok(ClientFrame::Sync { since: 0 })
        );
        for bad in [
            r#"{"type":"presence.set"}"#,
            r#"{"type":"presence.set","data":[1]}"#,
            r#"{"type":"emit"}"#,
            r#"{"type":"emit","event":"a b"}"#,
            r#"{"type":"emit","event":"x","data":"str"}"#,
            r#"{"type":"sync"}"#,
            r#"{"type":"sync","since":-1}"#,
            r#"{"type":"sync","since":1.5}"#,
            r#"{"type":"sync","since":"3"}"#,
            r#"{"type":"sync","since":9007199254740992}"#,
        ] {
            assert!(ClientFrame::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_names() {
        for t in [
            "event",
            "emit",
            "sync",
            "synced",
            "presence.joined",
            "presence.anything",
        ] {
            assert!(is_reserved(t), "{t}");
        }
        assert!(!is_reserved("presence") && !is_reserved("note.created"));
    }

    #[test]
    fn refuses_wrong_shapes() {
        for bad in [
            "",
            "pong",
            "PING",
            "null",
            "[]",
            "{}",
            r#"{"type":"hello"}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","ids":[]}"#,
            r#"{"type":"ack","notificationId":5}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","data":{"types":["bad pattern"]}}"#,
            r#"{"type":"subscribe","data":{"types":"note.*"}}"#,
            r#"{"type":"ack","ids":["a"],"notificationId":5}"#,
            r#"{"type":"emit","event":"typing.start","data":[1]}"#,
            r#"{"type":"subscribe","data":{"channels":["memories"]}}"#,
            r#"{"type":"sync","since":"3"}"#,
        ] {
            assert!(ClientFrame::parse(bad).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_LIST_LEN).map(|i| format!("\"{i}\"")).collect();
        let frame = format!(r#"{{"type":"ack","ids":[{}]}}"#, many.join(","));
        assert!(ClientFrame::parse(&frame).is_err());
    }

    #[test]
    fn patterns_match_as_the_spec_says() {
        let p = TypePattern::parse("note.*").unwrap();
        assert!(p.matches("note.created") && p.matches("note.a.b"));
        assert!(!p.matches("notes.x") && !p.matches("note.") && !p.matches("note"));
        assert!(TypePattern::parse("*").unwrap().matches("anything"));
        let exact = TypePattern::parse("task.created").unwrap();
        assert!(exact.matches("task.created") && !exact.matches("task.created.x"));
        for bad in ["", "note*", "*.x", "a b", "note.**", ".*"] {
            assert!(TypePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_add_remove_and_widen() {
        let mut f = TypeFilter::from_query("note.*, task.created").unwrap();
        assert!(f.matches("note.x") && f.matches("task.created") && !f.matches("task.deleted"));
        f.add(pats(&["task.deleted", "note.*"]));
        assert_eq!(f.patterns(), ["note.*", "task.created", "task.deleted"]);
        f.remove(&pats(&["note.*", "task.created", "task.deleted"]));
        assert!(f.is_all() && f.matches("anything"));
        assert!(TypeFilter::from_query("").unwrap().is_all());
        assert!(TypeFilter::from_query("a,b c").is_err());
        assert_eq!(TypeFilter::from_stored(&f.patterns()), f);
    }

    #[test]
    fn type_names() {
        assert!(is_valid_type("note.creation.completed") && is_valid_type("a:b-c_d"));
        assert!(!is_valid_type("") && !is_valid_type("a b") && !is_valid_type(&"a".repeat(129)));
    }

    #[test]
    fn server_frames_are_json() {
        let c: Value =
            serde_json::from_str(&server::connected("r", "c", 7, Some(false), "t", None)).unwrap();
        assert_eq!(
            (c["type"].as_str(), c["lastSeq"].as_u64()),
            (Some("connected"), Some(7))
        );
        assert_eq!(c["recovered"], false);
        let c: Value = serde_json::from_str(&server::connected(
            "r",
            "c",
            7,
            None,
            "t",
            Some(r#"{"count":0,"users":[]}"#),
        ))
        .unwrap();
        assert!(c.get("recovered").is_none());
        assert_eq!(c["presence"]["count"], 0);
        let e: Value =
            serde_json::from_str(&server::event("typing.start", r#"{"a":1}"#, "u\"1", "t"))
                .unwrap();
        assert_eq!(
            (e["type"].as_str(), e["userId"].as_str(), &e["data"]["a"]),
            (Some("event"), Some("u\"1"), &Value::from(1))
        );
        let s: Value = serde_json::from_str(&server::synced(9, true)).unwrap();
        assert_eq!(
            (
                s["type"].as_str(),
                s["lastSeq"].as_u64(),
                s["recovered"].as_bool()
            ),
            (Some("synced"), Some(9), Some(true))
        );
        let e: Value = serde_json::from_str(&server::error("rate_limited", "slow")).unwrap();
        assert_eq!(e["code"], "rate_limited");
    }
}
