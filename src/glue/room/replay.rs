//! Carrying out delivery plans ([`crate::delivery::replay`]): the one replay path that serves a
//! connect with `since` (or the offline queue) and an in-band `sync`, the pending notifications
//! a widened filter newly matches, and the alarm's redelivery rounds.

use super::Room;
use crate::codes::LogEvent;
use crate::delivery::{replay, Action};
use crate::glue::env::log;
use crate::notification::render_frame;
use crate::outbox::Pace;
use crate::protocol::TypeFilter;
use worker::Result;

/// What a replay to one connection did.
pub(super) struct Replayed {
    /// Notifications sent to it (or to the room, for a round the replay started).
    pub count: usize,
    /// Whether a redelivery round started (the alarm must run within one interval).
    pub round_started: bool,
}

impl Room {
    /// Replays to connection `id` what a connection with `filter` must get before live frames: with
    /// `since`, every stored notification after it; without, the offline queue. `before` runs
    /// first, with whether the log reached back to `since`, and returns the frame that
    /// precedes the replay (`connected`), if any. All in one synchronous step, so no publish
    /// slips in between and the seam with live frames neither loses nor doubles a notification.
    pub(super) fn replay_to(
        &mut self,
        id: &str,
        since: Option<u64>,
        filter: &TypeFilter,
        now: i64,
        before: impl FnOnce(&mut Room, Option<bool>),
    ) -> Result<Replayed> {
        let source = self.log.replay_source(since)?;
        before(self, source.recovered);
        let policy = self.log.policy();
        let plan = match since {
            None => replay::offline_queue(&source.pending, filter, policy, now),
            Some(s) => replay::since(s, &source.pending, &source.after, filter, policy, now),
        };
        let count = plan
            .iter()
            .filter(|a| !matches!(a, Action::Fail { .. }))
            .count();
        let round_started = self.execute(Some(id), &plan, now, Pace::Now)?;
        Ok(Replayed {
            count,
            round_started,
        })
    }

    /// Carries out a delivery plan for `me` (the connection it is for, if any): sends, rounds,
    /// failures, then records the rounds, the failures and the frames sent. Returns whether a
    /// round started (the alarm must then run within one interval). The frames for `me` go
    /// out together (one `batch` if it accepts them), before any round that follows them.
    pub(super) fn execute(
        &mut self,
        me: Option<&str>,
        plan: &[Action],
        now: i64,
        pace: Pace,
    ) -> Result<bool> {
        let (mut rounds, mut failed, mut sent) = (Vec::new(), Vec::new(), 0u64);
        let mut mine: Vec<String> = Vec::new();
        let flush = |room: &mut Room, mine: &mut Vec<String>| {
            if let (Some(id), false) = (me, mine.is_empty()) {
                room.sockets.send_many(id, std::mem::take(mine));
            }
        };
        for action in plan {
            match *action {
                Action::Send { entry, attempt } => {
                    if me.is_some() {
                        mine.push(render_frame(&entry.payload, attempt));
                        sent += 1;
                    }
                }
                Action::Round { entry, attempt } => {
                    flush(self, &mut mine);
                    let frame = render_frame(&entry.payload, attempt);
                    let n = self
                        .sockets
                        .deliver(frame, pace, |c| c.filter.matches(&entry.kind));
                    if n > 0 {
                        sent += u64::from(n);
                        rounds.push(entry.seq);
                        log(LogEvent::Retry
                            .line()
                            .str("room", &self.log.id)
                            .str("id", &entry.id)
                            .num("seq", entry.seq)
                            .num("attempt", attempt));
                    }
                }
                Action::Fail { entry } => {
                    failed.push(entry.seq);
                    log(LogEvent::Failed
                        .line()
                        .str("room", &self.log.id)
                        .str("id", &entry.id)
                        .num("seq", entry.seq)
                        .num("attempts", entry.attempts));
                }
            }
        }
        flush(self, &mut mine);
        self.log.record(&rounds, &failed, sent, now)?;
        Ok(!rounds.is_empty())
    }
}
