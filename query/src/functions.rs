//! SQL functions that auditlake sessions override: `date_trunc` for speed,
//! with the same names, signatures and results as DataFusion's, and
//! `to_char`, which also reads PostgreSQL's templates ([`crate::to_char`]).
//!
//! `date_trunc` on a `Timestamp(_, "UTC")` column (every time in the lake is
//! UTC) takes DataFusion's per-row time-zone path for `hour` and coarser
//! (chrono-tz conversions and an error message formatted for every row): ~40%
//! of "distinct users per app per hour". In UTC, truncation by the calendar is
//! truncation of the naive UTC time, so the override strips the zone, calls the
//! built-in (which then takes its arithmetic path for hour and day), and puts
//! the zone back. Other zones and types go to the built-in unchanged.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Field, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::common::Result;
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl};
use datafusion::prelude::SessionContext;

/// The `ScalarUDFImpl` methods an override takes unchanged from the
/// built-in it wraps (`self.inner`).
macro_rules! delegate_to_inner {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn aliases(&self) -> &[String] {
            self.inner.aliases()
        }
        fn signature(&self) -> &datafusion::logical_expr::Signature {
            self.inner.signature()
        }
        fn return_type(
            &self,
            arg_types: &[arrow::datatypes::DataType],
        ) -> datafusion::common::Result<arrow::datatypes::DataType> {
            self.inner.return_type(arg_types)
        }
        fn return_field_from_args(
            &self,
            args: datafusion::logical_expr::ReturnFieldArgs,
        ) -> datafusion::common::Result<arrow::datatypes::FieldRef> {
            self.inner.return_field_from_args(args)
        }
        fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
            self.inner.documentation()
        }
    };
}
pub(crate) use delegate_to_inner;

/// Registers the overrides in `ctx` (replacing the built-ins of the same name).
pub fn register_functions(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(UtcDateTrunc::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(crate::to_char::PgToChar::default()));
}

/// Whether a timestamp's zone is UTC under any of its usual spellings.
pub(crate) fn is_utc(tz: &str) -> bool {
    matches!(
        tz,
        "UTC" | "utc" | "Z" | "+00:00" | "+0000" | "+00" | "Etc/UTC" | "Etc/UCT" | "UCT"
    )
}

/// `date_trunc` with a fast path for UTC timestamps; see the module doc.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UtcDateTrunc {
    inner: Arc<ScalarUDF>,
}

impl Default for UtcDateTrunc {
    fn default() -> Self {
        Self::new()
    }
}

impl UtcDateTrunc {
    /// Wraps DataFusion's `date_trunc`.
    pub fn new() -> Self {
        Self {
            inner: datafusion::functions::datetime::date_trunc(),
        }
    }
}

/// `array` as the same timestamps without a zone, if its zone is UTC.
fn strip_utc(array: &ArrayRef) -> Option<ArrayRef> {
    let DataType::Timestamp(unit, Some(tz)) = array.data_type() else {
        return None;
    };
    if !is_utc(tz) {
        return None;
    }
    Some(match unit {
        TimeUnit::Second => Arc::new(
            array
                .as_primitive::<TimestampSecondType>()
                .clone()
                .with_timezone_opt(None::<Arc<str>>),
        ),
        TimeUnit::Millisecond => Arc::new(
            array
                .as_primitive::<TimestampMillisecondType>()
                .clone()
                .with_timezone_opt(None::<Arc<str>>),
        ),
        TimeUnit::Microsecond => Arc::new(
            array
                .as_primitive::<TimestampMicrosecondType>()
                .clone()
                .with_timezone_opt(None::<Arc<str>>),
        ),
        TimeUnit::Nanosecond => Arc::new(
            array
                .as_primitive::<TimestampNanosecondType>()
                .clone()
                .with_timezone_opt(None::<Arc<str>>),
        ),
    })
}

/// `array` (zone-less timestamps) with the zone `tz` put back.
fn with_zone(array: &ArrayRef, tz: Arc<str>) -> Option<ArrayRef> {
    Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, None) => Arc::new(
            array
                .as_primitive::<TimestampSecondType>()
                .clone()
                .with_timezone(tz),
        ),
        DataType::Timestamp(TimeUnit::Millisecond, None) => Arc::new(
            array
                .as_primitive::<TimestampMillisecondType>()
                .clone()
                .with_timezone(tz),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, None) => Arc::new(
            array
                .as_primitive::<TimestampMicrosecondType>()
                .clone()
                .with_timezone(tz),
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => Arc::new(
            array
                .as_primitive::<TimestampNanosecondType>()
                .clone()
                .with_timezone(tz),
        ),
        _ => return None,
    })
}

impl ScalarUDFImpl for UtcDateTrunc {
    delegate_to_inner!();

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let utc = match args.args.get(1) {
            Some(ColumnarValue::Array(array)) => match array.data_type() {
                DataType::Timestamp(_, Some(tz)) if is_utc(tz) => {
                    strip_utc(array).map(|a| (a, tz.clone()))
                }
                _ => None,
            },
            _ => None,
        };
        let Some((naive, tz)) = utc else {
            return self.inner.invoke_with_args(args);
        };
        let naive_type = naive.data_type().clone();
        args.args[1] = ColumnarValue::Array(naive);
        args.arg_fields[1] = Arc::new(Field::new(
            args.arg_fields[1].name(),
            naive_type.clone(),
            args.arg_fields[1].is_nullable(),
        ));
        let return_field = args.return_field.clone();
        args.return_field = Arc::new(Field::new(
            return_field.name(),
            naive_type,
            return_field.is_nullable(),
        ));
        match self.inner.invoke_with_args(args)? {
            ColumnarValue::Array(out) => match with_zone(&out, tz) {
                Some(zoned) => Ok(ColumnarValue::Array(zoned)),
                None => datafusion::common::internal_err!(
                    "date_trunc returned {} for a timestamp",
                    out.data_type()
                ),
            },
            ColumnarValue::Scalar(s) => {
                datafusion::common::internal_err!("date_trunc returned a scalar {s} for an array")
            }
        }
    }

    fn output_ordering(&self, input: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(input)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> Result<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::TimestampMicrosecondArray;
    use arrow::record_batch::RecordBatch;
    use datafusion::datasource::MemTable;

    /// Times around midnight, a month end and a DST change elsewhere, plus a null.
    fn times() -> TimestampMicrosecondArray {
        let us = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_micros()
        };
        TimestampMicrosecondArray::from(vec![
            Some(us("2026-11-01T00:00:00Z")),
            Some(us("2026-11-01T01:59:59.999999Z")),
            Some(us("2026-10-25T01:30:00Z")),
            Some(us("2026-12-31T23:59:59.5Z")),
            Some(us("1969-12-31T23:30:00Z")),
            None,
        ])
    }

    async fn truncated(ctx: &SessionContext, tz: Option<&str>) -> Vec<String> {
        let array = times().with_timezone_opt(tz.map(Arc::<str>::from));
        let batch = RecordBatch::try_from_iter(vec![("t", Arc::new(array) as ArrayRef)]).unwrap();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.deregister_table("t").unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let mut out = Vec::new();
        for unit in [
            "second", "minute", "hour", "day", "week", "month", "quarter", "year",
        ] {
            let batches = ctx
                .sql(&format!(
                    "SELECT date_trunc('{unit}', t) AS d, arrow_typeof(date_trunc('{unit}', t)) AS ty FROM t"
                ))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            out.push(
                arrow::util::pretty::pretty_format_batches(&batches)
                    .unwrap()
                    .to_string(),
            );
        }
        out
    }

    #[tokio::test]
    async fn utc_override_agrees_with_the_builtin() {
        let plain = SessionContext::new();
        let fast = SessionContext::new();
        register_functions(&fast);
        for tz in [Some("UTC"), Some("+00:00"), Some("Europe/Berlin"), None] {
            assert_eq!(
                truncated(&plain, tz).await,
                truncated(&fast, tz).await,
                "zone {tz:?}"
            );
        }
        let hour = truncated(&fast, Some("UTC")).await;
        assert!(
            hour[2].contains("2026-11-01T01:00:00Z"),
            "hour of 01:59:59 UTC: {}",
            hour[2]
        );
    }
}
