//! Connecting: the limits probe, and the upgrade (admit, accept, attach, greet with
//! `connected` and the replay, announce the user's arrival).

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
use crate::protocol::server;
use crate::time;
use wasm_bindgen::JsValue;
use worker::{Response, Result, State, WebSocketPair};

impl Room {
    /// Whether a connection of `sub` would be accepted now: the refusal, or 426.
    pub(super) fn probe(&self, sub: &str) -> Answer {
        let refusal = self
            .sockets
            .conns
            .admit(sub, self.sockets.limits())
            .err()
            .unwrap_or(ApiError::UpgradeRequired);
        Answer::from(&refusal)
    }

    /// Accepts a connection; returns the upgrade response and when the alarm must run for it.
    pub(super) fn subscribe(
        &mut self,
        state: &State,
        asked: Subscription,
    ) -> Result<(Response, AlarmAt)> {
        let Subscription {
            sub,
            exp,
            since,
            types,
            presence,
            batch,
            received_at,
        } = asked;
        // Capped: a far-future `exp` (up to i64::MAX from a token) must still fit the socket
        // attachment (a JavaScript number) and an alarm time.
        let exp = exp.min(time::MAX_ALARM_MS / 1000);
        let now = now_ms();
        if let Err(refused) = self.sockets.conns.admit(&sub, self.sockets.limits()) {
            let limit = match refused {
                ApiError::RoomFull { .. } => "room",
                _ => "user",
            };
            log(LogEvent::LimitRefused
                .line()
                .str("room", &self.log.id)
                .str("limit", limit)
                .str("sub", &sub));
            return Ok((respond(&Answer::from(&refused))?, AlarmAt::NONE));
        }
        let pair = WebSocketPair::new()?;
        let (joined, user) = self.sockets.presence.connect(&sub, now);
        let attachment = Attachment {
            id: random_id(),
            sub,
            exp,
            types,
            presence,
            batch,
            state: user.state.clone(),
            state_at: user.state_at,
            since: user.since,
            seen_at: now,
        };
        // Through the raw state: the runtime refuses an accept beyond its per-object socket
        // limit, and workers-rs's accept would turn that exception into a panic that resets the
        // object and drops every socket; here it is an error answer for this one connection.
        state
            .as_raw()
            .accept_websocket_with_tags(
                pair.server.as_ref(),
                vec![JsValue::from_str(&attachment.id)],
            )
            .map_err(js_error)?;
        let server = Socket(pair.server);
        let greeted = server
            .save(&attachment)
            .map_err(js_error)
            .and_then(|()| self.greet(&server, &attachment, since, now));
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
        // Watchers hear of a user's first connection; the newcomer itself never does.
        if let Some(joined) = joined {
            self.sockets.announce(&joined, Some(&attachment.id));
        }
        log(LogEvent::Connect
            .line()
            .str("room", &self.log.id)
            .str("connection", &attachment.id)
            .str("sub", &attachment.sub)
            .opt_num("since", since)
            .num("replayed", replayed)
            .num("connections", self.sockets.conns.len())
            .num("latencyMs", now - received_at));
        Ok((Response::from_websocket(pair.client)?, alarm))
    }

    /// Registers a freshly accepted connection and sends it `connected` and its replay, all in
    /// one synchronous step. Returns how many frames were replayed, and when the alarm must run
    /// for this connection (its token, or a round it started).
    fn greet(
        &mut self,
        ws: &Socket,
        a: &Attachment,
        since: Option<u64>,
        now: i64,
    ) -> Result<(usize, AlarmAt)> {
        let conn = a.connection(ws.clone(), LEEWAY_SECS);
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
        let idle_check = match self.sockets.idle() {
            Some(idle) => AlarmAt::at(now + idle.check_every_ms()),
            None => AlarmAt::NONE,
        };
        Ok((
            replayed.count,
            round.earliest(AlarmAt::at(closes_at)).earliest(idle_check),
        ))
    }
}
