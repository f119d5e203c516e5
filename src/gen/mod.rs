//! `auditlake gen`: deterministic synthetic platform traffic with planted
//! violations.
//!
//! ```text
//! World (apps, developers, users, IPs) ─┬─> script   (planted scenarios + intent)
//!                                       └─> natural  (registrations, user stories)
//!          sorted planned events + drawn API traffic ─> Sim ─> GenSink (files | Kafka)
//!                                                        └──> truth: planted.json
//! ```
//!
//! The same [`GenArgs`] give byte-identical output: every random choice comes
//! from a hand-written PRNG seeded by `--seed`, and nothing depends on hash
//! map order or the clock.
//!
//! # What is written
//!
//! Four JSON-lines topics (SPEC section 2), each roughly in event-time order:
//! `apps` (registrations, updates, terminations), `grants`, `deletions`,
//! `api-access` (`--events` lines). Around the events, in every topic: about
//! `--dup-rate` producer retries (exact copies of a line, at most 300 lines
//! later), `--malformed` lines of each of five kinds (not JSON, JSON but not
//! an object, no `app_id`, a wrong type, a bad time), and two blank lines.
//! A few messages carry unknown extra fields.
//!
//! # The truth
//!
//! `planted.json` lists every finding the data contains when the rules of
//! SPEC section 3 are evaluated at `suggested_now` (= start + days) with the
//! default policy, and every deletion obligation with its state. It is
//! *exact*: the simulator re-derives each finding from the state it keeps,
//! checks it against the scenario's intent, and the reference evaluator in
//! [`reference`] recomputes it from the files alone (see the tests).
//! Event-level findings have one entry per (rule, event).

mod fmt;
mod model;
mod natural;
mod out;
mod plan;
pub mod reference;
mod rng;
mod script;
mod sim;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, ensure};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use out::{
    CountingSink, FILE_BUFFER_BYTES, FileSink, GenSink, MAX_RETRY_DELAY_LINES, MemorySink, Topic,
    TopicStats,
};

pub const DEFAULT_SEED: u64 = 1;
pub const DEFAULT_USERS: usize = 2000;
pub const DEFAULT_APPS: usize = 40;
pub const DEFAULT_DAYS: u32 = 10;
pub const DEFAULT_EVENTS: u64 = 200_000;
pub const DEFAULT_START: &str = "2026-11-01T00:00:00Z";
pub const DEFAULT_DUP_RATE: f64 = 0.02;
pub const DEFAULT_MALFORMED: u32 = 1;

/// The smallest period that holds every planted scenario.
pub const MIN_DAYS: u32 = 6;
pub const MAX_APPS: usize = 1000;
/// `--events` must leave at least this many normal accesses after the planted ones.
pub const MIN_NATURAL_EVENTS: u64 = 1000;

/// Arguments of `auditlake gen`.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Seed of every random choice: the same arguments give byte-identical output.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Users on the platform (at least 400; 64 are kept for planted scenarios).
    #[arg(long, default_value_t = DEFAULT_USERS)]
    pub users: usize,
    /// Apps on the platform (at least 16: the planted scenarios need them).
    #[arg(long, default_value_t = DEFAULT_APPS)]
    pub apps: usize,
    /// Days of traffic (at least 6).
    #[arg(long, default_value_t = DEFAULT_DAYS)]
    pub days: u32,
    /// api-access events, planted ones included (before duplicates and malformed lines).
    #[arg(long, default_value_t = DEFAULT_EVENTS)]
    pub events: u64,
    /// Start of the first day: RFC 3339 date-time or a date (UTC); truncated to the second.
    #[arg(long, default_value = DEFAULT_START, value_parser = parse_start)]
    pub start: DateTime<Utc>,
    /// Output directory for the JSON-lines files, manifest.json and planted.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Share of lines repeated as producer retries, in every topic (0 to 0.5).
    #[arg(long, default_value_t = DEFAULT_DUP_RATE, value_parser = parse_rate)]
    pub dup_rate: f64,
    /// Malformed lines per topic and per kind (five kinds).
    #[arg(long, default_value_t = DEFAULT_MALFORMED)]
    pub malformed: u32,
}

impl Default for GenArgs {
    fn default() -> Self {
        GenArgs {
            seed: DEFAULT_SEED,
            users: DEFAULT_USERS,
            apps: DEFAULT_APPS,
            days: DEFAULT_DAYS,
            events: DEFAULT_EVENTS,
            start: parse_start(DEFAULT_START).expect("valid default"),
            out: None,
            dup_rate: DEFAULT_DUP_RATE,
            malformed: DEFAULT_MALFORMED,
        }
    }
}

/// Parses `--start`: an RFC 3339 date-time (any offset) or a plain date.
pub fn parse_start(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc())
        .map_err(|_| format!("{s:?} is neither an RFC 3339 date-time nor a YYYY-MM-DD date"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (0.0..=0.5).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0..=0.5"))
    }
}

impl GenArgs {
    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            self.users >= model::MIN_USERS,
            "--users must be at least {}",
            model::MIN_USERS
        );
        ensure!(
            (model::MIN_APPS..=MAX_APPS).contains(&self.apps),
            "--apps must be between {} and {MAX_APPS}",
            model::MIN_APPS
        );
        ensure!(self.days >= MIN_DAYS, "--days must be at least {MIN_DAYS}");
        ensure!(self.days <= 3660, "--days must be at most 3660");
        ensure!(
            (0.0..=0.5).contains(&self.dup_rate),
            "--dup-rate must be within 0..=0.5"
        );
        Ok(())
    }

    /// Start in UTC milliseconds, truncated to the second.
    fn start_ms(&self) -> i64 {
        let ms = self.start.timestamp_millis();
        ms - ms.rem_euclid(1000)
    }
}

/// One finding that the generated data contains (SPEC section 3 semantics,
/// default policy, evaluated at `suggested_now`). Fields that do not apply are null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedFinding {
    pub rule_id: String,
    pub app_id: String,
    pub developer_id: String,
    pub user_id: Option<String>,
    /// Event-level rules: the one breaking event. `bulk_harvest`: every data
    /// access of the app in the hour. `deletion_overdue`: the event that
    /// started the obligation. `unused_scope`: empty.
    pub event_ids: Vec<String>,
    /// `unused_scope`; and the `required_scope` for the scope rules.
    pub scope: Option<String>,
    /// `deletion_overdue`.
    pub reason: Option<String>,
    /// `client_id_sharing`.
    pub client_ip: Option<String>,
    /// Event-level rules.
    pub event_time: Option<String>,
    /// `bulk_harvest` and `client_id_sharing`: the clock hour; `unused_scope`: the 30 days.
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    /// `deletion_overdue`.
    pub created_at: Option<String>,
    pub due_at: Option<String>,
    pub note: String,
}

impl PlantedFinding {
    /// The finding's identity for comparisons (see [`reference::finding_key`]):
    /// event-level rules by event id, `bulk_harvest` by app and hour,
    /// `unused_scope` by app and scope, `deletion_overdue` by source event.
    pub fn key(&self) -> String {
        reference::finding_key(
            &self.rule_id,
            &self.app_id,
            self.user_id.as_deref(),
            &self.event_ids,
            self.scope.as_deref(),
            self.window_start.as_deref(),
        )
    }
}

/// One deletion obligation (SPEC section 4) and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedObligation {
    pub app_id: String,
    /// Null: every user of the app.
    pub user_id: Option<String>,
    pub reason: String,
    pub created_at: String,
    pub due_at: String,
    pub fulfilled_at: Option<String>,
    /// State at `suggested_now`.
    pub state: String,
    pub source_event_id: String,
    /// Evaluation time -> state (at `suggested_now` and 3 days later).
    pub expected_state_at: BTreeMap<String, String>,
    pub note: String,
}

/// A planted edge case that must *not* produce a finding (or an obligation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedClean {
    pub topic: Topic,
    pub event_id: String,
    pub note: String,
}

/// The content of `planted.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planted {
    /// The evaluation time the findings hold at (start + days).
    pub suggested_now: String,
    pub findings: Vec<PlantedFinding>,
    /// Every obligation in the data, planted or from normal user stories.
    pub obligations: Vec<PlantedObligation>,
    pub expected_clean: Vec<ExpectedClean>,
}

/// The arguments as recorded in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestArgs {
    pub seed: u64,
    pub users: usize,
    pub apps: usize,
    pub days: u32,
    pub events: u64,
    pub start: String,
    pub dup_rate: f64,
    pub malformed: u32,
}

/// The content of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub generator: String,
    pub args: ManifestArgs,
    /// First and last instant of the period (end exclusive).
    pub start: String,
    pub end: String,
    /// Evaluate rules here (`detect --now`) to get exactly `planted.json`.
    pub suggested_now: String,
    /// Per topic name.
    pub topics: BTreeMap<String, TopicStats>,
    /// Per topic name, the file name in the output directory.
    pub files: BTreeMap<String, String>,
    /// Findings in `planted.json` per rule id.
    pub findings_by_rule: BTreeMap<String, usize>,
    /// Obligations in `planted.json` per state at `suggested_now`.
    pub obligations_by_state: BTreeMap<String, usize>,
}

/// What [`generate`] produced.
#[derive(Debug, Clone)]
pub struct GenReport {
    pub manifest: Manifest,
    pub planted: Planted,
}

/// Generates the four topics into `sink`, in generation order (roughly event time).
pub fn generate(args: &GenArgs, sink: &mut dyn GenSink) -> anyhow::Result<GenReport> {
    args.validate()?;
    let start = args.start_ms();
    let world = model::World::build(
        args.seed,
        args.users,
        args.apps,
        start,
        args.days,
        args.events,
    );

    let mut pairs = plan::Pairs::default();
    for (a, app) in world.apps.iter().enumerate() {
        pairs.base_start.push(pairs.states.len() as u32);
        for &u in &app.base {
            pairs.get_or_add(a as u32, u);
        }
    }
    pairs.natural = pairs.states.len() as u32;

    let mut ids = plan::Ids::new(args.seed);
    let mut seq = 0u32;
    let script = script::Builder::new(&world, &mut pairs, &mut ids, &mut seq, args.seed).build();
    let planted_accesses = script
        .evs
        .iter()
        .filter(|e| e.topic() == Topic::ApiAccess)
        .count() as u64;
    ensure!(
        args.events >= planted_accesses + MIN_NATURAL_EVENTS,
        "--events must be at least {} ({planted_accesses} planted accesses + {MIN_NATURAL_EVENTS})",
        planted_accesses + MIN_NATURAL_EVENTS
    );
    let natural_events = args.events - planted_accesses;
    let mut evs = script.evs;
    natural::build(
        &world,
        &script.plans,
        &pairs,
        &mut ids,
        &mut seq,
        args.seed,
        &mut evs,
    );
    evs.sort_by_key(|e| (e.time, e.rank(), e.seq));

    let sim = sim::Sim::new(
        &world,
        args.seed,
        &script.metas,
        &script.harvests,
        &pairs,
        &evs,
        ids,
        natural_events,
        args.dup_rate,
        args.malformed,
    );
    let outcome = sim.run(&evs, natural_events, sink)?;

    let now = fmt::time_string(world.end);
    let mut findings_by_rule: BTreeMap<String, usize> =
        plan::RULES.iter().map(|r| (r.to_string(), 0)).collect();
    for f in &outcome.findings {
        *findings_by_rule.entry(f.rule_id.clone()).or_default() += 1;
    }
    let mut obligations_by_state: BTreeMap<String, usize> = [
        "open",
        "fulfilled",
        "fulfilled_late",
        "overdue",
        "not_effective",
    ]
    .iter()
    .map(|s| (s.to_string(), 0))
    .collect();
    for o in &outcome.obligations {
        *obligations_by_state.entry(o.state.clone()).or_default() += 1;
    }
    let manifest = Manifest {
        generator: format!("auditlake gen {}", env!("CARGO_PKG_VERSION")),
        args: ManifestArgs {
            seed: args.seed,
            users: args.users,
            apps: args.apps,
            days: args.days,
            events: args.events,
            start: fmt::time_string(start),
            dup_rate: args.dup_rate,
            malformed: args.malformed,
        },
        start: fmt::time_string(start),
        end: now.clone(),
        suggested_now: now.clone(),
        topics: Topic::ALL
            .iter()
            .map(|t| (t.name().to_string(), outcome.stats[t.index()]))
            .collect(),
        files: Topic::ALL
            .iter()
            .map(|t| (t.name().to_string(), t.file_name().to_string()))
            .collect(),
        findings_by_rule,
        obligations_by_state,
    };
    Ok(GenReport {
        manifest,
        planted: Planted {
            suggested_now: now,
            findings: outcome.findings,
            obligations: outcome.obligations,
            expected_clean: outcome.clean,
        },
    })
}

/// Writes `DIR/{api-access,grants,apps,deletions}.jsonl`, `DIR/manifest.json`
/// and `DIR/planted.json` (`DIR` = `--out`, required).
pub fn run_to_files(args: &GenArgs) -> anyhow::Result<GenReport> {
    let dir = args
        .out
        .as_deref()
        .context("gen: --out DIR is required to write files")?;
    let mut sink = FileSink::create(dir)?;
    let report = generate(args, &mut sink)?;
    sink.finish()?;
    let write = |name: &str, json: Vec<u8>| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
    };
    write(
        "manifest.json",
        serde_json::to_vec_pretty(&report.manifest)?,
    )?;
    write("planted.json", serde_json::to_vec_pretty(&report.planted)?)?;
    Ok(report)
}
