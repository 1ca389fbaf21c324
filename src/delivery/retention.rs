//! What the log keeps (docs/protocol.md, "Delivery"): the newest `HISTORY_LIMIT` notifications, nothing
//! older than `HISTORY_TTL_SECONDS`, and pending ones until their own end.
//!
//! Pruning is logical first and physical in batches: a notification that falls out of the
//! newest `limit` is hidden from every read at once (reads filter on [`Retention::cutoff`]),
//! and deleted with others later. A publish then writes only its own row; deletes come in
//! batches that cost one counter update each.

/// Retention from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub limit: u64,
    pub ttl_ms: i64,
}

impl Retention {
    /// Non-pending notifications at or below this seq are gone (count limit).
    pub fn cutoff(&self, last_seq: u64) -> u64 {
        last_seq.saturating_sub(self.limit)
    }

    /// Notifications stored before this time (ms) are gone (age limit); pending ones at this
    /// age have waited their own expiry and fail.
    pub fn created_cutoff(&self, now: i64) -> i64 {
        now - self.ttl_ms
    }

    /// How far the count cutoff may run ahead of the last physical delete.
    fn batch(&self) -> u64 {
        (self.limit / 8).clamp(16, 1024)
    }
}

/// Longest time between two sweeps of the whole log.
pub const SWEEP_INTERVAL_MS: i64 = 60_000;

/// What the room should delete now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// Nothing to delete yet.
    Nothing,
    /// Delete non-pending rows with `seq <= through` (a range scan on the primary key).
    Range { through: u64 },
    /// Sweep the whole log: pending rows stored before `created_cutoff` fail (nobody was
    /// connected to receive them for that long), then non-pending rows at or below
    /// `seq_cutoff` or stored before `created_cutoff` are deleted.
    Sweep {
        seq_cutoff: u64,
        created_cutoff: i64,
    },
}

/// Decides when to delete: a sweep at most every [`SWEEP_INTERVAL_MS`] (or TTL, if shorter)
/// and on every alarm, and a range delete whenever the count cutoff has moved a batch past the
/// last delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruner {
    /// The count cutoff at the last delete.
    deleted_through: u64,
    swept_at: Option<i64>,
}

impl Pruner {
    /// Makes the next plan a full sweep (the alarm sweeps whenever it runs).
    pub fn sweep_next(&mut self) {
        self.swept_at = None;
    }

    pub fn plan(&mut self, r: Retention, last_seq: u64, now: i64) -> Prune {
        let seq_cutoff = r.cutoff(last_seq);
        let sweep_due = self
            .swept_at
            .is_none_or(|t| now - t >= SWEEP_INTERVAL_MS.min(r.ttl_ms));
        if sweep_due {
            self.swept_at = Some(now);
            self.deleted_through = seq_cutoff;
            Prune::Sweep {
                seq_cutoff,
                created_cutoff: r.created_cutoff(now),
            }
        } else if seq_cutoff >= self.deleted_through + r.batch() {
            self.deleted_through = seq_cutoff;
            Prune::Range {
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

    #[test]
    fn cutoffs() {
        let r = Retention {
            limit: 100,
            ttl_ms: 1000,
        };
        assert_eq!((r.cutoff(50), r.created_cutoff(5000)), (0, 4000));
        assert_eq!(r.cutoff(150), 50);
        assert_eq!(r.batch(), 16, "small limits delete at least 16 at a time");
        let big = Retention {
            limit: 100_000,
            ttl_ms: 1,
        };
        assert_eq!(big.batch(), 1024);
    }

    #[test]
    fn sweeps_rarely_and_deletes_in_batches_in_between() {
        let r = Retention {
            limit: 160,
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
        for seq in 6..180 {
            assert_eq!(p.plan(r, seq, 1), Prune::Nothing, "seq {seq}");
        }
        assert_eq!(
            p.plan(r, 180, 2),
            Prune::Range { through: 20 },
            "a batch (limit / 8) behind"
        );
        assert_eq!(p.plan(r, 181, 3), Prune::Nothing);
        assert!(matches!(
            p.plan(r, 182, SWEEP_INTERVAL_MS + 2),
            Prune::Sweep { seq_cutoff: 22, .. }
        ));
        p.sweep_next();
        assert!(matches!(
            p.plan(r, 182, SWEEP_INTERVAL_MS + 3),
            Prune::Sweep { .. }
        ));
    }

    #[test]
    fn a_short_ttl_sweeps_more_often() {
        let short = Retention {
            limit: 10,
            ttl_ms: 1000,
        };
        let mut p = Pruner::default();
        p.plan(short, 1, 0);
        assert_eq!(p.plan(short, 2, 999), Prune::Nothing);
        assert!(matches!(p.plan(short, 3, 1000), Prune::Sweep { .. }));
    }
}
