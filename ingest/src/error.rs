//! Errors of the ingest crate.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop an ingest run. A malformed message is never an error: it is
/// quarantined.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file cannot be read.
    #[error("reading {path}: {source}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The lake failed (object store, Delta commit, fenced writer).
    #[error(transparent)]
    Lake(#[from] auditlake_schemas::Error),

    /// Reading back what the lake already holds failed.
    #[error("reading existing {table} rows for dedupe: {source}")]
    Dedupe {
        table: String,
        #[source]
        source: deltalake::datafusion::error::DataFusionError,
    },

    /// The Kafka client failed in a way retries did not fix.
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },

    /// Arrow failed while filtering or sorting a batch (a bug or out of memory).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// A setting is invalid.
    #[error("configuration: {0}")]
    Config(String),

    /// A bug in auditlake.
    #[error("internal error (a bug in auditlake): {0}")]
    Internal(String),
}
