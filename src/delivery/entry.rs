//! One stored notification, as the log hands it to the delivery rules.

use super::retry::PendingState;
use super::status::DeliveryStatus;

/// A notification in the room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub id: String,
    /// The notification `type`.
    pub kind: String,
    /// The stored frame without `attempt` (a complete JSON object).
    pub payload: String,
    /// Rounds sent so far (for a notification without `requiresAck`: 1 if anyone got it live).
    pub attempts: u32,
    /// When it was stored (ms).
    pub created_at: i64,
    /// When it was last sent to a socket (ms).
    pub last_attempt_at: Option<i64>,
    pub acked_at: Option<i64>,
    /// The `sub` of the token that acked it.
    pub acked_by: Option<String>,
    pub status: DeliveryStatus,
}

impl Entry {
    /// Where a pending notification stands in its rounds.
    pub fn pending_state(&self) -> PendingState {
        PendingState {
            attempts: self.attempts,
            last_attempt_at: self.last_attempt_at,
        }
    }

    /// The attempt number a replay presents a settled notification with: its rounds, at least 1.
    pub fn replay_attempt(&self) -> u32 {
        self.attempts.max(1)
    }
}

#[cfg(test)]
pub(crate) fn entry(seq: u64, kind: &str, status: DeliveryStatus, attempts: u32) -> Entry {
    Entry {
        seq,
        id: format!("n{seq}"),
        kind: kind.into(),
        payload: format!("{{\"id\":\"n{seq}\",\"seq\":{seq}}}"),
        attempts,
        created_at: 0,
        last_attempt_at: (attempts > 0).then_some(0),
        acked_at: None,
        acked_by: None,
        status,
    }
}
