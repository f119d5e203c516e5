//! # auditlake-query
//!
//! SQL over the lake for analysts, the detection rules and the deletion
//! obligations. Reads the lake tables through DataFusion; writes only the derived
//! tables `findings` and `obligations`.
//!
//! ```text
//! Lake --session()--> SessionContext (every Delta table by name, scanned by
//!                     scan::LakeScan or, for what it cannot read, delta-rs;
//!                     functions: UTC date_trunc, to_char with PostgreSQL templates)
//!      --run_sql()--> batches --output::write_batches()--> table | csv | json | parquet
//! ```

mod error;

pub mod detect;
pub mod functions;
pub mod obligations;
pub mod output;
pub mod rules;
pub mod scan;
pub mod serve;
pub mod session;
pub mod to_char;
pub mod views;

pub use error::{Error, Result};
pub use output::{Format, write_batches};
pub use session::{
    CATALOG, discover_tables, open_session, register_lake, run_sql, session, session_config,
};

pub use detect::{Detect, Findings, Metrics};
pub use obligations::ObligationPolicy;
pub use rules::{Rule, RuleSet};
