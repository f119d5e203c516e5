//! `detect`: evaluates the detection rules at one instant and replaces the lake
//! tables `findings` and `obligations`.
//!
//! Semantics (SPEC sections 3, 4, 6):
//! - Everything is evaluated *at* `now`: events after it take no part, so the
//!   same lake and the same `now` give the same findings, byte for byte, however
//!   much was ingested since. `now` is a parameter; nothing here reads a clock.
//! - Each rule is one SQL query ([`crate::rules`]) over helper views
//!   ([`crate::views`]); all rules are planned before any runs, so a bad rule
//!   fails the run before anything is written.
//! - Obligations are computed once (view `obligations_at`) and materialised
//!   for the rules that read them (`deletion_overdue`).
//! - Findings are sorted by rule_id, app_id, user_id, event_time,
//!   window_start, created_at, scope, reason, event_ids (nulls first).
//! - A run replaces each table in one Delta commit (two tables, two commits;
//!   obligations first). With `with_rules_only` or `with_since` the run covers
//!   only those rules / that time span: findings of the table outside it are
//!   kept, those inside replaced; a run whose rules leave out
//!   `deletion_overdue` leaves `obligations` as it was.
//!
//! ```text
//! Detect::new(lake).with_now(t)...execute()
//!   session(lake) + views($now, $allowed_regions, policy) -> plan every rule
//!   obligations_at -> MemTable --> rules -> normalise -> sort
//!   --> overwrite obligations, overwrite findings --> (Findings, Metrics)
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::row::{RowConverter, SortField};
use auditlake_schemas::{Lake, WriteOptions, tables};
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::obligations::{ObligationPolicy, STATES};
use crate::rules::{Rule, RuleSet, bind};
use crate::{Error, Result};

/// Client regions to which personal data may go without export approval.
pub const DEFAULT_ALLOWED_REGIONS: [&str; 1] = ["CN"];

/// Memory for keeping the `access` view of a run in memory (Arrow bytes):
/// about 13M calls (5M generated calls took 1.59 GB).
pub const DEFAULT_MATERIALIZE_BUDGET: usize = 4 << 30;

/// The fields of a printed finding, in order (SPEC section 6).
pub const SPEC_FIELDS: [&str; 14] = [
    "rule_id",
    "clause",
    "severity",
    "app_id",
    "developer_id",
    "user_id",
    "scope",
    "reason",
    "event_time",
    "window_start",
    "window_end",
    "created_at",
    "due_at",
    "event_ids",
];

/// Evaluates the rules at one instant and writes `findings` and `obligations`.
#[derive(Debug, Clone)]
pub struct Detect {
    lake: Lake,
    now: Option<DateTime<Utc>>,
    rules: RuleSet,
    only: Option<Vec<String>>,
    since: Option<DateTime<Utc>>,
    policy: ObligationPolicy,
    allowed_regions: Vec<String>,
    write: bool,
    write_options: WriteOptions,
    materialize_budget: usize,
}

/// What a run found: the rows written to `findings` and `obligations`.
#[derive(Debug, Clone)]
pub struct Findings {
    /// The findings of this run (the `findings` schema), sorted. (After a
    /// partial run the table also holds the earlier findings outside it.)
    pub findings: RecordBatch,
    /// Every obligation at `now` (the `obligations` schema), sorted.
    pub obligations: RecordBatch,
}

/// Metrics of one run; serialisable for logs and evidence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// The evaluation time (RFC 3339).
    pub now: String,
    /// Per rule run: findings and time.
    pub rules: Vec<RuleMetrics>,
    /// Findings of this run.
    pub findings: usize,
    /// Findings of earlier runs kept (outside `--rule` / `--since`).
    pub findings_kept: usize,
    /// Obligations per state.
    pub obligations: BTreeMap<String, usize>,
    /// Delta versions written (None: not written).
    pub findings_version: Option<u64>,
    /// Delta version of `obligations` written.
    pub obligations_version: Option<u64>,
    /// Time to open the lake and plan every rule.
    pub plan_ms: u64,
    /// Time to compute the obligations.
    pub obligations_ms: u64,
    /// Time to write both tables.
    pub write_ms: u64,
    /// Wall time of the whole run.
    pub total_ms: u64,
}

/// Metrics of one rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleMetrics {
    /// Rule id.
    pub id: String,
    /// Where the rule came from (`builtin:...` or a path).
    pub source: String,
    /// Findings it produced (after `--since`).
    pub findings: usize,
    /// Execution time.
    pub ms: u64,
}

impl Detect {
    /// A run over `lake` with the built-in rules, the default obligation
    /// policy and allowed regions. Set the evaluation time with
    /// [`with_now`](Self::with_now) (required).
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            now: None,
            rules: RuleSet::builtin(),
            only: None,
            since: None,
            policy: ObligationPolicy::default(),
            allowed_regions: DEFAULT_ALLOWED_REGIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            write: true,
            write_options: WriteOptions::default(),
            materialize_budget: DEFAULT_MATERIALIZE_BUDGET,
        }
    }

    /// The evaluation time: rules see only events at or before it.
    pub fn with_now(mut self, now: DateTime<Utc>) -> Self {
        self.now = Some(now);
        self
    }

    /// The rule set (default: [`RuleSet::builtin`]).
    pub fn with_rules(mut self, rules: RuleSet) -> Self {
        self.rules = rules;
        self
    }

    /// Adds or overrides rules from a directory of `<id>.sql` files.
    pub fn with_rules_dir(mut self, dir: impl Into<PathBuf>) -> Result<Self> {
        self.rules = self.rules.with_dir(&dir.into())?;
        Ok(self)
    }

    /// Runs only these rule ids (findings of the others are kept).
    pub fn with_rules_only<S: Into<String>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        self.only = (!ids.is_empty()).then_some(ids);
        self
    }

    /// Reports only findings whose time (event_time, else created_at, else the
    /// end of the window) is at or after `since`; the table keeps the others.
    pub fn with_since(mut self, since: Option<DateTime<Utc>>) -> Self {
        self.since = since;
        self
    }

    /// Deadlines of deletion obligations (default: SPEC section 4).
    pub fn with_policy(mut self, policy: ObligationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Client regions to which data may go without export approval
    /// (`cross_border`; default `CN`).
    pub fn with_allowed_regions<S: Into<String>>(
        mut self,
        regions: impl IntoIterator<Item = S>,
    ) -> Self {
        self.allowed_regions = regions.into_iter().map(Into::into).collect();
        self
    }

    /// Whether to write `findings` and `obligations` (default true; false =
    /// dry run).
    pub fn with_write(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// How the tables are written.
    pub fn with_write_options(mut self, opts: WriteOptions) -> Self {
        self.write_options = opts;
        self
    }

    /// The SQL parameters of this run: `$now` and `$allowed_regions` as
    /// DataFusion literals.
    pub fn parameters(&self) -> Result<Vec<(&'static str, String)>> {
        let now = self.now()?;
        Ok(parameters(now, &self.allowed_regions))
    }

    fn now(&self) -> Result<DateTime<Utc>> {
        self.now.ok_or_else(|| {
            Error::Config("detect needs an evaluation time: call with_now (--now)".into())
        })
    }

    /// Keep the `access` view (every call up to `now`, the columns rules
    /// read) in memory for the run, while its Arrow data stays within
    /// `budget` bytes: one Parquet scan instead of one per rule (~1.8x faster
    /// on 5M calls), for ~320 bytes per call. 0 = never. Default
    /// [`DEFAULT_MATERIALIZE_BUDGET`].
    pub fn with_materialize_budget(mut self, budget: usize) -> Self {
        self.materialize_budget = budget;
        self
    }

    /// `with_materialize_budget(0)` when false, the default budget when true.
    pub fn with_materialize(self, materialize: bool) -> Self {
        let budget = if materialize {
            DEFAULT_MATERIALIZE_BUDGET
        } else {
            0
        };
        self.with_materialize_budget(budget)
    }

    /// Registers the views of this run in `ctx` (lake tables must be there).
    pub async fn register_views(&self, ctx: &SessionContext) -> Result<()> {
        let materialize: &[&str] = if self.materialize_budget > 0 {
            &["access"]
        } else {
            &[]
        };
        crate::views::register_views(
            ctx,
            &self.parameters()?,
            &self.policy.view_sql(),
            materialize,
            self.materialize_budget,
        )
        .await?;
        Ok(())
    }

    /// Runs the rules, writes the tables (unless a dry run) and returns what
    /// was found.
    pub async fn execute(self) -> Result<(Findings, Metrics)> {
        let started = Instant::now();
        let now = self.now()?;
        let rules = match &self.only {
            Some(ids) => self.rules.clone().select(ids)?,
            None => self.rules.clone(),
        };
        let mut metrics = Metrics {
            now: rfc3339(now.timestamp_micros()),
            ..Metrics::default()
        };
        let ctx = crate::session(&self.lake).await?;
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .sql_parser
            .collect_spans = true;
        self.register_views(&ctx).await?;
        let params = self.parameters()?;
        let mut plans = Vec::with_capacity(rules.len());
        for rule in rules.iter() {
            plans.push((rule, plan_rule(&ctx, rule, &params).await?));
        }
        metrics.plan_ms = started.elapsed().as_millis() as u64;

        let t = Instant::now();
        let obligations = self.obligations(&ctx, now).await?;
        for state in STATES {
            metrics.obligations.insert(state.to_string(), 0);
        }
        let states = obligations
            .column_by_name("state")
            .expect("obligations have a state")
            .as_string::<i32>();
        for s in states.iter().flatten() {
            *metrics.obligations.entry(s.to_string()).or_default() += 1;
        }
        let table = MemTable::try_new(obligations.schema(), vec![vec![obligations.clone()]])?;
        ctx.deregister_table("obligations_at")?;
        ctx.register_table("obligations_at", Arc::new(table))?;
        metrics.obligations_ms = t.elapsed().as_millis() as u64;

        let mut batches = Vec::new();
        for (rule, plan) in plans {
            let t = Instant::now();
            let _span = tracing::info_span!("rule", id = %rule.id).entered();
            // Planned again: `obligations_at` is a table by now, not the view
            // the first plan inlined.
            drop(plan);
            let df = ctx
                .sql(&bind(&rule.sql, &params))
                .await
                .map_err(|e| rule_error(rule, &e))?;
            let out = collect_logged(df, &rule.id)
                .await
                .map_err(|e| e.context_rule(rule))?;
            let mut count = 0;
            for b in out {
                let b = normalise(rule, &b, now)?;
                let b = match self.since {
                    Some(since) => {
                        filter_record_batch(&b, &in_window(&b, since.timestamp_micros()))?
                    }
                    None => b,
                };
                count += b.num_rows();
                batches.push(b);
            }
            let ms = t.elapsed().as_millis() as u64;
            tracing::info!(rule = %rule.id, findings = count, ms, "rule evaluated");
            metrics.rules.push(RuleMetrics {
                id: rule.id.clone(),
                source: rule.source.clone(),
                findings: count,
                ms,
            });
        }
        metrics.findings = batches.iter().map(RecordBatch::num_rows).sum();
        let findings = sort_findings(&concat_batches(&tables::findings(), &batches)?)?;
        // The table gets this run's findings plus, for a partial run, the
        // earlier ones outside it.
        let mut table_rows = findings.clone();
        if self.only.is_some() || self.since.is_some() {
            let mut kept = self.kept_findings(&ctx, &rules).await?;
            metrics.findings_kept = kept.iter().map(RecordBatch::num_rows).sum();
            kept.push(findings.clone());
            table_rows = sort_findings(&concat_batches(&tables::findings(), &kept)?)?;
        }

        if self.write {
            let t = Instant::now();
            // `obligations` is the state `deletion_overdue` reports: a run
            // of other rules only leaves it as the last run that reported
            // it wrote it, so the two tables keep agreeing.
            let reports_obligations = self
                .only
                .as_ref()
                .is_none_or(|ids| ids.iter().any(|id| id == "deletion_overdue"));
            if reports_obligations {
                let out = self
                    .lake
                    .overwrite(
                        tables::OBLIGATIONS,
                        vec![obligations.clone()],
                        &self.write_options,
                    )
                    .await?;
                metrics.obligations_version = out.version;
            }
            let out = self
                .lake
                .overwrite(tables::FINDINGS, vec![table_rows], &self.write_options)
                .await?;
            metrics.findings_version = out.version;
            metrics.write_ms = t.elapsed().as_millis() as u64;
        }
        metrics.total_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            findings = metrics.findings,
            kept = metrics.findings_kept,
            ms = metrics.total_ms,
            "detect done"
        );
        Ok((
            Findings {
                findings,
                obligations,
            },
            metrics,
        ))
    }

    /// The obligations at `now`, in the `obligations` schema, sorted.
    async fn obligations(&self, ctx: &SessionContext, now: DateTime<Utc>) -> Result<RecordBatch> {
        let df = ctx
            .sql(
                "SELECT app_id, user_id, reason, created_at, due_at, fulfilled_at, state, \
                 source_event_id FROM obligations_at \
                 ORDER BY app_id, user_id NULLS FIRST, created_at, reason, source_event_id",
            )
            .await
            .map_err(|e| Error::Internal(format!("view obligations_at: {e}")))?;
        let batches = collect_logged(df, "obligations_at").await?;
        let schema = tables::obligations();
        let n: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let col = match field.name().as_str() {
                "evaluated_at" => Arc::new(
                    TimestampMicrosecondArray::from(vec![now.timestamp_micros(); n])
                        .with_timezone("UTC"),
                ) as ArrayRef,
                "date" => {
                    let created = column_of(&batches, "created_at", field_type("created_at"))?;
                    let created =
                        created.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                    Arc::new(Date32Array::from_iter_values(
                        created.values().iter().map(|t| date_of(*t)),
                    ))
                }
                name => column_of(&batches, name, field.data_type().clone())?,
            };
            columns.push(col);
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Rows of the current `findings` table outside this run's rules or span.
    async fn kept_findings(
        &self,
        ctx: &SessionContext,
        rules: &RuleSet,
    ) -> Result<Vec<RecordBatch>> {
        let batches = ctx
            .sql("SELECT * FROM findings")
            .await
            .map_err(|e| Error::Internal(format!("reading findings: {e}")))?
            .collect()
            .await?;
        let mut kept = Vec::new();
        for b in batches {
            let b = conform(&b, &tables::findings())?;
            let rule_ids = b.column(0).as_string::<i32>();
            let since = self.since.map(|s| s.timestamp_micros());
            let window = since.map(|s| in_window(&b, s));
            let keep: BooleanArray = (0..b.num_rows())
                .map(|i| {
                    let covered_rule = rules.get(rule_ids.value(i)).is_some();
                    let covered_time = window.as_ref().is_none_or(|w| w.value(i));
                    Some(!(covered_rule && covered_time))
                })
                .collect();
            kept.push(filter_record_batch(&b, &keep)?);
        }
        Ok(kept)
    }
}

/// Runs a query; at debug level logs its physical plan with metrics (the
/// way to see where a rule spends its time: `--log auditlake_query=debug`).
async fn collect_logged(
    df: datafusion::dataframe::DataFrame,
    what: &str,
) -> Result<Vec<RecordBatch>> {
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let batches = datafusion::physical_plan::collect(plan.clone(), task).await?;
    if tracing::enabled!(tracing::Level::DEBUG) {
        let shown = datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
            plan.as_ref(),
        )
        .indent(true);
        tracing::debug!(query = what, "plan with metrics:\n{shown}");
    }
    Ok(batches)
}

/// `$now` and `$allowed_regions` as DataFusion SQL literals.
pub fn parameters(now: DateTime<Utc>, allowed_regions: &[String]) -> Vec<(&'static str, String)> {
    let regions = if allowed_regions.is_empty() {
        // `x NOT IN (NULL)` is never true: with no allowed region every
        // region is outside, so use a value no region has.
        "''".to_string()
    } else {
        allowed_regions
            .iter()
            .map(|r| format!("'{}'", r.replace('\'', "''")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        (
            "now",
            format!(
                "arrow_cast('{}', 'Timestamp(µs, \"UTC\")')",
                rfc3339(now.timestamp_micros())
            ),
        ),
        ("allowed_regions", regions),
    ]
}

async fn plan_rule(
    ctx: &SessionContext,
    rule: &Rule,
    params: &[(&str, String)],
) -> Result<LogicalPlan> {
    let sql = bind(&rule.sql, params);
    let plan = ctx
        .state()
        .create_logical_plan(&sql)
        .await
        .map_err(|e| rule_error(rule, &e))?;
    for field in plan.schema().fields() {
        if !crate::rules::FINDING_COLUMNS.contains(&field.name().as_str()) {
            return Err(Error::Rule {
                file: rule.source.clone(),
                line: rule.statement_line,
                message: format!(
                    "the query returns column {:?}; a rule returns only finding columns: {}",
                    field.name(),
                    crate::rules::FINDING_COLUMNS.join(", ")
                ),
            });
        }
        // A number as a time (`42 AS event_time`) would cast to 1970; a
        // scalar as a list would not cast at all, later and less clearly.
        let to = field_type(field.name());
        let fits = match &to {
            DataType::Timestamp(..) => matches!(
                field.data_type(),
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null
            ),
            DataType::List(_) => matches!(
                field.data_type(),
                DataType::List(_)
                    | DataType::LargeList(_)
                    | DataType::FixedSizeList(..)
                    | DataType::Null
            ),
            _ => true,
        };
        if !fits {
            return Err(Error::Rule {
                file: rule.source.clone(),
                line: rule.statement_line,
                message: format!(
                    "the query returns {} as {}; a finding's {} is {}",
                    field.name(),
                    field.data_type(),
                    field.name(),
                    if matches!(to, DataType::Timestamp(..)) {
                        "a timestamp"
                    } else {
                        "a list of strings"
                    }
                ),
            });
        }
    }
    Ok(plan)
}

fn rule_error(rule: &Rule, e: &datafusion::error::DataFusionError) -> Error {
    let line = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| s.start.line as usize)
        .filter(|l| *l > 0)
        .or_else(|| crate::rules::line_of_parser_error(&e.to_string()))
        .unwrap_or(rule.statement_line);
    Error::Rule {
        file: rule.source.clone(),
        line,
        message: e.to_string(),
    }
}

impl Error {
    /// An error running `rule`: a bug when the rule is built in, else the
    /// rule's own (a division by zero, an overflow), named by its file.
    fn context_rule(self, rule: &Rule) -> Error {
        if rule.source.starts_with("builtin:") {
            Error::Internal(format!("rule {} ({}) failed: {self}", rule.id, rule.source))
        } else {
            Error::Rule {
                file: rule.source.clone(),
                line: rule.statement_line,
                message: format!("the rule failed while running: {self}"),
            }
        }
    }
}

fn field_type(name: &str) -> DataType {
    tables::findings()
        .field_with_name(name)
        .map(|f| f.data_type().clone())
        .unwrap_or(DataType::Utf8)
}

/// One column of `batches` by name, cast to `to` and concatenated.
fn column_of(batches: &[RecordBatch], name: &str, to: DataType) -> Result<ArrayRef> {
    let parts: Vec<ArrayRef> = batches
        .iter()
        .map(|b| {
            let col = b
                .column_by_name(name)
                .ok_or_else(|| Error::Internal(format!("column {name} missing")))?;
            Ok(cast(col, &to)?)
        })
        .collect::<Result<_>>()?;
    if parts.is_empty() {
        return Ok(arrow::array::new_empty_array(&to));
    }
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    Ok(arrow::compute::concat(&refs)?)
}

/// Casts the columns of `b` to `schema` by name (missing = null).
fn conform(b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match b.column_by_name(f.name()) {
            Some(c) => Ok(cast(c, f.data_type())?),
            None => Ok(new_null_array(f.data_type(), b.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A rule's output rows as `findings` rows: columns by name, cast; the header's
/// id, clause and severity; `event_ids` sorted (empty when absent);
/// `evaluated_at` = now; `date` = the UTC date of the finding's own time.
fn normalise(rule: &Rule, b: &RecordBatch, now: DateTime<Utc>) -> Result<RecordBatch> {
    let schema = tables::findings();
    let n = b.num_rows();
    let text = |name: &str, default: &str| -> Result<ArrayRef> {
        Ok(match b.column_by_name(name) {
            Some(c) => {
                let c = cast(c, &DataType::Utf8)?;
                let c = c.as_string::<i32>();
                Arc::new(
                    c.iter()
                        .map(|v| Some(v.unwrap_or(default)))
                        .collect::<StringArray>(),
                )
            }
            None => Arc::new(StringArray::from(vec![default; n])),
        })
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let col: ArrayRef = match field.name().as_str() {
            "rule_id" => Arc::new(StringArray::from(vec![rule.id.as_str(); n])),
            "clause" => text("clause", &rule.clause)?,
            "severity" => {
                let severity = text("severity", &rule.severity)?;
                let values = severity.as_string::<i32>();
                if let Some(bad) = values
                    .iter()
                    .flatten()
                    .find(|v| !crate::rules::SEVERITIES.contains(v))
                {
                    return Err(Error::Rule {
                        file: rule.source.clone(),
                        line: rule.statement_line,
                        message: format!(
                            "the rule returned severity {bad:?}; expected one of: {}",
                            crate::rules::SEVERITIES.join(", ")
                        ),
                    });
                }
                severity
            }
            "event_ids" => match b.column_by_name("event_ids") {
                Some(c) => sorted_lists(&cast(c, field.data_type())?),
                None => Arc::new(ListArray::new(
                    Arc::new(Field::new("element", DataType::Utf8, true)),
                    OffsetBuffer::new_zeroed(n),
                    Arc::new(StringArray::from(Vec::<&str>::new())),
                    None,
                )),
            },
            "evaluated_at" => Arc::new(
                TimestampMicrosecondArray::from(vec![now.timestamp_micros(); n])
                    .with_timezone("UTC"),
            ),
            "date" => {
                let time = |name: &str| -> Result<Option<ArrayRef>> {
                    b.column_by_name(name)
                        .map(|c| cast(c, &field_type(name)).map_err(Error::from))
                        .transpose()
                };
                let candidates: Vec<ArrayRef> = ["event_time", "window_start", "created_at"]
                    .iter()
                    .filter_map(|n| time(n).transpose())
                    .collect::<Result<_>>()?;
                Arc::new(Date32Array::from_iter_values((0..n).map(|i| {
                    let t = candidates
                        .iter()
                        .map(|c| c.as_primitive::<arrow::datatypes::TimestampMicrosecondType>())
                        .find(|c| c.is_valid(i))
                        .map_or(now.timestamp_micros(), |c| c.value(i));
                    date_of(t)
                })))
            }
            name => match b.column_by_name(name) {
                Some(c) => cast(c, field.data_type())?,
                None => new_null_array(field.data_type(), n),
            },
        };
        columns.push(col);
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// Each list's strings sorted (nulls dropped), so evidence prints the same
/// whatever order a plan produced it in.
fn sorted_lists(c: &ArrayRef) -> ArrayRef {
    let list = c.as_list::<i32>();
    let mut builder = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new())
        .with_field(Arc::new(Field::new("element", DataType::Utf8, true)));
    for i in 0..list.len() {
        if list.is_null(i) {
            builder.append(true);
            continue;
        }
        let v = list.value(i);
        let v = v.as_string::<i32>();
        let mut items: Vec<&str> = v.iter().flatten().collect();
        items.sort_unstable();
        for s in items {
            builder.values().append_value(s);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// Whether each finding's time (event_time, else created_at, else
/// window_end; none = always) is at or after `since` (UTC µs).
fn in_window(b: &RecordBatch, since: i64) -> BooleanArray {
    let col = |name: &str| {
        b.column_by_name(name).map(|c| {
            c.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone()
        })
    };
    let cols: Vec<_> = ["event_time", "created_at", "window_end"]
        .iter()
        .filter_map(|n| col(n))
        .collect();
    (0..b.num_rows())
        .map(|i| {
            Some(
                cols.iter()
                    .find(|c| c.is_valid(i))
                    .is_none_or(|c| c.value(i) >= since),
            )
        })
        .collect()
}

/// Sorts findings by rule_id, app_id, user_id, event_time, window_start,
/// created_at, scope, reason, event_ids (nulls first).
pub fn sort_findings(b: &RecordBatch) -> Result<RecordBatch> {
    let keys = [
        "rule_id",
        "app_id",
        "user_id",
        "event_time",
        "window_start",
        "created_at",
        "scope",
        "reason",
        "event_ids",
    ];
    let columns: Vec<ArrayRef> = keys
        .iter()
        .map(|k| b.column_by_name(k).expect("findings column").clone())
        .collect();
    let converter = RowConverter::new(
        columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&columns)?;
    let mut idx: Vec<u32> = (0..b.num_rows() as u32).collect();
    idx.sort_by(|x, y| rows.row(*x as usize).cmp(&rows.row(*y as usize)));
    Ok(take_record_batch(b, &arrow::array::UInt32Array::from(idx))?)
}

/// UTC µs as RFC 3339 with `Z`, fractional seconds only when not zero.
pub fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

fn date_of(micros: i64) -> i32 {
    auditlake_schemas::time::date32_of_micros(micros)
}

impl Findings {
    /// Number of findings.
    pub fn len(&self) -> usize {
        self.findings.num_rows()
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.findings.num_rows() == 0
    }

    /// The findings with exactly the SPEC section 6 fields.
    pub fn spec_batch(&self) -> RecordBatch {
        let schema = self.findings.schema();
        let indices: Vec<usize> = SPEC_FIELDS
            .iter()
            .map(|f| schema.index_of(f).expect("findings column"))
            .collect();
        self.findings
            .project(&indices)
            .expect("projection of existing columns")
    }

    /// Writes one JSON object per finding (SPEC fields in order, times RFC
    /// 3339 UTC, null where not applicable).
    pub fn write_jsonl<W: Write>(&self, out: W) -> Result<()> {
        write_jsonl(&self.spec_batch(), out)
    }

    /// Writes the findings as an aligned text table; long evidence lists are
    /// cut to their first three ids and a count.
    pub fn write_table<W: Write>(&self, mut out: W) -> Result<()> {
        let b = self.spec_batch();
        let ids = b.column(b.num_columns() - 1).as_list::<i32>();
        let summary: StringArray = (0..ids.len())
            .map(|i| {
                let v = ids.value(i);
                let v = v.as_string::<i32>();
                let shown: Vec<&str> = v.iter().flatten().take(3).collect();
                Some(match v.len() {
                    0..=3 => shown.join(", "),
                    n => format!("{}, ... ({n} ids)", shown.join(", ")),
                })
            })
            .collect();
        let mut columns = b.columns().to_vec();
        let last = columns.len() - 1;
        columns[last] = Arc::new(summary);
        let mut fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[last] = Field::new("event_ids", DataType::Utf8, true);
        let b = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?;
        let text = arrow::util::pretty::pretty_format_batches(&[b])?;
        writeln!(out, "{text}")?;
        Ok(())
    }
}

/// Writes rows as JSON lines: strings, timestamps as RFC 3339 UTC, dates as
/// `YYYY-MM-DD`, lists as arrays, numbers and booleans as such, null as
/// `null`, fields in column order.
pub fn write_jsonl<W: Write>(b: &RecordBatch, mut out: W) -> Result<()> {
    use arrow::datatypes::{
        Date32Type, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    };
    let schema = b.schema();
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| serde_json::to_string(f.name()).expect("a string"))
        .collect();
    // One cast per column to the few types written below.
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let list = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
    let columns: Vec<ArrayRef> = b
        .columns()
        .iter()
        .map(|c| {
            let to = match c.data_type() {
                DataType::Timestamp(_, _) | DataType::Date64 => utc.clone(),
                DataType::Date32 | DataType::Boolean | DataType::Utf8 => return Ok(c.clone()),
                DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_) => list.clone(),
                t if t.is_integer() => DataType::Int64,
                t if t.is_floating() => DataType::Float64,
                _ => DataType::Utf8,
            };
            Ok(cast(c, &to)?)
        })
        .collect::<Result<_>>()?;
    let mut line = String::with_capacity(512);
    for i in 0..b.num_rows() {
        line.clear();
        line.push('{');
        for (j, col) in columns.iter().enumerate() {
            if j > 0 {
                line.push(',');
            }
            line.push_str(&names[j]);
            line.push(':');
            if col.is_null(i) {
                line.push_str("null");
                continue;
            }
            let value = match col.data_type() {
                DataType::Utf8 => serde_json::Value::from(col.as_string::<i32>().value(i)),
                DataType::Timestamp(_, _) => serde_json::Value::from(rfc3339(
                    col.as_primitive::<TimestampMicrosecondType>().value(i),
                )),
                DataType::Date32 => {
                    let d = col.as_primitive::<Date32Type>().value(i);
                    serde_json::Value::from(
                        chrono::NaiveDate::from_num_days_from_ce_opt(d + 719_163)
                            .map_or_else(|| d.to_string(), |d| d.to_string()),
                    )
                }
                DataType::Boolean => serde_json::Value::from(col.as_boolean().value(i)),
                DataType::Int64 => {
                    serde_json::Value::from(col.as_primitive::<Int64Type>().value(i))
                }
                DataType::Float64 => {
                    serde_json::Value::from(col.as_primitive::<Float64Type>().value(i))
                }
                _ => {
                    let v = col.as_list::<i32>().value(i);
                    let v = v.as_string::<i32>();
                    serde_json::Value::from(
                        v.iter()
                            .map(|s| s.map_or(serde_json::Value::Null, serde_json::Value::from))
                            .collect::<Vec<_>>(),
                    )
                }
            };
            line.push_str(&value.to_string());
        }
        line.push_str("}\n");
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}
