//! Redelivery of `requiresAck` notifications: when a round goes out, when it fails.
//!
//! A *round* is one send of a pending notification to every connection whose filter matches.
//! `attempts` counts rounds; a round with nobody to send to is not a round, so a notification
//! published while nobody listens waits (the offline queue) and its attempts count from the
//! first connection.

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
}
