//! When a room's alarm must next run. Every handler returns one [`AlarmAt`] (a redelivery round
//! it started, a token that will expire, an idle check); the room keeps the earliest and asks the
//! runtime only when that moves earlier than what is already scheduled.

/// A time the alarm must run by (ms since the epoch), or no need at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlarmAt(Option<i64>);

impl AlarmAt {
    /// Nothing to schedule.
    pub const NONE: AlarmAt = AlarmAt(None);

    /// By `ms`.
    pub fn at(ms: i64) -> AlarmAt {
        AlarmAt(Some(ms))
    }

    /// `Some(ms)` when `cond`, else none.
    pub fn when(cond: bool, ms: i64) -> AlarmAt {
        AlarmAt(cond.then_some(ms))
    }

    pub fn ms(self) -> Option<i64> {
        self.0
    }

    /// The earlier of two needs (none is later than any time).
    pub fn earliest(self, other: AlarmAt) -> AlarmAt {
        match (self.0, other.0) {
            (Some(a), Some(b)) => AlarmAt(Some(a.min(b))),
            (a, b) => AlarmAt(a.or(b)),
        }
    }

    /// The time to set, given the alarm already `scheduled`: only a need earlier than it (an
    /// alarm that runs early finds nothing due and schedules the next one).
    pub fn to_set(self, scheduled: Option<i64>) -> Option<i64> {
        let at = self.0?;
        match scheduled {
            Some(current) if current <= at => None,
            _ => Some(at),
        }
    }
}

impl From<Option<i64>> for AlarmAt {
    fn from(ms: Option<i64>) -> AlarmAt {
        AlarmAt(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_need_wins_and_none_is_latest() {
        assert_eq!(AlarmAt::at(5).earliest(AlarmAt::at(3)), AlarmAt::at(3));
        assert_eq!(AlarmAt::NONE.earliest(AlarmAt::at(3)), AlarmAt::at(3));
        assert_eq!(AlarmAt::at(4).earliest(AlarmAt::NONE), AlarmAt::at(4));
        assert_eq!(AlarmAt::NONE.earliest(AlarmAt::NONE), AlarmAt::NONE);
        assert_eq!(AlarmAt::when(false, 1), AlarmAt::NONE);
    }

    #[test]
    fn only_an_earlier_need_moves_the_scheduled_alarm() {
        assert_eq!(AlarmAt::at(10).to_set(None), Some(10));
        assert_eq!(AlarmAt::at(10).to_set(Some(20)), Some(10));
        assert_eq!(AlarmAt::at(10).to_set(Some(10)), None);
        assert_eq!(AlarmAt::at(10).to_set(Some(5)), None);
        assert_eq!(AlarmAt::NONE.to_set(None), None);
    }
}
