//! `auditlake serve`: the lake as a read-only PostgreSQL endpoint for psql and
//! BI tools (DBeaver, Metabase, Grafana).
//!
//! ```text
//! client --TLS?--> pgwire --SCRAM-SHA-256--> LakeService
//!   statement --policy (read-only allow list)--> SET/SHOW/BEGIN: session hooks
//!                                            --> query: Executor (deadline, QueryPool)
//!   planning <-- LakeSchema (newest Delta snapshot per table) + pg_catalog + information_schema
//! ```
//!
//! Invariants:
//! - Nothing a client sends changes the lake, the server's files or its engine
//!   settings ([`policy`], then a read-only check of every plan).
//! - Every query ends by its deadline (`--query-timeout`) and holds at most
//!   `--query-memory-limit` of the server's `--memory-limit` pool; spilling
//!   operators spill to disk instead. A runaway query fails alone.
//! - A query sees every Delta commit made before it started ([`catalog`]).
//! - Without a password the server binds only to loopback addresses.
//!
//! ```no_run
//! # async fn demo() -> auditlake_query::Result<()> {
//! use auditlake_query::serve::{ServeOptions, Server};
//! let lake = auditlake_schemas::Lake::open("/var/lib/auditlake")?;
//! let options = ServeOptions::default().with_password(Some("s3cret".into()));
//! let server = Server::bind(lake, options).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

pub mod auth;
pub mod catalog;
pub mod exec;
pub mod handler;
pub mod memory;
pub mod pg_compat;
pub mod policy;
pub mod slice;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use auditlake_schemas::Lake;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire;
use pgwire::api::ConnectionManager;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::{Error, Result};
use auth::{Credentials, Tls};
use catalog::LakeSchema;
use exec::{Cancels, Executor, Limits};
use handler::{Handlers, LakeService};

/// Default listen address: loopback, one port above PostgreSQL's.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
/// Default (and only) user name.
pub const DEFAULT_USER: &str = "auditlake";
/// Default per-query time bound.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default memory pool of the whole server.
pub const DEFAULT_MEMORY_LIMIT: usize = 1 << 30;
/// Default cap on disk used by spill files.
pub const DEFAULT_SPILL_LIMIT: u64 = 20 << 30;
/// Default maximum of concurrent connections; more are closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// How to serve: address, who may connect, bounds.
#[derive(Clone)]
pub struct ServeOptions {
    listen: SocketAddr,
    user: String,
    password: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
    query_timeout: Duration,
    memory_limit: usize,
    query_memory_limit: Option<usize>,
    spill_dir: Option<PathBuf>,
    spill_limit: u64,
    max_connections: usize,
    query_threads: Option<usize>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("query_timeout", &self.query_timeout)
            .field("memory_limit", &self.memory_limit)
            .field("query_memory_limit", &self.query_memory_limit())
            .field("spill_dir", &self.spill_dir)
            .field("spill_limit", &self.spill_limit)
            .field("max_connections", &self.max_connections)
            .field("query_threads", &self.query_threads)
            .finish()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            user: DEFAULT_USER.to_string(),
            password: None,
            tls: None,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            query_memory_limit: None,
            spill_dir: None,
            spill_limit: DEFAULT_SPILL_LIMIT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            query_threads: None,
        }
    }
}

impl ServeOptions {
    /// Address to listen on (port 0: any free port, see [`Server::local_addr`]).
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// The user name clients log in as.
    pub fn with_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// The password (SCRAM-SHA-256); `None`: no authentication, loopback only.
    pub fn with_password(mut self, password: Option<String>) -> Self {
        self.password = password;
        self
    }

    /// TLS certificate chain and private key, PEM files.
    pub fn with_tls(mut self, cert: PathBuf, key: PathBuf) -> Self {
        self.tls = Some((cert, key));
        self
    }

    /// Per-query time bound.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// Memory pool of the whole server, in bytes.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Memory one query may hold, in bytes (default: half the server pool).
    pub fn with_query_memory_limit(mut self, bytes: Option<usize>) -> Self {
        self.query_memory_limit = bytes;
        self
    }

    /// Directory for spill files (default: the system temp directory).
    pub fn with_spill_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.spill_dir = dir;
        self
    }

    /// Cap on the disk space of spill files, in bytes.
    pub fn with_spill_limit(mut self, bytes: u64) -> Self {
        self.spill_limit = bytes;
        self
    }

    /// Maximum concurrent connections.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Threads of the query runtime (default: one per core).
    pub fn with_query_threads(mut self, n: Option<usize>) -> Self {
        self.query_threads = n;
        self
    }

    fn query_memory_limit(&self) -> usize {
        self.query_memory_limit
            .unwrap_or(self.memory_limit / 2)
            .min(self.memory_limit)
    }

    /// Refuses settings that would expose the lake or cannot work
    /// ([`Server::bind`] checks them too; callers check before opening
    /// anything).
    pub fn validate(&self) -> Result<()> {
        if self.password.is_none() && !self.listen.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to listen on {} without a password: set AUDITLAKE_PG_PASSWORD or \
                 --password-file, or listen on a loopback address such as 127.0.0.1",
                self.listen
            )));
        }
        if self.password.as_deref() == Some("") {
            return Err(Error::Config("the password is empty".to_string()));
        }
        if self.user.is_empty() {
            return Err(Error::Config("the user name is empty".to_string()));
        }
        if self.query_timeout.is_zero() {
            return Err(Error::Config(
                "--query-timeout must be positive".to_string(),
            ));
        }
        if self.memory_limit == 0 || self.query_memory_limit() == 0 {
            return Err(Error::Config("memory limits must be positive".to_string()));
        }
        Ok(())
    }
}

/// A bound, not yet serving, PostgreSQL endpoint over a lake.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    handlers: Arc<Handlers>,
    tls: Option<Tls>,
    max_connections: usize,
    _query_runtime: QueryRuntime,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Checks the options, sets up the engine and binds the listening socket.
    pub async fn bind(lake: Lake, options: ServeOptions) -> Result<Self> {
        options.validate()?;
        let tls = match &options.tls {
            Some((cert, key)) => Some(auth::load_tls(cert, key)?),
            None => None,
        };
        let credentials = options
            .password
            .as_deref()
            .map(|password| Arc::new(Credentials::new(&options.user, password)));

        let pool = memory::server_pool(options.memory_limit);
        let mut disk =
            DiskManagerBuilder::default().with_max_temp_directory_size(options.spill_limit);
        if let Some(dir) = &options.spill_dir {
            disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.clone()]));
        }
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool.clone())
            .with_disk_manager_builder(disk)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(crate::session_config())
            .with_runtime_env(runtime.clone())
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(slice::TimeSlice))
            .build();
        let ctx = Arc::new(SessionContext::new_with_state(state));
        let lake_schema = Arc::new(LakeSchema::new(lake, runtime));
        lake_schema.refresh_names().await;
        ctx.catalog(crate::CATALOG)
            .ok_or_else(|| Error::Config("the default catalog is missing".to_string()))?
            .register_schema("public", lake_schema.clone())?;
        setup_pg_catalog(&ctx, crate::CATALOG, EmptyContextProvider).map_err(|e| *e)?;
        pg_compat::register(&ctx);
        crate::functions::register_functions(&ctx);

        let cancels = Arc::new(Cancels::default());
        let limits = Limits {
            query_timeout: options.query_timeout,
            query_memory: options.query_memory_limit(),
        };
        let query_runtime = QueryRuntime::new(options.query_threads)?;
        let exec = Executor::new(
            ctx.clone(),
            lake_schema,
            pool,
            limits,
            cancels.clone(),
            query_runtime.handle(),
        );
        let handlers = Arc::new(Handlers {
            service: Arc::new(LakeService::new(ctx, exec)),
            user: options.user.clone(),
            credentials,
            cert_pem: tls.as_ref().map(|t| t.cert_pem.clone()),
            connections: Arc::new(ConnectionManager::new()),
            cancels,
        });

        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Serve {
                context: format!("listening on {}", options.listen),
                source,
            })?;
        let local_addr = listener.local_addr()?;
        tracing::info!(
            addr = %local_addr,
            user = options.user,
            auth = if handlers.credentials.is_some() { "scram-sha-256" } else { "trust (loopback only)" },
            tls = tls.is_some(),
            query_timeout_ms = options.query_timeout.as_millis() as u64,
            memory_limit = options.memory_limit,
            query_memory_limit = options.query_memory_limit(),
            "serving the lake over the PostgreSQL protocol (read-only)"
        );
        if tls.is_none() && !local_addr.ip().is_loopback() {
            tracing::warn!(
                addr = %local_addr,
                "no TLS: query results cross the network unencrypted (pass --tls-cert/--tls-key)"
            );
        }
        Ok(Self {
            listener,
            local_addr,
            handlers,
            tls,
            max_connections: options.max_connections,
            _query_runtime: query_runtime,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves connections until `shutdown` completes; then stops accepting and
    /// returns (connections in flight are dropped with the runtime).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let limiter = Arc::new(Semaphore::new(self.max_connections.max(1)));
        let acceptor = self.tls.map(|t| t.acceptor);
        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = limiter.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max = self.max_connections, "too many connections; closing");
                continue;
            };
            let _ = socket.set_nodelay(true);
            let handlers = self.handlers.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                tracing::debug!(%peer, "connection");
                if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, handlers).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        tracing::info!("stopped accepting connections");
        Ok(())
    }
}

/// The runtime queries execute on, apart from the one serving sockets: a query
/// that keeps every core busy delays logins, cancel requests and other clients'
/// reads only as much as the OS scheduler lets it. (Measured on 2 cores with one
/// runtime: a login during a CPU-bound query took 2.6 s, its I/O events waiting
/// for busy workers.)
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn new(threads: Option<usize>) -> Result<Self> {
        let threads = threads
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(2)
            .max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("auditlake-query")
            // Look at I/O and new tasks more often than the default 61 polls,
            // so object-store reads and new queries are not starved by busy
            // operators.
            .event_interval(7)
            .global_queue_interval(7)
            .enable_all()
            .build()
            .map_err(|source| Error::Serve {
                context: "starting the query runtime".to_string(),
                source,
            })?;
        Ok(Self(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime lives until drop")
            .handle()
            .clone()
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropped from async code: do not block on running queries.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
