//! `auditlake sql`: one query over the lake, printed as a table, CSV, JSON lines
//! or Parquet.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use auditlake_query::Format;
use clap::Args as ClapArgs;

use super::LakeArgs;

/// Run one SQL query over the lake.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    lake: LakeArgs,
    /// Output format: table, csv, json (one object per row) or parquet.
    #[arg(long, default_value = "table")]
    format: Format,
    /// Write the result to this file instead of stdout (needed for parquet on a terminal).
    #[arg(long)]
    output: Option<PathBuf>,
    /// The query, e.g. "SELECT app_id, count(*) FROM api_access GROUP BY app_id".
    query: String,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let lake = args.lake.open()?;
    let ctx = auditlake_query::session(&lake)
        .await
        .with_context(|| format!("opening lake {lake}"))?;
    if auditlake_query::discover_tables(&lake).await?.is_empty() {
        anyhow::bail!(
            "lake {lake} holds no tables yet; ingest something first (auditlake ingest --help)"
        );
    }
    let df = ctx
        .sql(&args.query)
        .await
        .map_err(auditlake_query::Error::Query)?;
    let schema = df.schema().inner().clone();
    let batches = df.collect().await.map_err(auditlake_query::Error::Query)?;
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            auditlake_query::write_batches(
                &batches,
                schema,
                args.format,
                std::io::BufWriter::new(file),
            )?;
        }
        None => {
            if args.format == Format::Parquet
                && std::io::IsTerminal::is_terminal(&std::io::stdout())
            {
                anyhow::bail!(
                    "refusing to write parquet to a terminal; pass --output FILE or redirect stdout"
                );
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
            auditlake_query::write_batches(&batches, schema, args.format, &mut out)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
