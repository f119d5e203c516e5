//! One supervised child process: spawned in its own process group with a
//! watchdog, output to a log file, killed on drop.
//!
//! The watchdog is a few lines of `sh` that read the child's stdin, a pipe that
//! only this process holds open. When the pipe closes — on `kill`, on drop, or
//! because the test binary itself died (Ctrl-C, SIGKILL, a timeout) — `read`
//! returns and the watchdog SIGKILLs the whole process group. So no server
//! outlives its test, without any `unsafe` (`pre_exec`, `prctl`).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};

/// `sh -c WATCHDOG name program args...`: keep the pipe on fd 3 for the
/// background watchdog (a background job's stdin is /dev/null in a
/// non-interactive shell), then exec the program with stdin and fd 3 closed so
/// the watchdog is the pipe's only reader. `kill 0` signals our process group.
const WATCHDOG: &str = r#"exec 3<&0
(read -r line <&3; kill -KILL 0) &
exec "$@" </dev/null 3<&-"#;

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);

/// Lines of log quoted in a startup error.
const LOG_TAIL_LINES: usize = 40;

/// A program with fixed arguments that can be started, killed and started again.
#[derive(Debug)]
pub(crate) struct Supervised {
    service: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    log: PathBuf,
    running: Option<Running>,
}

/// Why a start failed, and whether retrying on another port may help.
#[derive(Debug)]
pub(crate) struct StartFailure {
    pub(crate) exited: bool,
    pub(crate) error: Error,
}

#[derive(Debug)]
struct Running {
    child: Child,
    /// Dropping this closes the watchdog's pipe, which kills the group.
    _stdin: ChildStdin,
}

impl Supervised {
    pub(crate) fn new(
        service: &'static str,
        program: PathBuf,
        args: Vec<OsString>,
        cwd: &Path,
        log: PathBuf,
    ) -> Self {
        Self {
            service,
            program,
            args,
            cwd: cwd.to_path_buf(),
            log,
            running: None,
        }
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.running {
            Some(running) => matches!(running.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the program (appending to its log) and waits until `port` on
    /// 127.0.0.1 accepts connections.
    pub(crate) fn start(&mut self, port: u16, timeout: Duration) -> Result<()> {
        self.try_start(port, timeout)
            .map_err(|failure| failure.error)
    }

    /// Like [`Self::start`], but says whether the program exited by itself
    /// (most likely: another process took the port) so a caller can retry.
    pub(crate) fn try_start(&mut self, port: u16, timeout: Duration) -> Result<(), StartFailure> {
        self.spawn().map_err(|error| StartFailure {
            exited: false,
            error,
        })?;
        self.wait_for_port(port, timeout)
    }

    fn spawn(&mut self) -> Result<()> {
        self.kill();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .context(|| format!("open log {}", self.log.display()))?;
        let log_err = log
            .try_clone()
            .context(|| format!("clone log {}", self.log.display()))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(self.service)
            .arg(&self.program)
            .args(&self.args)
            .current_dir(&self.cwd)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err)
            // Own group, so the watchdog's `kill 0` hits the server and its
            // helpers but never the test binary.
            .process_group(0)
            .spawn()
            .map_err(|e| self.startup_error(format!("spawn {}: {e}", self.program.display())))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        self.running = Some(Running {
            child,
            _stdin: stdin,
        });
        Ok(())
    }

    fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<(), StartFailure> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + timeout;
        loop {
            let exited = match &mut self.running {
                Some(running) => running.child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                self.kill();
                return Err(StartFailure {
                    exited: true,
                    error: self.startup_error(format!("exited early ({status})")),
                });
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartFailure {
                    exited: false,
                    error: self.startup_error(format!(
                        "127.0.0.1:{port} did not accept connections within {timeout:?}"
                    )),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILLs the program and its process group and reaps it. Idempotent.
    pub(crate) fn kill(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
            // `running._stdin` drops here: the watchdog kills what is left of
            // the group (children the server may have spawned).
        }
    }

    pub(crate) fn startup_error(&self, reason: String) -> Error {
        Error::Startup {
            service: self.service,
            reason,
            log: self.log.clone(),
            tail: log_tail(&self.log),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return "(no log)".to_owned();
    };
    // The tail is what matters; read at most the last 16 KiB.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Fresh ports tried when a server exits at once: `free_port` closes its probe
/// socket before the server binds, so a test running in parallel can win the
/// port in between.
const PORT_ATTEMPTS: usize = 3;

/// Builds a server for a free port with `make` and starts it, retrying on
/// another port if it exits at once.
pub(crate) fn start_on_free_port(
    timeout: Duration,
    mut make: impl FnMut(u16) -> Supervised,
) -> Result<(u16, Supervised)> {
    let mut attempt = 1;
    loop {
        let port = crate::free_port();
        let mut process = make(port);
        match process.try_start(port, timeout) {
            Ok(()) => return Ok((port, process)),
            Err(failure) if failure.exited && attempt < PORT_ATTEMPTS => attempt += 1,
            Err(failure) => return Err(failure.error),
        }
    }
}
