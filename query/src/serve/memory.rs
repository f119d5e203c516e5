//! Memory bounds of the server: one pool for the whole process, and a cap per
//! query inside it.
//!
//! The server pool (`--memory-limit`) is a [`FairSpillPool`]: sorts, hash
//! aggregates and the other spilling operators share it fairly and spill to disk
//! when their share is used up. On its own it would still let one runaway
//! query that cannot spill (a huge hash-join build side) take the whole pool,
//! failing every other client's query. [`QueryPool`] caps each query at a
//! fraction of the pool (`--query-memory-limit`), so the runaway query is the one
//! that fails, with SQLSTATE 53200, and the others keep their room.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};

/// The process-wide pool: fair between spilling operators, naming the largest
/// consumers when it is exhausted.
pub fn server_pool(limit: usize) -> Arc<dyn MemoryPool> {
    Arc::new(TrackConsumersPool::new(
        FairSpillPool::new(limit),
        NonZeroUsize::new(3).expect("3 is not zero"),
    ))
}

/// One query's view of the server pool: every reservation goes to the server
/// pool, and the query's total may not pass `limit`.
#[derive(Debug)]
pub struct QueryPool {
    server: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl QueryPool {
    /// A query pool of at most `limit` bytes inside `server`.
    pub fn new(server: Arc<dyn MemoryPool>, limit: usize) -> Self {
        Self {
            server,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query pool ({} of {} bytes) in {}",
            self.used.load(Ordering::Relaxed),
            self.limit,
            self.server
        )
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.server.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.server.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.server.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.server.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before.saturating_add(additional) > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "query memory limit reached: {} wanted {additional} more bytes, the query holds \
                 {before} of its {} (--query-memory-limit)",
                reservation.consumer().name(),
                self.limit
            )));
        }
        if let Err(e) = self.server.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_cannot_pass_its_cap_and_others_keep_room() {
        let server = server_pool(1000);
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(server.clone(), 600));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(server.clone(), 600));
        let ra = MemoryConsumer::new("runaway").register(&a);
        ra.try_grow(500).unwrap();
        let err = ra.try_grow(200).unwrap_err();
        assert!(
            matches!(err, DataFusionError::ResourcesExhausted(_)),
            "{err}"
        );
        let rb = MemoryConsumer::new("other").register(&b);
        rb.try_grow(400).unwrap();
        assert_eq!(server.reserved(), 900);
        drop(ra);
        assert_eq!(a.reserved(), 0);
        assert_eq!(server.reserved(), 400);
    }
}
