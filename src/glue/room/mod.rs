//! `NotificationRoom`: the Durable Object of one room, on workers-rs (`#[durable_object]`).
//!
//! Lifecycle glue: it turns runtime events (calls of the Worker, socket messages, the alarm)
//! into calls on the awake [`Room`], whose handlers live in a file each by what they do
//! ([`connect`], [`publish`], [`frames`], [`alarm`], [`queries`]) and carry out what the plain
//! types decide. The room plays two roles, each a type of its own: its [`log`] side (seq,
//! idempotency, the append, acks, redelivery rounds, retention, history) and its [`sockets`]
//! side (accepted sockets, their attachments and filters, the outbox, presence, client events,
//! and replay to them). Nothing that matters lives only in memory: connections come back from
//! the runtime's hibernated sockets and their attachments, everything else from the log.

mod alarm;
mod connect;
mod frames;
mod log;
mod publish;
mod queries;
mod replay;
mod sockets;

use super::env::{describe, now_ms, settings};
use super::http;
use super::socket::Socket;
use crate::alarm::AlarmAt;
use crate::answer::Answer;
use crate::codes::{Close, LogEvent};
use crate::error::ApiError;
use crate::internal::Call;
use log::Log;
use sockets::Sockets;
use std::cell::{RefCell, RefMut};
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

/// The awake room: its log side and its socket side, rebuilt whenever the object wakes.
struct Room {
    log: Log,
    sockets: Sockets,
    /// Ms of the scheduled alarm: `None` for none; the outer `None` until read after a wake.
    alarm_at: Option<Option<i64>>,
}

impl Room {
    /// Records the room's id (alarms and socket events carry none).
    fn enter(&mut self, id: &str) -> Result<()> {
        if self.log.id != id {
            self.log.set_id(id)?;
            self.sockets.room_id = id.to_owned();
        }
        Ok(())
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

    /// A call of the Worker (see [`Call`]).
    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let Some(call) = Call::parse(&req.path()) else {
            return respond(&Answer::from(&ApiError::NotFound));
        };
        self.room()?.enter(call.room().as_str())?;
        match call {
            Call::Subscribe { asked, .. } => {
                let (resp, alarm) = self.room()?.subscribe(&self.state, asked)?;
                // The socket is live by now: failing to schedule is logged, not turned into a
                // failed upgrade that would orphan it.
                let _ = logged(self.schedule(alarm).await, "schedule");
                Ok(resp)
            }
            Call::Probe { sub, .. } => respond(&self.room()?.probe(&sub)),
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
                // The notification is stored and sent: a failed schedule is logged, and the
                // next event (a connect, an ack round) schedules again.
                let _ = logged(self.schedule(alarm).await, "schedule");
                respond(&answer)
            }
            Call::History { since, limit, .. } => respond(&self.room()?.history(since, limit)?),
            Call::Presence { limit, .. } => respond(&self.room()?.presence(limit)),
            Call::Health { .. } => respond(&self.room()?.health()?),
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
        let alarm = logged(
            self.room()
                .and_then(|mut r| r.message(&Socket(ws), text, len)),
            "webSocketMessage",
        )?;
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
        self.room()?.sockets.close(&Socket(ws), close, &reason);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        let mut room = self.room()?;
        if let Some(id) = room.sockets.conn_id(&Socket(ws)) {
            room.sockets.forget(&id);
        }
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        let next = logged(
            self.room().and_then(|mut r| r.alarm_round(now_ms())),
            "alarm",
        )?;
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
            let sockets = Sockets::restore(&self.state, settings, log.id.clone(), now_ms());
            *slot = Some(Room {
                log,
                sockets,
                alarm_at: None,
            });
        }
        Ok(RefMut::map(slot, |r| r.as_mut().expect("opened above")))
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
