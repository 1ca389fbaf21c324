//! A connection's socket as the coordinator sees it: one it holds, or one a shard holds.

use super::link::Link;
use crate::glue::socket::{Frame, Socket};
use crate::outbox::Sink;
use std::fmt;
use std::rc::Rc;

#[derive(Clone)]
pub(in crate::glue::room) enum Peer {
    /// A socket of this Durable Object.
    Local(Socket),
    /// Connection `id` on shard `link.shard` (shared: a fan-out names it without a copy).
    Remote { id: Rc<str>, link: Rc<Link> },
}

impl Peer {
    pub fn local(&self) -> Option<&Socket> {
        match self {
            Peer::Local(s) => Some(s),
            Peer::Remote { .. } => None,
        }
    }

    /// The shard holding it (0: this Durable Object).
    pub fn shard(&self) -> u32 {
        match self {
            Peer::Local(_) => 0,
            Peer::Remote { link, .. } => link.shard,
        }
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Local(_) => f.write_str("Local"),
            Peer::Remote { id, link } => write!(f, "Remote({}#{id})", link.shard),
        }
    }
}

impl Sink for Peer {
    type Frame = Frame;

    fn send(&self, frame: &Frame) -> bool {
        match self {
            Peer::Local(s) => s.send(frame),
            Peer::Remote { id, link } => {
                link.send(id, frame);
                true
            }
        }
    }

    fn batch(frames: &[Rc<Frame>]) -> Frame {
        Socket::batch(frames)
    }

    fn immediate(&self) -> bool {
        matches!(self, Peer::Remote { .. })
    }
}
