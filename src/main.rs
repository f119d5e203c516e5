//! `auditlake`: the command-line front of the audit lake. A thin shell: parse
//! flags, wire the crates, print `Error: ...` and exit non-zero on failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

/// mimalloc for the query commands (sql, serve, retention): they allocate
/// and free large column buffers at a high rate, and glibc returned them to
/// the kernel and faulted them back in. `detect` runs on the system
/// allocator instead: on the 5M-event lake it took 5.7-6.7 s (2.55 GB peak)
/// against 7.9-10.5 s (3.5 GB) on mimalloc. So does `ingest` (and `demo`,
/// which ingests), on glibc tuned for it ([`tune_glibc_malloc`]):
/// mimalloc's RSS grew with every flush (5M events in 8 MiB flushes: 789-918
/// MiB peak against glibc's 286), and at 50M events it passed the 1 GiB
/// `--memory-limit` (1231-1406 MiB) where glibc peaks at 599-664 MiB, at the
/// same speed on two cores and faster on one (9.9-11.4 s against 11.9-13.4
/// s for 5M events; a third of the kernel time). Which one is chosen once,
/// before the command runs (see [`Allocator::use_system`]); every free goes
/// back to the allocator that owns the block.
#[global_allocator]
static GLOBAL: Allocator = Allocator;

/// Dispatches to mimalloc or the system allocator.
struct Allocator;

static USE_SYSTEM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Allocator {
    /// New allocations come from the system allocator from now on; blocks
    /// mimalloc handed out before are still freed by mimalloc.
    fn use_system() {
        USE_SYSTEM.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn system() -> bool {
        USE_SYSTEM.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[allow(unsafe_code)]
    fn owned_by_mimalloc(ptr: *mut u8) -> bool {
        // SAFETY: a read-only lookup in mimalloc's segment map; any pointer is valid input.
        unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
    }
}

// SAFETY: every block is freed or resized by the allocator that allocated it
// (mimalloc knows its own blocks by address); both allocators uphold the
// GlobalAlloc contract themselves.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if Self::system() {
            unsafe { std::alloc::System.alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if Self::system() {
            unsafe { std::alloc::System.alloc_zeroed(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if Self::owned_by_mimalloc(ptr) {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        } else {
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if Self::owned_by_mimalloc(ptr) {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        } else {
            unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
        }
    }
}

/// `mi_option_purge_delay` in the `mi_option_e` of the mimalloc (v3) that
/// libmimalloc-sys builds, which the Rust binding does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// `mi_option_allow_thp` in the same enum (both checked against its header).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// How long mimalloc keeps freed memory before returning it to the kernel:
/// a second. The query commands free and reallocate large hash tables and
/// buffers, and returning them at once costs the kernel's page zeroing
/// again. (Ingest, on glibc now, kept it 20 ms while it ran on mimalloc:
/// kept memory counted against its `--memory-limit`.)
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
///
/// No transparent huge pages for the memory mimalloc maps from here on
/// (mimalloc asks for them with `madvise` by default): the kernel zeroes a
/// whole 2 MiB page on the first touch of any byte of it, and for the short
/// commands that was most of their CPU time (`perf`: 62% of an erase's
/// cycles, 53% of a verify's in `clear_page_erms`; erase RSS 550 -> 330 MiB,
/// system time 0.2-0.7 -> 0.3 s).
/// `MIMALLOC_ALLOW_THP` in the environment still wins.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: sets a process-wide integer option; any value is valid.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // The option alone stops new `madvise` calls, but mimalloc reserved
        // (and advised) its first arena before `main`; the process-wide flag,
        // which is what mimalloc itself sets when the option is 0 at start,
        // covers that arena too. An error (an old kernel) leaves THP on.
        // SAFETY: prctl with integer arguments, no pointers.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let delay_ms = 1000;
    // SAFETY: sets a process-wide integer option; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms) };
}

/// glibc malloc for ingest: at most `arenas` arenas, blocks up to 32 MiB
/// from the heap, and freed memory kept for reuse. With an arena per thread
/// (eight per core by default) each thread that frees what another
/// allocated keeps that memory to itself: the ingest's peak RSS reached
/// 1063 MiB for 5M events against 565 MiB with two arenas. A file backfill
/// takes one arena: with the flush's column buffers (a few MiB to ~30 MiB,
/// above glibc's dynamic mmap threshold at first) taken from the heap and
/// the heap never trimmed, freed pages are reused instead of fresh ones
/// mapped and faulted in every flush (2M events pinned to one core, 11 runs
/// each alternating, median 3.56 -> 3.38 s, peak RSS 486 -> 396 MiB; 9 runs
/// against the same settings on two arenas: 3.32 -> 3.20 s). A Kafka ingest
/// (and `demo`) keeps two: librdkafka's threads allocate at a high rate, and
/// on one arena they waited on its lock (`demo --events 500000`: 5.8-6.5 s
/// of CPU against 4.8-5.3 s on two). Must run before any thread starts.
/// `MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`
/// and their `GLIBC_TUNABLES` (`glibc.malloc.arena_max`, ...) still win.
#[allow(unsafe_code)]
fn tune_glibc_malloc(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let unset = |name: &str, tunable: &str| {
            std::env::var_os(name).is_none() && !tunables.contains(tunable)
        };
        // SAFETY (each call): mallopt with integer arguments, before other
        // threads exist; an unknown or refused option only returns 0.
        if unset("MALLOC_ARENA_MAX", "glibc.malloc.arena_max") {
            unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
        }
        if unset("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold") {
            // glibc's largest accepted threshold on 64-bit.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 32 * 1024 * 1024) };
        }
        if unset("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold") {
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) };
        }
    }
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

/// Exit code of a command line that does not parse (sysexits' `EX_USAGE`):
/// distinct from 2, which `retention` uses for a failed verification, so a
/// scheduler can tell a misconfigured job from a data incident.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` come this way too, and succeed.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    tune_allocator();
    match cli.command {
        Command::Ingest(ref args) if args.is_backfill() => {
            tune_glibc_malloc(1);
            Allocator::use_system();
        }
        Command::Ingest(_) | Command::Demo(_) => {
            tune_glibc_malloc(2);
            Allocator::use_system();
        }
        Command::Detect(_) => Allocator::use_system(),
        _ => {}
    }
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
    // The runtime is never dropped: `exit_now` ends the process with its
    // idle threads (every task the command started has been awaited).
    let code = match result {
        Ok(code) => code,
        // The reader of stdout went away (`| head`): it has what it wanted.
        Err(e) if commands::stdout_closed() => {
            tracing::debug!(error = %error_report(&e), "stdout closed by its reader");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {}", error_report(&e));
            ExitCode::FAILURE
        }
    };
    exit_now(code)
}

/// The error and its causes as one line, `message: cause: cause`, leaving
/// out a cause whose text the line already holds: most errors of the crates
/// (and DataFusion's own wrappers) show their source in their message as well
/// as returning it as the source, and printing the plain chain repeated a
/// failed query's reason three times.
fn error_report(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// Ends the process once the command is done and its output flushed,
/// without the exit handlers: mimalloc's, linked statically, hands every
/// page back to the kernel one `madvise` at a time (~245 calls, 20-25 ms
/// after an erase printed its result, as long as a whole verify's scan),
/// which a process about to vanish does not need. Every write of the
/// command was awaited before it returned; stdout and stderr are flushed
/// here, and logs go to stderr unbuffered.
#[allow(unsafe_code)]
fn exit_now(code: ExitCode) -> ! {
    use std::io::Write;
    let status = (0..=u8::MAX)
        .find(|n| ExitCode::from(*n) == code)
        .map_or(1, i32::from);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` takes an integer and does not return; no Rust state
    // is used after it.
    unsafe { libc::_exit(status) }
}

#[cfg(test)]
mod tests {
    use super::error_report;

    #[derive(Debug, thiserror::Error)]
    #[error("query failed: {0}")]
    struct Shows(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("query failed")]
    struct Hides(#[source] std::io::Error);

    #[test]
    fn each_cause_is_reported_once() {
        let io = || std::io::Error::other("table 'nope' not found");
        let shown = anyhow::Error::new(Shows(io())).context("sql");
        assert_eq!(
            error_report(&shown),
            "sql: query failed: table 'nope' not found"
        );
        let hidden = anyhow::Error::new(Hides(io()));
        assert_eq!(
            error_report(&hidden),
            "query failed: table 'nope' not found"
        );
    }
}
