//! Limits on what one connection may send: a token bucket at `RATE_LIMIT_PER_MINUTE`, and
//! strike counters that close a connection which keeps sending refused or invalid frames.
//!
//! This state lives in memory only, and that is enough: a room hibernates only after a quiet
//! spell, and a connection that is flooding it keeps it awake.

use crate::codes::{Close, FrameError};
use crate::protocol::TypePattern;
use std::collections::VecDeque;

/// Refused frames within [`STRIKE_WINDOW_MS`] that close the connection (the 10th one closes).
pub const STRIKES_TO_CLOSE: usize = 10;
/// The window strikes are counted in.
pub const STRIKE_WINDOW_MS: i64 = 60_000;

/// A token bucket: `per_minute` tokens of capacity, refilled continuously.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_ms: f64,
    last_ms: i64,
}

impl TokenBucket {
    pub fn new(per_minute: u32, now_ms: i64) -> TokenBucket {
        let capacity = f64::from(per_minute.max(1));
        TokenBucket {
            capacity,
            tokens: capacity,
            per_ms: capacity / 60_000.0,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Refused or invalid frames within [`STRIKE_WINDOW_MS`]: a [`Window`] that fills on the
/// [`STRIKES_TO_CLOSE`]th.
#[derive(Debug, Clone)]
pub struct Strikes(Window);

impl Default for Strikes {
    fn default() -> Self {
        Strikes(Window::new(STRIKES_TO_CLOSE as u32 - 1, STRIKE_WINDOW_MS))
    }
}

impl Strikes {
    /// Records one strike; true when this is the [`STRIKES_TO_CLOSE`]th within the window.
    pub fn strike(&mut self, now_ms: i64) -> bool {
        !self.0.take(now_ms)
    }
}

/// At most `max` events within a sliding window (`presence.set`, client events).
#[derive(Debug, Clone)]
pub struct Window {
    max: usize,
    window_ms: i64,
    times: VecDeque<i64>,
}

impl Window {
    pub fn new(max: u32, window_ms: i64) -> Window {
        Window {
            max: max as usize,
            window_ms,
            times: VecDeque::new(),
        }
    }

    /// Takes one event at `now`; false when the window is full (nothing is recorded then).
    pub fn take(&mut self, now_ms: i64) -> bool {
        if !self.has_room(now_ms) {
            return false;
        }
        self.times.push_back(now_ms);
        true
    }

    /// Whether one more event fits at `now` (records nothing).
    pub fn has_room(&mut self, now_ms: i64) -> bool {
        while self
            .times
            .front()
            .is_some_and(|&t| now_ms - t >= self.window_ms)
        {
            self.times.pop_front();
        }
        self.times.len() < self.max
    }
}

/// A limit on client events whose name matches a pattern (`CLIENT_EVENT_RATES`), on top of
/// `CLIENT_EVENT_RATE`: `typing.*=5/5s` is at most 5 `typing.*` events per 5 s per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRate {
    pub pattern: TypePattern,
    pub max: u32,
    pub window_ms: i64,
}

impl EventRate {
    /// Parses `pattern=N/5s,other=M/500ms` (durations in `ms`, `s` or `m`); empty is none.
    pub fn parse_list(raw: &str) -> Result<Vec<EventRate>, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(EventRate::parse)
            .collect()
    }

    fn parse(item: &str) -> Result<EventRate, String> {
        let bad = || {
            format!("invalid rate {item:?}: expected pattern=COUNT/DURATION, e.g. typing.*=5/5s")
        };
        let (pattern, rate) = item.split_once('=').ok_or_else(bad)?;
        let pattern = TypePattern::parse(pattern.trim())?;
        let (count, window) = rate.trim().split_once('/').ok_or_else(bad)?;
        let max: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(bad)?;
        let window = window.trim();
        let (digits, unit_ms) = if let Some(d) = window.strip_suffix("ms") {
            (d, 1)
        } else if let Some(d) = window.strip_suffix('s') {
            (d, 1_000)
        } else if let Some(d) = window.strip_suffix('m') {
            (d, 60_000)
        } else {
            return Err(bad());
        };
        let n: i64 = digits
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(bad)?;
        Ok(EventRate {
            pattern,
            max,
            window_ms: n.checked_mul(unit_ms).ok_or_else(bad)?,
        })
    }
}

/// What an `emit` is checked against (from the settings).
#[derive(Debug, Clone, Copy)]
pub struct EventRules<'a> {
    /// `CLIENT_EVENT_TYPES`.
    pub allowed: &'a [TypePattern],
    /// `CLIENT_EVENT_RATES`.
    pub per_event: &'a [EventRate],
    /// `MAX_CLIENT_EVENT_BYTES`.
    pub max_bytes: usize,
}

impl Window {
    fn of(rate: &EventRate) -> Window {
        Window::new(rate.max, rate.window_ms)
    }
}

/// Whether a frame may go ahead, or the error (and its message) to answer it with.
pub type Check = Result<(), (FrameError, &'static str)>;

/// What to do with a frame a connection sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Process it.
    Accept,
    /// Do not process it; answer with a `rate_limited` error frame.
    Refuse,
    /// Do not process it; close the connection.
    Close(Close),
}

/// Per-connection guard against floods and garbage.
#[derive(Debug, Clone)]
pub struct ConnectionGuard {
    bucket: TokenBucket,
    refused: Strikes,
    invalid: Strikes,
    /// `presence.set` frames.
    pub presence: Window,
    /// Client events (`emit`).
    pub events: Window,
    /// Client events per `CLIENT_EVENT_RATES` entry (in its order), made on the first emit.
    per_event: Vec<Window>,
}

/// The per-connection rates a guard enforces (from the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    /// Frames per minute (`RATE_LIMIT_PER_MINUTE`).
    pub per_minute: u32,
    /// `presence.set` frames per window.
    pub presence_sets: u32,
    /// Client events per window (`CLIENT_EVENT_RATE`).
    pub events: u32,
    /// The window of the last two.
    pub window_ms: i64,
}

impl ConnectionGuard {
    pub fn new(rates: Rates, now_ms: i64) -> ConnectionGuard {
        ConnectionGuard {
            bucket: TokenBucket::new(rates.per_minute, now_ms),
            refused: Strikes::default(),
            invalid: Strikes::default(),
            presence: Window::new(rates.presence_sets, rates.window_ms),
            events: Window::new(rates.events, rates.window_ms),
            per_event: Vec::new(),
        }
    }

    /// Whether a `presence.set` of `state_len` bytes may go ahead (size first, then its rate);
    /// otherwise the error to answer with.
    pub fn presence_set(&mut self, state_len: usize, max_bytes: usize, now_ms: i64) -> Check {
        if state_len > max_bytes {
            Err((
                FrameError::TooLarge,
                "presence state larger than PRESENCE_STATE_BYTES",
            ))
        } else if !self.presence.take(now_ms) {
            Err((
                FrameError::RateLimited,
                "too many presence.set frames: at most 3 per 10 s",
            ))
        } else {
            Ok(())
        }
    }

    /// Whether an `emit` of `event` with `data_len` bytes of data may go ahead: allowed by
    /// `CLIENT_EVENT_TYPES`, within `MAX_CLIENT_EVENT_BYTES`, within `CLIENT_EVENT_RATE` and
    /// within every `CLIENT_EVENT_RATES` entry its name matches. A refused event counts against
    /// no rate.
    pub fn emit(&mut self, event: &str, data_len: usize, rules: EventRules, now_ms: i64) -> Check {
        if !rules.allowed.iter().any(|p| p.matches(event)) {
            return Err((
                FrameError::EventNotAllowed,
                "this event name is not allowed by CLIENT_EVENT_TYPES",
            ));
        }
        if data_len > rules.max_bytes {
            return Err((
                FrameError::TooLarge,
                "event data larger than MAX_CLIENT_EVENT_BYTES",
            ));
        }
        if !self.events.has_room(now_ms) {
            return Err((
                FrameError::RateLimited,
                "too many events: at most CLIENT_EVENT_RATE per 10 s",
            ));
        }
        if self.per_event.len() != rules.per_event.len() {
            self.per_event = rules.per_event.iter().map(Window::of).collect();
        }
        let matching = || {
            rules
                .per_event
                .iter()
                .zip(0..)
                .filter(|(r, _)| r.pattern.matches(event))
                .map(|(_, i)| i)
        };
        if matching().any(|i| !self.per_event[i].has_room(now_ms)) {
            return Err((
                FrameError::RateLimited,
                "too many events of this name: over its CLIENT_EVENT_RATES limit",
            ));
        }
        for i in matching() {
            self.per_event[i].take(now_ms);
        }
        self.events.take(now_ms);
        Ok(())
    }

    /// Records a frame refused for a rate (`rate_limited`); `Some` when the connection must
    /// close, as for any refused frame.
    pub fn refused(&mut self, now_ms: i64) -> Option<Close> {
        self.refused.strike(now_ms).then_some(Close::RateLimited)
    }

    /// Admits a frame of `len` bytes against `max_bytes` and the rate limit.
    pub fn admit(&mut self, len: usize, max_bytes: usize, now_ms: i64) -> Admission {
        if len > max_bytes {
            Admission::Close(Close::TooBig)
        } else if self.bucket.take(now_ms) {
            Admission::Accept
        } else if self.refused.strike(now_ms) {
            Admission::Close(Close::RateLimited)
        } else {
            Admission::Refuse
        }
    }

    /// Records an invalid frame; `Some` when the connection must close.
    pub fn invalid(&mut self, now_ms: i64) -> Option<Close> {
        self.invalid.strike(now_ms).then_some(Close::InvalidFrames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_minute_of_frames_then_refills() {
        let mut b = TokenBucket::new(100, 0);
        assert!((0..100).all(|_| b.take(0)));
        assert!(!b.take(0));
        assert!(!b.take(599), "0.998 tokens is not one");
        assert!(b.take(600), "600 ms refills one token at 100/min");
        assert!((0..100).all(|_| b.take(1_000_000)));
        assert!(!b.take(1_000_000), "refill is capped at capacity");
        assert!(!b.take(-5), "a clock going backwards refills nothing");
    }

    fn rates(per_minute: u32) -> Rates {
        Rates {
            per_minute,
            presence_sets: 3,
            events: 2,
            window_ms: 10_000,
        }
    }

    #[test]
    fn windows_allow_a_burst_then_refuse_until_it_slides() {
        let mut w = Window::new(3, 10_000);
        assert!(w.take(0) && w.take(1) && w.take(2));
        assert!(!w.take(9_999), "a fourth within 10 s");
        assert!(w.take(10_000), "the first one left the window");
        assert!(!w.take(10_000), "the other two are still in it");
    }

    #[test]
    fn rate_refusals_of_every_kind_add_up_to_the_4002_close() {
        let mut g = ConnectionGuard::new(rates(100), 0);
        assert!(g.events.take(0) && g.events.take(0) && !g.events.take(0));
        for _ in 0..9 {
            assert_eq!(g.refused(0), None);
        }
        assert_eq!(g.refused(0), Some(Close::RateLimited));
    }

    #[test]
    fn presence_sets_are_checked_for_size_then_rate() {
        let mut g = ConnectionGuard::new(rates(100), 0);
        let code = |r: Check| r.map_err(|(e, _)| e.code());
        assert_eq!(code(g.presence_set(11, 10, 0)), Err("too_large"));
        for _ in 0..3 {
            assert_eq!(code(g.presence_set(10, 10, 0)), Ok(()));
        }
        assert_eq!(code(g.presence_set(2, 10, 1)), Err("rate_limited"));
        assert_eq!(
            code(g.presence_set(2, 10, 10_000)),
            Ok(()),
            "the window slid"
        );
    }

    #[test]
    fn emits_need_an_allowed_name_a_small_payload_and_room_in_the_rate() {
        let mut g = ConnectionGuard::new(rates(100), 0);
        let allowed = TypePattern::parse_list(["typing.*"]).unwrap();
        let rules = EventRules {
            allowed: &allowed,
            per_event: &[],
            max_bytes: 10,
        };
        let none = EventRules {
            allowed: &[],
            ..rules
        };
        let code = |r: Check| r.map_err(|(e, _)| e.code());
        assert_eq!(
            code(g.emit("cursor.move", 2, rules, 0)),
            Err("event_not_allowed")
        );
        assert_eq!(
            code(g.emit("typing.start", 2, none, 0)),
            Err("event_not_allowed")
        );
        assert_eq!(code(g.emit("typing.start", 11, rules, 0)), Err("too_large"));
        assert_eq!(code(g.emit("typing.start", 10, rules, 0)), Ok(()));
        assert_eq!(code(g.emit("typing.stop", 2, rules, 0)), Ok(()));
        assert_eq!(
            code(g.emit("typing.stop", 2, rules, 0)),
            Err("rate_limited")
        );
    }

    #[test]
    fn per_event_rates_apply_on_top_of_the_general_one() {
        let allowed = TypePattern::parse_list(["*"]).unwrap();
        let per_event = EventRate::parse_list("typing.*=2/5s, room.join=1/1m").unwrap();
        let rules = EventRules {
            allowed: &allowed,
            per_event: &per_event,
            max_bytes: 100,
        };
        let mut g = ConnectionGuard::new(
            Rates {
                events: 5,
                ..rates(100)
            },
            0,
        );
        let code = |r: Check| r.map_err(|(e, _)| e.code());
        assert_eq!(code(g.emit("typing.start", 0, rules, 0)), Ok(()));
        assert_eq!(code(g.emit("typing.stop", 0, rules, 1)), Ok(()));
        assert_eq!(
            code(g.emit("typing.start", 0, rules, 2)),
            Err("rate_limited")
        );
        // Other names are limited by the general rate only; the refusal above took none of it.
        assert_eq!(code(g.emit("cursor.move", 0, rules, 3)), Ok(()));
        assert_eq!(code(g.emit("room.join", 0, rules, 4)), Ok(()));
        assert_eq!(code(g.emit("room.join", 0, rules, 5)), Err("rate_limited"));
        assert_eq!(code(g.emit("cursor.move", 0, rules, 6)), Ok(()));
        // Five in 10 s in all: the general rate is full now.
        assert_eq!(
            code(g.emit("cursor.move", 0, rules, 7)),
            Err("rate_limited")
        );
        // typing.*'s own window slid after 5 s, but the general one has not.
        assert_eq!(
            code(g.emit("typing.start", 0, rules, 5_001)),
            Err("rate_limited")
        );
        assert_eq!(code(g.emit("typing.start", 0, rules, 10_000)), Ok(()));
    }

    #[test]
    fn event_rates_parse_or_say_what_is_wrong() {
        let r = EventRate::parse_list("typing.*=5/5s,cursor.move=30/1s, x=3/500ms,y=5/1m").unwrap();
        let got: Vec<(&str, u32, i64)> = r
            .iter()
            .map(|e| (e.pattern.as_str(), e.max, e.window_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("typing.*", 5, 5_000),
                ("cursor.move", 30, 1_000),
                ("x", 3, 500),
                ("y", 5, 60_000)
            ]
        );
        assert!(EventRate::parse_list("").unwrap().is_empty());
        for bad in [
            "typing",
            "typing.*=5",
            "typing.*=0/5s",
            "typing.*=5/5",
            "a b=1/1s",
            "x=1/0s",
            "x=1/5h",
        ] {
            assert!(EventRate::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tenth_refused_frame_closes() {
        let mut g = ConnectionGuard::new(rates(1), 0);
        assert_eq!(g.admit(10, 100, 0), Admission::Accept);
        for _ in 0..9 {
            assert_eq!(g.admit(10, 100, 0), Admission::Refuse);
        }
        assert_eq!(g.admit(10, 100, 0), Admission::Close(Close::RateLimited));
    }

    #[test]
    fn strikes_expire_after_the_window() {
        let mut g = ConnectionGuard::new(rates(100), 0);
        for i in 0..9 {
            assert_eq!(g.invalid(i), None);
        }
        assert_eq!(
            g.invalid(STRIKE_WINDOW_MS + 8),
            None,
            "the old ones expired"
        );
        let mut g = ConnectionGuard::new(rates(100), 0);
        let closes: Vec<_> = (0..10).map(|i| g.invalid(i)).collect();
        assert_eq!(closes[9], Some(Close::InvalidFrames));
        assert!(closes[..9].iter().all(Option::is_none));
    }

    #[test]
    fn oversize_frames_close_with_1009() {
        let mut g = ConnectionGuard::new(rates(100), 0);
        assert_eq!(g.admit(101, 100, 0), Admission::Close(Close::TooBig));
        assert_eq!(g.admit(100, 100, 0), Admission::Accept);
    }
}
