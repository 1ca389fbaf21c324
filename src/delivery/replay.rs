//! What a connection is sent before live notifications: the offline queue, a replay after
//! `since` (on connect, or in-band with `sync`), and the pending notifications a widened filter
//! newly matches; and what the alarm does with rounds that have ended.
//!
//! Each plan is a list of [`Action`]s in the order the connection must see them. The room
//! executes them (sends, SQL updates) in one synchronous step, so no publish can slip in between
//! and the seam between replay and live frames neither loses nor doubles a notification.

use super::entry::Entry;
use super::retry::{RetryPolicy, Step};
use super::status::DeliveryStatus;
use crate::protocol::TypeFilter;

/// One thing the room does for a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Send the entry to the connection the plan is for, and nobody else.
    Send { entry: &'a Entry, attempt: u32 },
    /// Start a redelivery round: every connection whose filter matches gets the entry at
    /// `attempt`; it counts as a round only if it reached someone.
    Round { entry: &'a Entry, attempt: u32 },
    /// All its rounds went unacked: mark it failed.
    Fail { entry: &'a Entry },
}

/// Whether the log still holds everything after `since`: every seq in `since+1..=last_seq` is
/// present (`present_after` counts the entries after `since` a replay found). False too when
/// `since` is beyond the room's last seq (the client saw another history, e.g. before the
/// room's storage was reset).
pub fn recovered(since: u64, last_seq: u64, present_after: usize) -> bool {
    since <= last_seq && present_after as u64 == last_seq - since
}

/// A pending entry for a connection that is new to it: a new round if its last one ended (or
/// none started), the current attempt to this connection alone mid-round, failed when spent.
fn pending_for<'a>(
    e: &'a Entry,
    filter: &TypeFilter,
    policy: RetryPolicy,
    now: i64,
    out: &mut Vec<Action<'a>>,
) {
    match policy.step(e.pending_state(), now) {
        Step::Round { attempt } => out.push(Action::Round { entry: e, attempt }),
        Step::InRound { attempt, .. } => {
            if filter.matches(&e.kind) {
                out.push(Action::Send { entry: e, attempt });
            }
        }
        Step::Fail => out.push(Action::Fail { entry: e }),
    }
}

/// A connection without `since`: the pending notifications (the offline queue), oldest first.
pub fn offline_queue<'a>(
    pending: &'a [Entry],
    filter: &TypeFilter,
    policy: RetryPolicy,
    now: i64,
) -> Vec<Action<'a>> {
    let mut out = Vec::new();
    for e in pending {
        pending_for(e, filter, policy, now, &mut out);
    }
    out
}

/// A connection resuming after `since` (on connect, or with a `sync` frame): first the pending
/// notifications at or before `since` that are due get what the alarm would give them now (a
/// round, or failure; a running round is left to the alarm); then every stored notification
/// after `since` in seq order, pending ones as in the offline queue. A pending one that fails
/// now is still sent first: like any stored notification after `since`, the client gets it.
pub fn since<'a>(
    since: u64,
    pending: &'a [Entry],
    after: &'a [Entry],
    filter: &TypeFilter,
    policy: RetryPolicy,
    now: i64,
) -> Vec<Action<'a>> {
    let mut out = Vec::new();
    for e in pending.iter().filter(|e| e.seq <= since) {
        match policy.step(e.pending_state(), now) {
            Step::Round { attempt } => out.push(Action::Round { entry: e, attempt }),
            Step::InRound { .. } => {}
            Step::Fail => out.push(Action::Fail { entry: e }),
        }
    }
    for e in after.iter().filter(|e| e.seq > since) {
        if e.status != DeliveryStatus::Pending {
            if filter.matches(&e.kind) {
                out.push(Action::Send {
                    entry: e,
                    attempt: e.replay_attempt(),
                });
            }
            continue;
        }
        if policy.step(e.pending_state(), now) == Step::Fail && filter.matches(&e.kind) {
            out.push(Action::Send {
                entry: e,
                attempt: e.replay_attempt(),
            });
        }
        pending_for(e, filter, policy, now, &mut out);
    }
    out
}

/// A filter widened from `before` to `after`: the pending notifications it newly matches, as
/// the offline queue would give them to a new connection with that filter.
pub fn widened<'a>(
    pending: &'a [Entry],
    before: &TypeFilter,
    after: &TypeFilter,
    policy: RetryPolicy,
    now: i64,
) -> Vec<Action<'a>> {
    let mut out = Vec::new();
    for e in pending {
        if after.matches(&e.kind) && !before.matches(&e.kind) {
            pending_for(e, after, policy, now, &mut out);
        }
    }
    out
}

/// The alarm: pending notifications whose round has ended get the next round, or fail.
pub fn due_rounds(due: &[Entry], policy: RetryPolicy, now: i64) -> Vec<Action<'_>> {
    due.iter()
        .filter_map(|e| match policy.step(e.pending_state(), now) {
            Step::Round { attempt } => Some(Action::Round { entry: e, attempt }),
            Step::InRound { .. } => None,
            Step::Fail => Some(Action::Fail { entry: e }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::entry::entry;
    use DeliveryStatus::*;

    const P: RetryPolicy = RetryPolicy {
        interval_ms: 1000,
        max_attempts: 3,
    };

    fn all() -> TypeFilter {
        TypeFilter::default()
    }

    fn notes() -> TypeFilter {
        TypeFilter::from_query("note.*").unwrap()
    }

    /// Actions as short strings: `send 3@1`, `round 4@2`, `fail 5`.
    fn show(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Send { entry, attempt } => format!("send {}@{attempt}", entry.seq),
                Action::Round { entry, attempt } => format!("round {}@{attempt}", entry.seq),
                Action::Fail { entry } => format!("fail {}", entry.seq),
            })
            .collect()
    }

    fn mid_round(seq: u64, attempts: u32, at: i64) -> Entry {
        Entry {
            last_attempt_at: Some(at),
            ..entry(seq, "note.x", Pending, attempts)
        }
    }

    #[test]
    fn recovery_needs_every_seq_after_since() {
        assert!(recovered(5, 10, 5));
        assert!(recovered(10, 10, 0));
        assert!(!recovered(5, 10, 4), "one of 6..=10 is gone");
        assert!(!recovered(11, 10, 0), "a seq this room never had");
        assert!(recovered(0, 0, 0));
    }

    #[test]
    fn the_offline_queue_starts_rounds_joins_running_ones_and_fails_spent_ones() {
        let pending = [
            entry(1, "note.x", Pending, 0), // queued, nobody got it yet
            mid_round(2, 1, 500),           // round 1 running until 1500
            mid_round(3, 3, 0),             // last round ended unacked
            mid_round(4, 1, 0),             // round 1 ended: round 2 is due
            Entry {
                last_attempt_at: Some(900),
                ..entry(5, "task.x", Pending, 2)
            },
        ];
        let plan = offline_queue(&pending, &all(), P, 1000);
        assert_eq!(
            show(&plan),
            ["round 1@1", "send 2@1", "fail 3", "round 4@2", "send 5@2"]
        );
        let plan = offline_queue(&pending, &notes(), P, 1000);
        assert_eq!(
            show(&plan),
            ["round 1@1", "send 2@1", "fail 3", "round 4@2"],
            "a running round is sent only where the filter matches; rounds match per socket"
        );
    }

    #[test]
    fn since_replays_in_seq_order_across_settled_and_pending() {
        let pending = [mid_round(2, 2, 0), mid_round(4, 1, 800), mid_round(6, 3, 0)];
        let after = [
            entry(3, "note.a", Sent, 1),
            pending[1].clone(),
            entry(5, "task.b", Acked, 2),
            pending[2].clone(),
            entry(7, "note.c", Sent, 0),
        ];
        let plan = since(2, &pending, &after, &all(), P, 1000);
        assert_eq!(
            show(&plan),
            [
                "round 2@3", // at or before since and due: the alarm's round, now
                "send 3@1",
                "send 4@1", // mid-round: the current attempt
                "send 5@2",
                "send 6@3", // spent: still replayed once, then failed
                "fail 6",
                "send 7@1", // nobody got it live: replayed as attempt 1
            ]
        );
        let plan = since(2, &pending, &after, &notes(), P, 1000);
        assert_eq!(
            show(&plan),
            [
                "round 2@3",
                "send 3@1",
                "send 4@1",
                "send 6@3",
                "fail 6",
                "send 7@1"
            ],
            "the filter drops task.b"
        );
    }

    #[test]
    fn since_leaves_running_rounds_at_or_before_it_to_the_alarm() {
        let pending = [mid_round(1, 1, 900), mid_round(2, 3, 0)];
        let plan = since(5, &pending, &[], &all(), P, 1000);
        assert_eq!(show(&plan), ["fail 2"]);
    }

    #[test]
    fn widening_a_filter_delivers_only_what_it_newly_matches() {
        let pending = [
            mid_round(1, 1, 900),
            Entry {
                last_attempt_at: Some(900),
                ..entry(2, "task.x", Pending, 1)
            },
            entry(3, "task.y", Pending, 0),
        ];
        let wider = TypeFilter::from_query("note.*,task.*").unwrap();
        let plan = widened(&pending, &notes(), &wider, P, 1000);
        assert_eq!(show(&plan), ["send 2@1", "round 3@1"]);
        assert!(widened(&pending, &wider, &notes(), P, 1000).is_empty());
    }

    #[test]
    fn the_alarm_rounds_what_is_due() {
        let due = [mid_round(1, 1, 0), mid_round(2, 3, 0), mid_round(3, 1, 900)];
        assert_eq!(
            show(&due_rounds(&due, P, 1000)),
            ["round 1@2", "fail 2"],
            "a round still running is not the alarm's"
        );
    }
}
