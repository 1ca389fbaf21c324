//! Delivery rules (SPEC, "Delivery"): when a `requiresAck` notification is sent again, when it
//! fails, what a (re)connecting client is replayed, and what the log may prune.
//!
//! A *round* is one send of a pending notification to every connection whose filter matches.
//! `attempts` counts rounds; a round with nobody to send to is not a round, so a notification
//! published while nobody listens waits (the offline queue) and its attempts count from the
//! first connection.

/// A notification's delivery status, as history reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// No ack needed; sent to whoever was connected.
    Sent,
    /// Waiting for an ack.
    Pending,
    /// Acked by some connection of the room.
    Acked,
    /// `ACK_MAX_ATTEMPTS` rounds went unacked.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Acked => "acked",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "sent" => DeliveryStatus::Sent,
            "pending" => DeliveryStatus::Pending,
            "acked" => DeliveryStatus::Acked,
            "failed" => DeliveryStatus::Failed,
            _ => return None,
        })
    }
}

/// Where a pending notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingState {
    /// Rounds so far.
    pub attempts: u32,
    /// When the last round went out (ms), if any did.
    pub last_attempt_at: Option<i64>,
}

/// What to do with a pending notification now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start round `attempt` (send to everyone matching, record the attempt).
    Round { attempt: u32 },
    /// The current round is still running: a newcomer gets it at this attempt number, nobody
    /// else gets anything.
    InRound { attempt: u32, due_at: i64 },
    /// All rounds went unacked: mark it failed.
    Fail,
}

/// The retry policy from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub interval_ms: i64,
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The step for a pending notification at `now`.
    pub fn step(&self, p: PendingState, now: i64) -> Step {
        match p.last_attempt_at {
            Some(last) if p.attempts > 0 && now < last + self.interval_ms => Step::InRound {
                attempt: p.attempts,
                due_at: last + self.interval_ms,
            },
            _ if p.attempts >= self.max_attempts => Step::Fail,
            _ => Step::Round {
                attempt: p.attempts + 1,
            },
        }
    }
}

/// What a new connection is sent before live notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// No `since`: the pending notifications (the offline queue).
    PendingOnly,
    /// `since`: every stored notification after this seq; pending ones at or before it are
    /// left to the retry alarm.
    After(u64),
}

/// Whether the log still holds everything after `since`: it does unless something after
/// `since` was pruned, or `since` is beyond the room's last seq (the client saw another
/// history, e.g. before the room's storage was reset).
pub fn recovered(since: u64, last_seq: u64, pruned_through: u64) -> bool {
    since <= last_seq && since >= pruned_through
}

/// Retention from the settings: prune rows that are not pending and are either beyond the
/// newest `limit` or older than `ttl_ms`. Pending rows wait for their own end (acked or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub limit: u64,
    pub ttl_ms: i64,
}

impl Retention {
    /// `(seq_cutoff, created_cutoff)`: prune non-pending rows with `seq <= seq_cutoff` or
    /// `created_at < created_cutoff`.
    pub fn cutoffs(&self, last_seq: u64, now: i64) -> (u64, i64) {
        (last_seq.saturating_sub(self.limit), now - self.ttl_ms)
    }
}

/// Longest time between two full sweeps of a busy room's log.
pub const SWEEP_INTERVAL_MS: i64 = 60_000;

/// What pruning a publish should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// Nothing new fell out of the newest `limit`.
    Nothing,
    /// Prune non-pending rows with `after < seq <= through`: what the publish pushed out of the
    /// newest `limit`. Cost is independent of history size and of how many acks are pending.
    Range { after: u64, through: u64 },
    /// Sweep the whole log: the count cutoff, the TTL, and pending notifications older than the
    /// TTL (their own expiry: nobody connected to receive them for that long), which become
    /// `failed` and are then pruned like any other.
    Sweep {
        seq_cutoff: u64,
        created_cutoff: i64,
    },
}

/// Keeps per-publish pruning cheap: a full sweep at most every [`SWEEP_INTERVAL_MS`] (or TTL,
/// if shorter), and in between only the rows a publish pushed out of the newest `limit`.
/// Rows that stop being pending below the floor wait for the next sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruner {
    floor: u64,
    swept_at: Option<i64>,
}

impl Pruner {
    /// Makes the next plan a full sweep (the alarm sweeps whenever it runs).
    pub fn sweep_next(&mut self) {
        self.swept_at = None;
    }

    pub fn plan(&mut self, r: Retention, last_seq: u64, now: i64) -> Prune {
        let (seq_cutoff, created_cutoff) = r.cutoffs(last_seq, now);
        let sweep_due = self
            .swept_at
            .is_none_or(|t| now - t >= SWEEP_INTERVAL_MS.min(r.ttl_ms));
        let floor = self.floor;
        self.floor = floor.max(seq_cutoff);
        if sweep_due {
            self.swept_at = Some(now);
            Prune::Sweep {
                seq_cutoff,
                created_cutoff,
            }
        } else if seq_cutoff > floor {
            Prune::Range {
                after: floor,
                through: seq_cutoff,
            }
        } else {
            Prune::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RetryPolicy = RetryPolicy {
        interval_ms: 1000,
        max_attempts: 3,
    };

    fn st(attempts: u32, last: Option<i64>) -> PendingState {
        PendingState {
            attempts,
            last_attempt_at: last,
        }
    }

    #[test]
    fn a_queued_notification_starts_round_one() {
        assert_eq!(P.step(st(0, None), 50), Step::Round { attempt: 1 });
    }

    #[test]
    fn rounds_follow_the_interval_then_fail() {
        assert_eq!(
            P.step(st(1, Some(0)), 999),
            Step::InRound {
                attempt: 1,
                due_at: 1000
            }
        );
        assert_eq!(P.step(st(1, Some(0)), 1000), Step::Round { attempt: 2 });
        assert_eq!(P.step(st(2, Some(1000)), 2000), Step::Round { attempt: 3 });
        assert_eq!(
            P.step(st(3, Some(2000)), 2500),
            Step::InRound {
                attempt: 3,
                due_at: 3000
            }
        );
        assert_eq!(P.step(st(3, Some(2000)), 3000), Step::Fail);
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let once = RetryPolicy {
            interval_ms: 10,
            max_attempts: 1,
        };
        assert_eq!(once.step(st(0, None), 0), Step::Round { attempt: 1 });
        assert_eq!(once.step(st(1, Some(0)), 10), Step::Fail);
    }

    #[test]
    fn recovery_needs_an_unbroken_log() {
        assert!(recovered(5, 10, 0));
        assert!(recovered(10, 10, 3));
        assert!(recovered(3, 10, 3), "everything after 3 is there");
        assert!(!recovered(2, 10, 3), "seq 3 was pruned");
        assert!(!recovered(11, 10, 0), "a seq this room never had");
    }

    #[test]
    fn retention_cutoffs() {
        let r = Retention {
            limit: 100,
            ttl_ms: 1000,
        };
        assert_eq!(r.cutoffs(50, 5000), (0, 4000));
        assert_eq!(r.cutoffs(150, 5000), (50, 4000));
    }

    #[test]
    fn pruning_sweeps_rarely_and_ranges_in_between() {
        let r = Retention {
            limit: 10,
            ttl_ms: 3_600_000,
        };
        let mut p = Pruner::default();
        assert_eq!(
            p.plan(r, 5, 0),
            Prune::Sweep {
                seq_cutoff: 0,
                created_cutoff: -3_600_000
            },
            "the first publish after a wake sweeps"
        );
        assert_eq!(p.plan(r, 10, 1), Prune::Nothing);
        assert_eq!(
            p.plan(r, 11, 2),
            Prune::Range {
                after: 0,
                through: 1
            }
        );
        assert_eq!(
            p.plan(r, 12, 3),
            Prune::Range {
                after: 1,
                through: 2
            }
        );
        assert_eq!(p.plan(r, 12, 4), Prune::Nothing);
        assert!(matches!(
            p.plan(r, 13, SWEEP_INTERVAL_MS + 3),
            Prune::Sweep { seq_cutoff: 3, .. }
        ));
        assert_eq!(
            p.plan(r, 14, SWEEP_INTERVAL_MS + 4),
            Prune::Range {
                after: 3,
                through: 4
            }
        );
        let short = Retention {
            limit: 10,
            ttl_ms: 1000,
        };
        let mut p = Pruner::default();
        p.plan(short, 1, 0);
        assert_eq!(p.plan(short, 2, 999), Prune::Nothing);
        assert!(
            matches!(p.plan(short, 3, 1000), Prune::Sweep { .. }),
            "TTL shorter than the interval"
        );
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            DeliveryStatus::Sent,
            DeliveryStatus::Pending,
            DeliveryStatus::Acked,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("x"), None);
    }
}
