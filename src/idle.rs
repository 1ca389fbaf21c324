//! Idle connections (`IDLE_TIMEOUT_SECONDS`, close 4008): when a socket from which the room has
//! heard nothing is closed, and how the room keeps track of "heard" across hibernation without
//! a storage write per frame.
//!
//! A connection's last activity is the later of two times: when the room last recorded a frame
//! from it (`seen_at`, kept in its attachment, so it survives hibernation) and when the runtime
//! last answered its text `ping` (the auto-response timestamp, which costs the room no wake).
//! Recording every frame would write the attachment on every frame; the room records one only
//! when the recorded time is a quarter-timeout old, so `seen_at` may lag the truth by up to
//! [`Idle::slack_ms`], and a connection is closed only once it is idle that much longer. The
//! room checks every half-timeout (one alarm for all its sockets), so a connection silent for
//! the timeout is closed within 1.75 × the timeout.

/// The idle rule of a room; `None` timeout (0 in the settings) turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idle {
    timeout_ms: i64,
}

impl Idle {
    /// `IDLE_TIMEOUT_SECONDS`; 0 is off.
    pub fn new(timeout_seconds: u64) -> Option<Idle> {
        (timeout_seconds > 0).then(|| Idle {
            timeout_ms: (timeout_seconds as i64).saturating_mul(1000),
        })
    }

    /// How often the room looks for idle connections while it holds any.
    pub fn check_every_ms(self) -> i64 {
        (self.timeout_ms / 2).max(1)
    }

    /// How far a recorded `seen_at` may lag the last frame.
    pub fn slack_ms(self) -> i64 {
        self.timeout_ms / 4
    }

    /// Whether a frame at `now` must be recorded (the attachment rewritten).
    pub fn should_record(self, seen_at: i64, now: i64) -> bool {
        now - seen_at >= self.slack_ms()
    }

    /// Whether a connection last recorded at `seen_at`, whose text `ping` the runtime last
    /// answered at `auto_ping_at`, is idle at `now`.
    pub fn is_idle(self, seen_at: i64, auto_ping_at: Option<i64>, now: i64) -> bool {
        // The auto-response time is exact; the recorded one may lag by the slack.
        let by_frames = now - seen_at > self.timeout_ms + self.slack_ms();
        let by_pings = auto_ping_at.is_none_or(|at| now - at > self.timeout_ms);
        by_frames && by_pings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 300_000;

    #[test]
    fn zero_is_off() {
        assert_eq!(Idle::new(0), None);
        let idle = Idle::new(300).unwrap();
        assert_eq!((idle.check_every_ms(), idle.slack_ms()), (T / 2, T / 4));
    }

    #[test]
    fn a_connection_is_idle_only_when_neither_frames_nor_pings_were_heard() {
        let idle = Idle::new(300).unwrap();
        let seen = 1_000_000;
        // Frames: the recorded time may lag the last frame by the slack.
        assert!(!idle.is_idle(seen, None, seen + T + T / 4));
        assert!(idle.is_idle(seen, None, seen + T + T / 4 + 1));
        // A text ping the runtime answered keeps it alive, exactly to the timeout.
        let ping = seen + T;
        assert!(!idle.is_idle(seen, Some(ping), ping + T));
        assert!(idle.is_idle(seen, Some(ping), ping + T + 1));
        // An old ping does not help a connection whose frames are recent.
        assert!(!idle.is_idle(seen, Some(seen - 10 * T), seen + T));
    }

    #[test]
    fn frames_are_recorded_once_per_slack() {
        let idle = Idle::new(300).unwrap();
        assert!(!idle.should_record(0, T / 4 - 1));
        assert!(idle.should_record(0, T / 4));
    }

    #[test]
    fn a_silent_connection_is_closed_by_the_check_after_its_timeout_and_within_twice_it() {
        let idle = Idle::new(300).unwrap();
        // Frames recorded at `seen` (lagging the last real frame by up to the slack), checks
        // every half-timeout from an arbitrary phase: the first check that finds it idle.
        for lag in [0, T / 8, T / 4] {
            for phase in [0, 1, T / 7, T / 2 - 1] {
                let last_real = 10 * T;
                let seen = last_real - lag;
                let mut check = phase;
                while !idle.is_idle(seen, None, check) {
                    check += idle.check_every_ms();
                }
                assert!(
                    check - last_real >= T,
                    "closed early: lag {lag} phase {phase}"
                );
                assert!(
                    check - last_real <= 2 * T,
                    "closed late: lag {lag} phase {phase}"
                );
            }
        }
    }
}
