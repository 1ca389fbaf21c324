//! The alarm: tokens that expired while connected, redelivery rounds that ended, pruning.

use super::Room;
use crate::alarm::AlarmAt;
use crate::codes::{Close, LogEvent};
use crate::delivery::{replay, Action};
use crate::glue::env::log;
use crate::outbox::Pace;
use worker::Result;

impl Room {
    /// The alarm's work; returns when it must run next.
    pub(super) fn alarm_round(&mut self, now: i64) -> Result<AlarmAt> {
        let scheduled = self.alarm_at.flatten();
        self.alarm_at = Some(None);
        // Tokens that expired while connected: close with 4001.
        let expired = self.sockets.conns.expired(now);
        for id in &expired {
            let close = Close::TokenExpired;
            self.sockets.close(id, close, close.reason());
        }
        let idle = self.sockets.reap_idle(now);
        let due = self.log.due(now)?;
        let plan = replay::due_rounds(&due, self.log.policy(), now);
        self.execute(None, &plan, now, Pace::Paced)?;
        self.log.sweep_next();
        self.log.prune(now)?;
        let next = self.next_alarm(now)?;
        let rounds = plan
            .iter()
            .filter(|a| matches!(a, Action::Round { .. }))
            .count();
        log(LogEvent::Alarm
            .line()
            .str("room", &self.log.id)
            .opt_num("lateMs", scheduled.map(|at| now - at))
            .num("rounds", rounds)
            .num("failed", plan.len() - rounds)
            .num("tokensExpired", expired.len())
            .num("idleClosed", idle.len())
            .opt_num("next", next.ms()));
        Ok(next)
    }

    /// When the alarm must next run: the earliest running round's end, token expiry or idle
    /// check.
    fn next_alarm(&self, now: i64) -> Result<AlarmAt> {
        let round = AlarmAt::from(self.log.next_round_due(now)?);
        Ok(round
            .earliest(AlarmAt::from(self.sockets.conns.next_close()))
            .earliest(self.sockets.next_idle_check(now)))
    }
}
