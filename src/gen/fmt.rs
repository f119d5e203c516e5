//! Hand-rolled formatting into a reused `Vec<u8>`: times, integers, ids.
//! Everything written here is plain ASCII that needs no JSON escaping.

/// Milliseconds in a second, minute, hour and day.
pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Civil date (year, month, day) of days since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes UTC milliseconds since the epoch as `2026-11-20T08:15:30.123Z`.
/// Caches the date part of the last day written.
#[derive(Debug, Default)]
pub struct TimeFmt {
    day: Option<i64>,
    date: [u8; 11],
}

impl TimeFmt {
    pub fn write(&mut self, out: &mut Vec<u8>, ms: i64) {
        let day = ms.div_euclid(DAY);
        if self.day != Some(day) {
            let (y, m, d) = civil_from_days(day);
            let s = format!("{y:04}-{m:02}-{d:02}T");
            self.date.copy_from_slice(s.as_bytes());
            self.day = Some(day);
        }
        out.extend_from_slice(&self.date);
        let rem = ms.rem_euclid(DAY);
        let (h, rem) = (rem / HOUR, rem % HOUR);
        let (mi, rem) = (rem / MIN, rem % MIN);
        let (s, milli) = (rem / SEC, rem % SEC);
        two(out, h as u32);
        out.push(b':');
        two(out, mi as u32);
        out.push(b':');
        two(out, s as u32);
        out.push(b'.');
        out.push(b'0' + (milli / 100) as u8);
        out.push(b'0' + (milli / 10 % 10) as u8);
        out.push(b'0' + (milli % 10) as u8);
        out.push(b'Z');
    }
}

/// The RFC 3339 string of a millisecond timestamp (slow path, for reports).
pub fn time_string(ms: i64) -> String {
    let mut v = Vec::with_capacity(24);
    TimeFmt::default().write(&mut v, ms);
    String::from_utf8(v).expect("ASCII")
}

#[inline]
fn two(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Writes an unsigned integer in decimal.
#[inline]
pub fn uint(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Writes `n` lowercase hex digits of the low bits of `v`.
#[inline]
pub fn hex(out: &mut Vec<u8>, v: u64, n: u32) {
    for i in (0..n).rev() {
        out.push(HEX[((v >> (4 * i)) & 0xF) as usize]);
    }
}

/// Writes a version-4-style UUID (36 characters) from 128 random bits.
#[inline]
pub fn uuid(out: &mut Vec<u8>, hi: u64, lo: u64) {
    let hi = (hi & !0xF000) | 0x4000; // version 4
    let lo = (lo & !(0xC000 << 48)) | (0x8000 << 48); // RFC 4122 variant
    hex(out, hi >> 32, 8);
    out.push(b'-');
    hex(out, hi >> 16, 4);
    out.push(b'-');
    hex(out, hi, 4);
    out.push(b'-');
    hex(out, lo >> 48, 4);
    out.push(b'-');
    hex(out, lo, 12);
}

/// A UUID as a `String` (slow path).
pub fn uuid_string(hi: u64, lo: u64) -> String {
    let mut v = Vec::with_capacity(36);
    uuid(&mut v, hi, lo);
    String::from_utf8(v).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_agree_with_chrono() {
        for s in [
            "2026-11-20T08:15:30.123Z",
            "2026-11-01T00:00:00.000Z",
            "1999-12-31T23:59:59.999Z",
            "2028-02-29T12:00:00.007Z",
        ] {
            let ms = chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis();
            assert_eq!(time_string(ms), s);
        }
    }

    #[test]
    fn numbers_and_ids() {
        let mut v = Vec::new();
        for n in [0u64, 7, 10, 123_456, u64::MAX] {
            v.clear();
            uint(&mut v, n);
            assert_eq!(std::str::from_utf8(&v).unwrap(), n.to_string());
        }
        let id = uuid_string(u64::MAX, 0);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(id.matches('-').count(), 4);
    }
}
