//! A scanner for the flat JSON objects the gateway sends: the fast path of
//! [`crate::decode`].
//!
//! Gateway messages are one flat object of strings, integers, booleans, nulls
//! and arrays of strings. This scanner reads exactly that shape in one pass
//! over the bytes, borrowing strings from the payload, with no generic
//! visitor machinery. It is deliberately partial: whenever a message is not
//! in the common shape (an escape sequence, a float, a nested object, a
//! duplicate key, a missing field, trailing bytes, bad UTF-8, ...) it gives up
//! and the caller runs the full serde decoder, which decides between accepting
//! the message and naming what is wrong with it. So a message accepted here
//! decodes to exactly what the serde path would produce, and everything else
//! behaves as before.

use std::borrow::Cow;

use smallvec::SmallVec;

/// A cursor over one JSON object's bytes. Every method returns `None` when
/// the input leaves the fast shape.
pub(crate) struct Flat<'a> {
    /// The payload, checked to be UTF-8 once.
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

/// JSON insignificant whitespace (RFC 8259: space, tab, LF, CR).
#[inline]
fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

impl<'a> Flat<'a> {
    /// Starts at the opening brace of `payload`; `None` if it does not open
    /// an object or is not valid UTF-8 (slices between ASCII quotes of valid
    /// UTF-8 are valid UTF-8, so strings need no further check).
    #[inline]
    pub(crate) fn open(payload: &'a [u8]) -> Option<Self> {
        let s = simdutf8::basic::from_utf8(payload).ok()?;
        let mut f = Self {
            s,
            b: payload,
            i: 0,
        };
        f.ws();
        f.eat(b'{')?;
        Some(f)
    }

    #[inline]
    fn ws(&mut self) {
        while self.i < self.b.len() && is_ws(self.b[self.i]) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? == c {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// The next key, or `Some(None)` at the closing brace (after which only
    /// whitespace may follow). Keys with escapes leave the fast path.
    #[inline]
    pub(crate) fn next_key(&mut self, first: bool) -> Option<Option<&'a [u8]>> {
        self.ws();
        match self.peek()? {
            b'}' => {
                self.i += 1;
                self.ws();
                return (self.i == self.b.len()).then_some(None);
            }
            b',' if !first => {
                self.i += 1;
                self.ws();
            }
            b'"' if first => {}
            _ => return None,
        }
        let key = self.raw_string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(Some(key))
    }

    /// The bytes of a string without escapes or control characters, the
    /// cursor on its opening quote.
    #[inline]
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        let (start, end) = self.string_span()?;
        Some(&self.b[start..end])
    }

    /// The byte range of a string without escapes or control characters
    /// (between the quotes), the cursor on its opening quote.
    #[inline]
    fn string_span(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = &self.b[start..];
        // Find the closing quote 8 bytes at a time; the first byte that needs
        // care (quote, backslash, control) in a word is the lowest flagged
        // one, found without a byte loop.
        let mut j = 0;
        while j + 8 <= rest.len() {
            let w = u64::from_le_bytes(rest[j..j + 8].try_into().expect("8 bytes"));
            let flags = care_flags(w);
            if flags != 0 {
                let at = j + (flags.trailing_zeros() / 8) as usize;
                return if rest[at] == b'"' {
                    self.i = start + at + 1;
                    Some((start, start + at))
                } else {
                    None
                };
            }
            j += 8;
        }
        while j < rest.len() {
            match rest[j] {
                b'"' => {
                    self.i = start + j + 1;
                    return Some((start, start + j));
                }
                b'\\' => return None,
                c if c < 0x20 => return None,
                _ => j += 1,
            }
        }
        None
    }

    /// A string value.
    #[inline]
    pub(crate) fn str(&mut self) -> Option<Cow<'a, str>> {
        let (start, end) = self.string_span()?;
        // The whole payload is UTF-8 and the string lies between ASCII
        // quotes, so these are char boundaries (checked in O(1) by `get`).
        Some(Cow::Borrowed(self.s.get(start..end)?))
    }

    /// `null` or a string.
    #[inline]
    pub(crate) fn opt_str(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            Some(None)
        } else {
            self.str().map(Some)
        }
    }

    /// An integer (no fraction, no exponent, no leading zeros) that fits i64.
    #[inline]
    pub(crate) fn i64(&mut self) -> Option<i64> {
        let neg = self.peek()? == b'-';
        if neg {
            self.i += 1;
        }
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        if digits == 0 || (digits > 1 && self.b[start] == b'0') {
            return None;
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(if neg { -v } else { v })
    }

    /// `null` or an integer.
    #[inline]
    pub(crate) fn opt_i64(&mut self) -> Option<Option<i64>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            Some(None)
        } else {
            self.i64().map(Some)
        }
    }

    /// An integer that fits i32.
    #[inline]
    pub(crate) fn i32(&mut self) -> Option<i32> {
        i32::try_from(self.i64()?).ok()
    }

    /// `null` or an integer that fits i32.
    #[inline]
    pub(crate) fn opt_i32(&mut self) -> Option<Option<i32>> {
        match self.opt_i64()? {
            Some(v) => i32::try_from(v).ok().map(Some),
            None => Some(None),
        }
    }

    /// `null` or an array of strings.
    #[inline]
    pub(crate) fn opt_str_list(&mut self) -> Option<Option<SmallVec<[&'a str; 8]>>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|_| None),
            b'[' => {
                self.i += 1;
                self.ws();
                let mut items = SmallVec::new();
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(Some(items));
                }
                loop {
                    let (start, end) = self.string_span()?;
                    items.push(self.s.get(start..end)?);
                    self.ws();
                    match self.peek()? {
                        b',' => {
                            self.i += 1;
                            self.ws();
                        }
                        b']' => {
                            self.i += 1;
                            return Some(Some(items));
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// Skips the value of a key the schema does not know: scalars and
    /// strings only (anything nested leaves the fast path).
    #[inline]
    pub(crate) fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.raw_string().map(|_| ()),
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'-' | b'0'..=b'9' => self.i64().map(|_| ()),
            _ => None,
        }
    }
}

/// The high bit of each byte of the little-endian word `w` that is a quote, a
/// backslash or below 0x20 (the classic SWAR "has byte" tests). Bytes above a
/// flagged one may be flagged falsely (a borrow carries), the lowest flagged
/// byte never is.
#[inline]
fn care_flags(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    let quote = has_zero(w ^ (LO * u64::from(b'"')));
    let backslash = has_zero(w ^ (LO * u64::from(b'\\')));
    // Bytes < 0x20: subtracting 0x20 borrows into the high bit of bytes below
    // it (bytes >= 0x80 are excluded by `!w`).
    let control = w.wrapping_sub(LO * 0x20) & !w & HI;
    quote | backslash | control
}

/// Whether any byte of `w` is a quote, a backslash or below 0x20.
#[cfg(test)]
fn needs_care(w: u64) -> bool {
    care_flags(w) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swar_finds_every_byte_that_needs_care() {
        for pos in 0..8 {
            for c in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                let mut bytes = *b"abcdefgh";
                bytes[pos] = c;
                assert!(needs_care(u64::from_le_bytes(bytes)), "{c} at {pos}");
            }
        }
        assert!(!needs_care(u64::from_le_bytes(*b"abc -_ \x7f")));
        // The lowest flagged byte is the first one that needs care, even
        // with more after it (where borrows may flag bytes falsely).
        for first in 0..8 {
            let mut bytes = *b"\x01\x01\x01\x01\x01\x01\x01\x01";
            bytes[..first].copy_from_slice(&b"abcdefgh"[..first]);
            bytes[first] = b'"';
            let flags = care_flags(u64::from_le_bytes(bytes));
            assert_eq!(flags.trailing_zeros() / 8, first as u32);
        }
        assert!(!needs_care(u64::from_le_bytes(
            "é€abc".as_bytes()[..8].try_into().unwrap()
        )));
    }

    #[test]
    fn scans_a_flat_object() {
        let mut f =
            Flat::open(br#" {"a": "x", "b":-12 ,"c":[ "p","q" ],"d":null,"e":true} "#).unwrap();
        assert_eq!(f.next_key(true), Some(Some(&b"a"[..])));
        assert_eq!(f.str().as_deref(), Some("x"));
        assert_eq!(f.next_key(false), Some(Some(&b"b"[..])));
        assert_eq!(f.i64(), Some(-12));
        assert_eq!(f.next_key(false), Some(Some(&b"c"[..])));
        assert_eq!(
            f.opt_str_list(),
            Some(Some(SmallVec::from_slice(&["p", "q"])))
        );
        assert_eq!(f.next_key(false), Some(Some(&b"d"[..])));
        assert_eq!(f.opt_str(), Some(None));
        assert_eq!(f.next_key(false), Some(Some(&b"e"[..])));
        assert_eq!(f.skip(), Some(()));
        assert_eq!(f.next_key(false), Some(None));
    }

    #[test]
    fn leaves_the_fast_path_on_anything_unusual() {
        let bail = |json: &[u8]| {
            let Some(mut f) = Flat::open(json) else {
                return true;
            };
            let Some(Some(_)) = f.next_key(true) else {
                return true;
            };
            f.skip().is_none() || f.next_key(false) != Some(None)
        };
        assert!(bail(br#"{"a":"x\"y"}"#), "escape");
        assert!(bail(br#"{"a":"0123456789x\"y"}"#), "escape after a word");
        assert!(bail(b"{\"a\":\"0123456789\x1fy\"}"), "control after a word");
        assert!(bail(b"{\"a\":\"x\ty\"}"), "control character");
        assert!(bail(br#"{"a":1.5}"#), "float");
        assert!(bail(br#"{"a":1e3}"#), "exponent");
        assert!(bail(br#"{"a":01}"#), "leading zero");
        assert!(bail(br#"{"a":99999999999999999999}"#), "overflow");
        assert!(bail(br#"{"a":{"b":1}}"#), "nested");
        assert!(bail(br#"{"a":1} x"#), "trailing bytes");
        assert!(bail(br#"{"a":1,}"#), "trailing comma");
        assert!(bail(b"{\"a\":\"\xff\"}"), "bad UTF-8");
        assert!(bail(br#"{"a":nul}"#), "bad literal");
        assert!(!bail(br#"{"a":"a long string of more than eight bytes"}"#));
        assert!(!bail(br#"{"a":-0}"#));
    }
}
