//! Times on the wire: ISO-8601 UTC with milliseconds and a `Z` (SPEC, "Routes").

use chrono::{DateTime, SecondsFormat, Utc};

/// `2026-01-20T10:00:00.000Z` for a Unix time in milliseconds.
pub fn iso_from_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A publisher's timestamp in the canonical form, or `None` when it is not an RFC 3339
/// date-time with a zone.
pub fn normalize_iso(raw: &str) -> Option<String> {
    let parsed = DateTime::parse_from_rfc3339(raw.trim()).ok()?;
    Some(
        parsed
            .with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert_eq!(normalize_iso(bad), None, "{bad}");
        }
    }
}
