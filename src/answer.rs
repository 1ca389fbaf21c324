//! Answers: every outcome of the Worker and the rooms as the HTTP status and JSON body a caller
//! gets (the shapes docs/protocol.md gives), in one place. Domain code returns outcomes; only this module
//! knows how they look on the wire.

use crate::delivery::Entry;
use crate::error::ApiError;
use crate::json::{push_str, Object};
use crate::time::iso_from_ms;

/// An HTTP answer: status, JSON body, and the headers an error may need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// `Retry-After` seconds.
    pub retry_after: Option<u32>,
    /// `Allow`, for a 405.
    pub allow: Option<&'static str>,
}

impl Answer {
    pub fn ok(body: String) -> Answer {
        Answer {
            status: 200,
            body,
            retry_after: None,
            allow: None,
        }
    }
}

impl From<&ApiError> for Answer {
    fn from(e: &ApiError) -> Answer {
        Answer {
            status: e.status(),
            body: e.body(),
            retry_after: e.retry_after_secs(),
            allow: e.allow(),
        }
    }
}

/// What a publish into one room did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Stored with a new seq and sent to `count` sockets.
    Stored { id: String, seq: u64, count: u32 },
    /// The idempotency key was seen before: the first publish's result, nothing sent.
    Duplicate { id: String, seq: u64, count: u32 },
    /// The body's `id` is held by another publish of this room (another idempotency key).
    IdTaken(String),
    /// An ephemeral publish: sent to `count` sockets, nothing kept.
    Ephemeral { id: String, count: u32 },
}

/// `POST /rooms/{roomId}/broadcast`'s answer (and each room's part of `POST /broadcast`).
pub fn published(outcome: Published) -> Answer {
    let (id, seq, count, duplicate) = match outcome {
        Published::Stored { id, seq, count } => (id, seq, count, false),
        Published::Duplicate { id, seq, count } => (id, seq, count, true),
        Published::IdTaken(id) => return Answer::from(&ApiError::DuplicateId(id)),
        Published::Ephemeral { id, count } => {
            return Answer::ok(
                Object::new()
                    .bool("success", true)
                    .num("broadcastCount", count)
                    .str("id", &id)
                    .bool("ephemeral", true)
                    .finish(),
            )
        }
    };
    Answer::ok(
        Object::new()
            .bool("success", true)
            .num("broadcastCount", count)
            .str("id", &id)
            .num("seq", seq)
            .bool("duplicate", duplicate)
            .finish(),
    )
}

/// One room's answer inside `POST /broadcast`: its status and body as the room gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAnswer {
    pub room: String,
    pub status: u16,
    pub body: String,
}

/// `POST /broadcast`'s answer: every room's result under its id. When a room failed, the whole
/// answer says so (`207`, `success:false`, `partial_failure`), with the others' results and the
/// failed room's error, so a retry with the same `Idempotency-Key` completes it without notifying
/// the others twice.
pub fn broadcast(rooms: &[RoomAnswer]) -> Answer {
    let all_ok = rooms.iter().all(|r| r.status == 200);
    let mut members = Object::new();
    for r in rooms {
        // A room's answer is JSON it wrote; a failure may be the runtime's page instead, which
        // is reported as an error rather than spliced in.
        let json =
            r.status == 200 || serde_json::from_str::<serde::de::IgnoredAny>(&r.body).is_ok();
        if json {
            members = members.raw(&r.room, &r.body);
        } else {
            members = members.raw(&r.room, &ApiError::Internal.body());
        }
    }
    let mut out = Object::new()
        .bool("success", all_ok)
        .raw("rooms", &members.finish());
    if !all_ok {
        let error = Object::new()
            .str("code", "partial_failure")
            .str(
                "message",
                "publishing to at least one room failed; retry with the same Idempotency-Key",
            )
            .finish();
        out = out.raw("error", &error);
    }
    Answer {
        status: if all_ok { 200 } else { 207 },
        ..Answer::ok(out.finish())
    }
}

/// `GET /rooms/{roomId}/presence`: who is connected now, by user id.
pub fn presence(room: &str, presence: &crate::presence::Presence, limit: u32) -> Answer {
    Answer::ok(
        Object::new()
            .bool("success", true)
            .str("roomId", room)
            .num("count", presence.count())
            .raw("users", &presence.users_json(limit as usize))
            .finish(),
    )
}

/// `GET /rooms/{roomId}/history`: entries oldest first, each its stored frame plus its delivery
/// record.
pub fn history(room: &str, last_seq: u64, has_more: bool, entries: &[Entry]) -> Answer {
    let mut out = String::with_capacity(128 + entries.len() * 320);
    out.push_str("{\"success\":true,\"roomId\":");
    push_str(&mut out, room);
    out.push_str(&format!(
        ",\"lastSeq\":{last_seq},\"hasMore\":{has_more},\"notifications\":["
    ));
    let time = |t: Option<i64>| t.map_or("null".to_owned(), |t| format!("\"{}\"", iso_from_ms(t)));
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e.payload.strip_suffix('}').unwrap_or(&e.payload));
        out.push_str(",\"deliveryStatus\":\"");
        out.push_str(e.status.as_str());
        out.push_str(&format!(
            "\",\"attempts\":{},\"createdAt\":{},\"lastAttemptAt\":{},\"ackedAt\":{},\"ackedBy\":",
            e.attempts,
            time(Some(e.created_at)),
            time(e.last_attempt_at),
            time(e.acked_at),
        ));
        match &e.acked_by {
            Some(by) => push_str(&mut out, by),
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push_str("]}");
    Answer::ok(out)
}

/// A room's counters, for the keyed health answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub room: String,
    pub connections: usize,
    pub pending_acks: u64,
    pub failed_acks: u64,
    pub last_seq: u64,
    /// Notification frames sent: live, redelivered and replayed.
    pub deliveries: u64,
    /// When the last publish was stored (ms).
    pub last_broadcast_at: Option<i64>,
    /// The isolate's wasm memory, for leak hunting (`npm run soak`).
    pub wasm_memory_bytes: Option<u64>,
    /// SQLite rows `(read, written)` since the room woke: what the platform bills.
    pub sql_rows: Option<(u64, u64)>,
    /// Sockets held by each Durable Object serving the room: its coordinator, then each shard.
    pub shards: Vec<usize>,
}

/// `GET /rooms/{roomId}/health` with an API key.
pub fn health(h: &Health) -> Answer {
    let mut o = Object::new()
        .bool("ok", true)
        .str("roomId", &h.room)
        .num("connections", h.connections)
        .num("pendingAcks", h.pending_acks)
        .num("failedAcks", h.failed_acks)
        .num("lastSeq", h.last_seq)
        .num("publishes", h.last_seq)
        .num("deliveries", h.deliveries);
    let shards: Vec<String> = h.shards.iter().map(usize::to_string).collect();
    o = o.raw("shards", &format!("[{}]", shards.join(",")));
    o = match h.last_broadcast_at {
        Some(t) => o.str("lastBroadcastAt", &iso_from_ms(t)),
        None => o.raw("lastBroadcastAt", "null"),
    };
    if let Some(bytes) = h.wasm_memory_bytes {
        o = o.num("wasmMemoryBytes", bytes);
    }
    if let Some((read, written)) = h.sql_rows {
        o = o.num("sqlRowsRead", read).num("sqlRowsWritten", written);
    }
    Answer::ok(o.finish())
}

/// Anonymous `GET /rooms/{roomId}/health`: liveness only, without waking the room.
pub fn liveness(room: &str) -> Answer {
    Answer::ok(Object::new().bool("ok", true).str("roomId", room).finish())
}

/// `GET /healthz`.
pub fn healthz() -> Answer {
    Answer::ok(
        Object::new()
            .bool("ok", true)
            .str("version", env!("CARGO_PKG_VERSION"))
            .finish(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::entry::entry;
    use crate::delivery::DeliveryStatus;
    use serde_json::{json, Value};

    fn body(a: &Answer) -> Value {
        serde_json::from_str(&a.body).unwrap()
    }

    #[test]
    fn publish_outcomes() {
        let a = published(Published::Stored {
            id: "n1".into(),
            seq: 3,
            count: 2,
        });
        assert_eq!(a.status, 200);
        assert_eq!(
            body(&a),
            json!({"success":true,"broadcastCount":2,"id":"n1","seq":3,"duplicate":false})
        );
        let d = published(Published::Duplicate {
            id: "n1".into(),
            seq: 3,
            count: 2,
        });
        assert_eq!(body(&d)["duplicate"], true);
        let e = published(Published::Ephemeral {
            id: "p".into(),
            count: 4,
        });
        assert_eq!(
            body(&e),
            json!({"success":true,"broadcastCount":4,"id":"p","ephemeral":true})
        );
        let taken = published(Published::IdTaken("n1".into()));
        assert_eq!(
            (taken.status, &body(&taken)["error"]["code"]),
            (409, &json!("duplicate_id"))
        );
    }

    #[test]
    fn broadcast_reports_each_room_and_partial_failure() {
        let ok = RoomAnswer {
            room: "user_a".into(),
            status: 200,
            body: r#"{"success":true,"seq":1}"#.into(),
        };
        let all = broadcast(std::slice::from_ref(&ok));
        assert_eq!(all.status, 200);
        assert_eq!(
            body(&all),
            json!({"success":true,"rooms":{"user_a":{"success":true,"seq":1}}})
        );
        let failed = RoomAnswer {
            room: "request_r".into(),
            status: 500,
            body: "<html>".into(),
        };
        let part = broadcast(&[ok, failed]);
        assert_eq!(part.status, 207);
        let b = body(&part);
        assert_eq!(b["success"], false);
        assert_eq!(b["error"]["code"], "partial_failure");
        assert_eq!(b["rooms"]["request_r"]["error"]["code"], "internal_error");
    }

    #[test]
    fn history_entries_carry_their_delivery_record() {
        let mut acked = entry(2, "t", DeliveryStatus::Acked, 1);
        acked.payload = r#"{"id":"n2","seq":2,"type":"t","data":{}}"#.into();
        acked.created_at = 1_768_903_200_000;
        acked.last_attempt_at = Some(1_768_903_200_500);
        acked.acked_at = Some(1_768_903_201_000);
        acked.acked_by = Some("u\"1".into());
        let queued = entry(3, "t", DeliveryStatus::Pending, 0);
        let a = history("user_1", 3, true, &[acked, queued]);
        let b = body(&a);
        assert_eq!(
            (b["lastSeq"].as_u64(), b["hasMore"].as_bool()),
            (Some(3), Some(true))
        );
        let n = &b["notifications"];
        assert_eq!(n[0]["data"], json!({}));
        assert_eq!(n[0]["deliveryStatus"], "acked");
        assert_eq!(n[0]["createdAt"], "2026-01-20T10:00:00.000Z");
        assert_eq!(n[0]["lastAttemptAt"], "2026-01-20T10:00:00.500Z");
        assert_eq!(n[0]["ackedAt"], "2026-01-20T10:00:01.000Z");
        assert_eq!(n[0]["ackedBy"], "u\"1");
        assert_eq!(
            (
                &n[1]["deliveryStatus"],
                &n[1]["lastAttemptAt"],
                &n[1]["ackedBy"]
            ),
            (&json!("pending"), &Value::Null, &Value::Null)
        );
        let empty = history("r", 0, false, &[]);
        assert_eq!(body(&empty)["notifications"], json!([]));
    }

    #[test]
    fn presence_answer() {
        let mut p = crate::presence::Presence::default();
        p.connect("b", 0);
        p.connect("a", 0);
        let b = body(&presence("r", &p, 1));
        assert_eq!(
            (b["count"].as_u64(), b["roomId"].as_str()),
            (Some(2), Some("r"))
        );
        assert_eq!(b["users"].as_array().map(Vec::len), Some(1));
        assert_eq!(b["users"][0]["userId"], "a");
    }

    #[test]
    fn health_answers() {
        let h = Health {
            room: "r".into(),
            connections: 2,
            pending_acks: 1,
            failed_acks: 0,
            last_seq: 7,
            deliveries: 9,
            last_broadcast_at: None,
            wasm_memory_bytes: Some(1 << 20),
            sql_rows: Some((3, 2)),
            shards: vec![2, 0],
        };
        let b = body(&health(&h));
        assert_eq!(b["shards"], json!([2, 0]));
        assert_eq!(
            (b["publishes"].as_u64(), b["lastBroadcastAt"].is_null()),
            (Some(7), true)
        );
        assert_eq!(b["wasmMemoryBytes"], 1 << 20);
        assert_eq!(
            (b["sqlRowsRead"].as_u64(), b["sqlRowsWritten"].as_u64()),
            (Some(3), Some(2))
        );
        assert_eq!(body(&liveness("r")), json!({"ok":true,"roomId":"r"}));
        assert_eq!(body(&healthz())["ok"], true);
    }
}
