//! A shard of a large room (src/shards.rs): it holds sockets and nothing else. It accepts the
//! connections its coordinator places on it, carries out the coordinator's ops in order, and
//! relays what its sockets send (frames, closes) to the coordinator, one message in flight at a
//! time. It closes its own idle sockets (it alone sees their auto-answered pings).

use super::peer::Peer;
use super::{js_error, Room};
use crate::alarm::AlarmAt;
use crate::auth::LEEWAY_SECS;
use crate::codes::{Close, LogEvent};
use crate::connections::Attachment;
use crate::glue::env::{describe, log, now_ms};
use crate::glue::rooms;
use crate::glue::socket::{Frame, Socket};
use crate::internal::Call;
use crate::outbox::Pace;
use crate::room_id::RoomId;
use crate::shards::{decode, encode, first_delivery, Op, Relayed, To, FEW};
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{wasm_bindgen_futures, Env, Response, Result, State, WebSocketPair};

/// What a shard sends its coordinator, gathered in order, one message in flight.
pub(super) struct Relay {
    env: Env,
    room: RoomId,
    shard: u32,
    state: RefCell<(Vec<Relayed>, bool)>,
}

impl Relay {
    pub fn new(env: Env, room: RoomId, shard: u32) -> Rc<Relay> {
        Rc::new(Relay {
            env,
            room,
            shard,
            state: RefCell::new((Vec::new(), false)),
        })
    }

    pub fn push(self: &Rc<Self>, item: Relayed) {
        let start = {
            let mut s = self.state.borrow_mut();
            s.0.push(item);
            !std::mem::replace(&mut s.1, true)
        };
        if start {
            let relay = Rc::clone(self);
            wasm_bindgen_futures::spawn_local(async move { relay.run().await });
        }
    }

    async fn run(self: Rc<Self>) {
        loop {
            let items = {
                let mut s = self.state.borrow_mut();
                if s.0.is_empty() {
                    s.1 = false;
                    return;
                }
                std::mem::take(&mut s.0)
            };
            let call = Call::ShardRelay {
                room: self.room.clone(),
                shard: self.shard,
            };
            if let Err(e) = rooms::answered(&self.env, &call, Some(&encode(&items))).await {
                // The coordinator is unreachable: what its sockets sent is lost (unacked
                // notifications are redelivered; clients resend what they need).
                log(LogEvent::InternalError
                    .line()
                    .str("error", &describe(&e))
                    .str("in", "shard-relay"));
            }
        }
    }
}

impl Room {
    /// Accepts a connection the coordinator placed here. The coordinator greets it.
    pub(super) fn shard_accept(
        &mut self,
        state: &State,
        attachment: &str,
    ) -> Result<(Response, AlarmAt)> {
        let Some(a) = Attachment::from_json(attachment) else {
            return Err(worker::Error::RustError(
                "shard-accept: bad attachment".into(),
            ));
        };
        let now = now_ms();
        let pair = WebSocketPair::new()?;
        state
            .as_raw()
            .accept_websocket_with_tags(pair.server.as_ref(), vec![JsValue::from_str(&a.id)])
            .map_err(js_error)?;
        let server = Socket(pair.server);
        server.save(&a).map_err(js_error)?;
        self.sockets
            .add(a.connection(Peer::Local(server), LEEWAY_SECS), now);
        Ok((
            Response::from_websocket(pair.client)?,
            self.sockets.next_idle_check(now),
        ))
    }

    /// Carries out the coordinator's ops, in order. Consecutive sends to every socket go out
    /// together (one `batch` to a socket that accepts them); a send to named connections goes
    /// as it is (the coordinator made a replay one `batch` already).
    pub(super) fn shard_ops(&mut self, body: &str) -> Result<()> {
        let Some(ops) = decode::<Op>(body) else {
            return Err(worker::Error::RustError("shard-ops: bad body".into()));
        };
        let mut group: Option<(To, Vec<Frame>)> = None;
        for op in ops {
            if let Op::Send { to, frame, seq } = op {
                let (deliver, mark) = first_delivery(seq, self.delivered);
                self.delivered = mark;
                if !deliver {
                    continue;
                }
                match &mut group {
                    Some((To::All, frames)) if to == To::All => frames.push(Frame::from(frame)),
                    _ => {
                        self.send_group(group.take());
                        group = Some((to, vec![Frame::from(frame)]));
                    }
                }
                continue;
            }
            self.send_group(group.take());
            match op {
                Op::Close { id, code, reason } => {
                    if let Some(ws) = self.local_socket(&id) {
                        ws.close(Close::Echo(code), &reason);
                    }
                    self.sockets.forget(&id);
                    self.greeted.remove(&id);
                }
                Op::Save { id, attachment } => self.save_from_coordinator(&id, &attachment),
                Op::Send { .. } => unreachable!("handled above"),
            }
        }
        self.send_group(group.take());
        Ok(())
    }

    /// Sends a group of frames. "Every socket" means every socket the coordinator has greeted:
    /// one accepted here whose `connected` has not come yet is not the room's until it does.
    fn send_group(&mut self, group: Option<(To, Vec<Frame>)>) {
        let Some((to, frames)) = group else {
            return;
        };
        match to {
            To::All => {
                let greeted = &self.greeted;
                self.sockets
                    .fan_out(frames, Pace::Paced, |c| greeted.contains(&c.id));
            }
            // A few connections (a greeting, a replay, a reply): each found by its id.
            To::Ids(ids) if ids.len() <= FEW => {
                let texts: Vec<String> = frames.iter().map(|f| f.text().to_owned()).collect();
                for id in ids {
                    self.sockets.send_many(&id, texts.clone());
                    self.greeted.insert(id);
                }
            }
            To::Ids(ids) => {
                self.greeted.extend(ids.iter().cloned());
                let ids: HashSet<String> = ids.into_iter().collect();
                self.sockets
                    .fan_out(frames, Pace::Paced, |c| ids.contains(&c.id));
            }
        }
    }

    fn local_socket(&self, id: &str) -> Option<Socket> {
        self.sockets.conns.get(id)?.socket.local().cloned()
    }

    /// Stores the attachment the coordinator sent (a filter or presence change), keeping the
    /// shard's own record of when it last heard from the socket.
    fn save_from_coordinator(&mut self, id: &str, attachment: &str) {
        let (Some(ws), Some(mut a)) = (self.local_socket(id), Attachment::from_json(attachment))
        else {
            return;
        };
        if let Some(c) = self.sockets.conns.get(id) {
            a.seen_at = a.seen_at.max(c.seen_at);
        }
        if let Err(e) = ws.save(&a) {
            log(LogEvent::InternalError
                .line()
                .str("error", &describe(&e))
                .str("in", "shard-save"));
        }
    }

    /// The attachments of every socket here, as a JSON array of their texts.
    pub(super) fn shard_state(&self) -> String {
        let texts: Vec<String> = self
            .sockets
            .conns
            .select(|_| true)
            .filter_map(|c| c.socket.local()?.attachment())
            .map(|a| a.to_json())
            .collect();
        serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into())
    }

    /// A frame from a socket here: relayed to the coordinator.
    pub(super) fn shard_message(&mut self, ws: &Socket, text: Option<String>, len: usize) {
        let now = now_ms();
        let Some(id) = self.sockets.conn_id(ws) else {
            return;
        };
        self.sockets.seen(&id, now);
        if let Some(relay) = self.relay() {
            relay.push(Relayed::Frame { id, text, len });
        }
    }

    /// A socket here closed (its client's close, echoed): the coordinator forgets it.
    pub(super) fn shard_closed(&mut self, ws: &Socket, close: Close, reason: &str) {
        if let Some(id) = self.sockets.close_socket(ws, close, reason) {
            self.greeted.remove(&id);
            if let Some(relay) = self.relay() {
                relay.push(Relayed::Closed {
                    id,
                    code: close.code(),
                    reason: reason.to_owned(),
                });
            }
        }
    }

    /// The shard's alarm: its idle sockets (4008), reported to the coordinator.
    pub(super) fn shard_alarm(&mut self, now: i64) -> AlarmAt {
        let closed = self.sockets.reap_idle(now);
        if let Some(relay) = self.relay() {
            for id in closed {
                relay.push(Relayed::Closed {
                    id,
                    code: Close::Idle.code(),
                    reason: Close::Idle.reason().to_owned(),
                });
            }
        }
        self.sockets.next_idle_check(now)
    }
}

/// The decoded attachments of a shard's state answer.
pub(super) fn parse_state(body: &str) -> Vec<Attachment> {
    serde_json::from_str::<Vec<String>>(body)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| Attachment::from_json(t))
        .collect()
}
