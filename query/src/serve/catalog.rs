//! The lake as a DataFusion schema whose tables are always at their newest
//! Delta version.
//!
//! `serve` plans every query against [`LakeSchema`]. When the planner asks for a
//! table, the schema brings the cached [`DeltaTable`] up to date with
//! `update_incremental` (one listing of `_delta_log`, then only the new commit
//! files), so a commit made by `ingest` beside the server is visible to the next
//! query, without a restart and without reloading the whole log.
//!
//! Freshness rule: a lookup that starts at time `t` is answered from a refresh
//! that *started* at or after `t`. Concurrent lookups of the same table share one
//! refresh when they can (single flight), never one that began before they asked.
//!
//! Tables of the contract (`tables::TABLES`) that were never written answer as
//! empty tables with their schema, like [`crate::register_lake`]; other Delta
//! tables under the root (the retention job's evidence) are found by listing the
//! root, at most every [`NAMES_TTL`], and by a direct check on lookup.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use auditlake_schemas::{Lake, tables};
use datafusion::catalog::SchemaProvider;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use deltalake::DeltaTable;

/// How long a listing of the lake root's table names is reused for
/// `table_names()` (psql `\dt`, BI tool catalogs). Lookups by name do not wait for
/// it: they check the table directly.
pub const NAMES_TTL: Duration = Duration::from_secs(2);

/// The `public` schema of the served catalog: every Delta table of the lake.
pub struct LakeSchema {
    lake: Lake,
    /// Where table object stores get registered (shared by every per-query runtime).
    runtime: Arc<RuntimeEnv>,
    names: RwLock<Names>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl std::fmt::Debug for LakeSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeSchema")
            .field("lake", &self.lake)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Names {
    found: BTreeSet<String>,
    listed_at: Option<Instant>,
}

/// One table's cached snapshot; the async mutex makes refreshes single-flight.
#[derive(Default)]
struct Slot {
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    table: Option<DeltaTable>,
    provider: Option<Arc<dyn TableProvider>>,
    /// When the refresh that produced `provider` started.
    refreshed_from: Option<Instant>,
}

impl LakeSchema {
    /// A schema over `lake`; object stores of its tables are registered in `runtime`.
    pub fn new(lake: Lake, runtime: Arc<RuntimeEnv>) -> Self {
        let found = tables::TABLES.iter().map(|t| t.to_string()).collect();
        Self {
            lake,
            runtime,
            names: RwLock::new(Names {
                found,
                listed_at: None,
            }),
            slots: Mutex::default(),
        }
    }

    /// Re-lists the lake root's tables if the last listing is older than
    /// [`NAMES_TTL`]. Errors are logged, not returned: a failed listing keeps the
    /// previous names and the query goes on.
    pub async fn refresh_names(&self) {
        let fresh = self
            .names
            .read()
            .expect("names lock")
            .listed_at
            .is_some_and(|t| t.elapsed() < NAMES_TTL);
        if fresh {
            return;
        }
        match crate::discover_tables(&self.lake).await {
            Ok(listed) => {
                let mut names = self.names.write().expect("names lock");
                names.found = listed
                    .into_iter()
                    .chain(tables::TABLES.iter().map(|t| t.to_string()))
                    .collect();
                names.listed_at = Some(Instant::now());
            }
            Err(e) => tracing::warn!(lake = %self.lake, error = %e, "listing lake tables failed"),
        }
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        self.slots
            .lock()
            .expect("slots lock")
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The newest snapshot of `name` as a table provider, `None` if there is no
    /// such table.
    async fn fresh_provider(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let asked = Instant::now();
        let slot = self.slot(name);
        let mut state = slot.state.lock().await;
        if state.refreshed_from.is_some_and(|t| t >= asked) {
            return Ok(state.provider.clone());
        }
        let started = Instant::now();
        let before = state.table.as_ref().and_then(DeltaTable::version);
        match state.table.as_mut() {
            Some(table) => table
                .update_incremental(None)
                .await
                .map_err(|e| delta_error(name, "refresh", e))?,
            None => {
                let loaded = self.lake.table(name).await.map_err(|e| {
                    DataFusionError::External(Box::new(crate::Error::Lake(e)))
                        .context(format!("loading table {name}"))
                })?;
                if let Some(table) = &loaded {
                    let session = SessionStateBuilder::new()
                        .with_runtime_env(self.runtime.clone())
                        .build();
                    table
                        .update_datafusion_session(&session)
                        .map_err(|e| delta_error(name, "register object store", e))?;
                }
                state.table = loaded;
            }
        }
        let after = state.table.as_ref().and_then(DeltaTable::version);
        if state.provider.is_none() || before != after {
            state.provider = match &state.table {
                Some(table) => Some(
                    table
                        .table_provider()
                        .await
                        .map_err(|e| e.context(format!("delta table {name}: scan")))?,
                ),
                None => empty_known_table(name)?,
            };
            if before.is_some() || after.is_some() {
                tracing::debug!(table = name, ?before, ?after, "table snapshot advanced");
            }
        }
        if state.table.is_some() {
            self.names
                .write()
                .expect("names lock")
                .found
                .insert(name.to_string());
        }
        state.refreshed_from = Some(started);
        Ok(state.provider.clone())
    }
}

fn delta_error(table: &str, what: &str, e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e)).context(format!("delta table {table}: {what}"))
}

/// A contract table not written yet: empty, with its schema.
fn empty_known_table(name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
    Ok(match tables::schema_of(name) {
        Some(schema) => Some(Arc::new(MemTable::try_new(schema, vec![vec![]])?)),
        None => None,
    })
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.names
            .read()
            .expect("names lock")
            .found
            .iter()
            .cloned()
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.fresh_provider(name).await
    }

    async fn table_type(&self, name: &str) -> Result<Option<TableType>> {
        // Catalog scans (pg_class, information_schema) ask this for every table:
        // answer without loading a snapshot.
        Ok(self.table_exist(name).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.names.read().expect("names lock").found.contains(name)
    }
}
