//! `auditlake retention sweep | erase | verify`: retention policy sweeps,
//! physical erasure of a user, and verification with evidence.
//!
//! Exit codes: 0 success; 2 a verification check failed (the report names
//! each failing object); 64 a command line that does not parse; 1 any other
//! error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use auditlake_retention::scan::Depth;
use auditlake_retention::{Erase, Policy, Progress, Sweep, Verify, VerifyReport};
use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args as ClapArgs, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::LakeArgs;

/// `println!` that ignores a closed stdout (`| head`) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(super::stdout(), $($t)*);
    }};
}

/// Exit code of a run whose verification failed.
pub const EXIT_VERIFY_FAILED: u8 = 2;

/// Retention: sweep by policy, erase a user, verify what must be gone is gone.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Delete what is past its retention (except legal holds), finish pending
    /// erasures, purge, verify and record evidence.
    Sweep(SweepArgs),
    /// Erase every row of one user from every table, physically, and prove it.
    Erase(EraseArgs),
    /// Read back every object under the lake root and check erasures,
    /// retention and the evidence chain; exit 2 if a check fails.
    Verify(VerifyArgs),
}

#[derive(Debug, Clone, ClapArgs)]
struct Common {
    #[command(flatten)]
    lake: LakeArgs,
    /// The time retention is judged at (RFC 3339); default: now.
    #[arg(long, env = "AUDITLAKE_NOW", value_parser = parse_time)]
    now: Option<DateTime<Utc>>,
    /// Print the full report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, ClapArgs)]
struct SweepArgs {
    #[command(flatten)]
    common: Common,
    /// The retention policy (TOML): keep times, deadlines, legal holds.
    #[arg(long, env = "AUDITLAKE_RETENTION_POLICY")]
    policy: PathBuf,
    /// Print what would be deleted (tables, partitions, files, rows, bytes); change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Leave unreferenced, never-committed files younger than this alone
    /// (a concurrent writer's file awaiting its commit), e.g. 1h, 30m.
    #[arg(long, default_value = "1h", value_parser = parse_grace, env = "AUDITLAKE_ORPHAN_GRACE")]
    orphan_grace: TimeDelta,
}

#[derive(Debug, ClapArgs)]
struct EraseArgs {
    #[command(flatten)]
    common: Common,
    /// The user id to erase (it is never written to the lake; evidence names
    /// the user by keyed hash). `-` reads it from the first line of stdin,
    /// keeping it out of process listings and shell history. An erased
    /// user's pseudonym (`erased:<hash>`, the user_id of their events after
    /// an erasure) erases those rows when the id itself is not known.
    #[arg(long)]
    user: String,
    /// Erase only the user's rows of this app.
    #[arg(long)]
    app: Option<String>,
    /// Why: user_request, platform_order, unsubscribe, revoke or termination.
    #[arg(long, value_parser = ["user_request", "platform_order", "unsubscribe", "revoke", "termination"])]
    reason: Option<String>,
    /// A policy whose legal holds the erasure must honour.
    #[arg(long, env = "AUDITLAKE_RETENTION_POLICY")]
    policy: Option<PathBuf>,
    /// How the verification after the erasure searches data files:
    /// standard (user_id and raw pages of referenced user-table files, every
    /// page of anything else), deep (every column's pages everywhere) or
    /// fast (user_id and raw pages only).
    #[arg(long, default_value = "standard")]
    scan: Depth,
    /// See `sweep --orphan-grace`.
    #[arg(long, default_value = "1h", value_parser = parse_grace, env = "AUDITLAKE_ORPHAN_GRACE")]
    orphan_grace: TimeDelta,
}

#[derive(Debug, ClapArgs)]
struct VerifyArgs {
    #[command(flatten)]
    common: Common,
    /// Check that this user's id (in plaintext) is in no object at all
    /// (`-`: read it from stdin). Without it, erased users are checked by
    /// keyed hash only.
    #[arg(long)]
    user: Option<String>,
    /// With --user: check only that no row of the user in this app remains.
    #[arg(long, requires = "user")]
    app: Option<String>,
    /// Check keep times and legal holds of this policy too.
    #[arg(long, env = "AUDITLAKE_RETENTION_POLICY")]
    policy: Option<PathBuf>,
    /// With --user: standard decompresses the user_id and raw pages of the
    /// files the user tables reference and every page of anything else
    /// (unreferenced files, other tables); deep every column's pages of
    /// every object (also finds the id written inside other users' rows);
    /// fast only user_id and raw pages. All read every object's raw bytes,
    /// statistics and the whole log.
    #[arg(long, default_value = "standard")]
    scan: Depth,
    /// Do not append an evidence record.
    #[arg(long)]
    no_evidence: bool,
    /// An evidence record an earlier run printed, kept outside the lake
    /// (SEQ:SHA256): the chain must still hold it unchanged, which shows
    /// newest records cut off together with their log entries.
    #[arg(long, value_name = "SEQ:SHA256", value_parser = parse_anchor, env = "AUDITLAKE_EVIDENCE_ANCHOR")]
    evidence_anchor: Option<(i64, String)>,
}

fn parse_anchor(s: &str) -> Result<(i64, String), String> {
    let (seq, sha) = s.split_once(':').ok_or_else(|| {
        format!("{s:?}: expected SEQ:SHA256, as `evidence record` lines print it")
    })?;
    let seq: i64 = seq
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| format!("{s:?}: SEQ must be a record number (0, 1, ...)"))?;
    let sha = sha.trim();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?}: SHA256 must be 64 hex digits"));
    }
    Ok((seq, sha.to_ascii_lowercase()))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-20T00:00:00Z): {e}"))
}

fn parse_grace(s: &str) -> Result<TimeDelta, String> {
    auditlake_retention::policy::parse_duration(s)
}

/// The user id argument, or the first line of stdin for `-`.
fn user_id(arg: String) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the user id from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn load_policy(path: &std::path::Path) -> anyhow::Result<Policy> {
    // The error already names the file and line.
    Ok(Policy::load(path)?)
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.verb {
        Verb::Sweep(a) => sweep(a).await,
        Verb::Erase(a) => erase(a).await,
        Verb::Verify(a) => verify(a).await,
    }
}

async fn sweep(a: SweepArgs) -> anyhow::Result<ExitCode> {
    // Validate the policy before touching the lake.
    let policy = load_policy(&a.policy)?;
    let lake = a.common.lake.open_existing()?;
    let wall = Utc::now();
    let now = a.common.now.unwrap_or(wall);
    let report = Sweep::new(lake, policy, now)
        .with_dry_run(a.dry_run)
        .with_orphan_grace(a.orphan_grace)
        .with_wall_clock(wall)
        .with_progress(Arc::new(Bar::default()))
        .execute()
        .await?;
    if a.common.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if report.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        for (table, t) in &report.tables {
            let bytes: u64 = t.rewrite.retired.iter().map(|f| f.bytes).sum();
            if t.keeps_from.is_some() || t.rewrite.rows_removed > 0 {
                outln!(
                    "{table}: {verb} {} rows in {} files ({bytes} bytes) over {} partitions{}",
                    t.rewrite.rows_removed,
                    t.rewrite.retired.len(),
                    t.rewrite.partitions.len(),
                    t.keeps_from
                        .as_ref()
                        .map(|d| format!("; keeps from {d}"))
                        .unwrap_or_default()
                );
            } else {
                outln!("{table}: no keep time (rows kept)");
            }
            if report.dry_run {
                for p in &t.rewrite.partitions {
                    outln!("  {table}/{p}");
                }
            }
            if let Some(c) = t.cluster.as_ref().filter(|c| !c.partitions.is_empty()) {
                outln!(
                    "  {} {} partitions by user: {} files ({} bytes) -> {}",
                    if report.dry_run {
                        "would cluster"
                    } else {
                        "clustered"
                    },
                    c.partitions.len(),
                    c.files_removed.len(),
                    c.bytes_read,
                    if report.dry_run {
                        "files of the target size".to_string()
                    } else {
                        format!("{} files ({} bytes)", c.files_added, c.bytes_written)
                    }
                );
            }
            let purged: Vec<_> = t
                .purge
                .deleted
                .iter()
                .filter(|o| o.why != "would retire")
                .collect();
            if !purged.is_empty() {
                outln!(
                    "  {} {} objects from the store ({} bytes)",
                    if report.dry_run {
                        "would remove"
                    } else {
                        "removed"
                    },
                    purged.len(),
                    purged.iter().map(|o| o.bytes).sum::<u64>()
                );
            }
        }
        if report.erasures > 0 {
            outln!("applied {} erasure tombstones", report.erasures);
        }
        if let Some(v) = &report.verify {
            print_verify(v);
        }
        print_evidence(report.evidence_seq, report.evidence_sha256.as_deref());
    }
    Ok(exit(report.passed()))
}

async fn erase(a: EraseArgs) -> anyhow::Result<ExitCode> {
    let policy = a.policy.as_deref().map(load_policy).transpose()?;
    let lake = a.common.lake.open_existing()?;
    let wall = Utc::now();
    let now = a.common.now.unwrap_or(wall);
    let (outcome, metrics) = Erase::new(lake, user_id(a.user)?, now)
        .with_app(a.app)
        .with_reason(a.reason)
        .with_policy(policy)
        .with_orphan_grace(a.orphan_grace)
        .with_wall_clock(wall)
        .with_verify_depth(a.scan)
        .with_progress(Arc::new(Bar::default()))
        .execute()
        .await
        .context("erase")?;
    if a.common.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "outcome": outcome,
                "metrics": metrics,
            }))?
        );
    } else {
        outln!(
            "erased user {} ({}): {} rows removed, {} of {} files rewritten, {} objects deleted",
            outcome.user_hash,
            outcome.erasure_id,
            metrics.rows_removed(),
            metrics.files_rewritten(),
            metrics.files_total,
            metrics
                .purges
                .values()
                .map(|p| p.deleted.len())
                .sum::<usize>()
        );
        for (table, rows) in &outcome.rows_removed {
            outln!("  {table}: {rows} rows");
        }
        for h in &outcome.held {
            outln!(
                "  pending: {} rows of {} kept under the legal hold at policy line {} ({:?}); the first sweep after the hold is lifted erases them",
                h.rows,
                h.table,
                h.hold_line,
                h.hold_reason
            );
        }
        outln!(
            "  rewrite {:.2} s, purge {:.2} s, verify {:.2} s",
            metrics.seconds_rewrite,
            metrics.seconds_purge,
            metrics.seconds_verify
        );
        if let Some(v) = &outcome.verify {
            print_verify(v);
        }
        print_evidence(outcome.evidence_seq, outcome.evidence_sha256.as_deref());
    }
    Ok(exit(outcome.passed()))
}

async fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = a.policy.as_deref().map(load_policy).transpose()?;
    let lake = a.common.lake.open_existing()?;
    let wall = Utc::now();
    let now = a.common.now.unwrap_or(wall);
    let mut v = Verify::new(lake, now)
        .with_wall_clock(wall)
        .with_evidence(!a.no_evidence)
        .with_depth(a.scan)
        .with_progress(Arc::new(Bar::default()));
    if let Some(u) = a.user {
        v = v.with_user(user_id(u)?);
    }
    if let Some(app) = a.app {
        v = v.with_app(app);
    }
    if let Some((seq, sha)) = a.evidence_anchor {
        v = v.with_evidence_anchor(seq, sha);
    }
    if let Some(p) = policy {
        v = v.with_policy(p);
    }
    let report = v.execute().await?;
    if a.common.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_verify(&report);
        print_evidence(report.evidence_seq, report.evidence_sha256.as_deref());
    }
    Ok(exit(report.passed()))
}

/// The evidence record written, as the anchor a later verify takes.
fn print_evidence(seq: Option<i64>, sha256: Option<&str>) {
    if let (Some(seq), Some(sha)) = (seq, sha256) {
        outln!("evidence record {seq} (anchor for a later verify: --evidence-anchor {seq}:{sha})");
    }
}

fn print_verify(v: &VerifyReport) {
    outln!(
        "verify: {} objects, {} bytes read in {:.2} s",
        v.objects,
        v.bytes,
        v.seconds
    );
    for c in &v.checks {
        outln!(
            "  {} {}: {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
        for f in &c.failures {
            outln!("    {f}");
        }
    }
    for h in &v.held {
        outln!("  held: {h}");
    }
    if !v.unreferenced.is_empty() {
        outln!(
            "  note: {} unreferenced data files (removed by the next sweep once older than the grace)",
            v.unreferenced.len()
        );
    }
}

fn exit(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_VERIFY_FAILED)
    }
}

/// One progress bar per step, drawn only when stderr is a terminal.
#[derive(Default)]
struct Bar(Mutex<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, step: &str, total: u64) {
        let bar = ProgressBar::new(total);
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let template = if step == "verify" {
            "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{prefix:>8} [{bar:30}] {pos}/{len} tables"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(step.to_string());
        *self.0.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &*self.0.lock().expect("progress lock") {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.0.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}
