//! Where an end-to-end test's lake lives: a local directory, or a prefix in
//! a bucket of a fresh s3s-fs server. Tests run the same steps on both.

use std::path::{Path, PathBuf};

use crate::{S3Server, skip_services};

/// A lake location with its scratch directory (for inputs, policies).
pub struct LakePlace {
    dir: tempfile::TempDir,
    s3: Option<S3Server>,
}

impl LakePlace {
    /// A lake in a fresh local temporary directory.
    pub fn local() -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            s3: None,
        }
    }

    /// A lake on a fresh s3s-fs server; `None` when service tests are
    /// skipped on purpose ([`skip_services`], reported as `what`).
    pub fn s3(what: &str) -> Option<Self> {
        if skip_services(what) {
            return None;
        }
        Some(Self {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            s3: Some(S3Server::start().expect("start s3s-fs")),
        })
    }

    /// A lake on `server` (e.g. moto, where writers race).
    pub fn on(server: S3Server) -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            s3: Some(server),
        }
    }

    /// The scratch directory (never the lake itself).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The lake's location, as `--lake` takes it.
    pub fn lake(&self) -> String {
        match &self.s3 {
            Some(s3) => s3.lake_url("lake"),
            None => self.dir.path().join("lake").display().to_string(),
        }
    }

    /// The lake's objects as files on disk (s3s-fs keeps each object as a
    /// file), for scans of the raw bytes.
    pub fn root_on_disk(&self) -> PathBuf {
        match &self.s3 {
            Some(s3) => s3
                .root()
                .expect("s3s-fs keeps its objects on disk")
                .join(s3.bucket())
                .join("lake"),
            None => self.dir.path().join("lake"),
        }
    }

    /// The environment a process needs to reach the lake (S3 endpoint and
    /// keys; nothing for a local lake).
    pub fn env(&self) -> Vec<(String, String)> {
        self.s3.as_ref().map(S3Server::env).unwrap_or_default()
    }
}
