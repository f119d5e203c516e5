//! auditlake as a library: the parts of the binary that other crates, tests
//! and benchmarks call directly.
//!
//! - [`r#gen`]: the `gen` verb — deterministic synthetic platform traffic
//!   (the four input topics) with planted rule violations and the truth
//!   about them (`manifest.json`, `planted.json`).
//!
//! (`gen` is a reserved word in Rust 2024, hence `r#gen`.)

pub mod r#gen;
