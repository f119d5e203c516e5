//! How one memory limit (`ingest --memory-limit`) is shared out between the
//! buffers that grow with the data.
//!
//! ```text
//! backfill: pending (F) + the flush in flight: its rows (F), their sorted copy (F),
//!           the per-date split and Parquet pages (~F)      -> ~4-5 F at the peak
//!           + dedupe index (I) + read-ahead (up to two decoded 8 MiB chunks
//!           per decode thread, one thread per core up to 4), runtime, allocator slack
//! kafka:    the same per topic, with librdkafka's queue (64 MiB) besides
//! ```
//!
//! Measured on the 5M-event benchmark file (`benches/RESULTS.md`) with a
//! 128 MiB flush buffer: peak RSS 742 MiB pinned to one core, 1011 MiB on
//! two (the reader, the dedupe and the flush in flight all hold data at
//! once): up to ~8 times the buffer. So a backfill's flush gets a twelfth of
//! the limit and its dedupe index another twelfth. Freed memory the
//! allocator keeps counts too, which is why the binary runs ingest on glibc
//! malloc with one arena (`src/main.rs`): on mimalloc the peak grew with
//! every flush (1231-1406 MiB at 50M events), on glibc it is 578 MiB there
//! (599-664 with two arenas) and ~400 MiB for 2M pinned to one core.

/// Default `--memory-limit`.
pub const DEFAULT_MEMORY_LIMIT: usize = 1024 * 1024 * 1024;

/// The shares of a memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// The whole limit.
    pub limit: usize,
    /// Arrow bytes buffered per topic before a flush.
    pub flush_bytes: usize,
    /// Bytes of hashes the dedupe index keeps per topic.
    pub index_bytes: usize,
}

impl MemoryBudget {
    /// A file backfill: one topic at a time, one flush in flight.
    pub const fn backfill(limit: usize) -> Self {
        Self {
            limit,
            flush_bytes: share(limit, 12),
            index_bytes: share(limit, 12),
        }
    }

    /// A Kafka ingest: four topics buffer at once (api-access carries almost
    /// all the bytes), beside librdkafka's fetch queue.
    pub const fn kafka(limit: usize) -> Self {
        Self {
            limit,
            flush_bytes: share(limit, 16),
            index_bytes: share(limit, 16),
        }
    }
}

/// `limit / parts`, at least one byte.
const fn share(limit: usize, parts: usize) -> usize {
    let s = limit / parts;
    if s == 0 { 1 } else { s }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::backfill(DEFAULT_MEMORY_LIMIT)
    }
}

/// This process's peak resident set size in bytes (Linux `VmHWM`), if known.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_fit_in_the_limit() {
        let b = MemoryBudget::backfill(DEFAULT_MEMORY_LIMIT);
        assert!(8 * b.flush_bytes + b.index_bytes < b.limit);
        let k = MemoryBudget::kafka(DEFAULT_MEMORY_LIMIT);
        assert_eq!(k.flush_bytes, 64 * 1024 * 1024);
        assert!(MemoryBudget::backfill(0).flush_bytes >= 1);
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss().is_some_and(|b| b > 0));
        }
    }
}
