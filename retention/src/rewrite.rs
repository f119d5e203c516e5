//! The one write path of retention: retire whole files or rewrite files
//! without some of their rows, in one Delta commit per table.
//!
//! ```text
//! plan: [(file, Drop | Filter)]
//!   Drop   -> remove action (no read)
//!   Filter -> read the filter columns, mark doomed rows
//!               none doomed: untouched | all doomed: remove | some: read the
//!               kept rows (row selection), write a new file, remove the old
//! commit  -> CommitBuilder, operation DELETE with no predicate: the log gets
//!            paths and the new files' statistics, never the criteria (which
//!            may hold a user id)
//! ```
//!
//! A conflicting concurrent commit (a detect overwrite or compaction that
//! removed one of the same files) fails the commit; the new files are deleted
//! and the error is retryable: callers rerun from a fresh snapshot. Blind
//! appends by ingest do not conflict (WriteSerializable isolation).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::parquet::file::metadata::RowGroupMetaData;
use deltalake::protocol::DeltaOperation;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::files::{self, DataFile};
use crate::splice;
use crate::{Error, Result};
use auditlake_schemas::datafile;
use auditlake_schemas::lake::{WriteOptions, discard_uncommitted};

/// What to do with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// Every row goes: retire the file without reading it.
    Drop,
    /// Some rows may go: read it and ask the row filter.
    Filter,
}

/// Decides which rows of a file go.
pub trait RowFilter: Send + Sync + 'static {
    /// Columns the filter reads (the rest is not decoded to decide).
    fn columns(&self) -> Vec<&'static str>;
    /// True for each row of `batch` (of `file`) that must go.
    fn doomed(&self, file: &DataFile, batch: &RecordBatch) -> Result<BooleanArray>;
    /// Whether the file's bytes alone (dictionaries, footers) prove that no
    /// row goes, so it need not be decoded.
    fn rules_out(&self, _file: &DataFile, _bytes: &bytes::Bytes) -> Result<bool> {
        Ok(false)
    }
    /// Called before the batches of `file` go through [`doomed`](Self::doomed)
    /// (a rerun of a step reads a file again).
    fn begin_file(&self, _file: &DataFile) {}
    /// Whether a row group of `file` may hold rows that go, by its
    /// statistics (false: it is copied without being decoded).
    fn may_doom(&self, _file: &DataFile, _group: &RowGroupMetaData) -> bool {
        true
    }
}

/// A data file that a commit retired, with what the evidence needs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RetiredFile {
    /// Path relative to the table root.
    pub path: String,
    /// Bytes.
    pub bytes: u64,
    /// SHA-256 of its content, when it was read (hex).
    pub sha256: Option<String>,
    /// Rows removed from it.
    pub rows_removed: u64,
    /// Rows written again into a new file.
    pub rows_kept: u64,
}

/// What one table's rewrite did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewriteMetrics {
    /// Files looked at (read, or retired by statistics alone).
    pub files_considered: usize,
    /// Files read to decide.
    pub files_read: usize,
    /// Files retired (whole or rewritten).
    pub retired: Vec<RetiredFile>,
    /// New files written (paths relative to the table root).
    pub written: Vec<String>,
    /// Rows removed.
    pub rows_removed: u64,
    /// Rows copied into new files.
    pub rows_rewritten: u64,
    /// Bytes of the files read.
    pub bytes_read: u64,
    /// Bytes of the new files.
    pub bytes_written: u64,
    /// The table version committed (None: nothing to do, or dry run).
    pub version: Option<u64>,
    /// Partitions touched (`date=...`), sorted.
    pub partitions: Vec<String>,
}

impl RewriteMetrics {
    /// Adds a further commit's metrics (a second pass over the same table);
    /// the version becomes the later commit's, when it made one.
    pub fn absorb(&mut self, more: RewriteMetrics) {
        self.files_considered += more.files_considered;
        self.files_read += more.files_read;
        self.retired.extend(more.retired);
        self.written.extend(more.written);
        self.rows_removed += more.rows_removed;
        self.rows_rewritten += more.rows_rewritten;
        self.bytes_read += more.bytes_read;
        self.bytes_written += more.bytes_written;
        self.version = more.version.or(self.version);
        self.partitions.extend(more.partitions);
        self.partitions.sort();
        self.partitions.dedup();
    }
}

/// Rows decoded and written at a time when a file is rewritten: each batch
/// goes to the writer before the next is decoded. With whole files (~32k
/// rows) decoded first, an erase touched ~300 MiB of fresh memory, and the
/// kernel's page faults were a third of its time.
const REWRITE_BATCH_ROWS: usize = 8 * 1024;

/// Data files read and rewritten at once: one per core (each on its own
/// thread: decoding and encoding are CPU work).
pub fn file_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Applies `plan` to `table` in one commit. `app_metadata` goes into the
/// commit info (it must hold no user id). With `dry_run` nothing is written:
/// the metrics say what would be. Files to filter are read and rewritten in
/// parallel ([`file_parallelism`]); the commit is one.
pub async fn apply(
    name: &str,
    table: &DeltaTable,
    plan: &[(DataFile, FileAction)],
    filter: Arc<dyn RowFilter>,
    opts: &WriteOptions,
    app_metadata: HashMap<String, serde_json::Value>,
    dry_run: bool,
) -> Result<RewriteMetrics> {
    apply_gated(
        name,
        table,
        plan,
        filter,
        opts,
        app_metadata,
        dry_run,
        async { Ok(()) },
    )
    .await
}

/// [`apply`], committing only once `gate` is done (an erasure's tombstone
/// is committed meanwhile); if `gate` fails the new files are deleted and
/// nothing is committed.
#[allow(clippy::too_many_arguments)]
pub async fn apply_gated(
    name: &str,
    table: &DeltaTable,
    plan: &[(DataFile, FileAction)],
    filter: Arc<dyn RowFilter>,
    opts: &WriteOptions,
    app_metadata: HashMap<String, serde_json::Value>,
    dry_run: bool,
    gate: impl std::future::Future<Output = Result<()>>,
) -> Result<RewriteMetrics> {
    let mut m = RewriteMetrics::default();
    let mut actions: Vec<Action> = Vec::new();
    let mut partitions = std::collections::BTreeSet::new();
    if let Some((file, _)) = plan.iter().find(|(f, _)| f.deletion_vector) {
        return Err(Error::Unsupported {
            table: name.to_string(),
            message: format!(
                "file {} has a deletion vector; rewrite the table without deletion vectors first",
                file.path
            ),
        });
    }
    for (file, action) in plan {
        if *action == FileAction::Drop {
            m.files_considered += 1;
            let rows = file.rows.unwrap_or(0);
            m.rows_removed += rows;
            m.retired.push(RetiredFile {
                path: file.path.clone(),
                bytes: file.size,
                sha256: None,
                rows_removed: rows,
                rows_kept: 0,
            });
            partitions.insert(file.partition_dir());
            actions.push(Action::Remove(file.remove_action()));
        }
    }
    let filtered = futures::stream::iter(
        plan.iter()
            .filter(|(_, a)| *a == FileAction::Filter)
            .map(|(f, _)| f.clone()),
    )
    .map(|file| {
        let task = filter_file(table.clone(), file, filter.clone(), opts.clone(), dry_run);
        // On a blocking thread: decoding and encoding hold a core for tens of
        // milliseconds, which must not starve the runtime's other tasks (the
        // tombstone commit, other tables' I/O).
        let handle = tokio::runtime::Handle::current();
        async move {
            tokio::task::spawn_blocking(move || handle.block_on(task))
                .await
                .map_err(|e| Error::Internal(format!("rewrite task: {e}")))?
        }
    })
    .buffered(file_parallelism())
    .collect::<Vec<Result<Filtered>>>()
    .await;
    let mut failure = None;
    for r in filtered {
        match r {
            Ok(f) => {
                m.files_considered += 1;
                m.files_read += 1;
                m.bytes_read += f.bytes_read;
                m.rows_rewritten += f.rows_rewritten;
                m.bytes_written += f.bytes_written;
                if let Some(retired) = f.retired {
                    m.rows_removed += retired.rows_removed;
                    m.retired.push(retired);
                }
                if let Some(p) = f.partition {
                    partitions.insert(p);
                }
                actions.extend(f.remove.map(Action::Remove));
                for add in f.adds {
                    m.written.push(add.path.clone());
                    actions.push(Action::Add(add));
                }
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    m.partitions = partitions.into_iter().collect();
    if let Some(e) = failure {
        discard_uncommitted(table, &m.written).await;
        return Err(e);
    }
    if actions.is_empty() || dry_run {
        return Ok(m);
    }
    if let Err(e) = gate.await {
        discard_uncommitted(table, &m.written).await;
        return Err(e);
    }
    if !m.written.is_empty() {
        crate::pause_point("written");
    }
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::delta(name, "snapshot", e))?;
    let commit = CommitBuilder::default()
        .with_actions(actions)
        .with_app_metadata(app_metadata)
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Delete { predicate: None },
        )
        .await;
    match commit {
        Ok(done) => {
            crate::pause_point("committed");
            m.version = Some(done.version());
            Ok(m)
        }
        Err(e) => {
            discard_uncommitted(table, &m.written).await;
            Err(Error::delta(name, "commit", e))
        }
    }
}

/// What filtering one file gave.
#[derive(Default)]
struct Filtered {
    bytes_read: u64,
    retired: Option<RetiredFile>,
    partition: Option<String>,
    remove: Option<deltalake::kernel::Remove>,
    adds: Vec<deltalake::kernel::Add>,
    rows_rewritten: u64,
    bytes_written: u64,
}

/// Reads one file, asks the filter, and (unless no row goes) retires it and
/// writes its kept rows into a new file: row groups the filter rules out by
/// their statistics, or that lose no row, are copied as encoded
/// ([`splice`](crate::splice)); only the others are decoded and encoded.
async fn filter_file(
    table: DeltaTable,
    file: DataFile,
    filter: Arc<dyn RowFilter>,
    opts: WriteOptions,
    dry_run: bool,
) -> Result<Filtered> {
    let bytes = files::read_object(&table, &file.path).await?;
    let mut out = Filtered {
        bytes_read: bytes.len() as u64,
        ..Filtered::default()
    };
    if filter.rules_out(&file, &bytes)? {
        return Ok(out);
    }
    let src = splice::Source::open(&file.path, bytes)?;
    let candidates: Vec<usize> = src
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, g)| filter.may_doom(&file, g))
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return Ok(out);
    }
    let cols = filter.columns();
    filter.begin_file(&file);
    let mut masks = Vec::new();
    let mut doomed = 0u64;
    for b in src.decode(Some(&cols), candidates.clone(), None, 64 * 1024)? {
        let b = b?;
        let mask = filter.doomed(&file, &b)?;
        if mask.len() != b.num_rows() {
            return Err(Error::Internal(
                "row filter returned a wrong-sized mask".into(),
            ));
        }
        doomed += mask.true_count() as u64;
        masks.push(mask);
    }
    if doomed == 0 {
        return Ok(out);
    }
    let total: u64 = src
        .row_groups()
        .iter()
        .map(|g| u64::try_from(g.num_rows()).unwrap_or(0))
        .sum();
    out.partition = Some(file.partition_dir());
    let kept = total.saturating_sub(doomed);
    out.retired = Some(RetiredFile {
        path: file.path.clone(),
        bytes: file.size,
        sha256: Some(hex::encode(Sha256::digest(src.bytes()))),
        rows_removed: doomed,
        rows_kept: kept,
    });
    out.remove = Some(file.remove_action());
    if kept == 0 || dry_run {
        out.rows_rewritten += kept;
        return Ok(out);
    }
    let mut keep = vec![splice::Keep::All; src.row_groups().len()];
    for (g, mask) in candidates.iter().zip(src.split_masks(&candidates, &masks)?) {
        if mask.true_count() > 0 {
            keep[*g] = splice::Keep::Rows(arrow::compute::not(&mask)?);
        }
    }
    let spliced = splice::splice(&src, &keep, opts.writer_properties()?, REWRITE_BATCH_ROWS)?;
    drop(src);
    let path = datafile::new_file_path(&file.partition_dir());
    let size = spliced.bytes.len() as u64;
    let location = object_store::path::Path::parse(&path)
        .map_err(|e| Error::Internal(format!("new file path {path}: {e}")))?;
    table
        .object_store()
        .put(&location, spliced.bytes.into())
        .await?;
    let tags = crate::cluster::is_tagged(&file).then(crate::cluster::tags);
    out.rows_rewritten += spliced.rows;
    out.bytes_written += size;
    out.adds.push(datafile::add_action(
        path,
        size,
        &spliced.metadata,
        file.partition_values.clone(),
        tags,
    ));
    Ok(out)
}
