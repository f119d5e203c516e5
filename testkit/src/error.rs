//! Errors of the harness, by whose fault they are.

use std::path::PathBuf;

/// Result of a harness operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while starting or driving a test service.
///
/// `Debug` prints the message, so `.unwrap()` in a test shows the install hint
/// or the server's log tail as readable text.
#[derive(thiserror::Error)]
pub enum Error {
    /// The machine lacks a binary: run `.ci/run` once to install it.
    #[error(
        "tool `{name}` not found in {tools_bin} or PATH; run `.ci/run` once to install the \
         test tools (or set AUDITLAKE_TOOLS to where they are installed)"
    )]
    ToolMissing { name: String, tools_bin: PathBuf },

    /// A service did not come up; `log` holds its stdout/stderr (kept on disk).
    #[error("{service} did not start: {reason}\n--- log {log} (last lines) ---\n{tail}")]
    Startup {
        service: &'static str,
        reason: String,
        log: PathBuf,
        tail: String,
    },

    /// A helper command (e.g. `tansu topic create`) exited non-zero.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },

    /// Local I/O: temp dirs, log files, sockets.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
