//! Errors of the schemas crate, sorted by whose fault they are.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while decoding events or touching the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lake URL given by the user cannot be used.
    #[error("invalid lake URL {url:?}: {reason}")]
    LakeUrl { url: String, reason: String },

    /// A local lake root that must exist does not.
    #[error("no lake at {path}: the directory does not exist (`auditlake ingest` creates one)")]
    NoLakeDir { path: String },

    /// A table that must exist does not.
    #[error("table `{table}` does not exist in lake {lake} (has anything been ingested?)")]
    TableNotFound { table: String, lake: String },

    /// The user named a topic or table that auditlake does not know.
    #[error("unknown {kind} {name:?}; expected one of: {expected}")]
    UnknownName {
        kind: &'static str,
        name: String,
        expected: String,
    },

    /// A Delta Lake operation failed (object store, log, conflict).
    #[error("delta table `{table}`: {context}: {source}")]
    Delta {
        table: String,
        context: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// Another writer committed past this writer's application transaction: this
    /// writer is a zombie (its Kafka partitions moved on) and must not commit.
    #[error(
        "table `{table}`: transaction `{app_id}` is at {theirs}, past this writer's {ours}: fenced by another writer"
    )]
    Fenced {
        table: String,
        app_id: String,
        theirs: i64,
        ours: i64,
    },

    /// Another writer committed to the table after the version this write was
    /// based on ([`crate::Lake::append_on`]); nothing was committed. The
    /// writer catches up on what was added and writes again.
    #[error("table `{table}` moved from version {base:?} to {now:?} under this writer")]
    Moved {
        table: String,
        base: Option<i64>,
        now: Option<i64>,
    },

    /// Building Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// The erasure key is missing, malformed or not the one the lake's
    /// tombstones were made with (see `erasure`).
    #[error("erasure key: {0}")]
    ErasureKey(String),

    /// Encoding a data file failed.
    #[error("writing a data file of `{table}`: {source}")]
    Parquet {
        table: String,
        #[source]
        source: parquet::errors::ParquetError,
    },

    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// The retention floor object cannot be read (edited by hand?).
    #[error("retention floor {path}: {reason}")]
    Floor { path: String, reason: String },

    /// A bug in auditlake.
    #[error("internal error (a bug in auditlake): {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn delta(
        table: &str,
        context: impl Into<String>,
        source: deltalake::DeltaTableError,
    ) -> Self {
        Self::Delta {
            table: table.to_string(),
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Whether retrying the whole operation may succeed: a commit conflict with a
    /// concurrent writer, or a transient object store failure.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Delta { source, .. } => delta_error_is_retryable(source),
            Error::ObjectStore(_) => true,
            _ => false,
        }
    }
}

/// Conflicts with concurrent writers and object store hiccups are worth a rerun;
/// schema or protocol errors are not. So is a log file that vanished while the
/// table was loading: retention deletes commits and checkpoints older than a
/// new checkpoint, and a reload finds the new one.
pub fn delta_error_is_retryable(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::DeltaTableError as E;
    match e {
        E::Transaction { .. } | E::ObjectStore { .. } | E::VersionAlreadyExists(_) => true,
        E::Io { .. } => true,
        other => {
            let s = other.to_string();
            s.contains("concurrent")
                || s.contains("onflict")
                || s.contains("object store")
                || (s.contains("_delta_log") && (s.contains("NotFound") || s.contains("not found")))
        }
    }
}
