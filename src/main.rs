//! `auditlake`: the command-line front of the audit lake. A thin shell: parse
//! flags, wire the crates, print `Error: ...` and exit non-zero on failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// mimalloc: ingest and queries allocate and free large column buffers at a
/// high rate; glibc returns them to the kernel and faults them back in.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (v2), which the
/// Rust binding does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the kernel,
/// per command. Queries (sql, detect, serve, retention) keep it a second:
/// they free and reallocate large hash tables and buffers, and returning
/// them at once costs the kernel's page zeroing again. Ingest returns it at
/// once and pays that (5M events, pinned: 15.0 s against 12.2 s with the
/// delay): with the delay its peak RSS grew with the input (1016 MiB at 25M
/// events against 691 MiB, 1338 MiB at 50M), past the `--memory-limit` it
/// promises. `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[allow(unsafe_code)]
fn tune_allocator(command: &Command) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let delay_ms = match command {
        Command::Ingest(_) | Command::Demo(_) => 0,
        _ => 1000,
    };
    // SAFETY: sets a process-wide integer option; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms) };
}

/// Data-access audit lake and retention enforcer for an open API platform.
#[derive(Debug, Parser)]
#[command(name = "auditlake", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info`, `auditlake_ingest=debug`.
    #[arg(
        long,
        global = true,
        env = "AUDITLAKE_LOG",
        default_value = "warn,auditlake=info,auditlake_schemas=info,auditlake_ingest=info,auditlake_query=info,auditlake_retention=info,deltalake_core::writer::stats=error"
    )]
    log: String,

    /// Log format on stderr.
    #[arg(long, global = true, env = "AUDITLAKE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest topics into the lake: JSON-lines backfill (`--input`) or Kafka (`--brokers`).
    Ingest(commands::ingest::Args),
    /// Run one SQL query over the lake.
    Sql(commands::sql::Args),
    /// Generate synthetic platform traffic with planted violations (files or Kafka).
    Gen(commands::generate::Args),
    /// Run the whole pipeline on the embedded default (no services needed).
    Demo(commands::demo::Args),
    /// Retention: sweep by policy, erase a user physically, verify with evidence.
    Retention(commands::retention::Args),
    /// Serve the lake read-only over the PostgreSQL wire protocol (psql, BI tools).
    Serve(commands::serve::Args),
    /// Run the detection rules at --now; replace the findings and obligations tables.
    Detect(commands::detect::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tune_allocator(&cli.command);
    commands::init_logging(&cli.log, &cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ingest(args) => commands::ingest::run(args).await,
            Command::Sql(args) => commands::sql::run(args).await,
            Command::Gen(args) => commands::generate::run(args).await,
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Retention(args) => commands::retention::run(args).await,
            Command::Serve(args) => commands::serve::run(args).await,
            Command::Detect(args) => commands::detect::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
