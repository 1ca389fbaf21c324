//! Large rooms: one room over several Durable Objects (docs/protocol.md, "Large rooms").
//!
//! The room's first Durable Object, named by the room id, is its *coordinator*: it holds the
//! log and every rule (seq, acks, rounds, presence, limits, filters, replay), and sockets of its
//! own. When a new connection would put more than `ROOM_SHARD_SIZE` sockets on it, the
//! connection is accepted by a *shard* (`{room}#{k}`, a name no client or publisher can send:
//! `#` is not allowed in room ids) and the coordinator keeps it as a remote connection. A shard
//! holds sockets and nothing else: the coordinator sends it what to deliver, close or save
//! ([`Op`]s, in order, one message in flight per shard), and it relays what its sockets send
//! ([`Relayed`]). This module holds the plain parts: names, placement, and both messages.

use crate::json::Object;
use crate::room_id::RoomId;
use serde_json::{Map, Value};

/// The Durable Object name of shard `k` (1-based) of `room`.
pub fn shard_name(room: &RoomId, k: u32) -> String {
    format!("{}#{k}", room.as_str())
}

/// The room and shard index a Durable Object name stands for, when it is a shard's.
pub fn parse_shard_name(name: &str) -> Option<(RoomId, u32)> {
    let (room, k) = name.rsplit_once('#')?;
    let k: u32 = k.parse().ok().filter(|&k| k > 0)?;
    Some((RoomId::parse(room).ok()?, k))
}

/// Where a new connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The coordinator itself.
    Here,
    /// Shard `k` (1-based); `k` may be one past the shards there are (a new one).
    Shard(u32),
}

/// Places a new connection: on the coordinator while it holds fewer than `size` sockets, else
/// on the first shard with room (`shards[i]` is shard `i+1`'s sockets, placements under way
/// included), else on a new shard.
pub fn place(here: usize, shards: &[usize], size: usize) -> Place {
    if here < size {
        return Place::Here;
    }
    match shards.iter().position(|&n| n < size) {
        Some(i) => Place::Shard(i as u32 + 1),
        None => Place::Shard(shards.len() as u32 + 1),
    }
}

/// Up to this many connections, a send names them (a greeting, a replay, a reply) and a shard
/// finds each by its id; more, and it is for every socket of the shard when that is what they
/// are.
pub const FEW: usize = 16;

/// Who a [`Op::Send`] is for on the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// Every socket the shard holds (`"*"`).
    All,
    /// These connections.
    Ids(Vec<String>),
}

/// What the coordinator tells a shard to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Send a frame. `seq` marks a notification's first delivery: a shard that has already
    /// delivered that seq (a publish retried after the coordinator failed) skips it.
    Send {
        to: To,
        frame: String,
        seq: Option<u64>,
    },
    /// Close a connection (the coordinator has already forgotten it).
    Close {
        id: String,
        code: u16,
        reason: String,
    },
    /// Store a connection's attachment (its filter or its user's presence changed).
    Save { id: String, attachment: String },
}

/// What a shard relays to the coordinator, in the order its sockets did it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relayed {
    /// A frame from connection `id`: its text (`None`: binary) and size.
    Frame {
        id: String,
        text: Option<String>,
        len: usize,
    },
    /// Connection `id` closed (by its client, or by the shard for being idle).
    Closed {
        id: String,
        code: u16,
        reason: String,
    },
}

/// One item of a message, written and read as a JSON object.
pub trait Item: Sized {
    fn write(&self) -> String;
    fn read(v: &Map<String, Value>) -> Option<Self>;
}

impl Item for Op {
    fn write(&self) -> String {
        match self {
            Op::Send { to, frame, seq } => {
                let o = Object::new().str("op", "send").str("frame", frame);
                let o = match to {
                    To::All => o.str("to", "*"),
                    To::Ids(ids) => o.strs("to", ids),
                };
                o.opt_num("seq", *seq).finish()
            }
            Op::Close { id, code, reason } => Object::new()
                .str("op", "close")
                .str("id", id)
                .num("code", code)
                .str("reason", reason)
                .finish(),
            Op::Save { id, attachment } => Object::new()
                .str("op", "save")
                .str("id", id)
                .str("attachment", attachment)
                .finish(),
        }
    }

    fn read(v: &Map<String, Value>) -> Option<Op> {
        let s = |k: &str| v.get(k)?.as_str().map(str::to_owned);
        Some(match v.get("op")?.as_str()? {
            "send" => Op::Send {
                to: match v.get("to")? {
                    Value::String(all) if all == "*" => To::All,
                    Value::Array(ids) => To::Ids(
                        ids.iter()
                            .map(|i| i.as_str().map(str::to_owned))
                            .collect::<Option<_>>()?,
                    ),
                    _ => return None,
                },
                frame: s("frame")?,
                seq: v.get("seq").and_then(Value::as_u64),
            },
            "close" => Op::Close {
                id: s("id")?,
                code: u16::try_from(v.get("code")?.as_u64()?).ok()?,
                reason: s("reason")?,
            },
            "save" => Op::Save {
                id: s("id")?,
                attachment: s("attachment")?,
            },
            _ => return None,
        })
    }
}

impl Item for Relayed {
    fn write(&self) -> String {
        match self {
            Relayed::Frame { id, text, len } => {
                let o = Object::new()
                    .str("kind", "frame")
                    .str("id", id)
                    .num("len", len);
                match text {
                    Some(t) => o.str("text", t),
                    None => o,
                }
                .finish()
            }
            Relayed::Closed { id, code, reason } => Object::new()
                .str("kind", "closed")
                .str("id", id)
                .num("code", code)
                .str("reason", reason)
                .finish(),
        }
    }

    fn read(v: &Map<String, Value>) -> Option<Relayed> {
        let s = |k: &str| v.get(k)?.as_str().map(str::to_owned);
        Some(match v.get("kind")?.as_str()? {
            "frame" => Relayed::Frame {
                id: s("id")?,
                text: s("text"),
                len: usize::try_from(v.get("len")?.as_u64()?).ok()?,
            },
            "closed" => Relayed::Closed {
                id: s("id")?,
                code: u16::try_from(v.get("code")?.as_u64()?).ok()?,
                reason: s("reason")?,
            },
            _ => return None,
        })
    }
}

/// A message of ops or relays, as its JSON body.
pub fn encode<T: Item>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(Item::write).collect();
    format!("[{}]", parts.join(","))
}

/// Reads a message body; `None` if it is not one.
pub fn decode<T: Item>(body: &str) -> Option<Vec<T>> {
    let Value::Array(items) = serde_json::from_str(body).ok()? else {
        return None;
    };
    items.iter().map(|v| T::read(v.as_object()?)).collect()
}

/// Whether a `Send` with this `seq` must be skipped by a shard that delivered up to `delivered`;
/// and the shard's new mark.
pub fn first_delivery(seq: Option<u64>, delivered: Option<u64>) -> (bool, Option<u64>) {
    match (seq, delivered) {
        (Some(s), Some(d)) if s <= d => (false, Some(d)),
        (Some(s), d) => (true, Some(d.map_or(s, |d| d.max(s)))),
        (None, d) => (true, d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_cannot_be_room_ids_and_read_back() {
        let room = RoomId::parse("team_42").unwrap();
        let name = shard_name(&room, 3);
        assert_eq!(name, "team_42#3");
        assert!(RoomId::parse(&name).is_err(), "no client can name a shard");
        assert_eq!(parse_shard_name(&name), Some((room, 3)));
        for not in ["team_42", "team_42#0", "team_42#x", "#1", "a b#1"] {
            assert_eq!(parse_shard_name(not), None, "{not}");
        }
    }

    #[test]
    fn placement_fills_the_coordinator_then_each_shard_in_turn() {
        assert_eq!(place(0, &[], 20), Place::Here);
        assert_eq!(place(19, &[], 20), Place::Here);
        assert_eq!(place(20, &[], 20), Place::Shard(1));
        assert_eq!(place(20, &[19], 20), Place::Shard(1));
        assert_eq!(place(20, &[20], 20), Place::Shard(2));
        assert_eq!(place(20, &[20, 3, 20], 20), Place::Shard(2));
        assert_eq!(place(20, &[20, 20], 20), Place::Shard(3));
        // A socket that left the coordinator frees a place there first.
        assert_eq!(place(19, &[20, 20], 20), Place::Here);
    }

    #[test]
    fn ops_and_relays_round_trip_as_json() {
        let ops = vec![
            Op::Send {
                to: To::All,
                frame: r#"{"seq":1}"#.into(),
                seq: Some(1),
            },
            Op::Send {
                to: To::Ids(vec!["a".into(), "b".into()]),
                frame: "x".into(),
                seq: None,
            },
            Op::Close {
                id: "a".into(),
                code: 4001,
                reason: "token expired".into(),
            },
            Op::Save {
                id: "b".into(),
                attachment: "{}".into(),
            },
        ];
        let body = encode(&ops);
        assert!(body.contains(r#""to":"*""#), "{body}");
        assert_eq!(decode::<Op>(&body), Some(ops));
        let relays = vec![
            Relayed::Frame {
                id: "a".into(),
                text: Some(r#"{"type":"ping"}"#.into()),
                len: 15,
            },
            Relayed::Frame {
                id: "a".into(),
                text: None,
                len: 3,
            },
            Relayed::Closed {
                id: "a".into(),
                code: 1000,
                reason: String::new(),
            },
        ];
        assert_eq!(decode::<Relayed>(&encode(&relays)), Some(relays));
        assert_eq!(decode::<Op>("nope"), None);
    }

    #[test]
    fn a_shard_delivers_each_seq_once_and_never_skips_rounds_or_replays() {
        assert_eq!(first_delivery(Some(1), None), (true, Some(1)));
        assert_eq!(first_delivery(Some(2), Some(1)), (true, Some(2)));
        assert_eq!(
            first_delivery(Some(2), Some(2)),
            (false, Some(2)),
            "a retried publish"
        );
        assert_eq!(first_delivery(Some(1), Some(2)), (false, Some(2)));
        assert_eq!(
            first_delivery(None, Some(5)),
            (true, Some(5)),
            "rounds, replays, events"
        );
    }
}
