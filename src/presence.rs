//! Presence (docs/protocol.md, "Presence"): who is connected to a room, by token `sub`, aggregated over each
//! user's open connections, with the state a user last set.
//!
//! The room keeps this as a cache of what its sockets say: every connection's attachment
//! carries its user's state and since when the user is present, so a room rebuilt after
//! hibernation or eviction rebuilds the same presence from the sockets the runtime holds
//! ([`Presence::restore`]), and a socket the runtime reports closed (with or without a close
//! frame) leaves ([`Presence::disconnect`]).

use crate::json::Object;
use crate::time::iso_from_ms;
use std::collections::BTreeMap;

/// Most users a `connected` frame lists (the presence route pages up to its `limit`).
pub const CONNECTED_USERS: usize = 100;
/// Most users the presence route lists (its default and its maximum `limit`).
pub const MAX_LIMIT: u32 = 1000;
/// `presence.set` frames per connection per window.
pub const SET_RATE: u32 = 3;
/// The window of [`SET_RATE`] (and of `CLIENT_EVENT_RATE`).
pub const RATE_WINDOW_MS: i64 = 10_000;

/// One present user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Open connections of this user in the room.
    pub connections: usize,
    /// The state last set by any of the user's connections, as JSON object text.
    pub state: String,
    /// When the user's current stretch of presence began (ms).
    pub since: i64,
    /// When `state` was set (ms; 0 for the default `{}`), to pick the newest on a rebuild.
    pub state_at: i64,
}

/// A change watchers are told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The user's first connection opened.
    Joined { user: String, state: String },
    /// The user's last connection closed.
    Left { user: String },
    /// The user's state changed.
    Updated { user: String, state: String },
}

impl Change {
    /// The presence frame for watchers, stamped `now`.
    pub fn frame(&self, now: i64) -> String {
        let ts = iso_from_ms(now);
        match self {
            Change::Joined { user, state } => Object::new()
                .str("type", "presence.joined")
                .str("userId", user)
                .raw("state", state)
                .str("timestamp", &ts),
            Change::Left { user } => Object::new()
                .str("type", "presence.left")
                .str("userId", user)
                .str("timestamp", &ts),
            Change::Updated { user, state } => Object::new()
                .str("type", "presence.updated")
                .str("userId", user)
                .raw("state", state)
                .str("timestamp", &ts),
        }
        .finish()
    }
}

/// The default state of a user who set none.
pub const EMPTY_STATE: &str = "{}";

/// A room's present users, ordered by user id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    users: BTreeMap<String, User>,
}

impl Presence {
    /// A connection of `sub` opened at `now`: `Joined` if it is the user's first. Returns the
    /// user's record too (a new connection's attachment carries its state and since).
    pub fn connect(&mut self, sub: &str, now: i64) -> (Option<Change>, &User) {
        let mut joined = None;
        let user = self.users.entry(sub.to_owned()).or_insert_with(|| {
            joined = Some(Change::Joined {
                user: sub.to_owned(),
                state: EMPTY_STATE.to_owned(),
            });
            User {
                connections: 0,
                state: EMPTY_STATE.to_owned(),
                since: now,
                state_at: 0,
            }
        });
        user.connections += 1;
        (joined, user)
    }

    /// Counts a connection found on a socket after a wake, with what its attachment says of
    /// its user: the earliest `since` and the newest state win. Sends nothing.
    pub fn restore(&mut self, sub: &str, state: &str, since: i64, state_at: i64) {
        let user = self.users.entry(sub.to_owned()).or_insert_with(|| User {
            connections: 0,
            state: state.to_owned(),
            since,
            state_at,
        });
        user.connections += 1;
        user.since = user.since.min(since);
        if state_at > user.state_at {
            user.state = state.to_owned();
            user.state_at = state_at;
        }
    }

    /// A connection of `sub` closed: `Left` if it was the user's last (the state goes with it).
    pub fn disconnect(&mut self, sub: &str) -> Option<Change> {
        let user = self.users.get_mut(sub)?;
        user.connections = user.connections.saturating_sub(1);
        if user.connections > 0 {
            return None;
        }
        self.users.remove(sub);
        Some(Change::Left {
            user: sub.to_owned(),
        })
    }

    /// `sub` set its state: `Updated` unless it equals the current one.
    pub fn set(&mut self, sub: &str, state: &str, now: i64) -> Option<Change> {
        let user = self.users.get_mut(sub)?;
        if user.state == state {
            return None;
        }
        user.state = state.to_owned();
        user.state_at = now;
        Some(Change::Updated {
            user: sub.to_owned(),
            state: state.to_owned(),
        })
    }

    pub fn get(&self, sub: &str) -> Option<&User> {
        self.users.get(sub)
    }

    /// How many users are present.
    pub fn count(&self) -> usize {
        self.users.len()
    }

    /// The first `limit` users by id, as `{"userId","connections","state","since"}` objects.
    pub fn users_json(&self, limit: usize) -> String {
        let mut out = String::from("[");
        for (i, (id, u)) in self.users.iter().take(limit).enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(
                &Object::new()
                    .str("userId", id)
                    .num("connections", u.connections)
                    .raw("state", &u.state)
                    .str("since", &iso_from_ms(u.since))
                    .finish(),
            );
        }
        out.push(']');
        out
    }

    /// The `presence` member of a `connected` frame: the count and the first users.
    pub fn summary(&self) -> String {
        Object::new()
            .num("count", self.count())
            .raw("users", &self.users_json(CONNECTED_USERS))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn joined(user: &str) -> Option<Change> {
        Some(Change::Joined {
            user: user.into(),
            state: "{}".into(),
        })
    }

    #[test]
    fn a_user_with_two_tabs_shows_once_and_leaves_with_the_last() {
        let mut p = Presence::default();
        assert_eq!(p.connect("alice", 10).0, joined("alice"));
        assert_eq!(p.connect("alice", 20).0, None, "a second tab says nothing");
        assert_eq!(
            p.get("alice").map(|u| (u.connections, u.since)),
            Some((2, 10))
        );
        assert_eq!(p.count(), 1);
        assert_eq!(p.disconnect("alice"), None, "one tab is still open");
        assert_eq!(
            p.disconnect("alice"),
            Some(Change::Left {
                user: "alice".into()
            })
        );
        assert_eq!(p.count(), 0);
        assert_eq!(p.disconnect("alice"), None, "leaving twice is harmless");
        assert_eq!(
            p.connect("alice", 30).1.since,
            30,
            "a new stretch of presence"
        );
    }

    #[test]
    fn state_changes_are_announced_once_and_go_with_the_user() {
        let mut p = Presence::default();
        p.connect("bob", 0);
        assert_eq!(
            p.set("bob", r#"{"typing":true}"#, 5),
            Some(Change::Updated {
                user: "bob".into(),
                state: r#"{"typing":true}"#.into()
            })
        );
        assert_eq!(
            p.set("bob", r#"{"typing":true}"#, 6),
            None,
            "equal state: nothing"
        );
        assert_eq!(p.set("nobody", "{}", 6), None);
        p.disconnect("bob");
        p.connect("bob", 9);
        assert_eq!(p.get("bob").map(|u| u.state.as_str()), Some("{}"));
    }

    #[test]
    fn restoring_from_sockets_takes_the_earliest_since_and_the_newest_state() {
        let mut p = Presence::default();
        p.restore("u", r#"{"a":1}"#, 50, 60);
        p.restore("u", r#"{"a":2}"#, 40, 70);
        p.restore("u", r#"{"a":0}"#, 45, 10);
        p.restore("v", "{}", 5, 0);
        let u = p.get("u").unwrap();
        assert_eq!(
            (u.connections, u.since, u.state.as_str()),
            (3, 40, r#"{"a":2}"#)
        );
        assert_eq!(p.count(), 2);
    }

    #[test]
    fn listings_are_ordered_by_user_and_limited() {
        let mut p = Presence::default();
        for u in ["carol", "alice", "bob"] {
            p.connect(u, 1_768_903_200_000);
        }
        let users: Value = serde_json::from_str(&p.users_json(2)).unwrap();
        assert_eq!(
            users,
            json!([
                {"userId":"alice","connections":1,"state":{},"since":"2026-01-20T10:00:00.000Z"},
                {"userId":"bob","connections":1,"state":{},"since":"2026-01-20T10:00:00.000Z"}
            ])
        );
        let summary: Value = serde_json::from_str(&p.summary()).unwrap();
        assert_eq!(summary["count"], 3);
        assert_eq!(summary["users"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn frames() {
        let f: Value = serde_json::from_str(
            &Change::Updated {
                user: "u".into(),
                state: r#"{"x":1}"#.into(),
            }
            .frame(0),
        )
        .unwrap();
        assert_eq!(
            f,
            json!({"type":"presence.updated","userId":"u","state":{"x":1},"timestamp":"1970-01-01T00:00:00.000Z"})
        );
        let left: Value =
            serde_json::from_str(&Change::Left { user: "u".into() }.frame(0)).unwrap();
        assert_eq!(left["type"], "presence.left");
        assert!(left.get("state").is_none());
    }
}
