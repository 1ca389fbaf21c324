//! The one ordered queue of frames to each socket. Every frame the room sends (live
//! notifications, rounds, presence, events, replies, replays) goes through [`Outbox`], so a
//! socket receives them in the order the room sent them.
//!
//! Small fan-outs to sockets with nothing queued are sent at once, before the publish is
//! answered. Large ones are queued and drained [`CHUNK`] sockets per macrotask, so the publish
//! response and the room's other events are not held behind thousands of socket writes. A frame
//! for a socket that already has frames queued joins its queue. When a socket's queue is drained,
//! a socket that accepts batches (`batch=1`) gets everything queued for it as one `batch` frame;
//! a socket with nothing queued always gets a frame alone, so batching adds no latency.
//!
//! Generic over the socket ([`Sink`]), so the ordering and batching rules are tested natively;
//! the room supplies the runtime's WebSocket and runs [`Outbox::drain_chunk`] on later macrotasks.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Fan-outs up to this many sockets are sent at once: the common rooms (a user's tabs, one
/// request) get their frames with no extra hop.
pub const SEND_NOW_MAX: usize = 256;
/// Sockets drained per macrotask.
pub const CHUNK: usize = 1024;

/// Something a frame can be sent to.
pub trait Sink: Clone {
    /// A frame, built once per fan-out.
    type Frame;
    /// Sends the frame; false when the socket refused it (it is closing: its close event will
    /// remove it).
    fn send(&self, frame: &Self::Frame) -> bool;
    /// One `batch` frame carrying `frames` in order.
    fn batch(frames: &[Rc<Self::Frame>]) -> Self::Frame;
    /// Whether a send costs so little here that it is never queued (a socket on another
    /// Durable Object: the send only adds to that object's next message).
    fn immediate(&self) -> bool {
        false
    }
}

/// How a fan-out may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Small ones at once, large ones through the queue (publishes, alarm rounds, presence).
    Paced,
    /// At once, after what is queued for each target (a reply, a greeting and its replay).
    Now,
}

/// A socket a fan-out is for.
pub struct Target<'a, S> {
    /// The connection's id: its queue's key.
    pub id: &'a str,
    pub socket: &'a S,
    /// Whether it accepts `batch` frames.
    pub batch: bool,
}

/// What a fan-out did.
#[derive(Debug)]
pub struct FanOut<S> {
    /// Sockets that refused a frame sent at once.
    pub dead: Vec<S>,
    /// The queue was idle and now holds frames: run [`Outbox::drain_chunk`] on a later
    /// macrotask until it says it is done.
    pub start_draining: bool,
}

struct Queue<S: Sink> {
    socket: S,
    batch: bool,
    frames: Vec<Rc<S::Frame>>,
}

/// A batch frame, and the frames it was built from.
type Built<S> = (Vec<Rc<<S as Sink>::Frame>>, <S as Sink>::Frame);

/// Frames waiting to go out, per socket; sockets drained in the order they started waiting.
pub struct Outbox<S: Sink> {
    queues: HashMap<Rc<str>, Queue<S>>,
    /// Ids of sockets with frames queued, each once, oldest first (an id whose queue was
    /// flushed or forgotten since is skipped).
    order: VecDeque<Rc<str>>,
    draining: bool,
}

impl<S: Sink> Default for Outbox<S> {
    fn default() -> Self {
        Outbox {
            queues: HashMap::new(),
            order: VecDeque::new(),
            draining: false,
        }
    }
}

impl<S: Sink> Outbox<S> {
    /// Sends `frame` to `targets` (see [`Pace`]).
    pub fn fan_out<'a>(
        &mut self,
        targets: Vec<Target<'a, S>>,
        frame: S::Frame,
        pace: Pace,
    ) -> FanOut<S>
    where
        S: 'a,
    {
        self.fan_out_many(targets, vec![frame], pace)
    }

    /// Sends `frames`, in order, to `targets`; to a socket that accepts batches, more than one
    /// frame (its queue included) goes as one `batch`.
    pub fn fan_out_many<'a>(
        &mut self,
        targets: Vec<Target<'a, S>>,
        frames: Vec<S::Frame>,
        pace: Pace,
    ) -> FanOut<S>
    where
        S: 'a,
    {
        let mut done = FanOut {
            dead: Vec::new(),
            start_draining: false,
        };
        if targets.is_empty() || frames.is_empty() {
            return done;
        }
        let frames: Vec<Rc<S::Frame>> = frames.into_iter().map(Rc::new).collect();
        let queue_all = pace == Pace::Paced && targets.len() > SEND_NOW_MAX;
        // Nothing queued anywhere (the usual case): no socket needs looking up.
        let any_queued = !self.queues.is_empty();
        for t in targets {
            let queued = if any_queued {
                self.queues.get_mut(t.id)
            } else {
                None
            };
            let queue_this = queue_all && !t.socket.immediate();
            match (pace, queue_this, queued) {
                // Nothing waits for it: at once.
                (_, false, None) => {
                    if !send_all(t.socket, t.batch, &frames) {
                        done.dead.push(t.socket.clone());
                    }
                }
                // Its queue first, then these, in one go.
                (Pace::Now, _, Some(_)) => {
                    let q = self.queues.remove(t.id).expect("just seen");
                    let mut all = q.frames;
                    all.extend(frames.iter().cloned());
                    if !send_all(t.socket, t.batch, &all) {
                        done.dead.push(t.socket.clone());
                    }
                }
                // Behind what it has queued.
                (Pace::Paced, _, Some(q)) => q.frames.extend(frames.iter().cloned()),
                // A large fan-out: queued for the drain.
                (_, true, None) => {
                    // One copy of the id, shared by the map and the order.
                    let id: Rc<str> = Rc::from(t.id);
                    self.queues.insert(
                        Rc::clone(&id),
                        Queue {
                            socket: t.socket.clone(),
                            batch: t.batch,
                            frames: frames.clone(),
                        },
                    );
                    self.order.push_back(id);
                }
            }
        }
        if !self.queues.is_empty() && !self.draining {
            self.draining = true;
            done.start_draining = true;
        }
        done
    }

    /// Drops what is queued for a connection that is gone.
    pub fn forget(&mut self, id: &str) {
        self.queues.remove(id);
    }

    /// The drain task's step: empties the queues of the next [`CHUNK`] sockets; true while
    /// more is left (run it again on a later macrotask). A socket that closed in the meantime
    /// refuses its frames, which is fine: its close event removes it.
    pub fn drain_chunk(&mut self) -> bool {
        let mut budget = CHUNK;
        // Sockets queued by the same fan-outs wait for the same frames: their batch is built
        // once and handed to each.
        let mut last: Option<Built<S>> = None;
        while budget > 0 {
            let Some(id) = self.order.pop_front() else {
                break;
            };
            let Some(q) = self.queues.remove(&id) else {
                continue;
            };
            budget -= 1;
            if !q.batch || q.frames.len() == 1 {
                send_all(&q.socket, false, &q.frames);
                continue;
            }
            let same = last.as_ref().is_some_and(|(frames, _)| {
                frames.len() == q.frames.len()
                    && frames.iter().zip(&q.frames).all(|(a, b)| Rc::ptr_eq(a, b))
            });
            if !same {
                last = Some((q.frames.clone(), S::batch(&q.frames)));
            }
            if let Some((_, batch)) = &last {
                q.socket.send(batch);
            }
        }
        let more = !self.order.is_empty();
        self.draining = more;
        if !more {
            // Every id in `order` was drained: nothing can be left queued.
            self.queues.clear();
        }
        more
    }

    /// How many frames are waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queues.values().map(|q| q.frames.len()).sum()
    }
}

/// Sends frames to one socket in order: as one batch when it accepts batches and there is
/// more than one. False if the socket refused.
fn send_all<S: Sink>(socket: &S, batch: bool, frames: &[Rc<S::Frame>]) -> bool {
    if batch && frames.len() > 1 {
        return socket.send(&S::batch(frames));
    }
    frames.iter().all(|f| socket.send(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A socket that records what it was sent into a shared log.
    #[derive(Clone, Debug, PartialEq)]
    struct Fake {
        id: String,
        open: bool,
        batch: bool,
        log: Log,
    }

    impl Sink for Fake {
        type Frame = String;
        fn send(&self, frame: &String) -> bool {
            if self.open {
                self.log.borrow_mut().push((self.id.clone(), frame.clone()));
            }
            self.open
        }
        fn batch(frames: &[Rc<String>]) -> String {
            let inner: Vec<&str> = frames.iter().map(|f| f.as_str()).collect();
            format!("[{}]", inner.join(","))
        }
    }

    type Log = Rc<RefCell<Vec<(String, String)>>>;

    fn sockets(n: usize, batch: bool) -> (Vec<Fake>, Log) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let socks = (0..n)
            .map(|i| Fake {
                id: format!("s{i}"),
                open: true,
                batch,
                log: Rc::clone(&log),
            })
            .collect();
        (socks, log)
    }

    fn targets(socks: &[Fake]) -> Vec<Target<'_, Fake>> {
        socks
            .iter()
            .map(|s| Target {
                id: &s.id,
                socket: s,
                batch: s.batch,
            })
            .collect()
    }

    /// The frames socket `i` received, in order.
    fn received(log: &Log, i: usize) -> Vec<String> {
        let id = format!("s{i}");
        log.borrow()
            .iter()
            .filter(|(s, _)| *s == id)
            .map(|(_, f)| f.clone())
            .collect()
    }

    fn drain(out: &mut Outbox<Fake>) {
        while out.drain_chunk() {}
    }

    #[test]
    fn small_fan_outs_go_at_once_and_report_closed_sockets() {
        let (mut socks, log) = sockets(3, false);
        socks[1].open = false;
        let mut out = Outbox::default();
        let done = out.fan_out(targets(&socks), "a".into(), Pace::Paced);
        assert_eq!(done.dead, vec![socks[1].clone()]);
        assert!(!done.start_draining);
        assert_eq!(log.borrow().len(), 2);
        assert_eq!(out.queued(), 0);
    }

    #[test]
    fn large_fan_outs_drain_in_chunks_and_later_frames_wait_their_turn() {
        let (socks, log) = sockets(CHUNK + SEND_NOW_MAX + 1, false);
        let mut out = Outbox::default();
        let big = out.fan_out(targets(&socks), "1".into(), Pace::Paced);
        assert!(big.start_draining && log.borrow().is_empty(), "queued");
        // A small fan-out to queued sockets must not overtake the big one.
        let small = out.fan_out(targets(&socks[..2]), "2".into(), Pace::Paced);
        assert!(!small.start_draining, "one drain task at a time");
        assert_eq!(out.queued(), socks.len() + 2);
        assert!(out.drain_chunk(), "more than one chunk");
        assert!(!out.drain_chunk(), "the rest fits the second chunk");
        assert_eq!(received(&log, 0), ["1", "2"]);
        assert_eq!(received(&log, socks.len() - 1), ["1"]);
        // Nobody to send to queues nothing.
        let none = out.fan_out(Vec::new(), "5".into(), Pace::Paced);
        assert!(!none.start_draining && none.dead.is_empty());
        // Idle again: a new large fan-out starts a new drain task.
        assert!(
            out.fan_out(targets(&socks), "3".into(), Pace::Paced)
                .start_draining
        );
    }

    #[test]
    fn a_socket_with_nothing_queued_gets_a_small_fan_out_at_once_even_while_others_wait() {
        let (socks, log) = sockets(SEND_NOW_MAX + 2, false);
        let mut out = Outbox::default();
        out.fan_out(targets(&socks[1..]), "big".into(), Pace::Paced);
        out.fan_out(targets(&socks[..1]), "alone".into(), Pace::Paced);
        assert_eq!(received(&log, 0), ["alone"], "s0 had nothing queued");
        assert!(received(&log, 1).is_empty());
    }

    #[test]
    fn a_reply_or_replay_goes_after_what_is_queued_for_that_socket_only() {
        let (socks, log) = sockets(SEND_NOW_MAX + 1, false);
        let mut out = Outbox::default();
        out.fan_out(targets(&socks), "live".into(), Pace::Paced);
        let now = out.fan_out_many(
            targets(&socks[..1]),
            vec!["replay1".into(), "synced".into()],
            Pace::Now,
        );
        assert!(now.dead.is_empty());
        assert_eq!(received(&log, 0), ["live", "replay1", "synced"]);
        assert!(received(&log, 1).is_empty(), "others stay queued");
        drain(&mut out);
        assert_eq!(
            received(&log, 0),
            ["live", "replay1", "synced"],
            "nothing twice"
        );
        assert_eq!(received(&log, 1), ["live"]);
    }

    #[test]
    fn queued_frames_go_as_one_batch_to_sockets_that_accept_batches() {
        let (socks, log) = sockets(SEND_NOW_MAX + 1, true);
        let (plain, plain_log) = sockets(SEND_NOW_MAX + 1, false);
        let mut out = Outbox::default();
        let mut plain_out = Outbox::default();
        for f in ["1", "2", "3"] {
            out.fan_out(targets(&socks), f.into(), Pace::Paced);
            plain_out.fan_out(targets(&plain), f.into(), Pace::Paced);
        }
        drain(&mut out);
        drain(&mut plain_out);
        for i in [0, SEND_NOW_MAX] {
            assert_eq!(received(&log, i), ["[1,2,3]"]);
            assert_eq!(
                received(&plain_log, i),
                ["1", "2", "3"],
                "never a batch without batch=1"
            );
        }
        // One frame queued alone is sent as itself, not as a batch of one.
        out.fan_out(targets(&socks), "4".into(), Pace::Paced);
        drain(&mut out);
        assert_eq!(received(&log, 0), ["[1,2,3]", "4"]);
    }

    #[test]
    fn a_replay_to_a_batching_socket_is_one_batch_and_a_single_frame_goes_alone() {
        let (socks, log) = sockets(1, true);
        let mut out = Outbox::default();
        out.fan_out(targets(&socks), "hello".into(), Pace::Now);
        out.fan_out_many(targets(&socks), vec!["a".into(), "b".into()], Pace::Now);
        assert_eq!(received(&log, 0), ["hello", "[a,b]"]);
    }

    #[test]
    fn a_forgotten_connection_gets_nothing_more_and_draining_ends() {
        let (socks, log) = sockets(SEND_NOW_MAX + 1, false);
        let mut out = Outbox::default();
        out.fan_out(targets(&socks), "x".into(), Pace::Paced);
        out.forget("s0");
        drain(&mut out);
        assert!(received(&log, 0).is_empty());
        assert_eq!(out.queued(), 0);
    }
}
