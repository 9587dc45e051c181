//! Wall-clock time as the application stores and shows it: milliseconds
//! since the Unix epoch, and RFC 3339 text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use seawall_perfmon::slowlog::rfc3339;

/// A day in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Now, in milliseconds since the Unix epoch (0 before it, `i64::MAX` past
/// what `i64` holds).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// `ms` since the Unix epoch as RFC 3339 text in UTC (the epoch for a
/// negative `ms`).
///
/// ```
/// assert_eq!(seawall_app::time::timestamp(0), "1970-01-01T00:00:00.000Z");
/// ```
pub fn timestamp(ms: i64) -> String {
    let at = u64::try_from(ms).map_or(UNIX_EPOCH, |ms| UNIX_EPOCH + Duration::from_millis(ms));
    rfc3339(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_before_the_epoch_do_not_panic() {
        assert_eq!(timestamp(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(86_400_000), "1970-01-02T00:00:00.000Z");
    }
}
