//! The room's live connections: who is connected, with what type filter, until when.
//!
//! Generic over the socket so it is plain Rust (unit-tested natively); the room stores the
//! runtime's `WebSocket` in it. Every operation a connect, a close or a publish needs is O(1) or
//! O(log n) — except fan-out, which visits each matching connection once — so a reconnect storm
//! or a mass disconnect of n sockets costs O(n log n), not O(n²).

use crate::error::ApiError;
use crate::protocol::TypeFilter;
use crate::time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// What a hibernatable socket carries across hibernation and eviction: everything the room
/// needs to rebuild its connection. Stored as JSON text (one string in and out of the runtime).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Random id, also the socket's hibernation tag.
    pub id: String,
    /// The token's `sub`.
    pub sub: String,
    /// The token's `exp`, Unix seconds.
    pub exp: i64,
    /// The type filter's patterns.
    pub types: Vec<String>,
    /// Whether the connection asked for presence frames (`presence=1`).
    #[serde(default)]
    pub presence: bool,
    /// Whether it accepts `batch` frames (`batch=1`).
    #[serde(default)]
    pub batch: bool,
    /// Its user's presence state (JSON object text), when it last changed, and since when the
    /// user has been present: kept on every connection of the user, so the room's presence can
    /// be rebuilt from whichever sockets are still open.
    #[serde(default = "empty_state")]
    pub state: String,
    #[serde(default)]
    pub state_at: i64,
    #[serde(default)]
    pub since: i64,
    /// When the room last recorded a frame from it (ms; see [`crate::idle`]); 0 in
    /// attachments written before it was kept.
    #[serde(default)]
    pub seen_at: i64,
}

fn empty_state() -> String {
    crate::presence::EMPTY_STATE.to_owned()
}

impl Attachment {
    /// The connection this attachment describes, on `socket`.
    pub fn connection<S>(&self, socket: S, leeway_secs: i64) -> Connection<S> {
        Connection {
            socket,
            id: self.id.clone(),
            sub: self.sub.clone(),
            exp: self.exp,
            closes_at: time::token_close_ms(self.exp, leeway_secs),
            filter: TypeFilter::from_stored(&self.types),
            presence: self.presence,
            batch: self.batch,
            seen_at: self.seen_at,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An attachment of ours, or `None` for anything else.
    pub fn from_json(text: &str) -> Option<Attachment> {
        serde_json::from_str(text).ok()
    }
}

/// The connection limits a new socket must fit (docs/operations.md: `MAX_CONNECTIONS_PER_ROOM`,
/// `MAX_CONNECTIONS_PER_USER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_room: usize,
    pub per_user: usize,
}

/// Seconds a client refused at a connection limit is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u32 = 30;

/// One live connection.
#[derive(Debug, Clone)]
pub struct Connection<S> {
    pub socket: S,
    /// Random id, also the socket's hibernation tag.
    pub id: String,
    /// The token's `sub`.
    pub sub: String,
    /// The token's `exp`, Unix seconds.
    pub exp: i64,
    /// When the socket must close for its token (ms).
    pub closes_at: i64,
    pub filter: TypeFilter,
    /// Whether it gets presence frames (`presence=1`).
    pub presence: bool,
    /// Whether it accepts `batch` frames (`batch=1`).
    pub batch: bool,
    /// When the room last recorded a frame from it (ms).
    pub seen_at: i64,
}

/// Who a frame came from: a connection's id and its user (the token's `sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRef {
    pub id: String,
    pub sub: String,
}

/// The set of live connections.
#[derive(Debug, Clone)]
pub struct Connections<S> {
    list: Vec<Connection<S>>,
    /// id → position in `list`.
    index: HashMap<String, usize>,
    per_user: HashMap<String, usize>,
    /// (closes_at, id), ordered: the earliest token expiry is the first.
    closing: BTreeSet<(i64, String)>,
    /// How many connections asked for presence frames: a room without watchers skips looking.
    watching: usize,
}

impl<S> Default for Connections<S> {
    fn default() -> Self {
        Connections {
            list: Vec::new(),
            index: HashMap::new(),
            per_user: HashMap::new(),
            closing: BTreeSet::new(),
            watching: 0,
        }
    }
}

impl<S> Connections<S> {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether a new connection of `sub` fits the limits; the refusal names the limit.
    pub fn admit(&self, sub: &str, limits: Limits) -> Result<(), ApiError> {
        if self.len() >= limits.per_room {
            Err(ApiError::RoomFull {
                retry_after_secs: RETRY_AFTER_SECS,
            })
        } else if self.count_for(sub) >= limits.per_user {
            Err(ApiError::UserConnectionLimit {
                retry_after_secs: RETRY_AFTER_SECS,
            })
        } else {
            Ok(())
        }
    }

    /// The attachment that describes a connection now (its filter or its user's presence may
    /// have changed).
    pub fn attachment(&self, id: &str, user: Option<&crate::presence::User>) -> Option<Attachment> {
        self.get(id).map(|c| Attachment {
            id: c.id.clone(),
            sub: c.sub.clone(),
            exp: c.exp,
            types: c.filter.patterns(),
            presence: c.presence,
            batch: c.batch,
            state: user.map_or_else(empty_state, |u| u.state.clone()),
            state_at: user.map_or(0, |u| u.state_at),
            since: user.map_or(0, |u| u.since),
            seen_at: c.seen_at,
        })
    }

    /// Ids of the connections of `sub`.
    pub fn of_user<'a>(&'a self, sub: &'a str) -> impl Iterator<Item = &'a Connection<S>> {
        self.list.iter().filter(move |c| c.sub == sub)
    }

    /// Connections that asked for presence frames.
    pub fn watchers(&self) -> impl Iterator<Item = &Connection<S>> {
        let any = self.watching > 0;
        self.select(move |c| any && c.presence)
    }

    /// The connections `keep` selects (a fan-out's targets).
    pub fn select<'a>(
        &'a self,
        keep: impl Fn(&Connection<S>) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Connection<S>> {
        self.list.iter().filter(move |c| keep(c))
    }

    /// How many connections asked for presence frames.
    pub fn watching(&self) -> usize {
        self.watching
    }

    /// How many connections this `sub` holds.
    pub fn count_for(&self, sub: &str) -> usize {
        self.per_user.get(sub).copied().unwrap_or(0)
    }

    /// Adds a connection (replacing one with the same id, which random ids make theoretical).
    pub fn add(&mut self, c: Connection<S>) {
        self.remove(&c.id);
        *self.per_user.entry(c.sub.clone()).or_insert(0) += 1;
        self.closing.insert((c.closes_at, c.id.clone()));
        self.watching += usize::from(c.presence);
        self.index.insert(c.id.clone(), self.list.len());
        self.list.push(c);
    }

    /// Removes a connection by id.
    pub fn remove(&mut self, id: &str) -> Option<Connection<S>> {
        let i = self.index.remove(id)?;
        let c = self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.index.insert(moved.id.clone(), i);
        }
        if let Some(n) = self.per_user.get_mut(&c.sub) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&c.sub);
            }
        }
        self.closing.remove(&(c.closes_at, c.id.clone()));
        self.watching -= usize::from(c.presence);
        Some(c)
    }

    /// The id and user of a connection.
    pub fn conn_ref(&self, id: &str) -> Option<ConnRef> {
        self.get(id).map(|c| ConnRef {
            id: c.id.clone(),
            sub: c.sub.clone(),
        })
    }

    pub fn get(&self, id: &str) -> Option<&Connection<S>> {
        self.index.get(id).map(|&i| &self.list[i])
    }

    /// Records a frame from a connection at `now`.
    pub fn seen(&mut self, id: &str, now: i64) {
        if let Some(&i) = self.index.get(id) {
            self.list[i].seen_at = now;
        }
    }

    /// The connection's filter, to change it (subscribe / unsubscribe).
    pub fn filter_mut(&mut self, id: &str) -> Option<&mut TypeFilter> {
        let i = *self.index.get(id)?;
        Some(&mut self.list[i].filter)
    }

    /// The earliest time a connection must close for its token.
    pub fn next_close(&self) -> Option<i64> {
        self.closing.first().map(|(t, _)| *t)
    }

    /// Ids of the connections whose token has expired at `now`.
    pub fn expired(&self, now: i64) -> Vec<String> {
        self.closing
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: &str, sub: &str, closes_at: i64, types: &str) -> Connection<u32> {
        Connection {
            socket: 0,
            id: id.into(),
            sub: sub.into(),
            exp: closes_at / 1000,
            closes_at,
            filter: TypeFilter::from_query(types).unwrap(),
            presence: false,
            batch: false,
            seen_at: 0,
        }
    }

    #[test]
    fn add_remove_and_count_per_user() {
        let mut cs = Connections::default();
        cs.add(conn("a", "u1", 30, ""));
        cs.add(conn("b", "u1", 10, "note.*"));
        cs.add(conn("c", "u2", 20, ""));
        assert_eq!(
            (cs.len(), cs.count_for("u1"), cs.count_for("u2")),
            (3, 2, 1)
        );
        assert_eq!(cs.remove("a").map(|c| c.id), Some("a".into()));
        assert!(cs.remove("a").is_none(), "removing twice is harmless");
        assert_eq!(cs.count_for("u1"), 1);
        // "c" moved into the removed slot and is still found by id.
        assert_eq!(cs.get("c").map(|c| c.sub.as_str()), Some("u2"));
        assert_eq!(cs.get("b").map(|c| c.closes_at), Some(10));
        cs.remove("b");
        cs.remove("c");
        assert!(cs.is_empty() && cs.count_for("u1") == 0 && cs.next_close().is_none());
    }

    #[test]
    fn matching_follows_filters() {
        let mut cs = Connections::default();
        cs.add(conn("all", "u", 0, ""));
        cs.add(conn("notes", "u", 0, "note.*"));
        let ids = |kind: &str| {
            cs.select(|c| c.filter.matches(kind))
                .map(|c| c.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("note.created"), ["all", "notes"]);
        assert_eq!(ids("task.done"), ["all"]);
        let task = crate::protocol::TypePattern::parse("task.done").unwrap();
        cs.filter_mut("notes").unwrap().add(vec![task]);
        assert_eq!(cs.select(|c| c.filter.matches("task.done")).count(), 2);
    }

    #[test]
    fn admission_names_the_limit_it_hits() {
        let mut cs = Connections::default();
        let limits = Limits {
            per_room: 3,
            per_user: 2,
        };
        assert_eq!(cs.admit("u", limits), Ok(()));
        cs.add(conn("a", "u", 0, ""));
        cs.add(conn("b", "u", 0, ""));
        assert_eq!(
            cs.admit("u", limits).unwrap_err().code(),
            "too_many_connections"
        );
        assert_eq!(cs.admit("v", limits), Ok(()));
        cs.add(conn("c", "v", 0, ""));
        let full = cs.admit("w", limits).unwrap_err();
        assert_eq!(
            (full.code(), full.retry_after_secs()),
            ("room_full", Some(30))
        );
    }

    #[test]
    fn attachments_round_trip_and_follow_filter_changes() {
        let a = Attachment {
            id: "c1".into(),
            sub: "user \"1\"".into(),
            exp: 1_900_000_000,
            types: vec!["note.*".into()],
            presence: true,
            batch: true,
            state: r#"{"away":true}"#.into(),
            state_at: 5,
            since: 3,
            seen_at: 7,
        };
        assert_eq!(Attachment::from_json(&a.to_json()), Some(a.clone()));
        assert_eq!(Attachment::from_json("{}"), None);
        let old = Attachment::from_json(r#"{"id":"c","sub":"u","exp":1,"types":[]}"#).unwrap();
        assert_eq!(
            (old.presence, old.state.as_str(), old.since),
            (false, "{}", 0)
        );
        assert_eq!(Attachment::from_json("not json"), None);
        let mut cs = Connections::default();
        cs.add(a.connection(7u32, 5));
        assert_eq!(cs.get("c1").map(|c| c.closes_at), Some(1_900_000_005_000));
        let task = crate::protocol::TypePattern::parse("task.done").unwrap();
        cs.filter_mut("c1").unwrap().add(vec![task]);
        assert_eq!(
            cs.attachment("c1", None).map(|a| a.types),
            Some(vec!["note.*".into(), "task.done".into()])
        );
        let user = crate::presence::User {
            connections: 1,
            state: r#"{"x":1}"#.into(),
            since: 7,
            state_at: 8,
        };
        let now = cs.attachment("c1", Some(&user)).unwrap();
        assert_eq!(
            (now.state.as_str(), now.since, now.presence),
            (r#"{"x":1}"#, 7, true)
        );
    }

    #[test]
    fn watchers_are_counted() {
        let mut cs = Connections::default();
        cs.add(conn("a", "u", 0, ""));
        assert_eq!((cs.watching(), cs.watchers().count()), (0, 0));
        cs.add(Connection {
            presence: true,
            ..conn("b", "v", 0, "")
        });
        assert_eq!(
            cs.watchers().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        cs.remove("b");
        cs.remove("b");
        assert_eq!(cs.watching(), 0);
    }

    #[test]
    fn expiry_is_ordered() {
        let mut cs = Connections::default();
        cs.add(conn("late", "u", 300, ""));
        cs.add(conn("soon", "u", 100, ""));
        cs.add(conn("mid", "v", 200, ""));
        assert_eq!(cs.next_close(), Some(100));
        assert_eq!(cs.expired(99), Vec::<String>::new());
        assert_eq!(cs.expired(200), ["soon", "mid"]);
        cs.remove("soon");
        assert_eq!(cs.next_close(), Some(200));
    }
}
