//! `@at <RFC 3339 time>`: a schedule with one slot, at that instant.

use chrono::{DateTime, Utc};

use crate::ScheduleError;

/// The instant of an `@at` expression; `rest` is what follows `@at`. The time's own offset
/// (`Z`, `+02:00`) decides the instant; precision finer than a millisecond is refused, because
/// slots are whole milliseconds.
pub(crate) fn parse_at_time(rest: &str) -> Result<DateTime<Utc>, ScheduleError> {
    let text = rest.trim();
    if text.is_empty() {
        return Err(ScheduleError::expr(
            "@at needs an RFC 3339 time, e.g. \"@at 2027-01-01T09:00:00Z\"",
        ));
    }
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| {
            ScheduleError::expr(format!(
                "@at: {text:?} is not an RFC 3339 time with an offset, e.g. \
                 \"2027-01-01T09:00:00Z\" or \"2027-01-01T10:00:00+01:00\": {e}"
            ))
        })?
        .with_timezone(&Utc);
    if at.timestamp_subsec_nanos() % 1_000_000 != 0 {
        return Err(ScheduleError::expr(
            "@at: the time must be whole milliseconds",
        ));
    }
    Ok(at)
}
