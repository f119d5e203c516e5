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

use arrow::array::{BooleanArray, RecordBatch};
use deltalake::DeltaTable;
use deltalake::kernel::Action;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::parquet::arrow::arrow_reader::RowSelection;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use object_store::ObjectStoreExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::files::{self, DataFile};
use crate::{Error, Result};
use auditlake_schemas::lake::WriteOptions;

/// What to do with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// Every row goes: retire the file without reading it.
    Drop,
    /// Some rows may go: read it and ask the row filter.
    Filter,
}

/// Decides which rows of a file go.
pub trait RowFilter: Send + Sync {
    /// Columns the filter reads (the rest is not decoded to decide).
    fn columns(&self) -> Vec<&'static str>;
    /// True for each row of `batch` (of `file`) that must go.
    fn doomed(&self, file: &DataFile, batch: &RecordBatch) -> Result<BooleanArray>;
    /// Whether the file's bytes alone (dictionaries, footers) prove that no
    /// row goes, so it need not be decoded.
    fn rules_out(&self, _file: &DataFile, _bytes: &bytes::Bytes) -> Result<bool> {
        Ok(false)
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

/// Applies `plan` to `table` in one commit. `app_metadata` goes into the
/// commit info (it must hold no user id). With `dry_run` nothing is written:
/// the metrics say what would be.
pub async fn apply(
    name: &str,
    table: &DeltaTable,
    plan: &[(DataFile, FileAction)],
    filter: &dyn RowFilter,
    opts: &WriteOptions,
    app_metadata: HashMap<String, serde_json::Value>,
    dry_run: bool,
) -> Result<RewriteMetrics> {
    let mut m = RewriteMetrics::default();
    let mut actions: Vec<Action> = Vec::new();
    let mut partitions = std::collections::BTreeSet::new();
    let result: Result<()> = async {
        for (file, action) in plan {
            m.files_considered += 1;
            if file.deletion_vector {
                return Err(Error::Unsupported {
                    table: name.to_string(),
                    message: format!(
                        "file {} has a deletion vector; rewrite the table without deletion vectors first",
                        file.path
                    ),
                });
            }
            match action {
                FileAction::Drop => {
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
                FileAction::Filter => {
                    let bytes = files::read_object(table, &file.path).await?;
                    m.files_read += 1;
                    m.bytes_read += bytes.len() as u64;
                    if filter.rules_out(file, &bytes)? {
                        continue;
                    }
                    let cols = filter.columns();
                    let batches = files::decode(&file.path, bytes.clone(), Some(&cols), None)?;
                    let mut masks = Vec::with_capacity(batches.len());
                    let (mut doomed, mut total) = (0u64, 0u64);
                    for b in &batches {
                        let mask = filter.doomed(file, b)?;
                        if mask.len() != b.num_rows() {
                            return Err(Error::Internal("row filter returned a wrong-sized mask".into()));
                        }
                        doomed += mask.true_count() as u64;
                        total += b.num_rows() as u64;
                        masks.push(mask);
                    }
                    if doomed == 0 {
                        continue;
                    }
                    partitions.insert(file.partition_dir());
                    let sha = hex::encode(Sha256::digest(&bytes));
                    m.rows_removed += doomed;
                    let kept = total - doomed;
                    m.retired.push(RetiredFile {
                        path: file.path.clone(),
                        bytes: file.size,
                        sha256: Some(sha),
                        rows_removed: doomed,
                        rows_kept: kept,
                    });
                    actions.push(Action::Remove(file.remove_action()));
                    if kept == 0 || dry_run {
                        m.rows_rewritten += kept;
                        continue;
                    }
                    let keep: Vec<BooleanArray> = masks
                        .iter()
                        .map(arrow::compute::not)
                        .collect::<std::result::Result<_, _>>()?;
                    let selection = RowSelection::from_filters(&keep);
                    let kept_batches = files::decode(&file.path, bytes, None, Some(selection))?;
                    let mut writer = RecordBatchWriter::for_table(table)
                        .map_err(|e| Error::delta(name, "open writer", e))?
                        .with_writer_properties(opts.writer_properties()?)
                        .with_target_file_size(opts.target_file_size);
                    for b in kept_batches {
                        m.rows_rewritten += b.num_rows() as u64;
                        let b = files::with_date(&b, file.date)?;
                        writer
                            .write(b)
                            .await
                            .map_err(|e| Error::delta(name, "write rewritten file", e))?;
                    }
                    let adds = writer
                        .flush()
                        .await
                        .map_err(|e| Error::delta(name, "flush rewritten file", e))?;
                    for mut add in adds {
                        if crate::cluster::is_tagged(file) {
                            crate::cluster::tag(&mut add);
                        }
                        m.bytes_written += u64::try_from(add.size).unwrap_or(0);
                        m.written.push(add.path.clone());
                        actions.push(Action::Add(add));
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    m.partitions = partitions.into_iter().collect();
    if let Err(e) = result {
        discard(table, &m.written).await;
        return Err(e);
    }
    if actions.is_empty() || dry_run {
        return Ok(m);
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
            discard(table, &m.written).await;
            Err(Error::delta(name, "commit", e))
        }
    }
}

/// Deletes files this operation wrote but did not commit.
async fn discard(table: &DeltaTable, paths: &[String]) {
    let store = table.object_store();
    for p in paths {
        let location = object_store::path::Path::parse(p).unwrap_or_else(|_| p.as_str().into());
        if let Err(e) = store.delete(&location).await {
            tracing::warn!(path = %p, error = %e, "cannot delete an uncommitted file; a later sweep removes it");
        }
    }
}
