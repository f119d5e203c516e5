//! Data files written by auditlake itself rather than by delta-rs's write
//! operation: Parquet encoded with parquet-rs, put on the object store, and
//! the Delta `add` action with statistics read from the file's own footer.
//!
//! ```text
//! rows of one partition --encode--> Parquet file(s) of ~target size --put--> store
//!                                   footer --delta_stats--> add action (numRecords, min, max, nullCount)
//! ```
//!
//! Appends of rows already sorted by `date` skip delta-rs's partition split
//! and repartitioning (each a copy of every column); retention's rewrites
//! need the statistics of files they assemble from copied row groups.

use std::collections::HashMap;
use std::ops::Range;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Date32Type;
use bytes::Bytes;
use chrono::{DateTime, Timelike};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use parquet::basic::{LogicalType, TimeUnit, Type as PhysicalType};
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use parquet::file::writer::SerializedFileWriter;
use serde_json::{Map, Value};

use crate::tables::PARTITION_COLUMN;
use crate::{Error, Result};

/// Columns whose statistics Delta records by default
/// (`delta.dataSkippingNumIndexedCols`).
const INDEXED_COLUMNS: usize = 32;

/// One encoded data file.
pub struct EncodedFile {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its footer.
    pub metadata: ParquetMetaData,
}

/// Encodes `batch` (without the partition column) into Parquet files of
/// about `target_size` bytes each (at least one file, cut between row
/// groups of `props`). The columns of a row group are encoded on one thread
/// per core (see [`encode_with_threads`]).
pub fn encode(
    table: &str,
    batch: &RecordBatch,
    props: &WriterProperties,
    target_size: u64,
) -> Result<Vec<EncodedFile>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    encode_with_threads(table, batch, props, target_size, threads)
}

/// [`encode`] with the columns of each row group encoded on up to `threads`
/// threads, the costliest first: a flush of one date is one file, and
/// encoding it column after column left every other core idle. The bytes
/// are the same whatever the number of threads.
pub fn encode_with_threads(
    table: &str,
    batch: &RecordBatch,
    props: &WriterProperties,
    target_size: u64,
    threads: usize,
) -> Result<Vec<EncodedFile>> {
    let pq = |source| Error::Parquet {
        table: table.to_string(),
        source,
    };
    // Row groups are cut here by rows only; ArrowWriter's other cuts are
    // not reproduced, so properties asking for them are refused.
    if props.max_row_group_bytes().is_some() || props.content_defined_chunking().is_some() {
        return Err(Error::Internal(format!(
            "writing `{table}`: row groups are cut by rows only; max_row_group_bytes and \
             content-defined chunking are not supported"
        )));
    }
    let step = props
        .max_row_group_row_count()
        .unwrap_or(batch.num_rows())
        .max(1);
    let mut out = Vec::new();
    let mut writer: Option<(SerializedFileWriter<Vec<u8>>, ArrowRowGroupWriterFactory)> = None;
    let mut row_group = 0;
    let mut at = 0;
    while at < batch.num_rows() || (out.is_empty() && writer.is_none()) {
        let (file, factory) = match writer.as_mut() {
            Some(w) => w,
            None => {
                // Room for the file up front, so it is not copied as it
                // grows: access events take ~29 bytes each, so 64 a row
                // rarely grows; pages never written are address space, not
                // resident memory.
                let left = batch.num_rows() - at;
                let buf = Vec::with_capacity((left * 64).min(target_size as usize));
                let w =
                    ArrowWriter::try_new(buf, batch.schema(), Some(props.clone())).map_err(pq)?;
                row_group = 0;
                writer.insert(w.into_serialized_writer().map_err(pq)?)
            }
        };
        let n = step.min(batch.num_rows() - at);
        if n > 0 {
            let columns = factory.create_column_writers(row_group).map_err(pq)?;
            let chunks = encode_columns(&batch.slice(at, n), columns, threads).map_err(pq)?;
            let mut group = file.next_row_group().map_err(pq)?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut group).map_err(pq)?;
            }
            group.close().map_err(pq)?;
            row_group += 1;
        }
        at += n;
        if file.bytes_written() as u64 >= target_size || at >= batch.num_rows() {
            let (mut file, _) = writer.take().expect("a writer");
            let metadata = file.finish().map_err(pq)?;
            out.push(EncodedFile {
                bytes: Bytes::from(std::mem::take(file.inner_mut())),
                metadata,
            });
        }
    }
    Ok(out)
}

/// Encodes the leaf columns of `batch` with `writers` (one per leaf, in
/// order) on up to `threads` threads; the chunks in leaf order.
fn encode_columns(
    batch: &RecordBatch,
    writers: Vec<ArrowColumnWriter>,
    threads: usize,
) -> parquet::errors::Result<Vec<ArrowColumnChunk>> {
    // Each leaf with the size of its column: the costliest go first.
    let mut leaves = Vec::with_capacity(writers.len());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let size = column.get_array_memory_size();
        leaves.extend(
            compute_leaves(field, column)?
                .into_iter()
                .map(|l| (l, size)),
        );
    }
    if leaves.len() != writers.len() {
        return Err(ParquetError::General(format!(
            "{} leaf columns for {} column writers",
            leaves.len(),
            writers.len()
        )));
    }
    let encode = |(i, mut writer, leaf): (usize, ArrowColumnWriter, ArrowLeafColumn)| {
        writer.write(&leaf)?;
        Ok::<_, ParquetError>((i, writer.close()?))
    };
    let mut work: Vec<_> = writers
        .into_iter()
        .zip(leaves)
        .enumerate()
        .map(|(i, (writer, (leaf, size)))| (size, (i, writer, leaf)))
        .collect();
    work.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    let work = work.into_iter().map(|(_, item)| item).collect();
    let done = crate::threads::map_on_threads(work, threads, encode)
        .ok_or_else(|| ParquetError::General("an encode thread panicked".into()))?;
    let mut chunks: Vec<Option<ArrowColumnChunk>> = (0..done.len()).map(|_| None).collect();
    for chunk in done {
        let (i, chunk) = chunk?;
        chunks[i] = Some(chunk);
    }
    Ok(chunks
        .into_iter()
        .map(|c| c.expect("every leaf encoded"))
        .collect())
}

/// Runs of rows with the same `date`, in order: `(date, rows)`. `batch` must
/// be sorted by `date` (see [`is_sorted_by_date`]).
pub fn date_runs(batch: &RecordBatch) -> Result<Vec<(i32, Range<usize>)>> {
    let dates = date_column(batch)?;
    let mut runs: Vec<(i32, Range<usize>)> = Vec::new();
    for (i, d) in dates.values().iter().enumerate() {
        match runs.last_mut() {
            Some((last, r)) if last == d => r.end = i + 1,
            _ => runs.push((*d, i..i + 1)),
        }
    }
    Ok(runs)
}

/// Whether `batch`'s `date` column never decreases.
pub fn is_sorted_by_date(batch: &RecordBatch) -> Result<bool> {
    let dates = date_column(batch)?;
    Ok(dates.null_count() == 0 && dates.values().windows(2).all(|w| w[0] <= w[1]))
}

fn date_column(batch: &RecordBatch) -> Result<&arrow::array::PrimitiveArray<Date32Type>> {
    batch
        .column_by_name(PARTITION_COLUMN)
        .and_then(|c| c.as_primitive_opt::<Date32Type>())
        .ok_or_else(|| {
            Error::Internal(format!(
                "a batch without a Date32 `{PARTITION_COLUMN}` column"
            ))
        })
}

/// Days since the epoch of a `YYYY-MM-DD` partition value (the inverse of
/// [`date_string`]); `None` unless three numbers with a month of 1-12 and a
/// day of 1-31.
pub fn parse_date(s: &str) -> Option<i32> {
    let mut it = s.splitn(3, '-');
    let (y, m, d) = (it.next()?, it.next()?, it.next()?);
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(crate::time::days_from_civil(y, m, d) as i32)
}

/// `YYYY-MM-DD` of days since the epoch.
pub fn date_string(days: i32) -> String {
    chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|d| d.checked_add_signed(chrono::TimeDelta::days(i64::from(days))))
        .map_or_else(|| days.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

/// The Delta statistics (`numRecords`, `minValues`, `maxValues`,
/// `nullCount`) of a file from its footer, as delta-rs writes them: the
/// first [`INDEXED_COLUMNS`] top-level columns, no list or binary columns,
/// timestamps to the millisecond.
pub fn delta_stats(meta: &ParquetMetaData) -> String {
    let schema = meta.file_metadata().schema_descr();
    let (mut mins, mut maxs, mut nulls) = (Map::new(), Map::new(), Map::new());
    let mut tops: Vec<String> = Vec::new();
    for (idx, col) in schema.columns().iter().enumerate() {
        let top = col.path().parts()[0].clone();
        if !tops.contains(&top) {
            if tops.len() >= INDEXED_COLUMNS {
                break;
            }
            tops.push(top);
        }
        if col.max_rep_level() > 0 || col.path().parts().len() != 1 {
            continue;
        }
        let logical = col.logical_type_ref();
        if col.physical_type() == PhysicalType::BYTE_ARRAY
            && !matches!(logical, Some(LogicalType::String))
        {
            continue;
        }
        let mut agg: Option<(Option<Bound>, Option<Bound>, u64)> = Some((None, None, 0));
        for rg in meta.row_groups() {
            let Some(s) = rg.column(idx).statistics() else {
                agg = None;
                break;
            };
            let Some((lo, hi, n)) = agg.as_mut() else {
                break;
            };
            *n += s.null_count_opt().unwrap_or(0);
            if let (Some(a), Some(b)) = (Bound::of(s, true), Bound::of(s, false)) {
                if lo.as_ref().is_none_or(|l| a < *l) {
                    *lo = Some(a);
                }
                if hi.as_ref().is_none_or(|h| b > *h) {
                    *hi = Some(b);
                }
            }
        }
        let Some((lo, hi, n)) = agg else { continue };
        let name = col.name().to_string();
        if let Some(v) = lo.and_then(|b| b.json(logical)) {
            mins.insert(name.clone(), v);
        }
        if let Some(v) = hi.and_then(|b| b.json(logical)) {
            maxs.insert(name.clone(), v);
        }
        nulls.insert(name, Value::from(n));
    }
    let mut stats = Map::new();
    stats.insert(
        "numRecords".into(),
        Value::from(meta.file_metadata().num_rows()),
    );
    stats.insert("minValues".into(), Value::Object(mins));
    stats.insert("maxValues".into(), Value::Object(maxs));
    stats.insert("nullCount".into(), Value::Object(nulls));
    Value::Object(stats).to_string()
}

/// A data file's Delta statistics as the log records them: what
/// [`delta_stats`] writes, read back for every reader of the log (retention
/// plans erasures with it, the query scan prunes files with it). Values stay
/// JSON: each reader converts them to the type it needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeltaStats {
    /// `numRecords`, when a non-negative integer.
    pub num_records: Option<u64>,
    /// `minValues` by column.
    pub min_values: Map<String, Value>,
    /// `maxValues` by column.
    pub max_values: Map<String, Value>,
    /// `nullCount` by column.
    pub null_count: Map<String, Value>,
}

impl DeltaStats {
    /// Parses a file's `stats` string; `None` unless it is a JSON object. A
    /// section that is absent or not an object reads as empty, so one odd
    /// section does not hide the others.
    pub fn parse(json: &str) -> Option<Self> {
        let Value::Object(mut stats) = serde_json::from_str(json).ok()? else {
            return None;
        };
        let mut section = |key: &str| match stats.remove(key) {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let (min_values, max_values, null_count) = (
            section("minValues"),
            section("maxValues"),
            section("nullCount"),
        );
        Some(Self {
            num_records: stats.get("numRecords").and_then(Value::as_u64),
            min_values,
            max_values,
            null_count,
        })
    }

    /// Column `column`'s recorded min.
    pub fn min(&self, column: &str) -> Option<&Value> {
        self.min_values.get(column)
    }

    /// Column `column`'s recorded max.
    pub fn max(&self, column: &str) -> Option<&Value> {
        self.max_values.get(column)
    }

    /// Column `column`'s recorded null count.
    pub fn nulls(&self, column: &str) -> Option<u64> {
        self.null_count.get(column).and_then(Value::as_u64)
    }
}

/// A column chunk's min or max.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Bound {
    Bool(bool),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bytes(Vec<u8>),
}

impl Bound {
    fn of(s: &Statistics, min: bool) -> Option<Self> {
        macro_rules! pick {
            ($v:expr) => {
                if min { $v.min_opt() } else { $v.max_opt() }
            };
        }
        Some(match s {
            Statistics::Boolean(v) => Self::Bool(*pick!(v)?),
            Statistics::Int32(v) => Self::I32(*pick!(v)?),
            Statistics::Int64(v) => Self::I64(*pick!(v)?),
            Statistics::Float(v) => Self::F32(*pick!(v)?),
            Statistics::Double(v) => Self::F64(*pick!(v)?),
            Statistics::ByteArray(v) => Self::Bytes(pick!(v)?.data().to_vec()),
            _ => return None,
        })
    }

    fn json(self, logical: Option<&LogicalType>) -> Option<Value> {
        Some(match (self, logical) {
            (Self::Bool(b), _) => Value::Bool(b),
            (Self::I32(d), Some(LogicalType::Date)) => {
                let day = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?
                    .checked_add_signed(chrono::TimeDelta::days(i64::from(d)))?;
                Value::from(day.format("%Y-%m-%d").to_string())
            }
            (Self::I32(v), _) => Value::from(v),
            (Self::I64(v), Some(LogicalType::Timestamp(ts))) => {
                let t = match ts.unit {
                    TimeUnit::MILLIS => DateTime::from_timestamp_millis(v),
                    TimeUnit::MICROS => DateTime::from_timestamp_micros(v),
                    TimeUnit::NANOS => Some(DateTime::from_timestamp_nanos(v)),
                }?
                .naive_utc();
                let format = if t.nanosecond() == 0 {
                    "%Y-%m-%dT%H:%M:%SZ"
                } else {
                    "%Y-%m-%dT%H:%M:%S%.3fZ"
                };
                Value::from(t.format(format).to_string())
            }
            (Self::I64(v), _) => Value::from(v),
            (Self::F32(v), _) => Value::from(v),
            (Self::F64(v), _) => Value::from(v),
            (Self::Bytes(b), _) => Value::from(String::from_utf8(b).ok()?),
        })
    }
}

/// An `add` action for a file written beside `like` (same partition):
/// `path` relative to the table root, its size and footer.
pub fn add_action(
    path: String,
    size: u64,
    meta: &ParquetMetaData,
    partition_values: HashMap<String, Option<String>>,
    tags: Option<HashMap<String, Option<String>>>,
) -> deltalake::kernel::Add {
    deltalake::kernel::Add {
        path,
        partition_values,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(delta_stats(meta)),
        tags,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

/// A new data file's path in the partition directory `partition` (empty:
/// the table root), named as delta-rs names them.
pub fn new_file_path(partition: &str) -> String {
    let name = format!("part-00000-{}-c000.zstd.parquet", uuid::Uuid::new_v4());
    if partition.is_empty() {
        name
    } else {
        format!("{partition}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Date32Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(dates: &[i32]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new(PARTITION_COLUMN, DataType::Date32, false),
        ]));
        let users: ArrayRef = Arc::new(StringArray::from_iter(
            (0..dates.len()).map(|i| (i % 3 != 0).then(|| format!("u-{i:05}"))),
        ));
        let dates: ArrayRef = Arc::new(Date32Array::from(dates.to_vec()));
        RecordBatch::try_new(schema, vec![users, dates]).unwrap()
    }

    #[test]
    fn runs_of_dates() {
        let b = batch(&[3, 3, 4, 9, 9, 9]);
        assert!(is_sorted_by_date(&b).unwrap());
        assert_eq!(
            date_runs(&b).unwrap(),
            vec![(3, 0..2), (4, 2..3), (9, 3..6)]
        );
        assert!(!is_sorted_by_date(&batch(&[4, 3])).unwrap());
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(20_423), "2025-12-01");
    }

    #[test]
    fn encode_cuts_files_at_the_target_and_states_their_rows() {
        let mut b = batch(&vec![7; 10_000]);
        b.remove_column(1);
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1_000))
            .build();
        let one = encode("t", &b, &props, u64::MAX).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].metadata.file_metadata().num_rows(), 10_000);
        assert_eq!(one[0].metadata.row_groups().len(), 10);
        let many = encode("t", &b, &props, 20_000).unwrap();
        assert!(many.len() > 1, "{} files", many.len());
        let rows: i64 = many
            .iter()
            .map(|f| f.metadata.file_metadata().num_rows())
            .sum();
        assert_eq!(rows, 10_000);
        let stats = DeltaStats::parse(&delta_stats(&many[0].metadata)).unwrap();
        assert_eq!(stats.min("user_id"), Some(&Value::from("u-00001")));
        let n = many[0].metadata.file_metadata().num_rows();
        assert_eq!(stats.num_records, u64::try_from(n).ok());
        assert_eq!(stats.nulls("user_id"), u64::try_from((n + 2) / 3).ok());
        assert!(
            stats
                .max("user_id")
                .is_some_and(|m| m.as_str() > Some("u-00001"))
        );
        // The same bytes whatever the number of encoding threads.
        for threads in [1, 2, 5] {
            let files = encode_with_threads("t", &b, &props, 20_000, threads).unwrap();
            assert_eq!(files.len(), many.len(), "{threads} threads");
            for (f, m) in files.iter().zip(&many) {
                assert_eq!(f.bytes, m.bytes, "{threads} threads");
            }
        }
        // An empty batch still makes one (empty) file.
        let none = encode("t", &b.slice(0, 0), &props, 1).unwrap();
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].metadata.file_metadata().num_rows(), 0);
    }

    #[test]
    fn delta_stats_read_back_section_by_section() {
        let s = DeltaStats::parse(
            r#"{"numRecords":3,"minValues":{"user_id":"u-1","status":200},"maxValues":{"user_id":"u-5"},"nullCount":{"user_id":0}}"#,
        )
        .unwrap();
        assert_eq!(s.num_records, Some(3));
        assert_eq!(s.min("status"), Some(&Value::from(200)));
        assert_eq!(s.max("user_id"), Some(&Value::from("u-5")));
        assert_eq!(s.max("status"), None);
        assert_eq!(s.nulls("user_id"), Some(0));
        // An odd section reads as empty; the others are still read.
        let odd =
            DeltaStats::parse(r#"{"numRecords":-1,"minValues":null,"maxValues":{"a":1}}"#).unwrap();
        assert_eq!(odd.num_records, None);
        assert!(odd.min_values.is_empty() && odd.null_count.is_empty());
        assert_eq!(odd.max("a"), Some(&Value::from(1)));
        assert_eq!(DeltaStats::parse("[1]"), None);
        assert_eq!(DeltaStats::parse("{"), None);
    }

    /// A row group's columns encoded on several threads: the same bytes as
    /// on one, and the rows read back as written (lists, nulls, numbers).
    #[test]
    fn parallel_encoding_writes_the_same_file() {
        use arrow::array::{Int64Array, ListBuilder, StringBuilder};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let n = 5_000;
        let mut scopes = ListBuilder::new(StringBuilder::new());
        for i in 0..n {
            if i % 7 == 0 {
                scopes.append_null();
            } else {
                for j in 0..i % 4 {
                    scopes.values().append_value(format!("scope.{j}"));
                }
                scopes.append(true);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("e-{i}")),
            )),
            Arc::new(Int64Array::from_iter(
                (0..n).map(|i| (i % 5 != 0).then_some(i as i64 * 7)),
            )),
            Arc::new(scopes.finish()),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| (i % 3 != 0).then(|| format!("u-{}", i / 10))),
            )),
        ];
        let schema = Arc::new(Schema::new(
            ["event_id", "bytes", "scopes", "user_id"]
                .iter()
                .zip(&columns)
                .map(|(name, c)| Field::new(*name, c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let b = RecordBatch::try_new(schema, columns).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(1_000))
            .build();
        let one = encode_with_threads("t", &b, &props, 30_000, 1).unwrap();
        assert!(one.len() > 1, "{} files", one.len());
        for threads in [2, 3, 8] {
            let files = encode_with_threads("t", &b, &props, 30_000, threads).unwrap();
            assert_eq!(files.len(), one.len(), "{threads} threads");
            for (f, o) in files.iter().zip(&one) {
                assert_eq!(f.bytes, o.bytes, "{threads} threads");
            }
        }
        // One file: the same bytes as ArrowWriter writes.
        let mut w = ArrowWriter::try_new(Vec::new(), b.schema(), Some(props.clone())).unwrap();
        w.write(&b).unwrap();
        let arrow_writer = w.into_inner().unwrap();
        let whole = encode_with_threads("t", &b, &props, u64::MAX, 3).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].bytes, Bytes::from(arrow_writer));
        let bytes_cut = WriterProperties::builder()
            .set_max_row_group_bytes(Some(1 << 20))
            .build();
        assert!(encode_with_threads("t", &b, &bytes_cut, u64::MAX, 2).is_err());
        let mut read = Vec::new();
        for f in &one {
            let reader = ParquetRecordBatchReaderBuilder::try_new(f.bytes.clone())
                .unwrap()
                .build()
                .unwrap();
            read.extend(reader.map(|r| r.unwrap()));
        }
        let read = arrow::compute::concat_batches(&b.schema(), &read).unwrap();
        assert_eq!(read, b);
    }
}
