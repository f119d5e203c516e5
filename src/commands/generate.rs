//! `auditlake gen`: synthetic platform traffic with planted violations, to
//! JSON-lines files (`--out DIR`) or into Kafka (`--brokers HOST:PORT`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use auditlake::r#gen::{self, GenArgs, GenReport, GenSink, Topic};
use clap::Args as ClapArgs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

/// Generate synthetic platform traffic with planted violations.
#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(flatten)]
    traffic: GenArgs,
    /// Produce into Kafka (idempotent producer, keyed by app_id) instead of files.
    #[arg(long, env = "AUDITLAKE_BROKERS", conflicts_with = "out")]
    brokers: Option<String>,
    /// Messages per second when producing into Kafka (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.rate > 0 && args.brokers.is_none() {
        anyhow::bail!(
            "--rate paces producing into Kafka; it needs --brokers (files are written at full speed)"
        );
    }
    let started = Instant::now();
    let report = match args.brokers.clone() {
        Some(brokers) => {
            let gen_args = args.traffic.clone();
            tokio::task::spawn_blocking(move || produce(&gen_args, &brokers, args.rate)).await??
        }
        None => {
            if args.traffic.out.is_none() {
                anyhow::bail!("gen needs --out DIR (files) or --brokers HOST:PORT (Kafka)");
            }
            let gen_args = args.traffic.clone();
            tokio::task::spawn_blocking(move || r#gen::run_to_files(&gen_args)).await??
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let m = &report.manifest;
    for (topic, t) in &m.topics {
        println!(
            "{topic}: {} lines ({} events, {} duplicates, {} malformed)",
            t.lines, t.distinct_events, t.duplicates, t.malformed
        );
    }
    let access = m.topics.get("api-access").map_or(0, |t| t.lines);
    println!(
        "planted {} findings over {} rules and {} obligations; suggested --now {}; {:.2} s ({:.0} access lines/s)",
        report.planted.findings.len(),
        m.findings_by_rule.len(),
        report.planted.obligations.len(),
        m.suggested_now,
        secs,
        access as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Generates into Kafka and returns the report.
pub fn produce(args: &GenArgs, brokers: &str, rate: u64) -> anyhow::Result<GenReport> {
    let mut sink = KafkaSink::new(brokers, rate)?;
    let report = r#gen::generate(args, &mut sink)?;
    sink.finish()?;
    Ok(report)
}

/// Counts messages the broker did not take (a missing topic, a refused
/// write), keeping the first failure to name it.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first.lock().expect("delivery lock");
            first.get_or_insert_with(|| format!("topic {}: {e}", msg.topic()));
        }
    }
}

/// A [`GenSink`] producing each line as one Kafka message keyed by app_id.
pub struct KafkaSink {
    producer: BaseProducer<Deliveries>,
    rate: u64,
    sent: u64,
    started: Instant,
}

impl KafkaSink {
    /// An idempotent producer to `brokers`, at most `rate` messages/s (0: unlimited).
    pub fn new(brokers: &str, rate: u64) -> anyhow::Result<Self> {
        let producer: BaseProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "10")
            .set("queue.buffering.max.messages", "200000")
            .set("compression.type", "lz4")
            .create_with_context(Deliveries::default())
            .with_context(|| format!("creating a Kafka producer for {brokers}"))?;
        Ok(Self {
            producer,
            rate,
            sent: 0,
            started: Instant::now(),
        })
    }

    /// Waits until every message is acknowledged; an error if any was not.
    pub fn finish(self) -> anyhow::Result<()> {
        self.producer
            .flush(Duration::from_secs(60))
            .context("flushing produced messages")?;
        let deliveries = self.producer.context();
        let failed = deliveries.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = deliveries.first.lock().expect("delivery lock").clone();
            anyhow::bail!(
                "{failed} of {} messages were not delivered (first: {}); does every topic exist?",
                self.sent,
                first.unwrap_or_default()
            );
        }
        Ok(())
    }
}

impl GenSink for KafkaSink {
    fn emit(&mut self, topic: Topic, key: &str, line: &[u8]) -> anyhow::Result<()> {
        let mut record = BaseRecord::to(topic.name()).key(key).payload(line);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e).context("producing a generated message"),
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        if self.rate > 0 {
            let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(())
    }
}
