//! # auditlake-ingest
//!
//! Takes the platform's four topics into the lake, each event exactly once:
//! Kafka consumer groups for the live stream, JSON-lines files for backfill.
//! Reads Kafka or files; writes the topic tables and `quarantine`.
//!
//! ```text
//! Kafka / files --Decoder--> batches + quarantine --TopicSink (dedupe, buffer)-->
//!   Delta commit (data + Kafka offsets as txn actions) --> only then Kafka offset commit
//! ```
//!
//! Invariants: a message is either stored, recognised as a duplicate, or
//! quarantined with its raw bytes; offsets are never committed ahead of the data.

mod error;

pub mod backfill;
pub mod dedupe;
mod gather;
pub mod kafka;
pub mod memory;
pub mod metrics;
pub mod sink;

pub use backfill::{Backfill, BackfillReport, Progress};
pub use error::{Error, Result};
pub use kafka::{KafkaIngest, KafkaReport};
pub use memory::MemoryBudget;
pub use metrics::Metrics;
pub use sink::{FlushOutcome, SinkStats, TopicSink};
