//! RFC 3339 timestamps, for `--expires` on the command line and for messages.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parse an RFC 3339 timestamp such as `2026-12-31T23:59:59Z` or
/// `2026-12-31T23:59:59.5+02:00`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tollgate_auth::parse_rfc3339;
///
/// let t = parse_rfc3339("1970-01-01T01:00:00+01:00").unwrap();
/// assert_eq!(t, SystemTime::UNIX_EPOCH);
/// assert!(parse_rfc3339("next tuesday").unwrap_err().contains("2026-12-31T23:59:59Z"));
/// ```
///
/// # Errors
///
/// A message that says what was wrong and shows the expected form.
pub fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| {
            format!(
                "{s:?} is not an RFC 3339 timestamp ({e}); write it like 2026-12-31T23:59:59Z or 2026-12-31T23:59:59+02:00"
            )
        })
}

/// Format `t` as RFC 3339 in UTC, e.g. `2026-12-31T23:59:59Z`.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tollgate_auth::format_rfc3339;
///
/// let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_599);
/// assert_eq!(format_rfc3339(t), "2026-12-31T23:59:59Z");
/// ```
pub fn format_rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn parses_offsets_and_fractions() {
        let t = parse_rfc3339("2026-12-01T00:00:00.250Z").expect("valid");
        assert_eq!(
            t,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_083_200_250)
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T02:00:00+02:00").expect("valid"),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_200)
        );
    }

    #[test]
    fn rejects_dates_without_time_or_offset() {
        assert!(parse_rfc3339("2026-12-01").is_err());
        assert!(parse_rfc3339("2026-12-01T00:00:00").is_err());
    }

    #[test]
    fn formats_and_parses_back() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_200);
        assert_eq!(format_rfc3339(t), "2026-12-01T00:00:00Z");
        assert_eq!(parse_rfc3339(&format_rfc3339(t)), Ok(t));
    }
}
