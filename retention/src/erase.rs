//! `retention erase`: remove every row of one user (optionally of one app)
//! from every table, physically, and prove it.
//!
//! ```text
//! 1. holds      the policy's holds may not cover any of the user's rows
//!               (checked first: a held user is refused, nothing changes)
//! 2. tombstone  keyed hash into `erasures` (first, so ingest stops writing
//!               the user's rows and a Kafka replay cannot bring them back)
//! 3. rewrite    per table: files whose partition statistics may hold the
//!               user (min <= id <= max on user_id / app_id; quarantine: all),
//!               rewritten without the user's rows in one commit that
//!               names no id; repeated until a pass finds nothing (rows a
//!               concurrent ingest appended before it saw the tombstone)
//! 4. purge      retired files deleted, checkpoint, older log files deleted
//! 5. verify     the id's bytes nowhere under the lake root
//! 6. evidence   one record: keyed hash, objects removed, rows per table
//! ```
//!
//! Every step is idempotent: after a crash (even `kill -9` between the
//! commit and the purge) a rerun finishes the job. How many files step 3
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
use auditlake_schemas::erasure::{self, ErasureKey, Tombstone};
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
    /// The verification run after the purge (None if disabled).
    pub verify: Option<VerifyReport>,
    /// The evidence record's sequence number.
    pub evidence_seq: Option<i64>,
}

impl EraseOutcome {
    /// Whether the erasure is proven (verification passed or was skipped).
    pub fn passed(&self) -> bool {
        self.verify.as_ref().is_none_or(VerifyReport::passed)
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
            depth: Depth::Deep,
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
        validate_id(&self.user, "--user")?;
        if let Some(a) = &self.app {
            validate_id(a, "--app")?;
        }
        let lake = &self.lake;
        let holds = self
            .policy
            .as_ref()
            .map(|p| p.holds.clone())
            .unwrap_or_default();
        let mut metrics = EraseMetrics::default();

        // 1. Holds: refuse before changing anything.
        if !holds.is_empty() {
            for table in USER_TABLES {
                let f = self.filter(table, holds.clone());
                let Some(t) = lake.table(table).await? else {
                    continue;
                };
                for file in files::data_files(&t, table)?
                    .iter()
                    .filter(|file| f.may_match(file))
                {
                    let bytes = files::read_object(&t, &file.path).await?;
                    for b in files::decode(
                        &file.path,
                        bytes,
                        Some(&crate::filters::FILTER_COLUMNS),
                        None,
                    )? {
                        let (_, held) = f.matches(&b)?;
                        let rows = held.true_count() as u64;
                        if rows > 0 {
                            let c = crate::filters::Cols::of(table, &b)?;
                            let hold = (0..b.num_rows())
                                .filter(|i| held.value(*i))
                                .find_map(|i| c.held_by(i, &holds))
                                .cloned()
                                .ok_or_else(|| Error::Internal("held row without a hold".into()))?;
                            return Err(Error::Held {
                                table: table.to_string(),
                                rows,
                                line: hold.line,
                                reason: hold.reason,
                            });
                        }
                    }
                }
            }
        }

        // 2. Tombstone (reusing an earlier one for the same user and app).
        let key = ErasureKey::load_or_create(lake).await?;
        let hash = key.hash(&self.user);
        let existing = erasure::read_tombstones(lake)
            .await?
            .into_iter()
            .map(|(t, _)| t)
            .find(|t| t.user_hash == hash && t.app_id == self.app);
        let tombstone = match existing {
            Some(t) => t,
            None => {
                let t = Tombstone::new(
                    &key,
                    &self.user,
                    self.app.as_deref(),
                    self.reason.as_deref(),
                    self.now.timestamp_micros(),
                );
                erasure::append_tombstones(lake, &key, std::slice::from_ref(&t)).await?;
                t
            }
        };
        crate::pause_point("tombstoned");
        let meta: HashMap<String, serde_json::Value> = HashMap::from([(
            "auditlake".to_string(),
            serde_json::json!({"operation": "retention erase", "erasure_id": tombstone.erasure_id}),
        )]);

        // 3. Rewrite.
        let started = Instant::now();
        for table in USER_TABLES {
            let Some(t) = lake.table(table).await? else {
                continue;
            };
            let (n, b) = auditlake_schemas::lake::table_size(&t);
            metrics.files_total += n;
            metrics.bytes_total += b;
        }
        self.progress.start("erase", USER_TABLES.len() as u64);
        for table in USER_TABLES {
            let filter = self.filter(table, holds.clone());
            let mut total = RewriteMetrics::default();
            // Files already read (or written by a pass): a later pass only
            // looks at files a concurrent writer added meanwhile.
            let mut seen: HashSet<String> = HashSet::new();
            for _pass in 0..MAX_PASSES {
                let (m, planned) = retry(table, || async {
                    let Some(t) = lake.table(table).await? else {
                        return Ok((RewriteMetrics::default(), Vec::new()));
                    };
                    let plan: Vec<_> = files::data_files(&t, table)?
                        .into_iter()
                        .filter(|f| !seen.contains(&f.path) && filter.may_match(f))
                        .map(|f| (f, FileAction::Filter))
                        .collect();
                    let m =
                        rewrite::apply(table, &t, &plan, &filter, &self.opts, meta.clone(), false)
                            .await?;
                    Ok((m, plan.into_iter().map(|(f, _)| f.path).collect::<Vec<_>>()))
                })
                .await?;
                let done = planned.is_empty() || m.version.is_none();
                seen.extend(planned);
                seen.extend(m.written.iter().cloned());
                merge(&mut total, m);
                if done {
                    break;
                }
            }
            self.progress.advance(1);
            metrics.rewrites.insert(table.to_string(), total);
        }
        self.progress.finish();
        metrics.seconds_rewrite = started.elapsed().as_secs_f64();

        // 4. Purge every user table: also finishes an earlier erasure that
        // crashed after its commit.
        let started = Instant::now();
        let opts = PurgeOptions {
            wall_now: self.wall_now.unwrap_or(self.now),
            orphan_grace: self.orphan_grace,
            compact_log: true,
            dry_run: false,
        };
        for table in USER_TABLES {
            let retired: HashMap<String, Option<String>> = metrics
                .rewrites
                .get(table)
                .map(|r| {
                    r.retired
                        .iter()
                        .map(|f| (format!("{table}/{}", f.path), f.sha256.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let p = retry(table, || purge::purge(lake, table, &retired, &opts)).await?;
            metrics.purges.insert(table.to_string(), p);
        }
        purge::cleanup_logs(lake, &mut metrics.purges).await?;
        metrics.seconds_purge = started.elapsed().as_secs_f64();

        // 5. Verify.
        let started = Instant::now();
        let report = if self.verify {
            let mut v = Verify::new(lake.clone(), self.now)
                .with_user(self.user.clone())
                .with_depth(self.depth)
                .with_evidence(false)
                .with_progress(self.progress.clone());
            if let Some(a) = &self.app {
                v = v.with_app(a.clone());
            }
            Some(v.execute().await?)
        } else {
            None
        };
        metrics.seconds_verify = started.elapsed().as_secs_f64();

        // 6. Evidence.
        let subject = match &self.app {
            Some(a) => format!("user_hash = {hash} AND app_id = {a:?}"),
            None => format!("user_hash = {hash}"),
        };
        let mut rec = EvidenceRecord::new("erase", self.now);
        rec.outcome = if report.as_ref().is_none_or(VerifyReport::passed) {
            "ok"
        } else {
            "failed"
        }
        .into();
        rec.policy_sha256 = self.policy.as_ref().map(|p| p.sha256.clone());
        rec.subject = Some(subject.clone());
        rec.predicates = vec![
            subject,
            format!("erasure_id = {}", tombstone.erasure_id),
            format!("reason = {:?}", self.reason.as_deref().unwrap_or("")),
        ];
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
            "seconds_rewrite": metrics.seconds_rewrite,
            "seconds_purge": metrics.seconds_purge,
            "seconds_verify": metrics.seconds_verify,
            "partitions": metrics.rewrites.iter().map(|(t, r)| (t.clone(), r.partitions.len())).collect::<BTreeMap<_, _>>(),
        });
        let rows_removed = rec.rows_removed.clone();
        let (seq, _) = evidence::append(lake, rec).await?;
        Ok((
            EraseOutcome {
                erasure_id: tombstone.erasure_id,
                user_hash: hash.to_string(),
                rows_removed,
                verify: report,
                evidence_seq: Some(seq),
            },
            metrics,
        ))
    }

    fn filter(&self, table: &str, holds: Vec<crate::policy::Hold>) -> UserFilter {
        UserFilter {
            table: table.to_string(),
            user: self.user.clone(),
            app: self.app.clone(),
            holds,
        }
    }
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

fn merge(total: &mut RewriteMetrics, m: RewriteMetrics) {
    total.files_considered += m.files_considered;
    total.files_read += m.files_read;
    total.retired.extend(m.retired);
    total.written.extend(m.written);
    total.rows_removed += m.rows_removed;
    total.rows_rewritten += m.rows_rewritten;
    total.bytes_read += m.bytes_read;
    total.bytes_written += m.bytes_written;
    total.version = m.version.or(total.version);
    total.partitions.extend(m.partitions);
    total.partitions.sort();
    total.partitions.dedup();
}
