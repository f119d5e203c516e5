//! `ingest --brokers HOST:PORT --group ID`: the four topics from a Kafka
//! consumer group into the lake, exactly once.
//!
//! ```text
//!             rebalance(assign): read each partition's next offset from the Delta
//!             log (txn app id `auditlake-ingest/<topic>/<partition>`), seek there
//! Kafka --recv--> Decoder (per topic) --> TopicSink (dedupe, buffer)
//!   flush (rows | bytes | age): ONE Delta commit = data + txn(from -> next offset)
//!   --> only then commit the Kafka group offsets (for lag monitoring)
//! ```
//!
//! Exactly once: the lake, not Kafka, holds the truth about what was stored. A
//! crash before the Delta commit replays from the last committed offsets; a
//! crash after it finds the offsets in the log. Messages below a partition's
//! Delta offset are skipped. A writer whose partition was taken over is fenced
//! by the compare-and-swap on the txn version ([`auditlake_schemas::TxnUpdate`]).
//! On a rebalance all pending (uncommitted) data is dropped and every assigned
//! partition restarts from its Delta offset, so a revoked partition's data is
//! never committed by its old owner. Producer retries (same event id, another
//! offset) are dropped by the dedupe index.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auditlake_schemas::lake::WriteOptions;
use auditlake_schemas::{Decoder, Lake, RawMessage, Source, Topic, TxnUpdate};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::sink::TopicSink;
use crate::{Error, Result};

/// Default age after which buffered data is committed even if small.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Default rows buffered per topic before a commit.
pub const DEFAULT_FLUSH_ROWS: usize = 500_000;
/// Default flush buffer and dedupe index per topic: shares of the default
/// memory limit.
const DEFAULT_BUDGET: crate::MemoryBudget =
    crate::MemoryBudget::kafka(crate::memory::DEFAULT_MEMORY_LIMIT);
/// Messages decoded before they are handed to the sink.
const DECODE_BATCH: usize = 8192;

/// The Delta application id that records a partition's next offset.
pub fn offset_app_id(kafka_topic: &str, partition: i32) -> String {
    format!("auditlake-ingest/{kafka_topic}/{partition}")
}

/// What a Kafka ingest run did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct KafkaReport {
    /// Per topic: consumed, stored, duplicates, quarantined.
    pub topics: BTreeMap<String, crate::metrics::TopicCounters>,
    /// Rebalances seen.
    pub rebalances: u64,
    /// Seconds run.
    pub seconds: f64,
    /// Peak resident set size of the process so far (Linux), in bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// A Kafka consumer-group ingest into the lake.
pub struct KafkaIngest {
    lake: Lake,
    brokers: String,
    group: String,
    topics: BTreeMap<Topic, String>,
    opts: WriteOptions,
    flush_interval: Duration,
    flush_rows: usize,
    flush_bytes: usize,
    index_bytes: usize,
    stop_when_idle: Option<Duration>,
    replay: bool,
    config: Vec<(String, String)>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KafkaIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaIngest")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish()
    }
}

impl KafkaIngest {
    /// An ingest of the four default topics from `brokers` in consumer group `group`.
    pub fn new(lake: Lake, brokers: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            lake,
            brokers: brokers.into(),
            group: group.into(),
            topics: Topic::ALL
                .iter()
                .map(|t| (*t, t.name().to_string()))
                .collect(),
            opts: WriteOptions::default(),
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            flush_rows: DEFAULT_FLUSH_ROWS,
            flush_bytes: DEFAULT_BUDGET.flush_bytes,
            index_bytes: DEFAULT_BUDGET.index_bytes,
            stop_when_idle: None,
            replay: false,
            config: Vec::new(),
            metrics: Arc::default(),
        }
    }

    /// Reads `topic` from the Kafka topic `name` instead of its default name.
    pub fn with_topic_name(mut self, topic: Topic, name: impl Into<String>) -> Self {
        self.topics.insert(topic, name.into());
        self
    }

    /// Consumes only these topics.
    pub fn with_topics(mut self, topics: &[Topic]) -> Self {
        self.topics.retain(|t, _| topics.contains(t));
        self
    }

    /// How data files are written.
    pub fn with_write_options(mut self, opts: WriteOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Flush thresholds: age, rows and Arrow bytes per topic.
    pub fn with_flush(mut self, interval: Duration, rows: usize, bytes: usize) -> Self {
        self.flush_interval = interval;
        self.flush_rows = rows.max(1);
        self.flush_bytes = bytes.max(1);
        self
    }

    /// Flush buffers and dedupe indexes sized from one memory limit (the
    /// flush interval and row threshold stay as they are).
    pub fn with_memory(mut self, budget: crate::MemoryBudget) -> Self {
        self.flush_bytes = budget.flush_bytes;
        self.index_bytes = budget.index_bytes;
        self
    }

    /// Stops (after a final flush) once no message arrived for `idle`.
    pub fn with_stop_when_idle(mut self, idle: Option<Duration>) -> Self {
        self.stop_when_idle = idle;
        self
    }

    /// Reads every partition from its beginning instead of the lake's offsets:
    /// a deliberate replay. Nothing is stored twice (event ids already in the
    /// lake are duplicates) and erased users stay erased (tombstones); the
    /// recorded offsets never move backwards.
    pub fn with_replay(mut self, replay: bool) -> Self {
        self.replay = replay;
        self
    }

    /// Extra librdkafka settings (`security.protocol`, `sasl.*`, ...).
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Shared metrics (serve them with [`crate::metrics::serve`]).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown` resolves (then flushes, commits and returns), until
    /// idle if so configured, or until an unrecoverable error.
    pub async fn execute(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<KafkaReport> {
        let started = Instant::now();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut run = Run::new(&self)?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut last_message = Instant::now();
        let mut backoff = Duration::from_millis(500);
        // When the idle stop last asked the broker for unread messages.
        let mut backlog_checked: Option<Instant> = None;
        loop {
            let consumer = run.consumer.clone();
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!("stop requested: flushing");
                    break;
                }
                msg = consumer.recv() => {
                    match msg {
                        Ok(m) => {
                            last_message = Instant::now();
                            let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
                            let payload = m.payload().unwrap_or(b"");
                            run.on_message(&topic, partition, offset, payload, &self).await?;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "kafka receive failed; retrying");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                _ = tick.tick() => {
                    if let Some(idle) = self.stop_when_idle
                        && last_message.elapsed() >= idle
                        && !run.has_pending()
                        && run.assigned()
                        && backlog_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                    {
                        // Idle is the end of the stream only if the broker
                        // holds nothing unread: a broker slow to serve a
                        // large partition's first fetch is not idle.
                        backlog_checked = Some(Instant::now());
                        let backlog = match tokio::runtime::Handle::current().runtime_flavor() {
                            tokio::runtime::RuntimeFlavor::CurrentThread => run.backlog(),
                            _ => tokio::task::block_in_place(|| run.backlog()),
                        };
                        match backlog {
                            None => {
                                tracing::info!(idle_s = idle.as_secs_f64(), "idle: stopping");
                                break;
                            }
                            Some(b) if last_message.elapsed() >= idle * IDLE_BACKLOG_WAIT => {
                                tracing::warn!(
                                    topic = %b.topic, partition = b.partition, read = b.read, end = b.end,
                                    "still no message after {IDLE_BACKLOG_WAIT}x --stop-when-idle \
                                     although the broker holds unread ones: stopping"
                                );
                                break;
                            }
                            Some(b) => tracing::debug!(
                                topic = %b.topic, partition = b.partition, read = b.read, end = b.end,
                                "idle, but the broker holds unread messages: waiting"
                            ),
                        }
                    }
                }
            }
            let generation = run.generation;
            run.check_rebalance(&self).await?;
            if run.generation != generation {
                // Idle time counts from the newest assignment, not from start.
                last_message = Instant::now();
            }
            match run.flush_due(&self, false).await {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(e) if is_fenced(&e) => {
                    tracing::warn!(error = %e, "fenced by another writer: dropping pending data and rejoining");
                    run = Run::new(&self)?;
                }
                Err(e) if is_transient(&e) => {
                    self.metrics
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "flush failed; keeping data and retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
                Err(e) => return Err(e),
            }
        }
        // Final flush: retry transient failures a while, never commit offsets without data.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match run.flush_due(&self, true).await {
                Ok(()) => break,
                Err(e) if is_transient(&e) && attempts < 20 => {
                    tracing::warn!(error = %e, attempts, "final flush failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
        run.commit_kafka(CommitMode::Sync);
        let mut report = KafkaReport {
            rebalances: run.rebalances,
            seconds: started.elapsed().as_secs_f64(),
            peak_rss_bytes: crate::memory::peak_rss(),
            ..Default::default()
        };
        for name in self.topics.values() {
            report.topics.insert(name.clone(), self.metrics.topic(name));
        }
        Ok(report)
    }
}

fn is_fenced(e: &Error) -> bool {
    matches!(e, Error::Lake(auditlake_schemas::Error::Fenced { .. }))
}

fn is_transient(e: &Error) -> bool {
    match e {
        Error::Lake(l) => l.is_retryable(),
        Error::Dedupe { .. } => true,
        _ => false,
    }
}

/// A (Kafka topic, partition) and the next offset the lake recorded for it.
type PartitionOffset = ((String, i32), Option<i64>);

/// What the rebalance callback shares with the main loop.
#[derive(Debug, Default)]
struct Assignment {
    /// Bumped on every assign and revoke.
    generation: u64,
    /// (kafka topic, partition) -> next offset recorded in Delta (None: never).
    committed: HashMap<(String, i32), Option<i64>>,
    /// Set when the offsets could not be read: the main loop rejoins.
    error: Option<String>,
}

struct IngestContext {
    replay: bool,
    lake: Lake,
    /// kafka topic name -> lake table
    tables: HashMap<String, &'static str>,
    assignment: Arc<Mutex<Assignment>>,
    metrics: Arc<Metrics>,
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (p, part) in &topic.partitions {
                if *p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.set_lag(name, *p, part.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let offsets = read_offsets_blocking(&self.lake, &self.tables, &parts);
                let mut a = self.assignment.lock().expect("assignment lock");
                a.generation += 1;
                a.committed.clear();
                match offsets {
                    Ok(offsets) => {
                        for ((topic, p), next) in offsets {
                            let off = match next {
                                Some(n) if !self.replay => Offset::Offset(n),
                                _ => Offset::Beginning,
                            };
                            if let Err(e) = tpl.set_partition_offset(&topic, p, off) {
                                a.error = Some(format!("seek {topic}/{p}: {e}"));
                            }
                            a.committed.insert((topic, p), next);
                        }
                        tracing::info!(
                            partitions = parts.len(),
                            "partitions assigned; resuming from the offsets in the lake"
                        );
                    }
                    Err(e) => a.error = Some(e.to_string()),
                }
                if let Err(e) = consumer.assign(tpl) {
                    a.error = Some(format!("assign: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut a = self.assignment.lock().expect("assignment lock");
                a.generation += 1;
                a.committed.clear();
                if let Err(e) = consumer.unassign() {
                    tracing::warn!(error = %e, "unassign failed");
                }
                tracing::info!(
                    "partitions revoked; their uncommitted rows are read again by the next owner"
                );
            }
            other => tracing::warn!(error = ?other, "rebalance error"),
        }
    }
}

/// Reads the Delta offsets of `parts` on a helper thread with its own runtime:
/// the rebalance callback is synchronous and runs inside the consumer's poll.
fn read_offsets_blocking(
    lake: &Lake,
    tables: &HashMap<String, &'static str>,
    parts: &[(String, i32)],
) -> Result<Vec<PartitionOffset>> {
    let lake = lake.clone();
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Internal(format!("offset reader runtime: {e}")))?;
            rt.block_on(async {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match read_offsets(&lake, tables, parts).await {
                        Ok(v) => return Ok(v),
                        Err(e) if attempt < 5 => {
                            tracing::warn!(error = %e, attempt, "reading offsets from the lake failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        })
        .join()
        .map_err(|_| Error::Internal("offset reader thread panicked".into()))?
    })
}

async fn read_offsets(
    lake: &Lake,
    tables: &HashMap<String, &'static str>,
    parts: &[(String, i32)],
) -> Result<Vec<PartitionOffset>> {
    let mut loaded: HashMap<&str, Option<deltalake::DeltaTable>> = HashMap::new();
    let mut out = Vec::new();
    for (topic, p) in parts {
        let Some(table) = tables.get(topic) else {
            continue;
        };
        if !loaded.contains_key(table) {
            loaded.insert(table, lake.table(table).await?);
        }
        let next = match loaded.get(table).and_then(Option::as_ref) {
            Some(t) => lake.txn_version(t, &offset_app_id(topic, *p)).await?,
            None => None,
        };
        out.push(((topic.clone(), *p), next));
    }
    Ok(out)
}

/// How many times `--stop-when-idle` an ingest waits for messages the broker
/// holds but has not delivered before it stops anyway.
const IDLE_BACKLOG_WAIT: u32 = 10;

/// Messages a partition holds beyond what this consumer has read.
struct Backlog {
    topic: String,
    partition: i32,
    read: i64,
    end: i64,
}

/// Per-topic state of the main loop.
struct TopicState {
    sink: TopicSink,
    decoder: Decoder,
    /// partition -> next offset not yet committed to Delta.
    pending_next: BTreeMap<i32, i64>,
    /// When the oldest uncommitted message arrived.
    oldest: Option<Instant>,
}

/// One consumer session: rebuilt after a fence.
struct Run {
    consumer: Arc<StreamConsumer<IngestContext>>,
    assignment: Arc<Mutex<Assignment>>,
    generation: u64,
    states: HashMap<String, TopicState>,
    topics: HashMap<String, Topic>,
    rebalances: u64,
    /// Partitions that sent offsets below the lake's, already reported.
    behind: HashSet<(String, i32)>,
}

impl Run {
    fn new(cfg: &KafkaIngest) -> Result<Self> {
        let assignment = Arc::new(Mutex::new(Assignment::default()));
        let ctx = IngestContext {
            replay: cfg.replay,
            lake: cfg.lake.clone(),
            tables: cfg
                .topics
                .iter()
                .map(|(t, n)| (n.clone(), t.table()))
                .collect(),
            assignment: assignment.clone(),
            metrics: cfg.metrics.clone(),
        };
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &cfg.brokers)
            .set("group.id", &cfg.group)
            .set("client.id", "auditlake-ingest")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "2000")
            .set("max.poll.interval.ms", "600000")
            .set("statistics.interval.ms", "5000")
            .set("queued.max.messages.kbytes", "65536");
        for (k, v) in &cfg.config {
            client.set(k, v);
        }
        let consumer: StreamConsumer<IngestContext> = client
            .create_with_context(ctx)
            .map_err(|source| kafka_err("creating the consumer", source))?;
        let names: Vec<&str> = cfg.topics.values().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|source| kafka_err("subscribing", source))?;
        tracing::info!(brokers = %cfg.brokers, group = %cfg.group, topics = ?names, "consumer started");
        Ok(Self {
            consumer: Arc::new(consumer),
            assignment,
            generation: 0,
            states: HashMap::new(),
            topics: cfg.topics.iter().map(|(t, n)| (n.clone(), *t)).collect(),
            rebalances: 0,
            behind: HashSet::new(),
        })
    }

    fn assigned(&self) -> bool {
        !self
            .assignment
            .lock()
            .expect("assignment lock")
            .committed
            .is_empty()
    }

    /// A partition of this consumer's with messages it has not read: the
    /// broker's high watermark past the consumer's position (or, before its
    /// first message, past the lake's offset). Broker errors count as none.
    fn backlog(&self) -> Option<Backlog> {
        let parts: Vec<((String, i32), Option<i64>)> = {
            let a = self.assignment.lock().expect("assignment lock");
            a.committed.iter().map(|(k, v)| (k.clone(), *v)).collect()
        };
        let position = self.consumer.position().ok();
        for ((topic, partition), next) in parts {
            let read = position
                .as_ref()
                .and_then(|tpl| tpl.find_partition(&topic, partition))
                .and_then(|e| e.offset().to_raw())
                .filter(|o| *o >= 0)
                .or(next)
                .unwrap_or(0);
            match self
                .consumer
                .fetch_watermarks(&topic, partition, Duration::from_secs(2))
            {
                Ok((low, end)) if read.max(low) < end => {
                    return Some(Backlog {
                        topic,
                        partition,
                        read: read.max(low),
                        end,
                    });
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(topic, partition, error = %e, "watermarks unavailable"),
            }
        }
        None
    }

    fn has_pending(&self) -> bool {
        self.states.values().any(|s| {
            !s.pending_next.is_empty() || s.sink.pending_rows() > 0 || !s.decoder.is_empty()
        })
    }

    /// After a rebalance, drop everything not committed: the partitions restart
    /// from their Delta offsets.
    async fn check_rebalance(&mut self, cfg: &KafkaIngest) -> Result<()> {
        let (generation, error) = {
            let mut a = self.assignment.lock().expect("assignment lock");
            (a.generation, a.error.take())
        };
        if let Some(e) = error {
            tracing::warn!(error = %e, "could not resume partitions from the lake; rejoining");
            tokio::time::sleep(Duration::from_secs(1)).await;
            *self = Run::new(cfg)?;
            return Ok(());
        }
        if generation != self.generation {
            self.generation = generation;
            self.rebalances += 1;
            let dropped: usize = self
                .states
                .values()
                .map(|s| s.sink.pending_rows() + s.decoder.len())
                .sum();
            if dropped > 0 {
                tracing::info!(
                    dropped,
                    "rebalance: dropping uncommitted rows (they will be read again)"
                );
            }
            self.states.clear();
        }
        Ok(())
    }

    async fn on_message(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &[u8],
        cfg: &KafkaIngest,
    ) -> Result<()> {
        let Some(&kind) = self.topics.get(topic) else {
            return Ok(());
        };
        // A rebalance may have happened inside recv(): drop stale state first.
        self.check_rebalance(cfg).await?;
        let committed = {
            let a = self.assignment.lock().expect("assignment lock");
            match a.committed.get(&(topic.to_string(), partition)) {
                Some(c) => *c,
                None => return Ok(()), // not ours (any more)
            }
        };
        if !cfg.replay && committed.is_some_and(|next| offset < next) {
            // Already in the lake. After the seek to the lake's offset this
            // only happens when the partition starts over (a topic deleted
            // and created again): its new messages would go unread.
            if self.behind.insert((topic.to_string(), partition)) {
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    lake_offset = committed,
                    "a message below the offset the lake has consumed to: skipped as already \
                     stored. If the topic was created again, its messages up to the lake's \
                     offset go unread: rerun with --replay-from-beginning (duplicates are dropped)"
                );
            }
            return Ok(()); // already in the lake
        }
        cfg.metrics.update(topic, |c| c.consumed += 1);
        if !self.states.contains_key(topic) {
            let mut sink = TopicSink::open(cfg.lake.clone(), kind, cfg.opts.clone()).await?;
            sink.max_index_bytes = cfg.index_bytes;
            self.states.insert(
                topic.to_string(),
                TopicState {
                    sink,
                    decoder: Decoder::new(kind).with_kafka_topic(topic),
                    pending_next: BTreeMap::new(),
                    oldest: None,
                },
            );
        }
        let state = self.states.get_mut(topic).expect("state just inserted");
        state.decoder.push(RawMessage {
            payload,
            source: Source::Kafka { partition, offset },
        });
        state.pending_next.insert(partition, offset + 1);
        state.oldest.get_or_insert_with(Instant::now);
        if state.decoder.len() + state.decoder.quarantined() >= DECODE_BATCH {
            let decoded = state.decoder.finish(now_micros())?;
            let (_, dups) = state.sink.add(decoded).await?;
            cfg.metrics.update(topic, |c| c.duplicates += dups as u64);
        }
        Ok(())
    }

    /// Flushes every topic whose buffer is full or old enough (all if `force`).
    async fn flush_due(&mut self, cfg: &KafkaIngest, force: bool) -> Result<()> {
        let names: Vec<String> = self.states.keys().cloned().collect();
        for name in names {
            let state = self.states.get_mut(&name).expect("state");
            let due = force
                || state.sink.pending_rows() >= cfg.flush_rows
                || state.sink.pending_bytes() >= cfg.flush_bytes
                || state
                    .oldest
                    .is_some_and(|t| t.elapsed() >= cfg.flush_interval);
            if !due
                || state.pending_next.is_empty()
                    && state.decoder.is_empty()
                    && state.sink.pending_rows() == 0
            {
                continue;
            }
            if !state.decoder.is_empty() {
                let decoded = state.decoder.finish(now_micros())?;
                let (_, dups) = state.sink.add(decoded).await?;
                cfg.metrics.update(&name, |c| c.duplicates += dups as u64);
            }
            let partitions: Vec<(i32, TxnUpdate)> = {
                let a = self.assignment.lock().expect("assignment lock");
                state
                    .pending_next
                    .iter()
                    .map(|(p, next)| {
                        let from = a.committed.get(&(name.clone(), *p)).copied().flatten();
                        let txn = TxnUpdate {
                            app_id: offset_app_id(&name, *p),
                            from,
                            // A replay never moves the recorded offset backwards.
                            to: (*next).max(from.unwrap_or(0)),
                        };
                        (*p, txn)
                    })
                    .collect()
            };
            let txns = partitions.iter().map(|(_, t)| t.clone()).collect();
            let out = state.sink.flush(txns).await?;
            {
                let mut a = self.assignment.lock().expect("assignment lock");
                for (p, t) in &partitions {
                    if let Some(c) = a.committed.get_mut(&(name.clone(), *p)) {
                        *c = Some(t.to);
                    }
                }
            }
            state.pending_next.clear();
            state.oldest = None;
            let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
            cfg.metrics.update(&name, |c| {
                c.erased += out.erased;
                c.pseudonymized += out.pseudonymized;
                c.expired += out.expired;
                c.stored += out.rows;
                c.quarantined += out.quarantined;
                c.flushes += 1;
                c.last_flush_rows = out.rows;
                c.last_flush_seconds = out.seconds;
                c.flush_seconds_total += out.seconds;
                c.last_commit_unix = now;
            });
            tracing::info!(topic = %name, rows = out.rows, quarantined = out.quarantined, files = out.files, bytes = out.bytes, seconds = out.seconds, partitions = partitions.len(), "committed");
            // Only now tell Kafka, for lag monitoring; the lake stays the truth.
            let mut tpl = TopicPartitionList::new();
            for (p, t) in &partitions {
                let _ = tpl.add_partition_offset(&name, *p, Offset::Offset(t.to));
            }
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(error = %e, "kafka offset commit failed (harmless: the lake holds the offsets)");
            }
        }
        Ok(())
    }

    fn commit_kafka(&self, mode: CommitMode) {
        let a = self.assignment.lock().expect("assignment lock");
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), next) in &a.committed {
            if let Some(next) = next {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*next));
            }
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, mode)
        {
            tracing::debug!(error = %e, "final kafka offset commit failed");
        }
    }
}

fn kafka_err(context: &str, source: KafkaError) -> Error {
    Error::Kafka {
        context: context.to_string(),
        source,
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
