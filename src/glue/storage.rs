//! The room's durable log: every publish, with its delivery state, in the Durable Object's
//! SQLite storage (docs/protocol.md, "Delivery").
//!
//! SQLite calls in a Durable Object are synchronous, so a sequence of them with no `await` in
//! between is atomic with respect to every other event of the room: that is what makes `seq`
//! assignment and the replay/live seam exact.
//!
//! Statements run through the raw `worker_sys::SqlStorage` that workers-rs's `Storage`
//! hands out: rows come back as arrays in one call (`raw()`), and the cursor's `rowsRead` /
//! `rowsWritten` (what the platform bills) are added up for the keyed health answer.
//!
//! What a publish writes: its row and its `id` index entry; a `requiresAck` one also its
//! pending index entry, and an `Idempotency-Key` other than its `id` its key index entry.
//! Nothing else: no counters are kept per publish (the last seq is the largest row; the count
//! of deliveries adds up the rows), and rows that fall out of the retention are hidden from
//! reads at once and deleted in batches (see [`crate::delivery::retention`]).

use crate::delivery::{DeliveryStatus, Entry, Prune};
use crate::notification::Envelope;
use js_sys::Array;
use std::cell::Cell;
use wasm_bindgen::{JsCast, JsValue};
use worker::worker_sys::{SqlStorage, SqlStorageCursor};

type Result<T> = std::result::Result<T, JsValue>;

/// A binding for an integer column (SQLite's integers travel as JavaScript numbers; every
/// value stored here is far inside the safe range).
fn n(v: impl Into<i64>) -> JsValue {
    JsValue::from_f64(v.into() as f64)
}

/// A binding for a text column.
fn t(v: &str) -> JsValue {
    JsValue::from_str(v)
}

/// A column as an integer (NULL as `None`).
fn int(row: &Array, i: u32) -> Option<i64> {
    row.get(i).as_f64().map(|f| f as i64)
}

/// A column as text (NULL as `None`).
fn text(row: &Array, i: u32) -> Option<String> {
    row.get(i).as_string()
}

/// Schema migrations, applied in order once each; `meta.schema_version` records how many ran.
/// Append new ones; never edit a released one (tests/upgrade.test.mjs opens storage written
/// by earlier releases).
const MIGRATIONS: &[&[&str]] = &[
    &[
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
    ],
    &[
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
    ],
    // 3: a publish writes its row and its index entries, nothing else. The counter trigger and
    // the `created_at` index go; the idempotency key is stored (and indexed) only when it is
    // not the id itself, so the `id` index serves both lookups in the common case. The table is
    // rebuilt because a UNIQUE column's index cannot be dropped. The meta rows become floors:
    // `last_seq` and `last_broadcast_at` for when every row is gone, `deliveries` for the rows
    // deleted so far (plus replays and redeliveries).
    &[
        "CREATE TABLE notifications_3 (
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
            idempotency_key TEXT,
            broadcast_count INTEGER NOT NULL
        )",
        "INSERT INTO notifications_3 SELECT seq, id, type, payload, status, requires_ack,
            created_at, attempts, last_attempt_at, acked_at, acked_by, delivery,
            NULLIF(idempotency_key, id), broadcast_count FROM notifications",
        "UPDATE meta SET value = value - (SELECT COALESCE(SUM(broadcast_count), 0) FROM notifications)
            WHERE key = 'deliveries'",
        "DROP TABLE notifications",
        "ALTER TABLE notifications_3 RENAME TO notifications",
        "CREATE INDEX notifications_pending ON notifications(seq) WHERE delivery = 'pending'",
        "CREATE UNIQUE INDEX notifications_key ON notifications(idempotency_key)
            WHERE idempotency_key IS NOT NULL",
        "DELETE FROM meta WHERE key IN ('publishes', 'pruned_through')",
    ],
];

const ENTRY_COLUMNS: &str =
    "seq, id, type, payload, attempts, created_at, last_attempt_at, acked_at, acked_by, delivery";

/// An `ENTRY_COLUMNS` row.
fn entry(r: &Array) -> Entry {
    Entry {
        seq: int(r, 0).unwrap_or(0).max(0) as u64,
        id: text(r, 1).unwrap_or_default(),
        kind: text(r, 2).unwrap_or_default(),
        payload: text(r, 3).unwrap_or_default(),
        attempts: int(r, 4).unwrap_or(0).clamp(0, u32::MAX.into()) as u32,
        created_at: int(r, 5).unwrap_or(0),
        last_attempt_at: int(r, 6),
        acked_at: int(r, 7),
        acked_by: text(r, 8),
        status: text(r, 9)
            .and_then(|s| DeliveryStatus::parse(&s))
            .unwrap_or(DeliveryStatus::Sent),
    }
}

/// The first result of a publish, returned again for a duplicate.
#[derive(Debug, Clone)]
pub struct PublishRecord {
    pub id: String,
    pub seq: u64,
    pub broadcast_count: u32,
}

/// A publish about to be appended.
pub struct NewEntry<'a> {
    pub seq: u64,
    pub envelope: &'a Envelope,
    /// The stored frame (without `attempt`).
    pub payload: &'a str,
    pub now: i64,
    /// Sockets it is being sent to now.
    pub broadcast_count: u32,
}

/// Counters the keyed health answer reports.
pub struct Counts {
    pub pending: u64,
    pub failed: u64,
    pub deliveries: u64,
    pub last_broadcast_at: Option<i64>,
}

/// SQLite rows read and written since the room woke (what the platform bills).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowStats {
    pub read: u64,
    pub written: u64,
}

/// The log of one room.
pub struct RoomLog {
    sql: SqlStorage,
    rows: Cell<RowStats>,
}

impl RoomLog {
    /// Opens the log, creating or migrating the schema as needed.
    pub fn open(storage: &worker::Storage) -> Result<RoomLog> {
        let log = RoomLog {
            sql: storage.as_raw().sql(),
            rows: Cell::default(),
        };
        log.exec(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
            &[],
        )?;
        let version = log.meta("schema_version")? as usize;
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(version) {
            for statement in statements.iter() {
                log.exec(statement, &[])?;
            }
            log.exec(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                &[n(i as i64 + 1)],
            )?;
        }
        Ok(log)
    }

    /// Runs a statement to its end; its rows, each an array of its columns.
    fn exec(&self, query: &str, bindings: &[JsValue]) -> Result<Vec<Array>> {
        let cursor: SqlStorageCursor = self.sql.exec(query, Array::of(bindings))?;
        let rows = Array::from(&cursor.raw());
        let mut stats = self.rows.get();
        stats.read += cursor.rows_read() as u64;
        stats.written += cursor.rows_written() as u64;
        self.rows.set(stats);
        Ok(rows.iter().map(JsCast::unchecked_into).collect())
    }

    /// Rows the last statement changed.
    fn changed(&self, before: RowStats) -> u64 {
        self.rows.get().written - before.written
    }

    /// The first column of the first row as an integer (`None` for no row or NULL).
    fn select_int(&self, query: &str, bindings: &[JsValue]) -> Result<Option<i64>> {
        Ok(self.exec(query, bindings)?.first().and_then(|r| int(r, 0)))
    }

    fn meta(&self, key: &str) -> Result<u64> {
        let v = self.select_int("SELECT value FROM meta WHERE key = ?", &[t(key)])?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    fn entries(&self, query: &str, bindings: &[JsValue]) -> Result<Vec<Entry>> {
        Ok(self.exec(query, bindings)?.iter().map(entry).collect())
    }

    /// SQLite rows read and written since the room woke.
    pub fn row_stats(&self) -> RowStats {
        self.rows.get()
    }

    /// The room id recorded by the first request (alarms and socket events carry none).
    pub fn room_id(&self) -> Result<Option<String>> {
        let rows = self.exec("SELECT value FROM meta WHERE key = 'room_id'", &[])?;
        Ok(rows.first().and_then(|r| text(r, 0)))
    }

    pub fn set_room_id(&self, id: &str) -> Result<()> {
        self.set_meta("room_id", t(id))
    }

    fn set_meta(&self, key: &str, value: JsValue) -> Result<()> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES (?, ?)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            &[t(key), value],
        )?;
        Ok(())
    }

    /// How many shards the room has spread over (0: it never spread).
    pub fn shard_count(&self) -> Result<u32> {
        Ok(self.meta("shards")?.min(u64::from(u32::MAX)) as u32)
    }

    pub fn set_shard_count(&self, count: u32) -> Result<()> {
        self.set_meta("shards", n(count))
    }

    /// The highest seq ever assigned (0 for a new room): the largest row, or the floor kept
    /// for when every row has been deleted.
    pub fn last_seq(&self) -> Result<u64> {
        let largest = self.select_int("SELECT MAX(seq) FROM notifications", &[])?;
        Ok((largest.unwrap_or(0).max(0) as u64).max(self.meta("last_seq")?))
    }

    /// The earlier publish with this idempotency key, if it is still retained (`cutoff`: the
    /// retention's count cutoff). A key is a publish's own `id` unless the publisher gave both.
    pub fn find_by_key(&self, key: &str, cutoff: u64) -> Result<Option<PublishRecord>> {
        let rows = self.exec(
            "SELECT id, seq, broadcast_count FROM notifications
               WHERE id = ?1 AND (idempotency_key IS NULL OR idempotency_key = ?1)
                 AND (seq > ?2 OR delivery = 'pending')
             UNION ALL
             SELECT id, seq, broadcast_count FROM notifications
               WHERE idempotency_key = ?1 AND (seq > ?2 OR delivery = 'pending')",
            &[t(key), n(cutoff as i64)],
        )?;
        Ok(rows.first().map(|r| PublishRecord {
            id: text(r, 0).unwrap_or_default(),
            seq: int(r, 1).unwrap_or(0).max(0) as u64,
            broadcast_count: int(r, 2).unwrap_or(0).clamp(0, u32::MAX.into()) as u32,
        }))
    }

    /// Appends a publish (before it is sent: docs/protocol.md, "Delivery"). `Ok(false)` when its id is
    /// held by another retained publish; a row that holds it but is past the retention is
    /// deleted first, as a prune would have.
    pub fn append(&self, e: &NewEntry<'_>, cutoff: u64) -> Result<bool> {
        let env = e.envelope;
        let sent = e.broadcast_count > 0;
        let delivery = if env.requires_ack {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Sent
        };
        let key = env.key.as_deref().filter(|k| *k != env.id);
        let insert = || {
            self.exec(
                "INSERT INTO notifications (seq, id, type, payload, status, requires_ack,
                    created_at, attempts, last_attempt_at, delivery, idempotency_key,
                    broadcast_count)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                &[
                    n(e.seq as i64),
                    t(&env.id),
                    t(&env.kind),
                    t(e.payload),
                    t(env.status.as_str()),
                    n(env.requires_ack),
                    n(e.now),
                    n(sent),
                    if sent { n(e.now) } else { JsValue::NULL },
                    t(delivery.as_str()),
                    key.map_or(JsValue::NULL, t),
                    n(e.broadcast_count),
                ],
            )
        };
        match insert() {
            Ok(_) => Ok(true),
            Err(err) => {
                // The id (or the key) is held: by a retained publish (refuse), or by one past
                // the retention that a batch delete has not reached yet (delete it, retry).
                let before = self.rows.get();
                self.delete_where(
                    "(id = ?1 OR idempotency_key = ?2) AND seq <= ?3 AND delivery <> 'pending'",
                    &[t(&env.id), key.map_or(JsValue::NULL, t), n(cutoff as i64)],
                )?;
                if self.changed(before) == 0 {
                    return if self.has_id(&env.id)? {
                        Ok(false)
                    } else {
                        Err(err)
                    };
                }
                insert().map(|_| true)
            }
        }
    }

    /// Whether a notification with this id is stored.
    fn has_id(&self, id: &str) -> Result<bool> {
        let count = self.select_int("SELECT COUNT(*) FROM notifications WHERE id = ?", &[t(id)])?;
        Ok(count.unwrap_or(0) > 0)
    }

    /// Retained notifications with `seq > since`, oldest first, at most `limit`.
    pub fn after(&self, since: u64, limit: u32, cutoff: u64) -> Result<Vec<Entry>> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM notifications
                 WHERE seq > ? AND (seq > ? OR delivery = 'pending') ORDER BY seq LIMIT ?"
            ),
            &[n(since as i64), n(cutoff as i64), n(limit)],
        )
    }

    /// Pending notifications, oldest first.
    pub fn pending(&self) -> Result<Vec<Entry>> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM notifications WHERE delivery = 'pending' ORDER BY seq"
            ),
            &[],
        )
    }

    /// Pending notifications whose round has ended (due for another round, or to fail).
    pub fn due(&self, now: i64, interval_ms: i64) -> Result<Vec<Entry>> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM notifications
                 WHERE delivery = 'pending' AND attempts > 0 AND last_attempt_at <= ?
                 ORDER BY seq"
            ),
            &[n(now - interval_ms)],
        )
    }

    /// When the earliest running round ends (ms), for the retry alarm.
    pub fn next_round_due(&self, now: i64, interval_ms: i64) -> Result<Option<i64>> {
        let first = self.select_int(
            "SELECT MIN(last_attempt_at) FROM notifications
             WHERE delivery = 'pending' AND attempts > 0 AND last_attempt_at > ?",
            &[n(now - interval_ms)],
        )?;
        Ok(first.map(|t| t + interval_ms))
    }

    /// Records a new round for these notifications at `now`.
    pub fn record_round(&self, seqs: &[u64], now: i64) -> Result<()> {
        self.update_seqs(
            "UPDATE notifications SET attempts = attempts + 1, last_attempt_at = ?
             WHERE delivery = 'pending' AND seq IN",
            &[n(now)],
            seqs,
        )
    }

    /// Marks these notifications failed.
    pub fn fail(&self, seqs: &[u64]) -> Result<()> {
        self.update_seqs(
            "UPDATE notifications SET delivery = 'failed' WHERE delivery = 'pending' AND seq IN",
            &[],
            seqs,
        )
    }

    fn update_seqs(&self, head: &str, bindings: &[JsValue], seqs: &[u64]) -> Result<()> {
        // SQLite allows 100 bound parameters per statement in Durable Objects.
        for chunk in seqs.chunks(90) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut b = bindings.to_vec();
            b.extend(chunk.iter().map(|&s| n(s as i64)));
            self.exec(&format!("{head} ({marks})"), &b)?;
        }
        Ok(())
    }

    /// Acks pending (or failed: a late ack still proves it was seen) notifications by id.
    /// Unknown and already-acked ids are ignored. Returns how many changed.
    pub fn ack(&self, ids: &[String], by: &str, now: i64) -> Result<u64> {
        let mut changed = 0;
        for chunk in ids.chunks(90) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut b = vec![n(now), t(by)];
            b.extend(chunk.iter().map(|id| t(id)));
            changed += self
                .exec(
                    &format!(
                        "UPDATE notifications SET delivery = 'acked', acked_at = ?, acked_by = ?
                         WHERE delivery IN ('pending', 'failed') AND id IN ({marks})
                         RETURNING seq"
                    ),
                    &b,
                )?
                .len() as u64;
        }
        Ok(changed)
    }

    /// Counts frames sent outside a publish (redelivery rounds, replays, offline queue).
    pub fn add_deliveries(&self, count: u64) -> Result<()> {
        if count > 0 {
            self.exec(
                "UPDATE meta SET value = value + ? WHERE key = 'deliveries'",
                &[n(count as i64)],
            )?;
        }
        Ok(())
    }

    /// Deletes rows matching `condition`, first adding what they delivered to the floor of
    /// the `deliveries` counter, so the health counters survive the delete.
    fn delete_where(&self, condition: &str, bindings: &[JsValue]) -> Result<()> {
        self.exec(
            &format!(
                "UPDATE meta SET value = value + (SELECT COALESCE(SUM(broadcast_count), 0)
                   FROM notifications WHERE {condition})
                 WHERE key = 'deliveries' AND EXISTS (SELECT 1 FROM notifications WHERE {condition})"
            ),
            bindings,
        )?;
        self.exec(
            &format!("DELETE FROM notifications WHERE {condition}"),
            bindings,
        )?;
        Ok(())
    }

    /// Carries out a retention plan; returns how many pending notifications expired.
    pub fn prune(&self, plan: Prune, last_seq: u64) -> Result<u64> {
        match plan {
            Prune::Nothing => Ok(0),
            Prune::Range { through } => {
                self.delete_where("seq <= ?1 AND delivery <> 'pending'", &[n(through as i64)])?;
                Ok(0)
            }
            Prune::Sweep {
                seq_cutoff,
                created_cutoff,
            } => {
                let expired = self
                    .exec(
                        "UPDATE notifications SET delivery = 'failed'
                         WHERE delivery = 'pending' AND created_at < ? RETURNING seq",
                        &[n(created_cutoff)],
                    )?
                    .len() as u64;
                // The newest rows may go (every row can be older than the TTL): keep the floors.
                self.exec(
                    "UPDATE meta SET value = ?1 WHERE key = 'last_seq' AND value < ?1",
                    &[n(last_seq as i64)],
                )?;
                self.exec(
                    "INSERT INTO meta (key, value)
                       SELECT 'last_broadcast_at', MAX(created_at) FROM notifications
                       WHERE created_at < ?1 AND delivery <> 'pending'
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value
                       WHERE excluded.value > value",
                    &[n(created_cutoff)],
                )?;
                self.delete_where(
                    "delivery <> 'pending' AND (seq <= ?1 OR created_at < ?2)",
                    &[n(seq_cutoff as i64), n(created_cutoff)],
                )?;
                Ok(expired)
            }
        }
    }

    /// The keyed health counters (`cutoff`: the retention's count cutoff).
    pub fn counts(&self, cutoff: u64) -> Result<Counts> {
        let rows = self.exec(
            "SELECT SUM(delivery = 'pending'), SUM(delivery = 'failed' AND seq > ?1),
                    COALESCE(SUM(broadcast_count), 0), MAX(created_at)
             FROM notifications",
            &[n(cutoff as i64)],
        )?;
        let col = |i| rows.first().and_then(|r| int(r, i));
        let floor_at = self.meta("last_broadcast_at")? as i64;
        let last = col(3).unwrap_or(0).max(floor_at);
        Ok(Counts {
            pending: col(0).unwrap_or(0).max(0) as u64,
            failed: col(1).unwrap_or(0).max(0) as u64,
            deliveries: col(2).unwrap_or(0).max(0) as u64 + self.meta("deliveries")?,
            last_broadcast_at: (last > 0).then_some(last),
        })
    }
}
