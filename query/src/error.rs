//! Errors of the query crate.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong running SQL over the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's SQL is wrong (syntax, unknown table or column, types).
    #[error("query failed: {0}")]
    Query(#[source] datafusion::error::DataFusionError),

    /// Reading the lake failed.
    #[error(transparent)]
    Lake(#[from] auditlake_schemas::Error),

    /// DataFusion failed while executing.
    #[error("execution failed: {0}")]
    Execution(#[from] datafusion::error::DataFusionError),

    /// Arrow failed while formatting output.
    #[error("formatting output: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Parquet failed while writing output.
    #[error("writing parquet output: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),

    /// A setting is wrong.
    #[error("configuration: {0}")]
    Config(String),

    /// The PostgreSQL endpoint could not start (listening socket, TLS files).
    #[error("serve: {context}: {source}")]
    Serve {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
