//! An S3 endpoint for tests: s3s-fs over a temp dir, or moto in memory.
//!
//! Which one: s3s-fs checks SigV4 and keeps objects as plain files (a test can
//! look at the disk, and data survives `stop`/`restart`), but its conditional
//! puts (`If-None-Match: *`) are not atomic, so concurrent Delta writers can
//! lose a commit. moto's are atomic: use it for tests with concurrent writers.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{IoContext, Result};
use crate::http::{MOTO_AUTH, http_request};
use crate::process::{Supervised, start_on_free_port};
use crate::try_tool;
use crate::workdir::Workdir;

/// The bucket every server is started with.
pub const BUCKET: &str = "auditlake";
const ACCESS_KEY: &str = "auditlake-test";
const SECRET_KEY: &str = "auditlake-test-secret";
const REGION: &str = "us-east-1";

/// s3s-fs is up in milliseconds; moto imports a lot of Python first.
const S3S_START_TIMEOUT: Duration = Duration::from_secs(30);
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts of moto (each on a fresh port) before giving up.
const MOTO_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    S3sFs,
    Moto,
}

/// A running S3 server on 127.0.0.1 with one bucket ([`BUCKET`]).
/// Killed (with its process group) and its temp dir removed on drop.
#[derive(Debug)]
pub struct S3Server {
    // Field order is drop order: the process dies before its directory goes.
    process: Supervised,
    kind: Kind,
    port: u16,
    workdir: Workdir,
}

impl S3Server {
    /// Starts s3s-fs over a temp dir; the bucket is the directory
    /// `<root>/auditlake`.
    pub fn start() -> Result<Self> {
        let program = try_tool("s3s-fs")?;
        let mut workdir = Workdir::new("s3s-fs")?;
        let root = workdir.path().join("data");
        let bucket_dir = root.join(BUCKET);
        std::fs::create_dir_all(&bucket_dir)
            .context(|| format!("create bucket dir {}", bucket_dir.display()))?;
        let log = workdir.path().join("s3s-fs.log");
        let started = start_on_free_port(S3S_START_TIMEOUT, |port| {
            let args: Vec<OsString> = vec![
                "--host".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string().into(),
                "--access-key".into(),
                ACCESS_KEY.into(),
                "--secret-key".into(),
                SECRET_KEY.into(),
                root.clone().into(),
            ];
            Supervised::new("s3s-fs", program.clone(), args, workdir.path(), log.clone())
        });
        match started {
            Ok((port, process)) => Ok(Self {
                process,
                kind: Kind::S3sFs,
                port,
                workdir,
            }),
            Err(e) => {
                workdir.keep();
                Err(e)
            }
        }
    }

    /// Starts moto's S3 server (in memory; any keys are accepted) and creates
    /// the bucket. Its conditional puts are atomic: use it for concurrent
    /// writers. `restart` loses every object (the bucket is created again).
    pub fn start_moto() -> Result<Self> {
        // The port is free when picked but may be taken before moto (a
        // second or so of Python imports) listens on it, by a server another
        // test starts; then the port check passes on the other server and
        // the bucket cannot be made on ours. Creating the bucket is the proof
        // that moto itself answers: on failure start again on another port.
        let mut attempt = 1;
        loop {
            match Self::start_moto_once() {
                Ok(server) => return Ok(server),
                Err(e) if attempt < MOTO_ATTEMPTS => {
                    eprintln!("auditlake-testkit: moto start {attempt} failed, retrying: {e}");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_moto_once() -> Result<Self> {
        let program = try_tool("moto_server")?;
        let mut workdir = Workdir::new("moto")?;
        let log = workdir.path().join("moto.log");
        let started = start_on_free_port(MOTO_START_TIMEOUT, |port| {
            let args: Vec<OsString> = vec![
                "-H".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string().into(),
            ];
            Supervised::new("moto", program.clone(), args, workdir.path(), log.clone())
        });
        let (port, process) = match started {
            Ok(started) => started,
            Err(e) => {
                workdir.keep();
                return Err(e);
            }
        };
        let mut server = Self {
            process,
            kind: Kind::Moto,
            port,
            workdir,
        };
        if let Err(e) = server.create_moto_bucket() {
            server.workdir.keep();
            return Err(e);
        }
        Ok(server)
    }

    fn create_moto_bucket(&self) -> Result<()> {
        let response = http_request(self.port, "PUT", &format!("/{BUCKET}"), &[MOTO_AUTH], b"")?;
        if response.status == 200 {
            Ok(())
        } else {
            Err(self.process.startup_error(format!(
                "PUT /{BUCKET} answered {}: {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            )))
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket's name ([`BUCKET`]).
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// `s3://auditlake/NAME`: a lake root inside the bucket.
    pub fn lake_url(&self, name: &str) -> String {
        format!("s3://{BUCKET}/{}", name.trim_start_matches('/'))
    }

    /// Variables for a child process (`Command::envs`): `AWS_ENDPOINT_URL`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION=us-east-1`,
    /// `AWS_ALLOW_HTTP=true`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The same settings as a map, for in-process code: deltalake's
    /// `with_storage_options` / object_store options. (Setting process env
    /// vars is `unsafe` in edition 2024 and races parallel tests.)
    pub fn storage_options(&self) -> HashMap<String, String> {
        self.env().into_iter().collect()
    }

    /// s3s-fs: the directory served as the store; objects of the bucket are
    /// files under `root()/auditlake/`. `None` for moto (in memory).
    pub fn root(&self) -> Option<PathBuf> {
        (self.kind == Kind::S3sFs).then(|| self.workdir.path().join("data"))
    }

    /// The server's stdout/stderr.
    pub fn log_path(&self) -> &Path {
        self.process.log()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Kills the server (SIGKILL); the port refuses connections until
    /// [`restart`](Self::restart). Idempotent.
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port (and, for s3s-fs, the same
    /// data). Kills it first if it still runs.
    pub fn restart(&mut self) -> Result<()> {
        let timeout = match self.kind {
            Kind::S3sFs => S3S_START_TIMEOUT,
            Kind::Moto => MOTO_START_TIMEOUT,
        };
        self.process.start(self.port, timeout)?;
        if self.kind == Kind::Moto {
            self.create_moto_bucket()?;
        }
        Ok(())
    }
}
