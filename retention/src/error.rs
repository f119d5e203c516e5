//! Errors of the retention crate, sorted by whose fault they are: the user's
//! policy or arguments, the lake and its object store, or a bug in auditlake.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a sweep, an erasure or a verification.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy file is not valid; nothing was changed.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Policy {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// The policy file cannot be read.
    #[error("cannot read policy {}: {source}", path.display())]
    PolicyIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An argument is not usable (empty user id, bad time, ...).
    #[error("{0}")]
    Usage(String),

    /// A legal hold covers rows the operation would delete; nothing was changed.
    #[error(
        "legal hold (policy line {line}, reason {reason:?}) covers {rows} row(s) of this user in `{table}`; nothing was erased (lift the hold, or narrow the erasure with --app)"
    )]
    Held {
        table: String,
        rows: u64,
        line: usize,
        reason: String,
    },

    /// The lake root holds no auditlake table: a wrong `--lake`, most likely.
    /// Nothing was changed.
    #[error(
        "no auditlake lake at {root}: none of its tables ({tables}) exists; check --lake (or AUDITLAKE_LAKE)"
    )]
    NoLake { root: String, tables: String },

    /// The lake (schemas crate): open, load, append.
    #[error(transparent)]
    Lake(#[from] auditlake_schemas::Error),

    /// A Delta Lake operation failed (log, commit, conflict).
    #[error("delta table `{table}`: {context}: {source}")]
    Delta {
        table: String,
        context: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },

    /// A Parquet object could not be read or written.
    #[error("parquet object {path}: {message}")]
    Parquet { path: String, message: String },

    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] deltalake::ObjectStoreError),

    /// Arrow compute failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// The table holds something retention cannot rewrite safely.
    #[error("table `{table}`: {message}")]
    Unsupported { table: String, message: String },

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

    pub(crate) fn parquet(path: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        Self::Parquet {
            path: path.to_string(),
            message: e.to_string(),
        }
    }

    /// Whether rerunning the whole operation may succeed: a commit conflict
    /// with a concurrent writer (ingest, detect, another sweep) or a transient
    /// object store failure. Retention operations are idempotent, so a rerun
    /// is always safe.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Lake(e) => e.is_retryable(),
            Error::Delta { source, .. } => auditlake_schemas::delta_error_is_retryable(source),
            Error::ObjectStore(_) => true,
            _ => false,
        }
    }
}
