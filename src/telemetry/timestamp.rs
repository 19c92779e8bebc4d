//! The timestamp that opens every log line, `2026-11-30T00:10:57.700432Z`,
//! exactly as tracing-subscriber's `SystemTime` timer writes it, but with
//! the calendar part (`2026-11-30T00:10:57.`) computed once per second per
//! thread: the crate's timer converts the date and pads seven numbers
//! through `fmt::write` on every line, a sixth of a decision line's cost.
//! The calendar arithmetic is the `time` crate's; what is left per line is
//! six digits of microseconds.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// `YYYY-MM-DDTHH:MM:SS.`: the part of a timestamp that one second shares.
type Prefix = [u8; 20];

thread_local! {
    /// The last second this thread wrote, and its prefix.
    static LAST: Cell<Option<(u64, Prefix)>> = const { Cell::new(None) };
}

/// Writes the current time.
pub(crate) fn write_now(w: &mut String) -> fmt::Result {
    write_at(w, SystemTime::now())
}

/// `at` is the current time everywhere but in tests: the fallback, the
/// crate's timer, reads the clock itself.
fn write_at(w: &mut String, at: SystemTime) -> fmt::Result {
    let Ok(since) = at.duration_since(UNIX_EPOCH) else {
        // A clock before 1970: rare enough for the crate's own timer.
        return tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(w));
    };
    let second = since.as_secs();
    let prefix = match LAST.get() {
        Some((last, prefix)) if last == second => prefix,
        _ => match prefix_of(second) {
            Some(prefix) => {
                LAST.set(Some((second, prefix)));
                prefix
            }
            // Past year 9999: the crate's timer, which writes such years.
            None => return tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(w)),
        },
    };
    w.push_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?);
    let mut fraction = *b"000000Z";
    let mut micros = since.subsec_micros();
    for digit in fraction[..6].iter_mut().rev() {
        // `micros % 10` is below 10: the cast cannot truncate.
        *digit = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    w.push_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?);
    Ok(())
}

/// The calendar part of `second` (since the epoch, UTC), for years with
/// four digits.
fn prefix_of(second: u64) -> Option<Prefix> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(second).ok()?).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    let mut text = String::with_capacity(20);
    fmt::Write::write_fmt(
        &mut text,
        format_args!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
    )
    .ok()?;
    text.as_bytes().try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(second: u64, nanos: u32) -> String {
        let mut w = String::new();
        write_at(&mut w, UNIX_EPOCH + Duration::new(second, nanos)).expect("written");
        w
    }

    #[test]
    fn calendar_days_and_microseconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // The day before and the leap day itself (date -u -d @N).
        assert_eq!(at(1_709_164_799, 999_999_999), "2024-02-28T23:59:59.999999Z");
        assert_eq!(at(1_709_251_199, 1_000), "2024-02-29T23:59:59.000001Z");
        assert_eq!(at(1_764_474_370, 123_456_789), "2025-11-30T03:46:10.123456Z");
        assert_eq!(at(253_402_300_799, 5_000), "9999-12-31T23:59:59.000005Z");
    }

    #[test]
    fn a_cached_second_keeps_its_microseconds_and_the_next_second_its_own_date() {
        // The same second twice (the second from the cache), then the next
        // one, which crosses midnight and a month.
        assert_eq!(at(1_709_251_199, 10_000_000), "2024-02-29T23:59:59.010000Z");
        assert_eq!(at(1_709_251_199, 20_000), "2024-02-29T23:59:59.000020Z");
        assert_eq!(at(1_709_251_200, 0), "2024-03-01T00:00:00.000000Z");
    }

    /// What the crate's own timer writes now.
    fn crates_now() -> String {
        let mut theirs = String::new();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .expect("written");
        theirs
    }

    #[test]
    fn outside_four_digit_years_the_crates_timer_writes_the_line() {
        // Not reachable from write_now on a sane clock; the fallback
        // writes the crate's own reading of the clock, of the same shape.
        let ours = at(253_402_300_800, 0);
        let theirs = crates_now();
        assert!(!ours.starts_with("+10000") && !ours.starts_with("10000"), "{ours}");
        assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
        assert!(
            ours[..16] == theirs[..16] || theirs[17..19] == *"00",
            "{ours} vs {theirs}"
        );
    }

    #[test]
    fn now_has_the_shape_and_minute_of_the_crates_timer() {
        let theirs = crates_now();
        let mut ours = String::new();
        write_now(&mut ours).expect("written");
        assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
        // Same up to the minute unless a minute turned between the calls.
        assert!(
            ours[..16] == theirs[..16] || ours[17..19] == *"00",
            "{ours} vs {theirs}"
        );
    }
}
