//! Timestamps: unix nanoseconds inside Herald, RFC 3339 UTC with microseconds on the wire.
//!
//! The wire form is always `YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 bytes). Parsing accepts any
//! RFC 3339 time with an offset (`Z` or `±HH:MM`) and 0–9 fractional digits, and rejects times
//! before the unix epoch, since Herald's clock starts there.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the unix epoch, now. A clock before 1970 reads as 0.
pub fn now_ns() -> u64 {
    // Seconds and nanoseconds in u64 (no u128 `as_nanos`).
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    since_epoch.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(since_epoch.subsec_nanos()))
}

/// The wall clock read through the CPU's cycle counter: [`quanta::Instant`]s (a third of the cost of
/// a system clock read here) turned into unix nanoseconds by an anchor, a pair of readings of
/// both clocks, taken again once it is [`WallClock::REANCHOR_AFTER`] old. Between anchors the
/// reading strays from the system clock by the counter's rate error only (well under a
/// microsecond), and a step of the system clock shows at the next anchor. Where `quanta` finds
/// no reliable cycle counter, its instants are the system's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    anchor: quanta::Instant,
    anchor_ns: u64,
}

impl WallClock {
    /// How old an anchor may be.
    pub const REANCHOR_AFTER: Duration = Duration::from_millis(1);

    /// A pair of readings taken together: the system clock read between two counter reads, and
    /// paired with their middle; read again (up to three times) if a preemption came between.
    pub fn new() -> Self {
        let mut tries = 0;
        loop {
            let before = quanta::Instant::now();
            let anchor_ns = now_ns();
            let took = quanta::Instant::now().saturating_duration_since(before);
            tries += 1;
            if took < Duration::from_micros(20) || tries == 3 {
                return WallClock { anchor: before + took / 2, anchor_ns };
            }
        }
    }

    /// Unix nanoseconds at `instant` (an instant taken before the anchor counts back from it).
    pub fn unix_ns(&mut self, instant: quanta::Instant) -> u64 {
        // Old, or far before the anchor (a counter that went back, as after a VM migration):
        // anchor again rather than trust the distance.
        let after = instant.saturating_duration_since(self.anchor);
        let before = self.anchor.saturating_duration_since(instant);
        if after > Self::REANCHOR_AFTER || before > Self::REANCHOR_AFTER {
            *self = WallClock::new();
        }
        match instant.checked_duration_since(self.anchor) {
            Some(after) => self.anchor_ns.saturating_add(duration_ns(after)),
            None => self.anchor_ns.saturating_sub(duration_ns(self.anchor.duration_since(instant))),
        }
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

fn duration_ns(duration: Duration) -> u64 {
    duration.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(duration.subsec_nanos()))
}

/// Formats unix nanoseconds as `2026-11-26T20:00:00.123456Z` (truncated to microseconds).
pub fn format_rfc3339_micros(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let days = (secs / 86_400) as i64;
    let second_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        second_of_day / 3600,
        (second_of_day / 60) % 60,
        second_of_day % 60
    )
}

/// Parses an RFC 3339 timestamp into unix nanoseconds (saturating at `u64::MAX` past 2554).
pub fn parse_rfc3339(text: &str) -> Result<u64, String> {
    let bytes = text.as_bytes();
    let bad = || format!("`{text}` is not an RFC 3339 timestamp");
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' || bytes[16] != b':' {
        return Err(bad());
    }
    if !matches!(bytes[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut rest = &bytes[19..];
    let mut nanos: i64 = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        for (i, digit) in fraction[..digits].iter().enumerate() {
            if i < 9 {
                nanos = nanos * 10 + i64::from(digit - b'0');
            }
        }
        for _ in digits..9 {
            nanos *= 10;
        }
        rest = &fraction[digits..];
    }
    let offset_seconds: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let field = [*h1, *h2, *m1, *m2];
            if !field.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            let hours = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let minutes = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            let value = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                value
            } else {
                -value
            }
        }
        _ => return Err(bad()),
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_seconds;
    if seconds < 0 {
        return Err(format!("`{text}` is before 1970-01-01T00:00:00Z"));
    }
    // Past 2554-07-21 unix nanoseconds overflow 64 bits: such a time is later than every
    // event, so it saturates (a `since` that far ahead reads nothing rather than failing).
    Ok(u64::try_from(seconds)
        .ok()
        .and_then(|s| s.checked_mul(1_000_000_000))
        .and_then(|ns| ns.checked_add(nanos as u64))
        .unwrap_or(u64::MAX))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (public-domain algorithms).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wall_clock_follows_the_system_clock_and_counts_back_before_its_anchor() {
        let before = quanta::Instant::now();
        let mut clock = WallClock::new();
        let system_ns = now_ns();
        let ns = clock.unix_ns(quanta::Instant::now());
        // Both read "now": they differ by the reads' own cost, far below a millisecond.
        assert!(ns.abs_diff(system_ns) < 1_000_000, "{ns} vs {system_ns}");
        assert!(clock.unix_ns(before) <= ns);
        std::thread::sleep(WallClock::REANCHOR_AFTER * 3);
        let later = quanta::Instant::now();
        let anchored_before = clock.anchor;
        let later_ns = clock.unix_ns(later);
        assert_ne!(clock.anchor, anchored_before, "an old anchor is taken again");
        assert!(later_ns.abs_diff(now_ns()) < 1_000_000);
        assert!(later_ns >= ns + 3_000_000 - 1_000_000);
    }

    #[test]
    fn formats_with_microseconds() {
        assert_eq!(format_rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-26T20:00:00.123456789Z
        let ns = 1_795_723_200_123_456_789;
        assert_eq!(format_rfc3339_micros(ns), "2026-11-26T20:00:00.123456Z");
        assert_eq!(format_rfc3339_micros(951_782_400_000_000_000), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for ns in [0, 1_795_723_200_123_456_000, 951_782_400_000_000_000, 4_102_444_799_999_999_000] {
            assert_eq!(parse_rfc3339(&format_rfc3339_micros(ns)), Ok(ns));
        }
        assert_eq!(parse_rfc3339("2026-11-26T21:00:00.5+01:00"), Ok(1_795_723_200_500_000_000));
        assert_eq!(parse_rfc3339("2026-11-26T20:00:00Z"), Ok(1_795_723_200_000_000_000));
    }

    #[test]
    fn rejects_malformed_times() {
        for text in [
            "",
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-26T20:00:00",
            "2026-11-26T20:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-11-26T2a:00:00Z",
            "2026-11-26T20:00:00+0100",
        ] {
            assert!(parse_rfc3339(text).is_err(), "{text} should be rejected");
        }
    }
}
