//! Notifications: validating a publish (docs/protocol.md, "Publishing") and rendering its frame.
//!
//! The Worker validates and renders everything that does not depend on the room, so the room's
//! Durable Object (the one serial point of a room) only prefixes `id` and `seq` and appends
//! `attempt`: it never parses or re-serializes `data`.

use crate::error::ApiError;
use crate::json::Object;
use crate::protocol::{is_reserved, is_valid_type};
use crate::room_id::RoomId;
use crate::time;
use serde_json::{Map, Value};

/// Longest client-chosen id or idempotency key.
pub const MAX_ID_LEN: usize = 128;

/// A notification's `status` as its publisher set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Error,
    Pending,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Pending => "pending",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "success" => Status::Success,
            "error" => Status::Error,
            "pending" => Status::Pending,
            _ => return None,
        })
    }
}

/// What identifies a publish and decides its delivery: validated by the Worker, carried by the
/// internal call, stored and logged by the room. Its fields are named here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The notification id: the publisher's `id`, or one the server generated.
    pub id: String,
    /// The notification `type`.
    pub kind: String,
    pub status: Status,
    pub requires_ack: bool,
    /// What makes a repeat a duplicate: the `Idempotency-Key` header, else the body's `id`.
    pub key: Option<String>,
    /// Sent to the sockets connected now and nothing else: no seq, no log, no ack.
    pub ephemeral: bool,
}

/// The names an [`Envelope`]'s fields travel under (internal URL, log lines).
const ID: &str = "id";
const TYPE: &str = "type";
const STATUS: &str = "status";
const REQUIRES_ACK: &str = "requiresAck";
const KEY: &str = "key";
const EPHEMERAL: &str = "ephemeral";

impl Envelope {
    /// Writes every field as text (`requiresAck` as `1`/`0`, `key` only when present).
    pub fn write_fields(&self, mut field: impl FnMut(&str, &str)) {
        field(ID, &self.id);
        field(TYPE, &self.kind);
        field(STATUS, self.status.as_str());
        field(REQUIRES_ACK, if self.requires_ack { "1" } else { "0" });
        if let Some(k) = &self.key {
            field(KEY, k);
        }
        if self.ephemeral {
            field(EPHEMERAL, "1");
        }
    }

    /// Reads what [`Envelope::write_fields`] wrote; `None` if a field is missing or invalid.
    pub fn read_fields<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<Envelope> {
        Some(Envelope {
            id: get(ID)?.to_owned(),
            kind: get(TYPE)?.to_owned(),
            status: Status::parse(get(STATUS)?)?,
            requires_ack: match get(REQUIRES_ACK)? {
                "1" => true,
                "0" => false,
                _ => return None,
            },
            key: get(KEY).map(str::to_owned),
            ephemeral: get(EPHEMERAL) == Some("1"),
        })
    }

    /// Adds the fields a log line carries (never the key: it may be a caller's secret-ish id).
    pub fn log(&self, line: Object) -> Object {
        let line = line
            .str(ID, &self.id)
            .str(TYPE, &self.kind)
            .bool(REQUIRES_ACK, self.requires_ack);
        if self.ephemeral {
            line.bool(EPHEMERAL, true)
        } else {
            line
        }
    }
}

/// A validated publish, ready for a room to number and store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub envelope: Envelope,
    /// The frame's members after `id` and `seq`, as JSON text without braces:
    /// `"type":…,"data":…,"status":…,"timestamp":…[,"requestId":…][,"error":…],"requiresAck":…`.
    pub members: String,
}

const FIELDS: [&str; 9] = [
    "type",
    "data",
    "status",
    "timestamp",
    "requestId",
    "error",
    "requiresAck",
    "id",
    "ephemeral",
];

impl Draft {
    /// Validates a publish body (`message` of `POST /broadcast`, or the whole body of a room
    /// broadcast).
    ///
    /// `now_ms` fills a missing `timestamp`; `new_id` is called only when the body has no `id`;
    /// `default_request_id` fills a missing `requestId` (the top-level one of `POST /broadcast`).
    pub fn from_json(
        body: Value,
        idempotency_header: Option<&str>,
        default_request_id: Option<&str>,
        now_ms: i64,
        new_id: impl FnOnce() -> String,
    ) -> Result<Draft, ApiError> {
        let Value::Object(mut obj) = body else {
            return Err(invalid("the notification must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(invalid(format!(
                "unknown field {unknown:?}; allowed: {}",
                FIELDS.join(", ")
            )));
        }

        let kind = match obj.remove("type") {
            Some(Value::String(t)) if is_valid_type(&t) => t,
            Some(Value::String(_)) => {
                return Err(invalid(
                    "\"type\" must be 1-128 characters of [A-Za-z0-9_.:-]",
                ))
            }
            Some(_) => return Err(invalid("\"type\" must be a string")),
            None => return Err(invalid("\"type\" is required")),
        };
        if is_reserved(&kind) {
            return Err(ApiError::ReservedType(kind));
        }

        let data = match obj.remove("data") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(invalid("\"data\" must be a JSON object")),
        };

        let status = match obj.remove("status") {
            None | Some(Value::Null) => Status::Success,
            Some(Value::String(s)) => Status::parse(&s).ok_or_else(bad_status)?,
            Some(_) => return Err(bad_status()),
        };

        let timestamp = match obj.remove("timestamp") {
            None | Some(Value::Null) => time::iso_from_ms(now_ms),
            Some(Value::String(s)) => time::normalize_iso(&s).ok_or_else(|| {
                invalid("\"timestamp\" must be an ISO-8601 date-time with a zone, e.g. 2026-01-20T10:00:00.000Z")
            })?,
            Some(_) => return Err(invalid("\"timestamp\" must be a string")),
        };

        let request_id = optional_string(&mut obj, "requestId")?
            .or_else(|| default_request_id.map(str::to_owned));
        let error = optional_string(&mut obj, "error")?;

        let requires_ack = match obj.remove("requiresAck") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(invalid("\"requiresAck\" must be true or false")),
        };

        let ephemeral = match obj.remove("ephemeral") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(invalid("\"ephemeral\" must be true or false")),
        };
        if ephemeral && requires_ack {
            return Err(invalid(
                "an ephemeral publish is never stored, so it cannot require an ack: drop \"requiresAck\" or \"ephemeral\"",
            ));
        }

        let given_id = match obj.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if valid_key(&s) => Some(s),
            Some(_) => {
                return Err(invalid(format!(
                    "\"id\" must be a string of 1-{MAX_ID_LEN} printable ASCII characters"
                )))
            }
        };

        let idempotency_key = match idempotency_header.map(str::trim) {
            Some(k) if valid_key(k) => Some(k.to_owned()),
            Some(_) => {
                return Err(invalid(format!(
                    "Idempotency-Key must be 1-{MAX_ID_LEN} printable ASCII characters"
                )))
            }
            None => given_id.clone(),
        };

        let mut members = String::with_capacity(128);
        push_member(&mut members, "type", &Value::String(kind.clone()));
        push_member(&mut members, "data", &data);
        push_member(
            &mut members,
            "status",
            &Value::String(status.as_str().into()),
        );
        push_member(&mut members, "timestamp", &Value::String(timestamp));
        if let Some(r) = request_id {
            push_member(&mut members, "requestId", &Value::String(r));
        }
        if let Some(e) = error {
            push_member(&mut members, "error", &Value::String(e));
        }
        push_member(&mut members, "requiresAck", &Value::Bool(requires_ack));

        // Without a body id, the id derives from the idempotency key: a retry of a publish that
        // reached one room but not another must give the second room the same id, or a client
        // in both rooms could not dedupe it.
        let id = given_id
            .or_else(|| idempotency_key.clone())
            .unwrap_or_else(new_id);
        Ok(Draft {
            envelope: Envelope {
                id,
                kind,
                status,
                requires_ack,
                // An ephemeral publish keeps nothing to compare a repeat with.
                key: idempotency_key.filter(|_| !ephemeral),
                ephemeral,
            },
            members,
        })
    }
}

/// Most users one `POST /broadcast` may name in `userIds`.
pub const MAX_USER_IDS: usize = 100;

/// `POST /broadcast`: the rooms a notification goes to, and the notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// `user_{id}` for every user, then `request_{requestId}` when given.
    pub rooms: Vec<RoomId>,
    /// The top-level `requestId`, which also fills the message's when absent.
    pub request_id: Option<String>,
    pub message: Value,
}

impl Broadcast {
    /// Reads `{"userId","requestId"?,"message"}` or `{"userIds":[…],"requestId"?,"message"}`.
    pub fn from_json(body: Value) -> Result<Broadcast, ApiError> {
        let shape = "expected {\"userId\" or \"userIds\":[…],\"requestId\"?,\"message\":{…}}";
        let Value::Object(mut obj) = body else {
            return Err(invalid(shape));
        };
        if let Some(unknown) = obj
            .keys()
            .find(|k| !["userId", "userIds", "requestId", "message"].contains(&k.as_str()))
        {
            return Err(invalid(format!("unknown field {unknown:?}; {shape}")));
        }
        let users: Vec<String> = match (obj.remove("userId"), obj.remove("userIds")) {
            (Some(Value::String(u)), None) => vec![u],
            (None, Some(Value::Array(list))) => {
                let users = list
                    .into_iter()
                    .map(|u| match u {
                        Value::String(u) => Ok(u),
                        _ => Err(invalid("\"userIds\" must be strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if !(1..=MAX_USER_IDS).contains(&users.len()) {
                    return Err(invalid(format!(
                        "\"userIds\" names 1 to {MAX_USER_IDS} users"
                    )));
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(dup) = users.iter().find(|u| !seen.insert(u.as_str())) {
                    return Err(invalid(format!("\"userIds\" names {dup:?} twice")));
                }
                users
            }
            (Some(_), Some(_)) => {
                return Err(invalid("give either \"userId\" or \"userIds\", not both"))
            }
            _ => return Err(invalid(shape)),
        };
        let request_id = match obj.remove("requestId") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => Some(r),
            Some(_) => return Err(invalid("\"requestId\" must be a string")),
        };
        let message = obj.remove("message").ok_or_else(|| invalid(shape))?;
        let mut rooms = users
            .iter()
            .map(|u| {
                RoomId::for_user(u).map_err(|_| {
                    invalid(format!(
                        "user {u:?} makes an invalid room id user_{{userId}}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(r) = &request_id {
            rooms.push(
                RoomId::for_request(r).map_err(|_| {
                    invalid("requestId makes an invalid room id request_{requestId}")
                })?,
            );
        }
        Ok(Broadcast {
            rooms,
            request_id,
            message,
        })
    }
}

fn bad_status() -> ApiError {
    invalid("\"status\" must be \"success\", \"error\" or \"pending\"")
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::InvalidBody(msg.into())
}

fn optional_string(obj: &mut Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match obj.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("\"{name}\" must be a string"))),
    }
}

/// 1–128 printable ASCII characters: safe in headers, logs and JSON without surprises.
fn valid_key(s: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&s.len()) && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

fn push_member(out: &mut String, name: &str, value: &Value) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    out.push_str(&value.to_string());
}

/// The stored form of a notification: its frame without `attempt`, a complete JSON object.
pub fn render_payload(id: &str, seq: u64, members: &str) -> String {
    let id = Value::String(id.to_owned()).to_string();
    let mut out = String::with_capacity(id.len() + members.len() + 32);
    out.push_str("{\"id\":");
    out.push_str(&id);
    out.push_str(",\"seq\":");
    out.push_str(&seq.to_string());
    out.push(',');
    out.push_str(members);
    out.push('}');
    out
}

/// The frame of an ephemeral publish: the notification without `seq` and `attempt`, marked
/// `"ephemeral":true`.
pub fn render_ephemeral(id: &str, members: &str) -> String {
    let mut out = String::with_capacity(id.len() + members.len() + 40);
    out.push_str("{\"id\":");
    out.push_str(&Value::String(id.to_owned()).to_string());
    out.push(',');
    out.push_str(members);
    out.push_str(",\"ephemeral\":true}");
    out
}

/// The frame sent to clients: the stored payload plus `attempt`.
pub fn render_frame(payload: &str, attempt: u32) -> String {
    let body = payload.strip_suffix('}').unwrap_or(payload);
    format!("{body},\"attempt\":{attempt}}}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn draft(body: Value) -> Result<Draft, ApiError> {
        Draft::from_json(body, None, None, 1_768_903_200_000, || "gen-1".into())
    }

    #[test]
    fn the_spec_example_renders_to_a_frame() {
        let d = draft(json!({"type":"note.creation.completed","data":{"entityId":"note-456","title":"My Note"},
            "status":"success","timestamp":"2026-01-20T10:00:00.000Z","requestId":"req-abc",
            "error":null,"requiresAck":true,"id":"optional-client-chosen-id"}))
        .unwrap();
        let e = &d.envelope;
        assert_eq!(e.id, "optional-client-chosen-id");
        assert_eq!(e.key.as_deref(), Some("optional-client-chosen-id"));
        assert!(e.requires_ack);
        let frame: Value =
            serde_json::from_str(&render_frame(&render_payload(&e.id, 7, &d.members), 2)).unwrap();
        assert_eq!(
            frame,
            json!({"id":"optional-client-chosen-id","seq":7,"type":"note.creation.completed",
                "data":{"entityId":"note-456","title":"My Note"},"status":"success",
                "timestamp":"2026-01-20T10:00:00.000Z","requestId":"req-abc","requiresAck":true,"attempt":2})
        );
    }

    #[test]
    fn defaults_are_filled() {
        let d = draft(json!({"type":"x"})).unwrap();
        assert_eq!(
            (d.envelope.id.as_str(), d.envelope.key.as_ref()),
            ("gen-1", None)
        );
        let v: Value = serde_json::from_str(&format!("{{{}}}", d.members)).unwrap();
        assert_eq!(
            v,
            json!({"type":"x","data":{},"status":"success","timestamp":"2026-01-20T10:00:00.000Z","requiresAck":false})
        );
        let d = Draft::from_json(json!({"type":"x"}), Some("k1"), Some("r9"), 0, || {
            "g".into()
        })
        .unwrap();
        assert_eq!(d.envelope.key.as_deref(), Some("k1"));
        assert!(d.members.contains(r#""requestId":"r9""#));
    }

    #[test]
    fn timestamps_are_normalised_to_utc_z() {
        let d = draft(json!({"type":"x","timestamp":"2026-01-20T12:00:00+02:00"})).unwrap();
        assert!(d
            .members
            .contains(r#""timestamp":"2026-01-20T10:00:00.000Z""#));
    }

    #[test]
    fn bad_bodies_get_clear_errors() {
        let cases = [
            (json!([]), "object"),
            (json!({}), "\"type\" is required"),
            (json!({"type":""}), "1-128"),
            (json!({"type":"a b"}), "1-128"),
            (json!({"type":5}), "string"),
            (json!({"type":"x","data":[1]}), "\"data\""),
            (json!({"type":"x","status":"done"}), "\"status\""),
            (json!({"type":"x","timestamp":"yesterday"}), "ISO-8601"),
            (json!({"type":"x","requiresAck":"yes"}), "requiresAck"),
            (json!({"type":"x","id":""}), "\"id\""),
            (json!({"type":"x","id":"a".repeat(129)}), "\"id\""),
            (
                json!({"type":"x","requireAck":true}),
                "unknown field \"requireAck\"",
            ),
            (json!({"type":"x","error":{"m":1}}), "\"error\""),
        ];
        for (body, needle) in cases {
            let err = draft(body.clone()).unwrap_err();
            assert_eq!(err.code(), "invalid_body", "{body}");
            assert!(err.message().contains(needle), "{body}: {}", err.message());
        }
        for reserved in crate::protocol::RESERVED_TYPES
            .into_iter()
            .chain(["presence.joined"])
        {
            assert_eq!(
                draft(json!({ "type": reserved })).unwrap_err().code(),
                "reserved_type"
            );
        }
        let err = Draft::from_json(json!({"type":"x"}), Some(" "), None, 0, String::new);
        assert!(err.unwrap_err().message().contains("Idempotency-Key"));
    }

    #[test]
    fn envelopes_round_trip_through_their_fields() {
        for e in [
            Envelope {
                id: "a b&c".into(),
                kind: "job.done".into(),
                status: Status::Pending,
                requires_ack: true,
                key: Some("k=1".into()),
                ephemeral: false,
            },
            Envelope {
                id: "x".into(),
                kind: "t".into(),
                status: Status::Error,
                requires_ack: false,
                key: None,
                ephemeral: true,
            },
        ] {
            let mut fields = Vec::new();
            e.write_fields(|k, v| fields.push((k.to_owned(), v.to_owned())));
            let get = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(Envelope::read_fields(get), Some(e));
        }
        assert_eq!(Envelope::read_fields(|_| None), None);
        assert_eq!(
            Envelope::read_fields(|k| Some(if k == "status" { "done" } else { "1" })),
            None
        );
    }

    #[test]
    fn ephemeral_publishes() {
        let d = Draft::from_json(
            json!({"type":"upload.progress","data":{"pct":45},"status":"pending","ephemeral":true}),
            Some("k1"),
            None,
            0,
            || "gen".into(),
        )
        .unwrap();
        assert!(d.envelope.ephemeral);
        assert_eq!(
            d.envelope.key, None,
            "nothing kept to compare a repeat with"
        );
        assert_eq!(d.envelope.id, "k1", "the key still names it");
        let frame: Value =
            serde_json::from_str(&render_ephemeral(&d.envelope.id, &d.members)).unwrap();
        assert_eq!(frame["ephemeral"], true);
        assert_eq!(frame["data"]["pct"], 45);
        assert!(frame.get("seq").is_none() && frame.get("attempt").is_none());
        let err = draft(json!({"type":"x","ephemeral":true,"requiresAck":true})).unwrap_err();
        assert_eq!(err.code(), "invalid_body");
        assert!(draft(json!({"type":"x","ephemeral":"yes"})).is_err());
    }

    #[test]
    fn broadcast_bodies() {
        let one =
            Broadcast::from_json(json!({"userId":"u1","requestId":"r1","message":{"type":"x"}}))
                .unwrap();
        let rooms: Vec<&str> = one.rooms.iter().map(RoomId::as_str).collect();
        assert_eq!(rooms, ["user_u1", "request_r1"]);
        assert_eq!(one.request_id.as_deref(), Some("r1"));
        let many =
            Broadcast::from_json(json!({"userIds":["a","b","c"],"message":{"type":"x"}})).unwrap();
        let rooms: Vec<&str> = many.rooms.iter().map(RoomId::as_str).collect();
        assert_eq!(rooms, ["user_a", "user_b", "user_c"]);
        let hundred: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
        assert_eq!(
            Broadcast::from_json(json!({"userIds":hundred,"message":{}}))
                .unwrap()
                .rooms
                .len(),
            100
        );
        let too_many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
        for (bad, needle) in [
            (json!({"userIds":too_many,"message":{}}), "1 to 100"),
            (json!({"userIds":[],"message":{}}), "1 to 100"),
            (json!({"userIds":["a","a"],"message":{}}), "twice"),
            (
                json!({"userId":"a","userIds":["b"],"message":{}}),
                "not both",
            ),
            (json!({"userIds":[1],"message":{}}), "strings"),
            (json!({"message":{}}), "expected"),
            (json!({"userId":"a"}), "expected"),
            (json!({"userId":"a/b","message":{}}), "invalid room id"),
            (
                json!({"userId":"a","message":{},"extra":1}),
                "unknown field",
            ),
            (json!([]), "expected"),
        ] {
            let err = Broadcast::from_json(bad.clone()).unwrap_err();
            assert_eq!(err.code(), "invalid_body", "{bad}");
            assert!(err.message().contains(needle), "{bad}: {}", err.message());
        }
    }

    #[test]
    fn strings_are_escaped() {
        let d = draft(json!({"type":"x","id":"q\"uote\\","data":{"s":"\"\\\n\u{2028}"}})).unwrap();
        let v: Value =
            serde_json::from_str(&render_payload(&d.envelope.id, 1, &d.members)).unwrap();
        assert_eq!(v["id"], "q\"uote\\");
        assert_eq!(v["data"]["s"], "\"\\\n\u{2028}");
    }
}
