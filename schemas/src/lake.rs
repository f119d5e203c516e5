//! The lake: one Delta table per auditlake table under one root URL, and the
//! commit plumbing every writer (ingest, detect, retention) goes through.
//!
//! ```text
//! Lake::open("s3://bucket/lake") -> Lake
//!   .table("api_access")          -> Option<DeltaTable>   (None: never written)
//!   .append("api_access", batches, txns, opts)
//!        write zstd Parquet, partitioned by `date`: rows sorted by date ->
//!          files encoded here, one+ per date (`datafile`), a missing table
//!          created empty first (version 0); otherwise (unsorted rows,
//!          overwrites) delta-rs's write
//!        + Delta `txn` actions (Kafka offsets) in the same commit
//!        conflict? reload, check the txns were not committed meanwhile, retry
//!          (the files already written are committed again, not rewritten)
//! ```
//!
//! Supported roots: a local path or `file://` URL, `s3://` (endpoint and keys from
//! the usual `AWS_*` variables), and `memory://` (one in-process store per
//! [`Lake`] value, shared by its clones: for tests).

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::schema::cast::normalize_for_delta;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::parquet::basic::{Compression, Encoding, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::DeltaOperation;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, ObjectStore};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use url::Url;

use crate::datafile;
use crate::tables::PARTITION_COLUMN;
use crate::{Error, Result, delta_error_is_retryable};

/// Reloads of a table whose log changed under the reader (see [`Lake::table`]).
const LOAD_RETRIES: u32 = 4;

/// Default target size of a data file written by one commit (bytes).
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;
/// Default maximum rows per Parquet row group.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 256 * 1024;
/// Default maximum rows per data page. A page's min/max is what prunes a
/// point lookup inside a row group, and ingest sorts by (app, user, time), so
/// a user's rows lie in every app's run: at parquet-rs's default of 20k rows
/// nearly every page of a date spans the looked-up user. With 4096 a lookup
/// of the busiest user decodes 3.0M of 5M rows instead of 4.4M (`benches/
/// run.sh`, 5M events: 96 -> 59 ms) for 1.3% more bytes; 1024 bought no more
/// and slowed the scans.
pub const DEFAULT_PAGE_ROWS: usize = 4096;
/// Default zstd level: level 1 encodes ~1.5x faster than 3 at the same size here.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Columns whose values are (nearly) all distinct, written without a dictionary
/// and with the encoding that compresses them best (5M-event lake, one date
/// rewritten each way with zstd 1: 15.6 MB plain, 14.4 MB with these):
/// `event_id`'s lengths apart from its bytes (zstd then sees only the id
/// characters: 9.9 -> 9.2 MB), `event_time` as deltas (2.7 -> 2.1 MB).
const UNIQUE_COLUMNS: [(&str, Encoding); 2] = [
    ("event_id", Encoding::DELTA_LENGTH_BYTE_ARRAY),
    ("event_time", Encoding::DELTA_BINARY_PACKED),
];
/// Columns written without min/max statistics: random per row (ids drawn
/// from a UUID or a token generator) or list elements, so a page's or a
/// file's range spans nearly every value and never prunes, while computing it
/// costs two byte comparisons per value (~2% of an ingest). Lookups by these
/// columns scan; the clustering columns (`app_id`, `user_id`, `event_time`,
/// `date`) and every other column keep their statistics.
const UNPRUNABLE_COLUMNS: [&[&str]; 4] = [
    &["event_id"],
    &["token_id"],
    &["token_scopes", "list", "element"],
    &["data_categories", "list", "element"],
];
/// How many times a conflicting commit is rerun before giving up.
pub const DEFAULT_COMMIT_ATTEMPTS: u32 = 8;

/// How data files are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Target size of one data file, in bytes.
    pub target_file_size: u64,
    /// Maximum rows per row group.
    pub row_group_rows: usize,
    /// Maximum rows per data page (checked every 1024 rows written).
    pub page_rows: usize,
    /// zstd compression level (1..=22).
    pub zstd_level: i32,
    /// Commit attempts on conflicts and transient store errors.
    pub commit_attempts: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            target_file_size: DEFAULT_TARGET_FILE_SIZE,
            row_group_rows: DEFAULT_ROW_GROUP_ROWS,
            page_rows: DEFAULT_PAGE_ROWS,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            commit_attempts: DEFAULT_COMMIT_ATTEMPTS,
        }
    }
}

impl WriteOptions {
    /// The Parquet writer properties: zstd, dictionary encoding, page statistics.
    pub fn writer_properties(&self) -> Result<WriterProperties> {
        let level = ZstdLevel::try_new(self.zstd_level).map_err(|e| {
            Error::Internal(format!("zstd level {} rejected: {e}", self.zstd_level))
        })?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .set_data_page_row_count_limit(self.page_rows)
            .set_statistics_enabled(EnabledStatistics::Page);
        // Unique per row: a dictionary would only fill up and fall back to
        // plain after costing a hash and a compare per value.
        for (column, encoding) in UNIQUE_COLUMNS {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(column), false)
                .set_column_encoding(ColumnPath::from(column), encoding);
        }
        for path in UNPRUNABLE_COLUMNS {
            let path = ColumnPath::new(path.iter().map(|p| p.to_string()).collect());
            props = props.set_column_statistics_enabled(path, EnabledStatistics::None);
        }
        Ok(props.build())
    }
}

/// A compare-and-swap of one Delta application transaction, e.g. the next Kafka
/// offset of one partition: the commit goes through only if the table's version
/// of `app_id` is still `from`, and sets it to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnUpdate {
    /// The application id, e.g. `auditlake-ingest/api-access/3`.
    pub app_id: String,
    /// The version this writer last read (None: never committed).
    pub from: Option<i64>,
    /// The version to record.
    pub to: i64,
}

/// The outcome of [`Lake::append`].
#[derive(Debug)]
pub struct AppendOutcome {
    /// The table after the commit.
    pub table: DeltaTable,
    /// The version committed, or `None` if the txns were already committed by an
    /// earlier attempt whose acknowledgement was lost (nothing was written again).
    pub version: Option<u64>,
    /// Data files added and their total size.
    pub files: usize,
    /// Bytes of the data files added.
    pub bytes: u64,
}

/// A lake root: where the tables live and how to reach the object store.
#[derive(Clone)]
pub struct Lake {
    root: Url,
    options: HashMap<String, String>,
    /// The shared store of a `memory://` lake.
    memory: Option<Arc<dyn ObjectStore>>,
    /// The store rooted at `root`, built on first use.
    root_store: Arc<std::sync::OnceLock<Arc<dyn ObjectStore>>>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("root", &self.root.as_str())
            .finish()
    }
}

impl std::fmt::Display for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.root.as_str())
    }
}

impl Lake {
    /// Opens a lake root: a local path (created if missing), `file://`, `s3://` or
    /// `memory://`. Nothing is read yet.
    pub fn open(location: &str) -> Result<Self> {
        Self::open_with(location, true)
    }

    /// Opens a lake root to read (or change) what is there: as [`open`](Self::open),
    /// but a local root that does not exist is an error, not a new empty
    /// directory (a mistyped `--lake` of `sql` or `retention verify` leaves
    /// nothing behind).
    pub fn open_existing(location: &str) -> Result<Self> {
        Self::open_with(location, false)
    }

    fn open_with(location: &str, create: bool) -> Result<Self> {
        let bad = |reason: String| Error::LakeUrl {
            url: location.to_string(),
            reason,
        };
        if location.trim().is_empty() {
            return Err(bad("empty; pass --lake or set AUDITLAKE_LAKE".to_string()));
        }
        let mut root = if location.contains("://") {
            Url::parse(location).map_err(|e| bad(e.to_string()))?
        } else {
            let path = std::path::absolute(location).map_err(|e| bad(e.to_string()))?;
            Url::from_directory_path(&path)
                .map_err(|()| bad(format!("{} is not an absolute path", path.display())))?
        };
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        let mut memory = None;
        match root.scheme() {
            "file" => {
                let path = root
                    .to_file_path()
                    .map_err(|()| bad("not a local path".to_string()))?;
                if create {
                    std::fs::create_dir_all(&path)
                        .map_err(|e| bad(format!("cannot create {}: {e}", path.display())))?;
                } else if !path.is_dir() {
                    return Err(Error::NoLakeDir {
                        path: path.display().to_string(),
                    });
                }
            }
            "memory" => memory = Some(Arc::new(InMemory::new()) as Arc<dyn ObjectStore>),
            "s3" | "s3a" => {
                if root.host_str().unwrap_or("").is_empty() {
                    return Err(bad("an s3:// URL needs a bucket".to_string()));
                }
            }
            other => {
                return Err(bad(format!(
                    "unsupported scheme {other:?}; use a local path, file://, s3:// or memory://"
                )));
            }
        }
        let options = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Ok(Self {
            root,
            options,
            memory,
            root_store: Arc::default(),
        })
    }

    /// The root URL (ends with `/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The URL of a table under the root.
    pub fn table_url(&self, table: &str) -> Url {
        self.root
            .join(&format!("{table}/"))
            .expect("a table name is a valid URL segment")
    }

    fn builder(&self, table: &str) -> Result<DeltaTableBuilder> {
        let url = self.table_url(table);
        let builder = DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| Error::delta(table, "open", e))?
            .with_storage_options(self.options.clone());
        Ok(match &self.memory {
            Some(store) => builder.with_storage_backend(store.clone(), url),
            None => builder,
        })
    }

    /// Whether `table` has a Delta log under the root.
    pub async fn table_exists(&self, table: &str) -> Result<bool> {
        use futures::TryStreamExt;
        let store = self.object_store()?;
        let log = object_store::path::Path::from(format!("{table}/_delta_log/"));
        Ok(store.list(Some(&log)).try_next().await?.is_some())
    }

    /// Loads a table at its newest version, or `None` if it was never written.
    pub async fn table(&self, table: &str) -> Result<Option<DeltaTable>> {
        if !self.table_exists(table).await? {
            return Ok(None);
        }
        // A log cleanup (retention erase) may delete the commit files a
        // reader listed a moment before: such a load fails with a retryable
        // "not found" and succeeds again from the new checkpoint.
        let mut attempt = 0u32;
        loop {
            match self.builder(table)?.load().await {
                Ok(t) => return Ok(Some(t)),
                Err(DeltaTableError::NotATable(_)) => return Ok(None),
                Err(e) if attempt < LOAD_RETRIES && delta_error_is_retryable(&e) => {
                    attempt += 1;
                    tracing::debug!(table, attempt, error = %e, "reloading the table");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => return Err(Error::delta(table, "load", e)),
            }
        }
    }

    /// Loads a table that must exist.
    pub async fn require_table(&self, table: &str) -> Result<DeltaTable> {
        self.table(table)
            .await?
            .ok_or_else(|| Error::TableNotFound {
                table: table.to_string(),
                lake: self.root.to_string(),
            })
    }

    /// The names of the tables that exist under the root, among `candidates`.
    pub async fn existing_tables<'a>(&self, candidates: &[&'a str]) -> Result<Vec<&'a str>> {
        let mut out = Vec::new();
        for t in candidates {
            if self.table(t).await?.is_some() {
                out.push(*t);
            }
        }
        Ok(out)
    }

    /// The object store rooted at the lake root: every object of every table.
    pub fn object_store(&self) -> Result<Arc<dyn ObjectStore>> {
        if let Some(store) = self.root_store.get() {
            return Ok(store.clone());
        }
        let store = self.build_root_store()?;
        Ok(self.root_store.get_or_init(|| store).clone())
    }

    fn build_root_store(&self) -> Result<Arc<dyn ObjectStore>> {
        if let Some(store) = &self.memory {
            let prefix = object_store::path::Path::from(self.root.path());
            return Ok(Arc::new(object_store::prefix::PrefixStore::new(
                store.clone(),
                prefix,
            )));
        }
        let log_store = DeltaTableBuilder::from_url(self.root.clone())
            .map_err(|e| Error::delta("(root)", "open", e))?
            .with_storage_options(self.options.clone())
            .build_storage()
            .map_err(|e| Error::delta("(root)", "open store", e))?;
        Ok(log_store.object_store(None))
    }

    /// Appends `batches` to `table` in one Delta commit carrying `txns`, creating
    /// the table (partitioned by `date`) on first write.
    ///
    /// Conflicts with concurrent writers and transient store errors are retried
    /// with backoff. Before every attempt the table is reloaded and each txn
    /// checked: all at `to` means an earlier attempt did commit (its
    /// acknowledgement was lost) and nothing is written again; any at neither
    /// `from` nor `to` means another writer took over the partition, and the
    /// write is refused as [`Error::Fenced`] (a zombie must not commit). Delta's
    /// own conflict check rejects a concurrent commit of the same app id between
    /// the check and the commit.
    pub async fn append(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        txns: Vec<TxnUpdate>,
        opts: &WriteOptions,
    ) -> Result<AppendOutcome> {
        self.write(table, batches, txns, SaveMode::Append, opts, None)
            .await
    }

    /// [`append`](Self::append), committed only on top of version `base` of
    /// the table (`None`: the table does not exist yet): if any other commit
    /// landed since, nothing is committed and the error is [`Error::Moved`]
    /// naming the version now. A writer whose dedupe reflects the table at
    /// `base` thus never commits rows another writer stored meanwhile: it
    /// reads what was added ([`Lake::added_files`]), drops its rows already
    /// there and appends again on the new version.
    pub async fn append_on(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        txns: Vec<TxnUpdate>,
        opts: &WriteOptions,
        base: Option<i64>,
    ) -> Result<AppendOutcome> {
        self.write(table, batches, txns, SaveMode::Append, opts, Some(base))
            .await
    }

    /// The data files added to `table` by the commits after version `from`
    /// (`None`: from the first) up to and including `to`, with their `date`
    /// partition (days since the epoch), read from the commits' JSON; `None`
    /// when a commit in the range is gone (retention removes log files older
    /// than a checkpoint), so the caller must read the table instead.
    pub async fn added_files(
        &self,
        table: &str,
        from: Option<i64>,
        to: i64,
    ) -> Result<Option<Vec<(String, Option<i32>)>>> {
        let store = self.object_store()?;
        let mut out = Vec::new();
        for v in from.map_or(0, |f| f + 1)..=to {
            let path = object_store::path::Path::from(format!("{table}/_delta_log/{v:020}.json"));
            let bytes = match store.get(&path).await {
                Ok(r) => r.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
                    Error::Internal(format!("{path}: a commit line is not JSON: {e}"))
                })?;
                let Some(add) = action.get("add") else {
                    continue;
                };
                let Some(file) = add.get("path").and_then(|p| p.as_str()) else {
                    continue;
                };
                let file = percent_decode(file);
                let date = add
                    .get("partitionValues")
                    .and_then(|p| p.get(PARTITION_COLUMN))
                    .and_then(|d| d.as_str())
                    .and_then(datafile::parse_date);
                out.push((format!("{table}/{file}"), date));
            }
        }
        Ok(Some(out))
    }

    /// Replaces the whole content of `table` in one commit (readers see the old
    /// or the new rows, never a mix). Used for derived tables such as `findings`.
    pub async fn overwrite(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        opts: &WriteOptions,
    ) -> Result<AppendOutcome> {
        self.write(table, batches, Vec::new(), SaveMode::Overwrite, opts, None)
            .await
    }

    async fn write(
        &self,
        table: &str,
        batches: Vec<RecordBatch>,
        txns: Vec<TxnUpdate>,
        mode: SaveMode,
        opts: &WriteOptions,
        mut expect: Option<Option<i64>>,
    ) -> Result<AppendOutcome> {
        let props = opts.writer_properties()?;
        let mut attempt = 0u32;
        // Appends of date-sorted rows to an existing table: files written
        // once by [`Lake::write_files`], committed by each attempt.
        let mut own_files: Option<Vec<Add>> = None;
        // Rows sorted by date go through `write_files` (and a missing table
        // is created first); the order does not change between attempts.
        let sorted_append = mode == SaveMode::Append
            && !batches.is_empty()
            && batches
                .iter()
                .map(datafile::is_sorted_by_date)
                .collect::<Result<Vec<bool>>>()?
                .into_iter()
                .all(|sorted| sorted);
        loop {
            attempt += 1;
            let current = match self.table(table).await? {
                Some(t) => t,
                None => self
                    .builder(table)?
                    .build()
                    .map_err(|e| Error::delta(table, "create", e))?,
            };
            if !txns.is_empty() && current.version().is_some() {
                match txn_state(&current, table, &txns).await? {
                    TxnState::Pending => {}
                    TxnState::Committed => {
                        if let Some(adds) = &own_files {
                            discard_unreferenced(&current, adds).await;
                        }
                        return Ok(AppendOutcome {
                            table: current,
                            version: None,
                            files: 0,
                            bytes: 0,
                        });
                    }
                    TxnState::Fenced(app_id, theirs, ours) => {
                        if let Some(adds) = &own_files {
                            discard_unreferenced(&current, adds).await;
                        }
                        return Err(Error::Fenced {
                            table: table.to_string(),
                            app_id,
                            theirs,
                            ours,
                        });
                    }
                }
            }
            let version = current.version().map(|v| v as i64);
            if let Some(base) = expect
                && version != base
            {
                if let Some(adds) = &own_files {
                    discard_unreferenced(&current, adds).await;
                }
                return Err(Error::Moved {
                    table: table.to_string(),
                    base,
                    now: version,
                });
            }
            let own_path = sorted_append && own_files.is_none();
            if own_path && current.version().is_none() {
                // A new table is created empty first (the protocol and
                // metadata delta-rs's write would commit with its first
                // files), so its first rows take the path every later
                // append takes: delta-rs's write splits them by partition
                // and copies them again (~6% of a 1M-event ingest).
                match self
                    .create_empty(table, &current, &batches[0].schema())
                    .await
                {
                    Ok(()) => {
                        // Created here (or by a racing writer): based on the
                        // empty table, unless a commit lands on it first.
                        if expect == Some(None) {
                            expect = Some(Some(0));
                        }
                        continue;
                    }
                    Err(e) if e.is_retryable() && attempt < opts.commit_attempts => {
                        let backoff = Duration::from_millis(50 * 2u64.pow(attempt.min(7)));
                        tracing::warn!(table, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "creating the table failed, retrying");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            if own_path && current.version().is_some() {
                own_files = Some(
                    self.write_files(table, &current, &batches, &props, opts)
                        .await?,
                );
            }
            if let Some(adds) = &own_files {
                match commit_files(table, &current, adds, &txns, expect.is_some()).await {
                    Ok(outcome) => return Ok(outcome),
                    // A commit on a fixed base failed: reloaded, the table has
                    // either moved (Moved above) or the failure was transient.
                    Err(e) if expect.is_some() && attempt < opts.commit_attempts => {
                        tracing::debug!(table, attempt, error = %e, "commit on a fixed base failed, reloading");
                        continue;
                    }
                    Err(e) if e.is_retryable() && attempt < opts.commit_attempts => {
                        let backoff = Duration::from_millis(50 * 2u64.pow(attempt.min(7)));
                        tracing::warn!(table, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "commit failed, retrying");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    Err(e) => {
                        // The commit may have landed before the error: only
                        // files the reloaded log does not name go.
                        discard_unreferenced(&current, adds).await;
                        return Err(e);
                    }
                }
            }
            let before = if mode == SaveMode::Append {
                table_size(&current)
            } else {
                (0, 0)
            };
            let mut commit = CommitProperties::default();
            if expect.is_some() {
                // No rebase onto commits made meanwhile: the dedupe this
                // write relies on reflects the base version only.
                commit = commit.with_max_retries(0);
            }
            if !txns.is_empty() {
                commit = commit.with_application_transactions(
                    txns.iter()
                        .map(|t| Transaction::new(&t.app_id, t.to))
                        .collect(),
                );
            }
            let result = current
                .write(batches.clone())
                .with_save_mode(mode)
                .with_partition_columns([PARTITION_COLUMN])
                .with_writer_properties(props.clone())
                .with_target_file_size(NonZeroU64::new(opts.target_file_size))
                .with_commit_properties(commit)
                .await;
            match result {
                Ok(t) => {
                    let version = t.version();
                    let (files, bytes) = table_size(&t);
                    let (files, bytes) = (
                        files.saturating_sub(before.0),
                        bytes.saturating_sub(before.1),
                    );
                    return Ok(AppendOutcome {
                        table: t,
                        version,
                        files,
                        bytes,
                    });
                }
                Err(e) if expect.is_some() && attempt < opts.commit_attempts => {
                    tracing::debug!(table, attempt, error = %e, "commit on a fixed base failed, reloading");
                }
                Err(e) if delta_error_is_retryable(&e) && attempt < opts.commit_attempts => {
                    let backoff = Duration::from_millis(50 * 2u64.pow(attempt.min(7)));
                    tracing::warn!(table, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "commit failed, retrying");
                    tokio::time::sleep(backoff).await;
                }
                Err(e) => return Err(Error::delta(table, format!("write (attempt {attempt})"), e)),
            }
        }
    }

    /// Creates `table` at version 0 with no files: the schema of `schema`
    /// (normalised as delta-rs's write does) partitioned by `date`. A writer
    /// that loses the race to create it finds the winner's table.
    async fn create_empty(
        &self,
        table: &str,
        current: &DeltaTable,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<()> {
        let normalized = normalize_for_delta(schema);
        let columns: StructType = normalized.as_ref().try_into_kernel().map_err(|e| {
            Error::Internal(format!(
                "the schema of `{table}` has no Delta equivalent: {e}"
            ))
        })?;
        let created = current
            .create()
            .with_columns(columns.fields().cloned())
            .with_partition_columns([PARTITION_COLUMN])
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) => match self.table(table).await? {
                Some(_) => {
                    tracing::debug!(table, error = %e, "another writer created the table");
                    Ok(())
                }
                None => Err(Error::delta(table, "create", e)),
            },
        }
    }

    /// Writes the rows of `batches` (each sorted by `date`) as data files of
    /// `table`: one or more files per date, encoded in parallel (one per core).
    async fn write_files(
        &self,
        name: &str,
        table: &DeltaTable,
        batches: &[RecordBatch],
        props: &WriterProperties,
        opts: &WriteOptions,
    ) -> Result<Vec<Add>> {
        let mut parts = Vec::new();
        for batch in batches {
            let Some(at) = batch.schema().index_of(PARTITION_COLUMN).ok() else {
                return Err(Error::Internal(format!(
                    "a batch for `{name}` without `{PARTITION_COLUMN}`"
                )));
            };
            let mut data = batch.clone();
            data.remove_column(at);
            for (date, rows) in datafile::date_runs(batch)? {
                parts.push((date, data.slice(rows.start, rows.len())));
            }
        }
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let store = table.object_store();
        let written = futures::stream::iter(parts)
            .map(|(date, part)| {
                let (name, props, store) = (name.to_string(), props.clone(), store.clone());
                let target = opts.target_file_size;
                async move {
                    let files = tokio::task::spawn_blocking({
                        let name = name.clone();
                        move || datafile::encode(&name, &part, &props, target)
                    })
                    .await
                    .map_err(|e| Error::Internal(format!("encode task: {e}")))??;
                    let day = datafile::date_string(date);
                    let mut adds = Vec::with_capacity(files.len());
                    for f in files {
                        let path = datafile::new_file_path(&format!("{PARTITION_COLUMN}={day}"));
                        let size = f.bytes.len() as u64;
                        store
                            .put(
                                &object_store::path::Path::from(path.as_str()),
                                f.bytes.into(),
                            )
                            .await?;
                        adds.push(datafile::add_action(
                            path,
                            size,
                            &f.metadata,
                            HashMap::from([(PARTITION_COLUMN.to_string(), Some(day.clone()))]),
                            None,
                        ));
                    }
                    Ok::<_, Error>(adds)
                }
            })
            .buffered(parallelism)
            .collect::<Vec<_>>()
            .await;
        let mut adds = Vec::new();
        let mut failure = None;
        for r in written {
            match r {
                Ok(a) => adds.extend(a),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            discard_unreferenced(table, &adds).await;
            return Err(e);
        }
        Ok(adds)
    }

    /// The version of an application transaction (e.g. the next Kafka offset of a
    /// partition) recorded in `table`, if any.
    pub async fn txn_version(&self, table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
        let state = table
            .snapshot()
            .map_err(|e| Error::delta("?", "snapshot", e))?;
        state
            .transaction_version(table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| Error::delta("?", "read txn", e))
    }
}

enum TxnState {
    Pending,
    Committed,
    Fenced(String, i64, i64),
}

/// Commits `adds` (files written by [`Lake::write_files`]) and `txns` to
/// `current` as one append.
async fn commit_files(
    name: &str,
    current: &DeltaTable,
    adds: &[Add],
    txns: &[TxnUpdate],
    strict: bool,
) -> Result<AppendOutcome> {
    let snapshot = current
        .snapshot()
        .map_err(|e| Error::delta(name, "snapshot", e))?;
    let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
    actions.extend(
        txns.iter()
            .map(|t| Action::Txn(Transaction::new(&t.app_id, t.to))),
    );
    let mut builder = CommitBuilder::default().with_actions(actions);
    if strict {
        // Fails if the table moved past `current` instead of rebasing.
        builder = builder.with_max_retries(0);
    }
    let done = builder
        .build(
            Some(snapshot),
            current.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(vec![PARTITION_COLUMN.to_string()]),
                predicate: None,
            },
        )
        .await
        .map_err(|e| Error::delta(name, "commit", e))?;
    let version = done.version();
    let mut table = current.clone();
    table.state = Some(done.snapshot());
    Ok(AppendOutcome {
        table,
        version: Some(version),
        files: adds.len(),
        bytes: adds
            .iter()
            .map(|a| u64::try_from(a.size).unwrap_or(0))
            .sum(),
    })
}

/// Deletes data files a writer wrote but whose commit failed, except those
/// the table's log names after all: a commit can land before its error is
/// seen (a lost response, a timeout), and deleting a committed file would
/// break the table. `table` is reloaded first; if that fails, every file
/// stays (a later `verify` reports files no version names, and nothing is
/// lost by keeping them). Shared by ingest's appends and retention's
/// rewrites.
pub async fn discard_uncommitted(table: &DeltaTable, paths: &[String]) {
    if paths.is_empty() {
        return;
    }
    let mut latest = table.clone();
    if let Err(e) = latest.update_state().await {
        tracing::warn!(error = %e, files = paths.len(), "cannot reload the table; uncommitted files stay");
        return;
    }
    let referenced: std::collections::HashSet<String> = match latest.snapshot() {
        Ok(s) => s.log_data().iter().map(|f| f.path().to_string()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, files = paths.len(), "cannot list the table's files; uncommitted files stay");
            return;
        }
    };
    let store = latest.object_store();
    for p in paths.iter().filter(|p| !referenced.contains(p.as_str())) {
        let location = object_store::path::Path::parse(p).unwrap_or_else(|_| p.as_str().into());
        if let Err(e) = store.delete(&location).await {
            tracing::warn!(path = %p, error = %e, "cannot delete an uncommitted data file");
        }
    }
}

/// [`discard_uncommitted`] for the files of `adds`.
async fn discard_unreferenced(table: &DeltaTable, adds: &[Add]) {
    let paths: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
    discard_uncommitted(table, &paths).await;
}

async fn txn_state(table: &DeltaTable, name: &str, txns: &[TxnUpdate]) -> Result<TxnState> {
    let state = table
        .snapshot()
        .map_err(|e| Error::delta(name, "snapshot", e))?;
    let (mut at_from, mut at_to, mut neutral) = (0, 0, 0);
    for txn in txns {
        let current = state
            .transaction_version(table.log_store().as_ref(), &txn.app_id)
            .await
            .map_err(|e| Error::delta(name, "read txn", e))?;
        if txn.from == Some(txn.to) && current == txn.from {
            // Unchanged (e.g. a replay behind the recorded offset): fits either way.
            neutral += 1;
        } else if current == Some(txn.to) {
            at_to += 1;
        } else if current == txn.from {
            at_from += 1;
        } else {
            return Ok(TxnState::Fenced(
                txn.app_id.clone(),
                current.unwrap_or(-1),
                txn.to,
            ));
        }
    }
    Ok(
        if at_from == 0 && at_to + neutral == txns.len() && at_to > 0 {
            TxnState::Committed
        } else if at_to == 0 {
            TxnState::Pending
        } else {
            TxnState::Fenced("(mixed)".into(), -1, -1)
        },
    )
}

/// Data files and bytes of a table's current snapshot.
pub fn table_size(table: &DeltaTable) -> (usize, u64) {
    match table.snapshot() {
        Ok(state) => state.log_data().iter().fold((0, 0), |(n, b), f| {
            (n + 1, b + u64::try_from(f.size()).unwrap_or(0))
        }),
        Err(_) => (0, 0),
    }
}

/// A Delta log path with its `%XX` escapes decoded (delta-rs escapes
/// characters such as spaces and `%` in the paths it writes).
fn percent_decode(path: &str) -> String {
    if !path.contains('%') {
        return path.to_string();
    }
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(Ok(v)) = path.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_paths_are_percent_decoded() {
        assert_eq!(
            percent_decode("date=2026-11-20/a.parquet"),
            "date=2026-11-20/a.parquet"
        );
        assert_eq!(percent_decode("a%20b%25c.parquet"), "a b%c.parquet");
        // A stray `%` stays as written.
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%e4"), "%zz\u{fffd}");
    }

    use super::*;
    use crate::Topic;

    #[test]
    fn only_open_creates_a_missing_local_root() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("typo");
        let err = Lake::open_existing(missing.to_str().unwrap()).unwrap_err();
        assert!(matches!(err, Error::NoLakeDir { .. }), "{err}");
        assert!(err.to_string().contains("typo"), "{err}");
        assert!(!missing.exists());
        Lake::open(missing.to_str().unwrap()).unwrap();
        assert!(missing.is_dir());
        Lake::open_existing(missing.to_str().unwrap()).unwrap();
        // Other schemes are not checked at opening.
        Lake::open_existing("memory://").unwrap();
    }

    #[test]
    fn random_columns_go_without_statistics_and_clustering_columns_keep_them() {
        let props = WriteOptions::default().writer_properties().unwrap();
        let stats = |parts: &[&str]| {
            props.statistics_enabled(&ColumnPath::new(
                parts.iter().map(|p| p.to_string()).collect(),
            ))
        };
        for none in UNPRUNABLE_COLUMNS {
            assert_eq!(stats(none), EnabledStatistics::None, "{none:?}");
        }
        for kept in [
            "app_id",
            "user_id",
            "event_time",
            "client_ip",
            "developer_id",
        ] {
            assert_eq!(stats(&[kept]), EnabledStatistics::Page, "{kept}");
        }
    }

    #[test]
    fn data_pages_hold_at_most_page_rows() {
        use arrow::array::StringArray;
        use deltalake::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        use deltalake::parquet::file::metadata::PageIndexPolicy;
        let users = StringArray::from_iter_values((0..10_000).map(|i| format!("u{}", i / 3)));
        let batch = RecordBatch::try_from_iter([("user_id", Arc::new(users) as _)]).unwrap();
        let pages = |opts: WriteOptions| {
            let props = opts.writer_properties().unwrap();
            let files = datafile::encode("api_access", &batch, &props, u64::MAX).unwrap();
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
            let meta = ArrowReaderMetadata::load(&files[0].bytes, options).unwrap();
            let index = meta.metadata().offset_index().unwrap();
            let starts: Vec<i64> = index[0][0]
                .page_locations()
                .iter()
                .map(|p| p.first_row_index)
                .collect();
            starts
        };
        // The limit is checked every 1024 rows: pages of 4096 rows.
        assert_eq!(pages(WriteOptions::default()), [0, 4096, 8192]);
        let coarse = WriteOptions {
            page_rows: 20_000,
            ..WriteOptions::default()
        };
        assert_eq!(pages(coarse), [0]);
    }

    fn grants(ids: &[&str]) -> RecordBatch {
        crate::testing::events(
            Topic::Grants,
            ids.iter().map(|id| {
                format!(
                    r#"{{"event_id":"{id}","event_time":"2026-11-20T08:00:00Z","app_id":"a","user_id":"u","action":"grant"}}"#
                )
            }),
        )
    }

    fn txn(from: Option<i64>, to: i64) -> Vec<TxnUpdate> {
        vec![TxnUpdate {
            app_id: "ingest/grants/0".into(),
            from,
            to,
        }]
    }

    #[tokio::test]
    async fn txns_are_compare_and_swap() {
        let lake = Lake::open("memory:///lake").unwrap();
        let opts = WriteOptions::default();
        assert!(lake.table("grants").await.unwrap().is_none());
        let r = lake
            .append("grants", vec![grants(&["e1", "e2"])], txn(None, 2), &opts)
            .await
            .unwrap();
        // Version 0 created the table empty; the rows and txn are version 1.
        assert_eq!(r.version, Some(1));
        assert_eq!(r.files, 1);
        let t = lake.require_table("grants").await.unwrap();
        let mut first = t.clone();
        first.load_version(0).await.unwrap();
        assert_eq!(first.snapshot().unwrap().log_data().iter().count(), 0);
        assert_eq!(
            lake.txn_version(&first, "ingest/grants/0").await.unwrap(),
            None
        );
        assert_eq!(
            lake.txn_version(&t, "ingest/grants/0").await.unwrap(),
            Some(2)
        );

        // A replay of the same commit (acknowledgement lost) writes nothing.
        let r = lake
            .append("grants", vec![grants(&["e1", "e2"])], txn(None, 2), &opts)
            .await
            .unwrap();
        assert_eq!(r.version, None);

        // Offsets only (no rows): an empty batch commits the txn.
        let empty = RecordBatch::new_empty(crate::tables::grants());
        let r = lake
            .append("grants", vec![empty], txn(Some(2), 5), &opts)
            .await
            .unwrap();
        assert!(r.version.is_some());
        let t = lake.require_table("grants").await.unwrap();
        assert_eq!(
            lake.txn_version(&t, "ingest/grants/0").await.unwrap(),
            Some(5)
        );

        // A zombie that still believes the partition is at 2 is fenced.
        let err = lake
            .append("grants", vec![grants(&["e3"])], txn(Some(2), 4), &opts)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Fenced { .. }), "{err}");
    }

    /// After a failed commit only the files the log does not name are
    /// deleted: a commit that landed before its error keeps its files, even
    /// when the caller's table handle predates it.
    #[tokio::test]
    async fn discarding_keeps_files_a_landed_commit_names() {
        let lake = Lake::open("memory:///lake").unwrap();
        let opts = WriteOptions::default();
        lake.append("grants", vec![grants(&["e1"])], Vec::new(), &opts)
            .await
            .unwrap();
        let stale = lake.require_table("grants").await.unwrap();
        let r = lake
            .append("grants", vec![grants(&["e2"])], Vec::new(), &opts)
            .await
            .unwrap();
        assert_eq!(r.version, Some(2));
        let fresh = lake.require_table("grants").await.unwrap();
        let committed: Vec<String> = fresh
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| f.path().to_string())
            .collect();
        assert_eq!(committed.len(), 2);
        let store = fresh.object_store();
        let stray = "date=2026-11-20/stray.parquet".to_string();
        store
            .put(
                &object_store::path::Path::from(stray.as_str()),
                b"x".to_vec().into(),
            )
            .await
            .unwrap();

        let mut paths = committed.clone();
        paths.push(stray.clone());
        discard_uncommitted(&stale, &paths).await;

        for p in &committed {
            let found = store
                .head(&object_store::path::Path::from(p.as_str()))
                .await;
            assert!(found.is_ok(), "committed file {p} was deleted");
        }
        let gone = store
            .head(&object_store::path::Path::from(stray.as_str()))
            .await;
        assert!(gone.is_err(), "the uncommitted file is still there");
    }
}
