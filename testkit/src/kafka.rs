//! A Kafka broker for tests: tansu with a sqlite file in a temp dir.
//!
//! Both listener flags are set because tansu advertises `localhost:9092` by
//! default; the sqlite engine because memory:// and s3:// lose fetches. tansu
//! has no topic auto-create and no transactions: create topics first.
//! `kill` + `restart` on the same file and port is a broker crash and recovery.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, IoContext, Result};
use crate::process::{Supervised, start_on_free_port};
use crate::try_tool;
use crate::workdir::Workdir;

/// The broker's database, relative to its working directory (the temp dir).
const DATA_FILE: &str = "tansu.db";

/// tansu reports ready in ~0.4 s; sqlite recovery after a kill takes longer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running tansu broker on 127.0.0.1. Killed (with its process group) and
/// its temp dir removed on drop.
#[derive(Debug)]
pub struct Broker {
    // Field order is drop order: the process dies before its directory goes.
    process: Supervised,
    program: PathBuf,
    port: u16,
    workdir: Workdir,
}

impl Broker {
    /// Starts tansu on a free port with an empty sqlite store.
    pub fn start() -> Result<Self> {
        let program = try_tool("tansu")?;
        let mut workdir = Workdir::new("tansu")?;
        let log = workdir.path().join("tansu.log");
        let started = start_on_free_port(START_TIMEOUT, |port| {
            let url = format!("tcp://127.0.0.1:{port}");
            let args: Vec<OsString> = vec![
                "broker".into(),
                "--listener-url".into(),
                url.clone().into(),
                "--advertised-listener-url".into(),
                url.into(),
                "--storage-engine".into(),
                format!("sqlite://{DATA_FILE}").into(),
            ];
            Supervised::new("tansu", program.clone(), args, workdir.path(), log.clone())
        });
        match started {
            Ok((port, process)) => Ok(Self {
                process,
                program,
                port,
                workdir,
            }),
            Err(e) => {
                workdir.keep();
                Err(e)
            }
        }
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a topic (`tansu topic create`). Fails if it already exists.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        let mut command = Command::new(&self.program);
        command
            .args(["topic", "create", name, "--broker"])
            .arg(format!("tcp://{}", self.bootstrap()))
            .arg("--partitions")
            .arg(partitions.to_string())
            .current_dir(self.workdir.path());
        let shown = format!("tansu topic create {name} --partitions {partitions}");
        let output = command.output().context(|| format!("run {shown}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::Command {
            command: shown,
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }

    /// The sqlite file holding every topic, offset and group.
    pub fn data_file(&self) -> PathBuf {
        self.workdir.path().join(DATA_FILE)
    }

    /// The broker's stdout/stderr.
    pub fn log_path(&self) -> &Path {
        self.process.log()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// SIGKILLs the broker, as a crash would: no clean shutdown. Idempotent.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the broker again on the same port and sqlite file (killing it
    /// first if it still runs). Topics, messages and committed offsets
    /// survive.
    pub fn restart(&mut self) -> Result<()> {
        self.process.start(self.port, START_TIMEOUT)
    }
}
