//! Limits on what one connection may send: a token bucket at `RATE_LIMIT_PER_MINUTE`, and
//! strike counters that close a connection which keeps sending refused or invalid frames.
//!
//! This state lives in memory only, and that is enough: a room hibernates only after a quiet
//! spell, and a connection that is flooding it keeps it awake.

use crate::codes::Close;
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

/// Counts events within a sliding window.
#[derive(Debug, Clone, Default)]
pub struct Strikes(VecDeque<i64>);

impl Strikes {
    /// Records one strike; true when this is the [`STRIKES_TO_CLOSE`]th within the window.
    pub fn strike(&mut self, now_ms: i64) -> bool {
        while self
            .0
            .front()
            .is_some_and(|&t| now_ms - t >= STRIKE_WINDOW_MS)
        {
            self.0.pop_front();
        }
        self.0.push_back(now_ms);
        self.0.len() >= STRIKES_TO_CLOSE
    }
}

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
}

impl ConnectionGuard {
    pub fn new(per_minute: u32, now_ms: i64) -> ConnectionGuard {
        ConnectionGuard {
            bucket: TokenBucket::new(per_minute, now_ms),
            refused: Strikes::default(),
            invalid: Strikes::default(),
        }
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

    #[test]
    fn the_tenth_refused_frame_closes() {
        let mut g = ConnectionGuard::new(1, 0);
        assert_eq!(g.admit(10, 100, 0), Admission::Accept);
        for _ in 0..9 {
            assert_eq!(g.admit(10, 100, 0), Admission::Refuse);
        }
        assert_eq!(g.admit(10, 100, 0), Admission::Close(Close::RateLimited));
    }

    #[test]
    fn strikes_expire_after_the_window() {
        let mut g = ConnectionGuard::new(100, 0);
        for i in 0..9 {
            assert_eq!(g.invalid(i), None);
        }
        assert_eq!(
            g.invalid(STRIKE_WINDOW_MS + 8),
            None,
            "the old ones expired"
        );
        let mut g = ConnectionGuard::new(100, 0);
        let closes: Vec<_> = (0..10).map(|i| g.invalid(i)).collect();
        assert_eq!(closes[9], Some(Close::InvalidFrames));
        assert!(closes[..9].iter().all(Option::is_none));
    }

    #[test]
    fn oversize_frames_close_with_1009() {
        let mut g = ConnectionGuard::new(100, 0);
        assert_eq!(g.admit(101, 100, 0), Admission::Close(Close::TooBig));
        assert_eq!(g.admit(100, 100, 0), Admission::Accept);
    }
}
