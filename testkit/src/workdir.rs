//! A service's temp directory: data, log file and working directory.
//!
//! Removed on drop, except when it holds evidence: a startup failure or a
//! panicking test keeps it and prints where it is.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::error::{IoContext, Result};

#[derive(Debug)]
pub(crate) struct Workdir {
    service: &'static str,
    dir: Option<TempDir>,
    path: PathBuf,
}

impl Workdir {
    pub(crate) fn new(service: &'static str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("auditlake-{service}-"))
            .tempdir()
            .context(|| format!("create temp dir for {service}"))?;
        let path = dir.path().to_path_buf();
        Ok(Self {
            service,
            dir: Some(dir),
            path,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory on disk after drop and says where it is.
    pub(crate) fn keep(&mut self) {
        if let Some(dir) = self.dir.take() {
            let path = dir.keep();
            eprintln!(
                "auditlake-testkit: {} files kept in {}",
                self.service,
                path.display()
            );
        }
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep();
        }
    }
}
