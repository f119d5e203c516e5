//! The data files of a table's current snapshot, with what the log knows of
//! them (partition, size, per-column min/max), and reading one back.

use std::collections::HashMap;

use arrow::array::{ArrayRef, Date32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use auditlake_schemas::datafile::{DeltaStats, parse_date};
use bytes::Bytes;
use deltalake::DeltaTable;
use deltalake::kernel::Remove;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::ObjectStoreExt;
use std::sync::Arc;

use crate::{Error, Result};
use auditlake_schemas::tables::PARTITION_COLUMN;

/// One active data file of a table.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Path relative to the table root, as in the log (decoded).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Partition `date` (days since the epoch), if the table is partitioned by it.
    pub date: Option<i32>,
    /// Partition values as written in the log.
    pub partition_values: HashMap<String, Option<String>>,
    /// Rows, from the log's statistics.
    pub rows: Option<u64>,
    /// Min/max of string columns, from the log's statistics.
    ranges: HashMap<String, (Option<String>, Option<String>)>,
    /// Null count per column, from the log's statistics.
    null_counts: HashMap<String, u64>,
    /// Whether the file has a deletion vector (rows hidden without a rewrite).
    pub deletion_vector: bool,
    /// The `add` action's tags.
    pub tags: HashMap<String, Option<String>>,
    remove: Remove,
}

impl DataFile {
    /// Whether the file may hold a row whose string column `column` equals
    /// `value`, by the log's statistics (no statistics: it may).
    pub fn may_hold(&self, column: &str, value: &str) -> bool {
        if let (Some(rows), Some(nulls)) = (self.rows, self.null_counts.get(column))
            && rows == *nulls
        {
            return false;
        }
        match self.ranges.get(column) {
            Some((Some(min), Some(max))) => min.as_str() <= value && value <= max.as_str(),
            _ => true,
        }
    }

    /// The log's min and max of a string column, if recorded.
    pub fn range(&self, column: &str) -> Option<(&str, &str)> {
        match self.ranges.get(column) {
            Some((Some(a), Some(b))) => Some((a.as_str(), b.as_str())),
            _ => None,
        }
    }

    /// The `remove` action retiring this file.
    pub fn remove_action(&self) -> Remove {
        self.remove.clone()
    }

    /// The partition directory, e.g. `date=2026-11-20` (or empty).
    pub fn partition_dir(&self) -> String {
        self.partition_values
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_deref().unwrap_or("__HIVE_DEFAULT_PARTITION__")
                )
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// The active data files of a loaded table.
pub fn data_files(table: &DeltaTable, name: &str) -> Result<Vec<DataFile>> {
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::delta(name, "snapshot", e))?;
    let mut out = Vec::new();
    for view in snapshot.log_data().iter() {
        let partition_values = view.partition_values_map();
        let date = partition_values
            .get(PARTITION_COLUMN)
            .and_then(|v| v.as_deref())
            .and_then(parse_date);
        let (rows, ranges, null_counts) = parse_stats(view.stats().as_deref());
        out.push(DataFile {
            path: view.path().to_string(),
            size: u64::try_from(view.size()).unwrap_or(0),
            date,
            partition_values,
            rows,
            ranges,
            null_counts,
            deletion_vector: view.deletion_vector_descriptor().is_some(),
            tags: {
                // The only public way to the tags in deltalake 1.1.
                #[allow(deprecated)]
                let add = view.add_action();
                add.tags.unwrap_or_default()
            },
            remove: view.remove_action(true),
        });
    }
    Ok(out)
}

type Stats = (
    Option<u64>,
    HashMap<String, (Option<String>, Option<String>)>,
    HashMap<String, u64>,
);

fn parse_stats(stats: Option<&str>) -> Stats {
    let Some(stats) = stats.and_then(DeltaStats::parse) else {
        return (None, HashMap::new(), HashMap::new());
    };
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let mut ranges = HashMap::new();
    for column in stats.min_values.keys().chain(stats.max_values.keys()) {
        if !ranges.contains_key(column) {
            let range = (text(stats.min(column)), text(stats.max(column)));
            if range != (None, None) {
                ranges.insert(column.clone(), range);
            }
        }
    }
    let nulls = stats
        .null_count
        .keys()
        .filter_map(|c| Some((c.clone(), stats.nulls(c)?)))
        .collect();
    (stats.num_records, ranges, nulls)
}

/// The `date=YYYY-MM-DD` value inside an object path, if any.
pub fn date_in_path(path: &str) -> Option<i32> {
    path.split('/')
        .find_map(|seg| seg.strip_prefix("date="))
        .and_then(parse_date)
}

/// A data file's bytes, read whole.
pub async fn read_object(table: &DeltaTable, path: &str) -> Result<Bytes> {
    let store = table.object_store();
    let location = object_store::path::Path::parse(path).unwrap_or_else(|_| path.into());
    Ok(store.get(&location).await?.bytes().await?)
}

/// Decodes `bytes` (a data file) into batches of the columns in `columns`
/// (all when `None`) that exist in the file.
pub fn decode<R: deltalake::parquet::file::reader::ChunkReader + 'static>(
    path: &str,
    bytes: R,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| Error::parquet(path, e))?;
    let builder = match columns {
        Some(cols) => project(builder, cols),
        None => builder,
    };
    let reader = builder
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| Error::parquet(path, e))?;
    reader
        .map(|b| b.map_err(|e| Error::parquet(path, e)))
        .collect()
}

/// `builder` reading only the top-level columns named in `columns` (those
/// the file has).
pub fn project<T: deltalake::parquet::file::reader::ChunkReader + 'static>(
    builder: ParquetRecordBatchReaderBuilder<T>,
    columns: &[&str],
) -> ParquetRecordBatchReaderBuilder<T> {
    let idx: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| columns.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), idx);
    builder.with_projection(mask)
}

/// `batch` with the partition column `date` appended as a constant.
pub fn with_date(batch: &RecordBatch, date: Option<i32>) -> Result<RecordBatch> {
    if batch.schema().column_with_name(PARTITION_COLUMN).is_some() {
        return Ok(batch.clone());
    }
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        PARTITION_COLUMN,
        DataType::Date32,
        false,
    )));
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    let date = date.ok_or_else(|| Error::Internal("data file without a date partition".into()))?;
    cols.push(Arc::new(Date32Array::from(vec![date; batch.num_rows()])));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(
            fields,
            batch.schema().metadata().clone(),
        )),
        cols,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_dates() {
        let (rows, ranges, nulls) = parse_stats(Some(
            r#"{"numRecords":3,"minValues":{"user_id":"u-1","status":200},"maxValues":{"user_id":"u-5"},"nullCount":{"user_id":0}}"#,
        ));
        assert_eq!(rows, Some(3));
        assert_eq!(
            ranges["user_id"],
            (Some("u-1".to_string()), Some("u-5".to_string()))
        );
        assert_eq!(nulls["user_id"], 0);
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(
            date_in_path("api_access/date=1970-01-03/part-0.parquet"),
            Some(2)
        );
        assert_eq!(date_in_path("api_access/_delta_log/0.json"), None);
    }
}
