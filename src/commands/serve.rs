//! `auditlake serve`: the lake as a read-only PostgreSQL endpoint for psql and
//! BI tools. See `query/SERVE.md` for connecting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use auditlake_query::serve::{self, ServeOptions, Server};
use clap::Args as ClapArgs;

use super::LakeArgs;

/// Serve the lake over the PostgreSQL wire protocol (read-only).
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    lake: LakeArgs,
    /// Address to listen on. Without a password only loopback addresses are allowed.
    /// A host name (`localhost:5433`) listens on the first address it has.
    #[arg(long, env = "AUDITLAKE_LISTEN", default_value = serve::DEFAULT_LISTEN, value_parser = listen_addr)]
    listen: SocketAddr,
    /// The user name clients log in as.
    #[arg(long, env = "AUDITLAKE_PG_USER", default_value = serve::DEFAULT_USER)]
    user: String,
    /// File holding the password (first line). Else AUDITLAKE_PG_PASSWORD; with
    /// neither, no authentication and loopback only.
    #[arg(long, env = "AUDITLAKE_PG_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "AUDITLAKE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, env = "AUDITLAKE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Per-query time bound, e.g. 60s, 500ms, 5m. Clients may lower it with
    /// `SET statement_timeout`.
    #[arg(long, env = "AUDITLAKE_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    query_timeout: Duration,
    /// Memory pool of the whole server (sorts and aggregates spill to disk past it).
    #[arg(long, env = "AUDITLAKE_MEMORY_LIMIT", default_value = "1GiB", value_parser = super::parse_size)]
    memory_limit: u64,
    /// Memory one query may hold [default: half of --memory-limit].
    #[arg(long, env = "AUDITLAKE_QUERY_MEMORY_LIMIT", value_parser = super::parse_size)]
    query_memory_limit: Option<u64>,
    /// Directory for spill files [default: the system temp directory].
    #[arg(long, env = "AUDITLAKE_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
    /// Cap on the disk space of spill files.
    #[arg(long, env = "AUDITLAKE_SPILL_LIMIT", default_value = "20GiB", value_parser = super::parse_size)]
    spill_limit: u64,
    /// Maximum concurrent connections; more are closed at once.
    #[arg(long, env = "AUDITLAKE_MAX_CONNECTIONS", default_value_t = serve::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Threads that execute queries (apart from the ones serving sockets)
    /// [default: one per core].
    #[arg(long, env = "AUDITLAKE_QUERY_THREADS")]
    query_threads: Option<usize>,
}

/// `HOST:PORT`, an address or a name (resolved; IPv4 first, as for
/// `localhost` most clients try it first).
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("not HOST:PORT ({e})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let password = match &args.password_file {
        Some(path) => Some(read_password(path)?),
        None => std::env::var("AUDITLAKE_PG_PASSWORD")
            .ok()
            .filter(|p| !p.is_empty()),
    };
    let mut options = ServeOptions::default()
        .with_listen(args.listen)
        .with_user(args.user)
        .with_password(password)
        .with_query_timeout(args.query_timeout)
        .with_memory_limit(to_usize(args.memory_limit)?)
        .with_query_memory_limit(args.query_memory_limit.map(to_usize).transpose()?)
        .with_spill_dir(args.spill_dir)
        .with_spill_limit(args.spill_limit)
        .with_max_connections(args.max_connections)
        .with_query_threads(args.query_threads);
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        options = options.with_tls(cert, key);
    }
    // Bad flags stop before the lake is touched.
    options.validate()?;
    let lake = args.lake.open_existing()?;
    let server = Server::bind(lake, options).await?;
    // The bound address on stdout (results go to stdout): scripts and tests that
    // pass port 0 learn the port here.
    println!("listening on {}", server.local_addr());
    server.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

fn read_password(path: &PathBuf) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        anyhow::bail!("the password file {} is empty", path.display());
    }
    Ok(password)
}

fn to_usize(bytes: u64) -> anyhow::Result<usize> {
    usize::try_from(bytes).context("size does not fit this platform")
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// Parses `60s`, `500ms`, `5m`, `1h` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 500ms, 5m)"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    if d.is_zero() {
        return Err("the duration must be positive".to_string());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn listen_takes_addresses_and_names() {
        assert_eq!(
            listen_addr("127.0.0.1:5433").unwrap(),
            "127.0.0.1:5433".parse::<SocketAddr>().unwrap()
        );
        assert!(listen_addr("localhost:5433").unwrap().ip().is_loopback());
        assert!(listen_addr("localhost").unwrap_err().contains("HOST:PORT"));
    }
}
