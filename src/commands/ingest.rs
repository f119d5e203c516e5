//! `auditlake ingest`: JSON-lines backfill (`--input TOPIC=PATH`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use auditlake_ingest::{Backfill, BackfillReport, Progress, SinkStats};
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
    #[arg(long = "input", value_name = "TOPIC=PATH", value_parser = parse_input, required = true)]
    inputs: Vec<(Topic, PathBuf)>,
    /// Target size of a data file.
    #[arg(long, default_value = "128MiB", value_parser = parse_size, env = "AUDITLAKE_TARGET_FILE_SIZE")]
    target_file_size: u64,
    /// Maximum rows per Parquet row group.
    #[arg(long, default_value_t = auditlake_schemas::lake::DEFAULT_ROW_GROUP_ROWS)]
    row_group_rows: usize,
    /// zstd level of data files (1-22).
    #[arg(long, default_value_t = auditlake_schemas::lake::DEFAULT_ZSTD_LEVEL, value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd_level: i32,
    /// Rows buffered before a commit (bounds memory).
    #[arg(long, default_value_t = auditlake_ingest::backfill::DEFAULT_FLUSH_ROWS)]
    flush_rows: usize,
    /// Print the report as JSON on stdout instead of a summary line.
    #[arg(long)]
    json: bool,
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

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let lake = args.lake.open()?;
    let opts = WriteOptions {
        target_file_size: args.target_file_size,
        row_group_rows: args.row_group_rows,
        zstd_level: args.zstd_level,
        ..WriteOptions::default()
    };
    let report = backfill(lake, &args.inputs, opts, args.flush_rows).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a backfill with a progress bar on a terminal.
pub async fn backfill(
    lake: auditlake_schemas::Lake,
    inputs: &[(Topic, PathBuf)],
    opts: WriteOptions,
    flush_rows: usize,
) -> anyhow::Result<BackfillReport> {
    let mut job = Backfill::new(lake)
        .with_write_options(opts)
        .with_flush_rows(flush_rows)
        .with_progress(Arc::new(Bar::default()));
    for (topic, path) in inputs {
        job = job.with_input(*topic, path);
    }
    Ok(job.execute().await?)
}

/// The one-line summary: events read, stored, duplicates, quarantined, files, bytes, seconds.
pub fn print_summary(report: &BackfillReport) {
    let t = report.totals();
    let rate = report.lines() as f64 / report.seconds.max(1e-9);
    println!(
        "ingested: {} lines read, {} stored, {} duplicates, {} quarantined ({} already quarantined), {} files, {} bytes, {:.2} s ({:.0} lines/s)",
        report.lines(),
        t.stored,
        t.duplicates,
        t.quarantined,
        t.quarantine_duplicates,
        t.files,
        t.bytes,
        report.seconds,
        rate
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
