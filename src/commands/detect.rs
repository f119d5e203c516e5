//! `auditlake detect`: evaluate every detection rule at `--now`, replace the
//! `findings` and `obligations` tables, print the findings.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auditlake_query::{Detect, ObligationPolicy};
use auditlake_schemas::tables;
use chrono::{DateTime, Utc};
use clap::Args as ClapArgs;

use super::LakeArgs;

/// How `detect` prints findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One JSON object per finding (SPEC fields, RFC 3339 UTC times).
    Jsonl,
    /// An aligned text table.
    Table,
    /// Nothing on stdout (the tables are still written).
    None,
}

/// Run the detection rules, write findings and obligations.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    lake: LakeArgs,
    /// Evaluation time (RFC 3339): only events at or before it count; the same
    /// lake and the same --now give the same findings. Default: now.
    #[arg(long, env = "AUDITLAKE_NOW", value_parser = parse_time)]
    now: Option<DateTime<Utc>>,
    /// Output on stdout.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: OutputFormat,
    /// Run only this rule (repeatable); findings of other rules are kept.
    #[arg(long = "rule", value_name = "ID")]
    rules_only: Vec<String>,
    /// Directory of `<id>.sql` rule files that add to or replace the built-in rules.
    #[arg(long = "rules", value_name = "DIR", env = "AUDITLAKE_RULES")]
    rules_dir: Option<PathBuf>,
    /// Report only findings at or after this time (RFC 3339); earlier
    /// findings in the table are kept.
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Client regions to which personal data may go without export approval
    /// (comma-separated). Default: the policy file's, else CN.
    #[arg(long, value_delimiter = ',', env = "AUDITLAKE_ALLOWED_REGIONS")]
    allowed_regions: Option<Vec<String>>,
    /// Retention policy file: its [deadlines] set the obligation deadlines and
    /// its allowed regions the default of --allowed-regions.
    #[arg(long, value_name = "FILE", env = "AUDITLAKE_POLICY")]
    policy: Option<PathBuf>,
    /// Obligation deadline override, REASON=HOURS (repeatable), e.g. user_request=48.
    #[arg(long = "deadline", value_name = "REASON=HOURS", value_parser = parse_deadline)]
    deadlines: Vec<(String, i64)>,
    /// Evaluate and print, but write neither table.
    #[arg(long)]
    dry_run: bool,
    /// Print the run's metrics as JSON on stderr at the end.
    #[arg(long)]
    metrics: bool,
    /// Read api_access from Parquet in every rule instead of once into memory
    /// (less memory, more time).
    #[arg(long)]
    no_materialize: bool,
    /// Memory for keeping the calls up to --now in memory for the run (e.g.
    /// 2GiB); a lake with more is read per rule instead.
    #[arg(long, value_name = "SIZE", value_parser = super::parse_size, env = "AUDITLAKE_DETECT_MEMORY")]
    materialize_budget: Option<u64>,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!("{s:?} is not an RFC 3339 time with offset ({e}), e.g. 2026-11-11T00:00:00Z")
        })
}

/// Longest deadline `--deadline` takes: ten years, in hours (longer ones
/// would overflow the time arithmetic and mean "never" anyway).
const MAX_DEADLINE_HOURS: i64 = 10 * 366 * 24;

fn parse_deadline(s: &str) -> Result<(String, i64), String> {
    let (reason, hours) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected REASON=HOURS, e.g. user_request=48"))?;
    let reason = reason.trim();
    let known = auditlake_retention::policy::DEFAULT_DEADLINES_HOURS.map(|(r, _)| r);
    if !known.contains(&reason) {
        return Err(format!(
            "{s:?}: unknown obligation reason {reason:?}; expected one of: {}",
            known.join(", ")
        ));
    }
    let hours: i64 = hours
        .trim()
        .parse()
        .ok()
        .filter(|h| (1..=MAX_DEADLINE_HOURS).contains(h))
        .ok_or_else(|| {
            format!("{s:?}: hours must be a whole number from 1 to {MAX_DEADLINE_HOURS}")
        })?;
    Ok((reason.to_string(), hours))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    // The only clock read of a run: the default evaluation time.
    let now = args.now.unwrap_or_else(Utc::now);
    let lake = args.lake.open_existing()?;
    let inputs = [
        tables::API_ACCESS,
        tables::GRANTS,
        tables::APPS,
        tables::DELETIONS,
    ];
    let present = lake.existing_tables(&inputs).await?;
    if present.is_empty() {
        anyhow::bail!(
            "lake {lake} holds none of the tables {}; ingest something first (auditlake ingest --help)",
            inputs.join(", ")
        );
    }
    // Accesses judged against no grants or no app declarations would all be
    // findings (scope_not_granted, undeclared_scope, ...): refuse rather than
    // replace `findings` with that.
    let missing: Vec<&str> = [tables::GRANTS, tables::APPS]
        .into_iter()
        .filter(|t| !present.contains(t))
        .collect();
    if present.contains(&tables::API_ACCESS) && !missing.is_empty() {
        anyhow::bail!(
            "lake {lake} holds api_access but no {} table: every access would be judged against \
             no {}, and flagged; ingest the {} topic(s) first (auditlake ingest --input TOPIC=FILE \
             or --brokers)",
            missing.join(" or "),
            missing
                .iter()
                .map(|t| if *t == tables::GRANTS {
                    "grants"
                } else {
                    "app declarations"
                })
                .collect::<Vec<_>>()
                .join(" and "),
            missing.join(", ")
        );
    }
    let mut policy = ObligationPolicy::default();
    let mut regions: Vec<String> = auditlake_query::detect::DEFAULT_ALLOWED_REGIONS
        .iter()
        .map(|r| r.to_string())
        .collect();
    if let Some(path) = &args.policy {
        let file = auditlake_retention::Policy::load(path)
            .with_context(|| format!("loading policy {}", path.display()))?;
        policy = policy.with_deadlines(file.deadlines.clone());
        regions = file.allowed_regions.clone();
    }
    let policy = policy.with_deadlines(
        args.deadlines
            .iter()
            .map(|(r, h)| (r.clone(), chrono::Duration::hours(*h))),
    );
    let regions = match args.allowed_regions.clone() {
        // Region codes as the gateway writes them: ISO 3166-1 alpha-2, upper case.
        Some(given) => given
            .iter()
            .map(|r| {
                let code = r.trim().to_ascii_uppercase();
                if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
                    Ok(code)
                } else {
                    Err(anyhow::anyhow!(
                        "--allowed-regions: {r:?} is not an ISO 3166-1 alpha-2 region (e.g. CN)"
                    ))
                }
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => regions,
    };
    let mut detect = Detect::new(lake.clone())
        .with_now(now)
        .with_rules_only(args.rules_only.clone())
        .with_since(args.since)
        .with_policy(policy)
        .with_allowed_regions(regions.iter().cloned())
        .with_write(!args.dry_run)
        .with_materialize_budget(if args.no_materialize {
            0
        } else {
            args.materialize_budget
                .map_or(auditlake_query::detect::DEFAULT_MATERIALIZE_BUDGET, |b| {
                    usize::try_from(b).unwrap_or(usize::MAX)
                })
        });
    if let Some(dir) = &args.rules_dir {
        detect = detect.with_rules_dir(dir)?;
    }
    let (findings, metrics) = detect
        .execute()
        .await
        .with_context(|| format!("detect over lake {lake}"))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, super::stdout());
    let written = match args.format {
        OutputFormat::Jsonl => findings.write_jsonl(&mut out),
        OutputFormat::Table => findings.write_table(&mut out),
        OutputFormat::None => Ok(()),
    }
    .map_err(anyhow::Error::from)
    .and_then(|()| Ok(out.flush()?));
    // Written even when the reader went away (`| head`) or the output failed.
    if args.metrics {
        eprintln!("{}", serde_json::to_string(&metrics)?);
    }
    written?;
    Ok(ExitCode::SUCCESS)
}
