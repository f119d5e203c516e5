//! A DataFusion session over the lake: every Delta table under the root is a
//! table of the same name.

use std::sync::Arc;

use auditlake_schemas::{Lake, tables};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;

use crate::Result;
use crate::scan::{LAKE_STORE_URL, LakeScan};

/// The catalog the lake's tables are in (`current_database()` over
/// `serve`, `table_catalog` in `information_schema`).
pub const CATALOG: &str = "auditlake";

/// Session settings tuned for the lake (measured with `benches/bench.py`):
///
/// - filter pushdown into the Parquet scan: point lookups by user ~7x faster;
/// - `repartition_sorts` off: with it on, DataFusion sorts each input
///   partition below a hash join whose output keeps the probe side's order, so
///   `... NOT EXISTS (...) ORDER BY event_id` sorted all 940k probe rows
///   instead of the 3 survivors (611 ms -> 157 ms at 1M events); a final sort
///   runs on one core instead, which on 2 cores costs little;
/// - information_schema for clients.
///
/// Any DataFusion setting can be overridden from the environment, named as
/// datafusion-cli names it: `datafusion.optimizer.repartition_sorts` is
/// `DATAFUSION_OPTIMIZER_REPARTITION_SORTS=true` (a bad value is logged and
/// ignored).
pub fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_default_catalog_and_schema(CATALOG, "public");
    let opts = config.options_mut();
    opts.execution.parquet.pushdown_filters = true;
    opts.execution.parquet.reorder_filters = true;
    opts.optimizer.repartition_sorts = false;
    apply_env_overrides(&mut config, |name| std::env::var(name).ok());
    config
}

/// Sets every option whose `DATAFUSION_*` variable `lookup` finds.
fn apply_env_overrides(config: &mut SessionConfig, lookup: impl Fn(&str) -> Option<String>) {
    for entry in config.options().entries() {
        let name = entry.key.to_uppercase().replace('.', "_");
        let Some(value) = lookup(&name) else {
            continue;
        };
        match config.options_mut().set(&entry.key, &value) {
            Ok(()) => tracing::debug!(key = %entry.key, %value, "setting from the environment"),
            Err(e) => {
                tracing::warn!(variable = %name, %value, error = %e, "ignoring a bad setting")
            }
        }
    }
}

/// A fresh session with every lake table registered.
pub async fn session(lake: &Lake) -> Result<SessionContext> {
    Ok(open_session(lake).await?.0)
}

/// A fresh session with every lake table registered, and the names of the
/// tables the lake really holds (known tables not yet written are registered
/// empty but not named).
pub async fn open_session(lake: &Lake) -> Result<(SessionContext, Vec<String>)> {
    let state = SessionStateBuilder::new()
        .with_config(session_config())
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    crate::functions::register_functions(&ctx);
    let present = register_tables(&ctx, lake).await?;
    Ok((ctx, present))
}

/// Names of the Delta tables directly under the lake root (any directory with a
/// `_delta_log`), sorted.
pub async fn discover_tables(lake: &Lake) -> Result<Vec<String>> {
    let store = lake.object_store()?;
    let listing = store
        .list_with_delimiter(None)
        .await
        .map_err(auditlake_schemas::Error::from)?;
    let mut names = Vec::new();
    for dir in listing.common_prefixes {
        let Some(name) = dir.filename().map(str::to_string) else {
            continue;
        };
        let log = dir.clone().join("_delta_log");
        let has_log = store
            .list(Some(&log))
            .try_next()
            .await
            .map_err(auditlake_schemas::Error::from)?
            .is_some();
        if has_log {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Registers (or re-registers, picking up new commits) every lake table in `ctx`.
/// Known tables not yet written are registered empty with their schema, so that
/// `SELECT count(*) FROM quarantine` answers 0 rather than failing.
pub async fn register_lake(ctx: &SessionContext, lake: &Lake) -> Result<Vec<String>> {
    let mut names = register_tables(ctx, lake).await?;
    for name in tables::TABLES {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Registers the lake's Delta tables (their logs load concurrently) and the
/// known tables not yet written (empty); returns the names of the former.
async fn register_tables(ctx: &SessionContext, lake: &Lake) -> Result<Vec<String>> {
    let names = discover_tables(lake).await?;
    let providers =
        futures::future::try_join_all(names.iter().map(|name| table_provider(ctx, lake, name)))
            .await?;
    for (name, provider) in names.iter().zip(providers) {
        ctx.deregister_table(name.as_str())?;
        ctx.register_table(name.as_str(), provider)?;
    }
    for name in tables::TABLES {
        if !names.iter().any(|n| n == name) {
            let schema = tables::schema_of(name).expect("known table has a schema");
            let empty = MemTable::try_new(schema, vec![vec![]])?;
            ctx.deregister_table(name)?;
            ctx.register_table(name, Arc::new(empty))?;
        }
    }
    Ok(names)
}

/// A provider for one lake table at its newest version: a
/// [`LakeScan`] of its files, or delta-rs's provider for a table written
/// with Delta features auditlake does not read itself.
pub async fn table_provider(
    ctx: &SessionContext,
    lake: &Lake,
    name: &str,
) -> Result<Arc<dyn TableProvider>> {
    let table = lake.require_table(name).await?;
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|e| crate::Error::Config(format!("table {name}: {e}")))?;
    let delta = table.table_provider().await?;
    if std::env::var_os("AUDITLAKE_DELTA_SCAN").is_some() {
        return Ok(delta);
    }
    // (Re)registered with every table: the session reads this lake's store.
    let store_url = ObjectStoreUrl::parse(LAKE_STORE_URL)?;
    ctx.runtime_env()
        .register_object_store(store_url.as_ref(), lake.object_store()?);
    Ok(match LakeScan::try_new(name, &table, delta.schema()) {
        Some(scan) => Arc::new(scan),
        None => {
            tracing::info!(
                table = name,
                "read through delta-rs (deletion vectors or column mapping)"
            );
            delta
        }
    })
}

/// Runs one SQL statement and collects its result.
pub async fn run_sql(
    ctx: &SessionContext,
    sql: &str,
) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(crate::Error::Query)?;
    Ok(df.collect().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_settings() {
        let mut config = session_config();
        assert!(!config.options().optimizer.repartition_sorts);
        apply_env_overrides(&mut config, |name| match name {
            "DATAFUSION_OPTIMIZER_REPARTITION_SORTS" => Some("true".into()),
            "DATAFUSION_EXECUTION_BATCH_SIZE" => Some("not a number".into()),
            _ => None,
        });
        assert!(config.options().optimizer.repartition_sorts);
        assert_eq!(config.options().execution.batch_size.get(), 8192);
        assert!(config.options().execution.parquet.pushdown_filters);
    }
}
