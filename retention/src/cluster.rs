//! Clustering by user: rewrite a partition sorted by `user_id` into files of
//! a modest size, so each file's min/max `user_id` covers a narrow range and
//! an erasure rewrites about one file per partition instead of all of them.
//!
//! ```text
//! partition date=D, old enough (D ended >= min_age before now), not yet clustered
//!   read every file -> sort by (user_id, event_time) -> write files of
//!   target_file_size -> one commit: remove old + add new, dataChange=false
//!   (an OPTIMIZE: concurrent blind appends do not conflict with it)
//! ```
//!
//! A partition counts as clustered when its files, ordered by their minimum
//! `user_id`, have ranges that do not overlap (a user may straddle two
//! neighbours) and each was written by clustering (tagged) or is no larger
//! than 1.5 times the target. Ingest appends new,
//! unclustered files to recent partitions; once a partition is old enough a
//! sweep clusters it. The whole partition is sorted in memory: fine for
//! partitions of a few GB of Arrow data, the scale a day of audit events has
//! here.

use std::collections::BTreeMap;
use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch,
};
use chrono::{DateTime, TimeDelta, Utc};
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use object_store::ObjectStoreExt;
use serde::Serialize;

use crate::files::{self, DataFile};
use crate::verify::day_name;
use crate::{Error, Result, retry};
use auditlake_schemas::Lake;
use auditlake_schemas::lake::WriteOptions;
use auditlake_schemas::tables;

/// By default a partition is cut into this many files (an erasure then
/// rewrites about one of them), within [`MIN_AUTO_FILE_SIZE`] and
/// [`MAX_AUTO_FILE_SIZE`].
pub const DEFAULT_FILES_PER_PARTITION: u64 = 32;
/// Smallest automatic file size: below it, scans pay for many small objects.
pub const MIN_AUTO_FILE_SIZE: u64 = 1024 * 1024;
/// Largest automatic file size (the lake's default target).
pub const MAX_AUTO_FILE_SIZE: u64 = 128 * 1024 * 1024;
/// Default age of a partition's day before it is clustered (late events
/// arrive mostly within a day).
pub const DEFAULT_MIN_AGE: TimeDelta = TimeDelta::days(1);
/// Tables clustered by default: the big ones with a `user_id`.
pub const DEFAULT_TABLES: [&str; 3] = [tables::API_ACCESS, tables::GRANTS, tables::DELETIONS];
/// Rows per row group of a clustered file. A user's rows lie in one or two
/// row groups, and an erasure decodes and encodes only those, copying the
/// rest of the file as it is ([`splice`](crate::splice)); smaller groups
/// cost footer bytes and per-group work in scans.
pub const CLUSTERED_ROW_GROUP_ROWS: usize = 16 * 1024;
/// The sort column.
pub const CLUSTER_COLUMN: &str = "user_id";
/// The `add` tag marking a file written sorted by [`CLUSTER_COLUMN`] (and
/// kept by erasure rewrites, whose output is a subset of such a file).
pub const CLUSTERED_TAG: &str = "auditlake.clusteredBy";

/// Whether a file was written clustered by user.
pub fn is_tagged(file: &DataFile) -> bool {
    file.tags
        .get(CLUSTERED_TAG)
        .is_some_and(|v| v.as_deref() == Some(CLUSTER_COLUMN))
}

/// The `add` tags of a file clustered by user.
pub fn tags() -> HashMap<String, Option<String>> {
    HashMap::from([(CLUSTERED_TAG.to_string(), Some(CLUSTER_COLUMN.to_string()))])
}

/// Marks an `add` action as clustered by user.
pub fn tag(add: &mut deltalake::kernel::Add) {
    add.tags.get_or_insert_with(Default::default).extend(tags());
}

/// Clustering options (the policy's `[clustering]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Tables to cluster.
    pub tables: Vec<String>,
    /// Target size of a clustered file; `None`: the partition's size over
    /// [`DEFAULT_FILES_PER_PARTITION`], within the automatic bounds.
    pub target_file_size: Option<u64>,
    /// Partitions whose day ended less than this before `now` are left alone.
    pub min_age: TimeDelta,
    /// Rows per row group of a clustered file.
    pub row_group_rows: usize,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            tables: DEFAULT_TABLES.iter().map(|t| t.to_string()).collect(),
            target_file_size: None,
            min_age: DEFAULT_MIN_AGE,
            row_group_rows: CLUSTERED_ROW_GROUP_ROWS,
        }
    }
}

/// What clustering did to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClusterMetrics {
    /// Partitions rewritten (`YYYY-MM-DD`).
    pub partitions: Vec<String>,
    /// Files retired (their paths relative to the table root).
    pub files_removed: Vec<String>,
    /// Files written.
    pub files_added: usize,
    /// Rows rewritten.
    pub rows: u64,
    /// Bytes read and written.
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Table versions committed.
    pub versions: Vec<u64>,
}

impl ClusterOptions {
    /// The file size to cut a partition of `bytes` into.
    pub fn target_for(&self, bytes: u64) -> u64 {
        self.target_file_size.unwrap_or_else(|| {
            (bytes / DEFAULT_FILES_PER_PARTITION).clamp(MIN_AUTO_FILE_SIZE, MAX_AUTO_FILE_SIZE)
        })
    }
}

/// Whether a partition's files are clustered by user (see the module doc).
pub fn is_clustered(files: &[&DataFile], target: u64) -> bool {
    if files
        .iter()
        .any(|f| !is_tagged(f) && f.size > target.saturating_mul(3) / 2)
    {
        return false;
    }
    let mut ranges = Vec::with_capacity(files.len());
    for f in files {
        match f.range(CLUSTER_COLUMN) {
            Some(r) => ranges.push(r),
            // No statistics, or only nulls: nothing to gain or unknown.
            None => return files.len() == 1,
        }
    }
    ranges.sort();
    ranges.windows(2).all(|w| w[0].1 <= w[1].0)
}

/// Clusters every eligible partition of `table` (each in its own commit).
pub async fn cluster_table(
    lake: &Lake,
    table: &str,
    opts: &ClusterOptions,
    write: &WriteOptions,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<ClusterMetrics> {
    let mut m = ClusterMetrics::default();
    let Some(t) = lake.table(table).await? else {
        return Ok(m);
    };
    let last_day = (now - opts.min_age - TimeDelta::days(1))
        .timestamp_micros()
        .div_euclid(86_400_000_000) as i32;
    let all = files::data_files(&t, table)?;
    let mut by_day: BTreeMap<i32, Vec<&DataFile>> = BTreeMap::new();
    for f in &all {
        if let Some(d) = f.date.filter(|d| *d <= last_day) {
            by_day.entry(d).or_default().push(f);
        }
    }
    for (day, files) in by_day {
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        if is_clustered(&files, opts.target_for(bytes)) {
            continue;
        }
        m.partitions.push(day_name(day));
        if dry_run {
            m.files_removed.extend(files.iter().map(|f| f.path.clone()));
            m.bytes_read += files.iter().map(|f| f.size).sum::<u64>();
            continue;
        }
        let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let done = retry(table, || async {
            let t = lake.require_table(table).await?;
            let current: HashMap<String, DataFile> = files::data_files(&t, table)?
                .into_iter()
                .map(|f| (f.path.clone(), f))
                .collect();
            // Files of the plan still there (a concurrent erase may have
            // replaced some: then only the rest is clustered now).
            let files: Vec<DataFile> = paths
                .iter()
                .filter_map(|p| current.get(p).cloned())
                .collect();
            cluster_partition(table, &t, day, &files, opts, write).await
        })
        .await?;
        m.files_removed.extend(done.files_removed);
        m.files_added += done.files_added;
        m.rows += done.rows;
        m.bytes_read += done.bytes_read;
        m.bytes_written += done.bytes_written;
        m.versions.extend(done.versions);
    }
    Ok(m)
}

async fn cluster_partition(
    name: &str,
    table: &DeltaTable,
    day: i32,
    files: &[DataFile],
    opts: &ClusterOptions,
    write: &WriteOptions,
) -> Result<ClusterMetrics> {
    let mut m = ClusterMetrics::default();
    if files.is_empty() {
        return Ok(m);
    }
    let mut batches = Vec::new();
    for f in files {
        if f.deletion_vector {
            return Err(Error::Unsupported {
                table: name.to_string(),
                message: format!("file {} has a deletion vector", f.path),
            });
        }
        let bytes = files::read_object(table, &f.path).await?;
        m.bytes_read += bytes.len() as u64;
        batches.extend(files::decode(&f.path, bytes, None)?);
    }
    let Some(first) = batches.first() else {
        return Ok(m);
    };
    let all = concat_batches(&first.schema(), &batches)?;
    drop(batches);
    m.rows = all.num_rows() as u64;
    let sorted = sort_by_user(&all)?;
    drop(all);

    // Cut the sorted rows into files of about the target size (estimated
    // from the compressed size read), at user boundaries where possible so
    // a user's rows land in one file.
    let rows = sorted.num_rows();
    let target = opts.target_for(m.bytes_read);
    let per_file = ((rows as u128 * u128::from(target)) / u128::from(m.bytes_read.max(1)))
        .clamp(1, rows as u128) as usize;
    let users = sorted
        .column_by_name(CLUSTER_COLUMN)
        .map(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8))
        .transpose()?;
    let users = users.as_ref().map(|u| u.as_string::<i32>());
    let mut cuts = Vec::new();
    let mut at = per_file;
    while at < rows {
        let mut cut = at;
        if let Some(u) = users {
            let limit = (at + per_file / 2).min(rows);
            while cut < limit
                && cut > 0
                && u.is_valid(cut)
                && u.is_valid(cut - 1)
                && u.value(cut) == u.value(cut - 1)
            {
                cut += 1;
            }
            if cut == limit {
                cut = at;
            }
        }
        cuts.push(cut);
        at = cut + per_file;
    }
    cuts.push(rows);
    let mut writer = RecordBatchWriter::for_table(table)
        .map_err(|e| Error::delta(name, "open writer", e))?
        .with_writer_properties(
            WriteOptions {
                row_group_rows: opts.row_group_rows,
                ..write.clone()
            }
            .writer_properties()?,
        );
    let mut adds = Vec::new();
    let mut start = 0;
    for cut in cuts {
        if cut <= start {
            continue;
        }
        let slice = files::with_date(&sorted.slice(start, cut - start), Some(day))?;
        writer
            .write(slice)
            .await
            .map_err(|e| Error::delta(name, "write clustered file", e))?;
        adds.extend(
            writer
                .flush()
                .await
                .map_err(|e| Error::delta(name, "flush clustered file", e))?,
        );
        start = cut;
    }
    let mut actions = Vec::new();
    for f in files {
        let mut r = f.remove_action();
        r.data_change = false;
        actions.push(Action::Remove(r));
        m.files_removed.push(f.path.clone());
    }
    let written: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
    for mut add in adds {
        add.data_change = false;
        tag(&mut add);
        m.bytes_written += u64::try_from(add.size).unwrap_or(0);
        m.files_added += 1;
        actions.push(Action::Add(add));
    }
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::delta(name, "snapshot", e))?;
    let commit = CommitBuilder::default()
        .with_actions(actions)
        .with_app_metadata(HashMap::from([(
            "auditlake".to_string(),
            serde_json::json!({"operation": "retention cluster", "by": CLUSTER_COLUMN}),
        )]))
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Optimize {
                predicate: None,
                target_size: i64::try_from(target).unwrap_or(i64::MAX),
            },
        )
        .await;
    match commit {
        Ok(done) => {
            m.versions.push(done.version());
            Ok(m)
        }
        Err(e) => {
            let store = table.object_store();
            for p in &written {
                let _ = store.delete(&p.as_str().into()).await;
            }
            Err(Error::delta(name, "commit clustered files", e))
        }
    }
}

/// `batch` sorted by `user_id` (nulls first), then by its time column.
pub fn sort_by_user(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut keys = Vec::new();
    for name in [CLUSTER_COLUMN, "event_time"] {
        if let Some(c) = batch.column_by_name(name) {
            keys.push(SortColumn {
                values: c.clone(),
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: true,
                }),
            });
        }
    }
    if keys.is_empty() {
        return Ok(batch.clone());
    }
    let idx = lexsort_to_indices(&keys, None)?;
    Ok(take_record_batch(batch, &idx)?)
}
