//! The helper views the rules are written against, as SQL (`views/*.sql`),
//! registered in a session before the rules are planned.
//!
//! ```text
//! api_access --> access (<= $now) --> data_access (2xx, user named) --> app_hour_users
//! grants     --> grant_events --> scope_changes --> scope_states --> first_grants
//!                                                               \--> pair_scope_counts
//! apps       --> app_events --> declarations, terminations, app_developers
//! deletions  --> deletion_events --> receipts
//! obligation_sources + policy_deadlines --> obligations_at (state at $now)
//! ```
//!
//! They are plain SQL on purpose: the same files run on DuckDB for the
//! benchmark (`benches/detect.sh`), and an analyst can read every step. The
//! two ideas SQL does not have built in are written as intervals:
//! - active scopes of (app, user) as of a time: `scope_states` holds one row
//!   per change of a scope with `[valid_from, valid_to)` and `active`;
//! - the declaration in force at a time: `declarations`, one interval per
//!   register/update.
//!
//! An event at time `t` finds its interval with an equality join on the keys
//! and `valid_from <= t AND (valid_to IS NULL OR t < valid_to)`.

use std::time::Duration;

use datafusion::prelude::SessionContext;

use crate::rules::bind;
use crate::{Error, Result};

/// The views in the order they are registered: (name, SQL). File names carry
/// a number prefix so that both engines register them in the same order.
pub const VIEWS: [(&str, &str); 16] = [
    ("access", include_str!("views/01_access.sql")),
    ("data_access", include_str!("views/02_data_access.sql")),
    ("grant_events", include_str!("views/03_grant_events.sql")),
    ("app_events", include_str!("views/04_app_events.sql")),
    (
        "deletion_events",
        include_str!("views/05_deletion_events.sql"),
    ),
    ("scope_changes", include_str!("views/06_scope_changes.sql")),
    ("scope_states", include_str!("views/07_scope_states.sql")),
    ("first_grants", include_str!("views/08_first_grants.sql")),
    (
        "pair_scope_counts",
        include_str!("views/09_pair_scope_counts.sql"),
    ),
    ("declarations", include_str!("views/10_declarations.sql")),
    ("terminations", include_str!("views/11_terminations.sql")),
    (
        "app_developers",
        include_str!("views/12_app_developers.sql"),
    ),
    ("receipts", include_str!("views/13_receipts.sql")),
    (
        "app_hour_users",
        include_str!("views/14_app_hour_users.sql"),
    ),
    (
        "obligation_sources",
        include_str!("views/15_obligation_sources.sql"),
    ),
    (
        "obligations_at",
        include_str!("views/16_obligations_at.sql"),
    ),
];

/// The name of the generated view of obligation deadlines per reason.
pub const POLICY_DEADLINES: &str = "policy_deadlines";

/// The SQL of `policy_deadlines(reason, deadline)`: one row per reason and a
/// row `'*'` for reasons the policy does not name.
pub fn policy_deadlines_sql(deadlines: &[(String, Duration)], fallback: Duration) -> String {
    let mut rows: Vec<String> = deadlines
        .iter()
        .map(|(reason, d)| {
            format!(
                "('{}', INTERVAL '{} seconds')",
                reason.replace('\'', "''"),
                d.as_secs()
            )
        })
        .collect();
    rows.push(format!("('*', INTERVAL '{} seconds')", fallback.as_secs()));
    format!(
        "SELECT * FROM (VALUES {}) AS deadlines(reason, deadline)",
        rows.join(", ")
    )
}

/// Registers the generated `policy_deadlines` view and every view of
/// [`VIEWS`] in `ctx`, with `params` bound (see [`crate::rules::bind`]).
///
/// Views named in `materialize` are computed once, right after they are
/// defined, and kept in memory as a table of the same name, so the views and
/// rules built on them read memory instead of Parquet (for `access`: one scan
/// of `api_access` per run instead of one per rule) -- as long as their Arrow
/// data stays within `budget` bytes; past it the view stays a view. Returns
/// the rows kept in memory.
pub async fn register_views(
    ctx: &SessionContext,
    params: &[(&str, String)],
    policy_deadlines: &str,
    materialize: &[&str],
    budget: usize,
) -> Result<usize> {
    create_view(ctx, POLICY_DEADLINES, policy_deadlines).await?;
    let mut rows = 0;
    for (name, sql) in VIEWS {
        create_view(ctx, name, &bind(sql, params)).await?;
        if materialize.contains(&name) {
            rows += materialize_view(ctx, name, budget).await?.unwrap_or(0);
        }
    }
    Ok(rows)
}

/// Collects view `name` into a memory table replacing it, unless its batches
/// pass `budget` bytes (then `None`, and the view is left as it is).
async fn materialize_view(
    ctx: &SessionContext,
    name: &str,
    budget: usize,
) -> Result<Option<usize>> {
    use futures::StreamExt;
    let df = ctx.table(name).await?;
    let schema = df.schema().inner().clone();
    let partitions = ctx.state().config().target_partitions().max(1);
    let mut stream = df.execute_stream().await?;
    let mut parts: Vec<Vec<datafusion::arrow::record_batch::RecordBatch>> =
        vec![Vec::new(); partitions];
    let (mut rows, mut bytes, mut i) = (0usize, 0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if bytes > budget {
            tracing::warn!(
                view = name,
                budget,
                rows,
                "view larger than the memory budget; rules read it from the lake instead"
            );
            return Ok(None);
        }
        parts[i % partitions].push(batch);
        i += 1;
    }
    let table = datafusion::datasource::MemTable::try_new(schema, parts)?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, std::sync::Arc::new(table))?;
    tracing::info!(view = name, rows, bytes, "view kept in memory");
    Ok(Some(rows))
}

async fn create_view(ctx: &SessionContext, name: &str, sql: &str) -> Result<()> {
    let plan = ctx
        .state()
        .create_logical_plan(sql)
        .await
        .map_err(|e| Error::Internal(format!("view {name} does not plan: {e}")))?;
    let view = datafusion::datasource::ViewTable::new(plan, Some(sql.to_string()));
    ctx.deregister_table(name)?;
    ctx.register_table(name, std::sync::Arc::new(view))?;
    Ok(())
}
