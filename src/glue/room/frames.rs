//! Client frames: admission (size, rate), parsing, and one handler per frame ([`ClientFrame`]).

use super::Room;
use crate::alarm::AlarmAt;
use crate::codes::{FrameError, LogEvent};
use crate::connections::ConnRef;
use crate::delivery::replay;
use crate::glue::env::{log, now_ms};
use crate::glue::socket::Socket;
use crate::limits::{Admission, EventRules};
use crate::outbox::Pace;
use crate::protocol::{server, ClientFrame, InvalidFrame, TypeFilter};
use crate::shards::{decode, Relayed};
use crate::time;
use worker::Result;

impl Room {
    /// Handles one client frame; returns when the alarm must run, if the frame started a round.
    pub(super) fn message(
        &mut self,
        ws: &Socket,
        text: Option<String>,
        len: usize,
    ) -> Result<AlarmAt> {
        let now = now_ms();
        let Some(me) = self.sockets.sender(ws) else {
            return Ok(AlarmAt::NONE);
        };
        self.sockets.seen(&me.id, now);
        self.frame_from(&me, text, len, now)
    }

    /// What a shard's sockets did, in order: frames, handled as if they came here; closes.
    pub(super) fn relayed(&mut self, body: &str) -> Result<AlarmAt> {
        let Some(items) = decode::<Relayed>(body) else {
            return Err(worker::Error::RustError("shard-relay: bad body".into()));
        };
        let now = now_ms();
        let mut alarm = AlarmAt::NONE;
        for item in items {
            match item {
                Relayed::Frame { id, text, len } => {
                    if let Some(me) = self.sockets.conns.conn_ref(&id) {
                        alarm = alarm.earliest(self.frame_from(&me, text, len, now)?);
                    }
                }
                Relayed::Closed { id, code, reason } => self.sockets.closed(&id, code, &reason),
            }
        }
        Ok(alarm)
    }

    /// Handles one frame from connection `me` (a socket here, or one a shard relayed).
    pub(super) fn frame_from(
        &mut self,
        me: &ConnRef,
        text: Option<String>,
        len: usize,
        now: i64,
    ) -> Result<AlarmAt> {
        let max = self.sockets.settings().max_message_bytes;
        match self.sockets.guard(&me.id, now).admit(len, max, now) {
            Admission::Accept => {}
            Admission::Refuse => {
                self.sockets.send(
                    &me.id,
                    server::error(
                        FrameError::RateLimited.code(),
                        "too many frames: at most RATE_LIMIT_PER_MINUTE per minute",
                    ),
                );
                return Ok(AlarmAt::NONE);
            }
            Admission::Close(close) => {
                self.sockets.close(&me.id, close, close.reason());
                return Ok(AlarmAt::NONE);
            }
        }
        let parsed = match &text {
            Some(s) => ClientFrame::parse(s),
            None => Err(InvalidFrame(
                "binary frames are not part of the protocol; send JSON text".into(),
            )),
        };
        let frame = match parsed {
            Ok(frame) => frame,
            Err(invalid) => {
                self.sockets
                    .refuse(&me.id, FrameError::InvalidMessage, &invalid.0, now);
                return Ok(AlarmAt::NONE);
            }
        };
        match frame {
            ClientFrame::TextPing => {
                self.sockets.send(&me.id, "pong".to_owned());
            }
            ClientFrame::Ping => {
                self.sockets
                    .send(&me.id, server::pong(&time::iso_from_ms(now)));
            }
            ClientFrame::Ack(ids) => self.ack(me, &ids, now)?,
            ClientFrame::Subscribe(patterns) => {
                return self.refilter(me, now, |f| f.add(patterns));
            }
            ClientFrame::Unsubscribe(patterns) => {
                return self.refilter(me, now, |f| f.remove(&patterns));
            }
            ClientFrame::PresenceSet(state) => self.set_presence(me, &state, now),
            ClientFrame::Emit { event, data } => self.emit(me, &event, &data, now),
            ClientFrame::Sync { since } => return self.sync(me, since, now),
        }
        Ok(AlarmAt::NONE)
    }

    /// `ack`: clears the notifications for every connection of the room.
    fn ack(&mut self, me: &ConnRef, ids: &[String], now: i64) -> Result<()> {
        let acked = self.log.ack(ids, &me.sub, now)?;
        if acked > 0 {
            log(LogEvent::Ack
                .line()
                .str("room", &self.log.id)
                .str("connection", &me.id)
                .str("sub", &me.sub)
                .strs("ids", ids)
                .num("acked", acked));
        }
        Ok(())
    }

    /// `presence.set`: the user's new state, on every one of its connections' attachments (it
    /// must survive any of them closing, and hibernation), and to every watcher.
    fn set_presence(&mut self, me: &ConnRef, state: &str, now: i64) {
        let max = self.sockets.settings().presence_state_bytes;
        let check = self
            .sockets
            .guard(&me.id, now)
            .presence_set(state.len(), max, now);
        if let Err((error, msg)) = check {
            return self.sockets.refuse(&me.id, error, msg, now);
        }
        let Some(updated) = self.sockets.presence.set(&me.sub, state, now) else {
            return;
        };
        self.sockets.save_user(&me.sub);
        self.sockets.announce(&updated, None);
    }

    /// `emit`: a client event to the room's other connections whose filter matches it,
    /// stamped with the sender's `sub` (a client cannot speak for someone else).
    fn emit(&mut self, me: &ConnRef, event: &str, data: &str, now: i64) {
        let check = {
            let s = self.sockets.settings();
            let rules = EventRules {
                allowed: &s.client_event_types,
                per_event: &s.client_event_rates,
                max_bytes: s.max_client_event_bytes,
            };
            self.sockets
                .guard(&me.id, now)
                .emit(event, data.len(), rules, now)
        };
        if let Err((error, msg)) = check {
            // Named, so a client can stop sending just that event.
            let msg = format!("{msg}: {event:?}");
            return self.sockets.refuse(&me.id, error, &msg, now);
        }
        let frame = server::event(event, data, &me.sub, &time::iso_from_ms(now));
        self.sockets.deliver(frame, Pace::Paced, |c| {
            c.id != me.id && c.filter.matches(event)
        });
    }

    /// `sync`: the replay a reconnect with `since` and the same filter would get, then
    /// `synced`. Returns when the alarm must run, if it started a round.
    fn sync(&mut self, me: &ConnRef, since: u64, now: i64) -> Result<AlarmAt> {
        let Some(filter) = self.sockets.conns.get(&me.id).map(|c| c.filter.clone()) else {
            return Ok(AlarmAt::NONE);
        };
        let mut recovered = false;
        let replayed = self.replay_to(&me.id, Some(since), &filter, now, |_, r| {
            recovered = r.unwrap_or(false);
        })?;
        let synced = server::synced(self.log.last_seq, recovered);
        self.sockets.send(&me.id, synced);
        Ok(AlarmAt::when(
            replayed.round_started,
            now + self.log.policy().interval_ms,
        ))
    }

    /// Changes a connection's filter, persists it (it must survive hibernation), confirms it,
    /// and delivers at once the pending notifications the change newly matches.
    fn refilter(
        &mut self,
        me: &ConnRef,
        now: i64,
        change: impl FnOnce(&mut TypeFilter),
    ) -> Result<AlarmAt> {
        let Some(filter) = self.sockets.conns.filter_mut(&me.id) else {
            return Ok(AlarmAt::NONE);
        };
        let before = filter.clone();
        change(filter);
        let after = filter.clone();
        self.sockets.save_attachment(&me.id)?;
        self.sockets.send(&me.id, server::subscribed(&after));
        let pending = self.log.pending()?;
        let policy = self.log.policy();
        let plan = replay::widened(&pending, &before, &after, policy, now);
        let round = self.execute(Some(&me.id), &plan, now, Pace::Now)?;
        Ok(AlarmAt::when(round, now + policy.interval_ms))
    }
}
