//! The coordinator's line to one shard: the ops for it ([`Op`]) gathered in order, one message
//! in flight at a time, so the shard carries them out in the order the room decided them; what
//! gathers while a message is in flight goes in the next one (a burst costs one message per
//! round trip, not one per frame). [`Link::flushed`] resolves once everything sent before it
//! has been carried out: a publish is answered only then.

use crate::codes::LogEvent;
use crate::glue::env::{describe, log};
use crate::glue::rooms;
use crate::glue::socket::Frame;
use crate::internal::Call;
use crate::room_id::RoomId;
use crate::shards::{encode, Op, To, FEW};
use futures_channel::oneshot;
use std::cell::RefCell;
use std::rc::Rc;
use worker::{wasm_bindgen_futures, Env};

/// An op waiting to go; a send names its frame by uid so consecutive sends of one frame share
/// one op.
enum Pending {
    Send {
        uid: u64,
        frame: String,
        seq: Option<u64>,
        ids: Vec<Rc<str>>,
        /// The link's epoch when it was gathered: "every socket of the shard" only if no
        /// connection came or went since.
        epoch: u64,
    },
    Other(Op),
}

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    in_flight: bool,
    /// Messages sent / carried out so far.
    sent: u64,
    done: u64,
    waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// Connections the coordinator keeps on this shard, and a counter of their changes.
    count: usize,
    epoch: u64,
    /// A message failed: the shard lost its sockets (the room drops its connections there).
    broken: bool,
}

pub(in crate::glue::room) struct Link {
    env: Env,
    room: RoomId,
    pub shard: u32,
    state: RefCell<State>,
}

impl Link {
    pub fn new(env: Env, room: RoomId, shard: u32) -> Rc<Link> {
        Rc::new(Link {
            env,
            room,
            shard,
            state: RefCell::default(),
        })
    }

    /// Adds a frame for connection `id`.
    pub fn send(&self, id: &Rc<str>, frame: &Frame) {
        let mut s = self.state.borrow_mut();
        let epoch = s.epoch;
        if let Some(Pending::Send { uid, ids, .. }) = s.pending.last_mut() {
            if *uid == frame.uid {
                ids.push(Rc::clone(id));
                return;
            }
        }
        s.pending.push(Pending::Send {
            uid: frame.uid,
            frame: frame.text().to_owned(),
            seq: frame.seq,
            ids: vec![Rc::clone(id)],
            epoch,
        });
    }

    pub fn op(&self, op: Op) {
        self.state.borrow_mut().pending.push(Pending::Other(op));
    }

    /// A connection on this shard came (`+1`) or went.
    pub fn counted(&self, delta: isize) {
        let mut s = self.state.borrow_mut();
        s.count = s.count.saturating_add_signed(delta);
        s.epoch += 1;
    }

    /// Connections the coordinator keeps on this shard.
    pub fn count(&self) -> usize {
        self.state.borrow().count
    }

    /// Whether a message failed since the last time this was asked.
    pub fn take_broken(&self) -> bool {
        std::mem::take(&mut self.state.borrow_mut().broken)
    }

    /// Starts sending what is gathered, if nothing is in flight.
    pub fn kick(self: &Rc<Self>) {
        {
            let mut s = self.state.borrow_mut();
            if s.in_flight || s.pending.is_empty() {
                return;
            }
            s.in_flight = true;
        }
        let link = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move { link.run().await });
    }

    /// Resolves once everything gathered so far has been carried out by the shard.
    pub fn flushed(self: &Rc<Self>) -> impl std::future::Future<Output = ()> {
        let rx = {
            let mut s = self.state.borrow_mut();
            let target = if s.pending.is_empty() {
                s.sent
            } else {
                s.sent + 1
            };
            if s.done >= target {
                None
            } else {
                let (tx, rx) = oneshot::channel();
                s.waiters.push((target, tx));
                Some(rx)
            }
        };
        self.kick();
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
        }
    }

    async fn run(self: Rc<Self>) {
        loop {
            let (body, n) = {
                let mut s = self.state.borrow_mut();
                if s.pending.is_empty() {
                    s.in_flight = false;
                    return;
                }
                let (count, epoch) = (s.count, s.epoch);
                let ops: Vec<Op> = std::mem::take(&mut s.pending)
                    .into_iter()
                    .map(|p| match p {
                        Pending::Send {
                            frame,
                            seq,
                            ids,
                            epoch: at,
                            ..
                        } => Op::Send {
                            to: if at == epoch && ids.len() == count && count > FEW {
                                To::All
                            } else {
                                To::Ids(ids.iter().map(|i| i.to_string()).collect())
                            },
                            frame,
                            seq,
                        },
                        Pending::Other(op) => op,
                    })
                    .collect();
                s.sent += 1;
                (encode(&ops), s.sent)
            };
            let call = Call::ShardOps {
                room: self.room.clone(),
                shard: self.shard,
            };
            let ok = match rooms::answered(&self.env, &call, Some(&body)).await {
                Ok(_) => true,
                Err(e) => {
                    log(LogEvent::InternalError
                        .line()
                        .str("error", &describe(&e))
                        .str("in", "shard-ops"));
                    false
                }
            };
            let mut s = self.state.borrow_mut();
            s.broken |= !ok;
            s.done = n;
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut s.waiters)
                .into_iter()
                .partition(|(t, _)| *t <= n);
            s.waiters = waiting;
            drop(s);
            for (_, tx) in ready {
                let _ = tx.send(());
            }
        }
    }
}
