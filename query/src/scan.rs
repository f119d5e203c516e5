//! A lake table read straight from its Delta snapshot: the snapshot's data
//! files become one DataFusion Parquet scan, with `date` as a partition
//! value of each file and the Delta log's per-file statistics for pruning.
//!
//! delta-rs's own provider carries a file id column through every batch, cuts
//! each batch into runs of one file and rebuilds `date` per batch through a
//! kernel expression: ~8% of a scan-bound aggregation. auditlake's writers
//! never use what that machinery is for (deletion vectors, column mapping),
//! so a table without them is scanned here; a table with them (written by
//! another Delta engine) falls back to delta-rs's provider.
//!
//! ```text
//! snapshot files --(the query's date-only filters, evaluated on each date)
//!   --(every filter against the log's per-file bounds)--> FileGroup
//!   --> ParquetFormat scan (session's Parquet options, footer cache, pushdown)
//! ```
//!
//! The first step prunes by any expression of `date` (e.g. its month); the
//! second only by what a pruning predicate understands, on every column.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Date32Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::conjunction;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use object_store::ObjectMeta;
use object_store::path::{Path, PathPart};

use auditlake_schemas::datafile::{DeltaStats, parse_date};
use auditlake_schemas::tables::PARTITION_COLUMN;

/// The URL the lake's root store is registered under in a session; a data
/// file is `<table>/<its path in the table>` in it.
pub const LAKE_STORE_URL: &str = "auditlake://lake";

/// One lake table's data files, scanned with DataFusion's Parquet reader.
#[derive(Debug)]
pub struct LakeScan {
    /// The table's columns as delta-rs exposes them, `date` last.
    schema: SchemaRef,
    /// The columns held in the files (all but `date`).
    file_schema: SchemaRef,
    date: FieldRef,
    /// Each file with its `date` as its one partition value.
    files: Vec<PartitionedFile>,
}

impl LakeScan {
    /// The scan of `table`'s current snapshot (`name` under the lake root)
    /// with the columns of `schema` (delta-rs's provider's), or `None` when
    /// the table needs delta-rs's reader: deletion vectors, column mapping,
    /// a partitioning other than `date` last, or a date it cannot read.
    pub fn try_new(name: &str, table: &DeltaTable, schema: SchemaRef) -> Option<Self> {
        let snapshot = table.snapshot().ok()?;
        let metadata = snapshot.metadata();
        let mapping = metadata.configuration().get("delta.columnMapping.mode");
        let partitioning = metadata.partition_columns();
        if mapping.is_some_and(|mode| mode != "none")
            || partitioning.len() != 1
            || partitioning[0] != PARTITION_COLUMN
        {
            return None;
        }
        let (date, file_fields) = schema.fields().split_last()?;
        if date.name() != PARTITION_COLUMN || date.data_type() != &DataType::Date32 {
            return None;
        }
        let date = date.clone();
        let file_schema = Arc::new(Schema::new(file_fields.to_vec()));
        let mut files = Vec::new();
        for view in snapshot.log_data().iter() {
            if view.deletion_vector_descriptor().is_some() {
                return None;
            }
            // A null date (another writer's) is left to delta-rs.
            let date = parse_date(
                view.partition_values_map()
                    .get(PARTITION_COLUMN)?
                    .as_deref()?,
            )?;
            // An absolute path (another engine's shallow clone) is left to
            // delta-rs.
            if view.path().contains("://") {
                return None;
            }
            let location = Path::from_iter(
                std::iter::once(PathPart::from(name)).chain(view.object_store_path().parts()),
            );
            let size = usize::try_from(view.size()).ok()?;
            let mut file: PartitionedFile = ObjectMeta {
                location,
                last_modified: view.modification_datetime().ok()?,
                size: size as u64,
                e_tag: None,
                version: None,
            }
            .into();
            file.partition_values = vec![ScalarValue::Date32(Some(date))];
            let stats = file_statistics(&file_schema, view.stats().as_deref(), size);
            files.push(file.with_statistics(Arc::new(stats)));
        }
        Some(Self {
            schema,
            file_schema,
            date,
            files,
        })
    }

    /// The files whose date passes every filter that reads only `date`
    /// (the others are left to the scan and the plan above it).
    fn files_for(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> datafusion::common::Result<Vec<PartitionedFile>> {
        let date_only: Vec<&Expr> = filters
            .iter()
            .filter(|f| {
                let columns = f.column_refs();
                !columns.is_empty() && columns.iter().all(|c| c.name == PARTITION_COLUMN)
            })
            .collect();
        if date_only.is_empty() {
            return Ok(self.files.clone());
        }
        let dates: ArrayRef = Arc::new(Date32Array::from_iter(self.files.iter().map(|f| {
            match f.partition_values.first() {
                Some(ScalarValue::Date32(d)) => *d,
                _ => None,
            }
        })));
        let schema = Arc::new(Schema::new(vec![self.date.clone()]));
        let batch = RecordBatch::try_new(schema.clone(), vec![dates])?;
        let df_schema = DFSchema::try_from(schema)?;
        let mut keep = vec![true; self.files.len()];
        for filter in date_only {
            // A filter this cannot evaluate alone (a subquery left in it)
            // prunes nothing here; the plan above still applies it.
            let Ok(predicate) = state.create_physical_expr(filter.clone(), &df_schema) else {
                continue;
            };
            let Ok(result) = predicate
                .evaluate(&batch)
                .and_then(|r| r.into_array(batch.num_rows()))
            else {
                continue;
            };
            let Some(passes) = result.as_boolean_opt() else {
                continue;
            };
            for (k, pass) in keep.iter_mut().zip(passes.iter()) {
                *k &= pass == Some(true);
            }
        }
        Ok(self
            .files
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(f, _)| f.clone())
            .collect())
    }

    /// `files` less those the log's statistics prove hold no row passing
    /// `filters` (DataFusion's own file pruning reads exact bounds only, and
    /// these are bounds). Each filter is planned on its own: one that does
    /// not plan is left out of the pruning (it can only keep files, never
    /// drop them), and the others still prune.
    fn prune_by_statistics(
        &self,
        state: &dyn Session,
        filters: &[Expr],
        files: Vec<PartitionedFile>,
    ) -> Vec<PartitionedFile> {
        let Ok(df_schema) = DFSchema::try_from(self.schema.clone()) else {
            return files;
        };
        let planned: Vec<_> = filters
            .iter()
            .filter_map(|f| state.create_physical_expr(f.clone(), &df_schema).ok())
            .collect();
        if planned.is_empty() {
            return files;
        }
        let predicate = conjunction(planned);
        let Ok(pruning) = PruningPredicateBuilder::new()
            .with_file_schema(self.schema.clone())
            .try_build(predicate)
        else {
            return files;
        };
        let stats = FileStatistics {
            schema: &self.schema,
            files: &files,
        };
        match pruning.prune(&stats) {
            Ok(keep) => files
                .into_iter()
                .zip(keep)
                .filter(|(_, k)| *k)
                .map(|(f, _)| f)
                .collect(),
            Err(_) => files,
        }
    }
}

/// The files' statistics as a pruning predicate reads them: one container
/// per file, columns in table order (the files' statistics end with `date`).
struct FileStatistics<'a> {
    schema: &'a Schema,
    files: &'a [PartitionedFile],
}

impl FileStatistics<'_> {
    fn column(&self, column: &Column) -> Option<(usize, &DataType)> {
        let (i, field) = self.schema.column_with_name(&column.name)?;
        Some((i, field.data_type()))
    }

    fn bounds(
        &self,
        column: &Column,
        bound: impl Fn(&ColumnStatistics) -> &Precision<ScalarValue>,
    ) -> Option<ArrayRef> {
        let (i, data_type) = self.column(column)?;
        let null = ScalarValue::try_from(data_type).ok()?;
        let values = self.files.iter().map(|f| {
            f.statistics
                .as_ref()
                .and_then(|s| s.column_statistics.get(i))
                .and_then(|c| bound(c).get_value().cloned())
                .filter(|v| v.data_type() == *data_type)
                .unwrap_or_else(|| null.clone())
        });
        ScalarValue::iter_to_array(values).ok()
    }

    fn counts(&self, count: impl Fn(&Statistics) -> Option<usize>) -> ArrayRef {
        Arc::new(UInt64Array::from_iter(self.files.iter().map(|f| {
            f.statistics
                .as_deref()
                .and_then(&count)
                .and_then(|n| u64::try_from(n).ok())
        })))
    }
}

impl PruningStatistics for FileStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, |c| &c.min_value)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, |c| &c.max_value)
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let (i, _) = self.column(column)?;
        Some(self.counts(|s| {
            s.column_statistics
                .get(i)
                .and_then(|c| c.null_count.get_value().copied())
        }))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(self.counts(|s| s.num_rows.get_value().copied()))
    }

    fn contained(&self, _: &Column, _: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

#[async_trait]
impl TableProvider for LakeScan {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // Inexact: the plan keeps every filter above the scan; the scan uses
        // them to skip files, row groups, pages and rows.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let files = self.files_for(state, filters)?;
        let files = self.prune_by_statistics(state, filters, files);
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let format = ParquetFormat::default().with_options(state.default_table_options().parquet);
        let source = format.file_source(
            TableSchema::builder(self.file_schema.clone())
                .with_table_partition_cols(vec![self.date.clone()])
                .build(),
        );
        // The table's statistics over the files scanned: what the planner
        // sizes joins with (the smaller input builds the hash table).
        let statistics = Statistics::try_merge_iter(
            files.iter().filter_map(|f| f.statistics.as_deref()),
            &self.schema,
        )?;
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(LAKE_STORE_URL)?, source)
            .with_statistics(statistics)
            .with_file_group(FileGroup::new(files))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

/// A file's row count and, per column, its null count and min/max as the
/// Delta log records them (what delta-rs's provider prunes files with).
/// Bounds a writer may have cut are widened or dropped: timestamps are
/// recorded to the millisecond (the max is moved to the millisecond's end),
/// and strings of 32 characters or more may be prefixes (left unbounded).
fn file_statistics(file_schema: &Schema, stats: Option<&str>, size: usize) -> Statistics {
    let stats = stats.and_then(DeltaStats::parse).unwrap_or_default();
    let column_statistics = file_schema
        .fields()
        .iter()
        .map(|f| ColumnStatistics {
            null_count: stats
                .nulls(f.name())
                .and_then(|n| usize::try_from(n).ok())
                .map_or(Precision::Absent, Precision::Exact),
            // Inexact: bounds, not the values (a timestamp's max is
            // widened), so no aggregate is answered from them.
            min_value: stats
                .min(f.name())
                .and_then(|v| bound(v, f.data_type(), false))
                .map_or(Precision::Absent, Precision::Inexact),
            max_value: stats
                .max(f.name())
                .and_then(|v| bound(v, f.data_type(), true))
                .map_or(Precision::Absent, Precision::Inexact),
            ..ColumnStatistics::new_unknown()
        })
        .collect();
    let num_rows = stats
        .num_records
        .and_then(|n| usize::try_from(n).ok())
        .map_or(Precision::Absent, Precision::Exact);
    Statistics {
        num_rows,
        total_byte_size: Precision::Inexact(size),
        column_statistics,
    }
}

/// A Delta statistic (JSON) as a bound of the column's Arrow type; `None`
/// for types and values not converted (the column then goes unpruned).
fn bound(value: &serde_json::Value, data_type: &DataType, max: bool) -> Option<ScalarValue> {
    Some(match data_type {
        DataType::Utf8View | DataType::Utf8 | DataType::LargeUtf8 => {
            let s = value.as_str()?;
            if s.chars().count() >= 32 {
                return None;
            }
            match data_type {
                DataType::Utf8View => ScalarValue::Utf8View(Some(s.to_string())),
                DataType::Utf8 => ScalarValue::Utf8(Some(s.to_string())),
                _ => ScalarValue::LargeUtf8(Some(s.to_string())),
            }
        }
        DataType::Int16 => ScalarValue::Int16(Some(i16::try_from(value.as_i64()?).ok()?)),
        DataType::Int32 => ScalarValue::Int32(Some(i32::try_from(value.as_i64()?).ok()?)),
        DataType::Int64 => ScalarValue::Int64(Some(value.as_i64()?)),
        DataType::Boolean => ScalarValue::Boolean(Some(value.as_bool()?)),
        DataType::Date32 => ScalarValue::Date32(Some(parse_date(value.as_str()?)?)),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let t = chrono::DateTime::parse_from_rfc3339(value.as_str()?).ok()?;
            let micros = t.timestamp_micros();
            let micros = if max {
                micros.checked_add(999)?
            } else {
                micros
            };
            ScalarValue::TimestampMicrosecond(Some(micros), tz.clone())
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditlake_schemas::{Lake, Topic, WriteOptions};
    use datafusion::prelude::SessionContext;

    fn grants(rows: &[(&str, &str, &str)]) -> RecordBatch {
        auditlake_schemas::testing::events(
            Topic::Grants,
            rows.iter().map(|(id, time, user)| {
                format!(
                    r#"{{"event_id":"{id}","event_time":"{time}","app_id":"a","user_id":"{user}","action":"grant","scopes":["s"]}}"#
                )
            }),
        )
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        text.lines().map(str::to_string).collect()
    }

    /// The scan reads the snapshot's files only (not files an overwrite
    /// removed from the log, still in the store), prunes by date, and answers
    /// as delta-rs's provider does.
    #[tokio::test]
    async fn reads_the_snapshot_like_delta_rs() {
        let lake = Lake::open("memory:///scan").unwrap();
        let opts = WriteOptions::default();
        let first = grants(&[
            ("e1", "2026-11-01T08:00:00.123456Z", "u1"),
            ("e2", "2026-11-02T09:00:00Z", "u2"),
        ]);
        lake.append("grants", vec![first], Vec::new(), &opts)
            .await
            .unwrap();
        let kept = grants(&[
            ("e3", "2026-11-02T10:00:00.000999Z", "u3"),
            ("e4", "2026-11-03T11:00:00Z", "u4"),
        ]);
        lake.overwrite("grants", vec![kept], &opts).await.unwrap();

        let table = lake.require_table("grants").await.unwrap();
        let ctx = SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        let delta = table.table_provider().await.unwrap();
        let scan = LakeScan::try_new("grants", &table, delta.schema()).expect("a plain table");
        assert_eq!(scan.files.len(), 2);
        // The log's bounds prune files: one holds u3, none u9; the
        // millisecond max of e3's file is widened, so it stays.
        use datafusion::prelude::{col, lit};
        let state = ctx.state();
        let pruned = |filter: Expr| {
            scan.prune_by_statistics(&state, &[filter], scan.files.clone())
                .len()
        };
        assert_eq!(pruned(col("user_id").eq(lit("u3"))), 1);
        assert_eq!(pruned(col("user_id").eq(lit("u9"))), 0);
        assert_eq!(pruned(col("user_id").is_null()), 0);
        // A filter that does not plan (an unbound parameter) keeps every
        // file on its own, and does not stop the others from pruning.
        let unplanned = Expr::Placeholder(
            datafusion::logical_expr::expr::Placeholder::new_with_field("$1".into(), None),
        );
        let both = [unplanned.clone(), col("user_id").eq(lit("u9"))];
        assert_eq!(
            scan.prune_by_statistics(&state, &[unplanned], scan.files.clone())
                .len(),
            2
        );
        assert_eq!(
            scan.prune_by_statistics(&state, &both, scan.files.clone())
                .len(),
            0
        );
        let after = datafusion::common::ScalarValue::TimestampMicrosecond(
            Some(1_793_613_600_000_500),
            Some("UTC".into()),
        );
        assert_eq!(pruned(col("event_time").gt(lit(after))), 2);
        let later = datafusion::common::ScalarValue::TimestampMicrosecond(
            Some(1_793_750_400_000_000), // 2026-11-04T00:00:00Z
            Some("UTC".into()),
        );
        assert_eq!(pruned(col("event_time").gt(lit(later))), 0);
        let store_url = ObjectStoreUrl::parse(LAKE_STORE_URL).unwrap();
        ctx.runtime_env()
            .register_object_store(store_url.as_ref(), lake.object_store().unwrap());
        ctx.register_table("by_delta", delta).unwrap();
        ctx.register_table("by_scan", Arc::new(scan)).unwrap();

        for query in [
            "SELECT event_id, event_time, user_id, date FROM {t} ORDER BY event_id",
            "SELECT event_id FROM {t} WHERE date = DATE '2026-11-02' ORDER BY 1",
            "SELECT count(*) AS n FROM {t} WHERE date >= DATE '2026-11-03'",
            "SELECT max(event_time) AS latest, min(event_time) AS earliest FROM {t}",
            "SELECT event_id FROM {t} WHERE event_time > TIMESTAMP '2026-11-02T10:00:00.0005Z' ORDER BY 1",
            "SELECT event_id FROM {t} WHERE user_id = 'u3'",
        ] {
            let by_scan = rows(&ctx, &query.replace("{t}", "by_scan")).await;
            let by_delta = rows(&ctx, &query.replace("{t}", "by_delta")).await;
            assert_eq!(by_scan, by_delta, "{query}");
        }
        let ids = rows(&ctx, "SELECT event_id FROM by_scan ORDER BY event_id").await;
        assert!(ids.iter().any(|l| l.contains("e3")) && ids.iter().any(|l| l.contains("e4")));
        assert!(!ids.iter().any(|l| l.contains("e1") || l.contains("e2")));
        // A timestamp's max is recorded to the millisecond: the bound keeps
        // the row at .000999 (a max taken as exact would prune it).
        let late = rows(
            &ctx,
            "SELECT event_id FROM by_scan WHERE event_time > TIMESTAMP '2026-11-02T10:00:00.0005Z'",
        )
        .await;
        assert!(late.iter().any(|l| l.contains("e3")), "{late:?}");
    }

    #[test]
    fn bounds_are_widened_or_dropped_where_a_writer_may_have_cut_them() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let t = serde_json::json!("2026-11-02T10:00:00.123Z");
        let micros = 1_793_613_600_123_000;
        assert_eq!(
            bound(&t, &ts, false),
            Some(ScalarValue::TimestampMicrosecond(
                Some(micros),
                Some("UTC".into())
            ))
        );
        assert_eq!(
            bound(&t, &ts, true),
            Some(ScalarValue::TimestampMicrosecond(
                Some(micros + 999),
                Some("UTC".into())
            ))
        );
        let long = serde_json::json!("x".repeat(32));
        assert_eq!(bound(&long, &DataType::Utf8View, true), None);
        let short = serde_json::json!("u1");
        assert_eq!(
            bound(&short, &DataType::Utf8View, true),
            Some(ScalarValue::Utf8View(Some("u1".into())))
        );
        assert_eq!(
            bound(&serde_json::json!(7), &DataType::Int32, false),
            Some(ScalarValue::Int32(Some(7)))
        );
        assert_eq!(
            bound(&serde_json::json!("7"), &DataType::Int32, false),
            None
        );
        assert_eq!(parse_date("2026-11-02"), Some(20759));
        assert_eq!(parse_date("2026-13-02"), None);
    }
}
