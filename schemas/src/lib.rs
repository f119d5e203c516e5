//! # auditlake-schemas
//!
//! The shared vocabulary of auditlake: the Arrow schemas of every lake table, the
//! decoder that turns raw topic messages into Arrow (quarantining the bad ones),
//! and the Delta plumbing every writer goes through (open/create a table, append
//! with application transactions, retry on conflict), including the data files
//! auditlake encodes itself with their Delta statistics (`datafile`).
//!
//! ```text
//! raw bytes --Decoder--> RecordBatch (+ quarantine rows) --Lake::append--> Delta commit
//! ```
//!
//! It also holds what ingest and retention share about what must stay out of
//! the lake: erasure tombstones and pseudonyms (`erasure`) and the retention
//! floor (`floor`).
//!
//! Invariants: times are UTC microseconds; every table is partitioned by `date`
//! (the UTC date of the row's time); the decoder never drops a message (a bad one
//! becomes a quarantine row), and rows leave a batch only by an erasure or the
//! retention floor, counted by the caller.

mod error;

pub mod datafile;
pub mod decode;
pub mod erasure;
mod flat;
pub mod floor;
pub mod lake;
pub mod tables;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod threads;
pub mod time;
pub mod topic;

pub use decode::{Decoded, Decoder, RawMessage, Source};
pub use error::{Error, Result, delta_error_is_retryable};
pub use lake::{Lake, TxnUpdate, WriteOptions};
pub use topic::Topic;
