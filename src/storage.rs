//! The room's durable log: every publish, with its delivery state, in the Durable Object's
//! SQLite storage (SPEC, "Delivery").
//!
//! SQLite calls in a Durable Object are synchronous, so a sequence of them with no `await` in
//! between is atomic with respect to every other event of the room: that is what makes `seq`
//! assignment and the replay/live seam exact.

use crate::bindings::{int, rows, text, Js as Result, Sql};
use crate::delivery::DeliveryStatus;
use js_sys::{Array, JsString};
use std::cell::RefCell;
use std::collections::HashMap;
use wasm_bindgen::JsValue;

/// A binding for an integer column (SQLite's integers travel as JavaScript numbers; every
/// value stored here is far inside the safe range).
fn n(v: impl Into<i64>) -> JsValue {
    JsValue::from_f64(v.into() as f64)
}

thread_local! {
    /// Statement texts as JavaScript strings, made once each: a publish runs the same two
    /// statements every time, and copying their text out of wasm memory each time costs more
    /// than finding it here.
    static STATEMENTS: RefCell<HashMap<String, JsString>> = RefCell::new(HashMap::new());
}

/// Statements built with a variable number of `?` (acks, rounds) are not kept past this many.
const MAX_STATEMENTS: usize = 64;

fn statement(query: &str) -> JsString {
    STATEMENTS.with(|cache| {
        if let Some(s) = cache.borrow().get(query) {
            return s.clone();
        }
        let s = JsString::from(query);
        let mut cache = cache.borrow_mut();
        if cache.len() < MAX_STATEMENTS {
            cache.insert(query.to_owned(), s.clone());
        }
        s
    })
}

/// Rows a statement changed (read after running it to the end).
fn written(cursor: &crate::bindings::Cursor) -> usize {
    rows(cursor);
    cursor.rows_written() as usize
}

/// A binding for a text column.
fn t(v: &str) -> JsValue {
    JsValue::from_str(v)
}

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
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub id: String,
    pub kind: String,
    pub payload: String,
    pub attempts: u32,
    pub last_attempt_at: Option<i64>,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub delivery: String,
}

impl Entry {
    /// An `ENTRY_COLUMNS` row.
    fn from_row(r: &Array) -> Entry {
        Entry {
            seq: int(r, 0).unwrap_or(0).max(0) as u64,
            id: text(r, 1).unwrap_or_default(),
            kind: text(r, 2).unwrap_or_default(),
            payload: text(r, 3).unwrap_or_default(),
            attempts: int(r, 4).unwrap_or(0).clamp(0, u32::MAX.into()) as u32,
            last_attempt_at: int(r, 5),
            acked_at: int(r, 6),
            acked_by: text(r, 7),
            delivery: text(r, 8).unwrap_or_default(),
        }
    }

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
#[derive(Debug, Clone)]
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
    sql: Sql,
}

impl RoomLog {
    /// Opens the log, creating or migrating the schema as needed.
    pub fn open(sql: Sql) -> Result<RoomLog> {
        let log = RoomLog { sql };
        log.exec(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
            vec![],
        )?;
        let version = log.meta("schema_version")? as usize;
        for (i, statements) in MIGRATIONS.iter().enumerate().skip(version) {
            for statement in statements.iter() {
                log.exec(statement, vec![])?;
            }
            log.exec(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                vec![n(i as i64 + 1)],
            )?;
        }
        Ok(log)
    }

    fn exec(&self, query: &str, bindings: Vec<JsValue>) -> Result<crate::bindings::Cursor> {
        self.sql.exec(&statement(query), bindings)
    }

    /// The rows of a query, each an array of its columns.
    fn select(&self, query: &str, bindings: Vec<JsValue>) -> Result<Vec<Array>> {
        Ok(rows(&self.exec(query, bindings)?))
    }

    /// The first column of the first row as an integer (`None` for no row or NULL).
    fn select_int(&self, query: &str, bindings: Vec<JsValue>) -> Result<Option<i64>> {
        Ok(self
            .select(query, bindings)?
            .first()
            .and_then(|r| int(r, 0)))
    }

    fn meta(&self, key: &str) -> Result<u64> {
        let v = self.select_int("SELECT value FROM meta WHERE key = ?", vec![t(key)])?;
        Ok(v.unwrap_or(0).max(0) as u64)
    }

    /// The room id recorded by the first request (alarms and socket events carry none).
    pub fn room_id(&self) -> Result<Option<String>> {
        let rows = self.select("SELECT value FROM meta WHERE key = 'room_id'", vec![])?;
        Ok(rows.first().and_then(|r| text(r, 0)))
    }

    pub fn set_room_id(&self, id: &str) -> Result<()> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES ('room_id', ?)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![t(id)],
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
            self.exec(
                "UPDATE meta SET value = value + ? WHERE key = 'deliveries'",
                vec![JsValue::from_f64(n as f64)],
            )?;
        }
        Ok(())
    }

    /// The earlier publish with this idempotency key, if it is still retained.
    pub fn find_by_key(&self, key: &str) -> Result<Option<PublishRecord>> {
        let rows = self.select(
            "SELECT id, seq, broadcast_count FROM notifications WHERE idempotency_key = ?",
            vec![t(key)],
        )?;
        Ok(rows.first().map(|r| PublishRecord {
            id: text(r, 0).unwrap_or_default(),
            seq: int(r, 1).unwrap_or(0).max(0) as u64,
            broadcast_count: int(r, 2).unwrap_or(0).clamp(0, u32::MAX.into()) as u32,
        }))
    }

    /// Whether a notification with this id is retained.
    pub fn has_id(&self, id: &str) -> Result<bool> {
        let count = self.select_int(
            "SELECT COUNT(*) FROM notifications WHERE id = ?",
            vec![t(id)],
        )?;
        Ok(count.unwrap_or(0) > 0)
    }

    /// Appends a publish (before it is sent: SPEC, "Delivery").
    pub fn append(&self, e: &NewEntry<'_>) -> Result<()> {
        let sent = e.broadcast_count > 0;
        let delivery = if e.requires_ack {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Sent
        };
        self.exec(
            "INSERT INTO notifications (seq, id, type, payload, status, requires_ack, created_at,
                attempts, last_attempt_at, delivery, idempotency_key, broadcast_count)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                n(e.seq as i64),
                t(e.id),
                t(e.kind),
                t(e.payload),
                t(e.status),
                n(e.requires_ack),
                n(e.now),
                n(sent),
                if sent { n(e.now) } else { JsValue::NULL },
                t(delivery.as_str()),
                e.idempotency_key.map_or(JsValue::NULL, t),
                n(e.broadcast_count),
            ],
        )?;
        Ok(())
    }

    /// Stored notifications with `seq > since`, oldest first, at most `limit`.
    pub fn after(&self, since: u64, limit: u32) -> Result<Vec<Entry>> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM notifications WHERE seq > ? ORDER BY seq LIMIT ?"
            ),
            vec![n(since as i64), n(limit)],
        )
    }

    /// Pending notifications, oldest first.
    pub fn pending(&self) -> Result<Vec<Entry>> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM notifications WHERE delivery = 'pending' ORDER BY seq"
            ),
            vec![],
        )
    }

    fn entries(&self, query: &str, bindings: Vec<JsValue>) -> Result<Vec<Entry>> {
        Ok(self
            .select(query, bindings)?
            .iter()
            .map(Entry::from_row)
            .collect())
    }

    /// Records a new round for these notifications at `now`.
    pub fn record_round(&self, seqs: &[u64], now: i64) -> Result<()> {
        self.update_many(
            "UPDATE notifications SET attempts = attempts + 1, last_attempt_at = ?
             WHERE delivery = 'pending' AND seq IN",
            vec![n(now)],
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

    fn update_many(&self, head: &str, bindings: Vec<JsValue>, seqs: &[u64]) -> Result<()> {
        // SQLite allows 100 bound parameters per statement in Durable Objects.
        for chunk in seqs.chunks(90) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut b = bindings.clone();
            b.extend(chunk.iter().map(|&s| n(s as i64)));
            self.exec(&format!("{head} ({marks})"), b)?;
        }
        Ok(())
    }

    /// Acks pending (or failed: a late ack still proves it was seen) notifications by id.
    /// Unknown and already-acked ids are ignored. Returns how many changed.
    pub fn ack(&self, ids: &[String], by: &str, now: i64) -> Result<usize> {
        let mut changed = 0;
        for chunk in ids.chunks(90) {
            let marks = vec!["?"; chunk.len()].join(",");
            let mut b = vec![n(now), t(by)];
            b.extend(chunk.iter().map(|id| t(id)));
            let cursor = self.exec(
                &format!(
                    "UPDATE notifications SET delivery = 'acked', acked_at = ?, acked_by = ?
                     WHERE delivery IN ('pending', 'failed') AND id IN ({marks})"
                ),
                b,
            )?;
            changed += written(&cursor);
        }
        Ok(changed)
    }

    /// When the earliest running round ends (ms), for the retry alarm.
    pub fn next_round_due(&self, now: i64, interval_ms: i64) -> Result<Option<i64>> {
        let first = self.select_int(
            "SELECT MIN(last_attempt_at) FROM notifications
             WHERE delivery = 'pending' AND attempts > 0 AND last_attempt_at > ?",
            vec![n(now - interval_ms)],
        )?;
        Ok(first.map(|t| t + interval_ms))
    }

    /// Pending notifications whose round has ended (due for another round, or to fail).
    pub fn due(&self, now: i64, interval_ms: i64) -> Result<Vec<Entry>> {
        self.entries(
            &format!(
                "SELECT {ENTRY_COLUMNS} FROM notifications
                 WHERE delivery = 'pending' AND attempts > 0 AND last_attempt_at <= ?
                 ORDER BY seq"
            ),
            vec![n(now - interval_ms)],
        )
    }

    /// Prunes non-pending rows with `after < seq <= through` (a range scan on the primary key).
    pub fn prune_range(&self, after: u64, through: u64) -> Result<()> {
        self.exec(
            "DELETE FROM notifications WHERE seq > ? AND seq <= ? AND delivery <> 'pending'",
            vec![n(after as i64), n(through as i64)],
        )?;
        Ok(())
    }

    /// Sweeps the whole log: pending notifications created before `created_cutoff` expire
    /// (`failed`); then rows that are not pending and are at or below `seq_cutoff` or created
    /// before `created_cutoff` are pruned. Returns how many pending ones expired.
    pub fn sweep(&self, seq_cutoff: u64, created_cutoff: i64) -> Result<usize> {
        let expired = written(&self.exec(
            "UPDATE notifications SET delivery = 'failed'
             WHERE delivery = 'pending' AND created_at < ?",
            vec![n(created_cutoff)],
        )?);
        self.exec(
            "DELETE FROM notifications WHERE delivery <> 'pending' AND (seq <= ? OR created_at < ?)",
            vec![n(seq_cutoff as i64), n(created_cutoff)],
        )?;
        Ok(expired)
    }

    /// `(pending, failed)` counts.
    pub fn delivery_counts(&self) -> Result<(u64, u64)> {
        let rows = self.select(
            "SELECT SUM(delivery = 'pending'), SUM(delivery = 'failed') FROM notifications",
            vec![],
        )?;
        let count = |i| rows.first().and_then(|r| int(r, i)).unwrap_or(0).max(0) as u64;
        Ok((count(0), count(1)))
    }
}
