//! The pgwire handlers: startup (authentication), simple and extended queries,
//! cancel requests.
//!
//! datafusion-postgres gives the PostgreSQL dialect rewrites (what psql and BI
//! tools send to `pg_catalog`), the extended-protocol parser, Arrow -> pg
//! encoding, and the hooks that keep client session settings (`SET`/`SHOW`,
//! `BEGIN`/`COMMIT`). Its own handlers run statements on one shared
//! `SessionContext` with no bound on a query's streaming phase and plan
//! prepared statements once; so this module owns the dispatch: every statement
//! goes through [`policy::classify`], queries through [`Executor::run`].

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::{DfSessionService, Parser, pgwire};
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, METADATA_USER,
    PgWireServerHandlers,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::auth::{Credentials, FAILED_LOGIN_DELAY};
use super::exec::{Cancels, Executor, pg_error};
use super::policy::{self, Action};

/// The statement type of datafusion-postgres' extended-protocol parser: the SQL,
/// and the parsed statement with its parse-time plan.
type ParsedStatement = (
    String,
    Option<(Statement, datafusion::logical_expr::LogicalPlan)>,
);

/// Query handling shared by every connection.
pub struct LakeService {
    exec: Executor,
    ctx: Arc<SessionContext>,
    sql_parser: PostgresCompatibilityParser,
    parser: Arc<Parser>,
    transactions: TransactionStatementHook,
    set_show: SetShowHook,
}

impl LakeService {
    pub fn new(ctx: Arc<SessionContext>, exec: Executor) -> Self {
        // The extended-protocol parser runs these hooks at Parse: the policy
        // first, so a refused statement is never even planned.
        let parse_hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(PolicyHook),
            Arc::new(TransactionStatementHook),
            Arc::new(SetShowHook),
        ];
        let parser = DfSessionService::new_with_hooks(ctx.clone(), parse_hooks).query_parser();
        Self {
            exec,
            ctx,
            sql_parser: PostgresCompatibilityParser::new(),
            parser,
            transactions: TransactionStatementHook,
            set_show: SetShowHook,
        }
    }

    async fn simple_statement(
        &self,
        client: &mut dyn HookClient,
        statement: &Statement,
    ) -> PgWireResult<Response> {
        let action = policy::classify(statement);
        if let Action::Refuse(refusal) = action {
            tracing::info!(code = refusal.code, statement = %statement, "statement refused");
            return Err(refusal.into());
        }
        // Transaction statements, and the aborted-transaction check for the rest.
        if let Some(response) = self
            .transactions
            .handle_simple_query(statement, &self.ctx, client)
            .await
        {
            return response;
        }
        match action {
            Action::Session => match self
                .set_show
                .handle_simple_query(statement, &self.ctx, client)
                .await
            {
                Some(response) => response,
                None => Ok(Response::Execution(Tag::new("SET"))),
            },
            Action::Ignore(tag) => Ok(Response::Execution(Tag::new(tag))),
            Action::Query => {
                self.exec
                    .run(&*client, statement, None, &Format::UnifiedText)
                    .await
            }
            Action::Refuse(_) => unreachable!("handled above"),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for LakeService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        tracing::debug!(query, "simple query");
        let statements = self
            .sql_parser
            .parse(&super::pg_compat::rewrite_client_query(query))
            .map_err(|e| pg_error(e.into()))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in &statements {
            match self.simple_statement(client, statement).await {
                Ok(response) => responses.push(response),
                // Like PostgreSQL, the first failing statement ends the query
                // string; the results before it are sent.
                Err(e) if responses.is_empty() => return Err(e),
                Err(e) => {
                    responses.push(Response::Error(Box::new(ErrorInfo::from(e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for LakeService {
    type Statement = ParsedStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (sql, Some((statement, plan))) = &portal.statement.statement else {
            return Ok(Response::EmptyQuery);
        };
        tracing::debug!(query = sql, "extended query");
        let action = policy::classify(statement);
        if let Action::Refuse(refusal) = action {
            return Err(refusal.into());
        }
        let no_params = ParamValues::List(vec![]);
        if let Some(response) = self
            .transactions
            .handle_extended_query(statement, plan, &no_params, &self.ctx, client)
            .await
        {
            return response;
        }
        match action {
            Action::Session => match self
                .set_show
                .handle_extended_query(statement, plan, &no_params, &self.ctx, client)
                .await
            {
                Some(response) => response,
                None => Ok(Response::Execution(Tag::new("SET"))),
            },
            Action::Ignore(tag) => Ok(Response::Execution(Tag::new(tag))),
            Action::Query => {
                let params = bind_parameters(portal, plan)?;
                // Planned again (not the Parse-time plan): a prepared statement
                // that a driver reuses for hours must still see new commits.
                self.exec
                    .run(
                        &*client,
                        statement,
                        Some(&params),
                        &portal.result_column_format,
                    )
                    .await
            }
            Action::Refuse(_) => unreachable!("handled above"),
        }
    }
}

/// Decodes the portal's bound parameters with the types the plan infers for
/// `$1, $2, ...` (the client's own type hints win, as in PostgreSQL).
fn bind_parameters(
    portal: &Portal<ParsedStatement>,
    plan: &datafusion::logical_expr::LogicalPlan,
) -> PgWireResult<ParamValues> {
    let types = plan.get_parameter_types().map_err(pg_error)?;
    let mut ordered: Vec<_> = types.into_iter().collect();
    ordered.sort_by_key(|(id, _)| {
        id.trim_start_matches('$')
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    let types: Vec<_> = ordered.iter().map(|(_, t)| t.as_ref()).collect();
    datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters(portal, &types)
}

/// The read-only policy at the extended protocol's Parse step.
#[derive(Debug)]
struct PolicyHook;

#[async_trait]
impl QueryHook for PolicyHook {
    async fn handle_simple_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<datafusion::logical_expr::LogicalPlan>> {
        use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
        match policy::classify(statement) {
            Action::Refuse(refusal) => Some(Err(refusal.into())),
            Action::Ignore(_) => Some(Ok(LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(datafusion::common::DFSchema::empty()),
            }))),
            Action::Query | Action::Session => None,
        }
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &datafusion::logical_expr::LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

/// Authentication of one connection.
pub enum Startup {
    /// No password configured (loopback only): any client, as the configured user.
    Trust(Trust),
    /// SCRAM-SHA-256; over TLS also SCRAM-SHA-256-PLUS (channel binding), which
    /// must not be offered on a plain connection (libpq refuses the server).
    Scram {
        plain: Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
        tls: Option<Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>>,
        /// TLS is configured: plain connections only from loopback.
        tls_required: bool,
    },
}

/// Trust authentication that still insists on the configured user name.
pub struct Trust {
    user: String,
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Trust {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Trust(trust) => {
                if let PgWireFrontendMessage::Startup(startup) = &message {
                    let user = startup.parameters.get(METADATA_USER).map(String::as_str);
                    if user != Some(trust.user.as_str()) {
                        return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                            "FATAL".to_string(),
                            "28000".to_string(),
                            format!("role \"{}\" does not exist", user.unwrap_or("")),
                        ))));
                    }
                }
                StartupHandler::on_startup(trust, client, message).await
            }
            Startup::Scram {
                plain,
                tls,
                tls_required,
            } => {
                if *tls_required && !client.is_secure() && !client.socket_addr().ip().is_loopback()
                {
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".to_string(),
                        "28000".to_string(),
                        "this server requires TLS for remote connections (sslmode=require)"
                            .to_string(),
                    ))));
                }
                let scram = match tls {
                    Some(tls) if client.is_secure() => tls,
                    _ => plain,
                };
                let result = scram.on_startup(client, message).await;
                if let Err(PgWireError::InvalidPassword(_)) = &result {
                    tracing::warn!(
                        user = client.metadata().get(METADATA_USER).map(String::as_str),
                        peer = %client.socket_addr(),
                        "password authentication failed"
                    );
                    tokio::time::sleep(FAILED_LOGIN_DELAY).await;
                }
                result
            }
        }
    }
}

/// Cancel requests stop both the planning step (pgwire's connection manager) and
/// the streaming step ([`Cancels`]).
pub struct CancelQueries {
    connections: Arc<ConnectionManager>,
    cancels: Arc<Cancels>,
}

#[async_trait]
impl CancelHandler for CancelQueries {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let streaming = self.cancels.cancel(request.pid, &request.secret_key);
        let known = self
            .connections
            .cancel(request.pid, &request.secret_key)
            .await;
        tracing::info!(pid = request.pid, known, streaming, "cancel request");
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        tracing::debug!(peer = %client.socket_addr(), error = %error, "error sent to client");
    }
}

/// Everything a connection needs; [`PgWireServerHandlers::startup_handler`] is
/// called once per connection, so SCRAM state is never shared.
pub struct Handlers {
    pub service: Arc<LakeService>,
    pub user: String,
    pub credentials: Option<Arc<Credentials>>,
    /// PEM of the server certificate, for SCRAM channel binding.
    pub cert_pem: Option<Vec<u8>>,
    pub connections: Arc<ConnectionManager>,
    pub cancels: Arc<Cancels>,
}

impl Handlers {
    fn server_parameters() -> DefaultServerParameterProvider {
        let mut params = DefaultServerParameterProvider::default();
        params.default_transaction_read_only = true;
        params.is_superuser = false;
        params
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(match &self.credentials {
            None => Startup::Trust(Trust {
                user: self.user.clone(),
                connections: self.connections.clone(),
            }),
            Some(credentials) => {
                let sasl = |scram: ScramAuth| {
                    Box::new(
                        SASLAuthStartupHandler::new(Arc::new(Self::server_parameters()))
                            .with_scram(scram)
                            .with_connection_manager(self.connections.clone()),
                    )
                };
                let tls = self.cert_pem.as_ref().and_then(|pem| {
                    let mut scram = ScramAuth::new(credentials.clone());
                    match scram.configure_certificate(pem) {
                        Ok(()) => Some(sasl(scram)),
                        Err(e) => {
                            tracing::debug!(error = %e, "no SCRAM channel binding for this certificate");
                            None
                        }
                    }
                });
                Startup::Scram {
                    plain: sasl(ScramAuth::new(credentials.clone())),
                    tls,
                    tls_required: self.cert_pem.is_some(),
                }
            }
        })
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(CancelQueries {
            connections: self.connections.clone(),
            cancels: self.cancels.clone(),
        })
    }
}
