//! Running one client query over the lake, bounded in time and memory.
//!
//! ```text
//! statement --plan (fresh snapshots, LakeSchema)--> LogicalPlan --verify read-only-->
//!   --per-query SessionState (own QueryPool, client time zone)-->
//!   query runtime: physical plan --batches--> channel
//!   socket runtime: Bounded (deadline, cancel) --> pg rows (arrow-pg) --> client
//! ```
//!
//! The deadline covers planning *and* streaming: DataFusion does most of its work
//! while the rows are pulled, after the handler has returned, so the bound sits
//! on the stream. When it passes, or a cancel request arrives, the stream drops
//! the physical plan (DataFusion aborts its tasks, frees its memory and spill
//! files) and ends with SQLSTATE 57014, the code PostgreSQL uses.

use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::pgwire;
use futures::{Stream, StreamExt, stream};
use pgwire::api::ClientInfo;
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Response};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::startup::SecretKey;
use pgwire::types::format::FormatOptions;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::catalog::LakeSchema;
use super::memory::QueryPool;
use super::policy::READ_ONLY;

/// query_canceled, for both the statement timeout and a cancel request.
pub const QUERY_CANCELED: &str = "57014";

/// The client metadata key where datafusion-postgres keeps `SET statement_timeout`.
const CLIENT_TIMEOUT_KEY: &str = "statement_timeout_ms";
/// The client metadata key where datafusion-postgres keeps `SET TIME ZONE`.
const CLIENT_TIMEZONE_KEY: &str = "timezone";

/// Bounds of one query.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall time from the statement's arrival to its last row. A client's
    /// `SET statement_timeout` may lower it, never raise it.
    pub query_timeout: Duration,
    /// Bytes of the server pool one query may hold.
    pub query_memory: usize,
}

/// Runs queries over the lake. Shared by every connection.
pub struct Executor {
    ctx: Arc<SessionContext>,
    lake: Arc<LakeSchema>,
    server_pool: Arc<dyn MemoryPool>,
    limits: Limits,
    cancels: Arc<Cancels>,
    cpu: tokio::runtime::Handle,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// `ctx` holds the catalogs (lake, pg_catalog, information_schema), the
    /// functions and the settings; each query runs in a copy of its state with
    /// its own [`QueryPool`] inside `server_pool`, executed on the `cpu` runtime
    /// (apart from the one serving the sockets, so a busy engine never delays
    /// logins, cancel requests or other clients' reads).
    pub fn new(
        ctx: Arc<SessionContext>,
        lake: Arc<LakeSchema>,
        server_pool: Arc<dyn MemoryPool>,
        limits: Limits,
        cancels: Arc<Cancels>,
        cpu: tokio::runtime::Handle,
    ) -> Self {
        Self {
            ctx,
            lake,
            server_pool,
            limits,
            cancels,
            cpu,
        }
    }

    /// The time bound of the next query of `client`.
    fn timeout_for<C: ClientInfo + ?Sized>(&self, client: &C) -> Duration {
        let server = self.limits.query_timeout;
        client
            .metadata()
            .get(CLIENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(server, |ms| server.min(Duration::from_millis(ms)))
    }

    fn query_state<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
    ) -> Result<SessionState, DataFusionError> {
        let base = self.ctx.state();
        let runtime = RuntimeEnvBuilder::from_runtime_env(base.runtime_env())
            .with_memory_pool(Arc::new(QueryPool::new(
                self.server_pool.clone(),
                self.limits.query_memory,
            )))
            .build_arc()?;
        let mut state = SessionStateBuilder::new_from_existing(base)
            .with_runtime_env(runtime)
            .build();
        if let Some(tz) = client.metadata().get(CLIENT_TIMEZONE_KEY) {
            state.config_mut().options_mut().execution.time_zone = Some(tz.clone());
        }
        Ok(state)
    }

    /// Plans `statement` (with `params` bound, for the extended protocol) against
    /// the newest snapshots and starts it; rows are produced as the client reads.
    pub async fn run<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        statement: &Statement,
        params: Option<&ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response> {
        let timeout = self.timeout_for(client);
        let deadline = Instant::now() + timeout;
        let ticket = self.cancels.start(client);
        let state = self.query_state(client).map_err(pg_error)?;
        let zone = client
            .metadata()
            .get(CLIENT_TIMEZONE_KEY)
            .and_then(|z| session_zone(z).ok().flatten());
        let start = async {
            self.lake.refresh_names().await;
            let plan = state
                .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
                .await
                .map_err(pg_error)?;
            read_only_plans()
                .verify_plan(&plan)
                .map_err(|e| user_error(READ_ONLY, format!("{e}: auditlake serve is read-only")))?;
            let plan = match params {
                Some(params) => plan.replace_params_with_values(params).map_err(pg_error)?,
                None => plan,
            };
            let df = in_session_zone(DataFrame::new(state, plan), zone.as_ref());
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            let (started_tx, started_rx) = oneshot::channel();
            let (batch_tx, batch_rx) = mpsc::channel(BATCHES_IN_FLIGHT);
            let task = self.cpu.spawn(drive(df, started_tx, batch_tx));
            let task = AbortOnDrop(Some(task));
            started_rx
                .await
                .map_err(|_| user_error("XX000", "the query task ended early".to_string()))?
                .map_err(pg_error)?;
            Ok::<_, PgWireError>((schema, batch_rx, task))
        };
        let (schema, batches, task) = tokio::time::timeout_at(deadline, start)
            .await
            .map_err(|_| timeout_error(timeout))??;

        let format_options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &schema,
            format,
            Some(format_options),
        )?);
        let bounded = Bounded {
            batches: Some(batches),
            task,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            ticket,
        };
        let row_fields = fields.clone();
        let rows = bounded
            .map(move |batch| {
                let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> =
                    match batch {
                        Ok(batch) => encode_recordbatch(row_fields.clone(), batch),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    };
                stream::iter(rows)
            })
            .flatten();
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }
}

/// The zone `SET TIME ZONE` names, as arrow spells it: `None` for UTC (and
/// PostgreSQL's `DEFAULT`/`LOCAL`, the server's zone, which is UTC); an
/// error for a name arrow's zone database does not know. Offsets are ISO's,
/// east of UTC (`'+08:00'`), not POSIX's.
pub fn session_zone(zone: &str) -> Result<Option<String>, DataFusionError> {
    if zone.eq_ignore_ascii_case("default")
        || zone.eq_ignore_ascii_case("local")
        || crate::functions::is_utc(zone)
    {
        return Ok(None);
    }
    datafusion::arrow::array::timezone::Tz::from_str(zone)?;
    Ok(Some(zone.to_string()))
}

/// `df` with its zoned timestamp columns shown in the session's zone, as
/// PostgreSQL shows `timestamptz` after `SET TIME ZONE` (the same instants;
/// the lake stores UTC).
fn in_session_zone(df: DataFrame, zone: Option<&String>) -> DataFrame {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{Expr, cast};
    let Some(zone) = zone else {
        return df;
    };
    let zoned = |t: &DataType| matches!(t, DataType::Timestamp(_, Some(z)) if z.as_ref() != zone);
    if !df.schema().fields().iter().any(|f| zoned(f.data_type())) {
        return df;
    }
    let columns: Vec<Expr> = df
        .schema()
        .iter()
        .map(|(qualifier, field)| {
            let column = Expr::Column(datafusion::common::Column::new(
                qualifier.cloned(),
                field.name(),
            ));
            match field.data_type() {
                DataType::Timestamp(unit, Some(_)) if zoned(field.data_type()) => cast(
                    column,
                    DataType::Timestamp(*unit, Some(zone.as_str().into())),
                )
                .alias_qualified(qualifier.cloned(), field.name()),
                _ => column,
            }
        })
        .collect();
    // A projection that cannot be restated (two outputs of one name) keeps
    // UTC rather than failing the query.
    df.clone().select(columns).unwrap_or(df)
}

/// Plans a client may run: no DDL (`CREATE`, `DROP`, `SELECT ... INTO`), no DML
/// (`INSERT`, `COPY ... TO`), no statements (`SET datafusion.*`).
fn read_only_plans() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Batches a query may have produced ahead of the client.
const BATCHES_IN_FLIGHT: usize = 2;

/// Runs a query on the query runtime: starts the physical plan, reports whether
/// it started, then forwards its batches until the plan ends or the receiver is
/// gone (deadline, cancel, client left). DataFusion spawns the plan's own tasks
/// on this same runtime, so all of the query's CPU work stays there.
async fn drive(
    df: DataFrame,
    started: oneshot::Sender<Result<(), DataFusionError>>,
    batches: mpsc::Sender<Result<RecordBatch, DataFusionError>>,
) {
    let mut stream = match df.execute_stream().await {
        Ok(stream) => {
            let _ = started.send(Ok(()));
            stream
        }
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    while let Some(batch) = stream.next().await {
        let failed = batch.is_err();
        if batches.send(batch).await.is_err() || failed {
            return;
        }
    }
}

/// Aborts the query task when the rows are no longer wanted.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The rows of a running query as the client reads them: ends with an error at
/// the deadline or on a cancel request, and then aborts the query task (which
/// drops the plan: DataFusion stops its tasks and frees memory and spill files).
struct Bounded {
    batches: Option<mpsc::Receiver<Result<RecordBatch, DataFusionError>>>,
    task: AbortOnDrop,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    ticket: CancelTicket,
}

impl Stream for Bounded {
    type Item = PgWireResult<RecordBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(batches) = this.batches.as_mut() else {
            return Poll::Ready(None);
        };
        let error = if this.ticket.poll_cancelled(cx) {
            Some(canceled_error())
        } else if this.deadline.as_mut().poll(cx).is_ready() {
            Some(timeout_error(this.timeout))
        } else {
            match batches.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => return Poll::Ready(Some(Ok(batch))),
                Poll::Ready(Some(Err(e))) => Some(pg_error(e)),
                // The task dropped its sender: finished, or panicked.
                Poll::Ready(None) => match this.task.0.as_mut() {
                    Some(task) => match Pin::new(task).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(())) => None,
                        Poll::Ready(Err(e)) => Some(user_error(
                            "XX000",
                            format!(
                                "internal error (a bug in auditlake): the query task failed: {e}"
                            ),
                        )),
                    },
                    None => None,
                },
                Poll::Pending => return Poll::Pending,
            }
        };
        this.batches = None;
        if let Some(task) = this.task.0.take() {
            task.abort();
        }
        Poll::Ready(error.map(Err))
    }
}

/// Running queries by connection, for PostgreSQL cancel requests (a new
/// connection carrying the (pid, secret key) the server gave the client).
#[derive(Debug, Default)]
pub struct Cancels {
    next: AtomicU64,
    running: Mutex<HashMap<ConnectionKey, Vec<RunningQuery>>>,
}

/// A running query's id and the sender that cancels it.
type RunningQuery = (u64, oneshot::Sender<()>);

/// A connection's (pid, secret key), as a cancel request names it.
type ConnectionKey = (i32, Vec<u8>);

impl Cancels {
    fn start<C: ClientInfo + ?Sized>(self: &Arc<Self>, client: &C) -> CancelTicket {
        let (pid, secret) = client.pid_and_secret_key();
        let key = (pid, secret.to_bytes().to_vec());
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.running
            .lock()
            .expect("cancels lock")
            .entry(key.clone())
            .or_default()
            .push((id, tx));
        CancelTicket {
            cancels: self.clone(),
            key,
            id,
            rx: Some(rx),
        }
    }

    /// Cancels every running query of the connection; `true` if there was one.
    pub fn cancel(&self, pid: i32, secret: &SecretKey) -> bool {
        let key = (pid, secret.to_bytes().to_vec());
        let running = self
            .running
            .lock()
            .expect("cancels lock")
            .remove(&key)
            .unwrap_or_default();
        let any = !running.is_empty();
        for (_, tx) in running {
            let _ = tx.send(());
        }
        any
    }
}

/// One running query's registration in [`Cancels`]; removed on drop.
struct CancelTicket {
    cancels: Arc<Cancels>,
    key: ConnectionKey,
    id: u64,
    rx: Option<oneshot::Receiver<()>>,
}

impl CancelTicket {
    fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(_)) => {
                self.rx = None;
                false
            }
            Poll::Pending => false,
        }
    }
}

impl Drop for CancelTicket {
    fn drop(&mut self) {
        let mut running = self.cancels.running.lock().expect("cancels lock");
        if let Some(queries) = running.get_mut(&self.key) {
            queries.retain(|(id, _)| *id != self.id);
            if queries.is_empty() {
                running.remove(&self.key);
            }
        }
    }
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

fn timeout_error(timeout: Duration) -> PgWireError {
    user_error(
        QUERY_CANCELED,
        format!(
            "canceling statement due to statement timeout ({} ms; --query-timeout or a lower \
             SET statement_timeout)",
            timeout.as_millis()
        ),
    )
}

fn canceled_error() -> PgWireError {
    user_error(
        QUERY_CANCELED,
        "canceling statement due to user request".to_string(),
    )
}

/// A DataFusion error as the PostgreSQL error a client expects, by whose fault
/// it is: the SQL (class 42), the data (22), resources (53), missing features
/// (0A), or the server (XX).
pub fn pg_error(e: DataFusionError) -> PgWireError {
    let code = sqlstate(&e);
    user_error(code, e.to_string())
}

fn sqlstate(e: &DataFusionError) -> &'static str {
    use datafusion::arrow::error::ArrowError;
    use datafusion::common::SchemaError;
    match e.find_root() {
        DataFusionError::SQL(..) => "42601",
        DataFusionError::Plan(msg) if msg.contains("not found") && msg.contains("table") => "42P01",
        DataFusionError::Plan(msg) if msg.contains("Invalid function") => "42883",
        DataFusionError::Plan(_) => "42000",
        DataFusionError::SchemaError(e, _) if matches!(**e, SchemaError::FieldNotFound { .. }) => {
            "42703"
        }
        DataFusionError::SchemaError(..) => "42000",
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::ArrowError(e, _) => match **e {
            ArrowError::DivideByZero => "22012",
            ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
            _ => "22000",
        },
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => "58030",
        _ => "XX000",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_postgres_codes() {
        let code = |e: DataFusionError| match pg_error(e) {
            PgWireError::UserError(info) => info.code.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(DataFusionError::Plan(
                "table 'datafusion.public.nope' not found".into()
            )),
            "42P01"
        );
        assert_eq!(
            code(DataFusionError::ResourcesExhausted("pool".into()).context("running")),
            "53200"
        );
        assert_eq!(code(DataFusionError::Internal("bug".into())), "XX000");
    }
}
