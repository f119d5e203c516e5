//! The write side shared by Kafka ingest and file backfill: dedupe decoded
//! events against the lake, buffer them, flush them as one Delta commit.
//!
//! ```text
//! Decoded --add()--> dedupe (SeenIndex, lazily loaded per date) --> pending batches
//! flush(txns): quarantine rows (own commit, deduped by source_id)
//!              then events sorted for pruning + txns (Kafka offsets) in ONE commit
//! ```
//!
//! Quarantine rows are committed before the events commit that moves the
//! offsets, so a crash in between replays those messages: the events are then
//! duplicates and the quarantine rows are recognised by `source_id`. Nothing is
//! lost and nothing is stored twice.

use std::collections::HashSet;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::{
    SortColumn, SortOptions, concat_batches, filter_record_batch, lexsort_to_indices,
    take_record_batch,
};
use arrow::datatypes::Date32Type;
use auditlake_schemas::TxnUpdate;
use auditlake_schemas::erasure::load_erased;
use auditlake_schemas::lake::WriteOptions;
use auditlake_schemas::{Decoded, Lake, Topic, tables};
use serde::Serialize;

use crate::Result;
use crate::dedupe::{SeenIndex, for_each_str, key_hash, mark_new};

/// Counters of one topic's sink.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SinkStats {
    /// Well-formed events seen.
    pub events: u64,
    /// Events stored (committed).
    pub stored: u64,
    /// Events dropped as already stored or already pending.
    pub duplicates: u64,
    /// Messages quarantined (committed).
    pub quarantined: u64,
    /// Quarantine rows dropped because that message was quarantined before.
    pub quarantine_duplicates: u64,
    /// Rows dropped because their user was erased (erasure tombstones).
    pub erased: u64,
    /// Delta commits made.
    pub commits: u64,
    /// Data files written.
    pub files: u64,
    /// Bytes of data files written.
    pub bytes: u64,
}

/// What one flush did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FlushOutcome {
    /// Events committed.
    pub rows: u64,
    /// Quarantine rows committed.
    pub quarantined: u64,
    /// Rows dropped because their user was erased.
    pub erased: u64,
    /// Files and bytes written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Seconds spent.
    pub seconds: f64,
}

/// Buffers and commits one topic's events and quarantine rows.
#[derive(Debug)]
pub struct TopicSink {
    topic: Topic,
    lake: Lake,
    opts: WriteOptions,
    seen: SeenIndex,
    quarantine_seen: HashSet<u64>,
    pending: Vec<RecordBatch>,
    pending_quarantine: Vec<RecordBatch>,
    pending_dates: HashSet<i32>,
    pending_rows: usize,
    pending_bytes: usize,
    /// Maximum date partitions kept in the dedupe index.
    pub max_index_dates: usize,
    stats: SinkStats,
}

impl TopicSink {
    /// Opens the sink of `topic`: loads the quarantine keys already stored.
    pub async fn open(lake: Lake, topic: Topic, opts: WriteOptions) -> Result<Self> {
        let table = topic.table();
        let key = tables::dedupe_key(table).expect("topic tables have a key");
        let mut quarantine_seen = HashSet::new();
        if let Some(q) = lake.table(tables::QUARANTINE).await? {
            let ctx = deltalake::datafusion::prelude::SessionContext::new();
            q.update_datafusion_session(&ctx.state())
                .map_err(|e| crate::Error::Internal(format!("register store: {e}")))?;
            let err = |source| crate::Error::Dedupe {
                table: tables::QUARANTINE.to_string(),
                source,
            };
            ctx.register_table("q", q.table_provider().await.map_err(err)?)
                .map_err(err)?;
            let sql = format!("SELECT source_id FROM q WHERE topic = '{}'", topic.name());
            let batches = ctx
                .sql(&sql)
                .await
                .map_err(err)?
                .collect()
                .await
                .map_err(err)?;
            for b in &batches {
                for_each_str(b.column(0).as_ref(), |_, k| {
                    quarantine_seen.insert(key_hash(k));
                });
            }
        }
        Ok(Self {
            topic,
            lake,
            opts,
            seen: SeenIndex::new(table, key),
            quarantine_seen,
            pending: Vec::new(),
            pending_quarantine: Vec::new(),
            pending_dates: HashSet::new(),
            pending_rows: 0,
            pending_bytes: 0,
            max_index_dates: 8,
            stats: SinkStats::default(),
        })
    }

    /// The topic of this sink.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// Counters so far.
    pub fn stats(&self) -> &SinkStats {
        &self.stats
    }

    /// Rows waiting for a flush (events and quarantine).
    pub fn pending_rows(&self) -> usize {
        self.pending_rows
            + self
                .pending_quarantine
                .iter()
                .map(RecordBatch::num_rows)
                .sum::<usize>()
    }

    /// Arrow bytes waiting for a flush.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Hashes held by the dedupe index.
    pub fn index_len(&self) -> usize {
        self.seen.len()
    }

    /// Dedupes and buffers a decoded batch. Returns (new events, duplicates).
    pub async fn add(&mut self, decoded: Decoded) -> Result<(usize, usize)> {
        let Decoded { events, quarantine } = decoded;
        self.stats.events += events.num_rows() as u64;
        if quarantine.num_rows() > 0 {
            let mut mask = Vec::with_capacity(quarantine.num_rows());
            for_each_str(quarantine.column(0).as_ref(), |_, k| {
                let new = self.quarantine_seen.insert(key_hash(k));
                if !new {
                    self.stats.quarantine_duplicates += 1;
                }
                mask.push(new);
            });
            let kept = filter_record_batch(&quarantine, &mask.into())?;
            if kept.num_rows() > 0 {
                self.pending_quarantine.push(kept);
            }
        }
        if events.num_rows() == 0 {
            return Ok((0, 0));
        }
        let dates = events
            .column_by_name(tables::PARTITION_COLUMN)
            .expect("date column")
            .as_primitive::<Date32Type>();
        let distinct: HashSet<i32> = dates.values().iter().copied().collect();
        self.seen
            .load_dates(&self.lake, distinct.iter().copied())
            .await?;
        let key = tables::dedupe_key(self.topic.table()).expect("key");
        let (mask, dups) = mark_new(&mut self.seen, &events, key);
        self.stats.duplicates += dups as u64;
        let kept = if dups == 0 {
            events
        } else {
            filter_record_batch(&events, &mask)?
        };
        let n = kept.num_rows();
        if n > 0 {
            self.pending_dates.extend(distinct);
            self.pending_rows += n;
            self.pending_bytes += kept.get_array_memory_size();
            self.pending.push(kept);
        }
        Ok((n, dups))
    }

    /// Commits what is pending: quarantine rows first, then the events together
    /// with `txns` in one commit. With nothing pending and no txns, does nothing.
    pub async fn flush(&mut self, txns: Vec<TxnUpdate>) -> Result<FlushOutcome> {
        let started = Instant::now();
        let mut out = FlushOutcome {
            erased: self.drop_erased().await?,
            ..FlushOutcome::default()
        };
        // Nothing leaves the buffers until its commit succeeded: a failed flush
        // can be retried with the same data.
        if !self.pending_quarantine.is_empty() {
            let rows: usize = self
                .pending_quarantine
                .iter()
                .map(RecordBatch::num_rows)
                .sum();
            let r = self
                .lake
                .append(
                    tables::QUARANTINE,
                    self.pending_quarantine.clone(),
                    Vec::new(),
                    &self.opts,
                )
                .await?;
            self.pending_quarantine.clear();
            out.quarantined = rows as u64;
            out.files += r.files as u64;
            out.bytes += r.bytes;
            self.stats.commits += 1;
        }
        let rows = self.pending_rows;
        if rows > 0 || !txns.is_empty() {
            let batch = if rows > 0 {
                let batch = cluster(std::mem::take(&mut self.pending))?;
                self.pending = vec![batch.clone()];
                batch
            } else {
                // Offsets moved past duplicates or quarantined messages only:
                // commit the txns with no data.
                RecordBatch::new_empty(
                    tables::schema_of(self.topic.table()).expect("topic table schema"),
                )
            };
            let r = self
                .lake
                .append(self.topic.table(), vec![batch], txns, &self.opts)
                .await?;
            if r.version.is_some() {
                out.rows = rows as u64;
                out.files += r.files as u64;
                out.bytes += r.bytes;
                self.stats.commits += 1;
            }
        }
        self.pending.clear();
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.pending_dates.clear();
        self.seen
            .retain_recent(self.max_index_dates, &self.pending_dates);
        self.stats.stored += out.rows;
        self.stats.quarantined += out.quarantined;
        self.stats.files += out.files;
        self.stats.bytes += out.bytes;
        out.seconds = started.elapsed().as_secs_f64();
        Ok(out)
    }
}

impl TopicSink {
    /// Drops pending rows (and quarantined messages) of erased users. The
    /// tombstones are read again at every flush, so an erase that runs beside
    /// ingest stops it writing the user's rows from its next commit on, and a
    /// replay of Kafka from offset 0 never writes them back.
    async fn drop_erased(&mut self) -> Result<u64> {
        if self.pending.is_empty() && self.pending_quarantine.is_empty() {
            return Ok(0);
        }
        let erased = load_erased(&self.lake).await?;
        if erased.is_empty() {
            return Ok(0);
        }
        let mut dropped = 0;
        let table = self.topic.table();
        let mut kept = Vec::with_capacity(self.pending.len());
        for batch in std::mem::take(&mut self.pending) {
            let (batch, n) = erased.retain_batch(table, batch)?;
            dropped += n;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        self.pending_rows -= dropped;
        self.pending = kept;
        let mut kept = Vec::with_capacity(self.pending_quarantine.len());
        for batch in std::mem::take(&mut self.pending_quarantine) {
            let (batch, n) = erased.retain_batch(tables::QUARANTINE, batch)?;
            dropped += n;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        self.pending_quarantine = kept;
        if dropped > 0 {
            tracing::info!(table, dropped, "dropped rows of erased users");
        }
        self.stats.erased += dropped as u64;
        Ok(dropped as u64)
    }
}

/// One batch sorted by (date, app_id, user_id, event_time): rows of one app
/// and user sit together, so min/max statistics prune point lookups and an
/// erase rewrites few row groups.
fn cluster(batches: Vec<RecordBatch>) -> Result<RecordBatch> {
    let schema = batches[0].schema();
    let batch = concat_batches(&schema, &batches)?;
    drop(batches);
    let mut cols = vec![tables::PARTITION_COLUMN, "app_id"];
    if schema.field_with_name("user_id").is_ok() {
        cols.push("user_id");
    }
    cols.push("event_time");
    let sort: Vec<SortColumn> = cols
        .iter()
        .map(|c| SortColumn {
            values: batch.column_by_name(c).expect("sort column").clone(),
            options: Some(SortOptions::default()),
        })
        .collect();
    let idx = lexsort_to_indices(&sort, None)?;
    Ok(take_record_batch(&batch, &idx)?)
}
