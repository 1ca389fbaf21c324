//! The internal API between the Worker and a room's Durable Object.
//!
//! Only the Worker can reach a Durable Object, and it builds every internal request from
//! scratch: whatever a client sends (headers, query) never reaches a room. Everything a room
//! needs to know about a call is in its URL's path, `https://room.internal/call=…&room=…&…`,
//! which workers-rs has already read when the room's `fetch` runs (`Request::path`). A
//! publish's notification members ride in the path too when they are small ([`INLINE_MAX`]), so
//! the room answers without waiting for a body; larger ones are the request body.

use crate::notification::Envelope;
use crate::query::{encode_into, pairs, split_url};
use crate::room_id::RoomId;

/// Base URL of internal requests (the host is never resolved).
pub const BASE: &str = "https://room.internal";

/// Largest percent-encoded notification (members) carried in the URL; above it, the body.
pub const INLINE_MAX: usize = 4096;

/// What a WebSocket upgrade asks of a room, as the Worker verified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The token's `sub`.
    pub sub: String,
    /// The token's `exp`, Unix seconds.
    pub exp: i64,
    /// `since=`.
    pub since: Option<u64>,
    /// `types=` patterns, already validated.
    pub types: Vec<String>,
    /// `presence=1`.
    pub presence: bool,
    /// `batch=1`.
    pub batch: bool,
    /// When the Worker received the upgrade (ms): the connect's latency in the log.
    pub received_at: i64,
}

/// One call of the Worker on a room, with what the Worker has already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A WebSocket upgrade (`GET`) from a verified token.
    Subscribe { room: RoomId, asked: Subscription },
    /// Whether a connection of `sub` would be accepted now (the connection limits): the
    /// subscribe URL without `Upgrade`, so a browser can learn why its upgrade was refused.
    Probe {
        room: RoomId,
        /// The token's `sub`.
        sub: String,
    },
    /// A validated publish: its fields, and its JSON members when they are small (`None`: the
    /// members are the request body).
    Publish {
        room: RoomId,
        envelope: Envelope,
        members: Option<String>,
        /// When the Worker received the publish (ms): its latency in the log.
        received_at: i64,
    },
    /// `GET /history` after auth.
    History {
        room: RoomId,
        since: u64,
        limit: u32,
    },
    /// Keyed health.
    Health { room: RoomId },
    /// `GET /presence` after auth.
    Presence { room: RoomId, limit: u32 },
    /// Coordinator → shard `shard`: accept this connection (its attachment, JSON).
    ShardAccept {
        room: RoomId,
        shard: u32,
        attachment: String,
    },
    /// Coordinator → shard: carry out the ops in the body ([`crate::shards::Op`]).
    ShardOps { room: RoomId, shard: u32 },
    /// Coordinator → shard: the attachments of every socket it holds.
    ShardState { room: RoomId, shard: u32 },
    /// Shard → coordinator: what its sockets did (the body, [`crate::shards::Relayed`]).
    ShardRelay { room: RoomId, shard: u32 },
}

impl Call {
    /// The room this call is for.
    pub fn room(&self) -> &RoomId {
        match self {
            Call::Subscribe { room, .. }
            | Call::Probe { room, .. }
            | Call::Publish { room, .. }
            | Call::History { room, .. }
            | Call::Health { room }
            | Call::Presence { room, .. }
            | Call::ShardAccept { room, .. }
            | Call::ShardOps { room, .. }
            | Call::ShardState { room, .. }
            | Call::ShardRelay { room, .. } => room,
        }
    }

    /// The name of the Durable Object this call is for: the room's (its coordinator), or one
    /// of its shards'.
    pub fn object_name(&self) -> String {
        match self {
            Call::ShardAccept { room, shard, .. }
            | Call::ShardOps { room, shard }
            | Call::ShardState { room, shard } => crate::shards::shard_name(room, *shard),
            _ => self.room().as_str().to_owned(),
        }
    }

    /// The internal URL that carries this call.
    pub fn url(&self) -> String {
        let name = match self {
            Call::Subscribe { .. } => "subscribe",
            Call::Probe { .. } => "probe",
            Call::Publish { .. } => "publish",
            Call::History { .. } => "history",
            Call::Health { .. } => "health",
            Call::Presence { .. } => "presence",
            Call::ShardAccept { .. } => "shard-accept",
            Call::ShardOps { .. } => "shard-ops",
            Call::ShardState { .. } => "shard-state",
            Call::ShardRelay { .. } => "shard-relay",
        };
        let mut u = String::with_capacity(256);
        u.push_str(BASE);
        u.push_str("/call=");
        u.push_str(name);
        let mut field = |name: &str, value: &str| {
            u.push('&');
            u.push_str(name);
            u.push('=');
            encode_into(&mut u, value);
        };
        field("room", self.room().as_str());
        match self {
            Call::Subscribe { asked, .. } => {
                let Subscription {
                    sub,
                    exp,
                    since,
                    types,
                    presence,
                    batch,
                    received_at,
                } = asked;
                field("at", &received_at.to_string());
                field("sub", sub);
                field("exp", &exp.to_string());
                if let Some(s) = since {
                    field("since", &s.to_string());
                }
                field("types", &types.join(","));
                if *presence {
                    field("presence", "1");
                }
                if *batch {
                    field("batch", "1");
                }
            }
            Call::Probe { sub, .. } => field("sub", sub),
            Call::Publish {
                envelope,
                members,
                received_at,
                ..
            } => {
                field("at", &received_at.to_string());
                envelope.write_fields(&mut field);
                if let Some(m) = members {
                    field("members", m);
                }
            }
            Call::History { since, limit, .. } => {
                field("since", &since.to_string());
                field("limit", &limit.to_string());
            }
            Call::Health { .. } => {}
            Call::Presence { limit, .. } => field("limit", &limit.to_string()),
            Call::ShardAccept {
                shard, attachment, ..
            } => {
                field("shard", &shard.to_string());
                field("attachment", attachment);
            }
            Call::ShardOps { shard, .. }
            | Call::ShardState { shard, .. }
            | Call::ShardRelay { shard, .. } => field("shard", &shard.to_string()),
        }
        u
    }

    /// Reads a call from its internal URL or that URL's path; `None` if it is not one the
    /// Worker writes.
    pub fn parse(url: &str) -> Option<Call> {
        let (path, _) = split_url(url);
        let path = if path.is_empty() { url } else { path };
        let fields = pairs(path.strip_prefix('/')?);
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let room = RoomId::parse(get("room")?).ok()?;
        Some(match get("call")? {
            "subscribe" => Call::Subscribe {
                room,
                asked: Subscription {
                    sub: get("sub")?.to_owned(),
                    exp: get("exp")?.parse().ok()?,
                    since: match get("since") {
                        Some(s) => Some(s.parse().ok()?),
                        None => None,
                    },
                    types: get("types")?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    presence: get("presence") == Some("1"),
                    batch: get("batch") == Some("1"),
                    received_at: get("at")?.parse().ok()?,
                },
            },
            "probe" => Call::Probe {
                room,
                sub: get("sub")?.to_owned(),
            },
            "publish" => Call::Publish {
                room,
                envelope: Envelope::read_fields(get)?,
                members: get("members").map(str::to_owned),
                received_at: get("at")?.parse().ok()?,
            },
            "history" => Call::History {
                room,
                since: get("since")?.parse().ok()?,
                limit: get("limit")?.parse().ok()?,
            },
            "health" => Call::Health { room },
            "presence" => Call::Presence {
                room,
                limit: get("limit")?.parse().ok()?,
            },
            "shard-accept" => Call::ShardAccept {
                room,
                shard: get("shard")?.parse().ok()?,
                attachment: get("attachment")?.to_owned(),
            },
            "shard-ops" => Call::ShardOps {
                room,
                shard: get("shard")?.parse().ok()?,
            },
            "shard-state" => Call::ShardState {
                room,
                shard: get("shard")?.parse().ok()?,
            },
            "shard-relay" => Call::ShardRelay {
                room,
                shard: get("shard")?.parse().ok()?,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notification::Status;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    #[test]
    fn every_call_round_trips_through_its_url() {
        let calls = [
            Call::Subscribe {
                room: room("user_42"),
                asked: Subscription {
                    sub: "user 42 ✓ & co=x%".into(),
                    exp: 1_900_000_000,
                    since: Some(7),
                    types: vec!["job.*".into(), "a".into()],
                    presence: true,
                    batch: true,
                    received_at: 1_768_903_200_000,
                },
            },
            Call::Subscribe {
                room: room("r"),
                asked: Subscription {
                    sub: String::new(),
                    exp: -1,
                    since: None,
                    types: vec![],
                    presence: false,
                    batch: false,
                    received_at: 0,
                },
            },
            Call::Probe {
                room: room("r"),
                sub: "a b".into(),
            },
            Call::Publish {
                room: room("request_9"),
                envelope: Envelope {
                    id: "id-1".into(),
                    kind: "job.done".into(),
                    status: Status::Success,
                    requires_ack: true,
                    key: Some("k&=?#".into()),
                    ephemeral: false,
                },
                members: Some(r#""type":"job.done","data":{"a":"&=?#/%"}"#.into()),
                received_at: 5,
            },
            Call::Publish {
                room: room("request_9"),
                envelope: Envelope {
                    id: "x".into(),
                    kind: "t".into(),
                    status: Status::Pending,
                    requires_ack: false,
                    key: None,
                    ephemeral: true,
                },
                members: None,
                received_at: 6,
            },
            Call::History {
                room: room("r"),
                since: 0,
                limit: 1000,
            },
            Call::Health { room: room("r") },
            Call::Presence {
                room: room("r"),
                limit: 20,
            },
            Call::ShardAccept {
                room: room("big"),
                shard: 3,
                attachment: r#"{"id":"a","sub":"u &=#"}"#.into(),
            },
            Call::ShardOps {
                room: room("big"),
                shard: 1,
            },
            Call::ShardState {
                room: room("big"),
                shard: 2,
            },
            Call::ShardRelay {
                room: room("big"),
                shard: 2,
            },
        ];
        for call in calls {
            let url = call.url();
            assert!(url.starts_with("https://room.internal/call="), "{url}");
            assert!(
                !url.contains(['?', '#']),
                "everything is in the path: {url}"
            );
            assert_eq!(Call::parse(&url), Some(call.clone()), "{url}");
            let path = &url[BASE.len()..];
            assert_eq!(Call::parse(path), Some(call), "the path alone: {path}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for url in [
            "https://room.internal",
            "https://room.internal/",
            "https://room.internal/call=publish&room=r",
            "https://room.internal/call=nope&room=r",
            "https://room.internal/call=health&room=bad%20room",
            "https://room.internal/call=history&room=r&since=-1&limit=1",
            "https://room.internal/call=subscribe&room=r&sub=a&exp=1&since=x&types=",
            "https://room.internal?call=health&room=r",
        ] {
            assert_eq!(Call::parse(url), None, "{url}");
        }
    }
}
