//! What psql's describe commands need beyond the `pg_catalog` layer of
//! datafusion-postgres: a few PostgreSQL functions, and one rewrite of a
//! fragment DataFusion cannot plan.
//!
//! | psql | needs |
//! |---|---|
//! | `\dt+` | `pg_size_pretty`, `pg_table_size`, `obj_description` |
//! | `\d+ TABLE` | `ARRAY(subquery)` over `pg_class.reloptions` (storage options), `col_description` |
//! | `\df` | `pg_function_is_visible`, `pg_get_function_result`, `pg_get_function_arguments` |
//!
//! The lake has no TOAST tables, comments or user functions, so those answer
//! NULL (psql prints an empty cell); `pg_size_pretty` is PostgreSQL's own
//! formatting. Table sizes are not known by oid here: `pg_table_size` answers
//! NULL.

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

/// Registers the functions of the table above on `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(SizePretty::default()));
    for (name, args, out) in [
        ("pg_table_size", 1, ScalarValue::Int64(None)),
        ("obj_description", 2, ScalarValue::Utf8(None)),
        ("col_description", 2, ScalarValue::Utf8(None)),
        (
            "pg_function_is_visible",
            1,
            ScalarValue::Boolean(Some(true)),
        ),
        ("pg_get_function_result", 1, ScalarValue::Utf8(None)),
        ("pg_get_function_arguments", 1, ScalarValue::Utf8(None)),
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(Constant {
            name,
            signature: Signature::any(args, Volatility::Immutable),
            out,
        }));
    }
}

/// psql's `\d+` lists the table's and its TOAST table's storage options
/// with `ARRAY(subquery)`, which DataFusion does not plan, over
/// `pg_class.reloptions`, which the catalog layer lacks; a lake table has no
/// such options, so the list is NULL (psql then prints no "Options:" line).
const TOAST_OPTIONS: &str = "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')";

/// `sql` with the client fragments DataFusion cannot plan replaced by
/// equivalents it can (borrowed unchanged when there are none).
pub fn rewrite_client_query(sql: &str) -> Cow<'_, str> {
    if sql.contains(TOAST_OPTIONS) {
        Cow::Owned(sql.replace(TOAST_OPTIONS, "CAST(NULL AS TEXT)"))
    } else {
        Cow::Borrowed(sql)
    }
}

/// A function of any arguments (oids, names) that answers `out` for every row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: &'static str,
    signature: Signature,
    out: ScalarValue,
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.out.data_type())
    }
    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.out.clone()))
    }
}

/// `pg_size_pretty(bigint)`: bytes as PostgreSQL prints them (any integer
/// argument is widened, as `pg_relation_size` answers int4 here).
#[derive(Debug, PartialEq, Eq, Hash)]
struct SizePretty {
    signature: Signature,
}

impl Default for SizePretty {
    fn default() -> Self {
        Self {
            signature: Signature::uniform(1, vec![DataType::Int64], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SizePretty {
    fn name(&self) -> &str {
        "pg_size_pretty"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let sizes = arrays[0].as_primitive::<Int64Type>();
        let out: StringArray = sizes.iter().map(|s| s.map(size_pretty)).collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// PostgreSQL's `pg_size_pretty`: bytes below 10 kB, then the first unit
/// whose number stays under 10,240, rounded half away from zero.
fn size_pretty(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    const LIMIT2: i64 = LIMIT * 2 - 1;
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    if bytes.abs() < LIMIT {
        return format!("{bytes} bytes");
    }
    // One extra bit kept for rounding, as PostgreSQL does.
    let mut size = bytes >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < LIMIT2 {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    format!("{} PB", half_rounded(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_postgresql_prints_them() {
        // Figures from PostgreSQL 15's `SELECT pg_size_pretty(n)`.
        for (n, text) in [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (10485247, "10239 kB"),
            (10485248, "10 MB"),
            (1_000_000_000, "954 MB"),
            (123_456_789_012, "115 GB"),
            (-10240, "-10 kB"),
            (1 << 50, "1024 TB"),
            (1 << 55, "32 PB"),
        ] {
            assert_eq!(size_pretty(n), text, "{n}");
        }
    }

    #[tokio::test]
    async fn psql_describe_functions_plan_and_answer() {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = crate::run_sql(
            &ctx,
            "SELECT pg_size_pretty(123456789) AS s, \
                 pg_function_is_visible(1) AS v, obj_description(1, 'pg_class') AS d",
        )
        .await
        .unwrap();
        let b = &batches[0];
        assert_eq!(b.column(0).as_string::<i32>().value(0), "118 MB");
        assert!(b.column(1).as_boolean().value(0));
        assert!(b.column(2).is_null(0));
    }

    #[test]
    fn only_the_toast_fragment_is_rewritten() {
        let q = format!("SELECT c.relkind, {TOAST_OPTIONS}\n, c.reltablespace FROM t");
        assert_eq!(
            rewrite_client_query(&q),
            "SELECT c.relkind, CAST(NULL AS TEXT)\n, c.reltablespace FROM t"
        );
        assert!(matches!(
            rewrite_client_query("SELECT 1"),
            Cow::Borrowed("SELECT 1")
        ));
    }
}
