//! Connecting: the limits probe, placement (here, or on a shard of a large room), and the
//! upgrade (admit, accept, attach, greet with `connected` and the replay, announce the user's
//! arrival).

use super::peer::Peer;
use super::{js_error, respond, Room};
use crate::alarm::AlarmAt;
use crate::answer::Answer;
use crate::auth::LEEWAY_SECS;
use crate::codes::{Close, LogEvent};
use crate::connections::Attachment;
use crate::error::ApiError;
use crate::glue::env::{log, now_ms, random_id};
use crate::glue::socket::Socket;
use crate::internal::Subscription;
use crate::presence::Change;
use crate::protocol::server;
use crate::shards::{self, Place};
use crate::time;
use wasm_bindgen::JsValue;
use worker::{Response, Result, State, WebSocketPair};

/// A connection being placed on a shard: what the coordinator reserved for it.
pub(super) struct Placing {
    pub shard: u32,
    pub attachment: Attachment,
    pub joined: Option<Change>,
    pub since: Option<u64>,
    pub received_at: i64,
}

impl Room {
    /// Whether a connection of `sub` would be accepted now: the refusal, or 426.
    pub(super) fn probe(&self, sub: &str) -> Answer {
        let refusal = self.admit(sub).err().unwrap_or(ApiError::UpgradeRequired);
        Answer::from(&refusal)
    }

    /// The room's limits for a new connection of `sub`, counting those being placed on shards.
    fn admit(&self, sub: &str) -> std::result::Result<(), ApiError> {
        let placing: usize = self.placing.iter().sum();
        let placing_user = self.placing_users.get(sub).copied().unwrap_or(0);
        self.sockets.admit(sub, placing, placing_user)
    }

    /// Where a new connection of `sub` goes, or why it is refused (logged).
    pub(super) fn place(&self, sub: &str) -> std::result::Result<Place, ApiError> {
        if let Err(refused) = self.admit(sub) {
            let limit = match refused {
                ApiError::RoomFull { .. } => "room",
                _ => "user",
            };
            log(LogEvent::LimitRefused
                .line()
                .str("room", &self.log.id)
                .str("limit", limit)
                .str("sub", sub));
            return Err(refused);
        }
        let size = self.sockets.settings().room_shard_size as usize;
        let counts = self.sockets.per_object(self.shards);
        let mut on_shards: Vec<usize> = counts[1..].to_vec();
        for (i, n) in self.placing.iter().enumerate() {
            if let Some(c) = on_shards.get_mut(i) {
                *c += n;
            }
        }
        Ok(shards::place(counts[0], &on_shards, size))
    }

    /// The attachment of a new connection, and the user's arrival if it is their first.
    fn attach(&mut self, asked: Subscription, now: i64) -> (Attachment, Option<Change>) {
        let Subscription {
            sub,
            exp,
            types,
            presence,
            batch,
            ..
        } = asked;
        let (joined, user) = self.sockets.presence.connect(&sub, now);
        let attachment = Attachment {
            id: random_id(),
            sub,
            // Capped: a far-future `exp` (up to i64::MAX from a token) must still fit the
            // socket attachment (a JavaScript number) and an alarm time.
            exp: exp.min(time::MAX_ALARM_MS / 1000),
            types,
            presence,
            batch,
            state: user.state.clone(),
            state_at: user.state_at,
            since: user.since,
            seen_at: now,
        };
        (attachment, joined)
    }

    /// Accepts a connection here; returns the upgrade response and when the alarm must run.
    pub(super) fn subscribe(
        &mut self,
        state: &State,
        asked: Subscription,
    ) -> Result<(Response, AlarmAt)> {
        let now = now_ms();
        let (since, received_at) = (asked.since, asked.received_at);
        let pair = WebSocketPair::new()?;
        let (attachment, joined) = self.attach(asked, now);
        // Through the raw state: the runtime refuses an accept beyond its per-object socket
        // limit, and workers-rs's accept would turn that exception into a panic that resets the
        // object and drops every socket; here it is an error answer for this one connection.
        let accepted = state
            .as_raw()
            .accept_websocket_with_tags(
                pair.server.as_ref(),
                vec![JsValue::from_str(&attachment.id)],
            )
            .map_err(js_error);
        if let Err(e) = accepted {
            self.sockets.presence.disconnect(&attachment.sub);
            return Err(e);
        }
        let server = Socket(pair.server);
        let greeted = server
            .save(&attachment)
            .map_err(js_error)
            .and_then(|()| self.greet(Peer::Local(server.clone()), &attachment, since, now));
        let (replayed, alarm) = match greeted {
            Ok(done) => done,
            Err(e) => {
                // Accepted but not set up: close it rather than keep a socket the room half knows.
                server.close(Close::Internal, Close::Internal.reason());
                if !self.sockets.forget(&attachment.id) {
                    self.sockets.presence.disconnect(&attachment.sub);
                }
                return Err(e);
            }
        };
        self.welcome(&attachment, joined, since, replayed, received_at, now);
        let idle_check = match self.sockets.idle() {
            Some(idle) => AlarmAt::at(now + idle.check_every_ms()),
            None => AlarmAt::NONE,
        };
        Ok((
            Response::from_websocket(pair.client)?,
            alarm.earliest(idle_check),
        ))
    }

    /// Reserves a place on shard `k` for a new connection (recording a new shard), before the
    /// shard is asked to accept it.
    pub(super) fn begin_placing(&mut self, k: u32, asked: Subscription) -> Result<Placing> {
        let now = now_ms();
        if k > self.shards {
            self.log.set_shard_count(k)?;
            self.shards = k;
        }
        let i = k as usize - 1;
        if self.placing.len() <= i {
            self.placing.resize(i + 1, 0);
        }
        self.placing[i] += 1;
        *self.placing_users.entry(asked.sub.clone()).or_insert(0) += 1;
        let (since, received_at) = (asked.since, asked.received_at);
        let (attachment, joined) = self.attach(asked, now);
        Ok(Placing {
            shard: k,
            attachment,
            joined,
            since,
            received_at,
        })
    }

    /// The shard answered: on success the connection is the room's from now on, greeted with
    /// `connected` and its replay through the shard; else its place is given back.
    pub(super) fn end_placing(&mut self, p: &Placing, accepted: bool) -> Result<AlarmAt> {
        let i = p.shard as usize - 1;
        self.placing[i] -= 1;
        let sub = &p.attachment.sub;
        if let Some(n) = self.placing_users.get_mut(sub) {
            *n -= 1;
            if *n == 0 {
                self.placing_users.remove(sub);
            }
        }
        if !accepted {
            self.sockets.presence.disconnect(sub);
            return Ok(AlarmAt::NONE);
        }
        let now = now_ms();
        let room = self.room_id()?;
        let link = self.sockets.link(&room, p.shard);
        let peer = Peer::Remote {
            id: p.attachment.id.as_str().into(),
            link,
        };
        let (replayed, alarm) = self.greet(peer, &p.attachment, p.since, now)?;
        self.welcome(
            &p.attachment,
            p.joined.clone(),
            p.since,
            replayed,
            p.received_at,
            now,
        );
        Ok(alarm)
    }

    /// Registers a freshly accepted connection and sends it `connected` and its replay, all in
    /// one synchronous step. Returns how many frames were replayed, and when the alarm must run
    /// for this connection (its token, or a round it started).
    fn greet(
        &mut self,
        peer: Peer,
        a: &Attachment,
        since: Option<u64>,
        now: i64,
    ) -> Result<(usize, AlarmAt)> {
        let conn = a.connection(peer, LEEWAY_SECS);
        let closes_at = conn.closes_at;
        let filter = conn.filter.clone();
        self.sockets.add(conn, now);
        let replayed = self.replay_to(&a.id, since, &filter, now, |room, recovered| {
            let summary = a.presence.then(|| room.sockets.presence.summary());
            let hello = server::connected(
                &room.log.id,
                &a.id,
                room.log.last_seq,
                recovered,
                &time::iso_from_ms(now),
                summary.as_deref(),
            );
            room.sockets.send(&a.id, hello);
        })?;
        let round = AlarmAt::when(replayed.round_started, now + self.log.policy().interval_ms);
        Ok((replayed.count, round.earliest(AlarmAt::at(closes_at))))
    }

    /// Announces a user's first connection (never to the newcomer itself) and logs the connect.
    fn welcome(
        &mut self,
        a: &Attachment,
        joined: Option<Change>,
        since: Option<u64>,
        replayed: usize,
        received_at: i64,
        now: i64,
    ) {
        if let Some(joined) = joined {
            self.sockets.announce(&joined, Some(&a.id));
        }
        log(LogEvent::Connect
            .line()
            .str("room", &self.log.id)
            .str("connection", &a.id)
            .str("sub", &a.sub)
            .opt_num("since", since)
            .num("replayed", replayed)
            .num("connections", self.sockets.conns.len())
            .num("latencyMs", now - received_at));
    }
}

/// The refusal of a connection, as the upgrade's answer.
pub(super) fn refused(e: &ApiError) -> Result<Response> {
    respond(&Answer::from(e))
}
