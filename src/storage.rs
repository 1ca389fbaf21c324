//! The room's durable log: every publish, with its delivery state, in the Durable Object's
//! SQLite storage (SPEC, "Delivery").
//!
//! SQLite calls in a Durable Object are synchronous, so a sequence of them with no `await` in
//! between is atomic with respect to every other event of the room: that is what makes `seq`
//! assignment and the replay/live seam exact.

use crate::delivery::DeliveryStatus;
use serde::Deserialize;
use worker::{Result, SqlStorage, SqlStorageValue as V};

/// Schema migrations, applied in order once each; `meta.schema_version` records how many ran.
/// Append new ones; never edit a released one.
const MIGRATIONS: &[&[&str]] = &[&[
    "CREATE TABLE notifications (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        requires_ack INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        last_attempt_at INTEGER,
        acked_at INTEGER,
        acked_by TEXT,
        delivery TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        broadcast_count INTEGER NOT NULL
    )",
    "CREATE INDEX notifications_pending ON notifications(seq) WHERE delivery = 'pending'",
    "CREATE INDEX notifications_created ON notifications(created_at)",
    // The log's high-water marks follow the rows themselves, so no code path can forget them:
    // seq is never reused even when every row is pruned, and `recovered` knows what is gone.
    "CREATE TRIGGER notifications_appended AFTER INSERT ON notifications BEGIN
        UPDATE meta SET value = CASE key
            WHEN 'last_seq' THEN MAX(value, NEW.seq)
            WHEN 'publishes' THEN value + 1
            ELSE NEW.created_at END
        WHERE key IN ('last_seq', 'publishes', 'last_broadcast_at');
    END",
    "CREATE TRIGGER notifications_pruned AFTER DELETE ON notifications BEGIN
        UPDATE meta SET value = MAX(value, OLD.seq) WHERE key = 'pruned_through';
    END",
    "INSERT INTO meta (key, value) VALUES ('last_seq', 0), ('pruned_through', 0), ('publishes', 0), ('last_broadcast_at', 0)",
], &[
    // 2: count frames delivered (live sends here; redeliveries and replays by add_deliveries).
    "INSERT INTO meta (key, value) VALUES ('deliveries', 0)",
    "DROP TRIGGER notifications_appended",
    "CREATE TRIGGER notifications_appended AFTER INSERT ON notifications BEGIN
        UPDATE meta SET value = CASE key
            WHEN 'last_seq' THEN MAX(value, NEW.seq)
            WHEN 'publishes' THEN value + 1
            WHEN 'deliveries' THEN value + NEW.broadcast_count
            ELSE NEW.created_at END
        WHERE key IN ('last_seq', 'publishes', 'last_broadcast_at', 'deliveries');
    END",
]];

/// One stored notification.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: String,
    pub attempts: u32,
    pub last_attempt_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub delivery: String,
}

impl Entry {
    pub fn status(&self) -> DeliveryStatus {
        DeliveryStatus::parse(&self.delivery).unwrap_or(DeliveryStatus::Sent)
    }
}

/// Counters of a room, for the keyed health response.
pub struct Stats {
    /// When the last publish was stored (ms; 0 if never).
    pub last_broadcast_at: i64,
    pub publishes: u64,
    /// Notification frames sent: live, redelivered and replayed.
    pub deliveries: u64,
}

/// The first result of a publish, returned again for a duplicate.
#[derive(Debug, Clone, Deserialize)]
pub struct PublishRecord {
    pub id: String,
    pub seq: u64,
    pub broadcast_count: u32,
}

/// A publish about to be appended.
pub struct NewEntry<'a> {
    pub seq: u64,
    pub id: &'a str,
    pub kind: &'a str,
    pub payload: &'a str,
    pub status: &'a str,
    pub requires_ack: bool,
    pub idempotency_key: Option<&'a str>,
    pub now: i64,
    /// Sockets it is being sent to now.
    pub broadcast_count: u32,
}

const ENTRY_COLUMNS: &str =
    "seq, id, type, payload, attempts, last_attempt_at, acked_at, acked_by, delivery";

/// The log of one room.
pub struct RoomLog {
    sql: SqlStorage,
}

#[derive(Deserialize)]
struct Value {
    value: Option<i64>,
}

#[derive(Deserialize)]
struct Count {
    n: i64,
}

impl RoomLog {
    /// Opens the log, creating or migrating the schema as needed.
    pub fn open(sql: SqlStorage) -> Result<RoomLog> {
        let log = RoomLog { sql };
        log.sql.exec(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
            None,
        )?;
        let version = log.meta("schema_version")? as usize;
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(version) {
            for statement in statements.iter() {
                log.sql.exec(statement, None)?;
            }
            log.sql.exec(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                vec![V::Integer(i as i64 + 1)],
            )?;
        }
        Ok(log)
    }

    fn meta(&self, key: &str) -> Result<u64> {
        let rows: Vec<Value> = self
            .sql
            .exec("SELECT value FROM meta WHERE key = ?", vec![key.into()])?
            .to_array()?;
        Ok(rows.first().and_then(|r| r.value).unwrap_or(0).max(0) as u64)
    }

    /// The room id recorded by the first request (alarms and socket events carry none).
    pub fn room_id(&self) -> Result<Option<String>> {
        #[derive(Deserialize)]
        struct Text {
            value: Option<String>,
        }
        let rows: Vec<Text> = self
            .sql
            .exec("SELECT value FROM meta WHERE key = 'room_id'", None)?
            .to_array()?;
        Ok(rows.into_iter().next().and_then(|r| r.value))
    }

    pub fn set_room_id(&self, id: &str) -> Result<()> {
        self.sql.exec(
            "INSERT INTO meta (key, value) VALUES ('room_id', ?)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![id.into()],
        )?;
        Ok(())
    }

    /// The highest seq ever assigned (0 for a new room).
    pub fn last_seq(&self) -> Result<u64> {
        self.meta("last_seq")
    }

    /// The highest seq ever pruned (0 if none).
    pub fn pruned_through(&self) -> Result<u64> {
        self.meta("pruned_through")
    }

    /// The room's counters since it was created.
    pub fn stats(&self) -> Result<Stats> {
        Ok(Stats {
            last_broadcast_at: self.meta("last_broadcast_at")? as i64,
            publishes: self.meta("publishes")?,
            deliveries: self.meta("deliveries")?,
        })
    }

    /// Counts frames sent outside a publish (redelivery rounds, replays, offline queue).
    pub fn add_deliveries(&self, n: u64) -> Result<()> {
        if n > 0 {
            self.sql.exec(
                "UPDATE meta SET value = value + ? WHERE key = 'deliveries'",
                vec![V::Integer(n as i64)],
            )?;
        }
        Ok(())
    }

    /// The earlier publish with this idempotency key, if it is still retained.
    pub fn find_by_key(&self, key: &str) -> Result<Option<PublishRecord>> {
        let rows: Vec<PublishRecord> = self
            .sql
            .exec(
                "SELECT id, seq, broadcast_count FROM notifications WHERE idempotency_key = ?",
                vec![key.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().next())
    }

    /// Whether a notification with this id is retained.
    pub fn has_id(&self, id: &str) -> Result<bool> {
        let rows: Vec<Count> = self
            .sql
            .exec(
                "SELECT COUNT(*) AS n FROM notifications WHERE id = ?",
                vec![id.into()],
            )?
            .to_array()?;
        Ok(rows.first().is_some_and(|c| c.n > 0))
    }

    /// Appends a publish (before it is sent: SPEC, "Delivery").
    pub fn append(&self, e: &NewEntry<'_>) -> Result<()> {
        let sent = e.broadcast_count > 0;
        let delivery = if e.requires_ack {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Sent
        };
        self.sql.exec(
            "INSERT INTO notifications (seq, id, type, payload, status, requires_ack, created_at,
                attempts, last_attempt_at, delivery, idempotency_key, broadcast_count)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                V::Integer(e.seq as i64),
                e.id.into(),
                e.kind.into(),
                e.payload.into(),
                e.status.into(),
                V::Integer(e.requires_ack.into()),
                V::Integer(e.now),
                V::Integer(sent.into()),
                if sent { V::Integer(e.now) } else { V::Null },
                delivery.as_str().into(),
                e.idempotency_key.map_or(V::Null, V::from),
                V::Integer(e.broadcast_count.into()),
            ],
        )?;
        Ok(())
    }

    /// Stored notifications with `seq > since`, oldest first, at most `limit`.
    pub fn after(&self, since: u64, limit: u32) -> Result<Vec<Entry>> {
        self.sql
            .exec(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM notifications WHERE seq > ? ORDER BY seq LIMIT ?"
                ),
                vec![V::Integer(since as i64), V::Integer(limit.into())],
            )?
            .to_array()
    }

    /// Pending notifications, oldest first.
    pub fn pending(&self) -> Result<Vec<Entry>> {
        self.sql
            .exec(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM notifications WHERE delivery = 'pending' ORDER BY seq"
                ),
                None,
            )?
            .to_array()
    }

    /// Records a new round for these notifications at `now`.
    pub fn record_round(&self, seqs: &[u64], now: i64) -> Result<()> {
        self.update_many(
            "UPDATE notifications SET attempts = attempts + 1, last_attempt_at = ?
             WHERE delivery = 'pending' AND seq IN",
            vec![V::Integer(now)],
            seqs,
        )
    }

    /// Marks these notifications failed.
    pub fn fail(&self, seqs: &[u64]) -> Result<()> {
        self.update_many(
            "UPDATE notifications SET delivery = 'failed' WHERE delivery = 'pending' AND seq IN",
            Vec::new(),
            seqs,
        )
    }

    fn update_many(&self, head: &str, bindings: Vec<V>, seqs: &[u64]) -> Result<()> {
        // SQLite allows 100 bound parameters per statement in Durable Objects.
        for chunk in seqs.chunks(90) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut b = bindings.clone();
            b.extend(chunk.iter().map(|&s| V::Integer(s as i64)));
            self.sql.exec(&format!("{head} ({marks})"), b)?;
        }
        Ok(())
    }

    /// Acks pending (or failed: a late ack still proves it was seen) notifications by id.
    /// Unknown and already-acked ids are ignored. Returns how many changed.
    pub fn ack(&self, ids: &[String], by: &str, now: i64) -> Result<usize> {
        let mut changed = 0;
        for chunk in ids.chunks(90) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut b = vec![V::Integer(now), by.into()];
            b.extend(chunk.iter().map(|id| V::from(id.as_str())));
            let cursor = self.sql.exec(
                &format!(
                    "UPDATE notifications SET delivery = 'acked', acked_at = ?, acked_by = ?
                     WHERE delivery IN ('pending', 'failed') AND id IN ({marks})"
                ),
                b,
            )?;
            let _ = cursor.raw().count();
            changed += cursor.rows_written();
        }
        Ok(changed)
    }

    /// When the earliest running round ends (ms), for the retry alarm.
    pub fn next_round_due(&self, now: i64, interval_ms: i64) -> Result<Option<i64>> {
        let rows: Vec<Value> = self
            .sql
            .exec(
                "SELECT MIN(last_attempt_at) AS value FROM notifications
                 WHERE delivery = 'pending' AND attempts > 0 AND last_attempt_at > ?",
                vec![V::Integer(now - interval_ms)],
            )?
            .to_array()?;
        Ok(rows.first().and_then(|r| r.value).map(|t| t + interval_ms))
    }

    /// Pending notifications whose round has ended (due for another round, or to fail).
    pub fn due(&self, now: i64, interval_ms: i64) -> Result<Vec<Entry>> {
        self.sql
            .exec(
                &format!(
                    "SELECT {ENTRY_COLUMNS} FROM notifications
                     WHERE delivery = 'pending' AND attempts > 0 AND last_attempt_at <= ?
                     ORDER BY seq"
                ),
                vec![V::Integer(now - interval_ms)],
            )?
            .to_array()
    }

    /// Prunes non-pending rows with `after < seq <= through` (a range scan on the primary key).
    pub fn prune_range(&self, after: u64, through: u64) -> Result<()> {
        self.sql.exec(
            "DELETE FROM notifications WHERE seq > ? AND seq <= ? AND delivery <> 'pending'",
            vec![V::Integer(after as i64), V::Integer(through as i64)],
        )?;
        Ok(())
    }

    /// Sweeps the whole log: pending notifications created before `created_cutoff` expire
    /// (`failed`); then rows that are not pending and are at or below `seq_cutoff` or created
    /// before `created_cutoff` are pruned. Returns how many pending ones expired.
    pub fn sweep(&self, seq_cutoff: u64, created_cutoff: i64) -> Result<usize> {
        let expired = self.sql.exec(
            "UPDATE notifications SET delivery = 'failed'
             WHERE delivery = 'pending' AND created_at < ?",
            vec![V::Integer(created_cutoff)],
        )?;
        let _ = expired.raw().count();
        let expired = expired.rows_written();
        self.sql.exec(
            "DELETE FROM notifications WHERE delivery <> 'pending' AND (seq <= ? OR created_at < ?)",
            vec![V::Integer(seq_cutoff as i64), V::Integer(created_cutoff)],
        )?;
        Ok(expired)
    }

    /// `(pending, failed)` counts.
    pub fn delivery_counts(&self) -> Result<(u64, u64)> {
        #[derive(Deserialize)]
        struct Counts {
            pending: Option<i64>,
            failed: Option<i64>,
        }
        let rows: Vec<Counts> = self
            .sql
            .exec(
                "SELECT SUM(delivery = 'pending') AS pending, SUM(delivery = 'failed') AS failed
                 FROM notifications",
                None,
            )?
            .to_array()?;
        let c = rows.first();
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        Ok((n(c.and_then(|c| c.pending)), n(c.and_then(|c| c.failed))))
    }
}
