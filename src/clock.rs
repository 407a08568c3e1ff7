//! Wall-clock times in the two forms cwbackup writes: RFC 3339 (`2026-11-27T02:15:00.123Z`)
//! for manifests and results, and the compact form (`20261127T021500.123Z`) for set ids.

use std::time::{Duration, Instant, SystemTime};

/// The instant `wait` from now, or about a century from now if that cannot be represented
/// (no wait from a task may make the tool panic).
pub fn deadline_in(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Now, as RFC 3339.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// The compact UTC stamp used in default set ids.
pub fn id_stamp(t: SystemTime) -> String {
    rfc3339(t)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// Whole seconds since an RFC 3339 time (0 if it is unreadable or in the future).
pub fn age_s(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn formats() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_746_900_123);
        assert_eq!(rfc3339(t), "2026-11-27T02:35:00.123Z");
        assert_eq!(id_stamp(t), "20261127T023500.123Z");
    }
}
