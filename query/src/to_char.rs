//! `to_char` that also reads PostgreSQL's template patterns.
//!
//! DataFusion's `to_char(time, format)` takes chrono's `strftime` format
//! (`%Y-%m-%d`); PostgreSQL's takes template patterns (`YYYY-MM-DD`). A
//! PostgreSQL format given to DataFusion's is copied out as literal text, so
//! `to_char(event_time, 'YYYY-MM-DD')` answered `YYYY-MM-DD` for every row and
//! a `GROUP BY` over it silently put every row in one group. Analysts and BI
//! tools over `serve` write PostgreSQL's; so a format without `%` (which in
//! chrono's syntax could only print itself) is read as PostgreSQL's and
//! translated; a format with `%` is chrono's, unchanged.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};

/// PostgreSQL template patterns and their chrono equivalents, longest first
/// so `HH24` wins over `HH` and `Month` over `Mon`. Numeric patterns match in
/// any case, as PostgreSQL's do; the case of a name pattern (`Month`,
/// `MONTH`) sets the output's case in PostgreSQL, which chrono cannot, so
/// all print `November`. Every time in the lake is UTC, so `TZ` is `UTC` and
/// `OF` is `+00`. Patterns not listed (`Q`, `D`, `WW`, `CC`, `J`, `RM`, ...)
/// print as text.
const PATTERNS: &[(&str, &str)] = &[
    ("IYYY", "%G"),
    ("HH24", "%H"),
    ("HH12", "%I"),
    ("YYYY", "%Y"),
    ("MONTH", "%B"),
    ("Month", "%B"),
    ("month", "%B"),
    ("DDD", "%j"),
    ("DAY", "%A"),
    ("Day", "%A"),
    ("day", "%A"),
    ("MON", "%b"),
    ("Mon", "%b"),
    ("mon", "%b"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("HH", "%I"),
    ("MI", "%M"),
    ("SS", "%S"),
    ("MS", "%3f"),
    ("US", "%6f"),
    ("AM", "%p"),
    ("PM", "%p"),
    ("am", "%P"),
    ("pm", "%P"),
    ("DY", "%a"),
    ("Dy", "%a"),
    ("dy", "%a"),
    ("IW", "%V"),
    ("TZ", "UTC"),
    ("tz", "utc"),
    ("OF", "+00"),
];

/// Specs that print numbers: the ones `FM` (no padding) applies to.
const NUMERIC: &[&str] = &[
    "%G", "%H", "%I", "%Y", "%j", "%y", "%m", "%d", "%M", "%S", "%V",
];

/// The pattern at the start of `text`, if any: exact for name patterns,
/// any case for numeric ones (`yyyy-mm-dd` is PostgreSQL's too).
fn pattern_at(text: &str) -> Option<(&'static str, usize)> {
    PATTERNS.iter().find_map(|(pattern, spec)| {
        let head = text.get(..pattern.len())?;
        let numeric = NUMERIC.contains(spec) || spec.ends_with('f');
        (head == *pattern || (numeric && head.eq_ignore_ascii_case(pattern)))
            .then_some((*spec, pattern.len()))
    })
}

/// A PostgreSQL `to_char` template as a chrono format: patterns replaced,
/// `"quoted text"` and everything else kept as text (`%` escaped).
pub fn chrono_format(template: &str) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            // Quoted literal text, up to the closing quote.
            let inner = &rest[1..];
            let (text, after) = match inner.find('"') {
                Some(i) => (&inner[..i], &inner[i + 1..]),
                None => (inner, ""),
            };
            out.push_str(&text.replace('%', "%%"));
            rest = after;
            continue;
        }
        // FM (fill mode) suppresses padding: chrono's `%-` flag on numbers.
        let (fill, body) = match rest.get(..2) {
            Some(fm) if fm.eq_ignore_ascii_case("FM") => (true, &rest[2..]),
            _ => (false, rest),
        };
        if let Some((spec, len)) = pattern_at(body) {
            if fill && NUMERIC.contains(&spec) {
                out.push_str(&spec.replacen('%', "%-", 1));
            } else {
                out.push_str(spec);
            }
            rest = &body[len..];
            continue;
        }
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Reads a format argument as PostgreSQL's when it holds no `%`.
fn translate(format: &str) -> String {
    if format.contains('%') {
        format.to_string()
    } else {
        chrono_format(format)
    }
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

impl ScalarUDFImpl for PgToChar {
    crate::functions::delegate_to_inner!();

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let Some(format) = args.args.get_mut(1) {
            match format {
                ColumnarValue::Scalar(
                    ScalarValue::Utf8(Some(f))
                    | ScalarValue::LargeUtf8(Some(f))
                    | ScalarValue::Utf8View(Some(f)),
                ) => *f = translate(f),
                ColumnarValue::Array(a) if a.data_type() == &DataType::Utf8 => {
                    let formats: StringArray = a
                        .as_string::<i32>()
                        .iter()
                        .map(|f| f.map(translate))
                        .collect();
                    *a = Arc::new(formats) as ArrayRef;
                }
                _ => {}
            }
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[test]
    fn templates_translate() {
        for (pg, chrono) in [
            ("YYYY-MM-DD", "%Y-%m-%d"),
            ("YYYY-MM-DD HH24:MI:SS", "%Y-%m-%d %H:%M:%S"),
            ("HH12:MI AM", "%I:%M %p"),
            ("Dy, DD Mon YYYY", "%a, %d %b %Y"),
            ("FMDD.FMMM.YYYY", "%-d.%-m.%Y"),
            ("YYYY\"年\"MM\"月\"", "%Y年%m月"),
            ("100% MS", "100%% %3f"),
            ("IYYY-IW", "%G-%V"),
            ("yyyy-mm-dd hh24:mi", "%Y-%m-%d %H:%M"),
            ("FMMonth FMDD, YYYY", "%B %-d, %Y"),
            ("HH24:MI TZ (OF)", "%H:%M UTC (+00)"),
        ] {
            assert_eq!(chrono_format(pg), chrono, "{pg}");
        }
    }

    #[tokio::test]
    async fn both_syntaxes_answer_the_same() {
        let ctx = SessionContext::new();
        ctx.register_udf(ScalarUDF::new_from_impl(PgToChar::default()));
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
}
