//! Times on the wire: ISO-8601 UTC with milliseconds and a `Z` (docs/protocol.md, "Routes").

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

/// `2026-01-20T10:00:00.000Z` for a Unix time in milliseconds.
pub fn iso_from_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Latest time the room's alarm is set for: 2100-01-01T00:00:00Z. The runtime refuses alarms
/// after 2189 (and a `Date` cannot hold much more), and no socket lives that long anyway.
pub const MAX_ALARM_MS: i64 = 4_102_444_800_000;

/// When a socket must close for a token expiring at `exp` (Unix seconds) after `leeway_secs`:
/// saturating, since `exp` comes from the token, and capped at [`MAX_ALARM_MS`] so that a token
/// with a far-future `exp` never makes the alarm unschedulable.
pub fn token_close_ms(exp: i64, leeway_secs: i64) -> i64 {
    exp.saturating_add(leeway_secs)
        .saturating_mul(1000)
        .min(MAX_ALARM_MS)
}

/// A publisher's timestamp in the canonical form, or `None` when it is not an RFC 3339
/// date-time with a zone, or when in UTC it falls outside the years 0000-9999 (e.g.
/// `9999-12-31T23:59:59-01:00`): the canonical form has a four-digit year, which is what
/// JavaScript's `Date` parses.
pub fn normalize_iso(raw: &str) -> Option<String> {
    let parsed = DateTime::parse_from_rfc3339(raw.trim()).ok()?;
    let utc = parsed.with_timezone(&Utc);
    (0..=9999)
        .contains(&utc.year())
        .then(|| utc.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_close_times_saturate_and_stay_schedulable() {
        assert_eq!(token_close_ms(1_700_000_000, 5), 1_700_000_005_000);
        for huge in [99_999_999_999_999, i64::MAX, i64::MAX - 3] {
            assert_eq!(token_close_ms(huge, 5), MAX_ALARM_MS);
        }
        assert!(iso_from_ms(MAX_ALARM_MS).starts_with("2100-01-01"));
    }

    #[test]
    fn formats_and_normalises() {
        assert_eq!(iso_from_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_from_ms(1_768_903_200_123), "2026-01-20T10:00:00.123Z");
        assert_eq!(
            normalize_iso("2026-01-20T11:00:00+01:00").as_deref(),
            Some("2026-01-20T10:00:00.000Z")
        );
        assert_eq!(
            normalize_iso("2026-01-20T10:00:00.5Z").as_deref(),
            Some("2026-01-20T10:00:00.500Z")
        );
        for bad in [
            "",
            "2026-01-20",
            "2026-01-20T10:00:00",
            "noon",
            "2026-13-01T00:00:00Z",
            "9999-12-31T23:59:59-00:01",
            "0000-01-01T00:00:00+00:01",
        ] {
            assert_eq!(normalize_iso(bad), None, "{bad}");
        }
    }
}
