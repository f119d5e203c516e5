//! Making a logical delete physical, for one table:
//!
//! ```text
//! 1. list every object under <table>/ (data files, referenced or not)
//! 2. load the newest snapshot (after the listing: a file committed meanwhile
//!    is referenced, not an orphan)
//! 3. delete unreferenced data files that a commit retired (this operation's
//!    or any earlier remove in the log), and orphans older than the grace
//!    period (younger ones may be a concurrent writer's uncommitted file)
//! 4. write a checkpoint at the newest version, then ([`cleanup_logs`], a
//!    moment later, so concurrent readers finish loading) delete every
//!    commit, checkpoint and checksum file before it: old `add` actions
//!    carry min/max statistics naming users, and a delete commit may carry
//!    its predicate
//! ```
//!
//! Each deleted object is read and hashed first: the evidence lists path,
//! size and SHA-256. Time travel before the checkpoint is gone afterwards;
//! that is the point.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use deltalake::ObjectStore;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::evidence::RemovedObject;
use crate::{Error, Result};
use auditlake_schemas::Lake;

/// Default age below which an unreferenced, never-committed file is left
/// alone: it may be a concurrent writer's file awaiting its commit.
pub const DEFAULT_ORPHAN_GRACE: TimeDelta = TimeDelta::hours(1);

/// Options of a purge.
#[derive(Debug, Clone)]
pub struct PurgeOptions {
    /// Wall-clock time: orphans last modified before `wall_now - grace` go.
    /// (Object ages are physical; the operation's logical `now` may be
    /// anything.)
    pub wall_now: DateTime<Utc>,
    /// See [`DEFAULT_ORPHAN_GRACE`].
    pub orphan_grace: TimeDelta,
    /// Checkpoint and delete older log files.
    pub compact_log: bool,
    /// Only report what would go.
    pub dry_run: bool,
}

/// What a purge deleted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeMetrics {
    /// Objects deleted (paths under the lake root).
    pub deleted: Vec<RemovedObject>,
    /// Unreferenced files left because they are younger than the grace.
    pub young_orphans: Vec<String>,
    /// Version of the checkpoint written.
    pub checkpoint_version: Option<u64>,
}

/// Purges `table`; `retired` maps root-relative paths this operation retired
/// to their SHA-256 when already known.
pub async fn purge(
    lake: &Lake,
    table: &str,
    retired: &HashMap<String, Option<String>>,
    opts: &PurgeOptions,
) -> Result<PurgeMetrics> {
    let store = lake.object_store()?;
    let prefix = Path::from(format!("{table}/"));
    let log_prefix = format!("{table}/_delta_log/");
    let listing: Vec<deltalake::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    let Some(loaded) = lake.table(table).await? else {
        return Ok(PurgeMetrics::default());
    };
    let snapshot = loaded
        .snapshot()
        .map_err(|e| Error::delta(table, "snapshot", e))?;
    let referenced: HashSet<String> = snapshot
        .log_data()
        .iter()
        .map(|f| format!("{table}/{}", f.path()))
        .collect();
    let mut tombstoned: HashSet<String> = HashSet::new();
    let mut stream = snapshot.all_tombstones(loaded.log_store().as_ref());
    while let Some(t) = stream.next().await {
        let t = t.map_err(|e| Error::delta(table, "read tombstones", e))?;
        tombstoned.insert(format!("{table}/{}", t.path()));
    }
    drop(stream);

    let mut m = PurgeMetrics::default();
    let cutoff = opts.wall_now - opts.orphan_grace;
    for meta in &listing {
        let path = meta.location.to_string();
        if path.starts_with(&log_prefix) || referenced.contains(&path) {
            continue;
        }
        let why = if retired.contains_key(&path) {
            "retired"
        } else if tombstoned.contains(&path) {
            "tombstoned"
        } else if meta.last_modified <= cutoff {
            "orphan"
        } else {
            m.young_orphans.push(path);
            continue;
        };
        let known = retired.get(&path).cloned().flatten();
        m.deleted
            .push(delete(store.as_ref(), meta, known, why, opts.dry_run).await?);
        if !opts.dry_run {
            crate::pause_point("purging");
        }
    }

    if opts.compact_log && !opts.dry_run {
        // The snapshot loaded above: a checkpoint of it covers every file
        // this purge saw retired; later commits stay in the log.
        let version = loaded.version().unwrap_or(0);
        deltalake::checkpoints::create_checkpoint(&loaded, None)
            .await
            .map_err(|e| Error::delta(table, "checkpoint", e))?;
        m.checkpoint_version = Some(version);
        crate::pause_point("checkpointed");
    }
    Ok(m)
}

/// How long after writing checkpoints the older log files are deleted: a
/// reader that read `_last_checkpoint` just before usually finishes loading
/// first (one that is slower gets a retryable "not found" and reloads, see
/// `Lake::table`). Loading a table's log takes 5-40 ms here (`verify` loads
/// all seven of a 5M-event lake in 17-40 ms), so 100 ms covers a reader a
/// few times slower; every millisecond of it is on an erasure's path.
pub const LOG_CLEANUP_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Deletes the commit, checkpoint and checksum files of `table` older than
/// the checkpoint at `version` (written by [`purge`]).
pub async fn cleanup_log(lake: &Lake, table: &str, version: u64) -> Result<Vec<RemovedObject>> {
    let store = lake.object_store()?;
    let log: Vec<deltalake::ObjectMeta> = store
        .list(Some(&Path::from(format!("{table}/_delta_log/"))))
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for meta in &log {
        let name = meta.location.filename().unwrap_or("");
        if let Some(v) = log_file_version(name)
            && v < version
        {
            out.push(delete(store.as_ref(), meta, None, "log", false).await?);
        }
    }
    Ok(out)
}

/// Purges of several tables finished by one log cleanup after
/// [`LOG_CLEANUP_DELAY`]: the old log files of every purged table go.
pub async fn cleanup_logs(
    lake: &Lake,
    purges: &mut std::collections::BTreeMap<String, PurgeMetrics>,
) -> Result<()> {
    if purges.values().all(|p| p.checkpoint_version.is_none()) {
        return Ok(());
    }
    tokio::time::sleep(LOG_CLEANUP_DELAY).await;
    for (table, p) in purges.iter_mut() {
        if let Some(v) = p.checkpoint_version {
            let removed = crate::retry(table, || cleanup_log(lake, table, v)).await?;
            p.deleted.extend(removed);
        }
    }
    Ok(())
}

/// The version of a commit (`N.json`), checkpoint (`N.checkpoint[.k.n].parquet`)
/// or checksum (`N.crc`) file of the log.
pub fn log_file_version(name: &str) -> Option<u64> {
    let (digits, rest) = name.split_at(name.find('.')?);
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ok = rest == ".json"
        || rest == ".crc"
        || (rest.starts_with(".checkpoint") && rest.ends_with(".parquet"));
    if ok { digits.parse().ok() } else { None }
}

async fn delete(
    store: &dyn ObjectStore,
    meta: &deltalake::ObjectMeta,
    known_sha: Option<String>,
    why: &str,
    dry_run: bool,
) -> Result<RemovedObject> {
    let sha = match known_sha {
        Some(s) => s,
        None => match store.get(&meta.location).await {
            Ok(got) => hex::encode(Sha256::digest(got.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => String::new(),
            Err(e) => return Err(e.into()),
        },
    };
    if !dry_run {
        match store.delete(&meta.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(RemovedObject {
        path: meta.location.to_string(),
        bytes: meta.size,
        sha256: sha,
        why: why.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_versions() {
        assert_eq!(log_file_version("00000000000000000007.json"), Some(7));
        assert_eq!(
            log_file_version("00000000000000000010.checkpoint.parquet"),
            Some(10)
        );
        assert_eq!(
            log_file_version("00000000000000000010.checkpoint.0000000001.0000000002.parquet"),
            Some(10)
        );
        assert_eq!(log_file_version("00000000000000000003.crc"), Some(3));
        assert_eq!(log_file_version("_last_checkpoint"), None);
        assert_eq!(log_file_version("00000000000000000003.json.tmp"), None);
    }
}
