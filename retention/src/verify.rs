//! `retention verify`: read back every object under the lake root and check
//! that what must be gone is gone.
//!
//! ```text
//! list the root (every object: data files referenced or not, _delta_log
//! commits and checkpoints, anything else)  --> per object, in parallel:
//!   erased_user_bytes   (--user U)         the plaintext U nowhere: raw bytes,
//!                                          and inside every decompressed page
//!                                          (as a whole id: `U` inside `U3` is
//!                                          another user, see scan::find_whole)
//!   erased_user_rows    (--user U --app A) no row of (U, A) in any data file
//!   erased_users_hashed (tombstones exist) no user_id / raw message / log or
//!                                          checkpoint token whose keyed hash is
//!                                          an erased user's
//!   retention           (--policy)         no data file past its table's keep
//!                                          time, unless every row is held
//! then: evidence_chain (the evidence table's hash chain is intact)
//! ```
//!
//! What the keyed-hash check cannot see: without the plaintext, an id is
//! only recognised where it stands as a whole token (a `user_id` value, a
//! JSON string, a run of id characters in a raw message or in the log's
//! statistics); an id buried inside a longer string is found only by
//! `--user`. An app-scoped erasure leaves the user's other apps' rows, and
//! with them the id in statistics, so `--user U --app A` checks rows only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use memchr::memmem::Finder;
use serde::Serialize;

use crate::evidence::{self, Check, EvidenceRecord};
use crate::files::{self, DataFile, date_in_path};
use crate::filters::{Cols, FILTER_COLUMNS, USER_TABLES, hold_may_cover};
use crate::object::{self, ObjectBytes};
use crate::policy::Policy;
use crate::scan::{self, Depth, HashCache, HashedNeedles};
use crate::{Error, NoProgress, Progress, Result};
use auditlake_schemas::Lake;
use auditlake_schemas::erasure::{self, ErasedUsers, ErasureKey, UserHash};

/// Objects fetched and scanned at once (mostly ranged reads: more than the
/// cores).
pub const DEFAULT_PARALLELISM: usize = 8;

/// A verification of the lake; see the module doc.
pub struct Verify {
    lake: Lake,
    user: Option<String>,
    app: Option<String>,
    policy: Option<Policy>,
    now: DateTime<Utc>,
    record: bool,
    depth: Depth,
    parallelism: usize,
    progress: Arc<dyn Progress>,
    holds: Vec<crate::policy::Hold>,
    log_barrier: Option<tokio::sync::watch::Receiver<bool>>,
    wall_now: Option<DateTime<Utc>>,
    anchor: Option<(i64, String)>,
}

/// The result: every check, and how much was read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Checks and their failures.
    pub checks: Vec<Check>,
    /// Objects read.
    pub objects: usize,
    /// Bytes of the objects checked.
    pub bytes: u64,
    /// Bytes actually read (footers and the needed columns of data files
    /// when the checks need no more).
    pub bytes_read: u64,
    /// Unreferenced data files seen (not a failure by itself).
    pub unreferenced: Vec<String>,
    /// What legal holds keep of erased users (not a failure: the erasure is
    /// pending for those rows), one line per object.
    pub held: Vec<String>,
    /// Seconds taken.
    pub seconds: f64,
    /// Sequence number of the evidence record written, if any.
    pub evidence_seq: Option<i64>,
    /// Its SHA-256: with the sequence number, an anchor to keep outside the
    /// lake and give a later verify (`--evidence-anchor SEQ:SHA256`).
    pub evidence_sha256: Option<String>,
}

impl VerifyReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// Every failure, as `check: detail` lines.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .flat_map(|c| c.failures.iter().map(move |f| format!("{}: {f}", c.name)))
            .collect()
    }
}

impl Verify {
    /// A verification of `lake` at `now` (the time retention is judged at).
    pub fn new(lake: Lake, now: DateTime<Utc>) -> Self {
        Self {
            lake,
            user: None,
            app: None,
            policy: None,
            now,
            record: true,
            depth: Depth::default(),
            parallelism: DEFAULT_PARALLELISM,
            progress: Arc::new(NoProgress),
            holds: Vec::new(),
            log_barrier: None,
            wall_now: None,
            anchor: None,
        }
    }

    /// An evidence record kept outside the lake (its sequence number and
    /// SHA-256, as an earlier run printed them): the chain must still hold it
    /// unchanged. The chain alone cannot show that its newest records were
    /// cut off together with their log entries; the anchor can.
    pub fn with_evidence_anchor(mut self, seq: i64, sha256: String) -> Self {
        self.anchor = Some((seq, sha256.to_ascii_lowercase()));
        self
    }

    /// The wall-clock time the evidence record gives as `recorded_at`
    /// (`now` may be set to the past; the CLI passes the real time).
    pub fn with_wall_clock(mut self, wall_now: DateTime<Utc>) -> Self {
        self.wall_now = Some(wall_now);
        self
    }

    /// Legal holds whose rows of erased users are not failures (the erasure
    /// is pending for them), without checking keep times (see
    /// [`with_policy`](Self::with_policy), which sets the holds too).
    pub fn with_holds(mut self, holds: Vec<crate::policy::Hold>) -> Self {
        self.holds = holds;
        self
    }

    /// Scan the `_delta_log/` of every table only once `barrier` turns
    /// true (or its sender is gone), listing it again then; everything else
    /// is scanned meanwhile. An erasure passes the end of its log cleanup.
    pub fn with_log_barrier(mut self, barrier: tokio::sync::watch::Receiver<bool>) -> Self {
        self.log_barrier = Some(barrier);
        self
    }

    /// Check that this user's id is nowhere (plaintext search).
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// With [`with_user`](Self::with_user): only the user's rows of this app.
    pub fn with_app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }

    /// Check retention times and holds of this policy.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Whether to append an evidence record (default yes).
    pub fn with_evidence(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// How much of each data file a `--user` search decompresses.
    pub fn with_depth(mut self, depth: Depth) -> Self {
        self.depth = depth;
        self
    }

    /// Objects scanned at once.
    pub fn with_parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }

    /// Progress reporting.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Runs every check; `Ok` even when checks fail (see
    /// [`VerifyReport::passed`]).
    pub async fn execute(self) -> Result<VerifyReport> {
        let started = std::time::Instant::now();
        if self.user.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Usage("--user must not be empty".into()));
        }
        if self.app.is_some() && self.user.is_none() {
            return Err(Error::Usage("--app needs --user".into()));
        }
        let lake = &self.lake;
        crate::require_lake(lake).await?;
        let store = lake.object_store()?;
        let listing: Vec<deltalake::ObjectMeta> = store.list(None).try_collect().await?;

        // Tables: directories with a log. Their referenced files, read after
        // the listing so a file committed meanwhile counts as referenced.
        let names: std::collections::BTreeSet<String> = listing
            .iter()
            .filter_map(|m| {
                let (t, _) = m.location.as_ref().split_once("/_delta_log/")?;
                (!t.contains('/')).then(|| t.to_string())
            })
            .collect();
        // The tombstones are read meanwhile.
        let (loaded, erased) = futures::future::try_join(
            futures::future::try_join_all(names.into_iter().map(|t| async move {
                let files = match lake.table(&t).await? {
                    Some(table) => files::data_files(&table, &t)?,
                    None => Vec::new(),
                };
                Ok::<_, Error>((t, files))
            })),
            async { Ok(erasure::load_erased(lake).await?) },
        )
        .await?;
        let tables: BTreeMap<String, Vec<DataFile>> = loaded.into_iter().collect();
        let referenced: HashMap<String, DataFile> = tables
            .iter()
            .flat_map(|(t, fs)| {
                fs.iter()
                    .map(move |f| (format!("{t}/{}", f.path), f.clone()))
            })
            .collect();

        tracing::debug!(
            objects = listing.len(),
            tables = tables.len(),
            tombstones = erased.len(),
            ms = started.elapsed().as_millis() as u64,
            "listed and loaded tables and tombstones"
        );
        let erased = Arc::new(erased);
        let ctx = Arc::new(Ctx {
            finder: match (&self.user, &self.app) {
                (Some(u), None) => Some(Finder::new(u.as_bytes()).into_owned()),
                _ => None,
            },
            depth: self.depth,
            user_app: match (&self.user, &self.app) {
                (Some(u), Some(a)) => Some((u.clone(), a.clone())),
                _ => None,
            },
            hashes: erased
                .key()
                .filter(|_| !erased.is_empty())
                .cloned()
                .map(HashCache::new),
            erased: (!erased.is_empty()).then(|| erased.clone()),
            cutoffs: self
                .policy
                .as_ref()
                .map(|p| {
                    p.tables
                        .keys()
                        .filter_map(|t| p.cutoff_date(t, self.now).map(|c| (t.clone(), c)))
                        .collect()
                })
                .unwrap_or_default(),
            holds: crate::filters::with_pseudonym_holds(
                self.policy
                    .as_ref()
                    .map_or(self.holds.as_slice(), |p| p.holds.as_slice()),
                erased.key(),
            ),
            table_names: tables.keys().cloned().collect(),
            user: self.user.clone(),
        });

        let is_log = |m: &deltalake::ObjectMeta| {
            m.location
                .as_ref()
                .split_once("/_delta_log/")
                .is_some_and(|(t, _)| !t.contains('/'))
        };
        let (mut listing, later) = match self.log_barrier.clone() {
            Some(barrier) => {
                let (logs, rest): (Vec<_>, Vec<_>) = listing.into_iter().partition(is_log);
                let logs: Vec<String> = logs
                    .iter()
                    .filter_map(|m| m.location.as_ref().split_once("/_delta_log/"))
                    .map(|(t, _)| t.to_string())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                (rest, Some((barrier, logs)))
            }
            None => (listing, None),
        };
        let total_bytes: u64 = listing.iter().map(|m| m.size).sum();
        self.progress.start("verify", total_bytes);
        let scan_started = std::time::Instant::now();
        let scan = |metas: Vec<deltalake::ObjectMeta>| {
            let store = store.clone();
            let ctx = ctx.clone();
            let referenced = &referenced;
            let progress = self.progress.clone();
            futures::stream::iter(metas)
                .map(move |meta| {
                    let store = store.clone();
                    let ctx = ctx.clone();
                    let file = referenced.get(meta.location.as_ref()).cloned();
                    let progress = progress.clone();
                    // One task per object, fetch and check together: the
                    // runtime's workers run them in parallel, and a check
                    // (well under a millisecond for most objects) costs no
                    // handoff to a blocking thread and back.
                    let task = tokio::spawn(async move {
                        let path = meta.location.to_string();
                        // A vanished object (a concurrent purge) reads as empty.
                        let object = match ctx.columns_needed(&path, file.is_some()) {
                            Some(cols) => {
                                object::fetch_columns(
                                    store.as_ref(),
                                    &meta.location,
                                    meta.size,
                                    &cols,
                                )
                                .await?
                            }
                            None => object::fetch_whole(store.as_ref(), &meta.location).await?,
                        };
                        let fetched = object.fetched();
                        let mut r = ctx.check(&path, object, file)?;
                        r.fetched = fetched;
                        progress.advance(meta.size);
                        Ok::<_, Error>(r)
                    });
                    async move {
                        task.await
                            .map_err(|e| Error::Internal(format!("verify task: {e}")))?
                    }
                })
                .buffer_unordered(self.parallelism)
                .try_collect::<Vec<ObjectResult>>()
        };
        let first = scan(listing.clone());
        // The log, once the barrier is passed: listed again.
        let logs = async {
            let Some((mut barrier, tables)) = later else {
                return Ok::<_, Error>((Vec::new(), Vec::new()));
            };
            let _ = barrier.wait_for(|v| *v).await;
            let mut metas = Vec::new();
            for t in tables {
                let prefix = object_store::path::Path::from(format!("{t}/_delta_log/"));
                let got: Vec<deltalake::ObjectMeta> =
                    store.list(Some(&prefix)).try_collect().await?;
                metas.extend(got);
            }
            let results = scan(metas.clone()).await?;
            Ok((metas, results))
        };
        // The evidence chain is read meanwhile.
        let (mut results, (log_metas, log_results), (records, txn)) =
            futures::future::try_join3(first, logs, evidence::read(lake)).await?;
        results.extend(log_results);
        listing.extend(log_metas);
        let total_bytes: u64 = listing.iter().map(|m| m.size).sum();
        self.progress.finish();

        let mut report = VerifyReport {
            objects: listing.len(),
            bytes: total_bytes,
            bytes_read: results.iter().map(|r| r.fetched).sum(),
            ..VerifyReport::default()
        };
        let mut failures: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        // Rows kept under holds make the ids in statistics (the log, the
        // checkpoints) legitimate: for the plaintext user while any of its
        // rows is held, for an erased user (by hash) while any of its are.
        let user_held = results.iter().any(|r| r.held_rows > 0);
        let held_users: HashSet<UserHash> = results
            .iter()
            .flat_map(|r| r.held_users.iter().copied())
            .collect();
        for r in &results {
            for (check, why) in &r.failures {
                failures
                    .entry(check)
                    .or_default()
                    .push(format!("{}: {why}", r.path));
            }
            for (check, why, hash) in &r.unless_held {
                let held = match hash {
                    None => user_held,
                    Some(h) => held_users.contains(h),
                };
                if held {
                    report.held.push(format!(
                        "{}: {why} (statistics of rows under a legal hold)",
                        r.path
                    ));
                } else {
                    failures
                        .entry(check)
                        .or_default()
                        .push(format!("{}: {why}", r.path));
                }
            }
            if r.held_rows > 0 {
                report.held.push(format!(
                    "{}: {} row(s) of erased users kept under a legal hold",
                    r.path, r.held_rows
                ));
            }
            if r.unreferenced {
                report.unreferenced.push(r.path.clone());
            }
        }
        report.held.sort();
        let mut check = |name: &'static str, detail: String| {
            let mut f = failures.remove(name).unwrap_or_default();
            f.sort();
            report.checks.push(Check {
                name: name.to_string(),
                passed: f.is_empty(),
                detail,
                failures: f,
            });
        };
        let scope = format!("{} objects, {} bytes", listing.len(), total_bytes);
        if ctx.finder.is_some() {
            check(
                "erased_user_bytes",
                match self.depth {
                    Depth::Deep => {
                        format!("plaintext id in raw bytes and every decompressed page of {scope}")
                    }
                    Depth::Fast => format!(
                        "plaintext id in raw bytes, the log, and decompressed user_id/raw pages of {scope}"
                    ),
                    Depth::Standard => format!(
                        "plaintext id in raw bytes and the log; decompressed user_id/raw pages of referenced user-table files, every page of any other object; {scope}"
                    ),
                },
            );
        }
        if ctx.user_app.is_some() {
            check(
                "erased_user_rows",
                format!("rows of the user in the app, in every data file of {scope}"),
            );
        }
        if ctx.erased.is_some() {
            check(
                "erased_users_hashed",
                format!(
                    "{} tombstones by keyed hash: user_id/raw columns, log and checkpoint tokens of {scope}",
                    erased.len()
                ),
            );
        }
        if let Some(p) = &self.policy {
            check(
                "retention",
                format!(
                    "{} tables with keep times, {} holds, at {}",
                    p.tables.len(),
                    p.holds.len(),
                    self.now.to_rfc3339()
                ),
            );
        }
        tracing::debug!(
            ms = scan_started.elapsed().as_millis() as u64,
            bytes_read = report.bytes_read,
            "scanned objects"
        );
        let mut chain = evidence::check_chain(&records, txn);
        if let Some((seq, sha)) = &self.anchor {
            match records.iter().find(|r| r.seq == *seq) {
                None => chain.push(format!(
                    "the anchor record {seq} is not in the chain ({} records): records were cut off",
                    records.len()
                )),
                Some(r) if &r.sha256 != sha => chain.push(format!(
                    "record {seq} hashes to {}, not the anchor's {sha}: the chain was rewritten",
                    r.sha256
                )),
                Some(_) => {}
            }
        }
        report.checks.push(Check {
            name: "evidence_chain".into(),
            passed: chain.is_empty(),
            detail: match &self.anchor {
                Some((seq, _)) => format!("{} evidence records, anchor {seq}", records.len()),
                None => format!("{} evidence records", records.len()),
            },
            failures: chain
                .into_iter()
                .map(|f| format!("{}: {f}", evidence::EVIDENCE))
                .collect(),
        });
        report.unreferenced.sort();
        report.seconds = started.elapsed().as_secs_f64();

        if self.record {
            let mut rec = EvidenceRecord::new("verify", self.now);
            rec.recorded_at = self.wall_now.map(crate::evidence::timestamp);
            rec.outcome = if report.passed() { "ok" } else { "failed" }.into();
            rec.policy_sha256 = self.policy.as_ref().map(|p| p.sha256.clone());
            if let Some(u) = &self.user {
                let subject = subject(lake, u, self.app.as_deref()).await?;
                rec.predicates.push(subject.clone());
                rec.subject = Some(subject);
            }
            rec.checks = report.checks.clone();
            rec.metrics = serde_json::json!({
                "objects": report.objects,
                "bytes": report.bytes,
                "unreferenced": report.unreferenced.len(),
                "seconds": report.seconds,
            });
            let (seq, sha) = evidence::append(lake, rec).await?;
            report.evidence_seq = Some(seq);
            report.evidence_sha256 = Some(sha);
        }
        tracing::info!(
            objects = report.objects,
            bytes = report.bytes,
            checks_failed = report.checks.iter().filter(|c| !c.passed).count(),
            passed = report.passed(),
            evidence_seq = report.evidence_seq,
            seconds = report.seconds,
            "verify finished"
        );
        Ok(report)
    }
}

/// How evidence names a user: by keyed hash (never the id). Without a key
/// (nothing ever erased) the id cannot be named safely at all.
pub async fn subject(lake: &Lake, user: &str, app: Option<&str>) -> Result<String> {
    let hash = match ErasureKey::load(lake).await? {
        Some(k) => format!("user_hash = {}", k.hash(user)),
        None => "user_hash = (no erasure key in this lake; not recorded)".into(),
    };
    Ok(match app {
        Some(a) => format!("{hash} AND app_id = {a:?}"),
        None => hash,
    })
}

struct Ctx {
    finder: Option<Finder<'static>>,
    depth: Depth,
    user_app: Option<(String, String)>,
    erased: Option<Arc<ErasedUsers>>,
    hashes: Option<HashCache>,
    cutoffs: HashMap<String, i32>,
    holds: Vec<crate::policy::Hold>,
    table_names: HashSet<String>,
    user: Option<String>,
}

#[derive(Default)]
struct ObjectResult {
    path: String,
    fetched: u64,
    failures: Vec<(&'static str, String)>,
    /// Failures unless rows of the user (`None`: the plaintext `--user`;
    /// else this erased user) are kept under a hold somewhere.
    unless_held: Vec<(&'static str, String, Option<UserHash>)>,
    /// Rows of erased users (or of `--user`) kept under holds here.
    held_rows: u64,
    /// Erased users (by hash) with rows kept under holds here.
    held_users: HashSet<UserHash>,
    unreferenced: bool,
}

impl Ctx {
    /// How deep the plaintext search goes into a data file of `table`:
    /// [`Depth::Standard`] searches the user columns of the referenced files
    /// of user tables, and every column of anything else.
    fn depth_of(&self, table: &str, referenced: bool) -> Depth {
        match self.depth {
            Depth::Standard if referenced && is_user_table(table) => Depth::Fast,
            Depth::Standard => Depth::Deep,
            d => d,
        }
    }

    /// The columns a data file must be read for, when not all of it is
    /// needed (no deep plaintext search); `None`: read the whole object.
    fn columns_needed(&self, path: &str, referenced: bool) -> Option<Vec<&'static str>> {
        let (table, rest) = path.split_once('/')?;
        if !self.table_names.contains(table)
            || rest.starts_with("_delta_log/")
            || !path.ends_with(".parquet")
            || (self.finder.is_some() && self.depth_of(table, referenced) == Depth::Deep)
        {
            return None;
        }
        // What `check` decodes: the user's rows in one app are counted on
        // every filter column (holds match on times too), as are held rows.
        if self.user_app.is_some() || !self.holds.is_empty() {
            return Some(FILTER_COLUMNS.to_vec());
        }
        let mut cols = vec!["user_id", "raw"];
        let by_app = self
            .erased
            .as_ref()
            .is_some_and(|e| e.erased_by_app().next().is_some());
        if by_app {
            cols.push("app_id");
        }
        Some(cols)
    }

    fn check(
        &self,
        path: &str,
        bytes: ObjectBytes,
        file: Option<DataFile>,
    ) -> Result<ObjectResult> {
        let mut out = ObjectResult {
            path: path.to_string(),
            ..ObjectResult::default()
        };
        let (table, in_log) = match path.split_once('/') {
            Some((t, rest)) if self.table_names.contains(t) => {
                (Some(t), rest.starts_with("_delta_log/"))
            }
            _ => (None, false),
        };
        let parquet = bytes.is_parquet();
        let data_file = table.is_some() && !in_log && parquet;
        out.unreferenced = data_file && file.is_none();

        if let Some(f) = &self.finder
            && let Some(place) = scan::find_plain(
                path,
                &bytes,
                f,
                match table {
                    Some(t) if data_file => self.depth_of(t, file.is_some()),
                    _ => Depth::Deep,
                },
            )?
        {
            let why = format!("the user's id in {place}");
            match (&self.user, table) {
                (Some(user), Some(t)) if !self.holds.is_empty() && data_file && file.is_some() => {
                    // Legitimate only if every row of the user here is held.
                    let (mut mine, mut held) = (0, 0);
                    for b in files::decode(path, bytes.clone(), Some(&FILTER_COLUMNS))? {
                        let c = Cols::of(t, &b)?;
                        for i in (0..b.num_rows()).filter(|i| c.is_users(*i, user, None)) {
                            mine += 1;
                            held += u64::from(c.held_by(i, &self.holds).is_some());
                        }
                    }
                    if held > 0 && held == mine {
                        out.held_rows += held;
                    } else if mine > held {
                        out.failures.push((
                            "erased_user_bytes",
                            format!("{} row(s) of the user no hold covers", mine - held),
                        ));
                    } else {
                        out.failures.push(("erased_user_bytes", why));
                    }
                }
                _ if !self.holds.is_empty() && in_log => {
                    out.unless_held.push(("erased_user_bytes", why, None));
                }
                _ => out.failures.push(("erased_user_bytes", why)),
            }
        }
        if let (Some((user, app)), Some(t), true) = (&self.user_app, table, data_file) {
            let holds = &self.holds;
            let n = count_rows(path, t, &bytes, &FILTER_COLUMNS, |c, i| {
                c.is_users(i, user, Some(app)) && c.held_by(i, holds).is_none()
            })?;
            if n > 0 {
                out.failures.push((
                    "erased_user_rows",
                    format!("{n} row(s) of the user in the app"),
                ));
            }
        }
        if let (Some(erased), Some(hashes)) = (&self.erased, &self.hashes) {
            let own = table.is_some_and(|t| t == evidence::EVIDENCE || t == erasure::ERASURES);
            if data_file && !own {
                let t = table.unwrap_or_default();
                let holds: &[crate::policy::Hold] = if file.is_some() { &self.holds } else { &[] };
                let rows = scan::erased_rows_outside_holds(path, t, &bytes, erased, hashes, holds)?;
                if rows.unheld > 0 {
                    out.failures.push((
                        "erased_users_hashed",
                        format!("{} row(s) of erased users", rows.unheld),
                    ));
                }
                // The held rows of a plaintext `--user` who is also erased
                // were counted above already: they are among these.
                let user_counted = self
                    .user
                    .as_deref()
                    .zip(erased.key())
                    .is_some_and(|(u, k)| erased.names_hash(&k.hash(u)));
                if user_counted {
                    out.held_rows = out.held_rows.max(rows.held);
                } else {
                    out.held_rows += rows.held;
                }
                out.held_users.extend(rows.held_users);
            } else if !data_file && let Some(mut needles) = HashedNeedles::new(erased, hashes) {
                let place = if parquet {
                    needles.find_in_parquet_strings(path, &bytes)?
                } else {
                    bytes
                        .parts()
                        .iter()
                        .find_map(|(_, b)| needles.find_in_text(b))
                };
                if let Some((place, hash)) = place {
                    if self.holds.is_empty() {
                        out.failures.push(("erased_users_hashed", place));
                    } else {
                        out.unless_held
                            .push(("erased_users_hashed", place, Some(hash)));
                    }
                }
            }
        }
        if let (Some(t), true) = (table, data_file)
            && let Some(cutoff) = self.cutoffs.get(t)
        {
            let date = file
                .as_ref()
                .and_then(|f| f.date)
                .or_else(|| date_in_path(path));
            if let Some(d) = date.filter(|d| d < cutoff) {
                let day = day_name(d);
                match &file {
                    None => out.failures.push((
                        "retention",
                        format!(
                            "unreferenced data file of day {day}, past retention, still stored"
                        ),
                    )),
                    Some(f) if !self.holds.iter().any(|h| hold_may_cover(h, t, f)) => {
                        out.failures.push((
                            "retention",
                            format!("day {day} is past retention and no hold covers it"),
                        ));
                    }
                    Some(_) => {
                        let n = count_rows(path, t, &bytes, &FILTER_COLUMNS, |c, i| {
                            c.held_by(i, &self.holds).is_none()
                        })?;
                        if n > 0 {
                            out.failures.push((
                                "retention",
                                format!("{n} row(s) of day {day} past retention and not held"),
                            ));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn count_rows(
    path: &str,
    table: &str,
    bytes: &ObjectBytes,
    columns: &[&str],
    pred: impl Fn(&Cols, usize) -> bool,
) -> Result<u64> {
    let mut n = 0;
    for b in files::decode(path, bytes.clone(), Some(columns))? {
        let c = Cols::of(table, &b)?;
        n += (0..b.num_rows()).filter(|i| pred(&c, *i)).count() as u64;
    }
    Ok(n)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_name(days: i32) -> String {
    DateTime::from_timestamp(i64::from(days) * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| days.to_string())
}

/// Whether `table` holds users' data.
pub fn is_user_table(table: &str) -> bool {
    USER_TABLES.contains(&table)
}
