//! One module per verb. Each has clap `Args` and `async fn run(Args) -> Result<ExitCode>`.

pub mod demo;
pub mod detect;
pub mod generate;
pub mod ingest;
pub mod retention;
pub mod serve;
pub mod sql;

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args as ClapArgs;
use tracing_subscriber::EnvFilter;

/// Set when a write to stdout failed because its reader went away
/// (`auditlake sql ... | head`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Standard output that notes a closed pipe, so the process can end quietly
/// (like `cat` does, without its SIGPIPE death) instead of reporting the
/// write error that follows as a failure.
pub struct Stdout(std::io::Stdout);

/// The command's standard output; see [`Stdout`].
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout())
}

/// Whether a write to stdout found the pipe closed.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

fn note_closed<T>(r: std::io::Result<T>) -> std::io::Result<T> {
    if let Err(e) = &r
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
    r
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        note_closed(self.0.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        note_closed(self.0.flush())
    }
}

/// `--lake`, shared by every verb that reads or writes the lake.
#[derive(Debug, Clone, ClapArgs)]
pub struct LakeArgs {
    /// Lake root: a local path, file://, s3://bucket/prefix or memory://.
    #[arg(long, env = "AUDITLAKE_LAKE")]
    pub lake: String,
}

impl LakeArgs {
    /// Opens the lake root, creating a local one that is missing (writers).
    pub fn open(&self) -> anyhow::Result<auditlake_schemas::Lake> {
        Ok(auditlake_schemas::Lake::open(&self.lake)?)
    }

    /// Opens a lake root that must exist (verbs that read or change what
    /// was ingested): a missing local directory is an error, not created.
    pub fn open_existing(&self) -> anyhow::Result<auditlake_schemas::Lake> {
        Ok(auditlake_schemas::Lake::open_existing(&self.lake)?)
    }
}

/// Logs go to stderr (results go to stdout), as text or JSON.
pub fn init_logging(filter: &str, format: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.compact().init();
    }
}

/// Parses a byte size such as `128MiB`, `64M`, `1G`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 128MiB, 64M, 4096)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("size {s:?} must be positive and fit in 64 bits"))
}
