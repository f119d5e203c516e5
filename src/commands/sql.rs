//! `auditlake sql`: queries over the lake, printed as a table, CSV, JSON lines
//! or Parquet.
//!
//! Several queries run in order in one session (the lake is opened once);
//! `--repeat N` runs each N times and prints the last result, and `--timings`
//! reports per-query times measured inside the process, which is how
//! `benches/bench.py` compares the engine with DuckDB's in-process times.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use auditlake_query::Format;
use clap::Args as ClapArgs;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use serde::Serialize;

use super::LakeArgs;

/// Run SQL queries over the lake.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    lake: LakeArgs,
    /// Output format: table, csv, json (one object per row) or parquet.
    /// Lists, structs and maps are printed as JSON text in table and csv.
    #[arg(long, default_value = "table")]
    format: Format,
    /// Write the result to this file instead of stdout (needed for parquet on a terminal).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Run each query this many times in the same session and print the result
    /// of the last run (with --timings: warm-cache timings).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    repeat: u32,
    /// Write timings as one JSON object to this file (`-`: stderr): opening the
    /// lake, and per query the milliseconds of each run (plan + execute +
    /// collect) and of writing the output.
    #[arg(long, value_name = "FILE")]
    timings: Option<PathBuf>,
    /// The queries, run in order in one session; results are printed one after
    /// another. E.g. "SELECT app_id, count(*) FROM api_access GROUP BY app_id".
    #[arg(required = true, value_name = "QUERY")]
    queries: Vec<String>,
}

/// What `--timings` writes.
#[derive(Debug, Serialize)]
struct Timings {
    /// Opening the lake: session, Delta log loads, table registration.
    open_ms: f64,
    queries: Vec<QueryTimings>,
    /// From the start of `run` to the last output written.
    total_ms: f64,
}

#[derive(Debug, Serialize)]
struct QueryTimings {
    sql: String,
    rows: usize,
    /// Each run: planning, execution and collecting the batches.
    runs_ms: Vec<f64>,
    /// The fastest run.
    best_ms: f64,
    /// Writing the last run's result in the chosen format.
    output_ms: f64,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn open_output(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn Write + Send>> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::with_capacity(1 << 16, super::stdout())),
    })
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    if args.format == Format::Parquet && args.queries.len() > 1 {
        anyhow::bail!("--format parquet takes one query (a Parquet file holds one result)");
    }
    if args.output.is_none()
        && args.format == Format::Parquet
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        anyhow::bail!(
            "refusing to write parquet to a terminal; pass --output FILE or redirect stdout"
        );
    }
    let lake = args.lake.open_existing()?;
    let (ctx, present) = auditlake_query::open_session(&lake)
        .await
        .with_context(|| format!("opening lake {lake}"))?;
    if present.is_empty() {
        anyhow::bail!(
            "lake {lake} holds no tables yet; ingest something first (auditlake ingest --help)"
        );
    }
    let open_ms = ms(start);

    // Opened at the first result, so a failing query leaves no empty file.
    let mut out: Option<Box<dyn Write + Send>> = None;
    let mut timings = Vec::with_capacity(args.queries.len());
    for sql in &args.queries {
        // `CREATE VIEW` names a query for the ones after it in this call
        // (nothing is written anywhere): run once, print nothing.
        let creates = sql
            .trim_start()
            .get(..6)
            .is_some_and(|w| w.eq_ignore_ascii_case("create"));
        if creates
            && let LogicalPlan::Ddl(DdlStatement::CreateView(_)) = ctx
                .state()
                .create_logical_plan(sql)
                .await
                .map_err(auditlake_query::Error::Query)?
        {
            ctx.sql(sql).await.map_err(auditlake_query::Error::Query)?;
            continue;
        }
        let mut runs_ms = Vec::with_capacity(args.repeat as usize);
        let mut result = None;
        for _ in 0..args.repeat {
            let t = Instant::now();
            // Read-only: `INSERT` would append to a lake table behind ingest's
            // dedupe, `COPY ... TO` write files anywhere (inside a table's
            // directory too); `DROP TABLE` and `CREATE TABLE` would change
            // only this command's session while looking as if they changed
            // the lake (serve refuses them too). `--output`/`--format
            // parquet` save a result.
            let options = SQLOptions::new()
                .with_allow_dml(false)
                .with_allow_ddl(false);
            let df = ctx
                .sql_with_options(sql, options)
                .await
                .map_err(|e| match e {
                    DataFusionError::Plan(m)
                        if m.contains("DML not supported") || m.contains("DDL not supported") =>
                    {
                        anyhow::anyhow!(
                            "auditlake sql is read-only ({m}); to save a result use --output FILE \
                             with --format csv, json or parquet"
                        )
                    }
                    e => auditlake_query::Error::Query(e).into(),
                })?;
            let schema = df.schema().inner().clone();
            let batches = df.collect().await.map_err(auditlake_query::Error::Query)?;
            runs_ms.push(ms(t));
            result = Some((schema, batches));
        }
        let (schema, batches) = result.expect("repeat is at least 1");
        let t = Instant::now();
        let out = match &mut out {
            Some(out) => out,
            None => out.insert(open_output(args.output.as_ref())?),
        };
        let written = auditlake_query::write_batches(&batches, schema, args.format, &mut *out)
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(out.flush()?));
        // A reader that went away (`| head`) ends the output, not the
        // command: the timings of what ran are still written.
        let closed = written.is_err() && super::stdout_closed();
        if !closed {
            written?;
        }
        timings.push(QueryTimings {
            sql: sql.clone(),
            rows: batches.iter().map(|b| b.num_rows()).sum(),
            best_ms: runs_ms.iter().copied().fold(f64::INFINITY, f64::min),
            runs_ms,
            output_ms: ms(t),
        });
        if closed {
            break;
        }
    }
    drop(out);

    if let Some(path) = &args.timings {
        let report = Timings {
            open_ms,
            queries: timings,
            total_ms: ms(start),
        };
        let json = serde_json::to_string(&report)?;
        if path.as_os_str() == "-" {
            eprintln!("{json}");
        } else {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing timings to {}", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
