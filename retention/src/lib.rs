//! # auditlake-retention
//!
//! Proves that data which must be gone is gone. Reads and rewrites every lake
//! table ingest and detect write; writes the tombstone table `erasures` and
//! the append-only `retention_evidence`.
//!
//! ```text
//! erase --user U   tombstone(keyed hash) -> rewrite files that can hold U
//!                  -> purge (retired files, checkpoint, old log) -> verify --user U
//! sweep --policy   whole expired partitions (except holds) + pending erasures
//!                  -> purge -> verify (hashes, retention, evidence chain)
//! verify           every object under the root, referenced or not, raw and
//!                  decompressed  --> report naming each failing object
//! each of them     -> one evidence record, chained by SHA-256
//! ```
//!
//! Invariants: no plaintext user id is ever written by retention (tombstones,
//! evidence and commit info name users by keyed hash; rewrite commits carry
//! no predicate); nothing under a legal hold is deleted; every operation is
//! idempotent, so a crashed one is finished by a rerun; time is a parameter
//! (`now`), never read from the clock here.
//!
//! Where an erased id would otherwise survive, and what closes it: removed
//! data files (deleted by [`purge`]), `add` statistics in old commits and
//! checkpoints (a new checkpoint, older log files deleted), the delete
//! commit's predicate (never written), quarantined raw messages (rewritten
//! when they mention the user), a Kafka replay (ingest drops rows whose user
//! is in [`auditlake_schemas::erasure`]).

mod error;

pub mod cluster;
pub mod erase;
pub mod evidence;
pub mod files;
pub mod filters;
pub mod object;
pub mod policy;
pub mod purge;
pub mod rewrite;
pub mod scan;
pub mod splice;
pub mod sweep;
pub mod verify;

use std::future::Future;
use std::time::Duration;

pub use erase::{Erase, EraseMetrics, EraseOutcome};
pub use error::{Error, Result};
pub use evidence::{Check, EVIDENCE, EvidenceRecord};
pub use policy::{Hold, Policy};
pub use sweep::{Sweep, SweepReport};
pub use verify::{Verify, VerifyReport};

/// Progress of a long step (the binary draws bars; the library only reports).
pub trait Progress: Send + Sync {
    /// A step starts with `total` units (bytes, tables).
    fn start(&self, _step: &str, _total: u64) {}
    /// `n` more units done.
    fn advance(&self, _n: u64) {}
    /// The step is over.
    fn finish(&self) {}
}

/// No progress reporting.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Environment variable naming a step at which retention stops and waits
/// forever, for crash tests (`kill -9` at a known point). Test use only.
pub const PAUSE_ENV: &str = "AUDITLAKE_RETENTION_PAUSE_AT";

/// Crash-test hook: if [`PAUSE_ENV`] names `step`, say so on stderr and
/// block forever (the test then kills the process). Steps: `tombstoned`,
/// `written` (new files written, not committed), `committed` (before the
/// purge), `purging` (after the first object deleted), `checkpointed`
/// (before the old log files go).
pub(crate) fn pause_point(step: &str) {
    if std::env::var(PAUSE_ENV).is_ok_and(|v| v == step) {
        eprintln!("auditlake-retention: paused at {step}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Fails with [`Error::NoLake`] unless the lake root holds at least one of
/// auditlake's tables: run against a mistyped `--lake`, a sweep, erasure or
/// verification would otherwise pass over nothing, create a tombstone and an
/// evidence chain there, and report success.
pub(crate) async fn require_lake(lake: &auditlake_schemas::Lake) -> Result<()> {
    let tables = auditlake_schemas::tables::TABLES;
    for t in tables {
        if lake.table_exists(t).await? {
            return Ok(());
        }
    }
    Err(Error::NoLake {
        root: lake.root().to_string(),
        tables: tables.join(", "),
    })
}

/// Attempts of one table's step before a conflict is reported.
pub const STEP_ATTEMPTS: u32 = 8;

/// Runs `step` again (from a fresh snapshot: steps load the table themselves)
/// while it fails with a retryable error: a commit conflict with ingest or
/// detect, or an object store hiccup.
pub(crate) async fn retry<T, F, Fut>(what: &str, mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match step().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < STEP_ATTEMPTS => {
                let backoff = Duration::from_millis(100 * 2u64.pow(attempt.min(5)));
                tracing::warn!(table = what, attempt, error = %e, backoff_ms = backoff.as_millis() as u64, "retention step failed, rerunning");
                tokio::time::sleep(backoff).await;
            }
            Err(e) => return Err(e),
        }
    }
}
