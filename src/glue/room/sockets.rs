//! The room's socket side: its connections (sockets it holds, and on a coordinator those its
//! shards hold), their attachments and filters, their guards, the presence of their users, and
//! the outbox through which every frame to a connection goes. Connections are rebuilt from the
//! runtime's hibernated sockets on wake (and a coordinator's remote ones from its shards).

use super::js_error;
use super::link::Link;
use super::peer::Peer;
use crate::alarm::AlarmAt;
use crate::auth::LEEWAY_SECS;
use crate::codes::{Close, FrameError, LogEvent};
use crate::config::Settings;
use crate::connections::{Attachment, ConnRef, Connection, Connections, Limits};
use crate::error::ApiError;
use crate::glue::env::{log, now_ms};
use crate::glue::socket::{Frame, Socket};
use crate::idle::Idle;
use crate::limits::{ConnectionGuard, Rates};
use crate::outbox::{FanOut, Outbox, Pace, Target};
use crate::presence::{self, Change, Presence};
use crate::protocol::server;
use crate::room_id::RoomId;
use crate::shards::Op;
use js_sys::{Date, Function, Reflect};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::DurableObjectState;
use worker::{wasm_bindgen_futures, Env, Result, State};

/// A live connection of the room.
pub(super) type Conn = Connection<Peer>;

pub(super) struct Sockets {
    /// The runtime's state, for the sockets' hibernation tags.
    raw: DurableObjectState,
    env: Env,
    settings: Rc<Settings>,
    /// The room's id, for log lines.
    pub room_id: String,
    pub conns: Connections<Peer>,
    guards: HashMap<String, ConnectionGuard>,
    /// Who is connected, rebuilt from the sockets' attachments on wake. A shard keeps none:
    /// its coordinator holds the room's presence.
    pub presence: Presence,
    /// Whether this Durable Object is a shard (sockets only; no presence of its own).
    shard: bool,
    /// Shared with the task that drains large fan-outs on later macrotasks.
    outbox: Rc<RefCell<Outbox<Peer>>>,
    /// A coordinator's lines to its shards, by shard index.
    links: HashMap<u32, Rc<Link>>,
}

impl Sockets {
    /// The socket side after a wake: connections and presence follow the sockets the runtime
    /// holds and their attachments.
    pub fn restore(
        state: &State,
        env: Env,
        settings: Rc<Settings>,
        room_id: String,
        shard: bool,
        now: i64,
    ) -> Sockets {
        let mut sockets = Sockets {
            raw: JsValue::from(state.as_raw()).unchecked_into(),
            env,
            settings,
            room_id,
            conns: Connections::default(),
            guards: HashMap::new(),
            presence: Presence::default(),
            shard,
            outbox: Rc::default(),
            links: HashMap::new(),
        };
        for ws in state.get_websockets() {
            let socket = Socket(ws);
            let Some(a) = socket.attachment() else {
                continue;
            };
            sockets.restore_one(&a, Peer::Local(socket), now);
        }
        sockets
    }

    /// Keeps a connection found after a wake (here, or on a shard).
    pub fn restore_one(&mut self, a: &Attachment, peer: Peer, now: i64) {
        if !self.shard {
            self.presence.restore(&a.sub, &a.state, a.since, a.state_at);
        }
        let mut conn = a.connection(peer, LEEWAY_SECS);
        if conn.seen_at == 0 {
            // Accepted before the room kept this: count it as heard now.
            conn.seen_at = now;
        }
        self.add(conn, now);
    }

    pub fn rates(&self) -> Rates {
        Rates {
            per_minute: self.settings.rate_limit_per_minute,
            presence_sets: presence::SET_RATE,
            events: self.settings.client_event_rate,
            window_ms: presence::RATE_WINDOW_MS,
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            per_room: self.settings.max_connections_per_room as usize,
            per_user: self.settings.max_connections_per_user as usize,
        }
    }

    pub fn env(&self) -> Env {
        self.env.clone()
    }

    pub fn settings(&self) -> Rc<Settings> {
        Rc::clone(&self.settings)
    }

    /// Whether a new connection of `sub` fits the room's limits, counting `placing`
    /// connections on their way to shards (`placing_user` of them `sub`'s).
    pub fn admit(&self, sub: &str, placing: usize, placing_user: usize) -> Result<(), ApiError> {
        let mut limits = self.limits();
        limits.per_room = limits.per_room.saturating_sub(placing);
        limits.per_user = limits.per_user.saturating_sub(placing_user);
        self.conns.admit(sub, limits)
    }

    /// The idle rule, when `IDLE_TIMEOUT_SECONDS` is on.
    pub fn idle(&self) -> Option<Idle> {
        Idle::new(self.settings.idle_timeout_seconds)
    }

    /// Records a frame from a connection of this object: in memory always, in its attachment
    /// (which outlives hibernation) only once per [`Idle::slack_ms`]. A shard's connections
    /// are recorded by the shard.
    pub fn seen(&mut self, id: &str, now: i64) {
        let Some(idle) = self.idle() else {
            return;
        };
        let due = self
            .conns
            .get(id)
            .is_some_and(|c| c.socket.local().is_some() && idle.should_record(c.seen_at, now));
        if due {
            self.conns.seen(id, now);
            if let Err(e) = self.save_attachment(id) {
                log(LogEvent::InternalError
                    .line()
                    .str("error", &e.to_string())
                    .str("in", "seen"));
            }
        }
    }

    /// Closes (4008) the sockets of this object from which nothing was heard for the idle
    /// timeout, their text pings (answered by the runtime without waking the room) included.
    /// Returns their ids.
    pub fn reap_idle(&mut self, now: i64) -> Vec<String> {
        let Some(idle) = self.idle() else {
            return Vec::new();
        };
        let raw: &JsValue = self.raw.as_ref();
        let auto_ping = Reflect::get(raw, &JsValue::from_str("getWebSocketAutoResponseTimestamp"))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        let idle_ids: Vec<String> = self
            .conns
            .select(|c| c.socket.local().is_some())
            .filter(|c| {
                let pinged = c
                    .socket
                    .local()
                    .zip(auto_ping.as_ref())
                    .and_then(|(s, f)| f.call1(raw, s.0.as_ref()).ok())
                    .and_then(|d| d.dyn_into::<Date>().ok())
                    .map(|d| d.get_time() as i64);
                idle.is_idle(c.seen_at, pinged, now)
            })
            .map(|c| c.id.clone())
            .collect();
        for id in &idle_ids {
            self.close(id, Close::Idle, Close::Idle.reason());
        }
        idle_ids
    }

    /// When the next idle check is due, while this object holds sockets.
    pub fn next_idle_check(&self, now: i64) -> AlarmAt {
        let holds = self.conns.select(|c| c.socket.local().is_some()).next();
        match self.idle() {
            Some(idle) if holds.is_some() => AlarmAt::at(now + idle.check_every_ms()),
            _ => AlarmAt::NONE,
        }
    }

    /// Starts keeping a connection, with a fresh guard.
    pub fn add(&mut self, conn: Conn, now: i64) {
        if let Peer::Remote { link, .. } = &conn.socket {
            link.counted(1);
        }
        self.guards
            .insert(conn.id.clone(), ConnectionGuard::new(self.rates(), now));
        self.conns.add(conn);
    }

    /// The guard of a connection (made afresh if the room lost it).
    pub fn guard(&mut self, id: &str, now: i64) -> &mut ConnectionGuard {
        let rates = self.rates();
        self.guards
            .entry(id.to_owned())
            .or_insert_with(|| ConnectionGuard::new(rates, now))
    }

    /// The id of a socket of this object: its hibernation tag (cheaper than its attachment).
    pub fn conn_id(&self, ws: &Socket) -> Option<String> {
        self.raw
            .get_tags(ws.0.as_ref())
            .ok()
            .and_then(|t| t.into_iter().next())
    }

    /// The connection a socket of this object belongs to, if the room knows it.
    pub fn sender(&self, ws: &Socket) -> Option<ConnRef> {
        self.conns.conn_ref(&self.conn_id(ws)?)
    }

    /// Forgets a connection (its socket is closed or closing); its user leaves the room's
    /// presence with its last connection. True if it was known.
    pub fn forget(&mut self, id: &str) -> bool {
        self.guards.remove(id);
        self.outbox.borrow_mut().forget(id);
        let Some(c) = self.conns.remove(id) else {
            return false;
        };
        if let Peer::Remote { link, .. } = &c.socket {
            link.counted(-1);
        }
        if !self.shard {
            if let Some(left) = self.presence.disconnect(&c.sub) {
                self.announce(&left, None);
            }
        }
        true
    }

    /// Forgets a connection whose socket closed (here, or on a shard), and logs it.
    pub fn closed(&mut self, id: &str, code: u16, reason: &str) {
        if self.forget(id) {
            log(LogEvent::Disconnect
                .line()
                .str("room", &self.room_id)
                .str("connection", id)
                .num("code", code)
                .str("reason", reason));
        }
    }

    /// Closes a connection (on whichever object holds its socket) and forgets it.
    pub fn close(&mut self, id: &str, close: Close, reason: &str) {
        match self.conns.get(id).map(|c| c.socket.clone()) {
            Some(Peer::Local(ws)) => ws.close(close, reason),
            Some(Peer::Remote { id, link }) => {
                link.op(Op::Close {
                    id: id.to_string(),
                    code: close.code(),
                    reason: reason.to_owned(),
                });
                link.kick();
            }
            None => {}
        }
        self.closed(id, close.code(), reason);
    }

    /// Closes a socket of this object (a client's close, echoed), known to the room or not.
    pub fn close_socket(&mut self, ws: &Socket, close: Close, reason: &str) -> Option<String> {
        ws.close(close, reason);
        let id = self.conn_id(ws)?;
        self.closed(&id, close.code(), reason);
        Some(id)
    }

    /// Tells every presence watcher (but `except`) about a change.
    pub fn announce(&mut self, change: &Change, except: Option<&str>) {
        if self.conns.watching() == 0 {
            return;
        }
        let frame = change.frame(now_ms());
        self.deliver(frame, Pace::Paced, |c| {
            c.presence && Some(c.id.as_str()) != except
        });
    }

    /// Answers a refused frame with its error; the refusal counts toward the connection's
    /// close (4002 for rates, 4003 otherwise), which it may trigger.
    pub fn refuse(&mut self, conn_id: &str, error: FrameError, message: &str, now: i64) {
        self.send(conn_id, server::error(error.code(), message));
        let close = self.guards.get_mut(conn_id).and_then(|g| {
            if error.is_rate() {
                g.refused(now)
            } else {
                g.invalid(now)
            }
        });
        if let Some(close) = close {
            self.close(conn_id, close, close.reason());
        }
    }

    /// Sends a frame to one connection, through the outbox: after whatever is queued for it,
    /// so a reply never overtakes a live frame sent before it.
    pub fn send(&mut self, id: &str, frame: String) -> bool {
        self.send_many(id, vec![frame])
    }

    /// Sends frames, in order, to one connection after whatever is queued for it: as one
    /// `batch` when it accepts batches (a replay).
    pub fn send_many(&mut self, id: &str, frames: Vec<String>) -> bool {
        let Some(c) = self.conns.get(id) else {
            return false;
        };
        let target = target(c);
        let frames = frames.into_iter().map(Frame::from).collect();
        let fan = self
            .outbox
            .borrow_mut()
            .fan_out_many(vec![target], frames, Pace::Now);
        let sent = fan.dead.is_empty();
        self.after_fan_out(fan);
        sent
    }

    /// Sends a frame to the connections that `to` selects; returns how many (counted as
    /// targeted: a socket found closed is dropped, its close event follows).
    pub fn deliver(&mut self, frame: String, pace: Pace, to: impl Fn(&Conn) -> bool) -> u32 {
        self.fan_out(vec![Frame::from(frame)], pace, to)
    }

    /// [`Sockets::deliver`] for a notification's first delivery at `seq`.
    pub fn deliver_first(&mut self, frame: String, seq: u64, to: impl Fn(&Conn) -> bool) -> u32 {
        self.fan_out(vec![Frame::first_delivery(frame, seq)], Pace::Paced, to)
    }

    /// Sends frames (in order) to the connections `to` selects.
    pub fn fan_out(&mut self, frames: Vec<Frame>, pace: Pace, to: impl Fn(&Conn) -> bool) -> u32 {
        self.fan_out_if(frames, pace, to, |_| Ok(true))
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// [`Sockets::fan_out`] with one pass over the connections: `first` is told how many it
    /// selected and may stop it (`false`: nothing is sent, `None` returned); a publish records
    /// that count with its row before anything goes out.
    pub fn fan_out_if(
        &mut self,
        frames: Vec<Frame>,
        pace: Pace,
        to: impl Fn(&Conn) -> bool,
        first: impl FnOnce(u32) -> Result<bool>,
    ) -> Result<Option<u32>> {
        let (count, fan) = {
            let targets: Vec<Target<'_, Peer>> = self.conns.select(to).map(target).collect();
            let count = targets.len() as u32;
            if !first(count)? {
                return Ok(None);
            }
            let fan = self.outbox.borrow_mut().fan_out_many(targets, frames, pace);
            (count, fan)
        };
        self.after_fan_out(fan);
        Ok(Some(count))
    }

    /// Forgets the sockets a fan-out found closed, starts draining the outbox if it queued,
    /// and starts the shards' messages.
    fn after_fan_out(&mut self, fan: FanOut<Peer>) {
        for peer in fan.dead {
            if let Some(id) = peer.local().and_then(|ws| self.conn_id(ws)) {
                self.forget(&id);
            }
        }
        if fan.start_draining {
            drain_later(Rc::clone(&self.outbox));
        }
        for link in self.links.values() {
            link.kick();
        }
    }

    /// Stores a connection's attachment as it is now (its filter or its user's presence
    /// changed): it must survive hibernation.
    pub fn save_attachment(&self, id: &str) -> Result<()> {
        let Some(c) = self.conns.get(id) else {
            return Ok(());
        };
        let Some(a) = self.conns.attachment(id, self.presence.get(&c.sub)) else {
            return Ok(());
        };
        match &c.socket {
            Peer::Local(ws) => ws.save(&a).map_err(js_error),
            Peer::Remote { id, link } => {
                link.op(Op::Save {
                    id: id.to_string(),
                    attachment: a.to_json(),
                });
                link.kick();
                Ok(())
            }
        }
    }

    /// Stores the attachments of every connection of `sub` (its presence changed); a failure
    /// is logged and the rest still saved.
    pub fn save_user(&self, sub: &str) {
        let ids: Vec<String> = self.conns.of_user(sub).map(|c| c.id.clone()).collect();
        for id in ids {
            if let Err(e) = self.save_attachment(&id) {
                log(LogEvent::InternalError
                    .line()
                    .str("error", &e.to_string())
                    .str("in", "presence.set"));
            }
        }
    }

    /// The line to shard `k` of `room` (made on first use).
    pub fn link(&mut self, room: &RoomId, k: u32) -> Rc<Link> {
        let env = self.env.clone();
        Rc::clone(
            self.links
                .entry(k)
                .or_insert_with(|| Link::new(env, room.clone(), k)),
        )
    }

    /// Resolves once every shard has carried out what it was sent so far; then forgets the
    /// connections of shards that failed (their sockets went with them).
    pub fn flushed(&self) -> Vec<impl std::future::Future<Output = ()>> {
        self.links.values().map(|l| l.flushed()).collect()
    }

    /// Forgets the connections of shards whose messages failed.
    pub fn drop_broken(&mut self) {
        let broken: Vec<u32> = self
            .links
            .values()
            .filter(|l| l.take_broken())
            .map(|l| l.shard)
            .collect();
        for k in broken {
            let ids: Vec<String> = self
                .conns
                .select(|c| c.socket.shard() == k)
                .map(|c| c.id.clone())
                .collect();
            for id in ids {
                self.closed(&id, 1011, "shard lost");
            }
        }
    }

    /// Sockets per Durable Object serving the room: this one first, then each shard's (kept
    /// by the lines to them: no pass over the connections, which a connect would pay).
    pub fn per_object(&self, shards: u32) -> Vec<usize> {
        let mut counts = vec![0usize; shards as usize + 1];
        for (k, link) in &self.links {
            if let Some(n) = counts.get_mut(*k as usize) {
                *n = link.count();
            }
        }
        counts[0] = self.conns.len() - counts[1..].iter().sum::<usize>();
        counts
    }
}

/// A connection as a fan-out's target.
fn target(c: &Conn) -> Target<'_, Peer> {
    Target {
        id: &c.id,
        socket: &c.socket,
        batch: c.batch,
    }
}

/// Runs the outbox's drain steps on later macrotasks until it is empty: the publish response
/// and the room's other events run in between.
fn drain_later(outbox: Rc<RefCell<Outbox<Peer>>>) {
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            worker::Delay::from(Duration::ZERO).await;
            if !outbox.borrow_mut().drain_chunk() {
                break;
            }
        }
    });
}
