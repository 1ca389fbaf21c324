//! Fan-out pacing: small fan-outs are sent at once, before the publish is answered; large ones
//! are queued and sent [`CHUNK`] sockets per macrotask, so the publish response and the room's
//! other events are not held behind thousands of socket writes. While anything is queued,
//! every fan-out joins the queue, so each socket still receives frames in seq (and round) order.
//!
//! Generic over the socket ([`Sink`]), so the ordering rules are tested natively; the room
//! supplies the runtime's WebSocket and runs [`Outbox::drain_chunk`] on later macrotasks.

use std::collections::VecDeque;

/// Fan-outs up to this many sockets are sent at once: the common rooms (a user's tabs, one
/// request) get their frames with no extra hop.
pub const SEND_NOW_MAX: usize = 256;
/// Sockets sent to per macrotask when draining the queue.
pub const CHUNK: usize = 1024;

/// Something a frame can be sent to.
pub trait Sink {
    /// A frame, built once per fan-out.
    type Frame;
    /// Sends the frame; false when the socket refused it (it is closing: its close event will
    /// remove it).
    fn send(&self, frame: &Self::Frame) -> bool;
}

/// How a fan-out may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Small ones at once, large ones through the queue (publishes, alarm rounds).
    Paced,
    /// Everything at once, after what is queued (a connection's greeting: its replay must stay
    /// in seq order with anything queued before it and with any round the greeting starts).
    Now,
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

struct Batch<S: Sink> {
    frame: S::Frame,
    targets: Vec<S>,
    next: usize,
}

/// Frames of large fan-outs waiting to go out, oldest first.
pub struct Outbox<S: Sink> {
    batches: VecDeque<Batch<S>>,
    draining: bool,
}

impl<S: Sink> Default for Outbox<S> {
    fn default() -> Self {
        Outbox {
            batches: VecDeque::new(),
            draining: false,
        }
    }
}

impl<S: Sink + Clone> Outbox<S> {
    /// Sends `frame` to `targets` (see [`Pace`]). Sockets are copied only when queued.
    pub fn fan_out(&mut self, targets: Vec<&S>, frame: S::Frame, pace: Pace) -> FanOut<S> {
        if targets.is_empty() {
            return FanOut {
                dead: Vec::new(),
                start_draining: false,
            };
        }
        if pace == Pace::Now {
            self.drain(usize::MAX);
        }
        if self.batches.is_empty() && (pace == Pace::Now || targets.len() <= SEND_NOW_MAX) {
            let dead = targets
                .into_iter()
                .filter(|t| !t.send(&frame))
                .cloned()
                .collect();
            return FanOut {
                dead,
                start_draining: false,
            };
        }
        self.batches.push_back(Batch {
            frame,
            targets: targets.into_iter().cloned().collect(),
            next: 0,
        });
        let start_draining = !self.draining;
        self.draining = true;
        FanOut {
            dead: Vec::new(),
            start_draining,
        }
    }
}

impl<S: Sink> Outbox<S> {
    /// Sends up to `budget` queued frames; true when nothing is left. A socket that closed in
    /// the meantime refuses its frame, which is fine: its close event removes it.
    fn drain(&mut self, mut budget: usize) -> bool {
        while let Some(batch) = self.batches.front_mut() {
            let end = batch.targets.len().min(batch.next.saturating_add(budget));
            for t in &batch.targets[batch.next..end] {
                t.send(&batch.frame);
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

    /// The drain task's step: sends the next [`CHUNK`]; true while more is left (run it again
    /// on a later macrotask).
    pub fn drain_chunk(&mut self) -> bool {
        let done = self.drain(CHUNK);
        self.draining = !done;
        !done
    }

    /// How many frames are waiting to be sent.
    pub fn queued(&self) -> usize {
        self.batches.iter().map(|b| b.targets.len() - b.next).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A socket that records what it was sent into a shared log.
    #[derive(Clone, Debug, PartialEq)]
    struct Fake {
        id: usize,
        open: bool,
        log: Log,
    }

    impl Sink for Fake {
        type Frame = &'static str;
        fn send(&self, frame: &&'static str) -> bool {
            if self.open {
                self.log.borrow_mut().push((self.id, frame));
            }
            self.open
        }
    }

    type Log = Rc<RefCell<Vec<(usize, &'static str)>>>;

    fn sockets(n: usize) -> (Vec<Fake>, Log) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let socks = (0..n)
            .map(|id| Fake {
                id,
                open: true,
                log: Rc::clone(&log),
            })
            .collect();
        (socks, log)
    }

    /// The frames socket `id` received, in order.
    fn received(log: &RefCell<Vec<(usize, &'static str)>>, id: usize) -> Vec<&'static str> {
        log.borrow()
            .iter()
            .filter(|(i, _)| *i == id)
            .map(|(_, f)| *f)
            .collect()
    }

    #[test]
    fn small_fan_outs_go_at_once_and_report_closed_sockets() {
        let (mut socks, log) = sockets(3);
        socks[1].open = false;
        let mut out = Outbox::default();
        let done = out.fan_out(socks.iter().collect(), "a", Pace::Paced);
        assert_eq!(done.dead, vec![socks[1].clone()]);
        assert!(!done.start_draining);
        assert_eq!(log.borrow().len(), 2);
        assert_eq!(out.queued(), 0);
    }

    #[test]
    fn large_fan_outs_drain_in_chunks_and_later_frames_wait_their_turn() {
        let (socks, log) = sockets(CHUNK + SEND_NOW_MAX + 1);
        let mut out = Outbox::default();
        let big = out.fan_out(socks.iter().collect(), "1", Pace::Paced);
        assert!(
            big.start_draining && log.borrow().is_empty(),
            "queued, nothing sent yet"
        );
        // A small fan-out to the same sockets while the big one is queued must not overtake it.
        let small = out.fan_out(socks[..2].iter().collect(), "2", Pace::Paced);
        assert!(!small.start_draining, "one drain task at a time");
        assert_eq!(out.queued(), socks.len() + 2);
        assert!(out.drain_chunk(), "more than one chunk");
        assert_eq!(log.borrow().len(), CHUNK);
        assert!(!out.drain_chunk(), "the rest fits the second chunk");
        assert_eq!(received(&log, 0), ["1", "2"]);
        assert_eq!(received(&log, socks.len() - 1), ["1"]);
        // Nobody to send to queues nothing, even behind a queue.
        out.fan_out(socks.iter().collect(), "4", Pace::Paced);
        let none = out.fan_out(Vec::new(), "5", Pace::Paced);
        assert!(!none.start_draining && none.dead.is_empty());
        assert_eq!(out.queued(), socks.len());
        while out.drain_chunk() {}
        // Idle again: a new large fan-out starts a new drain task.
        assert!(
            out.fan_out(socks.iter().collect(), "3", Pace::Paced)
                .start_draining
        );
    }

    #[test]
    fn a_greeting_flushes_the_queue_then_goes_at_once() {
        let (socks, log) = sockets(SEND_NOW_MAX + 1);
        let mut out = Outbox::default();
        out.fan_out(socks.iter().collect(), "queued", Pace::Paced);
        let now = out.fan_out(vec![&socks[0]], "hello", Pace::Now);
        assert!(!now.start_draining);
        assert_eq!(received(&log, 0), ["queued", "hello"]);
        assert_eq!(out.queued(), 0);
        assert!(
            !out.drain_chunk(),
            "the pending drain task finds nothing and stops"
        );
    }
}
