//! `NotificationRoom`: the Durable Object of one room, on workers-rs (`#[durable_object]`).
//!
//! Lifecycle glue: it turns runtime events (calls of the Worker, socket messages, the alarm)
//! into calls on the plain types, and carries out what they decide: sends, closes, log writes,
//! responses. Nothing that matters lives only in memory: connections come back from the
//! runtime's hibernated sockets and their attachments, everything else from the log. The
//! in-memory [`Room`] is a cache rebuilt whenever the object wakes.

use super::env::{describe, log, now_ms, random_id, settings};
use super::http;
use super::socket::{Frame, Socket};
use super::storage::{NewEntry, RoomLog};
use crate::answer::{self, Answer, Health, Published};
use crate::auth::LEEWAY_SECS;
use crate::codes::{Close, FrameError, LogEvent};
use crate::config::Settings;
use crate::connections::{Attachment, Connection, Connections, Limits};
use crate::delivery::{replay, Action, Pruner, Retention, RetryPolicy};
use crate::error::ApiError;
use crate::internal::{Call, Subscription};
use crate::limits::{Admission, ConnectionGuard, Rates};
use crate::notification::{render_ephemeral, render_frame, render_payload, Envelope};
use crate::outbox::{FanOut, Outbox, Pace};
use crate::presence::{self, Change, Presence};
use crate::protocol::{server, ClientFrame, InvalidFrame, TypeFilter};
use crate::time;
use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, wasm_bindgen_futures, DurableObject, Env, Request, Response, Result,
    ScheduledTime, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

/// The Durable Object of one room (`NotificationRoom` in `wrangler.toml`).
#[durable_object]
pub struct NotificationRoom {
    state: State,
    env: Env,
    room: RefCell<Option<Room>>,
    /// Shared with the task that drains large fan-outs on later macrotasks.
    outbox: Rc<RefCell<Outbox<Socket>>>,
}

/// A live connection of the room.
type Conn = Connection<Socket>;

/// The awake room: settings, the log, and caches rebuilt on wake.
struct Room {
    id: String,
    settings: Rc<Settings>,
    log: RoomLog,
    last_seq: u64,
    conns: Connections<Socket>,
    guards: HashMap<String, ConnectionGuard>,
    /// Who is connected, rebuilt from the sockets' attachments on wake.
    presence: Presence,
    /// Ms of the scheduled alarm: `None` for none, not yet known after a wake.
    alarm_at: Option<Option<i64>>,
    pruner: Pruner,
}

impl Room {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            interval_ms: self.settings.ack_retry_interval_ms as i64,
            max_attempts: self.settings.ack_max_attempts,
        }
    }

    fn retention(&self) -> Retention {
        Retention {
            limit: self.settings.history_limit.into(),
            ttl_ms: self.settings.history_ttl_seconds as i64 * 1000,
        }
    }

    /// Non-pending notifications at or below this seq are out of the history.
    fn cutoff(&self) -> u64 {
        self.retention().cutoff(self.last_seq)
    }

    fn rates(&self) -> Rates {
        Rates {
            per_minute: self.settings.rate_limit_per_minute,
            presence_sets: presence::SET_RATE,
            events: self.settings.client_event_rate,
            window_ms: presence::RATE_WINDOW_MS,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            per_room: self.settings.max_connections_per_room as usize,
            per_user: self.settings.max_connections_per_user as usize,
        }
    }

    /// When the alarm must next run: the earliest running round's end or token expiry.
    fn next_alarm(&self, now: i64) -> Result<Option<i64>> {
        let retry = self.log.next_round_due(now, self.policy().interval_ms)?;
        Ok(match (retry, self.conns.next_close()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Deletes what the retention says is due; logs pending notifications that expired.
    fn prune(&mut self, now: i64) -> Result<()> {
        let plan = self.pruner.plan(self.retention(), self.last_seq, now);
        let expired = self.log.prune(plan, self.last_seq)?;
        if expired > 0 {
            log(LogEvent::Expired
                .line()
                .str("room", &self.id)
                .num("pending", expired));
        }
        Ok(())
    }
}

/// Logs a failure where nobody waits for an answer (a socket event, the alarm), or where the
/// answer has already been decided.
fn logged<T>(result: Result<T>, handler: &str) -> Result<T> {
    if let Err(e) = &result {
        log(LogEvent::InternalError
            .line()
            .str("error", &e.to_string())
            .str("in", handler));
    }
    result
}

fn respond(a: &Answer) -> Result<Response> {
    Ok(Response::from(http::answer(a)))
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

impl DurableObject for NotificationRoom {
    fn new(state: State, env: Env) -> Self {
        // Text `ping` is answered by the runtime without waking the room.
        if let Ok(pair) = worker::WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        NotificationRoom {
            state,
            env,
            room: RefCell::new(None),
            outbox: Rc::default(),
        }
    }

    /// A call of the Worker (see [`Call`]).
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Some(call) = Call::parse(&req.path()) else {
            return respond(&Answer::from(&ApiError::NotFound));
        };
        self.enter(call.room().as_str())?;
        match call {
            Call::Subscribe { asked, .. } => {
                let (resp, alarm) = self.subscribe(asked)?;
                // The socket is live by now: failing to schedule is logged, not turned into a
                // failed upgrade that would orphan it.
                let _ = logged(self.schedule(alarm).await, "schedule");
                Ok(resp)
            }
            Call::Probe { sub, .. } => {
                let room = self.room()?;
                let refusal = room
                    .conns
                    .admit(&sub, room.limits())
                    .err()
                    .unwrap_or(ApiError::UpgradeRequired);
                respond(&Answer::from(&refusal))
            }
            Call::Publish {
                envelope,
                members,
                received_at,
                ..
            } => {
                let members = match members {
                    Some(m) => m,
                    None => req.text().await?,
                };
                let (answer, alarm) = self.publish(&envelope, &members, received_at)?;
                // The notification is stored and sent: a failed schedule is logged, and the
                // next event (a connect, an ack round) schedules again.
                let _ = logged(self.schedule(alarm).await, "schedule");
                respond(&answer)
            }
            Call::History { since, limit, .. } => {
                let room = self.room()?;
                let mut rows = room.log.after(since, limit + 1, room.cutoff())?;
                let has_more = rows.len() > limit as usize;
                rows.truncate(limit as usize);
                respond(&answer::history(&room.id, room.last_seq, has_more, &rows))
            }
            Call::Presence { limit, .. } => {
                let room = self.room()?;
                respond(&answer::presence(&room.id, &room.presence, limit))
            }
            Call::Health { .. } => {
                let room = self.room()?;
                let counts = room.log.counts(room.cutoff())?;
                let rows = room.log.row_stats();
                let memory = js_sys::WebAssembly::Memory::from(wasm_bindgen::memory());
                let health = Health {
                    room: room.id.clone(),
                    connections: room.conns.len(),
                    pending_acks: counts.pending,
                    failed_acks: counts.failed,
                    last_seq: room.last_seq,
                    deliveries: counts.deliveries,
                    last_broadcast_at: counts.last_broadcast_at,
                    wasm_memory_bytes: Some(
                        js_sys::ArrayBuffer::from(memory.buffer()).byte_length() as u64,
                    ),
                    sql_rows: Some((rows.read, rows.written)),
                };
                respond(&answer::health(&health))
            }
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let (text, len) = match message {
            WebSocketIncomingMessage::String(s) => {
                let len = s.len();
                (Some(s), len)
            }
            WebSocketIncomingMessage::Binary(b) => (None, b.len()),
        };
        let alarm = logged(self.message(&Socket(ws), text, len), "webSocketMessage")?;
        logged(self.schedule(alarm).await, "schedule")
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        // Echoed: without the echo, clients of hibernatable sockets see 1006.
        let close = Close::echo(u16::try_from(code).unwrap_or(1000));
        let mut room = self.room()?;
        self.close(&mut room, &Socket(ws), close, &reason);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        if let Some(id) = self.conn_id(&Socket(ws)) {
            self.forget(&mut *self.room()?, &id);
        }
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        let next = logged(self.alarm_round(now_ms()), "alarm")?;
        logged(self.schedule(next).await, "schedule")?;
        Response::empty()
    }
}

impl NotificationRoom {
    /// The awake room, opened (schema, caches) on first use after a wake.
    fn room(&self) -> Result<RefMut<'_, Room>> {
        let mut slot = self.room.borrow_mut();
        if slot.is_none() {
            let settings =
                settings(&self.env).map_err(|e| worker::Error::RustError(e.message()))?;
            let log = RoomLog::open(&self.state.storage()).map_err(js_error)?;
            let last_seq = log.last_seq().map_err(js_error)?;
            let now = now_ms();
            let id = log.room_id().map_err(js_error)?.unwrap_or_default();
            let mut room = Room {
                id,
                settings,
                log,
                last_seq,
                conns: Connections::default(),
                guards: HashMap::new(),
                presence: Presence::default(),
                alarm_at: None,
                pruner: Pruner::default(),
            };
            // Connections and presence follow the sockets the runtime holds.
            for ws in self.state.get_websockets() {
                let socket = Socket(ws);
                let Some(a) = socket.attachment() else {
                    continue;
                };
                room.guards
                    .insert(a.id.clone(), ConnectionGuard::new(room.rates(), now));
                room.presence.restore(&a.sub, &a.state, a.since, a.state_at);
                room.conns.add(a.connection(socket, LEEWAY_SECS));
            }
            *slot = Some(room);
        }
        Ok(RefMut::map(slot, |r| r.as_mut().expect("opened above")))
    }

    /// The id of a connection's socket: its hibernation tag (cheaper than its attachment).
    fn conn_id(&self, ws: &Socket) -> Option<String> {
        self.state.get_tags(&ws.0).into_iter().next()
    }

    /// Records the room's id (alarms and socket events carry none).
    fn enter(&self, id: &str) -> Result<()> {
        let mut room = self.room()?;
        if room.id != id {
            room.log.set_room_id(id).map_err(js_error)?;
            room.id = id.to_owned();
        }
        Ok(())
    }

    /// Makes sure the alarm runs by `at` (ms); `None` changes nothing. `Storage::set_alarm`
    /// takes an absolute time only as a date: a bare number would be an offset.
    async fn schedule(&self, at: Option<i64>) -> Result<()> {
        let Some(at) = at else {
            return Ok(());
        };
        let storage = self.state.storage();
        let known = self.room()?.alarm_at;
        let current = match known {
            Some(current) => current,
            None => {
                let current = storage.get_alarm().await?;
                self.room()?.alarm_at = Some(current);
                current
            }
        };
        if current.is_some_and(|c| c <= at) {
            return Ok(());
        }
        self.room()?.alarm_at = Some(Some(at));
        let date = js_sys::Date::new(&JsValue::from_f64(at as f64));
        storage.set_alarm(ScheduledTime::new(date)).await
    }

    /// Forgets a connection (its socket is closed or closing); its user leaves the room's
    /// presence with its last connection. True if it was known.
    fn forget(&self, room: &mut Room, id: &str) -> bool {
        room.guards.remove(id);
        let Some(c) = room.conns.remove(id) else {
            return false;
        };
        if let Some(left) = room.presence.disconnect(&c.sub) {
            self.announce(room, &left, None);
        }
        true
    }

    /// Closes a connection and forgets it.
    fn close(&self, room: &mut Room, ws: &Socket, close: Close, reason: &str) {
        ws.close(close, reason);
        if let Some(id) = self.conn_id(ws) {
            if self.forget(room, &id) {
                log(LogEvent::Disconnect
                    .line()
                    .str("room", &room.id)
                    .str("connection", &id)
                    .num("code", close.code())
                    .str("reason", reason));
            }
        }
    }

    /// Tells every presence watcher (but `except`) about a change.
    fn announce(&self, room: &mut Room, change: &Change, except: Option<&str>) {
        if room.conns.watching() == 0 {
            return;
        }
        let frame = change.frame(now_ms());
        self.deliver(room, frame, Pace::Paced, |c| {
            c.presence && Some(c.id.as_str()) != except
        });
    }

    /// Answers a refused frame with its error; the refusal counts toward the connection's
    /// close (4002 for rates, 4003 otherwise), which it may trigger.
    fn refuse(
        &self,
        room: &mut Room,
        ws: &Socket,
        conn_id: &str,
        error: FrameError,
        message: &str,
        now: i64,
    ) {
        ws.send_text(&server::error(error.code(), message));
        let close = room.guards.get_mut(conn_id).and_then(|g| {
            if error.is_rate() {
                g.refused(now)
            } else {
                g.invalid(now)
            }
        });
        if let Some(close) = close {
            self.close(room, ws, close, close.reason());
        }
    }

    /// Sends a frame to the room's connections that `to` selects; returns how many (counted as
    /// targeted: a socket found closed is dropped, its close event follows).
    fn deliver(
        &self,
        room: &mut Room,
        frame: String,
        pace: Pace,
        to: impl Fn(&Conn) -> bool,
    ) -> u32 {
        let (count, fan) = {
            let targets: Vec<&Socket> = room.conns.select(to).map(|c| &c.socket).collect();
            (targets.len() as u32, self.fan_out(targets, frame, pace))
        };
        self.after_fan_out(room, fan);
        count
    }

    /// Hands a frame, made into one JavaScript string, to the outbox for `targets`.
    fn fan_out(&self, targets: Vec<&Socket>, frame: String, pace: Pace) -> FanOut<Socket> {
        self.outbox
            .borrow_mut()
            .fan_out(targets, Frame::from(frame), pace)
    }

    /// Forgets the sockets a fan-out found closed, and starts draining the outbox if it queued.
    fn after_fan_out(&self, room: &mut Room, fan: FanOut<Socket>) {
        for ws in fan.dead {
            if let Some(id) = self.conn_id(&ws) {
                self.forget(room, &id);
            }
        }
        if fan.start_draining {
            drain_later(Rc::clone(&self.outbox));
        }
    }

    /// Carries out a delivery plan for `me` (the connection it is for, if any): sends, rounds,
    /// failures, then records the rounds, the failures and the frames sent. Returns whether a
    /// round started (the alarm must then run within one interval).
    fn execute(
        &self,
        room: &mut Room,
        me: Option<&Socket>,
        plan: &[Action],
        now: i64,
        pace: Pace,
    ) -> Result<bool> {
        let (mut rounds, mut failed, mut sent) = (Vec::new(), Vec::new(), 0u64);
        for action in plan {
            match *action {
                Action::Send { entry, attempt } => {
                    if let Some(ws) = me {
                        ws.send_text(&render_frame(&entry.payload, attempt));
                        sent += 1;
                    }
                }
                Action::Round { entry, attempt } => {
                    let frame = render_frame(&entry.payload, attempt);
                    let n = self.deliver(room, frame, pace, |c| c.filter.matches(&entry.kind));
                    if n > 0 {
                        sent += u64::from(n);
                        rounds.push(entry.seq);
                        log(LogEvent::Retry
                            .line()
                            .str("room", &room.id)
                            .str("id", &entry.id)
                            .num("seq", entry.seq)
                            .num("attempt", attempt));
                    }
                }
                Action::Fail { entry } => {
                    failed.push(entry.seq);
                    log(LogEvent::Failed
                        .line()
                        .str("room", &room.id)
                        .str("id", &entry.id)
                        .num("seq", entry.seq)
                        .num("attempts", entry.attempts));
                }
            }
        }
        room.log.record_round(&rounds, now).map_err(js_error)?;
        room.log.fail(&failed).map_err(js_error)?;
        room.log.add_deliveries(sent).map_err(js_error)?;
        Ok(!rounds.is_empty())
    }

    /// Accepts a connection; returns the upgrade response and when the alarm must run for it.
    fn subscribe(&self, asked: Subscription) -> Result<(Response, Option<i64>)> {
        let Subscription {
            sub,
            exp,
            since,
            types,
            presence,
            received_at,
        } = asked;
        // Capped: a far-future `exp` (up to i64::MAX from a token) must still fit the socket
        // attachment (a JavaScript number) and an alarm time.
        let exp = exp.min(time::MAX_ALARM_MS / 1000);
        let now = now_ms();
        let mut guard = self.room()?;
        let room = &mut *guard;
        if let Err(refused) = room.conns.admit(&sub, room.limits()) {
            let limit = match refused {
                ApiError::RoomFull { .. } => "room",
                _ => "user",
            };
            log(LogEvent::LimitRefused
                .line()
                .str("room", &room.id)
                .str("limit", limit)
                .str("sub", &sub));
            return Ok((respond(&Answer::from(&refused))?, None));
        }
        let pair = WebSocketPair::new()?;
        let (joined, user) = room.presence.connect(&sub, now);
        let attachment = Attachment {
            id: random_id(),
            sub,
            exp,
            types,
            presence,
            state: user.state.clone(),
            state_at: user.state_at,
            since: user.since,
        };
        // Through the raw state: the runtime refuses an accept beyond its per-object socket
        // limit, and workers-rs's accept would turn that exception into a panic that resets the
        // object and drops every socket; here it is an error answer for this one connection.
        self.state
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
            .and_then(|()| self.greet(room, &server, &attachment, since, now));
        let (replayed, alarm) = match greeted {
            Ok(done) => done,
            Err(e) => {
                // Accepted but not set up: close it rather than keep a socket the room half knows.
                server.close(Close::Internal, Close::Internal.reason());
                if !self.forget(room, &attachment.id) {
                    room.presence.disconnect(&attachment.sub);
                }
                return Err(e);
            }
        };
        // Watchers hear of a user's first connection; the newcomer itself never does.
        if let Some(joined) = joined {
            self.announce(room, &joined, Some(&attachment.id));
        }
        log(LogEvent::Connect
            .line()
            .str("room", &room.id)
            .str("connection", &attachment.id)
            .str("sub", &attachment.sub)
            .opt_num("since", since)
            .num("replayed", replayed)
            .num("connections", room.conns.len())
            .num("latencyMs", now - received_at));
        Ok((Response::from_websocket(pair.client)?, Some(alarm)))
    }

    /// Registers a freshly accepted connection and sends it `connected` and its replay, all in
    /// one synchronous step: no publish can run in between, so nothing is lost or doubled at
    /// the seam between replay and live frames. Returns how many frames were replayed, and
    /// when the alarm must run for this connection (its token, or a round it started).
    fn greet(
        &self,
        room: &mut Room,
        ws: &Socket,
        a: &Attachment,
        since: Option<u64>,
        now: i64,
    ) -> Result<(usize, i64)> {
        room.guards
            .insert(a.id.clone(), ConnectionGuard::new(room.rates(), now));
        let pending = room.log.pending().map_err(js_error)?;
        let after = match since {
            Some(s) => room
                .log
                .after(s, u32::MAX, room.cutoff())
                .map_err(js_error)?,
            None => Vec::new(),
        };
        let recovered = since.map(|s| replay::recovered(s, room.last_seq, after.len()));
        let summary = a.presence.then(|| room.presence.summary());
        let hello = server::connected(
            &room.id,
            &a.id,
            room.last_seq,
            recovered,
            &time::iso_from_ms(now),
            summary.as_deref(),
        );
        ws.send_text(&hello);
        let conn = a.connection(ws.clone(), LEEWAY_SECS);
        let closes_at = conn.closes_at;
        let filter = conn.filter.clone();
        room.conns.add(conn);
        let policy = room.policy();
        let plan = match since {
            None => replay::offline_queue(&pending, &filter, policy, now),
            Some(s) => replay::since(s, &pending, &after, &filter, policy, now),
        };
        let replayed = plan
            .iter()
            .filter(|a| !matches!(a, Action::Fail { .. }))
            .count();
        let round_started = self.execute(room, Some(ws), &plan, now, Pace::Now)?;
        let alarm = if round_started {
            closes_at.min(now + policy.interval_ms)
        } else {
            closes_at
        };
        Ok((replayed, alarm))
    }

    /// Publishes (the notification's members have arrived): the answer, and when the alarm
    /// must run for its redelivery. From the key lookup to the answer nothing waits, so seq
    /// assignment, the append and the fan-out are one atomic step.
    fn publish(
        &self,
        envelope: &Envelope,
        members: &str,
        received_at: i64,
    ) -> Result<(Answer, Option<i64>)> {
        let now = now_ms();
        let mut guard = self.room()?;
        let room = &mut *guard;
        if envelope.ephemeral {
            let frame = render_ephemeral(&envelope.id, members);
            let count = self.deliver(room, frame, Pace::Paced, |c| {
                c.filter.matches(&envelope.kind)
            });
            log(envelope
                .log(LogEvent::Publish.line().str("room", &room.id))
                .num("broadcastCount", count)
                .num("latencyMs", now - received_at));
            let outcome = Published::Ephemeral {
                id: envelope.id.clone(),
                count,
            };
            return Ok((answer::published(outcome), None));
        }
        let cutoff = room.cutoff();
        if let Some(k) = &envelope.key {
            if let Some(first) = room.log.find_by_key(k, cutoff).map_err(js_error)? {
                let outcome = Published::Duplicate {
                    id: first.id,
                    seq: first.seq,
                    count: first.broadcast_count,
                };
                return Ok((answer::published(outcome), None));
            }
        }
        let seq = room.last_seq + 1;
        let payload = render_payload(&envelope.id, seq, members);
        let fan = {
            let targets: Vec<&Socket> = room
                .conns
                .matching(&envelope.kind)
                .map(|c| &c.socket)
                .collect();
            let count = targets.len() as u32;
            let entry = NewEntry {
                seq,
                envelope,
                payload: &payload,
                now,
                broadcast_count: count,
            };
            if !room.log.append(&entry, cutoff).map_err(js_error)? {
                let taken = Published::IdTaken(envelope.id.clone());
                return Ok((answer::published(taken), None));
            }
            let frame = render_frame(&payload, 1);
            (count, self.fan_out(targets, frame, Pace::Paced))
        };
        let (count, fan) = fan;
        room.last_seq = seq;
        self.after_fan_out(room, fan);
        room.prune(now)?;
        log(envelope
            .log(LogEvent::Publish.line().str("room", &room.id))
            .num("seq", seq)
            .num("broadcastCount", count)
            .num("latencyMs", now - received_at));
        let retry_at =
            (envelope.requires_ack && count > 0).then(|| now + room.policy().interval_ms);
        let outcome = Published::Stored {
            id: envelope.id.clone(),
            seq,
            count,
        };
        Ok((answer::published(outcome), retry_at))
    }

    /// Handles one client frame; returns when the alarm must run, if the frame started a round.
    fn message(&self, ws: &Socket, text: Option<String>, len: usize) -> Result<Option<i64>> {
        let now = now_ms();
        let mut guard = self.room()?;
        let room = &mut *guard;
        let Some((conn_id, sub)) = self
            .conn_id(ws)
            .and_then(|id| Some((id.clone(), room.conns.get(&id)?.sub.clone())))
        else {
            return Ok(None);
        };
        let max = room.settings.max_message_bytes;
        let rates = room.rates();
        let admission = room
            .guards
            .entry(conn_id.clone())
            .or_insert_with(|| ConnectionGuard::new(rates, now))
            .admit(len, max, now);
        match admission {
            Admission::Accept => {}
            Admission::Refuse => {
                ws.send_text(&server::error(
                    FrameError::RateLimited.code(),
                    "too many frames: at most RATE_LIMIT_PER_MINUTE per minute",
                ));
                return Ok(None);
            }
            Admission::Close(close) => {
                self.close(room, ws, close, close.reason());
                return Ok(None);
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
                self.refuse(
                    room,
                    ws,
                    &conn_id,
                    FrameError::InvalidMessage,
                    &invalid.0,
                    now,
                );
                return Ok(None);
            }
        };
        match frame {
            ClientFrame::TextPing => {
                ws.send_text("pong");
            }
            ClientFrame::Ping => {
                ws.send_text(&server::pong(&time::iso_from_ms(now)));
            }
            ClientFrame::Ack(ids) => {
                let acked = room.log.ack(&ids, &sub, now).map_err(js_error)?;
                if acked > 0 {
                    log(LogEvent::Ack
                        .line()
                        .str("room", &room.id)
                        .str("connection", &conn_id)
                        .str("sub", &sub)
                        .strs("ids", &ids)
                        .num("acked", acked));
                }
            }
            ClientFrame::Subscribe(patterns) => {
                return self.refilter(room, ws, (&conn_id, &sub), now, |f| f.add(patterns));
            }
            ClientFrame::Unsubscribe(patterns) => {
                return self.refilter(room, ws, (&conn_id, &sub), now, |f| f.remove(&patterns));
            }
            ClientFrame::PresenceSet(state) => {
                self.set_presence(room, ws, (&conn_id, &sub), &state, now)
            }
            ClientFrame::Emit { event, data } => {
                self.emit(room, ws, (&conn_id, &sub), &event, &data, now)
            }
            ClientFrame::Sync { since } => return self.sync(room, ws, &conn_id, since, now),
        }
        Ok(None)
    }

    /// `presence.set`: the user's new state, on every one of its connections' attachments (it
    /// must survive any of them closing, and hibernation), and to every watcher.
    fn set_presence(
        &self,
        room: &mut Room,
        ws: &Socket,
        conn: (&str, &str),
        state: &str,
        now: i64,
    ) {
        let (conn_id, sub) = conn;
        let max = room.settings.presence_state_bytes;
        let check = room
            .guards
            .get_mut(conn_id)
            .map(|g| g.presence_set(state.len(), max, now));
        if let Some(Err((error, msg))) = check {
            return self.refuse(room, ws, conn_id, error, msg, now);
        }
        let Some(updated) = room.presence.set(sub, state, now) else {
            return;
        };
        let user = room.presence.get(sub).cloned();
        let ids: Vec<String> = room.conns.of_user(sub).map(|c| c.id.clone()).collect();
        for id in ids {
            if let (Some(a), Some(c)) = (
                room.conns.attachment(&id, user.as_ref()),
                room.conns.get(&id),
            ) {
                if let Err(e) = c.socket.save(&a) {
                    log(LogEvent::InternalError
                        .line()
                        .str("error", &describe(&e))
                        .str("in", "presence.set"));
                }
            }
        }
        self.announce(room, &updated, None);
    }

    /// `emit`: a client event to the room's other connections whose filter matches it,
    /// stamped with the sender's `sub` (a client cannot speak for someone else).
    fn emit(
        &self,
        room: &mut Room,
        ws: &Socket,
        conn: (&str, &str),
        event: &str,
        data: &str,
        now: i64,
    ) {
        let (conn_id, sub) = conn;
        let check = {
            let s = &room.settings;
            let (allowed, max) = (&s.client_event_types, s.max_client_event_bytes);
            room.guards
                .get_mut(conn_id)
                .map(|g| g.emit(event, data.len(), allowed, max, now))
        };
        if let Some(Err((error, msg))) = check {
            // Named, so a client can stop sending just that event.
            let msg = format!("{msg}: {event:?}");
            return self.refuse(room, ws, conn_id, error, &msg, now);
        }
        let frame = server::event(event, data, sub, &time::iso_from_ms(now));
        self.deliver(room, frame, Pace::Paced, |c| {
            c.id != conn_id && c.filter.matches(event)
        });
    }

    /// `sync`: the replay a reconnect with `since` and the same filter would get, then
    /// `synced`. Returns when the alarm must run, if it started a round.
    fn sync(
        &self,
        room: &mut Room,
        ws: &Socket,
        conn_id: &str,
        since: u64,
        now: i64,
    ) -> Result<Option<i64>> {
        let Some(filter) = room.conns.get(conn_id).map(|c| c.filter.clone()) else {
            return Ok(None);
        };
        let pending = room.log.pending().map_err(js_error)?;
        let after = room
            .log
            .after(since, u32::MAX, room.cutoff())
            .map_err(js_error)?;
        let recovered = replay::recovered(since, room.last_seq, after.len());
        let policy = room.policy();
        let plan = replay::since(since, &pending, &after, &filter, policy, now);
        let round = self.execute(room, Some(ws), &plan, now, Pace::Now)?;
        ws.send_text(&server::synced(room.last_seq, recovered));
        Ok(round.then(|| now + policy.interval_ms))
    }

    /// Changes a connection's filter, persists it (it must survive hibernation), confirms it,
    /// and delivers at once the pending notifications the change newly matches.
    fn refilter(
        &self,
        room: &mut Room,
        ws: &Socket,
        conn: (&str, &str),
        now: i64,
        change: impl FnOnce(&mut TypeFilter),
    ) -> Result<Option<i64>> {
        let (conn_id, sub) = conn;
        let Some(filter) = room.conns.filter_mut(conn_id) else {
            return Ok(None);
        };
        let before = filter.clone();
        change(filter);
        let after = filter.clone();
        if let Some(a) = room.conns.attachment(conn_id, room.presence.get(sub)) {
            ws.save(&a).map_err(js_error)?;
        }
        ws.send_text(&server::subscribed(&after));
        let pending = room.log.pending().map_err(js_error)?;
        let policy = room.policy();
        let plan = replay::widened(&pending, &before, &after, policy, now);
        let round = self.execute(room, Some(ws), &plan, now, Pace::Now)?;
        Ok(round.then(|| now + policy.interval_ms))
    }

    /// The alarm's work: expired tokens, redelivery rounds, pruning. Returns the next alarm.
    fn alarm_round(&self, now: i64) -> Result<Option<i64>> {
        let mut guard = self.room()?;
        let room = &mut *guard;
        let scheduled = room.alarm_at.flatten();
        room.alarm_at = Some(None);
        // Tokens that expired while connected: close with 4001.
        let expired = room.conns.expired(now);
        for id in &expired {
            if let Some(ws) = room.conns.get(id).map(|c| c.socket.clone()) {
                self.close(room, &ws, Close::TokenExpired, Close::TokenExpired.reason());
            }
        }
        let due = room
            .log
            .due(now, room.policy().interval_ms)
            .map_err(js_error)?;
        let plan = replay::due_rounds(&due, room.policy(), now);
        self.execute(room, None, &plan, now, Pace::Paced)?;
        room.pruner.sweep_next();
        room.prune(now)?;
        let next = room.next_alarm(now)?;
        let rounds = plan
            .iter()
            .filter(|a| matches!(a, Action::Round { .. }))
            .count();
        log(LogEvent::Alarm
            .line()
            .str("room", &room.id)
            .opt_num("lateMs", scheduled.map(|at| now - at))
            .num("rounds", rounds)
            .num("failed", plan.len() - rounds)
            .num("tokensExpired", expired.len())
            .opt_num("next", next));
        Ok(next)
    }
}

/// A runtime failure as workers-rs's error.
fn js_error(e: JsValue) -> worker::Error {
    worker::Error::RustError(describe(&e))
}
