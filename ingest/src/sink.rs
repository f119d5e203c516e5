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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Date32Type, TimestampMicrosecondType};
use auditlake_schemas::TxnUpdate;
use auditlake_schemas::erasure::load_erased;
use auditlake_schemas::floor::RetentionFloor;
use auditlake_schemas::lake::WriteOptions;
use auditlake_schemas::{Decoded, Lake, Topic, tables};
use serde::Serialize;

use crate::Result;
use crate::dedupe::{SeenIndex, added_keys, for_each_str, key_hash, mark_new};

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
    /// Rows of erased users after their erasure, stored under the pseudonym.
    pub pseudonymized: u64,
    /// Rows dropped as past their table's keep time (dated before the
    /// retention floor a sweep set).
    pub expired: u64,
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
    /// Rows of erased users after their erasure, stored under the pseudonym.
    pub pseudonymized: u64,
    /// Rows dropped as past their table's keep time.
    pub expired: u64,
    /// Files and bytes written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Delta commits made.
    pub commits: u64,
    /// Seconds spent.
    pub seconds: f64,
    /// Events left out at commit because another writer stored them while
    /// this one buffered them.
    pub concurrent_duplicates: u64,
    /// Quarantine rows left out the same way.
    pub concurrent_quarantine_duplicates: u64,
    /// Keys of what other writers stored meanwhile, found when a commit had
    /// to be made again on a newer version: events as (date, key hash).
    #[serde(skip)]
    pub others: HashSet<(Option<i32>, u64)>,
    /// Quarantine source ids other writers stored meanwhile (hashed).
    #[serde(skip)]
    pub others_quarantine: HashSet<u64>,
    /// The events table's version this flush brought the sink to, if it
    /// committed or caught up.
    #[serde(skip)]
    pub events_version: Option<i64>,
    /// The same for the quarantine table.
    #[serde(skip)]
    pub quarantine_version: Option<i64>,
}

/// Buffers and commits one topic's events and quarantine rows.
#[derive(Debug)]
pub struct TopicSink {
    topic: Topic,
    lake: Lake,
    opts: WriteOptions,
    seen: SeenIndex,
    quarantine_seen: HashSet<u64>,
    pending: Vec<Pending>,
    pending_quarantine: Vec<RecordBatch>,
    pending_dates: HashSet<i32>,
    pending_rows: usize,
    pending_bytes: usize,
    /// Maximum date partitions kept in the dedupe index.
    pub max_index_dates: usize,
    /// Maximum bytes of hashes kept in the dedupe index (dates with pending
    /// rows are kept regardless).
    pub max_index_bytes: usize,
    stats: SinkStats,
    /// The version of the events table the dedupe index is complete for:
    /// every key stored up to it (for the dates loaded) is in the index.
    /// Commits are made on top of it only ([`Lake::append_on`]).
    events_version: Option<i64>,
    /// The same for `quarantine` and `quarantine_seen`.
    quarantine_version: Option<i64>,
}

impl TopicSink {
    /// Opens the sink of `topic`: loads the quarantine keys already stored.
    pub async fn open(lake: Lake, topic: Topic, opts: WriteOptions) -> Result<Self> {
        let table = topic.table();
        let key = tables::dedupe_key(table).expect("topic tables have a key");
        let mut quarantine_seen = HashSet::new();
        let events_version = lake
            .table(table)
            .await?
            .and_then(|t| t.version())
            .map(|v| v as i64);
        let quarantine = lake.table(tables::QUARANTINE).await?;
        let quarantine_version = quarantine
            .as_ref()
            .and_then(|q| q.version())
            .map(|v| v as i64);
        if let Some(q) = quarantine {
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
            max_index_bytes: crate::MemoryBudget::backfill(crate::memory::DEFAULT_MEMORY_LIMIT)
                .index_bytes,
            stats: SinkStats::default(),
            events_version,
            quarantine_version,
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
        // Chunks rarely span more than a day or two: skip runs of one date.
        let mut distinct: Vec<i32> = Vec::new();
        let mut last = None;
        for &d in dates.values().iter() {
            if last != Some(d) && !distinct.contains(&d) {
                distinct.push(d);
            }
            last = Some(d);
        }
        self.seen
            .load_dates(&self.lake, distinct.iter().copied())
            .await?;
        let key = tables::dedupe_key(self.topic.table()).expect("key");
        let (mask, dups) = mark_new(&mut self.seen, &events, key);
        self.stats.duplicates += dups as u64;
        let n = events.num_rows() - dups;
        if n > 0 {
            self.pending_dates.extend(distinct);
            self.pending_rows += n;
            self.pending_bytes += events.get_array_memory_size();
            // Duplicates are skipped when the flush gathers rows in sorted
            // order, not copied out now.
            let keep = (dups > 0).then_some(mask);
            self.pending.push(Pending { events, keep });
        }
        Ok((n, dups))
    }

    /// Commits what is pending: quarantine rows first, then the events together
    /// with `txns` in one commit. With nothing pending and no txns, does nothing.
    /// Nothing leaves the buffers until its commit succeeded: a failed flush
    /// can be retried with the same data.
    pub async fn flush(&mut self, txns: Vec<TxnUpdate>) -> Result<FlushOutcome> {
        let job = FlushJob {
            topic: self.topic,
            lake: self.lake.clone(),
            opts: self.opts.clone(),
            events: self.pending.clone(),
            quarantine: self.pending_quarantine.clone(),
            txns,
            events_base: self.events_version,
            quarantine_base: self.quarantine_version,
        };
        let out = job.run().await?;
        self.clear_pending();
        self.record(&out)?;
        Ok(out)
    }

    /// Hands what is pending to a [`FlushJob`] and empties the buffers, so the
    /// sink goes on deduping and buffering while the job encodes and commits
    /// (backfill). Run the jobs one at a time, in order, and give each
    /// outcome to [`record`](Self::record).
    pub fn detach(&mut self) -> FlushJob {
        let job = FlushJob {
            topic: self.topic,
            lake: self.lake.clone(),
            opts: self.opts.clone(),
            events: std::mem::take(&mut self.pending),
            quarantine: std::mem::take(&mut self.pending_quarantine),
            txns: Vec::new(),
            events_base: self.events_version,
            quarantine_base: self.quarantine_version,
        };
        self.clear_pending();
        job
    }

    /// Counts a finished job's outcome in [`stats`](Self::stats), and takes
    /// in what other writers stored meanwhile: into the dedupe index, and out
    /// of the rows buffered since the job was detached.
    pub fn record(&mut self, out: &FlushOutcome) -> Result<()> {
        if let Some(v) = out.events_version {
            self.events_version = Some(v);
        }
        if let Some(v) = out.quarantine_version {
            self.quarantine_version = Some(v);
        }
        self.stats.duplicates += out.concurrent_duplicates;
        self.stats.quarantine_duplicates += out.concurrent_quarantine_duplicates;
        if !out.others.is_empty() {
            for (date, hash) in &out.others {
                if let Some(d) = date {
                    self.seen.insert_known(*d, *hash);
                }
            }
            let key = tables::dedupe_key(self.topic.table()).expect("key");
            let mut dropped = 0;
            for p in &mut self.pending {
                dropped += p.drop_keys(key, &out.others);
            }
            self.pending.retain(|p| p.rows() > 0);
            self.pending_rows -= dropped;
            self.stats.duplicates += dropped as u64;
        }
        if !out.others_quarantine.is_empty() {
            self.quarantine_seen
                .extend(out.others_quarantine.iter().copied());
            let mut dropped = 0;
            for batch in &mut self.pending_quarantine {
                let (kept, n) = drop_quarantined(batch, &out.others_quarantine);
                *batch = kept?;
                dropped += n;
            }
            self.pending_quarantine.retain(|b| b.num_rows() > 0);
            self.stats.quarantine_duplicates += dropped as u64;
        }
        self.stats.stored += out.rows;
        self.stats.quarantined += out.quarantined;
        self.stats.erased += out.erased;
        self.stats.pseudonymized += out.pseudonymized;
        self.stats.expired += out.expired;
        self.stats.commits += out.commits;
        self.stats.files += out.files;
        self.stats.bytes += out.bytes;
        Ok(())
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_quarantine.clear();
        self.pending_rows = 0;
        self.pending_bytes = 0;
        self.seen.retain_recent(
            self.max_index_dates,
            self.max_index_bytes,
            &self.pending_dates,
        );
        self.pending_dates.clear();
        tracing::debug!(
            index_dates = self.seen.dates(),
            index_keys = self.seen.len(),
            index_bytes = self.seen.bytes(),
            peak_rss = crate::memory::peak_rss().unwrap_or(0),
            "dedupe index after a flush"
        );
    }
}

/// One flush's data, detached from its sink: quarantine rows, then events and
/// txns in one commit.
#[derive(Debug)]
pub struct FlushJob {
    topic: Topic,
    lake: Lake,
    opts: WriteOptions,
    events: Vec<Pending>,
    quarantine: Vec<RecordBatch>,
    txns: Vec<TxnUpdate>,
    /// The versions the sink's dedupe reflects: commits go on top of them.
    events_base: Option<i64>,
    quarantine_base: Option<i64>,
}

/// Quarantine rows of `batch` whose `source_id` is not in `keys` (hashed),
/// and how many were left out.
fn drop_quarantined(batch: &RecordBatch, keys: &HashSet<u64>) -> (Result<RecordBatch>, usize) {
    let mut mask = Vec::with_capacity(batch.num_rows());
    let mut dropped = 0;
    for_each_str(batch.column(0).as_ref(), |_, k| {
        let keep = !keys.contains(&key_hash(k));
        dropped += usize::from(!keep);
        mask.push(keep);
    });
    if dropped == 0 {
        return (Ok(batch.clone()), 0);
    }
    (
        filter_record_batch(batch, &mask.into()).map_err(Into::into),
        dropped,
    )
}

/// A decoded batch waiting for a flush, with the rows to keep (None: all).
#[derive(Debug, Clone)]
struct Pending {
    events: RecordBatch,
    keep: Option<BooleanArray>,
}

impl Pending {
    fn rows(&self) -> usize {
        match &self.keep {
            Some(keep) => keep.true_count(),
            None => self.events.num_rows(),
        }
    }

    /// Stops keeping the rows whose (date, key hash) is in `keys`; how many.
    fn drop_keys(&mut self, key_column: &str, keys: &HashSet<(Option<i32>, u64)>) -> usize {
        let (Some(col), Some(dates)) = (
            self.events.column_by_name(key_column),
            self.events.column_by_name(tables::PARTITION_COLUMN),
        ) else {
            return 0;
        };
        let dates = dates.as_primitive::<Date32Type>();
        let mut keep: Vec<bool> = match &self.keep {
            Some(k) => k.iter().map(|v| v.unwrap_or(false)).collect(),
            None => vec![true; self.events.num_rows()],
        };
        let mut dropped = 0;
        for_each_str(col.as_ref(), |i, k| {
            if keep[i] && keys.contains(&(Some(dates.value(i)), key_hash(k))) {
                keep[i] = false;
                dropped += 1;
            }
        });
        if dropped > 0 {
            self.keep = Some(keep.into());
        }
        dropped
    }

    /// The kept rows as a batch of their own.
    fn materialize(self) -> Result<RecordBatch> {
        Ok(match self.keep {
            Some(keep) => filter_record_batch(&self.events, &keep)?,
            None => self.events,
        })
    }
}

impl FlushJob {
    /// Rows of events in the job.
    pub fn rows(&self) -> usize {
        self.events.iter().map(Pending::rows).sum()
    }

    /// Drops (or pseudonymizes) erased users' rows, sorts the events for
    /// pruning, commits the quarantine rows, then the events with the txns.
    pub async fn run(mut self) -> Result<FlushOutcome> {
        let started = Instant::now();
        let expired = self.apply_floor().await?;
        let (erased, pseudonymized) = self.apply_erasures().await?;
        let mut out = FlushOutcome {
            erased,
            pseudonymized,
            expired,
            ..FlushOutcome::default()
        };
        let mut base = self.quarantine_base;
        while !self.quarantine.is_empty() {
            let rows: usize = self.quarantine.iter().map(RecordBatch::num_rows).sum();
            let appended = self
                .lake
                .append_on(
                    tables::QUARANTINE,
                    self.quarantine.clone(),
                    Vec::new(),
                    &self.opts,
                    base,
                )
                .await;
            match appended {
                Ok(r) => {
                    out.quarantined = rows as u64;
                    out.files += r.files as u64;
                    out.bytes += r.bytes;
                    out.commits += 1;
                    out.quarantine_version = r.table.version().map(|v| v as i64);
                    break;
                }
                Err(auditlake_schemas::Error::Moved { now: Some(now), .. }) => {
                    // Another writer committed quarantine rows meanwhile:
                    // leave out the messages it quarantined too.
                    let added = added_keys(
                        &self.lake,
                        tables::QUARANTINE,
                        "source_id",
                        (base, now),
                        None,
                    )
                    .await?;
                    let keys: HashSet<u64> = added.into_iter().map(|(_, h)| h).collect();
                    let mut kept = Vec::with_capacity(self.quarantine.len());
                    for batch in &self.quarantine {
                        let (batch, n) = drop_quarantined(batch, &keys);
                        out.concurrent_quarantine_duplicates += n as u64;
                        let batch = batch?;
                        if batch.num_rows() > 0 {
                            kept.push(batch);
                        }
                    }
                    self.quarantine = kept;
                    out.others_quarantine.extend(keys);
                    out.quarantine_version = Some(now);
                    base = Some(now);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let rows = self.rows();
        if rows > 0 || !self.txns.is_empty() {
            let table = self.topic.table();
            let mut batch = if rows > 0 {
                let events = std::mem::take(&mut self.events);
                tokio::task::spawn_blocking(move || cluster(events))
                    .await
                    .map_err(|e| crate::Error::Internal(format!("sort task: {e}")))??
            } else {
                // Offsets moved past duplicates or quarantined messages only:
                // commit the txns with no data.
                RecordBatch::new_empty(tables::schema_of(table).expect("topic table schema"))
            };
            let mut base = self.events_base;
            loop {
                let appended = self
                    .lake
                    .append_on(
                        table,
                        vec![batch.clone()],
                        self.txns.clone(),
                        &self.opts,
                        base,
                    )
                    .await;
                match appended {
                    Ok(r) => {
                        if r.version.is_some() {
                            out.rows = batch.num_rows() as u64;
                            out.files += r.files as u64;
                            out.bytes += r.bytes;
                            out.commits += 1;
                        }
                        out.events_version = r.table.version().map(|v| v as i64);
                        break;
                    }
                    Err(auditlake_schemas::Error::Moved { now: Some(now), .. }) => {
                        // Another writer (ingest, or retention rewriting)
                        // committed meanwhile: drop the rows it stored too,
                        // then commit on its version.
                        let (kept, others) =
                            without_stored(&self.lake, table, batch, (base, now)).await?;
                        // A sweep may have been that writer: its floor rose
                        // before it deleted, so apply it again.
                        let (kept, expired) = RetentionFloor::load(&self.lake)
                            .await?
                            .retain_batch(table, kept)?;
                        out.expired += expired as u64;
                        out.concurrent_duplicates += others.1 as u64;
                        out.others.extend(others.0);
                        out.events_version = Some(now);
                        base = Some(now);
                        batch = kept;
                        if batch.num_rows() == 0 && self.txns.is_empty() {
                            break;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        out.seconds = started.elapsed().as_secs_f64();
        Ok(out)
    }

    /// Passes every pending batch of events through `f`, keeping what it
    /// returns (batches left empty go).
    fn map_events(&mut self, mut f: impl FnMut(RecordBatch) -> Result<RecordBatch>) -> Result<()> {
        let mut kept = Vec::with_capacity(self.events.len());
        for pending in std::mem::take(&mut self.events) {
            let events = f(pending.materialize()?)?;
            if events.num_rows() > 0 {
                kept.push(Pending { events, keep: None });
            }
        }
        self.events = kept;
        Ok(())
    }

    /// Drops the events dated before their table's retention floor: a sweep
    /// deleted those days, and a backfill rerun or a replay must not write
    /// them back. The floor is read again at every flush (one small object).
    async fn apply_floor(&mut self) -> Result<u64> {
        if self.events.is_empty() {
            return Ok(0);
        }
        let floor = RetentionFloor::load(&self.lake).await?;
        let table = self.topic.table();
        if floor.first_kept(table).is_none() {
            return Ok(0);
        }
        let mut dropped = 0;
        self.map_events(|events| {
            let (events, n) = floor.retain_batch(table, events)?;
            dropped += n;
            Ok(events)
        })?;
        if dropped > 0 {
            tracing::info!(
                table,
                dropped,
                "dropped rows past their keep time (dated before the day the last sweep kept from)"
            );
        }
        Ok(dropped as u64)
    }

    /// Applies the erasures to the flush: rows (and quarantined messages) of
    /// erased users up to their erasure are dropped, later rows are kept
    /// under the user's pseudonym. The tombstones are read again at every
    /// flush, so an erase that runs beside ingest stops it writing the user's
    /// id from its next commit on, and a replay of Kafka from offset 0 never
    /// writes the erased rows back. Returns (dropped, pseudonymized).
    async fn apply_erasures(&mut self) -> Result<(u64, u64)> {
        if self.events.is_empty() && self.quarantine.is_empty() {
            return Ok((0, 0));
        }
        let erased = load_erased(&self.lake).await?;
        if erased.is_empty() {
            return Ok((0, 0));
        }
        let (mut dropped, mut pseudonymized) = (0, 0);
        let table = self.topic.table();
        self.map_events(|events| {
            let applied = erased.apply_to_incoming(table, events)?;
            dropped += applied.dropped;
            pseudonymized += applied.pseudonymized;
            Ok(applied.batch)
        })?;
        let mut kept = Vec::with_capacity(self.quarantine.len());
        for batch in std::mem::take(&mut self.quarantine) {
            let (batch, n) = erased.retain_batch(tables::QUARANTINE, batch)?;
            dropped += n;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        self.quarantine = kept;
        if dropped > 0 {
            tracing::info!(table, dropped, "dropped rows of erased users");
        }
        if pseudonymized > 0 {
            tracing::warn!(
                table,
                pseudonymized,
                "rows of erased users dated after their erasure: stored under the pseudonym 'erased:<user_hash>'"
            );
        }
        Ok((dropped as u64, pseudonymized as u64))
    }
}

/// The rows of `batch` (of `table`) that the commits after version `base`
/// up to `now` did not store, in their order; and the keys those commits
/// added, with how many rows of the batch they held.
async fn without_stored(
    lake: &Lake,
    table: &str,
    batch: RecordBatch,
    (base, now): (Option<i64>, i64),
) -> Result<(RecordBatch, (HashSet<(Option<i32>, u64)>, usize))> {
    let key = tables::dedupe_key(table).expect("topic tables have a key");
    let dates = batch
        .column_by_name(tables::PARTITION_COLUMN)
        .expect("date column")
        .as_primitive::<Date32Type>();
    // Every date, not only the batch's: rows the sink buffered since this
    // job left it may be of other dates, and are checked against these keys
    // when the job's outcome is recorded.
    let added = added_keys(lake, table, key, (base, now), None).await?;
    if added.is_empty() || batch.num_rows() == 0 {
        return Ok((batch, (added, 0)));
    }
    let mut mask = Vec::with_capacity(batch.num_rows());
    let mut dropped = 0;
    for_each_str(
        batch.column_by_name(key).expect("key column").as_ref(),
        |i, k| {
            let stored = added.contains(&(Some(dates.value(i)), key_hash(k)));
            dropped += usize::from(stored);
            mask.push(!stored);
        },
    );
    if dropped > 0 {
        tracing::info!(
            table,
            dropped,
            "rows another writer stored meanwhile left out"
        );
    }
    let kept = filter_record_batch(&batch, &mask.into())?;
    Ok((kept, (added, dropped)))
}

/// The kept rows of `pending` as one batch sorted by (date, app_id, user_id,
/// event_time): rows of one app and user sit together, so min/max statistics
/// prune point lookups and an erase rewrites few row groups.
///
/// Strings are compared once per distinct value, not once per comparison:
/// each app and user id is replaced by its rank among the distinct values and
/// the rows are sorted on integer keys. The rows are then copied once, from
/// the pending batches straight into their final order (arrow's
/// `interleave`), leaving out dropped duplicates: no concatenated copy of the
/// whole flush first (that copy was a third of the memory an ingest touched
/// per event, and fresh pages cost the kernel ~2.7 µs each here).
fn cluster(pending: Vec<Pending>) -> Result<RecordBatch> {
    let started = Instant::now();
    let schema = pending[0].events.schema();
    let batches: Vec<&RecordBatch> = pending.iter().map(|p| &p.events).collect();
    // App and user ranks side by side when there is a second core.
    let has_users = schema.field_with_name("user_id").is_ok();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (apps, users) = if has_users && cores > 1 {
        std::thread::scope(|scope| {
            let users = scope.spawn(|| ranks(&batches, "user_id"));
            let apps = ranks(&batches, "app_id");
            let users = users
                .join()
                .map_err(|_| crate::Error::Internal("a sort thread panicked".to_string()))?;
            Ok::<_, crate::Error>((apps?, Some(users?)))
        })?
    } else {
        let users = has_users.then(|| ranks(&batches, "user_id")).transpose()?;
        (ranks(&batches, "app_id")?, users)
    };
    let ranked = started.elapsed();
    let user_ranks = users.as_ref().map(|u| u.of_row.as_slice());
    let kept: usize = pending.iter().map(Pending::rows).sum();
    let cols: Vec<(&[i32], &[i64])> = pending.iter().map(dates_and_times).collect();
    let order = match packed_order(&pending, &cols, &apps.of_row, user_ranks, kept) {
        Some(order) => order,
        None => full_order(&pending, &cols, &apps.of_row, user_ranks, kept),
    };
    let ordered_at = started.elapsed();
    // The sort columns are rebuilt from their ranks, which the sorted keys
    // carry in order: no gather of their strings.
    let mut done = Vec::new();
    for (column, ranks, ordered) in [
        ("app_id", Some(&apps), Some(&order.apps)),
        ("user_id", users.as_ref(), order.users.as_ref()),
    ] {
        if let (Some(ranks), Some(ordered), Ok(c)) = (ranks, ordered, schema.index_of(column))
            && schema.field(c).data_type() == &DataType::Utf8
        {
            done.push((c, ranks.column(ordered)?));
        }
    }
    drop((apps, users));
    let sorted = started.elapsed();
    let batch = crate::gather::gather(&batches, &order.indices, done, cores)?;
    tracing::debug!(
        rows = batch.num_rows(),
        sort_ms = sorted.as_secs_f64() * 1e3,
        rank_ms = ranked.as_secs_f64() * 1e3,
        order_ms = (ordered_at - ranked).as_secs_f64() * 1e3,
        gather_ms = (started.elapsed() - sorted).as_secs_f64() * 1e3,
        "clustered a flush"
    );
    Ok(batch)
}

/// The sorted order of a flush: the rows as `(batch, row)`, and their app
/// and user ranks in that order.
struct Order {
    indices: Vec<(usize, usize)>,
    apps: Vec<u32>,
    users: Option<Vec<u32>>,
}

/// Calls `f(batch, row, global row)` for each kept row of `pending`, in
/// arrival order.
fn for_each_kept(pending: &[Pending], mut f: impl FnMut(usize, usize, usize)) {
    let mut global = 0usize;
    for (b, p) in pending.iter().enumerate() {
        match &p.keep {
            None => (0..p.events.num_rows()).for_each(|r| f(b, r, global + r)),
            Some(keep) => keep
                .values()
                .set_indices()
                .for_each(|r| f(b, r, global + r)),
        }
        global += p.events.num_rows();
    }
}

/// The `date` and `event_time` values of a pending batch (`cols[batch]` of
/// the orders below).
fn dates_and_times(p: &Pending) -> (&[i32], &[i64]) {
    let dates = p
        .events
        .column_by_name(tables::PARTITION_COLUMN)
        .expect("date column")
        .as_primitive::<Date32Type>()
        .values();
    let times = p
        .events
        .column_by_name("event_time")
        .expect("event_time column")
        .as_primitive::<TimestampMicrosecondType>()
        .values();
    (dates, times)
}

/// The sorted order when the kept rows arrived in `event_time` order (the
/// gateway logs in time order, so nearly always): then (date, app, user)
/// with ties left in arrival order is the full (date, app, user, time)
/// order, and the key packs into 16 bytes a row, `(date, app, user) << 64 |
/// batch << 32 | row`, sorted as plain integers (half the bytes of the full
/// key, and one comparison). `None` if times go back or the key does not fit.
fn packed_order(
    pending: &[Pending],
    cols: &[(&[i32], &[i64])],
    apps: &[u32],
    users: Option<&[u32]>,
    kept: usize,
) -> Option<Order> {
    let (mut min_date, mut max_date, mut last_time, mut ordered) =
        (i32::MAX, i32::MIN, i64::MIN, true);
    for_each_kept(pending, |b, r, _| {
        let (d, t) = (cols[b].0[r], cols[b].1[r]);
        min_date = min_date.min(d);
        max_date = max_date.max(d);
        ordered &= t >= last_time;
        last_time = t;
    });
    if !ordered || kept == 0 {
        return None;
    }
    let bits = |max: u64| 64 - max.leading_zeros();
    let app_bits = bits(apps.iter().copied().max().map_or(0, u64::from));
    let user_bits = users.map_or(0, |u| bits(u.iter().copied().max().map_or(0, u64::from)));
    let date_bits = bits((i64::from(max_date) - i64::from(min_date)) as u64);
    if app_bits + user_bits + date_bits > 64
        || pending.len() > u32::MAX as usize
        || pending
            .iter()
            .any(|p| p.events.num_rows() > u32::MAX as usize)
    {
        return None;
    }
    let mut keys: Vec<u128> = Vec::with_capacity(kept);
    for_each_kept(pending, |b, r, g| {
        let date = (i64::from(cols[b].0[r]) - i64::from(min_date)) as u64;
        let user = users.map_or(0, |u| u64::from(u[g]));
        // `checked_shl`: with no date bits the shift may be 64 (date is 0).
        let date = date.checked_shl(app_bits + user_bits).unwrap_or(0);
        let hi = date | (u64::from(apps[g]) << user_bits) | user;
        keys.push((u128::from(hi) << 64) | ((b as u128) << 32) | r as u128);
    });
    sort_keys(&mut keys, app_bits + user_bits + date_bits);
    let mask = |bits: u32| (1u64 << bits) - 1;
    let mut order = Order {
        indices: Vec::with_capacity(kept),
        apps: Vec::with_capacity(kept),
        users: users.map(|_| Vec::with_capacity(kept)),
    };
    for k in keys {
        let hi = (k >> 64) as u64;
        order
            .indices
            .push((((k >> 32) as u32) as usize, (k as u32) as usize));
        order.apps.push(((hi >> user_bits) & mask(app_bits)) as u32);
        if let Some(users) = &mut order.users {
            users.push((hi & mask(user_bits)) as u32);
        }
    }
    Some(order)
}

/// Sorts packed keys whose upper word holds `bits` significant bits and
/// whose lower word is the row's place in arrival order (increasing as the
/// keys were pushed): a stable radix sort on the upper word, 11 bits a pass,
/// gives the same order as sorting the whole keys, in a few linear passes
/// instead of `n log n` comparisons. Wide keys take the comparison sort.
fn sort_keys(keys: &mut Vec<u128>, bits: u32) {
    const DIGIT: u32 = 11;
    if bits > 3 * DIGIT {
        keys.sort_unstable();
        return;
    }
    let mut other = vec![0u128; keys.len()];
    let mut shift = 64;
    while shift < 64 + bits {
        let digit = |k: u128| ((k >> shift) as usize) & ((1 << DIGIT) - 1);
        let mut starts = vec![0usize; (1 << DIGIT) + 1];
        for &k in keys.iter() {
            starts[digit(k) + 1] += 1;
        }
        for d in 1..starts.len() {
            starts[d] += starts[d - 1];
        }
        for &k in keys.iter() {
            let at = &mut starts[digit(k)];
            other[*at] = k;
            *at += 1;
        }
        std::mem::swap(keys, &mut other);
        shift += DIGIT;
    }
}

/// The sorted order on the full key `(date, app, user, time, batch, row)`:
/// 32 bytes a row.
fn full_order(
    pending: &[Pending],
    cols: &[(&[i32], &[i64])],
    apps: &[u32],
    users: Option<&[u32]>,
    kept: usize,
) -> Order {
    let mut keys: Vec<(i32, u64, i64, u32, u32)> = Vec::with_capacity(kept);
    for_each_kept(pending, |b, r, g| {
        let ids = (u64::from(apps[g]) << 32) | users.map_or(0, |u| u64::from(u[g]));
        keys.push((cols[b].0[r], ids, cols[b].1[r], b as u32, r as u32));
    });
    keys.sort_unstable();
    Order {
        indices: keys.iter().map(|k| (k.3 as usize, k.4 as usize)).collect(),
        apps: keys.iter().map(|k| (k.1 >> 32) as u32).collect(),
        users: users.map(|_| keys.iter().map(|k| k.1 as u32).collect()),
    }
}

/// A string column's distinct values in byte order, and the rank of each
/// row's value among them.
struct Ranks {
    /// Per row of the batches one after the other: 1-based rank, 0 for null
    /// (which sorts first).
    of_row: Vec<u32>,
    /// The value of rank `r` is `values.value(r - 1)`.
    values: StringArray,
}

impl Ranks {
    /// The column of the rows whose ranks are `ordered`: each row's bytes
    /// copied in one piece from the few distinct values. (Arrow's `take` of
    /// `values` by nullable rank indices gives the same array but cost ~4%
    /// of a one-core ingest: 1M events pinned, 8 runs each, 1.76 -> 1.84 s.)
    fn column(&self, ordered: &[u32]) -> Result<ArrayRef> {
        let (offsets, bytes) = (self.values.value_offsets(), self.values.value_data());
        let len = |r: u32| (offsets[r as usize] - offsets[r as usize - 1]) as usize;
        let bytes_out = ordered.iter().filter(|&&r| r > 0).map(|&r| len(r)).sum();
        let mut values: Vec<u8> = Vec::with_capacity(bytes_out);
        let mut ends: Vec<i32> = Vec::with_capacity(ordered.len() + 1);
        ends.push(0);
        for &r in ordered {
            if r > 0 {
                let (start, end) = (offsets[r as usize - 1], offsets[r as usize]);
                values.extend_from_slice(&bytes[start as usize..end as usize]);
            }
            let end = i32::try_from(values.len()).map_err(|_| {
                crate::Error::Internal("a flush's ids of one column pass 2 GiB".to_string())
            })?;
            ends.push(end);
        }
        let nulls = ordered
            .contains(&0)
            .then(|| NullBuffer::from_iter(ordered.iter().map(|&r| r > 0)));
        Ok(Arc::new(StringArray::try_new(
            OffsetBuffer::new(ends.into()),
            values.into(),
            nulls,
        )?))
    }
}

/// The ranks of a string column's values over `batches` one after the other.
fn ranks(batches: &[&RecordBatch], column: &str) -> Result<Ranks> {
    let arrays = batches
        .iter()
        .map(|b| {
            let array = b.column_by_name(column).expect("sort column");
            Ok(match array.data_type() {
                DataType::Utf8 => array.clone(),
                _ => cast(array, &DataType::Utf8)?,
            })
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let rows: usize = arrays.iter().map(|a| a.len()).sum();
    // foldhash, not SipHash: two lookups a row (app and user) made SipHash
    // ~1% of an ingest.
    let mut ids: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut of_row: Vec<u32> = Vec::with_capacity(rows);
    for array in &arrays {
        of_row.extend(array.as_string::<i32>().iter().map(|v| match v {
            Some(v) => {
                let next = ids.len() as u32;
                *ids.entry(v).or_insert(next) + 1
            }
            None => 0,
        }));
    }
    // First-seen ids -> ranks in sorted order.
    let mut order: Vec<(&str, u32)> = ids.into_iter().collect();
    order.sort_unstable();
    let mut rank_of = vec![0u32; order.len() + 1];
    for (rank, (_, id)) in order.iter().enumerate() {
        rank_of[*id as usize + 1] = rank as u32 + 1;
    }
    for r in of_row.iter_mut() {
        *r = rank_of[*r as usize];
    }
    let values = StringArray::from_iter_values(order.iter().map(|(v, _)| v));
    Ok(Ranks { of_row, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        Date32Array, ListBuilder, StringArray, StringBuilder, TimestampMicrosecondArray,
    };
    use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn batch(rows: &[(i32, &str, Option<&str>, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("date", DataType::Date32, false),
            Field::new("app_id", DataType::Utf8, false),
            Field::new("user_id", DataType::Utf8, true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new(
                "scopes",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ]));
        // A list column (null, empty or a few strings, from the time) to
        // check lists are gathered too.
        let mut scopes = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::Utf8,
            true,
        )));
        for r in rows {
            match r.3.rem_euclid(5) {
                0 => scopes.append_null(),
                n => {
                    for j in 1..n {
                        scopes.values().append_value(format!("s{}-{j}", r.3));
                    }
                    scopes.append(true);
                }
            }
        }
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.2))),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.3),
                )),
                Arc::new(scopes.finish()),
            ],
        )
        .unwrap()
    }

    /// Packed-key clustering sorts exactly like a lexicographic sort of the
    /// four key columns (nulls first), across batches, and carries the other
    /// columns (a list here) along.
    #[test]
    fn cluster_matches_lexsort() {
        // Times in no order (the full key) and in arrival order (the packed key).
        check_cluster(false);
        check_cluster(true);
    }

    /// The radix sort of packed keys orders them as a comparison sort does,
    /// for keys of no significant bits up to the widest radix-sorted ones,
    /// and for wider keys.
    #[test]
    fn sort_keys_matches_sort() {
        let mut state = 11u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 11
        };
        for bits in [0, 1, 5, 11, 12, 22, 23, 33, 34, 64] {
            let mask = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let mut keys: Vec<u128> = (0..5000u128)
                .map(|row| (u128::from(next() & mask) << 64) | row)
                .collect();
            let mut expected = keys.clone();
            expected.sort_unstable();
            sort_keys(&mut keys, bits);
            assert_eq!(keys, expected, "{bits} bits");
        }
    }

    fn check_cluster(times_in_order: bool) {
        let mut state = 7u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let apps = ["b", "a", "ab", "", "z\u{e9}", "c"];
        let users = [Some("u1"), None, Some("u10"), Some("u2"), Some("")];
        let mut batches = Vec::new();
        let mut clock = -500i64;
        for _ in 0..3 {
            let rows: Vec<_> = (0..500)
                .map(|_| {
                    let time = if times_in_order {
                        // Non-decreasing, with ties.
                        clock += next(2) as i64;
                        clock
                    } else {
                        next(1000) as i64 - 500
                    };
                    (
                        next(5) as i32 - 2,
                        apps[next(apps.len() as u64) as usize],
                        users[next(users.len() as u64) as usize],
                        time,
                    )
                })
                .collect();
            batches.push(batch(&rows));
        }
        // The second batch keeps every third row only (dropped duplicates).
        let keep = BooleanArray::from_iter((0..500).map(|i| Some(i % 3 == 0)));
        let kept = [
            batches[0].clone(),
            filter_record_batch(&batches[1], &keep).unwrap(),
            batches[2].clone(),
        ];
        let all = concat_batches(&batches[0].schema(), &kept).unwrap();
        let sort: Vec<SortColumn> = (0..4)
            .map(|c| SortColumn {
                values: all.column(c).clone(),
                options: None,
            })
            .collect();
        let expected = take_record_batch(&all, &lexsort_to_indices(&sort, None).unwrap()).unwrap();
        let pending: Vec<Pending> = batches
            .into_iter()
            .enumerate()
            .map(|(i, events)| Pending {
                events,
                keep: (i == 1).then(|| keep.clone()),
            })
            .collect();
        // The packed key is taken exactly when times arrive in order.
        let batches: Vec<&RecordBatch> = pending.iter().map(|p| &p.events).collect();
        let (apps, users) = (
            ranks(&batches, "app_id").unwrap(),
            ranks(&batches, "user_id").unwrap(),
        );
        let kept = pending.iter().map(Pending::rows).sum();
        let cols: Vec<_> = pending.iter().map(dates_and_times).collect();
        let packed = packed_order(&pending, &cols, &apps.of_row, Some(&users.of_row), kept);
        assert_eq!(packed.is_some(), times_in_order);
        assert_eq!(cluster(pending).unwrap(), expected);
    }
}
