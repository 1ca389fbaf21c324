//! `NotificationRoom`: the Durable Object of one room, on workers-rs (`#[durable_object]`).
//!
//! Lifecycle glue: it turns runtime events (calls of the Worker, socket messages, the alarm)
//! into calls on the awake [`Room`], whose handlers live in a file each by what they do
//! ([`connect`], [`publish`], [`frames`], [`alarm`], [`queries`], [`shard`]) and carry out what
//! the plain types decide. The room plays two roles, each a type of its own: its [`log`] side
//! (seq, idempotency, the append, acks, redelivery rounds, retention, history) and its
//! [`sockets`] side (its connections, their attachments and filters, the outbox, presence,
//! client events, and replay to them). A large room's first Durable Object (its coordinator)
//! plays both for the whole room and keeps the connections its shards hold as remote ones
//! ([`peer`], [`link`]); a shard holds sockets only ([`shard`]). Nothing that matters lives
//! only in memory: connections come back from the runtime's hibernated sockets and their
//! attachments (a coordinator's remote ones from its shards), everything else from the log.

mod alarm;
mod connect;
mod frames;
mod link;
mod log;
mod peer;
mod publish;
mod queries;
mod replay;
mod shard;
mod sockets;

use super::env::{describe, now_ms, settings};
use super::http;
use super::rooms;
use super::socket::Socket;
use crate::alarm::AlarmAt;
use crate::answer::Answer;
use crate::codes::{Close, LogEvent};
use crate::error::ApiError;
use crate::internal::{Call, Subscription};
use crate::room_id::RoomId;
use crate::shards::{parse_shard_name, Place};
use log::Log;
use peer::Peer;
use shard::Relay;
use sockets::Sockets;
use std::cell::{RefCell, RefMut};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::JsValue;
use worker::{
    durable_object, DurableObject, Env, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage,
};

/// The Durable Object of one room (`NotificationRoom` in `wrangler.toml`).
#[durable_object]
pub struct NotificationRoom {
    state: State,
    env: Env,
    room: RefCell<Option<Room>>,
}

/// Whether a coordinator knows its shards' connections since it woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Remote {
    Unknown,
    Loading,
    Known,
}

/// The awake room: its log side and its socket side, rebuilt whenever the object wakes.
struct Room {
    log: Log,
    sockets: Sockets,
    /// Ms of the scheduled alarm: `None` for none; the outer `None` until read after a wake.
    alarm_at: Option<Option<i64>>,
    /// This object is shard `k` of that room (else it is a room's coordinator).
    shard: Option<(RoomId, u32)>,
    /// A coordinator's shards so far, and whether it knows their connections.
    shards: u32,
    remote: Remote,
    /// Connections on their way to each shard (index `k - 1`), and by user.
    placing: Vec<usize>,
    placing_users: HashMap<String, usize>,
    /// A shard's line to its coordinator, the last seq it delivered, and the sockets here its
    /// coordinator has greeted (all of them after a wake).
    relay: Option<Rc<Relay>>,
    delivered: Option<u64>,
    greeted: HashSet<String>,
}

impl Room {
    /// Records the object's name (alarms and socket events carry none): the room id, or a
    /// shard's name.
    fn enter(&mut self, name: &str) -> Result<()> {
        if self.log.id != name {
            self.log.set_id(name)?;
            self.sockets.room_id = name.to_owned();
            self.shard = parse_shard_name(name);
        }
        Ok(())
    }

    fn room_id(&self) -> Result<RoomId> {
        RoomId::parse(&self.log.id)
            .map_err(|_| worker::Error::RustError(format!("not a room id: {:?}", self.log.id)))
    }

    fn relay(&mut self) -> Option<Rc<Relay>> {
        if self.relay.is_none() {
            let (room, k) = self.shard.clone()?;
            self.relay = Some(Relay::new(self.sockets.env(), room, k));
        }
        self.relay.clone()
    }
}

/// Logs a failure where nobody waits for an answer (a socket event, the alarm), or where the
/// answer has already been decided.
fn logged<T>(result: Result<T>, handler: &str) -> Result<T> {
    if let Err(e) = &result {
        super::env::log(
            LogEvent::InternalError
                .line()
                .str("error", &e.to_string())
                .str("in", handler),
        );
    }
    result
}

fn respond(a: &Answer) -> Result<Response> {
    Ok(Response::from(http::answer(a)))
}

/// A runtime failure as workers-rs's error.
fn js_error(e: JsValue) -> worker::Error {
    worker::Error::RustError(describe(&e))
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
        }
    }

    /// A call of the Worker, or of another Durable Object of the same room (see [`Call`]).
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Some(call) = Call::parse(&req.path()) else {
            return respond(&Answer::from(&ApiError::NotFound));
        };
        self.room()?.enter(&call.object_name())?;
        match call {
            // A shard's calls.
            Call::ShardAccept { attachment, .. } => {
                let (resp, alarm) = self.room()?.shard_accept(&self.state, &attachment)?;
                let _ = logged(self.schedule(alarm).await, "schedule");
                return Ok(resp);
            }
            Call::ShardOps { .. } => {
                let body = req.text().await?;
                self.room()?.shard_ops(&body)?;
                return Response::ok("{}");
            }
            Call::ShardState { .. } => return Response::ok(self.room()?.shard_state()),
            _ => {}
        }
        // A coordinator's: it knows its shards' connections first.
        self.load_remote().await?;
        let resp = match call {
            Call::Subscribe { asked, .. } => self.subscribe(asked).await?,
            Call::Probe { sub, .. } => respond(&self.room()?.probe(&sub))?,
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
                let (answer, alarm) = self.room()?.publish(&envelope, &members, received_at)?;
                // Answered once every shard has its frames: a 200 is never lost with one.
                self.flush().await?;
                // The notification is stored and sent: a failed schedule is logged, and the
                // next event (a connect, an ack round) schedules again.
                let _ = logged(self.schedule(alarm).await, "schedule");
                respond(&answer)?
            }
            Call::History { since, limit, .. } => respond(&self.room()?.history(since, limit)?)?,
            Call::Presence { limit, .. } => respond(&self.room()?.presence(limit))?,
            Call::Health { .. } => respond(&self.room()?.health()?)?,
            Call::ShardRelay { .. } => {
                let body = req.text().await?;
                let alarm = self.room()?.relayed(&body)?;
                self.flush().await?;
                let _ = logged(self.schedule(alarm).await, "schedule");
                Response::ok("{}")?
            }
            Call::ShardAccept { .. } | Call::ShardOps { .. } | Call::ShardState { .. } => {
                unreachable!("answered above")
            }
        };
        Ok(resp)
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
        let ws = Socket(ws);
        if self.is_shard()? {
            self.room()?.shard_message(&ws, text, len);
            return Ok(());
        }
        logged(self.load_remote().await, "webSocketMessage")?;
        let alarm = logged(
            self.room().and_then(|mut r| r.message(&ws, text, len)),
            "webSocketMessage",
        )?;
        logged(self.flush().await, "flush")?;
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
        let ws = Socket(ws);
        if self.is_shard()? {
            self.room()?.shard_closed(&ws, close, &reason);
            return Ok(());
        }
        logged(self.load_remote().await, "webSocketClose")?;
        self.room()?.sockets.close_socket(&ws, close, &reason);
        logged(self.flush().await, "flush")
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        let ws = Socket(ws);
        if self.is_shard()? {
            self.room()?.shard_closed(&ws, Close::echo(1006), "");
            return Ok(());
        }
        logged(self.load_remote().await, "webSocketError")?;
        {
            let mut room = self.room()?;
            if let Some(id) = room.sockets.conn_id(&ws) {
                room.sockets.forget(&id);
            }
        }
        logged(self.flush().await, "flush")
    }

    async fn alarm(&self) -> Result<Response> {
        let next = if self.is_shard()? {
            let mut room = self.room()?;
            room.alarm_at = Some(None);
            room.shard_alarm(now_ms())
        } else {
            logged(self.load_remote().await, "alarm")?;
            let next = logged(
                self.room().and_then(|mut r| r.alarm_round(now_ms())),
                "alarm",
            )?;
            logged(self.flush().await, "flush")?;
            next
        };
        logged(self.schedule(next).await, "schedule")?;
        Response::empty()
    }
}

impl NotificationRoom {
    /// The awake room, opened (schema, caches) on first use after a wake: the log from
    /// storage, connections and presence from the sockets the runtime holds.
    fn room(&self) -> Result<RefMut<'_, Room>> {
        let mut slot = self.room.borrow_mut();
        if slot.is_none() {
            let settings =
                settings(&self.env).map_err(|e| worker::Error::RustError(e.message()))?;
            let log = Log::open(&self.state.storage(), settings.clone())?;
            let shard = parse_shard_name(&log.id);
            let shards = log.shard_count()?;
            let sockets = Sockets::restore(
                &self.state,
                self.env.clone(),
                settings,
                log.id.clone(),
                shard.is_some(),
                now_ms(),
            );
            *slot = Some(Room {
                log,
                sockets,
                alarm_at: None,
                remote: if shards == 0 || shard.is_some() {
                    Remote::Known
                } else {
                    Remote::Unknown
                },
                shard,
                shards,
                placing: Vec::new(),
                placing_users: HashMap::new(),
                relay: None,
                delivered: None,
                greeted: HashSet::new(),
            });
            let room = slot.as_mut().expect("just set");
            if room.shard.is_some() {
                room.greeted = room
                    .sockets
                    .conns
                    .select(|_| true)
                    .map(|c| c.id.clone())
                    .collect();
            }
        }
        Ok(RefMut::map(slot, |r| r.as_mut().expect("opened above")))
    }

    fn is_shard(&self) -> Result<bool> {
        Ok(self.room()?.shard.is_some())
    }

    /// A coordinator woken with shards asks each for the connections it holds (their
    /// attachments), once; other events wait for it.
    async fn load_remote(&self) -> Result<()> {
        loop {
            let shards = {
                let mut room = self.room()?;
                match room.remote {
                    Remote::Known => return Ok(()),
                    Remote::Loading => None,
                    Remote::Unknown => {
                        room.remote = Remote::Loading;
                        Some((room.room_id()?, room.shards))
                    }
                }
            };
            let Some((id, n)) = shards else {
                worker::Delay::from(Duration::from_millis(1)).await;
                continue;
            };
            let mut found = Vec::new();
            for k in 1..=n {
                let call = Call::ShardState {
                    room: id.clone(),
                    shard: k,
                };
                // A shard that does not answer lost its sockets: none to keep.
                let body = rooms::text(&self.env, &call).await.unwrap_or_default();
                found.push((k, shard::parse_state(&body)));
            }
            let mut room = self.room()?;
            let now = now_ms();
            for (k, attachments) in found {
                let link = room.sockets.link(&id, k);
                for a in attachments {
                    let peer = Peer::Remote {
                        id: a.id.as_str().into(),
                        link: Rc::clone(&link),
                    };
                    room.sockets.restore_one(&a, peer, now);
                }
            }
            room.remote = Remote::Known;
            return Ok(());
        }
    }

    /// Waits until every shard has carried out what it was sent; forgets the connections of
    /// shards that failed.
    async fn flush(&self) -> Result<()> {
        let pending = self.room()?.sockets.flushed();
        for f in pending {
            f.await;
        }
        self.room()?.sockets.drop_broken();
        Ok(())
    }

    /// A WebSocket upgrade: placed here, or on a shard (which accepts it; the coordinator
    /// greets it through the shard).
    async fn subscribe(&self, asked: Subscription) -> Result<Response> {
        let place = self.room()?.place(&asked.sub);
        match place {
            Err(refused) => connect::refused(&refused),
            Ok(Place::Here) => {
                let (resp, alarm) = self.room()?.subscribe(&self.state, asked)?;
                self.flush().await?;
                // The socket is live by now: failing to schedule is logged, not turned into
                // a failed upgrade that would orphan it.
                let _ = logged(self.schedule(alarm).await, "schedule");
                Ok(resp)
            }
            Ok(Place::Shard(k)) => {
                let (placing, id) = {
                    let mut room = self.room()?;
                    (room.begin_placing(k, asked)?, room.room_id()?)
                };
                let call = Call::ShardAccept {
                    room: id,
                    shard: k,
                    attachment: placing.attachment.to_json(),
                };
                let accepted = rooms::answered(&self.env, &call, None)
                    .await
                    .ok()
                    .filter(|r| r.status() == 101);
                let alarm = self.room()?.end_placing(&placing, accepted.is_some())?;
                let Some(resp) = accepted else {
                    return connect::refused(&ApiError::Internal);
                };
                self.flush().await?;
                let _ = logged(self.schedule(alarm).await, "schedule");
                Ok(Response::from(resp))
            }
        }
    }

    /// Makes sure the alarm runs by `at`; none changes nothing. `Storage::set_alarm` takes an
    /// absolute time only as a date: a bare number would be an offset.
    async fn schedule(&self, at: AlarmAt) -> Result<()> {
        if at.ms().is_none() {
            return Ok(());
        }
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
        let Some(at) = at.to_set(current) else {
            return Ok(());
        };
        self.room()?.alarm_at = Some(Some(at));
        let date = js_sys::Date::new(&JsValue::from_f64(at as f64));
        storage.set_alarm(worker::ScheduledTime::new(date)).await
    }
}
