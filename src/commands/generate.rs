//! `auditlake gen`: synthetic platform traffic with planted violations, to
//! JSON-lines files (`--out DIR`) or into Kafka (`--brokers HOST:PORT`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use auditlake::r#gen::{self, GenArgs, GenReport, GenSink, Topic};
use clap::Args as ClapArgs;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

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

/// A [`GenSink`] producing each line as one Kafka message keyed by app_id.
pub struct KafkaSink {
    producer: BaseProducer,
    rate: u64,
    sent: u64,
    started: Instant,
}

impl KafkaSink {
    /// An idempotent producer to `brokers`, at most `rate` messages/s (0: unlimited).
    pub fn new(brokers: &str, rate: u64) -> anyhow::Result<Self> {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "10")
            .set("queue.buffering.max.messages", "200000")
            .set("compression.type", "lz4")
            .create()
            .with_context(|| format!("creating a Kafka producer for {brokers}"))?;
        Ok(Self {
            producer,
            rate,
            sent: 0,
            started: Instant::now(),
        })
    }

    /// Waits until every message is acknowledged.
    pub fn finish(self) -> anyhow::Result<()> {
        self.producer
            .flush(Duration::from_secs(60))
            .context("flushing produced messages")?;
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
