//! Retention against a real lake on local disk, through the library: erase,
//! verify, sweep, evidence. The same scenarios run through the binary and
//! against s3s-fs in the root package's `tests/retention.rs`.

mod concurrent;
mod erase;
mod fixture;
mod sweep;
mod verify;
