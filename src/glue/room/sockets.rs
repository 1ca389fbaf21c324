//! The room's socket side: the sockets it accepted, their attachments and filters, their
//! guards, the presence of their users, and the outbox through which every frame to a socket
//! goes. Connections are rebuilt from the runtime's hibernated sockets on wake.

use super::js_error;
use crate::alarm::AlarmAt;
use crate::auth::LEEWAY_SECS;
use crate::codes::{Close, FrameError, LogEvent};
use crate::config::Settings;
use crate::connections::{ConnRef, Connection, Connections, Limits};
use crate::glue::env::{log, now_ms};
use crate::glue::socket::{Frame, Socket};
use crate::idle::Idle;
use crate::limits::{ConnectionGuard, Rates};
use crate::outbox::{FanOut, Outbox, Pace, Target};
use crate::presence::{self, Change, Presence};
use crate::protocol::server;
use js_sys::{Date, Function, Reflect};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::DurableObjectState;
use worker::{wasm_bindgen_futures, Result, State};

/// A live connection of the room.
pub(super) type Conn = Connection<Socket>;

pub(super) struct Sockets {
    /// The runtime's state, for the sockets' hibernation tags.
    raw: DurableObjectState,
    settings: Rc<Settings>,
    /// The room's id, for log lines.
    pub room_id: String,
    pub conns: Connections<Socket>,
    guards: HashMap<String, ConnectionGuard>,
    /// Who is connected, rebuilt from the sockets' attachments on wake.
    pub presence: Presence,
    /// Shared with the task that drains large fan-outs on later macrotasks.
    outbox: Rc<RefCell<Outbox<Socket>>>,
}

impl Sockets {
    /// The socket side after a wake: connections and presence follow the sockets the runtime
    /// holds and their attachments.
    pub fn restore(state: &State, settings: Rc<Settings>, room_id: String, now: i64) -> Sockets {
        let mut sockets = Sockets {
            raw: JsValue::from(state.as_raw()).unchecked_into(),
            settings,
            room_id,
            conns: Connections::default(),
            guards: HashMap::new(),
            presence: Presence::default(),
            outbox: Rc::default(),
        };
        for ws in state.get_websockets() {
            let socket = Socket(ws);
            let Some(a) = socket.attachment() else {
                continue;
            };
            sockets
                .presence
                .restore(&a.sub, &a.state, a.since, a.state_at);
            let mut conn = a.connection(socket, LEEWAY_SECS);
            if conn.seen_at == 0 {
                // Accepted before the room kept this: count it as heard now.
                conn.seen_at = now;
            }
            sockets.add(conn, now);
        }
        sockets
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

    pub fn settings(&self) -> Rc<Settings> {
        Rc::clone(&self.settings)
    }

    /// The idle rule, when `IDLE_TIMEOUT_SECONDS` is on.
    pub fn idle(&self) -> Option<Idle> {
        Idle::new(self.settings.idle_timeout_seconds)
    }

    /// Records a frame from a connection: in memory always, in its attachment (which outlives
    /// hibernation) only once per [`Idle::slack_ms`].
    pub fn seen(&mut self, id: &str, now: i64) {
        let Some(idle) = self.idle() else {
            return;
        };
        let due = self
            .conns
            .get(id)
            .is_some_and(|c| idle.should_record(c.seen_at, now));
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

    /// Closes (4008) the connections from which nothing was heard for the idle timeout, their
    /// text pings (answered by the runtime without waking the room) included. Returns how many.
    pub fn reap_idle(&mut self, now: i64) -> usize {
        let Some(idle) = self.idle() else {
            return 0;
        };
        let raw: &JsValue = self.raw.as_ref();
        let auto_ping = Reflect::get(raw, &JsValue::from_str("getWebSocketAutoResponseTimestamp"))
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        let idle_sockets: Vec<Socket> = self
            .conns
            .select(|_| true)
            .filter(|c| {
                let pinged = auto_ping
                    .as_ref()
                    .and_then(|f| f.call1(raw, c.socket.0.as_ref()).ok())
                    .and_then(|d| d.dyn_into::<Date>().ok())
                    .map(|d| d.get_time() as i64);
                idle.is_idle(c.seen_at, pinged, now)
            })
            .map(|c| c.socket.clone())
            .collect();
        for ws in &idle_sockets {
            self.close(ws, Close::Idle, Close::Idle.reason());
        }
        idle_sockets.len()
    }

    /// When the next idle check is due, while the room holds sockets.
    pub fn next_idle_check(&self, now: i64) -> AlarmAt {
        match self.idle() {
            Some(idle) if !self.conns.is_empty() => AlarmAt::at(now + idle.check_every_ms()),
            _ => AlarmAt::NONE,
        }
    }

    /// Starts keeping a connection, with a fresh guard.
    pub fn add(&mut self, conn: Conn, now: i64) {
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

    /// The id of a connection's socket: its hibernation tag (cheaper than its attachment).
    pub fn conn_id(&self, ws: &Socket) -> Option<String> {
        self.raw
            .get_tags(ws.0.as_ref())
            .ok()
            .and_then(|t| t.into_iter().next())
    }

    /// The connection a socket belongs to, if the room knows it.
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
        if let Some(left) = self.presence.disconnect(&c.sub) {
            self.announce(&left, None);
        }
        true
    }

    /// Closes a connection and forgets it.
    pub fn close(&mut self, ws: &Socket, close: Close, reason: &str) {
        ws.close(close, reason);
        if let Some(id) = self.conn_id(ws) {
            if self.forget(&id) {
                log(LogEvent::Disconnect
                    .line()
                    .str("room", &self.room_id)
                    .str("connection", &id)
                    .num("code", close.code())
                    .str("reason", reason));
            }
        }
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
    pub fn refuse(
        &mut self,
        ws: &Socket,
        conn_id: &str,
        error: FrameError,
        message: &str,
        now: i64,
    ) {
        self.send(conn_id, server::error(error.code(), message));
        let close = self.guards.get_mut(conn_id).and_then(|g| {
            if error.is_rate() {
                g.refused(now)
            } else {
                g.invalid(now)
            }
        });
        if let Some(close) = close {
            self.close(ws, close, close.reason());
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
        let target = Target {
            id,
            socket: &c.socket,
            batch: c.batch,
        };
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
        let (count, fan) = {
            let targets: Vec<Target<'_, Socket>> = self
                .conns
                .select(to)
                .map(|c| Target {
                    id: &c.id,
                    socket: &c.socket,
                    batch: c.batch,
                })
                .collect();
            let count = targets.len() as u32;
            let fan = self
                .outbox
                .borrow_mut()
                .fan_out(targets, Frame::from(frame), pace);
            (count, fan)
        };
        self.after_fan_out(fan);
        count
    }

    /// Forgets the sockets a fan-out found closed, and starts draining the outbox if it queued.
    fn after_fan_out(&mut self, fan: FanOut<Socket>) {
        for ws in fan.dead {
            if let Some(id) = self.conn_id(&ws) {
                self.forget(&id);
            }
        }
        if fan.start_draining {
            drain_later(Rc::clone(&self.outbox));
        }
    }

    /// Stores a connection's attachment as it is now (its filter or its user's presence
    /// changed): it must survive hibernation.
    pub fn save_attachment(&self, id: &str) -> Result<()> {
        let Some(c) = self.conns.get(id) else {
            return Ok(());
        };
        match self.conns.attachment(id, self.presence.get(&c.sub)) {
            Some(a) => c.socket.save(&a).map_err(js_error),
            None => Ok(()),
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
}

/// Runs the outbox's drain steps on later macrotasks until it is empty: the publish response
/// and the room's other events run in between.
fn drain_later(outbox: Rc<RefCell<Outbox<Socket>>>) {
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            worker::Delay::from(Duration::ZERO).await;
            if !outbox.borrow_mut().drain_chunk() {
                break;
            }
        }
    });
}
