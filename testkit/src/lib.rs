//! Test harness: real services for integration tests, on free ports, stopped on
//! drop.
//!
//! Reads nothing from the lake; starts external binaries that `.ci/run`
//! installs into `$AUDITLAKE_TOOLS/bin`:
//!
//! ```text
//! S3Server::start()      -> s3s-fs (checks SigV4, one writer)  -> env(), lake_url()
//! S3Server::start_moto() -> moto_server (atomic conditional puts: concurrent writers)
//! Broker::start()        -> tansu + sqlite file                 -> bootstrap(), create_topic()
//! ```
//!
//! Invariants: every server listens on 127.0.0.1 only, lives in its own temp
//! directory (data, working directory and `<tool>.log`), and dies with its
//! handle — and with the test binary, even if that is killed (see
//! `process.rs`). A service that fails to start returns an error quoting the
//! tail of its log and keeps its directory; a test that panics keeps it too.
//!
//! A missing tool is an error, not a skip: set `AUDITLAKE_SKIP_SERVICES=1` to
//! skip service tests on purpose, checked with [`skip_services`].
//!
//! ```no_run
//! use auditlake_testkit::{Broker, S3Server};
//!
//! let s3 = S3Server::start().unwrap();
//! let lake = s3.lake_url("lake"); // s3://auditlake/lake
//! let broker = Broker::start().unwrap();
//! broker.create_topic("api_access", 4).unwrap();
//! let _ = (lake, s3.env(), broker.bootstrap());
//! ```

mod error;
mod http;
mod kafka;
mod place;
mod process;
mod s3;
mod workdir;

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;

pub use error::{Error, Result};
pub use http::{HttpResponse, MOTO_AUTH, http_request};
pub use kafka::Broker;
pub use place::LakePlace;
pub use s3::{BUCKET, S3Server};

/// Environment variable naming the tools root (binaries in its `bin/`).
pub const TOOLS_ENV: &str = "AUDITLAKE_TOOLS";

/// Set to `1` to skip tests that need external services.
pub const SKIP_ENV: &str = "AUDITLAKE_SKIP_SERVICES";

/// The tools root: `$AUDITLAKE_TOOLS`, else `$HOME/.cache/auditlake/tools`
/// (where `.ci/run` installs s3s-fs and tansu).
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(TOOLS_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".cache/auditlake/tools")
}

/// Finds a binary: first `$AUDITLAKE_TOOLS/bin/NAME`, then on `PATH`.
pub fn try_tool(name: &str) -> Result<PathBuf> {
    let tools_bin = tools_dir().join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(tools_bin.clone())
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|path| is_executable(path))
        .ok_or_else(|| Error::ToolMissing {
            name: name.to_owned(),
            tools_bin,
        })
}

/// Like [`try_tool`], for tests: panics with the install hint if missing.
pub fn tool(name: &str) -> PathBuf {
    try_tool(name).unwrap_or_else(|e| panic!("{e}"))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
///
/// Another process can take it before you bind it; the servers here retry on
/// a fresh port when that happens.
///
/// # Panics
/// If no socket can be bound on 127.0.0.1 at all.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot bind a port on 127.0.0.1: {e}"))
}

/// True (and says so on stderr) when `AUDITLAKE_SKIP_SERVICES=1`; tests that
/// need a server then return early:
///
/// ```
/// if auditlake_testkit::skip_services("ingest_resumes_after_broker_kill") {
///     return;
/// }
/// ```
pub fn skip_services(test: &str) -> bool {
    let skip = std::env::var(SKIP_ENV).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("skipping {test}: {SKIP_ENV}=1");
    }
    skip
}
