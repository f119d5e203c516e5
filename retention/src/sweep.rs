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

use std::collections::{BTreeMap, HashMap};
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
}

/// What a sweep did (or would do) to one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableSweep {
    /// First day kept (`YYYY-MM-DD`), if the policy gives the table a keep time.
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
        }
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
        if !self.dry_run {
            let first_kept: BTreeMap<String, i32> = tables
                .iter()
                .filter_map(|t| Some((t.to_string(), self.policy.cutoff_date(t, self.now)?)))
                .collect();
            let holds = self
                .policy
                .holds
                .iter()
                .map(|h| FloorHold {
                    app: h.app.clone(),
                    user: h.user.clone(),
                    from: h.from.and_then(DateTime::from_timestamp_micros),
                    until: h.until.and_then(DateTime::from_timestamp_micros),
                })
                .collect();
            RetentionFloor::raise(lake, &first_kept, holds).await?;
        }
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
                let rewrite = retry(table, || async {
                    let Some(t) = lake.table(table).await? else {
                        return Ok(RewriteMetrics::default());
                    };
                    let mut plan = Vec::new();
                    for f in files::data_files(&t, table)? {
                        let held = holds.iter().any(|h| hold_may_cover(h, table, &f));
                        if filter.file_expired(&f) && !held {
                            plan.push((f, FileAction::Drop));
                        } else if filter.file_expired(&f) || filter.erased.is_some() {
                            plan.push((f, FileAction::Filter));
                        }
                    }
                    rewrite::apply(
                        table,
                        &t,
                        &plan,
                        filter.clone(),
                        &self.opts,
                        meta.clone(),
                        self.dry_run,
                    )
                    .await
                })
                .await?;
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
                        keeps_from: cutoff.map(day_name),
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
