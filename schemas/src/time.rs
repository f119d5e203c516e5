//! RFC 3339 timestamps to UTC microseconds, without allocation.
//!
//! The gateway writes `2026-11-20T08:15:30.123Z`; any offset (`+08:00`) is
//! accepted and normalised to UTC. A time without an offset is rejected: the
//! contract (SPEC section 2) demands one, and guessing a zone would silently
//! shift events across the hour and day boundaries the rules depend on.

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Parses an RFC 3339 date-time with offset into microseconds since the epoch (UTC).
/// Digits beyond microseconds are truncated.
pub fn parse_rfc3339_micros(s: &str) -> Result<i64, &'static str> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return Err("too short for an RFC 3339 date-time with offset");
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let mut v = 0i64;
        for &c in &b[range] {
            if !c.is_ascii_digit() {
                return Err("expected a digit");
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Ok(v)
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err("expected YYYY-MM-DDTHH:MM:SS");
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("date out of range");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("time of day out of range");
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return Err("expected fraction digits after '.'");
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return Err("offset out of range");
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        None => return Err("missing UTC offset (Z or +HH:MM)"),
        _ => return Err("bad UTC offset or trailing characters"),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// The UTC date (days since the epoch, Arrow `Date32`) of a microsecond timestamp.
pub fn date32_of_micros(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn chrono_micros(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn agrees_with_chrono() {
        for s in [
            "2026-11-20T08:15:30.123Z",
            "2026-11-20T08:15:30Z",
            "2026-11-20T08:15:30.123456789+08:00",
            "2024-02-29T23:59:59.5-05:30",
            "1969-12-31T23:59:59.999999Z",
            "2000-01-01t00:00:00z",
        ] {
            assert_eq!(parse_rfc3339_micros(s).unwrap(), chrono_micros(s), "{s}");
        }
    }

    #[test]
    fn rejects_bad_times() {
        for s in [
            "2026-11-20T08:15:30",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-20T24:00:00Z",
            "2026-11-20 08:15Z",
            "2026-11-20T08:15:30.Z",
            "2026-11-20T08:15:30+0800",
            "2026-11-20T08:15:30Zjunk",
            "20261120T081530Z",
            "2026-11-20T08:15:30.",
        ] {
            assert!(parse_rfc3339_micros(s).is_err(), "{s}");
        }
    }

    #[test]
    fn dates_before_and_after_epoch() {
        assert_eq!(date32_of_micros(0), 0);
        assert_eq!(date32_of_micros(-1), -1);
        assert_eq!(
            date32_of_micros(chrono_micros("2026-11-20T23:59:59Z")),
            days_from_civil(2026, 11, 20) as i32
        );
    }
}
