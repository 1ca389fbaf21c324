//! The WebSocket wire protocol: frames a client may send, frames the server sends, and the
//! type filters that decide which notifications a connection receives (SPEC, "WebSocket protocol").

use serde::Deserialize;

/// Frame names of the protocol; a notification may not use them as its `type`.
pub const RESERVED_TYPES: [&str; 8] = [
    "connected",
    "ping",
    "pong",
    "ack",
    "subscribe",
    "unsubscribe",
    "subscribed",
    "error",
];

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
}

/// Why a client frame was refused; answered with an `invalid_message` error frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFrame(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "notificationId")]
    notification_id: Option<String>,
    ids: Option<Vec<String>>,
    data: Option<RawTypes>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTypes {
    types: Vec<String>,
}

impl ClientFrame {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<ClientFrame, InvalidFrame> {
        if text == "ping" {
            return Ok(ClientFrame::TextPing);
        }
        let raw: RawFrame = serde_json::from_str(text).map_err(|e| {
            InvalidFrame(format!(
                "expected a JSON frame with a known \"type\" ({e}); see docs/protocol.md"
            ))
        })?;
        let no_extras = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(InvalidFrame(format!(
                    "unexpected fields for a {what} frame"
                )))
            }
        };
        match raw.kind.as_str() {
            "ping" => {
                no_extras(
                    raw.notification_id.is_none() && raw.ids.is_none() && raw.data.is_none(),
                    "ping",
                )?;
                Ok(ClientFrame::Ping)
            }
            "ack" => {
                no_extras(raw.data.is_none(), "ack")?;
                let ids: Vec<String> = match (raw.notification_id, raw.ids) {
                    (Some(one), None) => vec![one],
                    (None, Some(many)) if !many.is_empty() => many,
                    _ => {
                        return Err(InvalidFrame(
                            "an ack carries either \"notificationId\" or a non-empty \"ids\""
                                .into(),
                        ))
                    }
                };
                if ids.len() > MAX_LIST_LEN {
                    return Err(InvalidFrame(format!(
                        "an ack carries at most {MAX_LIST_LEN} ids"
                    )));
                }
                Ok(ClientFrame::Ack(ids))
            }
            kind @ ("subscribe" | "unsubscribe") => {
                no_extras(raw.notification_id.is_none() && raw.ids.is_none(), kind)?;
                let types = raw.data.ok_or_else(|| {
                    InvalidFrame(format!("a {kind} frame needs \"data\":{{\"types\":[…]}}"))
                })?;
                let patterns = TypePattern::parse_list(types.types.iter().map(String::as_str))
                    .map_err(InvalidFrame)?;
                Ok(if kind == "subscribe" {
                    ClientFrame::Subscribe(patterns)
                } else {
                    ClientFrame::Unsubscribe(patterns)
                })
            }
            other => Err(InvalidFrame(format!(
                "unknown frame type {other:?}; expected ping, ack, subscribe or unsubscribe"
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
    /// to every type, as SPEC's "an empty filter means all types" implies.
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

    /// `connected`, the first frame of every connection.
    pub fn connected(
        room_id: &str,
        connection_id: &str,
        last_seq: u64,
        recovered: Option<bool>,
        server_time: &str,
    ) -> String {
        let frame = Object::new()
            .str("type", "connected")
            .str("roomId", room_id)
            .str("connectionId", connection_id)
            .num("lastSeq", last_seq)
            .str("serverTime", server_time);
        match recovered {
            Some(r) => frame.bool("recovered", r),
            None => frame,
        }
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
            r#"{"type":"ack","notificationId":"a","ids":["b"]}"#,
            r#"{"type":"ack","notificationId":5}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","data":{"types":["bad pattern"]}}"#,
            r#"{"type":"subscribe","data":{"types":"note.*"}}"#,
            r#"{"type":"ping","extra":1}"#,
            r#"{"type":"ping","ids":["a"]}"#,
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
            serde_json::from_str(&server::connected("r", "c", 7, Some(false), "t")).unwrap();
        assert_eq!(
            (c["type"].as_str(), c["lastSeq"].as_u64()),
            (Some("connected"), Some(7))
        );
        assert_eq!(c["recovered"], false);
        let c: Value = serde_json::from_str(&server::connected("r", "c", 7, None, "t")).unwrap();
        assert!(c.get("recovered").is_none());
        let e: Value = serde_json::from_str(&server::error("rate_limited", "slow")).unwrap();
        assert_eq!(e["code"], "rate_limited");
    }
}
