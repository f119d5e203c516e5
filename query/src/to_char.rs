//! `to_char` that also reads PostgreSQL's template patterns.
//!
//! DataFusion's `to_char(time, format)` takes chrono's `strftime` format
//! (`%Y-%m-%d`); PostgreSQL's takes template patterns (`YYYY-MM-DD`). A
//! PostgreSQL format given to DataFusion's is copied out as literal text, so
//! `to_char(event_time, 'YYYY-MM-DD')` answered `YYYY-MM-DD` for every row and
//! a `GROUP BY` over it silently put every row in one group. Analysts and BI
//! tools over `serve` write PostgreSQL's, so [`PgToChar`] reads a format
//! without `%` (which in chrono's syntax could only print itself) as
//! PostgreSQL's and formats it itself; a format with `%` is chrono's and goes
//! to DataFusion's `to_char` unchanged.
//!
//! # The PostgreSQL formatter
//!
//! A template is parsed once into [`Template`] (literal text, and patterns
//! with their `FM`/`TM` prefix and `TH`/`th` suffix) following PostgreSQL
//! 15's `formatting.c`: at each position at most one prefix, then the first
//! pattern of PostgreSQL's table that matches exactly, so the longest wins
//! (`HH24` before `HH`, `YYYY` before `YYY` before `YY` before `Y`, `IDDD`
//! before `ID`, `SSSSS` before `SSSS` before `SS`, `MONTH` before `MON`,
//! `DDD` before `DD` before `D`). Patterns are case-sensitive as in
//! PostgreSQL: the numeric ones are listed in upper and lower case (`yyyy`,
//! `hh24`), while the case of a name pattern sets the output's case
//! (`MONTH`/`Month`/`month` print `NOVEMBER`/`November`/`november`; so do
//! `MON`, `DAY`, `DY`, `RM`, `AM`, `A.M.`, `AD`, `TZ`). Anything else is
//! text: `"double-quoted"` text is copied (a backslash in it escapes the next
//! character), and outside quotes `\"` is a literal quote. A scalar format
//! (the usual case) is parsed once per batch, an array of formats per row.
//!
//! Every pattern of PostgreSQL 15's Table 9.26 is rendered, with the padding
//! rules of its source: numbers are zero-padded to their width unless `FM`
//! is given (`MS`, `US`, `FF1`..`FF6` are always full width); `MONTH`/`DAY`
//! names are blank-padded to 9 characters and `RM` to 4 unless `FM` (or, for
//! names, `TM`) is given; `TH`/`th` appends the ordinal suffix (`DDth` =
//! `01st`); `FX` and the `SP` suffix print nothing. An empty format gives
//! NULL, as in PostgreSQL.
//!
//! Values: timestamps of every unit, `Date32`, `Date64` (dates at midnight),
//! and times (`Time32`/`Time64`: PostgreSQL formats a time as an interval;
//! here the time-of-day patterns print and any other is an error). A
//! timestamp with a zone prints in that zone's local time; every time in the
//! lake is UTC, and so is a timestamp without a zone here.
//!
//! Left out, by design or for lack of data:
//! - `TM` (translation mode) prints English names, as PostgreSQL does under
//!   the C locale: there is no `lc_time` here.
//! - `TZ`/`tz` print `UTC`/`utc` for UTC and for timestamps without a zone
//!   (PostgreSQL prints nothing for `timestamp without time zone`; in this
//!   lake those are UTC). For another zone they print its offset in tzdata's
//!   numeric style (`+0530`, `-05`), not its letters (`EST`): the zone
//!   database's abbreviations are not reachable through arrow's `Tz`.
//! - Nanoseconds are truncated to microseconds, PostgreSQL's precision.
//! - Durations (and anything else DataFusion's `to_char` accepts that is not
//!   listed above) go to DataFusion's `to_char` whatever the format.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use arrow::datatypes::{
    ArrowTemporalType, DataType, Date32Type, Date64Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Offset, Timelike};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};

/// The case a name pattern prints in, set by how the pattern is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// `MONTH`: `NOVEMBER`.
    Upper,
    /// `Month`: `November`.
    Title,
    /// `month`: `november`.
    Lower,
}

/// How an `AM`/`PM` or `AD`/`BC` pattern is written, which is how it prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    /// `AM`: `AM`/`PM`.
    Upper,
    /// `am`: `am`/`pm`.
    Lower,
    /// `A.M.`: `A.M.`/`P.M.`.
    UpperDots,
    /// `a.m.`: `a.m.`/`p.m.`.
    LowerDots,
}

impl Marker {
    /// Writes `first` (`AM`) or `second` (`PM`) in this marker's form.
    fn write(self, out: &mut impl fmt::Write, first: bool, names: [&str; 2]) -> fmt::Result {
        let name = names[usize::from(!first)];
        let (case, dots) = match self {
            Marker::Upper => (Case::Upper, false),
            Marker::Lower => (Case::Lower, false),
            Marker::UpperDots => (Case::Upper, true),
            Marker::LowerDots => (Case::Lower, true),
        };
        for c in name.chars() {
            out.write_char(if case == Case::Upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            })?;
            if dots {
                out.write_char('.')?;
            }
        }
        Ok(())
    }
}

/// A PostgreSQL template pattern (Table 9.26).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    /// `AD`, `BC`, `A.D.`, `B.C.` and lower case: the era.
    Era(Marker),
    /// `AM`, `PM`, `A.M.`, `P.M.` and lower case: the meridiem.
    Meridiem(Marker),
    /// `CC`: century.
    Century,
    /// `DAY`, `Day`, `day`: full day name, blank-padded to 9.
    DayName(Case),
    /// `DY`, `Dy`, `dy`: abbreviated day name.
    DayAbbrev(Case),
    /// `DDD`: day of year (001-366).
    DayOfYear,
    /// `DD`: day of month (01-31).
    DayOfMonth,
    /// `D`: day of the week, Sunday (1) to Saturday (7).
    DayOfWeek,
    /// `FF1`..`FF6`: tenths of a second .. microseconds.
    Fraction(u8),
    /// `FX`: fixed format, only meaningful to `to_timestamp`.
    FixedFormat,
    /// `HH24`: hour of day (00-23).
    Hour24,
    /// `HH`, `HH12`: hour of day (01-12).
    Hour12,
    /// `IDDD`: day of the ISO 8601 week-numbering year (001-371).
    IsoDayOfYear,
    /// `ID`: ISO 8601 day of the week, Monday (1) to Sunday (7).
    IsoDayOfWeek,
    /// `IW`: ISO 8601 week of the year (01-53).
    IsoWeek,
    /// `IYYY`, `IYY`, `IY`, `I`: last 4, 3, 2, 1 digits of the ISO 8601 year.
    IsoYear(u8),
    /// `J`: Julian day (days since November 24, 4714 BC at midnight UTC).
    Julian,
    /// `MI`: minute (00-59).
    Minute,
    /// `MM`: month number (01-12).
    Month,
    /// `MONTH`, `Month`, `month`: full month name, blank-padded to 9.
    MonthName(Case),
    /// `MON`, `Mon`, `mon`: abbreviated month name.
    MonthAbbrev(Case),
    /// `MS`: millisecond (000-999).
    Millisecond,
    /// `OF`: offset from UTC (`+05`, `-03:30`).
    UtcOffset,
    /// `Q`: quarter.
    Quarter,
    /// `RM`, `rm`: month in Roman numerals, blank-padded to 4.
    Roman { upper: bool },
    /// `SSSS`, `SSSSS`: seconds past midnight (0-86399).
    SecondsOfDay,
    /// `SS`: second (00-59).
    Second,
    /// `TZH`: hours of the offset from UTC, with sign.
    OffsetHours,
    /// `TZM`: minutes of the offset from UTC.
    OffsetMinutes,
    /// `TZ`, `tz`: time zone abbreviation.
    Zone { upper: bool },
    /// `US`: microsecond (000000-999999).
    Microsecond,
    /// `WW`: week of the year (1-53), the first week starting on January 1.
    WeekOfYear,
    /// `W`: week of the month (1-5), the first week starting on the 1st.
    WeekOfMonth,
    /// `Y,YYY`: year with a comma.
    YearComma,
    /// `YYYY`, `YYY`, `YY`, `Y`: year, or its last 3, 2, 1 digits.
    Year(u8),
}

use Pattern as P;

/// PostgreSQL 15's `DCH_keywords`, in its order: at a position the first
/// entry the template starts with wins, which puts the longest first.
const KEYWORDS: &[(&str, Pattern)] = &[
    ("A.D.", P::Era(Marker::UpperDots)),
    ("A.M.", P::Meridiem(Marker::UpperDots)),
    ("AD", P::Era(Marker::Upper)),
    ("AM", P::Meridiem(Marker::Upper)),
    ("B.C.", P::Era(Marker::UpperDots)),
    ("BC", P::Era(Marker::Upper)),
    ("CC", P::Century),
    ("DAY", P::DayName(Case::Upper)),
    ("DDD", P::DayOfYear),
    ("DD", P::DayOfMonth),
    ("DY", P::DayAbbrev(Case::Upper)),
    ("Day", P::DayName(Case::Title)),
    ("Dy", P::DayAbbrev(Case::Title)),
    ("D", P::DayOfWeek),
    ("FF1", P::Fraction(1)),
    ("FF2", P::Fraction(2)),
    ("FF3", P::Fraction(3)),
    ("FF4", P::Fraction(4)),
    ("FF5", P::Fraction(5)),
    ("FF6", P::Fraction(6)),
    ("FX", P::FixedFormat),
    ("HH24", P::Hour24),
    ("HH12", P::Hour12),
    ("HH", P::Hour12),
    ("IDDD", P::IsoDayOfYear),
    ("ID", P::IsoDayOfWeek),
    ("IW", P::IsoWeek),
    ("IYYY", P::IsoYear(4)),
    ("IYY", P::IsoYear(3)),
    ("IY", P::IsoYear(2)),
    ("I", P::IsoYear(1)),
    ("J", P::Julian),
    ("MI", P::Minute),
    ("MM", P::Month),
    ("MONTH", P::MonthName(Case::Upper)),
    ("MON", P::MonthAbbrev(Case::Upper)),
    ("MS", P::Millisecond),
    ("Month", P::MonthName(Case::Title)),
    ("Mon", P::MonthAbbrev(Case::Title)),
    ("OF", P::UtcOffset),
    ("P.M.", P::Meridiem(Marker::UpperDots)),
    ("PM", P::Meridiem(Marker::Upper)),
    ("Q", P::Quarter),
    ("RM", P::Roman { upper: true }),
    ("SSSSS", P::SecondsOfDay),
    ("SSSS", P::SecondsOfDay),
    ("SS", P::Second),
    ("TZH", P::OffsetHours),
    ("TZM", P::OffsetMinutes),
    ("TZ", P::Zone { upper: true }),
    ("US", P::Microsecond),
    ("WW", P::WeekOfYear),
    ("W", P::WeekOfMonth),
    ("Y,YYY", P::YearComma),
    ("YYYY", P::Year(4)),
    ("YYY", P::Year(3)),
    ("YY", P::Year(2)),
    ("Y", P::Year(1)),
    ("a.d.", P::Era(Marker::LowerDots)),
    ("a.m.", P::Meridiem(Marker::LowerDots)),
    ("ad", P::Era(Marker::Lower)),
    ("am", P::Meridiem(Marker::Lower)),
    ("b.c.", P::Era(Marker::LowerDots)),
    ("bc", P::Era(Marker::Lower)),
    ("cc", P::Century),
    ("day", P::DayName(Case::Lower)),
    ("ddd", P::DayOfYear),
    ("dd", P::DayOfMonth),
    ("dy", P::DayAbbrev(Case::Lower)),
    ("d", P::DayOfWeek),
    ("ff1", P::Fraction(1)),
    ("ff2", P::Fraction(2)),
    ("ff3", P::Fraction(3)),
    ("ff4", P::Fraction(4)),
    ("ff5", P::Fraction(5)),
    ("ff6", P::Fraction(6)),
    ("fx", P::FixedFormat),
    ("hh24", P::Hour24),
    ("hh12", P::Hour12),
    ("hh", P::Hour12),
    ("iddd", P::IsoDayOfYear),
    ("id", P::IsoDayOfWeek),
    ("iw", P::IsoWeek),
    ("iyyy", P::IsoYear(4)),
    ("iyy", P::IsoYear(3)),
    ("iy", P::IsoYear(2)),
    ("i", P::IsoYear(1)),
    ("j", P::Julian),
    ("mi", P::Minute),
    ("mm", P::Month),
    ("month", P::MonthName(Case::Lower)),
    ("mon", P::MonthAbbrev(Case::Lower)),
    ("ms", P::Millisecond),
    ("of", P::UtcOffset),
    ("p.m.", P::Meridiem(Marker::LowerDots)),
    ("pm", P::Meridiem(Marker::Lower)),
    ("q", P::Quarter),
    ("rm", P::Roman { upper: false }),
    ("sssss", P::SecondsOfDay),
    ("ssss", P::SecondsOfDay),
    ("ss", P::Second),
    ("tzh", P::OffsetHours),
    ("tzm", P::OffsetMinutes),
    ("tz", P::Zone { upper: false }),
    ("us", P::Microsecond),
    ("ww", P::WeekOfYear),
    ("w", P::WeekOfMonth),
    ("y,yyy", P::YearComma),
    ("yyyy", P::Year(4)),
    ("yyy", P::Year(3)),
    ("yy", P::Year(2)),
    ("y", P::Year(1)),
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Sunday first, as PostgreSQL's `tm_wday`.
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const ROMAN_MONTHS: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

/// Julian day of 0001-01-01 (proleptic Gregorian) minus one: chrono's
/// `num_days_from_ce` counts that day as 1.
const JULIAN_DAY_OF_CE: i64 = 1_721_425;

/// The `TH`/`th` suffix of a numeric pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ordinal {
    None,
    Upper,
    Lower,
}

/// A pattern with its modifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    pattern: Pattern,
    /// The pattern as written, for error messages.
    name: &'static str,
    /// `FM`: no padding.
    fill: bool,
    /// `TM`: localized names (English here; unpadded, as PostgreSQL's).
    translate: bool,
    ordinal: Ordinal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Text(String),
    Field(Field),
}

/// A parsed PostgreSQL `to_char` template; see the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    items: Vec<Item>,
}

/// One value to format: its wall-clock time in its zone, and the zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    /// Local (wall-clock) date and time.
    pub local: NaiveDateTime,
    /// Seconds east of UTC.
    pub offset: i32,
    /// Whether the zone is UTC (`TZ` prints `UTC`).
    pub utc: bool,
}

impl Moment {
    /// A UTC moment.
    pub fn utc(local: NaiveDateTime) -> Self {
        Self {
            local,
            offset: 0,
            utc: true,
        }
    }
}

impl Template {
    /// Parses `template` as PostgreSQL's `parse_format` does.
    pub fn parse(template: &str) -> Self {
        let mut items = Vec::new();
        let mut text = String::new();
        let mut rest = template;
        while !rest.is_empty() {
            // At most one prefix; PostgreSQL drops it if no pattern follows.
            let (fill, translate) = if let Some(r) = strip_either(rest, "FM", "fm") {
                rest = r;
                (true, false)
            } else if let Some(r) = strip_either(rest, "TM", "tm") {
                rest = r;
                (false, true)
            } else {
                (false, false)
            };
            if let Some((name, pattern)) = KEYWORDS.iter().find(|(k, _)| rest.starts_with(k)) {
                rest = &rest[name.len()..];
                let ordinal = if let Some(r) = rest.strip_prefix("TH") {
                    rest = r;
                    Ordinal::Upper
                } else if let Some(r) = rest.strip_prefix("th") {
                    rest = r;
                    Ordinal::Lower
                } else {
                    // `SP` (spell mode) is accepted and, as in PostgreSQL, does nothing.
                    if let Some(r) = rest.strip_prefix("SP") {
                        rest = r;
                    }
                    Ordinal::None
                };
                if !text.is_empty() {
                    items.push(Item::Text(std::mem::take(&mut text)));
                }
                items.push(Item::Field(Field {
                    pattern: *pattern,
                    name,
                    fill,
                    translate,
                    ordinal,
                }));
                continue;
            }
            let mut chars = rest.chars();
            match chars.next() {
                Some('"') => {
                    // Quoted text up to the closing quote; `\` escapes the next character.
                    loop {
                        match chars.next() {
                            None | Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(c) => text.push(c),
                                None => {
                                    text.push('\\');
                                    break;
                                }
                            },
                            Some(c) => text.push(c),
                        }
                    }
                }
                // Outside quotes a backslash is special only before a quote.
                Some('\\') if chars.as_str().starts_with('"') => {
                    chars.next();
                    text.push('"');
                }
                Some(c) => text.push(c),
                None => {}
            }
            rest = chars.as_str();
        }
        if !text.is_empty() {
            items.push(Item::Text(text));
        }
        Self { items }
    }

    /// The first pattern that needs a date (or a zone), as written; a time
    /// value can print only the others.
    fn date_pattern(&self) -> Option<&'static str> {
        self.items.iter().find_map(|item| match item {
            Item::Field(f) if !f.pattern.is_time_of_day() => Some(f.name),
            _ => None,
        })
    }

    /// Writes `moment` formatted by this template to `out`.
    pub fn render(&self, moment: &Moment, out: &mut impl fmt::Write) -> fmt::Result {
        for item in &self.items {
            match item {
                Item::Text(text) => out.write_str(text)?,
                Item::Field(field) => field.render(moment, out)?,
            }
        }
        Ok(())
    }

    /// `moment` formatted by this template.
    pub fn format(&self, moment: &Moment) -> String {
        let mut out = String::new();
        // Writing to a `String` cannot fail.
        let _ = self.render(moment, &mut out);
        out
    }
}

/// `text` without a leading `upper` or `lower`.
fn strip_either<'a>(text: &'a str, upper: &str, lower: &str) -> Option<&'a str> {
    text.strip_prefix(upper)
        .or_else(|| text.strip_prefix(lower))
}

impl Pattern {
    /// Whether the pattern reads only the time of day.
    fn is_time_of_day(self) -> bool {
        matches!(
            self,
            P::Meridiem(_)
                | P::Fraction(_)
                | P::FixedFormat
                | P::Hour24
                | P::Hour12
                | P::Minute
                | P::Millisecond
                | P::SecondsOfDay
                | P::Second
                | P::Microsecond
        )
    }
}

/// Years as PostgreSQL prints them: no year 0, 1 BC is year 1 (of its era).
fn era_year(year: i32) -> i64 {
    let year = i64::from(year);
    if year <= 0 { 1 - year } else { year }
}

/// The English ordinal suffix of `n` (`st`, `nd`, `rd`, `th`).
fn ordinal_suffix(n: i64) -> &'static str {
    let n = n.unsigned_abs();
    if n / 10 % 10 == 1 {
        return "th";
    }
    match n % 10 {
        1 => "st",
        2 => "nd",
        3 => "rd",
        _ => "th",
    }
}

/// Writes `name` in `case`, blank-padded on the right to `width`.
fn write_name(out: &mut impl fmt::Write, name: &str, case: Case, width: usize) -> fmt::Result {
    for (i, c) in name.chars().enumerate() {
        out.write_char(match case {
            Case::Upper => c.to_ascii_uppercase(),
            Case::Title if i == 0 => c.to_ascii_uppercase(),
            Case::Title | Case::Lower => c.to_ascii_lowercase(),
        })?;
    }
    for _ in name.len()..width {
        out.write_char(' ')?;
    }
    Ok(())
}

/// Writes an offset from UTC as a sign and hours zero-padded to `width`,
/// then `separator` and minutes if it is not a whole number of hours.
fn write_offset(
    out: &mut impl fmt::Write,
    offset: i32,
    width: usize,
    separator: &str,
) -> fmt::Result {
    let sign = if offset >= 0 { '+' } else { '-' };
    let abs = offset.unsigned_abs();
    write!(out, "{sign}{:0width$}", abs / 3600)?;
    if !abs.is_multiple_of(3600) {
        write!(out, "{separator}{:02}", abs % 3600 / 60)?;
    }
    Ok(())
}

impl Field {
    /// Writes `value` zero-padded to `width` (none with `FM`), then the ordinal suffix.
    fn number(&self, out: &mut impl fmt::Write, value: i64, width: usize) -> fmt::Result {
        let width = if self.fill { 0 } else { width };
        write!(out, "{value:0width$}")?;
        self.suffix(out, value)
    }

    /// Writes the `TH`/`th` suffix for `value`, if asked for.
    fn suffix(&self, out: &mut impl fmt::Write, value: i64) -> fmt::Result {
        match self.ordinal {
            Ordinal::None => Ok(()),
            Ordinal::Lower => out.write_str(ordinal_suffix(value)),
            Ordinal::Upper => write_name(out, ordinal_suffix(value), Case::Upper, 0),
        }
    }

    /// Writes a month or day name: padded to 9 unless `FM` or `TM`.
    fn name(&self, out: &mut impl fmt::Write, name: &str, case: Case, pad: bool) -> fmt::Result {
        let width = if pad && !self.fill && !self.translate {
            9
        } else {
            0
        };
        write_name(out, name, case, width)
    }

    fn render(&self, m: &Moment, out: &mut impl fmt::Write) -> fmt::Result {
        let t = &m.local;
        let micros = i64::from(t.nanosecond().min(999_999_999) / 1000);
        match self.pattern {
            P::Era(marker) => marker.write(out, t.year() > 0, ["AD", "BC"]),
            P::Meridiem(marker) => marker.write(out, t.hour() < 12, ["AM", "PM"]),
            P::Century => {
                let year = t.year();
                let century = if year > 0 {
                    (year - 1) / 100 + 1
                } else {
                    year / 100 - 1
                };
                self.number(out, i64::from(century), if century >= 0 { 2 } else { 3 })
            }
            P::DayName(case) => {
                let day = DAYS[t.weekday().num_days_from_sunday() as usize];
                self.name(out, day, case, true)
            }
            P::DayAbbrev(case) => {
                let day = DAYS[t.weekday().num_days_from_sunday() as usize];
                self.name(out, &day[..3], case, false)
            }
            P::DayOfYear => self.number(out, i64::from(t.ordinal()), 3),
            P::DayOfMonth => self.number(out, i64::from(t.day()), 2),
            P::DayOfWeek => self.number(out, i64::from(t.weekday().number_from_sunday()), 0),
            P::Fraction(digits) => {
                let digits = usize::from(digits);
                let value = micros / 10_i64.pow(6 - digits as u32);
                write!(out, "{value:0digits$}")?;
                self.suffix(out, value)
            }
            P::FixedFormat => Ok(()),
            P::Hour24 => self.number(out, i64::from(t.hour()), 2),
            P::Hour12 => {
                let hour = match t.hour() % 12 {
                    0 => 12,
                    h => h,
                };
                self.number(out, i64::from(hour), 2)
            }
            P::IsoDayOfYear => {
                let week = t.iso_week().week();
                let day = (week - 1) * 7 + t.weekday().number_from_monday();
                self.number(out, i64::from(day), 3)
            }
            P::IsoDayOfWeek => self.number(out, i64::from(t.weekday().number_from_monday()), 0),
            P::IsoWeek => self.number(out, i64::from(t.iso_week().week()), 2),
            P::IsoYear(digits) => self.year(out, era_year(t.iso_week().year()), digits),
            P::Julian => {
                let day = i64::from(t.date().num_days_from_ce()) + JULIAN_DAY_OF_CE;
                self.number(out, day, 0)
            }
            P::Minute => self.number(out, i64::from(t.minute()), 2),
            P::Month => self.number(out, i64::from(t.month()), 2),
            P::MonthName(case) => self.name(out, MONTHS[t.month0() as usize], case, true),
            P::MonthAbbrev(case) => self.name(out, &MONTHS[t.month0() as usize][..3], case, false),
            P::Millisecond => {
                let value = micros / 1000;
                write!(out, "{value:03}")?;
                self.suffix(out, value)
            }
            P::UtcOffset => write_offset(out, m.offset, if self.fill { 0 } else { 2 }, ":"),
            P::Quarter => self.number(out, i64::from(t.month0() / 3 + 1), 0),
            P::Roman { upper } => {
                let numeral = ROMAN_MONTHS[t.month0() as usize];
                let case = if upper { Case::Upper } else { Case::Lower };
                write_name(out, numeral, case, if self.fill { 0 } else { 4 })
            }
            P::SecondsOfDay => self.number(out, i64::from(t.num_seconds_from_midnight()), 0),
            P::Second => self.number(out, i64::from(t.second()), 2),
            P::OffsetHours => {
                let sign = if m.offset >= 0 { '+' } else { '-' };
                write!(out, "{sign}{:02}", m.offset.unsigned_abs() / 3600)
            }
            P::OffsetMinutes => write!(out, "{:02}", m.offset.unsigned_abs() % 3600 / 60),
            P::Zone { upper } => {
                if m.utc {
                    out.write_str(if upper { "UTC" } else { "utc" })
                } else {
                    // tzdata's numeric abbreviation: `+05`, `+0530`.
                    write_offset(out, m.offset, 2, "")
                }
            }
            P::Microsecond => {
                write!(out, "{micros:06}")?;
                self.suffix(out, micros)
            }
            P::WeekOfYear => self.number(out, i64::from((t.ordinal() - 1) / 7 + 1), 2),
            P::WeekOfMonth => self.number(out, i64::from((t.day() - 1) / 7 + 1), 0),
            P::YearComma => {
                let year = era_year(t.year());
                write!(out, "{},{:03}", year / 1000, year % 1000)?;
                self.suffix(out, year)
            }
            P::Year(digits) => self.year(out, era_year(t.year()), digits),
        }
    }

    /// `YYYY`/`YYY`/`YY`/`Y` (and the ISO `I` forms): the last `digits`
    /// digits (all of them for 4), zero-padded to `digits`.
    fn year(&self, out: &mut impl fmt::Write, year: i64, digits: u8) -> fmt::Result {
        let value = match digits {
            4 => year,
            d => year % 10_i64.pow(u32::from(d)),
        };
        self.number(out, value, usize::from(digits))
    }
}

/// Reads row `i` of a date/time array; `None` outside chrono's range.
type Reader<'a> = Box<dyn Fn(usize) -> Option<Moment> + 'a>;

/// Whether [`PgToChar`] formats values of `data_type` itself.
fn handled(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Timestamp(_, _)
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(TimeUnit::Second | TimeUnit::Millisecond)
            | DataType::Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond)
    )
}

/// A reader of `array`'s rows, if it is of a [`handled`] type.
fn reader(array: &dyn Array) -> Option<Reader<'_>> {
    let tz = match array.data_type() {
        DataType::Timestamp(_, tz) => tz.as_deref(),
        _ => None,
    };
    Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => timestamps::<TimestampSecondType>(array, tz),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            timestamps::<TimestampMillisecondType>(array, tz)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            timestamps::<TimestampMicrosecondType>(array, tz)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            timestamps::<TimestampNanosecondType>(array, tz)
        }
        DataType::Date32 => naive::<Date32Type>(array),
        DataType::Date64 => naive::<Date64Type>(array),
        DataType::Time32(TimeUnit::Second) => times::<Time32SecondType>(array),
        DataType::Time32(TimeUnit::Millisecond) => times::<Time32MillisecondType>(array),
        DataType::Time64(TimeUnit::Microsecond) => times::<Time64MicrosecondType>(array),
        DataType::Time64(TimeUnit::Nanosecond) => times::<Time64NanosecondType>(array),
        _ => return None,
    })
}

/// Dates and timestamps read as UTC.
fn naive<'a, T: ArrowTemporalType>(array: &'a dyn Array) -> Reader<'a>
where
    i64: From<T::Native>,
{
    let array = array.as_primitive::<T>();
    Box::new(move |i| array.value_as_datetime(i).map(Moment::utc))
}

/// Timestamps, in the local time of their zone unless that is UTC (or unknown).
fn timestamps<'a, T: ArrowTemporalType>(array: &'a dyn Array, tz: Option<&str>) -> Reader<'a>
where
    i64: From<T::Native>,
{
    let Some(zone) = tz
        .filter(|tz| !crate::functions::is_utc(tz))
        .and_then(|tz| Tz::from_str(tz).ok())
    else {
        return naive::<T>(array);
    };
    let array = array.as_primitive::<T>();
    Box::new(move |i| {
        let time = array.value_as_datetime_with_tz(i, zone)?;
        Some(Moment {
            local: time.naive_local(),
            offset: time.offset().fix().local_minus_utc(),
            utc: false,
        })
    })
}

/// Times of day, on an arbitrary date (their templates print no date).
fn times<'a, T: ArrowTemporalType>(array: &'a dyn Array) -> Reader<'a>
where
    i64: From<T::Native>,
{
    let array = array.as_primitive::<T>();
    Box::new(move |i| {
        let time = array.value_as_time(i)?;
        Some(Moment::utc(NaiveDate::default().and_time(time)))
    })
}

/// Whether values of `data_type` can be formatted by `template`.
fn check(template: &Template, data_type: &DataType) -> Result<()> {
    if matches!(data_type, DataType::Time32(_) | DataType::Time64(_))
        && let Some(name) = template.date_pattern()
    {
        return exec_err!("to_char: a time value has no date or zone for pattern \"{name}\"");
    }
    Ok(())
}

/// Formats row `i` of `array` (not null) into `builder`.
fn format_row(
    template: &Template,
    read: &Reader<'_>,
    i: usize,
    builder: &mut StringBuilder,
) -> Result<()> {
    let moment = read(i).ok_or_else(|| exec_datafusion_err!("to_char: value out of range"))?;
    template
        .render(&moment, builder)
        .map_err(|e| exec_datafusion_err!("to_char: {e}"))?;
    builder.append_value("");
    Ok(())
}

/// Formats `value` with one template.
fn format_scalar(value: &ColumnarValue, template: &Template) -> Result<ColumnarValue> {
    check(template, &value.data_type())?;
    let array = value.to_array(1)?;
    let read = reader(&array).ok_or_else(|| exec_datafusion_err!("to_char: unexpected type"))?;
    let mut builder = StringBuilder::with_capacity(array.len(), array.len() * 32);
    for i in 0..array.len() {
        if array.is_null(i) {
            builder.append_null();
        } else {
            format_row(template, &read, i, &mut builder)?;
        }
    }
    let result = builder.finish();
    Ok(match value {
        ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Utf8(
            result.is_valid(0).then(|| result.value(0).into()),
        )),
        ColumnarValue::Array(_) => ColumnarValue::Array(Arc::new(result)),
    })
}

/// The string of a format scalar: `Ok(None)` for NULL, `Err` if not a string.
fn format_of(scalar: &ScalarValue) -> std::result::Result<Option<&str>, ()> {
    match scalar {
        ScalarValue::Utf8(f) | ScalarValue::LargeUtf8(f) | ScalarValue::Utf8View(f) => {
            Ok(f.as_deref())
        }
        ScalarValue::Null => Ok(None),
        _ => Err(()),
    }
}

/// The strings of a format array, if it is of a string type.
fn formats_of(array: &ArrayRef) -> Option<Vec<Option<&str>>> {
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().collect(),
        DataType::Utf8View => array.as_string_view().iter().collect(),
        _ => return None,
    })
}

/// DataFusion's `to_char` with PostgreSQL templates read too; see the module doc.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PgToChar {
    inner: Arc<ScalarUDF>,
}

impl Default for PgToChar {
    fn default() -> Self {
        Self {
            inner: datafusion::functions::datetime::to_char(),
        }
    }
}

impl PgToChar {
    /// Formats rows each with its own format: PostgreSQL's templates here,
    /// chrono's (with `%`) by DataFusion's `to_char`.
    fn format_rows(
        &self,
        mut args: ScalarFunctionArgs,
        formats: &ArrayRef,
    ) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let values = args.args[0].to_array(rows)?;
        let Some(formats) = formats_of(formats) else {
            return self.inner.invoke_with_args(args);
        };
        // Rows in chrono's syntax, formatted by DataFusion's all at once.
        let chrono: Option<StringArray> = if formats.iter().flatten().any(|f| f.contains('%')) {
            let utf8: StringArray = formats.iter().copied().collect();
            args.args[1] = ColumnarValue::Array(Arc::new(utf8));
            let out = self.inner.invoke_with_args(args)?.into_array(rows)?;
            Some(out.as_string::<i32>().clone())
        } else {
            None
        };
        let read =
            reader(&values).ok_or_else(|| exec_datafusion_err!("to_char: unexpected type"))?;
        let mut builder = StringBuilder::with_capacity(rows, rows * 32);
        let mut last: Option<(&str, Template)> = None;
        for (i, format) in formats.iter().enumerate() {
            let format = match format {
                Some(f) if !f.is_empty() && values.is_valid(i) => *f,
                _ => {
                    builder.append_null();
                    continue;
                }
            };
            if let Some(chrono) = chrono.as_ref().filter(|_| format.contains('%')) {
                builder.append_option(chrono.is_valid(i).then(|| chrono.value(i)));
                continue;
            }
            // Consecutive rows with the same format share one parse.
            let template = match &mut last {
                Some((f, template)) if *f == format => template,
                slot => {
                    let template = Template::parse(format);
                    check(&template, values.data_type())?;
                    &slot.insert((format, template)).1
                }
            };
            format_row(template, &read, i, &mut builder)?;
        }
        Ok(ColumnarValue::Array(Arc::new(builder.finish())))
    }
}

impl ScalarUDFImpl for PgToChar {
    crate::functions::delegate_to_inner!();

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value, format] = args.args.as_slice() else {
            return self.inner.invoke_with_args(args);
        };
        if !handled(&value.data_type()) {
            return self.inner.invoke_with_args(args);
        }
        match format {
            ColumnarValue::Scalar(scalar) => match format_of(scalar) {
                Ok(None) => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
                // PostgreSQL answers NULL for an empty format.
                Ok(Some("")) => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
                Ok(Some(f)) if f.contains('%') => {
                    // DataFusion's takes its format as `Utf8` only.
                    let f = f.to_string();
                    args.args[1] = ColumnarValue::Scalar(ScalarValue::Utf8(Some(f)));
                    self.inner.invoke_with_args(args)
                }
                Ok(Some(f)) => format_scalar(value, &Template::parse(f)),
                Err(()) => self.inner.invoke_with_args(args),
            },
            ColumnarValue::Array(formats) => {
                let formats = Arc::clone(formats);
                self.format_rows(args, &formats)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, RecordBatch, TimestampMicrosecondArray, TimestampSecondArray};
    use arrow::datatypes::{Field as ArrowField, Schema};
    use datafusion::prelude::SessionContext;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_micro_opt(h, mi, s, us)
            .unwrap()
    }

    /// 2026-11-20 08:15:30.123456 UTC: a Friday, day 324 of the year, ISO
    /// week 47 (day 327 of the ISO year), quarter 4, Julian day 2461365.
    fn friday() -> NaiveDateTime {
        at(2026, 11, 20, 8, 15, 30, 123_456)
    }

    fn pg(template: &str, time: NaiveDateTime) -> String {
        Template::parse(template).format(&Moment::utc(time))
    }

    fn check_all(time: NaiveDateTime, cases: &[(&str, &str)]) {
        for (template, expected) in cases {
            assert_eq!(pg(template, time), *expected, "{template} of {time}");
        }
    }

    #[test]
    fn numeric_patterns() {
        check_all(
            friday(),
            &[
                ("YYYY-MM-DD HH24:MI:SS", "2026-11-20 08:15:30"),
                ("yyyy-mm-dd hh24:mi:ss", "2026-11-20 08:15:30"),
                ("HH HH12 FMHH24 FMMI", "08 08 8 15"),
                ("MS US", "123 123456"),
                ("FF1 FF2 FF3 FF4 FF5 FF6", "1 12 123 1234 12345 123456"),
                ("FMMS FMUS", "123 123456"),
                ("SSSS SSSSS ssss", "29730 29730 29730"),
                ("DDD IDDD", "324 327"),
                ("D ID", "6 5"),
                ("WW W IW", "47 3 47"),
                ("Q CC", "4 21"),
                ("J", "2461365"),
                ("Y,YYY YYYY YYY YY Y", "2,026 2026 026 26 6"),
                ("IYYY IYY IY I", "2026 026 26 6"),
                ("FMYYYY FMMM FMDD", "2026 11 20"),
                ("iyyy-iw-id", "2026-47-5"),
            ],
        );
        // Midnight and evening on a 12-hour clock; padding of small values.
        check_all(
            at(2026, 5, 1, 0, 5, 9, 7_000),
            &[
                ("HH12:MI:SS AM", "12:05:09 AM"),
                ("FMHH12:FMMI:FMSS", "12:5:9"),
                ("SSSS", "309"),
                ("MS US FF2", "007 007000 00"),
                ("DDD FMDDD MM FMMM WW FMWW", "121 121 05 5 18 18"),
            ],
        );
        check_all(
            at(2026, 5, 1, 20, 5, 9, 0),
            &[
                ("HH24 HH HH12 FMHH", "20 08 08 8"),
                (
                    "AM am A.M. a.m. PM pm P.M. p.m.",
                    "PM pm P.M. p.m. PM pm P.M. p.m.",
                ),
                ("SSSS", "72309"),
            ],
        );
    }

    #[test]
    fn iso_years_at_year_ends() {
        // 2027-01-01 is a Friday of ISO week 53 of 2026 (day 369 of that year).
        check_all(
            at(2027, 1, 1, 0, 0, 0, 0),
            &[
                ("IYYY-IW-ID IDDD", "2026-53-5 369"),
                ("YYYY-WW DDD", "2027-01 001"),
            ],
        );
        // 2024-12-30 is the Monday starting ISO week 1 of 2025.
        check_all(
            at(2024, 12, 30, 0, 0, 0, 0),
            &[
                ("IYYY-IW-ID IDDD", "2025-01-1 001"),
                ("YYYY WW DDD W", "2024 53 365 5"),
            ],
        );
    }

    #[test]
    fn name_patterns_keep_their_case_and_padding() {
        check_all(
            friday(),
            &[
                ("MONTH|Month|month", "NOVEMBER |November |november "),
                ("FMMONTH|FMMonth|FMmonth", "NOVEMBER|November|november"),
                ("MON Mon mon", "NOV Nov nov"),
                ("DAY|Day|day", "FRIDAY   |Friday   |friday   "),
                ("FMDAY|FMDay|FMday", "FRIDAY|Friday|friday"),
                ("DY Dy dy", "FRI Fri fri"),
                ("RM|rm|FMRM|FMrm", "XI  |xi  |XI|xi"),
                ("TMMonth TMDay TMMON", "November Friday NOV"),
                (
                    "AD ad A.D. a.d. BC bc B.C. b.c.",
                    "AD ad A.D. a.d. AD ad A.D. a.d.",
                ),
                ("Dy, DD Mon YYYY", "Fri, 20 Nov 2026"),
            ],
        );
        check_all(
            at(2026, 5, 1, 0, 0, 0, 0),
            &[
                ("Month", "May      "),
                ("Day", "Friday   "),
                ("FMMonth FMDD, YYYY", "May 1, 2026"),
                ("RM", "V   "),
            ],
        );
    }

    #[test]
    fn ordinal_suffixes() {
        for (n, suffix) in [
            (0, "th"),
            (1, "st"),
            (2, "nd"),
            (3, "rd"),
            (4, "th"),
            (11, "th"),
            (12, "th"),
            (13, "th"),
            (21, "st"),
            (22, "nd"),
            (23, "rd"),
            (101, "st"),
            (111, "th"),
            (-1, "st"),
        ] {
            assert_eq!(ordinal_suffix(n), suffix, "{n}");
        }
        check_all(
            at(2026, 5, 1, 0, 0, 0, 0),
            &[
                ("DDth DDTH FMDDth", "01st 01ST 1st"),
                ("FMMMth FMDDDth Qth", "5th 121st 2nd"),
                ("YYYYth", "2026th"),
            ],
        );
        check_all(
            at(2026, 11, 3, 0, 0, 0, 0),
            &[("FMDDth FMDDTH", "3rd 3RD"), ("MONTH TH", "NOVEMBER  TH")],
        );
        // `th` is the suffix only right after a pattern.
        check_all(friday(), &[("FMDDth of FMMonth", "20th +00 November")]);
    }

    #[test]
    fn zones() {
        check_all(
            friday(),
            &[
                ("TZ tz", "UTC utc"),
                ("OF FMOF", "+00 +0"),
                ("TZH:TZM", "+00:00"),
                ("tzh tzm of", "+00 00 +00"),
            ],
        );
        let india = Moment {
            local: at(2026, 11, 20, 13, 45, 30, 0),
            offset: 5 * 3600 + 30 * 60,
            utc: false,
        };
        let template = Template::parse("HH24:MI TZ OF TZH TZM");
        assert_eq!(template.format(&india), "13:45 +0530 +05:30 +05 30");
        let newfoundland = Moment {
            local: at(2026, 11, 20, 4, 45, 30, 0),
            offset: -(3 * 3600 + 30 * 60),
            utc: false,
        };
        assert_eq!(template.format(&newfoundland), "04:45 -0330 -03:30 -03 30");
    }

    #[test]
    fn quoting_and_escapes() {
        check_all(
            friday(),
            &[
                ("\"Week \"IW", "Week 47"),
                ("YYYY\"年\"MM\"月\"", "2026年11月"),
                ("\"YYYY\" YYYY", "YYYY 2026"),
                ("\"a\\\"b\"", "a\"b"),
                ("\"a\\\\b\"", "a\\b"),
                ("\\\"YYYY\\\"", "\"2026\""),
                ("YYYY\\MM", "2026\\11"),
                ("\"unterminated YYYY", "unterminated YYYY"),
                ("FXYYYY-MM", "2026-11"),
                ("HH24 o'clock", "08 o'clock"),
            ],
        );
    }

    #[test]
    fn pattern_precedence_follows_postgresql() {
        check_all(
            friday(),
            &[
                // `MONTH` before `MON` + `TH`; `DDD` before `DD` before `D`.
                ("MONTHDDDDD", "NOVEMBER 32420"),
                // Only exact spellings match: `Yyyy` is `Y` then `yyy`;
                // `Hh24` matches nothing.
                ("Yyyy", "6026"),
                ("Hh24", "Hh24"),
                // `IDDD` before `ID`; `SSSSS` before `SSSS` before `SS`.
                ("IDDDID", "3275"),
                ("SSSSSSS", "2973030"),
                // A prefix with no pattern after it is dropped, as in PostgreSQL.
                ("FM-TMx", "-x"),
            ],
        );
    }

    #[test]
    fn bc_years() {
        // Astronomical year 0 is 1 BC; year -99 is 100 BC.
        check_all(
            at(0, 3, 1, 0, 0, 0, 0),
            &[("YYYY BC b.c.", "0001 BC b.c."), ("CC Y,YYY", "-01 0,001")],
        );
        check_all(at(-99, 3, 1, 0, 0, 0, 0), &[("YYYY AD CC", "0100 BC -01")]);
        check_all(at(2000, 3, 1, 0, 0, 0, 0), &[("CC", "20")]);
        check_all(at(2001, 3, 1, 0, 0, 0, 0), &[("CC", "21")]);
    }

    fn context() -> SessionContext {
        let ctx = SessionContext::new();
        ctx.register_udf(ScalarUDF::new_from_impl(PgToChar::default()));
        ctx
    }

    async fn strings(ctx: &SessionContext, sql: &str) -> Vec<Vec<Option<String>>> {
        let batches = crate::run_sql(ctx, sql).await.unwrap();
        let mut rows = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                rows.push(
                    batch
                        .columns()
                        .iter()
                        .map(|c| {
                            let c = arrow::compute::cast(c, &DataType::Utf8).unwrap();
                            let c = c.as_string::<i32>();
                            c.is_valid(row).then(|| c.value(row).to_string())
                        })
                        .collect(),
                );
            }
        }
        rows
    }

    #[tokio::test]
    async fn both_syntaxes_answer_the_same() {
        let ctx = context();
        let batches = crate::run_sql(
            &ctx,
            "SELECT to_char(t, 'YYYY-MM-DD HH24:MI') AS pg, to_char(t, '%Y-%m-%d %H:%M') AS c \
                 FROM (VALUES (TIMESTAMP '2026-11-20 08:15:30')) AS v(t)",
        )
        .await
        .unwrap();
        let b = &batches[0];
        assert_eq!(b.column(0).as_string::<i32>().value(0), "2026-11-20 08:15");
        assert_eq!(b.column(1).as_string::<i32>().value(0), "2026-11-20 08:15");
    }

    #[tokio::test]
    async fn sql_formats_dates_timestamps_and_times() {
        let ctx = context();
        let rows = strings(
            &ctx,
            "SELECT to_char(DATE '2026-05-01', 'Month'), \
                    to_char(DATE '2026-05-01', 'FMDay, FMDDth FMMonth YYYY'), \
                    to_char(TIMESTAMP '2026-11-20 08:15:30.123456', \
                            'Dy DD MON YYYY HH12:MI:SS.US pm Q J'), \
                    to_char(CAST(NULL AS TIMESTAMP), 'YYYY'), \
                    to_char(TIMESTAMP '2026-11-20 08:15:30', CAST(NULL AS VARCHAR)), \
                    to_char(TIMESTAMP '2026-11-20 08:15:30', ''), \
                    to_char(TIME '20:15:30', 'HH12:MI:SS AM'), \
                    to_char(DATE '2026-05-01', '%d/%m/%Y')",
        )
        .await;
        assert_eq!(
            rows,
            vec![vec![
                Some("May      ".into()),
                Some("Friday, 1st May 2026".into()),
                Some("Fri 20 NOV 2026 08:15:30.123456 am 4 2461365".into()),
                None,
                None,
                None,
                Some("08:15:30 PM".into()),
                Some("01/05/2026".into()),
            ]]
        );
        // A time has no date to print.
        let err = crate::run_sql(&ctx, "SELECT to_char(TIME '20:15:30', 'YYYY')")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("\"YYYY\""), "{err}");
    }

    #[tokio::test]
    async fn sql_formats_per_row_and_lake_timestamps() {
        let ctx = context();
        // The lake's timestamps: microseconds in UTC.
        let schema = Arc::new(Schema::new(vec![
            ArrowField::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            ArrowField::new("d", DataType::Date32, true),
            ArrowField::new("f", DataType::Utf8, true),
        ]));
        let friday_us = friday().and_utc().timestamp_micros();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from(vec![
                        Some(friday_us),
                        Some(friday_us),
                        Some(friday_us),
                        None,
                        Some(friday_us),
                    ])
                    .with_timezone("UTC"),
                ),
                Arc::new(Date32Array::from(vec![Some(20574); 5])),
                Arc::new(StringArray::from(vec![
                    Some("YYYY-MM-DD\"T\"HH24:MI:SS TZ"),
                    Some("%Y/%m/%d"),
                    None,
                    Some("YYYY"),
                    Some("Day"),
                ])),
            ],
        )
        .unwrap();
        ctx.register_batch("events", batch).unwrap();
        let rows = strings(
            &ctx,
            "SELECT to_char(t, f), to_char(t, 'IYYY-IW OF'), to_char(d, f) FROM events",
        )
        .await;
        let row = |a: Option<&str>, b: Option<&str>, c: Option<&str>| {
            vec![
                a.map(String::from),
                b.map(String::from),
                c.map(String::from),
            ]
        };
        assert_eq!(
            rows,
            vec![
                row(
                    Some("2026-11-20T08:15:30 UTC"),
                    Some("2026-47 +00"),
                    Some("2026-05-01T00:00:00 UTC"),
                ),
                row(Some("2026/11/20"), Some("2026-47 +00"), Some("2026/05/01")),
                row(None, Some("2026-47 +00"), None),
                row(None, None, Some("2026")),
                row(Some("Friday   "), Some("2026-47 +00"), Some("Friday   ")),
            ]
        );
        // Grouping by a PostgreSQL template groups by its value.
        let rows = strings(
            &ctx,
            "SELECT to_char(t, 'YYYY-MM') AS m, count(*) FROM events \
             WHERE t IS NOT NULL GROUP BY m",
        )
        .await;
        assert_eq!(rows, vec![vec![Some("2026-11".into()), Some("4".into())]]);
    }

    #[tokio::test]
    async fn sql_timestamps_in_other_zones() {
        let ctx = context();
        let summer = at(2026, 7, 20, 8, 15, 30, 0).and_utc().timestamp();
        let winter = friday().and_utc().timestamp();
        let zoned = |tz: &str| {
            let array = TimestampSecondArray::from(vec![winter, summer]).with_timezone(tz);
            let field = ArrowField::new("t", array.data_type().clone(), false);
            (field, Arc::new(array) as ArrayRef)
        };
        let (fields, columns): (Vec<_>, Vec<_>) = [
            zoned("+05:30"),
            zoned("America/New_York"),
            zoned("-03:30"),
            zoned("Etc/UTC"),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (field, column))| (field.with_name(format!("t{i}")), column))
        .unzip();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        ctx.register_batch("zoned", batch).unwrap();
        let rows = strings(
            &ctx,
            "SELECT to_char(t0, 'YYYY-MM-DD HH24:MI TZ OF'), to_char(t1, 'HH24:MI OF TZH:TZM'), \
                    to_char(t2, 'HH24:MI OF TZ'), to_char(t3, 'HH24:MI TZ OF') FROM zoned",
        )
        .await;
        let row = |cells: [&str; 4]| cells.map(|c| Some(c.to_string())).to_vec();
        assert_eq!(
            rows,
            vec![
                row([
                    "2026-11-20 13:45 +0530 +05:30",
                    "03:15 -05 -05:00",
                    "04:45 -03:30 -0330",
                    "08:15 UTC +00",
                ]),
                row([
                    "2026-07-20 13:45 +0530 +05:30",
                    "04:15 -04 -04:00",
                    "04:45 -03:30 -0330",
                    "08:15 UTC +00",
                ]),
            ]
        );
    }

    #[tokio::test]
    async fn durations_go_to_datafusion() {
        let ctx = context();
        let rows = strings(
            &ctx,
            "SELECT to_char(arrow_cast(90, 'Duration(Second)'), 'ISO8601')",
        )
        .await;
        assert_eq!(rows, vec![vec![Some("PT90S".into())]]);
    }
}
