//! Which events the lake already holds, by a 64-bit hash of their key, loaded
//! lazily one date partition at a time.
//!
//! Producer retries carry the same `event_id` (and event time), so a duplicate
//! always lands in the same `date` partition as its original. The index keeps
//! the key hashes of the partitions it has seen; a partition not in memory is
//! read back from the lake (its key column only) the first time a row of that
//! date arrives. Eviction ([`SeenIndex::retain_recent`]) therefore bounds memory
//! without weakening dedupe: an evicted date is simply read again. Hashes are
//! xxh3-64 per (table, date): with a million events a day the chance of any
//! false duplicate is ~3e-8 a day.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use auditlake_schemas::Lake;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::ObjectStoreExt;
use xxhash_rust::xxh3::xxh3_64;

use crate::{Error, Result};

/// A hasher for keys that are already hashes.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashSet64 = HashSet<u64, BuildHasherDefault<IdentityHasher>>;

/// Keys (hashed, with the row's `date` where the table has one) of the rows
/// that the commits after version `from` up to `to` added to `table`: what
/// other writers stored while this one buffered. Only files of `dates` are
/// read when given. The commits' own JSON names the files; when part of that
/// log is gone (a checkpoint let retention remove it), the table's rows of
/// `dates` are read instead, which holds the same keys and more.
pub async fn added_keys(
    lake: &Lake,
    table: &str,
    key_column: &str,
    (from, to): (Option<i64>, i64),
    dates: Option<&HashSet<i32>>,
) -> Result<HashSet<(Option<i32>, u64)>> {
    let err = |e: String| Error::Internal(format!("reading rows added to {table}: {e}"));
    let mut out = HashSet::new();
    let wanted = |d: Option<i32>| match (dates, d) {
        (Some(dates), Some(d)) => dates.contains(&d),
        _ => true,
    };
    let Some(files) = lake.added_files(table, from, to).await? else {
        tracing::debug!(
            table,
            ?from,
            to,
            "log range gone; reading the table's keys instead"
        );
        let Some(t) = lake.table(table).await? else {
            return Ok(out);
        };
        let ctx = SessionContext::new();
        t.update_datafusion_session(&ctx.state())
            .map_err(|e| err(e.to_string()))?;
        let provider = t.table_provider().await.map_err(|e| err(e.to_string()))?;
        ctx.register_table("t", provider)
            .map_err(|e| err(e.to_string()))?;
        let filter = match dates {
            Some(dates) if !dates.is_empty() => format!(
                " WHERE date IN ({})",
                dates
                    .iter()
                    .map(|d| format!("CAST({d} AS DATE)"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        };
        let batches = ctx
            .sql(&format!(
                "SELECT \"{key_column}\", CAST(date AS INT) AS d FROM t{filter}"
            ))
            .await
            .map_err(|e| err(e.to_string()))?
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?;
        for b in &batches {
            let days = b.column(1).as_primitive::<arrow::datatypes::Int32Type>();
            for_each_str(b.column(0).as_ref(), |i, key| {
                out.insert((days.is_valid(i).then(|| days.value(i)), key_hash(key)));
            });
        }
        return Ok(out);
    };
    let store = lake.object_store()?;
    for (path, date) in files.into_iter().filter(|(_, d)| wanted(*d)) {
        let bytes = async {
            store
                .get(&object_store::path::Path::from(path.as_str()))
                .await?
                .bytes()
                .await
        }
        .await
        .map_err(|e| Error::Lake(e.into()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| err(format!("{path}: {e}")))?;
        let schema = builder.parquet_schema();
        let leaf = (0..schema.num_columns())
            .find(|i| schema.column(*i).path().parts() == [key_column])
            .ok_or_else(|| err(format!("{path}: no column {key_column}")))?;
        let mask = ProjectionMask::leaves(schema, [leaf]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| err(format!("{path}: {e}")))?;
        for b in reader {
            let b = b.map_err(|e| err(format!("{path}: {e}")))?;
            for_each_str(b.column(0).as_ref(), |_, key| {
                out.insert((date, key_hash(key)));
            });
        }
    }
    Ok(out)
}

/// The hash of a dedupe key.
pub fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// Key hashes of one table, per date partition (days since the epoch).
#[derive(Debug, Default)]
pub struct SeenIndex {
    table: String,
    key_column: String,
    by_date: HashMap<i32, HashSet64>,
    /// When each loaded date was last touched (a logical clock), for eviction.
    touched: HashMap<i32, u64>,
    clock: u64,
}

impl SeenIndex {
    /// An empty index for `table`, deduplicating on `key_column`.
    pub fn new(table: &str, key_column: &str) -> Self {
        Self {
            table: table.to_string(),
            key_column: key_column.to_string(),
            ..Default::default()
        }
    }

    /// Number of hashes held.
    pub fn len(&self) -> usize {
        self.by_date.values().map(HashSet::len).sum()
    }

    /// Whether no hash is held.
    pub fn is_empty(&self) -> bool {
        self.by_date.is_empty()
    }

    /// Loaded date partitions.
    pub fn dates(&self) -> usize {
        self.by_date.len()
    }

    /// Records a key another writer stored (see [`added_keys`]); dates not
    /// loaded are skipped, as loading them reads the key from the lake.
    pub fn insert_known(&mut self, date: i32, hash: u64) {
        if let Some(set) = self.by_date.get_mut(&date) {
            set.insert(hash);
        }
    }

    /// Makes sure the given dates are loaded from the lake.
    pub async fn load_dates(
        &mut self,
        lake: &Lake,
        dates: impl IntoIterator<Item = i32>,
    ) -> Result<()> {
        let missing: Vec<i32> = dates
            .into_iter()
            .filter(|d| !self.by_date.contains_key(d))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for d in &missing {
            self.by_date.insert(*d, HashSet64::default());
        }
        let Some(table) = lake.table(&self.table).await? else {
            return Ok(());
        };
        let ctx = SessionContext::new();
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| Error::Internal(format!("register store: {e}")))?;
        let provider = table.table_provider().await.map_err(|e| self.err(e))?;
        let list = missing
            .iter()
            .map(|d| format!("CAST({d} AS DATE)"))
            .collect::<Vec<_>>()
            .join(", ");
        ctx.register_table("t", provider).map_err(|e| self.err(e))?;
        let sql = format!(
            "SELECT \"{k}\", CAST(date AS INT) AS d FROM t WHERE date IN ({list})",
            k = self.key_column
        );
        let batches = ctx
            .sql(&sql)
            .await
            .map_err(|e| self.err(e))?
            .collect()
            .await
            .map_err(|e| self.err(e))?;
        let mut loaded = 0usize;
        for b in &batches {
            let days = b.column(1).as_primitive::<arrow::datatypes::Int32Type>();
            for_each_str(b.column(0).as_ref(), |i, key| {
                if let Some(set) = self.by_date.get_mut(&days.value(i)) {
                    set.insert(key_hash(key));
                    loaded += 1;
                }
            });
        }
        tracing::debug!(table = %self.table, dates = missing.len(), keys = loaded, "loaded dedupe index");
        Ok(())
    }

    /// Records `hash` under `date`; returns `false` if it was already there
    /// (a duplicate). The date must have been loaded.
    pub fn insert(&mut self, date: i32, hash: u64) -> bool {
        self.set_for(date).insert(hash)
    }

    /// The hashes of one date (created empty if absent), marked as used now.
    fn set_for(&mut self, date: i32) -> &mut HashSet64 {
        self.clock += 1;
        self.touched.insert(date, self.clock);
        self.by_date.entry(date).or_default()
    }

    /// Forgets a hash (its row was not stored after all).
    pub fn remove(&mut self, date: i32, hash: u64) {
        if let Some(set) = self.by_date.get_mut(&date) {
            set.remove(&hash);
        }
    }

    /// Heap bytes held by the hashes (hashbrown: 8 bytes and a control byte
    /// per bucket, buckets a power of two above capacity / 7 * 8).
    pub fn bytes(&self) -> usize {
        self.by_date
            .values()
            .map(|set| set_bytes(set.capacity()))
            .sum()
    }

    /// Keeps at most `max_dates` loaded dates and at most `max_bytes` of
    /// hashes, evicting the least recently touched first, never a date in
    /// `pinned` (dates with rows not yet flushed). An evicted date is read
    /// back from the lake when a row of it arrives again.
    pub fn retain_recent(&mut self, max_dates: usize, max_bytes: usize, pinned: &HashSet<i32>) {
        let mut bytes = self.bytes();
        if self.by_date.len() <= max_dates && bytes <= max_bytes {
            return;
        }
        let mut order: Vec<(u64, i32)> = self
            .by_date
            .keys()
            .filter(|d| !pinned.contains(d))
            .map(|d| (self.touched.get(d).copied().unwrap_or(0), *d))
            .collect();
        order.sort_unstable();
        for (_, d) in order {
            if self.by_date.len() <= max_dates && bytes <= max_bytes {
                break;
            }
            if let Some(set) = self.by_date.remove(&d) {
                bytes -= set_bytes(set.capacity());
                tracing::debug!(table = %self.table, date = d, keys = set.len(), "evicted from the dedupe index");
            }
            self.touched.remove(&d);
        }
    }

    fn err(&self, source: deltalake::datafusion::error::DataFusionError) -> Error {
        Error::Dedupe {
            table: self.table.clone(),
            source,
        }
    }
}

fn set_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * 9
}

/// Calls `f(row, value)` for every non-null string of a Utf8 / LargeUtf8 / Utf8View array.
pub fn for_each_str(array: &dyn Array, mut f: impl FnMut(usize, &str)) {
    match array.data_type() {
        DataType::Utf8 => {
            for (i, v) in array.as_string::<i32>().iter().enumerate() {
                if let Some(v) = v {
                    f(i, v)
                }
            }
        }
        DataType::LargeUtf8 => {
            for (i, v) in array.as_string::<i64>().iter().enumerate() {
                if let Some(v) = v {
                    f(i, v)
                }
            }
        }
        DataType::Utf8View => {
            for (i, v) in array.as_string_view().iter().enumerate() {
                if let Some(v) = v {
                    f(i, v)
                }
            }
        }
        other => unreachable!("dedupe key column of type {other}"),
    }
}

/// The rows of `batch` whose key is new, recording them in `index`: a boolean
/// mask plus the number of duplicates. The key column is `key_column`, the date
/// column `date`.
pub fn mark_new(
    index: &mut SeenIndex,
    batch: &RecordBatch,
    key_column: &str,
) -> (arrow::array::BooleanArray, usize) {
    let keys = batch
        .column_by_name(key_column)
        .expect("dedupe key column present");
    let dates = batch
        .column_by_name(auditlake_schemas::tables::PARTITION_COLUMN)
        .expect("date column present")
        .as_primitive::<arrow::datatypes::Date32Type>();
    let mut rows: Vec<(i32, u64)> = Vec::with_capacity(batch.num_rows());
    for_each_str(keys.as_ref(), |i, key| {
        rows.push((dates.value(i), key_hash(key)))
    });
    // Rows arrive in runs of one date: one lookup of the date's set per run,
    // not two hash-map operations per row.
    let mut mask = Vec::with_capacity(rows.len());
    let mut dups = 0;
    for run in rows.chunk_by(|a, b| a.0 == b.0) {
        let set = index.set_for(run[0].0);
        for &(_, hash) in run {
            let new = set.insert(hash);
            dups += usize::from(!new);
            mask.push(new);
        }
    }
    (arrow::array::BooleanArray::from(mask), dups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Duplicates within a batch and against the index, per date: a key
    /// seen on another date is new; dates may come back after a run ends.
    #[test]
    fn marks_duplicates_per_date_across_runs() {
        use arrow::array::{Date32Array, StringArray};
        use arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let schema = Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, false),
            Field::new("date", DataType::Date32, false),
        ]));
        let rows = [
            ("a", 1),
            ("b", 1),
            ("a", 1),
            ("a", 2),
            ("c", 1),
            ("b", 2),
            ("c", 1),
        ];
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        let mut idx = SeenIndex::new("t", "event_id");
        assert!(idx.insert(2, key_hash("b")));
        let (mask, dups) = mark_new(&mut idx, &batch, "event_id");
        let got: Vec<bool> = mask.iter().map(Option::unwrap).collect();
        assert_eq!(got, [true, true, false, true, true, false, false]);
        assert_eq!(dups, 3);
        assert_eq!(idx.len(), 5);
    }

    #[test]
    fn eviction_keeps_pinned_and_recent_dates() {
        let mut idx = SeenIndex::new("t", "event_id");
        for d in 0..5 {
            assert!(idx.insert(d, 42));
        }
        assert!(!idx.insert(4, 42));
        let pinned: HashSet<i32> = [0].into_iter().collect();
        idx.retain_recent(2, usize::MAX, &pinned);
        assert_eq!(idx.dates(), 2);
        assert!(!idx.insert(0, 42), "pinned date kept");
        assert!(!idx.insert(4, 42), "most recent date kept");
    }

    #[test]
    fn eviction_bounds_the_bytes_held() {
        let mut idx = SeenIndex::new("t", "event_id");
        for d in 0..4 {
            for h in 0..10_000u64 {
                idx.insert(d, h);
            }
        }
        let per_date = idx.bytes() / 4;
        assert!(per_date >= 10_000 * 9, "{per_date}");
        idx.retain_recent(8, 2 * per_date, &HashSet::new());
        assert_eq!(idx.dates(), 2);
        assert!(idx.bytes() <= 2 * per_date);
        assert!(!idx.insert(3, 7), "the newest dates stay");
        // A pinned date stays even over the budget.
        let pinned: HashSet<i32> = [2, 3].into_iter().collect();
        idx.retain_recent(8, 0, &pinned);
        assert_eq!(idx.dates(), 2);
    }
}
