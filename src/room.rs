//! `NotificationRoom`: the Durable Object of one room. Thin glue: it turns runtime events
//! (requests from the Worker, socket messages, the alarm) into calls on the plain types and the
//! durable log, and their results back into sends, closes and responses.
//!
//! Nothing that matters lives only in memory: connections come back from the runtime's
//! hibernated sockets and their attachments, everything else from the log. The in-memory
//! `Room` is a cache rebuilt whenever the object wakes.

use crate::auth::LEEWAY_SECS;
use crate::bindings::{self, describe, on_settle, DurableObjectState, Js as Result, Socket};
use crate::config::Settings;
use crate::connections::{Connection, Connections};
use crate::delivery::{
    recovered, DeliveryStatus, PendingState, Prune, Pruner, Retention, RetryPolicy, Step,
};
use crate::error::ApiError;
use crate::internal::Call;
use crate::json::Object;
use crate::limits::{Admission, ConnectionGuard};
use crate::notification::{render_frame, render_payload};
use crate::protocol::{server, ClientFrame, TypeFilter};
use crate::runtime::{event, log, now_ms, random_id};
use crate::storage::{Entry, NewEntry, RoomLog};
use crate::{http, time};
use js_sys::Promise;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::cell::{RefCell, RefMut};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use web_sys::{Request, Response};

/// What each hibernatable socket carries across hibernation (as JSON text: one string in and
/// out of the runtime).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Attachment {
    id: String,
    sub: String,
    /// Token expiry, Unix seconds.
    exp: i64,
    types: Vec<String>,
}

/// A live connection, as the room caches it.
type Conn = Connection<Socket>;

/// The awake room: settings, the log, and caches rebuilt on wake.
struct Room {
    id: String,
    settings: Rc<Settings>,
    log: RoomLog,
    last_seq: u64,
    conns: Connections<Socket>,
    guards: HashMap<String, ConnectionGuard>,
    /// Ms of the scheduled alarm: `None` for none, not yet known after a wake.
    alarm_at: Option<Option<i64>>,
    pruner: Pruner,
    outbox: Rc<RefCell<Outbox>>,
}

/// The Durable Object of one room (`NotificationRoom` in `wrangler.toml`).
#[wasm_bindgen]
pub struct NotificationRoom {
    core: Rc<Core>,
}

/// What the object holds, shared with the continuations of the calls that wait (a publish for
/// its body, a schedule for the stored alarm time).
struct Core {
    state: DurableObjectState,
    env: JsValue,
    room: RefCell<Option<Room>>,
}

/// Fan-outs up to this many sockets are sent before the publish is answered: the common rooms
/// (a user's tabs, one request) get their frames with no extra hop.
const SEND_NOW_MAX: usize = 256;
/// Larger fan-outs go out this many sockets per macrotask, so the publish response and the
/// room's other events are not queued behind thousands of socket writes.
const CHUNK: usize = 1024;

/// Sends a frame built once as a JavaScript string (not copied out of wasm per socket).
fn send_js(ws: &Socket, text: &js_sys::JsString) -> bool {
    ws.send(text).is_ok()
}

/// Frames of large fan-outs waiting to go out, oldest first. Every fan-out goes through here
/// while anything is queued, so each socket still receives frames in seq (and round) order.
#[derive(Default)]
struct Outbox {
    batches: VecDeque<Batch>,
    draining: bool,
}

struct Batch {
    text: js_sys::JsString,
    targets: Vec<Socket>,
    next: usize,
}

impl Outbox {
    /// Sends up to `budget` queued frames; true when nothing is left. A socket that closed in
    /// the meantime refuses its frame, which is fine: its close event removes it.
    fn drain(&mut self, mut budget: usize) -> bool {
        while let Some(batch) = self.batches.front_mut() {
            let end = batch.targets.len().min(batch.next + budget);
            for ws in &batch.targets[batch.next..end] {
                send_js(ws, &batch.text);
            }
            budget -= end - batch.next;
            batch.next = end;
            if batch.next < batch.targets.len() {
                return false;
            }
            self.batches.pop_front();
        }
        true
    }
}

/// How a fan-out may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Small ones at once, large ones through the outbox (publishes, alarm rounds).
    Paced,
    /// Everything at once, after what is queued (a connection's greeting: its replay must stay
    /// in seq order with any round the greeting starts).
    Now,
}

/// Sends `frame` to `targets` (see [`Pace`]). Returns the ids of sockets found closed (for
/// frames sent at once).
fn fan_out(
    outbox: &Rc<RefCell<Outbox>>,
    targets: Vec<&Conn>,
    frame: &str,
    pace: Pace,
) -> Vec<String> {
    let text = js_sys::JsString::from(frame);
    let mut queue = outbox.borrow_mut();
    if pace == Pace::Now {
        queue.drain(usize::MAX);
    }
    if queue.batches.is_empty() && (pace == Pace::Now || targets.len() <= SEND_NOW_MAX) {
        return targets
            .into_iter()
            .filter(|c| !send_js(&c.socket, &text))
            .map(|c| c.id.clone())
            .collect();
    }
    queue.batches.push_back(Batch {
        text,
        targets: targets.into_iter().map(|c| c.socket.clone()).collect(),
        next: 0,
    });
    if !queue.draining {
        queue.draining = true;
        drain_later(Rc::clone(outbox));
    }
    Vec::new()
}

/// Sends the outbox's next chunk on a later macrotask, and so on until it is empty: the publish
/// response and the room's other events run in between.
fn drain_later(outbox: Rc<RefCell<Outbox>>) {
    bindings::on_next_macrotask(move || {
        let done = {
            let mut queue = outbox.borrow_mut();
            let done = queue.drain(CHUNK);
            queue.draining = !done;
            done
        };
        if !done {
            drain_later(outbox);
        }
    });
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

    /// Registers a freshly accepted connection and sends it `connected` and its replay, all in
    /// one synchronous step: no publish can run in between, so nothing is lost or doubled at
    /// the seam between replay and live frames. Returns how many entries were replayed, and
    /// when the alarm must run for this connection (its token, or a round it started).
    fn greet(
        &mut self,
        ws: &Socket,
        a: &Attachment,
        since: Option<u64>,
        now: i64,
    ) -> Result<(usize, i64)> {
        self.guards.insert(
            a.id.clone(),
            ConnectionGuard::new(self.settings.rate_limit_per_minute, now),
        );

        let is_recovered = match since {
            Some(s) => Some(recovered(s, self.last_seq, self.log.pruned_through()?)),
            None => None,
        };
        let hello = server::connected(
            &self.id,
            &a.id,
            self.last_seq,
            is_recovered,
            &time::iso_from_ms(now),
        );
        ws.send_str(&hello)?;
        let closes_at = time::token_close_ms(a.exp, LEEWAY_SECS);
        let filter = TypeFilter::from_stored(&a.types);
        self.conns.add(Connection {
            socket: ws.clone(),
            id: a.id.clone(),
            sub: a.sub.clone(),
            closes_at,
            filter: filter.clone(),
        });
        let me = Some(a.id.as_str());
        let mut round_started = false;
        let replayed = match since {
            None => {
                let pending = self.log.pending()?;
                let n = pending.len();
                round_started |= self.deliver_pending(pending, me, now, Pace::Now)?;
                n
            }
            Some(s) => {
                // Pending ones at or before `since` get what the alarm would give them now: a
                // round if theirs has ended (the alarm is not kept for rounds that found nobody)
                // or never started; a running round is left to the alarm.
                let seen: Vec<Entry> = self.log.pending()?;
                let seen = seen.into_iter().filter(|p| p.seq <= s).collect();
                round_started |= self.deliver_pending(seen, None, now, Pace::Now)?;
                let entries = self.log.after(s, u32::MAX)?;
                let n = entries.len();
                let (pending, settled): (Vec<_>, Vec<_>) = entries
                    .into_iter()
                    .partition(|e| e.status() == DeliveryStatus::Pending);
                let policy = self.policy();
                // One whose last round ended unacked fails now rather than in the alarm; the
                // resuming client still gets it, like any stored notification after `since`.
                let replay_pending = |room: &mut Room, p: Entry| -> Result<bool> {
                    let state = PendingState {
                        attempts: p.attempts,
                        last_attempt_at: p.last_attempt_at,
                    };
                    if policy.step(state, now) == Step::Fail && filter.matches(&p.kind) {
                        ws.send_str(&render_frame(&p.payload, p.attempts.max(1)))?;
                    }
                    room.deliver_pending(vec![p], me, now, Pace::Now)
                };
                let mut pending = pending.into_iter().peekable();
                let mut sent = 0;
                // Keep seq order across settled and pending entries.
                for e in settled {
                    while let Some(p) = pending.next_if(|p| p.seq < e.seq) {
                        round_started |= replay_pending(self, p)?;
                    }
                    if filter.matches(&e.kind) {
                        let frame = render_frame(&e.payload, e.attempts.max(1));
                        ws.send_str(&frame)?;
                        sent += 1;
                    }
                }
                self.log.add_deliveries(sent)?;
                for p in pending {
                    round_started |= replay_pending(self, p)?;
                }
                n
            }
        };
        let alarm = if round_started {
            closes_at.min(now + self.policy().interval_ms)
        } else {
            closes_at
        };
        Ok((replayed, alarm))
    }

    /// Prunes the log per [`Pruner`]: cheap on every publish, a full sweep now and then.
    fn prune(&mut self, now: i64) -> Result<()> {
        match self.pruner.plan(self.retention(), self.last_seq, now) {
            Prune::Nothing => {}
            Prune::Range { after, through } => self.log.prune_range(after, through)?,
            Prune::Sweep {
                seq_cutoff,
                created_cutoff,
            } => {
                let expired = self.log.sweep(seq_cutoff, created_cutoff)?;
                if expired > 0 {
                    log(event("expired")
                        .str("room", &self.id)
                        .num("pending", expired));
                }
            }
        }
        Ok(())
    }

    /// Sends a frame to every connection whose filter matches `kind`; returns how many
    /// (counted as targeted: a socket found closed is dropped, its close event follows).
    fn broadcast(&mut self, kind: &str, frame: &str, pace: Pace) -> u32 {
        let targets: Vec<&Conn> = self.conns.matching(kind).collect();
        let count = targets.len() as u32;
        for id in fan_out(&self.outbox, targets, frame, pace) {
            self.forget(&id);
        }
        count
    }

    /// Forgets a connection (its socket is closed or closing).
    fn forget(&mut self, id: &str) -> Option<Conn> {
        self.guards.remove(id);
        self.conns.remove(id)
    }

    /// When the alarm must next run: the earliest running round's end or token expiry.
    fn next_alarm(&self, now: i64) -> Result<Option<i64>> {
        let retry = self.log.next_round_due(now, self.policy().interval_ms)?;
        let expiry = self.conns.next_close();
        Ok(match (retry, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Sends `pending` entries per the retry policy: due ones start a round for every matching
    /// connection, running ones go to `newcomer` only (if any), exhausted ones fail. Returns
    /// whether a round started (the alarm must then run within one interval).
    fn deliver_pending(
        &mut self,
        pending: Vec<Entry>,
        newcomer: Option<&str>,
        now: i64,
        pace: Pace,
    ) -> Result<bool> {
        let policy = self.policy();
        let (mut rounds, mut failed, mut sent) = (Vec::new(), Vec::new(), 0u64);
        for e in pending {
            let state = PendingState {
                attempts: e.attempts,
                last_attempt_at: e.last_attempt_at,
            };
            match policy.step(state, now) {
                Step::Round { attempt } => {
                    let n = self.broadcast(&e.kind, &render_frame(&e.payload, attempt), pace);
                    if n > 0 {
                        sent += u64::from(n);
                        rounds.push(e.seq);
                        log(event("retry")
                            .str("room", &self.id)
                            .str("id", &e.id)
                            .num("seq", e.seq)
                            .num("attempt", attempt));
                    }
                }
                Step::InRound { attempt, .. } => {
                    // A dead newcomer is dropped by its own close event.
                    if let Some(c) = newcomer.and_then(|id| self.conns.get(id)) {
                        if c.filter.matches(&e.kind) {
                            let _ = c.socket.send_str(&render_frame(&e.payload, attempt));
                            sent += 1;
                        }
                    }
                }
                Step::Fail => {
                    failed.push(e.seq);
                    log(event("failed")
                        .str("room", &self.id)
                        .str("id", &e.id)
                        .num("seq", e.seq)
                        .num("attempts", e.attempts));
                }
            }
        }
        self.log.record_round(&rounds, now)?;
        self.log.fail(&failed)?;
        self.log.add_deliveries(sent)?;
        Ok(!rounds.is_empty())
    }
}

impl Core {
    /// The awake room, opened (schema, caches) on first use after a wake.
    fn room(&self) -> Result<RefMut<'_, Room>> {
        let mut slot = self.room.borrow_mut();
        if slot.is_none() {
            let settings =
                crate::runtime::settings(&self.env).map_err(|e| JsValue::from_str(&e.message()))?;
            let log = RoomLog::open(self.state.storage().sql())?;
            let last_seq = log.last_seq()?;
            let now = now_ms();
            let mut guards = HashMap::new();
            let mut conns = Connections::default();
            for ws in self.state.get_web_sockets() {
                let Some(a) = attachment(&ws) else {
                    continue;
                };
                guards.insert(
                    a.id.clone(),
                    ConnectionGuard::new(settings.rate_limit_per_minute, now),
                );
                conns.add(Connection {
                    filter: TypeFilter::from_stored(&a.types),
                    closes_at: time::token_close_ms(a.exp, LEEWAY_SECS),
                    socket: ws,
                    id: a.id,
                    sub: a.sub,
                });
            }
            let id = log.room_id()?.unwrap_or_default();
            *slot = Some(Room {
                id,
                settings,
                log,
                last_seq,
                conns,
                guards,
                alarm_at: None,
                pruner: Pruner::default(),
                outbox: Rc::default(),
            });
        }
        Ok(RefMut::map(slot, |r| r.as_mut().expect("opened above")))
    }

    /// The id of a connection's socket: its hibernation tag (cheaper than its attachment).
    fn conn_id(&self, ws: &Socket) -> Option<String> {
        self.state.get_tags(ws).first().map(String::from)
    }

    /// Makes sure the alarm runs by `at` (ms); `None` changes nothing. Returns the storage
    /// call to wait for, if one was needed.
    fn schedule(self: &Rc<Self>, at: Option<i64>) -> Result<Option<Promise>> {
        let Some(at) = at else {
            return Ok(None);
        };
        let storage = self.state.storage();
        let known = self.room()?.alarm_at;
        match known {
            // Unknown after a wake: read it first.
            None => {
                let core = Rc::clone(self);
                let read = storage.get_alarm()?;
                Ok(Some(on_settle(&read, move |current| {
                    let current = current?.as_f64().map(|ms| ms as i64);
                    core.room()?.alarm_at = Some(current);
                    Ok(core
                        .schedule(Some(at))?
                        .map_or(JsValue::UNDEFINED, Into::into))
                })))
            }
            Some(Some(current)) if current <= at => Ok(None),
            Some(_) => {
                self.room()?.alarm_at = Some(Some(at));
                Ok(Some(storage.set_alarm(at as f64)?))
            }
        }
    }

    /// Accepts a connection; returns the upgrade response and when the alarm must run for it.
    fn subscribe(
        &self,
        sub: String,
        exp: i64,
        since: Option<u64>,
        types: Vec<String>,
    ) -> Result<(Response, Option<i64>)> {
        // Capped: a far-future `exp` (up to i64::MAX from a token) must still fit the socket
        // attachment (a JavaScript number) and an alarm time.
        let exp = exp.min(time::MAX_ALARM_MS / 1000);
        let now = now_ms();
        let mut room = self.room()?;
        let room = &mut *room;

        let full = if room.conns.len() >= room.settings.max_connections_per_room as usize {
            Some((
                "room",
                ApiError::RoomFull {
                    retry_after_secs: 30,
                },
            ))
        } else if room.conns.count_for(&sub) >= room.settings.max_connections_per_user as usize {
            Some((
                "user",
                ApiError::UserConnectionLimit {
                    retry_after_secs: 30,
                },
            ))
        } else {
            None
        };
        if let Some((limit, refused)) = full {
            log(event("limit_refused")
                .str("room", &room.id)
                .str("limit", limit)
                .str("sub", &sub));
            return Ok((http::error(&refused)?, None));
        }

        let (client, server) = bindings::web_socket_pair()?;
        let attachment = Attachment {
            id: random_id(),
            sub,
            exp,
            types,
        };
        self.state
            .accept_web_socket(&server, vec![JsValue::from_str(&attachment.id)])?;
        let greeted = save_attachment(&server, &attachment)
            .and_then(|()| room.greet(&server, &attachment, since, now));
        let (replayed, alarm) = match greeted {
            Ok(done) => done,
            Err(e) => {
                // Accepted but not set up: close it rather than keep a socket the room half knows.
                let _ = server.close(1011, "internal error");
                room.forget(&attachment.id);
                return Err(e);
            }
        };
        log(event("connect")
            .str("room", &room.id)
            .str("connection", &attachment.id)
            .str("sub", &attachment.sub)
            .opt_num("since", since)
            .num("replayed", replayed)
            .num("connections", room.conns.len()));
        Ok((http::upgrade(&client)?, Some(alarm)))
    }

    /// Publishes (the notification's members have arrived); the response, or a promise of it
    /// when a redelivery alarm must be scheduled first.
    fn publish(
        self: &Rc<Self>,
        members: String,
        id: String,
        kind: String,
        status: String,
        requires_ack: bool,
        key: Option<String>,
    ) -> Result<JsValue> {
        // From here to the response, no await: seq assignment is atomic.
        let now = now_ms();
        // A block, not drop(): clippy only sees the borrow end at a scope's end.
        let (body, retry_at) = {
            let mut guard = self.room()?;
            let room = &mut *guard;
            if let Some(k) = &key {
                if let Some(first) = room.log.find_by_key(k)? {
                    let body = publish_result(&first.id, first.seq, first.broadcast_count, true);
                    return Ok(http::json(200, &body)?.into());
                }
            }
            let seq = room.last_seq + 1;
            let payload = render_payload(&id, seq, &members);
            // One pass picks the sockets: counted and logged first, then sent to.
            let targets: Vec<&Conn> = room.conns.matching(&kind).collect();
            let count = targets.len() as u32;
            let appended = room.log.append(&NewEntry {
                seq,
                id: &id,
                kind: &kind,
                payload: &payload,
                status: &status,
                requires_ack,
                idempotency_key: key.as_deref(),
                now,
                broadcast_count: count,
            });
            if let Err(e) = appended {
                if room.log.has_id(&id)? {
                    return Ok(http::error(&ApiError::DuplicateId(id))?.into());
                }
                return Err(e);
            }
            let dead = fan_out(
                &room.outbox,
                targets,
                &render_frame(&payload, 1),
                Pace::Paced,
            );
            room.last_seq = seq;
            for id in dead {
                room.forget(&id);
            }

            room.prune(now)?;
            log(event("publish")
                .str("room", &room.id)
                .str("id", &id)
                .num("seq", seq)
                .str("type", &kind)
                .bool("requiresAck", requires_ack)
                .num("broadcastCount", count));
            let body = publish_result(&id, seq, count, false);
            let retry_at = (requires_ack && count > 0).then(|| now + room.policy().interval_ms);
            (body, retry_at)
        };
        let resp = http::json(200, &body)?;
        Ok(match self.schedule(retry_at)? {
            Some(scheduled) => on_settle(&scheduled, move |done| done.map(|_| resp.into())).into(),
            None => resp.into(),
        })
    }

    fn history(&self, since: u64, limit: u32) -> Result<Response> {
        let room = self.room()?;
        let mut rows = room.log.after(since, limit + 1)?;
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let mut out = String::with_capacity(256 + rows.len() * 256);
        out.push_str(&format!(
            "{{\"success\":true,\"roomId\":{},\"lastSeq\":{},\"hasMore\":{},\"notifications\":[",
            json!(room.id),
            room.last_seq,
            has_more
        ));
        for (i, e) in rows.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(e.payload.strip_suffix('}').unwrap_or(&e.payload));
            out.push_str(&format!(
                ",\"deliveryStatus\":\"{}\",\"attempts\":{},\"ackedAt\":{},\"ackedBy\":{}}}",
                e.status().as_str(),
                e.attempts,
                json!(e.acked_at.map(time::iso_from_ms)),
                json!(e.acked_by),
            ));
        }
        out.push_str("]}");
        http::json(200, &out)
    }

    fn health(&self) -> Result<Response> {
        let room = self.room()?;
        let (pending, failed) = room.log.delivery_counts()?;
        let stats = room.log.stats()?;
        let last_at = stats.last_broadcast_at;
        let body = json!({
            "ok": true,
            "roomId": room.id,
            "connections": room.conns.len(),
            "pendingAcks": pending,
            "failedAcks": failed,
            "lastSeq": room.last_seq,
            "publishes": stats.publishes,
            "deliveries": stats.deliveries,
            "lastBroadcastAt": (last_at > 0).then(|| time::iso_from_ms(last_at)),
        });
        http::json(200, &body.to_string())
    }

    /// Persists a connection's new filter (it must survive hibernation) and confirms it.
    fn refilter(conn: &Conn) -> Result<()> {
        let ws = &conn.socket;
        save_attachment(
            ws,
            &Attachment {
                id: conn.id.clone(),
                sub: conn.sub.clone(),
                exp: conn.closes_at / 1000 - LEEWAY_SECS,
                types: conn.filter.patterns(),
            },
        )?;
        ws.send_str(&server::subscribed(&conn.filter))
    }

    /// Closes a connection with `code` and forgets it.
    fn close(&self, room: &mut Room, ws: &Socket, code: u16, reason: &str) {
        let _ = ws.close(code, reason);
        if let Some(c) = self.conn_id(ws).and_then(|id| room.forget(&id)) {
            log(event("disconnect")
                .str("room", &room.id)
                .str("connection", &c.id)
                .num("code", code)
                .str("reason", reason));
        }
    }

    /// Records the room's id (alarms and socket events carry none).
    fn enter(&self, id: &str) -> Result<()> {
        let mut room = self.room()?;
        if room.id != id {
            room.log.set_room_id(id)?;
            room.id = id.to_owned();
        }
        Ok(())
    }

    /// Handles one client frame.
    fn message(&self, ws: &Socket, text: Option<String>, len: usize) -> Result<()> {
        let now = now_ms();
        let mut room = self.room()?;
        let room = &mut *room;
        let Some(conn_id) = self.conn_id(ws).filter(|id| room.conns.get(id).is_some()) else {
            return Ok(());
        };
        let max = room.settings.max_message_bytes;
        let per_minute = room.settings.rate_limit_per_minute;
        let admission = room
            .guards
            .entry(conn_id.clone())
            .or_insert_with(|| ConnectionGuard::new(per_minute, now))
            .admit(len, max, now);
        match admission {
            Admission::Accept => {}
            Admission::Refuse => {
                ws.send_str(&server::error(
                    "rate_limited",
                    "too many frames: at most RATE_LIMIT_PER_MINUTE per minute",
                ))?;
                return Ok(());
            }
            Admission::Close(code) => {
                let reason = if code == crate::limits::CLOSE_TOO_BIG {
                    "frame larger than MAX_MESSAGE_BYTES"
                } else {
                    "rate limit exceeded persistently"
                };
                self.close(room, ws, code, reason);
                return Ok(());
            }
        }
        let parsed = match &text {
            Some(s) => ClientFrame::parse(s),
            None => Err(crate::protocol::InvalidFrame(
                "binary frames are not part of the protocol; send JSON text".into(),
            )),
        };
        match parsed {
            Err(invalid) => {
                ws.send_str(&server::error("invalid_message", &invalid.0))?;
                let strike = room.guards.get_mut(&conn_id).and_then(|g| g.invalid(now));
                if let Some(code) = strike {
                    self.close(room, ws, code, "invalid messages persistently");
                }
            }
            Ok(ClientFrame::TextPing) => ws.send_str("pong")?,
            Ok(ClientFrame::Ping) => ws.send_str(&server::pong(&time::iso_from_ms(now)))?,
            Ok(ClientFrame::Ack(ids)) => {
                let sub = room
                    .conns
                    .get(&conn_id)
                    .map(|c| c.sub.clone())
                    .unwrap_or_default();
                let changed = room.log.ack(&ids, &sub, now)?;
                if changed > 0 {
                    log(event("ack")
                        .str("room", &room.id)
                        .str("connection", &conn_id)
                        .str("sub", &sub)
                        .strs("ids", &ids)
                        .num("acked", changed));
                }
            }
            Ok(ClientFrame::Subscribe(p)) => {
                if let Some(f) = room.conns.filter_mut(&conn_id) {
                    f.add(p);
                }
                room.conns.get(&conn_id).map(Self::refilter).transpose()?;
            }
            Ok(ClientFrame::Unsubscribe(p)) => {
                if let Some(f) = room.conns.filter_mut(&conn_id) {
                    f.remove(&p);
                }
                room.conns.get(&conn_id).map(Self::refilter).transpose()?;
            }
        }
        Ok(())
    }
}

/// A socket's attachment, if it has one of ours.
fn attachment(ws: &Socket) -> Option<Attachment> {
    serde_json::from_str(&ws.deserialize_attachment().as_string()?).ok()
}

fn save_attachment(ws: &Socket, a: &Attachment) -> Result<()> {
    let text = serde_json::to_string(a).map_err(|e| JsValue::from_str(&e.to_string()))?;
    ws.serialize_attachment(&text)
}

fn publish_result(id: &str, seq: u64, count: u32, duplicate: bool) -> String {
    Object::new()
        .bool("success", true)
        .num("broadcastCount", count)
        .str("id", id)
        .num("seq", seq)
        .bool("duplicate", duplicate)
        .finish()
}

/// Logs a failure of a handler the runtime would otherwise only see as an exception.
fn logged<T>(result: Result<T>, handler: &str) -> Result<T> {
    if let Err(e) = &result {
        log(event("internal_error")
            .str("error", &describe(e))
            .str("in", handler));
    }
    result
}

/// The runtime's entry points. Socket events are synchronous (a room handles them without
/// waiting for anything); calls that wait return a promise made with [`on_settle`].
#[wasm_bindgen]
impl NotificationRoom {
    #[wasm_bindgen(constructor)]
    pub fn new(state: DurableObjectState, env: JsValue) -> NotificationRoom {
        // Text `ping` is answered by the runtime without waking the room.
        let _ = bindings::auto_response(&state, "ping", "pong");
        NotificationRoom {
            core: Rc::new(Core {
                state,
                env,
                room: RefCell::new(None),
            }),
        }
    }

    /// A call of the Worker (see [`Call`]): a `Response`, or a promise of one.
    pub fn fetch(&self, req: Request) -> Result<JsValue> {
        let core = &self.core;
        let Some(call) = Call::parse(&req.url()) else {
            return Ok(http::error(&ApiError::NotFound)?.into());
        };
        core.enter(call.room().as_str())?;
        Ok(match call {
            Call::Subscribe {
                sub,
                exp,
                since,
                types,
                ..
            } => {
                let (resp, alarm) = core.subscribe(sub, exp, since, types)?;
                // The socket is live by now: failing to schedule is logged, not turned into a
                // failed upgrade that would orphan it.
                match logged(core.schedule(alarm), "schedule") {
                    Ok(Some(scheduled)) => on_settle(&scheduled, move |done| {
                        let _ = logged(done, "schedule");
                        Ok(resp.into())
                    })
                    .into(),
                    _ => resp.into(),
                }
            }
            Call::Publish {
                id,
                kind,
                status,
                requires_ack,
                key,
                ..
            } => {
                let core = Rc::clone(core);
                on_settle(&req.text()?, move |members| {
                    let members = members?.as_string().unwrap_or_default();
                    logged(
                        core.publish(members, id, kind, status, requires_ack, key),
                        "publish",
                    )
                })
                .into()
            }
            Call::History { since, limit, .. } => core.history(since, limit)?.into(),
            Call::Health { .. } => core.health()?.into(),
        })
    }

    #[wasm_bindgen(js_name = webSocketMessage)]
    pub fn web_socket_message(&self, ws: Socket, message: JsValue) -> Result<()> {
        let (text, len) = match message.as_string() {
            Some(s) => {
                let len = s.len();
                (Some(s), len)
            }
            None => (None, js_sys::Uint8Array::new(&message).length() as usize),
        };
        logged(self.core.message(&ws, text, len), "webSocketMessage")
    }

    #[wasm_bindgen(js_name = webSocketClose)]
    pub fn web_socket_close(
        &self,
        ws: Socket,
        code: u16,
        reason: String,
        _clean: bool,
    ) -> Result<()> {
        let core = &self.core;
        let mut room = core.room()?;
        // Echo the close; codes that may not be sent (1005, 1006, 1015) become 1000. Needed even
        // though web_socket_auto_reply_to_close is the default at our compatibility date: without
        // the echo, clients of hibernatable sockets see 1006 (tests/foundation.test.mjs).
        let echo = match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => code,
            _ => 1000,
        };
        core.close(&mut room, &ws, echo, &reason);
        Ok(())
    }

    #[wasm_bindgen(js_name = webSocketError)]
    pub fn web_socket_error(&self, ws: Socket, _error: JsValue) -> Result<()> {
        if let Some(id) = self.core.conn_id(&ws) {
            self.core.room()?.forget(&id);
        }
        Ok(())
    }

    pub fn alarm(&self) -> Result<JsValue> {
        let next = logged(self.core.alarm_round(now_ms()), "alarm")?;
        Ok(self
            .core
            .schedule(next)?
            .map_or(JsValue::UNDEFINED, Into::into))
    }
}

impl Core {
    /// The alarm's work: expired tokens, redelivery rounds, pruning. Returns the next alarm.
    fn alarm_round(&self, now: i64) -> Result<Option<i64>> {
        let mut room = self.room()?;
        let room = &mut *room;
        room.alarm_at = Some(None);
        // Tokens that expired while connected: close with 4001.
        for id in room.conns.expired(now) {
            if let Some(ws) = room.conns.get(&id).map(|c| c.socket.clone()) {
                self.close(room, &ws, 4001, "token expired");
            }
        }
        let due = room.log.due(now, room.policy().interval_ms)?;
        room.deliver_pending(due, None, now, Pace::Paced)?;
        room.pruner.sweep_next();
        room.prune(now)?;
        room.next_alarm(now)
    }
}
