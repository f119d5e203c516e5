//! `auditlake ingest`: JSON-lines backfill (`--input TOPIC=PATH`) or a Kafka
//! consumer group (`--brokers HOST:PORT --group ID`) until SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use auditlake_ingest::{Backfill, BackfillReport, MemoryBudget, Progress, SinkStats};
use auditlake_schemas::Topic;
use auditlake_schemas::lake::WriteOptions;
use clap::Args as ClapArgs;
use indicatif::{ProgressBar, ProgressStyle};

use super::{LakeArgs, parse_size};

/// Ingest topics into the lake.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    lake: LakeArgs,
    /// Backfill: read a JSON-lines file as the topic's messages (repeatable),
    /// e.g. `--input api-access=d/api-access.jsonl`. Blank lines are skipped.
    #[arg(long = "input", value_name = "TOPIC=PATH", value_parser = parse_input, required_unless_present = "brokers", conflicts_with = "brokers")]
    inputs: Vec<(Topic, PathBuf)>,
    /// Kafka bootstrap servers: consume the four topics until SIGINT/SIGTERM.
    #[arg(long, env = "AUDITLAKE_BROKERS", requires = "group")]
    brokers: Option<String>,
    /// Kafka consumer group; run several `ingest` processes with the same group to scale out.
    #[arg(long, env = "AUDITLAKE_GROUP")]
    group: Option<String>,
    /// Kafka topic name of a topic, if not the default (repeatable), e.g. `api-access=gw.access`.
    #[arg(long = "topic", value_name = "TOPIC=NAME", value_parser = parse_topic_name)]
    topic_names: Vec<(Topic, String)>,
    /// Commit buffered data at least this often, even if little (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration, env = "AUDITLAKE_FLUSH_INTERVAL")]
    flush_interval: std::time::Duration,
    /// Memory the ingest may use (peak RSS): sizes the flush buffers and the
    /// dedupe index; the summary reports the peak against it.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, env = "AUDITLAKE_MEMORY_LIMIT")]
    memory_limit: u64,
    /// Commit when a topic's buffer holds this many Arrow bytes; default (and
    /// maximum) a twelfth of --memory-limit for backfill, a sixteenth per
    /// topic for Kafka.
    #[arg(long, value_parser = parse_size, env = "AUDITLAKE_FLUSH_BYTES")]
    flush_bytes: Option<u64>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9464.
    #[arg(long, env = "AUDITLAKE_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Read every partition from its beginning, not from the lake's offsets (a
    /// deliberate replay: duplicates are dropped, erased users stay erased).
    #[arg(long, requires = "brokers")]
    replay_from_beginning: bool,
    /// Stop (after a final commit) once no message arrived for this long.
    #[arg(long, value_parser = parse_duration)]
    stop_when_idle: Option<std::time::Duration>,
    /// Static group membership (`group.instance.id`): a restarted member with the
    /// same id takes its partitions back at once instead of waiting for the
    /// broker to expire the old session. Give each process of a group its own.
    #[arg(long, env = "AUDITLAKE_INSTANCE_ID")]
    instance_id: Option<String>,
    /// Extra librdkafka setting (repeatable), e.g. `security.protocol=SSL`.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = parse_kv)]
    kafka_config: Vec<(String, String)>,
    /// Target size of a data file.
    #[arg(long, default_value = "128MiB", value_parser = parse_size, env = "AUDITLAKE_TARGET_FILE_SIZE")]
    target_file_size: u64,
    /// Maximum rows per Parquet row group.
    #[arg(long, default_value_t = auditlake_schemas::lake::DEFAULT_ROW_GROUP_ROWS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    row_group_rows: u64,
    /// Maximum rows per Parquet data page (the unit a page index prunes).
    #[arg(long, default_value_t = auditlake_schemas::lake::DEFAULT_PAGE_ROWS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    page_rows: u64,
    /// zstd level of data files (1-22).
    #[arg(long, default_value_t = auditlake_schemas::lake::DEFAULT_ZSTD_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd_level: i32,
    /// Rows buffered per topic before a commit (bounds memory); default 2000000
    /// for backfill, 500000 for Kafka.
    #[arg(long)]
    flush_rows: Option<usize>,
    /// Print the report as JSON on stdout instead of a summary line.
    #[arg(long)]
    json: bool,
}

fn parse_topic_name(s: &str) -> Result<(Topic, String), String> {
    let (topic, name) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not TOPIC=NAME (e.g. api-access=gw.access)"))?;
    let topic: Topic = topic.parse().map_err(|e| format!("{e}"))?;
    if name.is_empty() {
        return Err(format!("{s:?}: empty topic name"));
    }
    Ok((topic, name.to_string()))
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

/// Parses `5s`, `500ms`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 5s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

fn parse_input(s: &str) -> Result<(Topic, PathBuf), String> {
    let (topic, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not TOPIC=PATH (e.g. api-access=access.jsonl)"))?;
    let topic: Topic = topic.parse().map_err(|e| format!("{e}"))?;
    if path.is_empty() {
        return Err(format!("{s:?}: empty path"));
    }
    Ok((topic, PathBuf::from(path)))
}

impl Args {
    /// Whether this is a file backfill (`--input`) rather than a Kafka ingest.
    pub fn is_backfill(&self) -> bool {
        !self.inputs.is_empty()
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let opts = WriteOptions {
        target_file_size: args.target_file_size,
        row_group_rows: usize::try_from(args.row_group_rows)?,
        page_rows: usize::try_from(args.page_rows)?,
        zstd_level: args.zstd_level,
        ..WriteOptions::default()
    };
    let limit = usize::try_from(args.memory_limit).unwrap_or(usize::MAX);
    if limit < LEAST_HONOURED_LIMIT {
        // Allowed (tests use it to force tiny flushes and dedupe evictions),
        // but say up front that the peak will be over it.
        tracing::warn!(
            memory_limit = %mib(limit as u64),
            least = %mib(LEAST_HONOURED_LIMIT as u64),
            "--memory-limit is below what the process itself holds (the runtime, Parquet writers, Kafka client: ~130MiB measured); ingest runs with tiny flushes and the peak will be over the limit"
        );
    }
    let budget = if args.brokers.is_some() {
        MemoryBudget::kafka(limit)
    } else {
        MemoryBudget::backfill(limit)
    };
    // Every flag checked before the lake is opened (which creates a local root).
    let budget = with_flush_bytes(budget, args.flush_bytes)?;
    // An input that cannot be opened stops the backfill before the lake
    // root is created (a mistyped path must not leave an empty lake).
    for (topic, path) in &args.inputs {
        let meta = std::fs::File::open(path)
            .and_then(|f| f.metadata())
            .map_err(|e| anyhow::anyhow!("--input {topic}={}: cannot open: {e}", path.display()))?;
        anyhow::ensure!(
            !meta.is_dir(),
            "--input {topic}={}: is a directory; give a JSON-lines file",
            path.display()
        );
    }
    let lake = args.lake.open()?;
    if let Some(brokers) = &args.brokers {
        return consume(lake, brokers, &args, opts, budget).await;
    }
    let flush_rows = args
        .flush_rows
        .unwrap_or(auditlake_ingest::backfill::DEFAULT_FLUSH_ROWS);
    let report = backfill(lake, &args.inputs, opts, flush_rows, budget).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    check_peak(report.peak_rss_bytes, budget);
    Ok(ExitCode::SUCCESS)
}

/// The smallest `--memory-limit` an ingest can stay under: the process holds
/// ~130 MiB before its buffers (release build, 200k events, measured with
/// `/usr/bin/time -f %M` at `--memory-limit 1KiB`).
const LEAST_HONOURED_LIMIT: usize = 192 << 20;

/// An explicit `--flush-bytes` replaces the budget's share, but may not exceed it.
fn with_flush_bytes(
    mut budget: MemoryBudget,
    flush_bytes: Option<u64>,
) -> anyhow::Result<MemoryBudget> {
    if let Some(b) = flush_bytes {
        let b = usize::try_from(b).unwrap_or(usize::MAX);
        anyhow::ensure!(
            b <= budget.flush_bytes,
            "--flush-bytes {} is more than --memory-limit {} allows ({}: a flush holds 4-5 times its buffer at its peak); raise --memory-limit",
            mib(b as u64),
            mib(budget.limit as u64),
            mib(budget.flush_bytes as u64),
        );
        budget.flush_bytes = b.max(1);
    }
    Ok(budget)
}

/// A size as the flags take it: MiB, or KiB below one MiB (`1KiB` must not
/// print as `0MiB`).
fn mib(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.0}KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.0}MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// Logs the peak RSS against the limit; a warning if it was exceeded.
fn check_peak(peak: Option<u64>, budget: MemoryBudget) {
    let Some(peak) = peak else { return };
    if peak > budget.limit as u64 {
        tracing::warn!(
            peak_rss = %mib(peak),
            memory_limit = %mib(budget.limit as u64),
            "peak memory went over --memory-limit"
        );
    } else {
        tracing::info!(peak_rss = %mib(peak), memory_limit = %mib(budget.limit as u64), "peak memory");
    }
}

/// Consumes Kafka until SIGINT/SIGTERM (or idle), then flushes and commits.
async fn consume(
    lake: auditlake_schemas::Lake,
    brokers: &str,
    args: &Args,
    opts: WriteOptions,
    budget: MemoryBudget,
) -> anyhow::Result<ExitCode> {
    let group = args
        .group
        .as_deref()
        .expect("clap requires --group with --brokers");
    let metrics = Arc::new(auditlake_ingest::Metrics::default());
    let _server = match args.metrics_addr {
        Some(addr) => Some(auditlake_ingest::metrics::serve(addr, metrics.clone()).await?),
        None => None,
    };
    let mut job = auditlake_ingest::KafkaIngest::new(lake, brokers, group)
        .with_write_options(opts)
        .with_flush(
            args.flush_interval,
            args.flush_rows
                .unwrap_or(auditlake_ingest::kafka::DEFAULT_FLUSH_ROWS),
            budget.flush_bytes,
        )
        .with_memory(budget)
        .with_stop_when_idle(args.stop_when_idle)
        .with_replay(args.replay_from_beginning)
        .with_metrics(metrics);
    for (topic, name) in &args.topic_names {
        job = job.with_topic_name(*topic, name);
    }
    if let Some(id) = &args.instance_id {
        job = job.with_config("group.instance.id", id);
    }
    for (k, v) in &args.kafka_config {
        job = job.with_config(k, v);
    }
    let report = job.execute(shutdown_signal()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (topic, c) in &report.topics {
            println!(
                "{topic}: {} consumed, {} stored, {} duplicates, {} quarantined, {} commits",
                c.consumed, c.stored, c.duplicates, c.quarantined, c.flushes
            );
        }
        println!(
            "stopped after {:.1} s, {} rebalances",
            report.seconds, report.rebalances
        );
    }
    check_peak(report.peak_rss_bytes, budget);
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs a backfill with a progress bar on a terminal.
pub async fn backfill(
    lake: auditlake_schemas::Lake,
    inputs: &[(Topic, PathBuf)],
    opts: WriteOptions,
    flush_rows: usize,
    budget: MemoryBudget,
) -> anyhow::Result<BackfillReport> {
    let mut job = Backfill::new(lake)
        .with_write_options(opts)
        .with_flush_rows(flush_rows)
        .with_memory(budget)
        .with_progress(Arc::new(Bar::default()));
    for (topic, path) in inputs {
        job = job.with_input(*topic, path);
    }
    Ok(job.execute().await?)
}

/// The summary's part on rows retention keeps out: expired rows dropped,
/// erased users' rows dropped, rows kept under the pseudonym (events after
/// the erasure).
fn erasure_summary(erased: u64, pseudonymized: u64, expired: u64) -> String {
    let mut out = String::new();
    if expired > 0 {
        out += &format!(
            ", {expired} rows past their keep time dropped (dated before the last sweep's floor)"
        );
    }
    if erased > 0 {
        out += &format!(", {erased} rows of erased users dropped");
    }
    if pseudonymized > 0 {
        out += &format!(
            ", {pseudonymized} rows of erased users dated after the erasure stored under their pseudonym"
        );
    }
    out
}

/// The one-line summary: events read, stored, duplicates, quarantined, files, bytes, seconds.
pub fn print_summary(report: &BackfillReport) {
    let t = report.totals();
    let rate = report.lines() as f64 / report.seconds.max(1e-9);
    println!(
        "ingested: {} lines read, {} stored, {} duplicates, {} quarantined ({} already quarantined){}, {} files, {} bytes, {:.2} s ({:.0} lines/s){}",
        report.lines(),
        t.stored,
        t.duplicates,
        t.quarantined,
        t.quarantine_duplicates,
        erasure_summary(t.erased, t.pseudonymized, t.expired),
        t.files,
        t.bytes,
        report.seconds,
        rate,
        report
            .peak_rss_bytes
            .map(|b| format!(", peak RSS {}", mib(b)))
            .unwrap_or_default()
    );
}

/// A progress bar per input, shown only when stderr is a terminal.
#[derive(Default)]
struct Bar(Mutex<Option<ProgressBar>>);

impl Progress for Bar {
    fn start(&self, topic: Topic, path: &Path, total_bytes: u64) {
        let bar = ProgressBar::new(total_bytes);
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(topic.name());
        tracing::debug!(path = %path.display(), total_bytes, "reading");
        *self.0.lock().expect("progress lock") = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = &*self.0.lock().expect("progress lock") {
            bar.inc(bytes);
        }
    }

    fn finish(&self, _topic: Topic, _stats: &SinkStats) {
        if let Some(bar) = self.0.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}
