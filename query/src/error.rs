//! Errors of the query crate.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong running SQL over the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's SQL is wrong (syntax, unknown table or column, types).
    /// Its message holds DataFusion's whole description (see [`describe`]).
    #[error("query failed: {}", describe(.0))]
    Query(datafusion::error::DataFusionError),

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

/// A DataFusion error as a user reads it: a syntax error as the parser words
/// it (DataFusion prints the parser's error in its debug form, quotes
/// escaped), anything else as DataFusion displays it.
fn describe(e: &datafusion::error::DataFusionError) -> String {
    match e.find_root() {
        datafusion::error::DataFusionError::SQL(parser, _) => parser.to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_syntax_error_reads_as_the_parser_words_it() {
        let ctx = datafusion::prelude::SessionContext::new();
        let err = Error::Query(ctx.sql("SELEC 1").await.unwrap_err());
        assert_eq!(
            err.to_string(),
            "query failed: sql parser error: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1"
        );
        let err = Error::Query(ctx.sql("SELECT * FROM nope").await.unwrap_err());
        assert!(
            err.to_string()
                .starts_with("query failed: Error during planning: table")
                && err
                    .to_string()
                    .contains("'datafusion.public.nope' not found"),
            "{err}"
        );
    }
}
