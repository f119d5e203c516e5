//! `retention sweep`: delete what is past its time, finish pending erasures,
//! make it physical, verify, record evidence.
//!
//! ```text
//! per table (policy `keep`, and every user table when tombstones exist):
//!   partition day < cutoff, no hold can touch it -> retire the whole file (no read)
//!   partition day < cutoff, a hold may cover it  -> rewrite, keeping held rows
//!   tombstones exist                             -> rewrite files holding rows
//!                                                   whose user_id hashes to an
//!                                                   erased user (keyed hash)
//!   -> one commit per table (retried on conflicts with ingest or detect)
//!   -> purge: retired/tombstoned/old orphan files, checkpoint, old log files
//! verify (tombstones by hash, retention, evidence chain) -> evidence record
//! ```
//!
//! `--dry-run` reads what it must to count rows and reports tables,
//! partitions, files, rows and bytes, writing nothing (no commit, no
//! deletion, no evidence). Safe beside a running ingest: ingest's blind
//! appends do not conflict with the sweep's commit, a conflicting commit
//! (detect replacing `findings`) reruns the table's step from a fresh
//! snapshot, and files younger than the orphan grace are never deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::cluster::{self, ClusterMetrics};
use crate::evidence::{self, EvidenceRecord};
use crate::files;
use crate::filters::{SweepFilter, USER_TABLES, hold_may_cover, with_pseudonym_holds};
use crate::policy::{Policy, SWEEPABLE_TABLES};
use crate::purge::{self, DEFAULT_ORPHAN_GRACE, PurgeMetrics, PurgeOptions};
use crate::rewrite::{self, FileAction, RewriteMetrics};
use crate::scan::HashCache;
use crate::verify::{Verify, VerifyReport, day_name};
use crate::{NoProgress, Progress, Result, retry};
use auditlake_schemas::Lake;
use auditlake_schemas::erasure::{self, ErasedUsers};
use auditlake_schemas::floor::{FloorHold, RetentionFloor};
use auditlake_schemas::lake::WriteOptions;

/// A sweep; see the module doc.
pub struct Sweep {
    lake: Lake,
    policy: Policy,
    now: DateTime<Utc>,
    dry_run: bool,
    opts: WriteOptions,
    orphan_grace: TimeDelta,
    wall_now: Option<DateTime<Utc>>,
    progress: Arc<dyn Progress>,
    before_commit: Option<BeforeCommit>,
}

/// Run with a table's name after its first pass planned, before it commits
/// (see [`Sweep::with_before_commit`]).
pub type BeforeCommit = Arc<dyn Fn(&str) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// What a sweep did (or would do) to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableSweep {
    /// First day kept (`YYYY-MM-DD`), if the policy gives the table a keep
    /// time: the policy's cutoff, or the retention floor an earlier sweep with
    /// a shorter keep left, whichever is later.
    pub keeps_from: Option<String>,
    /// Retired and rewritten files, rows and bytes.
    pub rewrite: RewriteMetrics,
    /// Partitions clustered by user (policy `[clustering]`).
    pub cluster: Option<ClusterMetrics>,
    /// Objects deleted from the store.
    pub purge: PurgeMetrics,
}

/// The result of a sweep.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Per table.
    pub tables: BTreeMap<String, TableSweep>,
    /// Tombstones applied.
    pub erasures: usize,
    /// The verification after the sweep (not in a dry run).
    pub verify: Option<VerifyReport>,
    /// The evidence record's sequence number.
    pub evidence_seq: Option<i64>,
    /// The evidence record's SHA-256 (see [`VerifyReport::evidence_sha256`]).
    pub evidence_sha256: Option<String>,
    /// Seconds taken.
    pub seconds: f64,
}

impl SweepReport {
    /// Whether the sweep's verification passed (a dry run passes).
    pub fn passed(&self) -> bool {
        self.verify.as_ref().is_none_or(VerifyReport::passed)
    }

    /// Rows removed (or that would be), over all tables.
    pub fn rows_removed(&self) -> u64 {
        self.tables.values().map(|t| t.rewrite.rows_removed).sum()
    }
}

impl Sweep {
    /// A sweep of `lake` under `policy` at `now`.
    pub fn new(lake: Lake, policy: Policy, now: DateTime<Utc>) -> Self {
        Self {
            lake,
            policy,
            now,
            dry_run: false,
            opts: WriteOptions::default(),
            orphan_grace: DEFAULT_ORPHAN_GRACE,
            wall_now: None,
            progress: Arc::new(NoProgress),
            before_commit: None,
        }
    }

    /// Runs `hook` between each table's first pass planning and its commit:
    /// for tests to commit beside the sweep at exactly that moment (a race
    /// the real writers only hit by chance).
    #[doc(hidden)]
    pub fn with_before_commit(mut self, hook: BeforeCommit) -> Self {
        self.before_commit = Some(hook);
        self
    }

    /// Report only; change nothing.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// How rewritten files are written.
    pub fn with_write_options(mut self, opts: WriteOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Age below which unreferenced, never-committed files are left alone.
    pub fn with_orphan_grace(mut self, grace: TimeDelta) -> Self {
        self.orphan_grace = grace;
        self
    }

    /// The wall-clock time that object ages are measured against (default:
    /// the operation's `now`; the CLI passes the real time).
    pub fn with_wall_clock(mut self, wall_now: DateTime<Utc>) -> Self {
        self.wall_now = Some(wall_now);
        self
    }

    /// Progress reporting.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Runs the sweep.
    pub async fn execute(self) -> Result<SweepReport> {
        let started = Instant::now();
        let lake = &self.lake;
        crate::require_lake(lake).await?;
        let erased: Arc<ErasedUsers> = Arc::new(erasure::load_erased(lake).await?);
        let mut report = SweepReport {
            dry_run: self.dry_run,
            erasures: erased.len(),
            ..SweepReport::default()
        };
        let meta: HashMap<String, serde_json::Value> = HashMap::from([(
            "auditlake".to_string(),
            serde_json::json!({"operation": "retention sweep", "policy_sha256": self.policy.sha256}),
        )]);
        let purge_opts = PurgeOptions {
            wall_now: self.wall_now.unwrap_or(self.now),
            orphan_grace: self.orphan_grace,
            compact_log: true,
            dry_run: self.dry_run,
        };

        let hashes = erased.key().cloned().map(|k| Arc::new(HashCache::new(k)));
        let clustering = self.policy.clustering.clone();
        let clusters = |t: &str| {
            clustering
                .as_ref()
                .is_some_and(|c| c.tables.iter().any(|x| x == t))
        };
        // Every table, those without a keep time too: their retired files
        // (detect replacing `findings` and `obligations`, a compaction)
        // are purged like the others'; only their rows are kept forever.
        let tables: Vec<&str> = SWEEPABLE_TABLES.to_vec();
        // Every table's log must load before anything is deleted: a table
        // that cannot be read (a damaged log, a store error) stops the sweep
        // with nothing changed, rather than after other tables were swept.
        for t in &tables {
            lake.table(t).await?;
        }
        // The retention floor rises before anything is deleted, so an ingest
        // running beside the sweep stops writing days it is deleting.
        let floor = if self.dry_run {
            RetentionFloor::load(lake).await?
        } else {
            let first_kept: BTreeMap<String, i32> = tables
                .iter()
                .filter_map(|t| Some((t.to_string(), self.policy.cutoff_date(t, self.now)?)))
                .collect();
            let key = if self.policy.holds.iter().any(|h| h.user.is_some()) {
                Some(erasure::ErasureKey::load_or_create(lake).await?)
            } else {
                None
            };
            let holds = self
                .policy
                .holds
                .iter()
                .map(|h| FloorHold {
                    app: h.app.clone(),
                    // By keyed hash: an erasure removes the id, not the hold.
                    user_hash: h
                        .user
                        .as_ref()
                        .zip(key.as_ref())
                        .map(|(u, k)| k.hash(u).to_string()),
                    user: None,
                    from: h.from.and_then(DateTime::from_timestamp_micros),
                    until: h.until.and_then(DateTime::from_timestamp_micros),
                })
                .collect();
            RetentionFloor::raise(lake, &first_kept, holds).await?
        };
        self.progress.start("sweep", tables.len() as u64);
        // A hold on a user keeps their rows under the pseudonym too.
        let holds = with_pseudonym_holds(&self.policy.holds, erased.key());
        let swept: Result<()> = async {
            for table in tables {
                let cutoff = self.policy.cutoff_date(table, self.now);
                let filter = Arc::new(SweepFilter {
                    table: table.to_string(),
                    cutoff,
                    holds: holds.clone(),
                    erased: (!erased.is_empty() && USER_TABLES.contains(&table))
                        .then(|| erased.clone()),
                    hashes: hashes.clone(),
                });
                // One pass plans on a snapshot and commits; files it did not
                // see are left alone. Ingest appends do not conflict with the
                // commit, so a flush that read the floor before it rose and
                // committed between this pass's planning and its commit may
                // have written expired days: a further pass looks at just
                // the files that appeared meanwhile (a flush committing after
                // this sweep's commit finds the table moved and reads the
                // floor again).
                let (opts, before_commit, dry_run) =
                    (&self.opts, &self.before_commit, self.dry_run);
                let pass = |seen: Option<HashSet<String>>| {
                    let (filter, holds, meta) = (filter.clone(), &holds, meta.clone());
                    async move {
                        let Some(t) = lake.table(table).await? else {
                            return Ok((RewriteMetrics::default(), HashSet::new()));
                        };
                        let mut plan = Vec::new();
                        let mut snapshot = HashSet::new();
                        for f in files::data_files(&t, table)? {
                            if seen.as_ref().is_some_and(|s| s.contains(&f.path)) {
                                continue;
                            }
                            snapshot.insert(f.path.clone());
                            let expired = filter.file_expired(&f);
                            let held = holds.iter().any(|h| hold_may_cover(h, table, &f));
                            if expired && !held {
                                plan.push((f, FileAction::Drop));
                            } else if expired || seen.is_none() && filter.erased.is_some() {
                                plan.push((f, FileAction::Filter));
                            }
                        }
                        let hook = before_commit.clone().filter(|_| seen.is_none());
                        let m = rewrite::apply_gated(
                            table,
                            &t,
                            &plan,
                            filter,
                            opts,
                            meta,
                            dry_run,
                            async move {
                                if let Some(hook) = hook {
                                    hook(table).await;
                                }
                                Ok(())
                            },
                        )
                        .await?;
                        Ok((m, snapshot))
                    }
                };
                let (mut rewrite, mut seen) = retry(table, || pass(None)).await?;
                let mut again = cutoff.is_some() && !self.dry_run;
                while again {
                    seen.extend(rewrite.written.iter().cloned());
                    let (more, snapshot) = retry(table, || pass(Some(seen.clone()))).await?;
                    again = more.version.is_some();
                    if let Some(version) = more.version {
                        tracing::info!(
                            table,
                            version,
                            rows_removed = more.rows_removed,
                            "removed expired rows an ingest committed during the sweep"
                        );
                    }
                    seen.extend(snapshot);
                    rewrite.absorb(more);
                }
                // Cluster old partitions (after the deletions: nothing erased or
                // expired is copied), before the purge (which removes the
                // unclustered originals).
                let cluster = match &clustering {
                    Some(c) if clusters(table) => Some(
                        cluster::cluster_table(lake, table, c, &self.opts, self.now, self.dry_run)
                            .await?,
                    ),
                    _ => None,
                };
                let retired: HashMap<String, Option<String>> = rewrite
                    .retired
                    .iter()
                    .map(|f| (format!("{table}/{}", f.path), f.sha256.clone()))
                    .collect();
                let touched = rewrite.rows_removed > 0
                    || !erased.is_empty()
                    || cluster.as_ref().is_some_and(|c| !c.versions.is_empty());
                let opts = PurgeOptions {
                    compact_log: touched,
                    ..purge_opts.clone()
                };
                let purge = if self.dry_run {
                    // Files this sweep would retire are still referenced: list them too.
                    let mut p = retry(table, || purge::purge(lake, table, &retired, &opts)).await?;
                    for f in &rewrite.retired {
                        p.deleted.push(evidence::RemovedObject {
                            path: format!("{table}/{}", f.path),
                            bytes: f.bytes,
                            sha256: f.sha256.clone().unwrap_or_default(),
                            why: "would retire".into(),
                        });
                    }
                    p
                } else {
                    retry(table, || purge::purge(lake, table, &retired, &opts)).await?
                };
                report.tables.insert(
                    table.to_string(),
                    TableSweep {
                        // A floor set by an earlier sweep with a shorter
                        // keep stays: nothing below it is in the lake.
                        keeps_from: cutoff
                            .map(|c| c.max(floor.first_kept(table).unwrap_or(c)))
                            .map(day_name),
                        rewrite,
                        cluster,
                        purge,
                    },
                );
                self.progress.advance(1);
            }
            Ok(())
        }
        .await;
        self.progress.finish();
        if let Err(e) = swept {
            if !self.dry_run && !report.tables.is_empty() {
                // Tables swept before the failure lost data: record it.
                let mut rec = EvidenceRecord::new("sweep", self.now);
                rec.recorded_at = self.wall_now.map(evidence::timestamp);
                rec.outcome = "incomplete".into();
                rec.policy_sha256 = Some(self.policy.sha256.clone());
                record_removals(&report, &mut rec);
                rec.metrics = serde_json::json!({
                    "error": e.to_string(),
                    "tables_swept": report.tables.keys().collect::<Vec<_>>(),
                    "seconds": started.elapsed().as_secs_f64(),
                });
                match evidence::append(lake, rec).await {
                    Ok((seq, _)) => tracing::warn!(
                        seq,
                        error = %e,
                        "sweep stopped partway; evidence record {seq} lists what it deleted"
                    ),
                    Err(ev) => tracing::error!(
                        error = %e,
                        evidence_error = %ev,
                        "sweep stopped partway and its evidence could not be written"
                    ),
                }
            }
            return Err(e);
        }
        if !self.dry_run {
            let mut purges: BTreeMap<String, PurgeMetrics> = report
                .tables
                .iter_mut()
                .map(|(t, ts)| (t.clone(), std::mem::take(&mut ts.purge)))
                .collect();
            let cleaned = purge::cleanup_logs(lake, &mut purges).await;
            for (t, p) in purges {
                if let Some(ts) = report.tables.get_mut(&t) {
                    ts.purge = p;
                }
            }
            cleaned?;
        }
        if self.dry_run {
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }

        let verify = Verify::new(lake.clone(), self.now)
            .with_policy(self.policy.clone())
            .with_evidence(false)
            .with_progress(self.progress.clone())
            .execute()
            .await?;

        let mut rec = EvidenceRecord::new("sweep", self.now);
        rec.recorded_at = self.wall_now.map(evidence::timestamp);
        rec.outcome = if verify.passed() { "ok" } else { "failed" }.into();
        rec.policy_sha256 = Some(self.policy.sha256.clone());
        for (t, ts) in &report.tables {
            if let Some(day) = &ts.keeps_from {
                rec.predicates.push(format!("{t}: date < {day}"));
            }
        }
        if !erased.is_empty() {
            rec.predicates.push(format!(
                "user tables: keyed hash of user_id in the {} erasure tombstones",
                erased.len()
            ));
        }
        for h in &self.policy.holds {
            rec.predicates
                .push(format!("except rows under {}", h.describe()));
        }
        record_removals(&report, &mut rec);
        rec.checks = verify.checks.clone();
        rec.metrics = serde_json::json!({
            "tables": report.tables.iter().map(|(t, ts)| (t.clone(), serde_json::json!({
                "files_retired": ts.rewrite.retired.len(),
                "files_written": ts.rewrite.written.len(),
                "partitions": ts.rewrite.partitions,
                "rows_removed": ts.rewrite.rows_removed,
                "partitions_clustered": ts.cluster.as_ref().map(|c| c.partitions.len()),
                "checkpoint_version": ts.purge.checkpoint_version,
            }))).collect::<BTreeMap<_, _>>(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        let (seq, sha) = evidence::append(lake, rec).await?;
        report.evidence_seq = Some(seq);
        report.evidence_sha256 = Some(sha);
        report.verify = Some(verify);
        report.seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            tables = report.tables.len(),
            rows_removed = report.rows_removed(),
            objects_removed = report
                .tables
                .values()
                .map(|t| t.purge.deleted.len())
                .sum::<usize>(),
            passed = report.passed(),
            evidence_seq = seq,
            seconds = report.seconds,
            "sweep finished"
        );
        Ok(report)
    }
}

/// The rows and objects `report` removed, into `rec`.
fn record_removals(report: &SweepReport, rec: &mut EvidenceRecord) {
    for (t, ts) in &report.tables {
        if ts.rewrite.rows_removed > 0 {
            rec.rows_removed.insert(t.clone(), ts.rewrite.rows_removed);
        }
        for o in &ts.purge.deleted {
            let mut o = o.clone();
            if o.why == "retired" {
                o.why = "swept".into();
            }
            rec.objects_removed.push(o);
        }
    }
}
