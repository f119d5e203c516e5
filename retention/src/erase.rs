//! `retention erase`: remove every row of one user (optionally of one app)
//! from every table, physically, and prove it.
//!
//! ```text
//! 1. tombstone  keyed hash into `erasures`, effective at the later of
//!               `now` and the wall clock (ingest drops the user's events up
//!               to then, so a Kafka replay cannot bring them back, and
//!               stores later ones under the pseudonym), committed while
//!               step 2 reads and writes; no rewrite commits before it
//! 2. rewrite    per table, all tables at once, files in parallel: files
//!               whose statistics may hold the user (min <= id <= max on
//!               user_id / app_id; quarantine: all), rewritten without the
//!               user's rows (those under the pseudonym since an earlier
//!               erasure too) in one commit that names no id; repeated until
//!               a pass finds nothing (rows a concurrent ingest appended
//!               before it saw the tombstone). Rows a legal hold covers are
//!               kept and counted: the erasure stays pending for them
//! 3. purge      per table: retired files deleted, checkpoint; then, after
//!               a delay for concurrent readers, older log files deleted
//! 4. verify     meanwhile: the id's bytes nowhere under the lake root (the
//!               log is listed and read once its cleanup is done)
//! 5. evidence   one record: keyed hash, objects removed, rows per table,
//!               rows kept under each hold (outcome `pending`)
//! ```
//!
//! Every step is idempotent: after a crash (even `kill -9` between the
//! commit and the purge) a rerun finishes the job. How many files step 2
//! rewrites depends on clustering: with data sorted by user inside each
//! partition (see `retention sweep` clustering) a user's rows sit in about one file per
//! partition; unclustered, most files' min/max ranges span every user.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::evidence::{self, EvidenceRecord};
use crate::files;
use crate::filters::{USER_TABLES, UserFilter};
use crate::policy::Policy;
use crate::purge::{self, DEFAULT_ORPHAN_GRACE, PurgeMetrics, PurgeOptions};
use crate::rewrite::{self, FileAction, RewriteMetrics};
use crate::scan::Depth;
use crate::verify::{Verify, VerifyReport};
use crate::{Error, NoProgress, Progress, Result, retry};
use auditlake_schemas::Lake;
use auditlake_schemas::erasure::{self, ErasureKey, Tombstone, UserHash};
use auditlake_schemas::lake::WriteOptions;

/// Rewrite passes per table before giving up on a concurrent writer that
/// keeps adding the user's rows.
pub const MAX_PASSES: usize = 5;

/// The erasure of one user; see the module doc.
pub struct Erase {
    lake: Lake,
    user: String,
    app: Option<String>,
    reason: Option<String>,
    policy: Option<Policy>,
    now: DateTime<Utc>,
    opts: WriteOptions,
    orphan_grace: TimeDelta,
    wall_now: Option<DateTime<Utc>>,
    verify: bool,
    depth: Depth,
    progress: Arc<dyn Progress>,
}

/// What an erasure did, per table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EraseMetrics {
    /// Rewrites per table (summed over passes).
    pub rewrites: BTreeMap<String, RewriteMetrics>,
    /// Purges per table.
    pub purges: BTreeMap<String, PurgeMetrics>,
    /// Data files of the user tables before the erasure.
    pub files_total: usize,
    /// Bytes of those files.
    pub bytes_total: u64,
    /// Seconds spent rewriting, purging, verifying.
    pub seconds_rewrite: f64,
    pub seconds_purge: f64,
    pub seconds_verify: f64,
}

impl EraseMetrics {
    /// Files retired by rewrites, over all tables.
    pub fn files_rewritten(&self) -> usize {
        self.rewrites.values().map(|r| r.retired.len()).sum()
    }

    /// Rows removed, over all tables.
    pub fn rows_removed(&self) -> u64 {
        self.rewrites.values().map(|r| r.rows_removed).sum()
    }
}

/// The result of an erasure.
#[derive(Debug, Clone, Serialize)]
pub struct EraseOutcome {
    /// The tombstone's id.
    pub erasure_id: String,
    /// The keyed hash of the user id (hex).
    pub user_hash: String,
    /// Rows removed per table.
    pub rows_removed: BTreeMap<String, u64>,
    /// Rows kept under legal holds: the erasure stays pending for them (its
    /// tombstone stays; the first sweep after a hold is lifted erases them).
    pub held: Vec<HeldRows>,
    /// The verification run after the purge (None if disabled).
    pub verify: Option<VerifyReport>,
    /// The evidence record's sequence number.
    pub evidence_seq: Option<i64>,
    /// The evidence record's SHA-256 (see [`VerifyReport::evidence_sha256`]).
    pub evidence_sha256: Option<String>,
}

impl EraseOutcome {
    /// Whether the erasure is proven (verification passed or was skipped);
    /// rows under holds may remain (see [`held`](Self::held)).
    pub fn passed(&self) -> bool {
        self.verify.as_ref().is_none_or(VerifyReport::passed)
    }

    /// Whether rows under legal holds remain to be erased.
    pub fn pending(&self) -> bool {
        !self.held.is_empty()
    }
}

impl Erase {
    /// Erase `user` from `lake`, at the time `now`.
    pub fn new(lake: Lake, user: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            lake,
            user: user.into(),
            app: None,
            reason: None,
            policy: None,
            now,
            opts: WriteOptions::default(),
            orphan_grace: DEFAULT_ORPHAN_GRACE,
            wall_now: None,
            verify: true,
            depth: Depth::default(),
            progress: Arc::new(NoProgress),
        }
    }

    /// Only the user's rows of this app.
    pub fn with_app(mut self, app: Option<String>) -> Self {
        self.app = app;
        self
    }

    /// Why (recorded in the tombstone and evidence), e.g. `user_request`.
    pub fn with_reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    /// Honour this policy's legal holds (and record its hash).
    pub fn with_policy(mut self, policy: Option<Policy>) -> Self {
        self.policy = policy;
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

    /// Whether to verify afterwards (default yes).
    pub fn with_verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// How deep the verification searches data files (default: deep).
    pub fn with_verify_depth(mut self, depth: Depth) -> Self {
        self.depth = depth;
        self
    }

    /// Progress reporting.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Runs the erasure.
    pub async fn execute(self) -> Result<(EraseOutcome, EraseMetrics)> {
        let t0 = Instant::now();
        validate_id(&self.user, "--user")?;
        if let Some(a) = &self.app {
            validate_id(a, "--app")?;
        }
        let lake = &self.lake;
        crate::require_lake(lake).await?;
        let holds = self
            .policy
            .as_ref()
            .map(|p| p.holds.clone())
            .unwrap_or_default();
        let mut metrics = EraseMetrics::default();

        // 1. Tombstone. It takes effect at the later of `now` and the wall
        // clock: every row the rewrite removes is dated before it (unless a
        // producer's clock runs ahead), so a replay drops them all instead of
        // bringing them back under the pseudonym. An earlier tombstone of the
        // same user and app that reaches as far is reused (a rerun after a
        // crash); otherwise a new one moves the split forward (erasing a
        // user again removes the rows stored under the pseudonym meanwhile).
        let key = ErasureKey::load_or_create(lake).await?;
        // A hold on the user keeps their rows under the pseudonym too.
        let holds = crate::filters::with_pseudonym_holds(&holds, Some(&key));
        let tombstones: Vec<Tombstone> = erasure::read_tombstones(lake)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        let named_by_pseudonym = self.user.starts_with(erasure::PSEUDONYM_PREFIX);
        let hash = match erasure::parse_pseudonym(&self.user) {
            // An erased user named by the pseudonym (the id is not known).
            Some(h) if tombstones.iter().any(|t| t.user_hash == h) => {
                // Erased from some apps only: the pseudonym stands for the
                // user in those apps, so the erasure must name one of them.
                let apps: Vec<&str> = tombstones
                    .iter()
                    .filter(|t| t.user_hash == h)
                    .map(|t| t.app_id.as_deref())
                    .collect::<Option<_>>()
                    .unwrap_or_default();
                if !apps.is_empty() && self.app.as_deref().is_none_or(|a| !apps.contains(&a)) {
                    return Err(Error::Usage(format!(
                        "{} was erased from {} only; pass --app with one of them",
                        self.user,
                        apps.join(", ")
                    )));
                }
                h
            }
            Some(_) => {
                return Err(Error::Usage(format!(
                    "--user {} looks like a pseudonym but no erasure of the lake has that hash",
                    self.user
                )));
            }
            None if named_by_pseudonym => {
                return Err(Error::Usage(format!(
                    "--user {}: a pseudonym is `{}` followed by the 64 hex digits of a user_hash",
                    self.user,
                    erasure::PSEUDONYM_PREFIX
                )));
            }
            None => key.hash(&self.user),
        };
        // The id as stored: a pseudonym in lower-case hex.
        let stored_id = if named_by_pseudonym {
            erasure::pseudonym(&hash)
        } else {
            self.user.clone()
        };
        let erased_at = self
            .wall_now
            .map_or(self.now, |w| w.max(self.now))
            .timestamp_micros();
        let existing = tombstones
            .into_iter()
            .filter(|t| t.user_hash == hash && t.app_id == self.app)
            .max_by_key(|t| t.erased_at)
            .filter(|t| t.erased_at >= erased_at);
        let (tombstone, is_new) = match existing {
            Some(t) => (t, false),
            None => (
                Tombstone::of_hash(hash, self.app.as_deref(), self.reason.as_deref(), erased_at),
                true,
            ),
        };
        // The tombstone is committed while the tables' files are read and
        // rewritten; no rewrite commits before it (`gate`).
        let (tomb_tx, tomb_rx) = tokio::sync::watch::channel(None::<bool>);
        let write_tombstone = async {
            let r = if is_new {
                erasure::append_tombstones(lake, &key, std::slice::from_ref(&tombstone))
                    .await
                    .map(|_| ())
            } else {
                Ok(())
            };
            if r.is_ok() {
                crate::pause_point("tombstoned");
                tracing::debug!(ms = t0.elapsed().as_millis() as u64, "tombstone written");
            }
            let _ = tomb_tx.send(Some(r.is_ok()));
            r
        };
        let meta: HashMap<String, serde_json::Value> = HashMap::from([(
            "auditlake".to_string(),
            serde_json::json!({"operation": "retention erase", "erasure_id": tombstone.erasure_id}),
        )]);

        // 2-3. Per table, all tables at once: rewrite, then purge (retired
        // files, checkpoint). A purge also finishes an earlier erasure that
        // crashed after its commit.
        let started = Instant::now();
        let opts = PurgeOptions {
            wall_now: self.wall_now.unwrap_or(self.now),
            orphan_grace: self.orphan_grace,
            compact_log: true,
            dry_run: false,
        };
        self.progress.start("erase", USER_TABLES.len() as u64);
        let tables = futures::future::try_join_all(USER_TABLES.iter().map(|table| {
            self.erase_table(
                table,
                (&stored_id, &hash),
                &holds,
                &meta,
                &opts,
                tomb_rx.clone(),
            )
        }));
        let (tombstoned, done) = futures::future::join(write_tombstone, tables).await;
        tombstoned?;
        let done = done?;
        self.progress.finish();
        let mut held: BTreeMap<String, BTreeMap<usize, u64>> = BTreeMap::new();
        for t in done {
            metrics.files_total += t.files;
            metrics.bytes_total += t.bytes;
            metrics.rewrites.insert(t.table.to_string(), t.rewrite);
            metrics.purges.insert(t.table.to_string(), t.purge);
            if !t.held.is_empty() {
                held.insert(t.table.to_string(), t.held);
            }
        }
        metrics.seconds_rewrite = started.elapsed().as_secs_f64();

        // 4. Old log files go after a delay (concurrent readers finish
        // loading); the verification scans everything else meanwhile and
        // the log once it is cleaned.
        let started = Instant::now();
        let (cleaned_tx, cleaned_rx) = tokio::sync::watch::channel(false);
        let cleanup = async {
            let mut purges = std::mem::take(&mut metrics.purges);
            let r = purge::cleanup_logs(lake, &mut purges).await;
            let _ = cleaned_tx.send(true);
            (r, purges)
        };
        let verify = async {
            if !self.verify {
                return Ok(None);
            }
            let mut v = Verify::new(lake.clone(), self.now)
                .with_user(stored_id.clone())
                .with_depth(self.depth)
                .with_evidence(false)
                .with_log_barrier(cleaned_rx)
                .with_progress(self.progress.clone());
            if let Some(a) = &self.app {
                v = v.with_app(a.clone());
            }
            if let Some(p) = &self.policy {
                v = v.with_holds(p.holds.clone());
            }
            v.execute().await.map(Some)
        };
        let ((cleaned, purges), report) = futures::future::join(cleanup, verify).await;
        metrics.purges = purges;
        cleaned?;
        let report = report?;
        metrics.seconds_purge = started.elapsed().as_secs_f64();
        tracing::debug!(
            ms = t0.elapsed().as_millis() as u64,
            "log cleaned and verified"
        );
        metrics.seconds_verify = report.as_ref().map_or(0.0, |r| r.seconds);

        // 5. Evidence.
        let subject = match &self.app {
            Some(a) => format!("user_hash = {hash} AND app_id = {a:?}"),
            None => format!("user_hash = {hash}"),
        };
        let held_rows: Vec<HeldRows> = held
            .iter()
            .flat_map(|(table, per_hold)| {
                per_hold.iter().map(|(h, rows)| HeldRows {
                    table: table.clone(),
                    rows: *rows,
                    hold_line: holds[*h].line,
                    hold_reason: holds[*h].reason.clone(),
                })
            })
            .collect();
        let mut rec = EvidenceRecord::new("erase", self.now);
        rec.recorded_at = self.wall_now.map(crate::evidence::timestamp);
        rec.outcome = if !report.as_ref().is_none_or(VerifyReport::passed) {
            "failed"
        } else if held_rows.is_empty() {
            "ok"
        } else {
            "pending"
        }
        .into();
        rec.policy_sha256 = self.policy.as_ref().map(|p| p.sha256.clone());
        rec.subject = Some(subject.clone());
        rec.predicates = vec![
            subject,
            format!("erasure_id = {}", tombstone.erasure_id),
            format!("reason = {:?}", self.reason.as_deref().unwrap_or("")),
        ];
        for h in &held_rows {
            rec.predicates.push(format!(
                "pending: {} row(s) of {} kept under the hold at policy line {} ({:?}); a sweep after the hold is lifted erases them",
                h.rows, h.table, h.hold_line, h.hold_reason
            ));
        }
        rec.rows_removed = metrics
            .rewrites
            .iter()
            .filter(|(_, r)| r.rows_removed > 0)
            .map(|(t, r)| (t.clone(), r.rows_removed))
            .collect();
        for p in metrics.purges.values() {
            for o in &p.deleted {
                let mut o = o.clone();
                if o.why == "retired" {
                    o.why = "rewritten".into();
                }
                rec.objects_removed.push(o);
            }
        }
        if let Some(r) = &report {
            rec.checks = r.checks.clone();
        }
        rec.metrics = serde_json::json!({
            "files_total": metrics.files_total,
            "bytes_total": metrics.bytes_total,
            "files_rewritten": metrics.files_rewritten(),
            "rows_removed": metrics.rows_removed(),
            "rows_held": held_rows,
            "seconds_rewrite": metrics.seconds_rewrite,
            "seconds_purge": metrics.seconds_purge,
            "seconds_verify": metrics.seconds_verify,
            "partitions": metrics.rewrites.iter().map(|(t, r)| (t.clone(), r.partitions.len())).collect::<BTreeMap<_, _>>(),
        });
        let rows_removed = rec.rows_removed.clone();
        let (seq, sha) = evidence::append(lake, rec).await?;
        tracing::debug!(ms = t0.elapsed().as_millis() as u64, "evidence appended");
        let removed: u64 = rows_removed.values().sum();
        tracing::info!(
            user_hash = %hash,
            app = self.app.as_deref(),
            rows_removed = removed,
            files_rewritten = metrics.files_rewritten(),
            passed = report.as_ref().is_none_or(VerifyReport::passed),
            evidence_seq = seq,
            seconds = t0.elapsed().as_secs_f64(),
            "erase finished"
        );
        if removed == 0 && held_rows.is_empty() {
            tracing::warn!(
                user_hash = %hash,
                "no row of this user was found in the lake; the tombstone stands all the same \
                 (ingest drops the id's events dated up to now and stores later ones under \
                 the pseudonym), so check the id was not mistyped"
            );
        }
        Ok((
            EraseOutcome {
                erasure_id: tombstone.erasure_id,
                user_hash: hash.to_string(),
                rows_removed,
                held: held_rows,
                verify: report,
                evidence_seq: Some(seq),
                evidence_sha256: Some(sha),
            },
            metrics,
        ))
    }

    /// Rewrite passes and purge of one table.
    async fn erase_table(
        &self,
        table: &'static str,
        (stored_id, hash): (&str, &UserHash),
        holds: &[crate::policy::Hold],
        meta: &HashMap<String, serde_json::Value>,
        opts: &PurgeOptions,
        tombstoned: tokio::sync::watch::Receiver<Option<bool>>,
    ) -> Result<TableDone> {
        let started = Instant::now();
        let lake = &self.lake;
        let mut filter = UserFilter::new(table, stored_id, self.app.as_deref(), holds.to_vec());
        let pseudonym = erasure::pseudonym(hash);
        if stored_id != pseudonym {
            // Rows stored under the pseudonym since an earlier erasure go too.
            filter.pseudonym = Some(pseudonym);
        }
        let filter = Arc::new(filter);
        let mut total = RewriteMetrics::default();
        let mut size = None;
        // Files already read (or written by a pass): a later pass only
        // looks at files a concurrent writer added meanwhile.
        let mut seen: HashSet<String> = HashSet::new();
        for _pass in 0..MAX_PASSES {
            let (m, planned, n) = retry(table, || async {
                let Some(t) = lake.table(table).await? else {
                    return Ok((RewriteMetrics::default(), Vec::new(), (0, 0)));
                };
                let n = auditlake_schemas::lake::table_size(&t);
                let plan: Vec<_> = files::data_files(&t, table)?
                    .into_iter()
                    .filter(|f| !seen.contains(&f.path) && filter.may_match(f))
                    .map(|f| (f, FileAction::Filter))
                    .collect();
                let mut tombstoned = tombstoned.clone();
                let gate = async move {
                    match tombstoned.wait_for(Option::is_some).await.map(|v| *v) {
                        Ok(Some(true)) => Ok(()),
                        _ => Err(Error::Internal(
                            "the tombstone was not written; nothing rewritten".into(),
                        )),
                    }
                };
                let m = rewrite::apply_gated(
                    table,
                    &t,
                    &plan,
                    filter.clone(),
                    &self.opts,
                    meta.clone(),
                    false,
                    gate,
                )
                .await?;
                Ok((
                    m,
                    plan.into_iter().map(|(f, _)| f.path).collect::<Vec<_>>(),
                    n,
                ))
            })
            .await?;
            size.get_or_insert(n);
            let done = planned.is_empty() || m.version.is_none();
            seen.extend(planned);
            seen.extend(m.written.iter().cloned());
            total.absorb(m);
            if done {
                break;
            }
        }
        let retired: HashMap<String, Option<String>> = total
            .retired
            .iter()
            .map(|f| (format!("{table}/{}", f.path), f.sha256.clone()))
            .collect();
        let rewritten = started.elapsed();
        let purge = retry(table, || purge::purge(lake, table, &retired, opts)).await?;
        tracing::debug!(
            table,
            files_read = total.files_read,
            files_rewritten = total.retired.len(),
            rewrite_ms = rewritten.as_millis() as u64,
            purge_ms = (started.elapsed() - rewritten).as_millis() as u64,
            "erased from table"
        );
        self.progress.advance(1);
        let (files, bytes) = size.unwrap_or_default();
        Ok(TableDone {
            table,
            files,
            bytes,
            rewrite: total,
            purge,
            held: filter.held_rows(),
        })
    }
}

/// One table's part of an erasure.
struct TableDone {
    table: &'static str,
    files: usize,
    bytes: u64,
    rewrite: RewriteMetrics,
    purge: PurgeMetrics,
    held: BTreeMap<usize, u64>,
}

/// Rows of the user an erasure kept because a legal hold covers them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HeldRows {
    /// Table.
    pub table: String,
    /// Rows kept.
    pub rows: u64,
    /// Line of the hold in the policy file.
    pub hold_line: usize,
    /// The hold's reason.
    pub hold_reason: String,
}

/// A user or app id must be non-empty text without control characters.
pub fn validate_id(id: &str, what: &str) -> Result<()> {
    if id.trim().is_empty() {
        return Err(Error::Usage(format!("{what} must not be empty")));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::Usage(format!(
            "{what} must not hold control characters"
        )));
    }
    Ok(())
}
