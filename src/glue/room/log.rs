//! The room's log side: the seq, idempotency keys, the append, acks, redelivery rounds,
//! retention and history, over the SQLite log ([`RoomLog`]). The rules are plain
//! ([`crate::delivery`]); this type holds the awake state they need (the last seq, the pruner)
//! and carries out their decisions on storage.

use super::js_error;
use crate::codes::LogEvent;
use crate::config::Settings;
use crate::delivery::{replay, Entry, Pruner, Retention, RetryPolicy};
use crate::glue::env::log;
use crate::glue::storage::{Counts, NewEntry, PublishRecord, RoomLog, RowStats};
use std::rc::Rc;
use worker::Result;

pub(super) struct Log {
    /// The room's id, as the Worker named it (kept in storage: alarms carry none).
    pub id: String,
    settings: Rc<Settings>,
    store: RoomLog,
    /// The seq of the newest publish.
    pub last_seq: u64,
    pruner: Pruner,
}

/// What a replay after `since` (or of the offline queue) reads from the log, in one go.
pub(super) struct ReplaySource {
    /// Every pending `requiresAck` notification.
    pub pending: Vec<Entry>,
    /// Every stored notification after `since` (none without `since`).
    pub after: Vec<Entry>,
    /// Whether the log still reaches back to `since` (`None` without `since`).
    pub recovered: Option<bool>,
}

impl Log {
    pub fn open(storage: &worker::Storage, settings: Rc<Settings>) -> Result<Log> {
        let store = RoomLog::open(storage).map_err(js_error)?;
        let last_seq = store.last_seq().map_err(js_error)?;
        let id = store.room_id().map_err(js_error)?.unwrap_or_default();
        Ok(Log {
            id,
            settings,
            store,
            last_seq,
            pruner: Pruner::default(),
        })
    }

    /// How many shards the room has spread over (0: it never spread).
    pub fn shard_count(&self) -> Result<u32> {
        self.store.shard_count().map_err(js_error)
    }

    pub fn set_shard_count(&self, n: u32) -> Result<()> {
        self.store.set_shard_count(n).map_err(js_error)
    }

    pub fn set_id(&mut self, id: &str) -> Result<()> {
        self.store.set_room_id(id).map_err(js_error)?;
        self.id = id.to_owned();
        Ok(())
    }

    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            interval_ms: self.settings.ack_retry_interval_ms as i64,
            max_attempts: self.settings.ack_max_attempts,
        }
    }

    fn retention(&self) -> Retention {
        Retention {
            limit: self.settings.history_limit.into(),
            ttl_ms: self.settings.history_ttl_seconds as i64 * 1000,
        }
    }

    /// Non-pending notifications at or below this seq are out of the history.
    pub fn cutoff(&self) -> u64 {
        self.retention().cutoff(self.last_seq)
    }

    /// The first publish with this idempotency key, if it is still kept.
    pub fn duplicate(&self, key: &str) -> Result<Option<PublishRecord>> {
        self.store.find_by_key(key, self.cutoff()).map_err(js_error)
    }

    /// Appends the next seq; false (and nothing written) when its id is already taken.
    pub fn append(&mut self, entry: &NewEntry<'_>) -> Result<bool> {
        let appended = self.store.append(entry, self.cutoff()).map_err(js_error)?;
        if appended {
            self.last_seq = entry.seq;
        }
        Ok(appended)
    }

    /// Reads what a replay needs: the pending notifications, and with `since` everything after
    /// it and whether that is all of it.
    pub fn replay_source(&self, since: Option<u64>) -> Result<ReplaySource> {
        let pending = self.store.pending().map_err(js_error)?;
        let after = match since {
            Some(s) => self
                .store
                .after(s, u32::MAX, self.cutoff())
                .map_err(js_error)?,
            None => Vec::new(),
        };
        let recovered = since.map(|s| replay::recovered(s, self.last_seq, after.len()));
        Ok(ReplaySource {
            pending,
            after,
            recovered,
        })
    }

    pub fn pending(&self) -> Result<Vec<Entry>> {
        self.store.pending().map_err(js_error)
    }

    /// Pending notifications whose round has ended by `now`.
    pub fn due(&self, now: i64) -> Result<Vec<Entry>> {
        self.store
            .due(now, self.policy().interval_ms)
            .map_err(js_error)
    }

    /// When the next running round ends.
    pub fn next_round_due(&self, now: i64) -> Result<Option<i64>> {
        self.store
            .next_round_due(now, self.policy().interval_ms)
            .map_err(js_error)
    }

    /// Acks by `sub`; how many were pending.
    pub fn ack(&self, ids: &[String], sub: &str, now: i64) -> Result<u64> {
        self.store.ack(ids, sub, now).map_err(js_error)
    }

    /// Records what a plan did: the rounds it started, the notifications it failed, the frames
    /// it sent.
    pub fn record(&self, rounds: &[u64], failed: &[u64], sent: u64, now: i64) -> Result<()> {
        self.store.record_round(rounds, now).map_err(js_error)?;
        self.store.fail(failed).map_err(js_error)?;
        self.store.add_deliveries(sent).map_err(js_error)
    }

    /// History after `since`: at most `limit` rows, and whether there are more.
    pub fn history(&self, since: u64, limit: u32) -> Result<(Vec<Entry>, bool)> {
        let mut rows = self
            .store
            .after(since, limit.saturating_add(1), self.cutoff())
            .map_err(js_error)?;
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        Ok((rows, has_more))
    }

    pub fn counts(&self) -> Result<Counts> {
        self.store.counts(self.cutoff()).map_err(js_error)
    }

    pub fn row_stats(&self) -> RowStats {
        self.store.row_stats()
    }

    /// Deletes what the retention says is due; logs pending notifications that expired.
    pub fn prune(&mut self, now: i64) -> Result<()> {
        let plan = self.pruner.plan(self.retention(), self.last_seq, now);
        let expired = self.store.prune(plan, self.last_seq)?;
        if expired > 0 {
            log(LogEvent::Expired
                .line()
                .str("room", &self.id)
                .num("pending", expired));
        }
        Ok(())
    }

    /// The alarm's sweep: the next prune looks further back.
    pub fn sweep_next(&mut self) {
        self.pruner.sweep_next();
    }
}
