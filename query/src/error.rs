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

    /// A detection rule file is wrong (header, SQL, output columns).
    #[error("{file}:{line}: {message}")]
    Rule {
        /// The file's path, or `builtin:<file>`.
        file: String,
        /// 1-based line (0: the file as a whole).
        line: usize,
        message: String,
    },

    /// A bug in auditlake (a built-in view or rule that does not plan, a
    /// column missing from a result we built).
    #[error("internal error (a bug in auditlake): {0}")]
    Internal(String),

    /// The PostgreSQL endpoint could not start (listening socket, TLS files).
    #[error("serve: {context}: {source}")]
    Serve {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
