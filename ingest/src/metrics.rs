//! Ingest telemetry in one place: counters per topic and partition, rendered as
//! Prometheus text on `--metrics-addr`. Labels are topics and partitions only
//! (bounded); a user or app id is never a label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;

use crate::{Error, Result};

/// Counters of one topic.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TopicCounters {
    /// Messages read from Kafka.
    pub consumed: u64,
    /// Events committed to the lake.
    pub stored: u64,
    /// Events dropped as duplicates.
    pub duplicates: u64,
    /// Messages committed to quarantine.
    pub quarantined: u64,
    /// Rows dropped because their user was erased.
    pub erased: u64,
    /// Rows of erased users after their erasure, stored under the pseudonym.
    pub pseudonymized: u64,
    /// Rows dropped as past their table's keep time.
    pub expired: u64,
    /// Flushes (Delta commits of this topic).
    pub flushes: u64,
    /// Rows of the last flush.
    pub last_flush_rows: u64,
    /// Seconds of the last flush.
    pub last_flush_seconds: f64,
    /// Sum of flush seconds.
    pub flush_seconds_total: f64,
    /// Unix seconds of the last Delta commit.
    pub last_commit_unix: f64,
}

/// A counter or gauge of [`TopicCounters`]: name, type, help, getter.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TopicCounters) -> f64,
);

/// Shared ingest metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    topics: Mutex<BTreeMap<String, TopicCounters>>,
    /// (topic, partition) -> consumer lag (messages), from librdkafka statistics.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Flush failures that were retried.
    pub retries: std::sync::atomic::AtomicU64,
}

impl Metrics {
    /// Updates a topic's counters.
    pub fn update(&self, topic: &str, f: impl FnOnce(&mut TopicCounters)) {
        let mut topics = self.topics.lock().expect("metrics lock");
        f(topics.entry(topic.to_string()).or_default());
    }

    /// A copy of a topic's counters.
    pub fn topic(&self, topic: &str) -> TopicCounters {
        self.topics
            .lock()
            .expect("metrics lock")
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Records the lag of a partition.
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lag
            .lock()
            .expect("metrics lock")
            .insert((topic.to_string(), partition), lag);
    }

    /// Total lag over all partitions with a known lag.
    pub fn total_lag(&self) -> i64 {
        self.lag
            .lock()
            .expect("metrics lock")
            .values()
            .filter(|v| **v > 0)
            .sum()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let topics = self.topics.lock().expect("metrics lock").clone();
        let series: [Series; 11] = [
            (
                "auditlake_ingest_messages_consumed_total",
                "counter",
                "Messages read from Kafka.",
                |c| c.consumed as f64,
            ),
            (
                "auditlake_ingest_events_stored_total",
                "counter",
                "Events committed to the lake.",
                |c| c.stored as f64,
            ),
            (
                "auditlake_ingest_events_duplicate_total",
                "counter",
                "Events dropped as duplicates of stored or pending events.",
                |c| c.duplicates as f64,
            ),
            (
                "auditlake_ingest_messages_quarantined_total",
                "counter",
                "Malformed messages committed to quarantine.",
                |c| c.quarantined as f64,
            ),
            (
                "auditlake_ingest_rows_erased_total",
                "counter",
                "Rows dropped because their user was erased.",
                |c| c.erased as f64,
            ),
            (
                "auditlake_ingest_rows_pseudonymized_total",
                "counter",
                "Rows of erased users dated after their erasure, stored under the pseudonym.",
                |c| c.pseudonymized as f64,
            ),
            (
                "auditlake_ingest_rows_expired_total",
                "counter",
                "Rows dropped as dated before the retention floor a sweep set.",
                |c| c.expired as f64,
            ),
            (
                "auditlake_ingest_flushes_total",
                "counter",
                "Delta commits of ingested data.",
                |c| c.flushes as f64,
            ),
            (
                "auditlake_ingest_flush_rows",
                "gauge",
                "Rows in the last flush.",
                |c| c.last_flush_rows as f64,
            ),
            (
                "auditlake_ingest_flush_seconds",
                "gauge",
                "Duration of the last flush.",
                |c| c.last_flush_seconds,
            ),
            (
                "auditlake_ingest_last_commit_timestamp_seconds",
                "gauge",
                "Unix time of the last Delta commit.",
                |c| c.last_commit_unix,
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (topic, c) in &topics {
                let _ = writeln!(out, "{name}{{topic=\"{topic}\"}} {}", get(c));
            }
        }
        let _ = writeln!(
            out,
            "# HELP auditlake_ingest_flush_seconds_total Time spent flushing.\n# TYPE auditlake_ingest_flush_seconds_total counter"
        );
        for (topic, c) in &topics {
            let _ = writeln!(
                out,
                "auditlake_ingest_flush_seconds_total{{topic=\"{topic}\"}} {}",
                c.flush_seconds_total
            );
        }
        let _ = writeln!(
            out,
            "# HELP auditlake_ingest_consumer_lag Messages behind the high watermark, per partition.\n# TYPE auditlake_ingest_consumer_lag gauge"
        );
        for ((topic, p), lag) in self.lag.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "auditlake_ingest_consumer_lag{{topic=\"{topic}\",partition=\"{p}\"}} {lag}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP auditlake_ingest_flush_retries_total Flushes retried after a failure.\n# TYPE auditlake_ingest_flush_retries_total counter\nauditlake_ingest_flush_retries_total {}",
            self.retries.load(std::sync::atomic::Ordering::Relaxed)
        );
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) as Prometheus text until the task
/// is dropped. A deliberately tiny HTTP/1.0 responder: one request per connection.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen for metrics on {addr}: {e}")))?;
    tracing::info!(%addr, "serving metrics");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = sock.read(&mut buf).await;
                let body = metrics.render();
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    }))
}
