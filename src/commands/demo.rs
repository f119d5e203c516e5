//! `auditlake demo`: the whole pipeline on the embedded default, with no
//! service installed: an in-process Kafka cluster (librdkafka's mock cluster)
//! and a local lake.
//!
//! gen --> produce into Kafka --> ingest (consumer group, exactly once) --> lake
//!     --> analyst queries printed as tables

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use auditlake::r#gen::GenArgs;
use auditlake_ingest::{KafkaIngest, Metrics};
use auditlake_query::Format;
use clap::Args as ClapArgs;
use rdkafka::mocking::MockCluster;

/// Marker file that makes a directory safe for the demo to wipe.
const MARKER: &str = ".auditlake-demo";
/// Partitions per topic: the mock cluster keeps only 5 MiB per partition, so
/// spread the messages while producer and consumer run together.
const PARTITIONS: i32 = 12;

/// Run the whole pipeline on the embedded default.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Directory of the demo lake (wiped and recreated if it holds a previous demo).
    #[arg(long, default_value = "auditlake-demo")]
    dir: PathBuf,
    /// api-access events to generate.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    prepare_dir(&args.dir)?;
    let lake_dir = args.dir.join("lake");
    let lake = auditlake_schemas::Lake::open(&lake_dir.to_string_lossy())?;

    step("1/3", "starting an in-process Kafka cluster (3 brokers)");
    let cluster = MockCluster::new(3).context("starting the mock Kafka cluster")?;
    for topic in auditlake_schemas::Topic::ALL {
        cluster
            .create_topic(topic.name(), PARTITIONS, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    let brokers = cluster.bootstrap_servers();

    step(
        "2/3",
        &format!(
            "generating {} access events into Kafka while `ingest` consumes them",
            args.events
        ),
    );
    let metrics = Arc::new(Metrics::default());
    let produced_all = Arc::new(AtomicBool::new(false));
    let gen_args = GenArgs {
        seed: args.seed,
        events: args.events,
        ..GenArgs::default()
    };
    let producer = {
        let brokers = brokers.clone();
        let done = produced_all.clone();
        tokio::task::spawn_blocking(move || {
            // Give the consumer group time to form before the first message.
            std::thread::sleep(Duration::from_secs(4));
            let report = super::generate::produce(&gen_args, &brokers, 0);
            done.store(true, Ordering::SeqCst);
            report
        })
    };
    let ingest = KafkaIngest::new(lake.clone(), brokers, "auditlake-demo")
        .with_flush(Duration::from_secs(2), 200_000, 64 << 20)
        .with_metrics(metrics.clone());
    // Stop once the producer is done and every produced message was consumed.
    let stop = {
        let metrics = metrics.clone();
        let done = produced_all.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                if done.load(Ordering::SeqCst) && metrics.total_lag() == 0 {
                    // Lag comes from periodic statistics: confirm it stays at 0.
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    if metrics.total_lag() == 0 {
                        return;
                    }
                }
            }
        }
    };
    let report = ingest.execute(stop).await?;
    let gen_report = producer.await??;
    drop(cluster);
    for (topic, c) in &report.topics {
        let expected = gen_report.manifest.topics.get(topic);
        println!(
            "  {topic:>10}: {} consumed, {} stored, {} duplicates dropped, {} quarantined{}",
            c.consumed,
            c.stored,
            c.duplicates,
            c.quarantined,
            expected.map_or(String::new(), |e| format!(
                "  (generated: {} distinct events, {} retries, {} malformed)",
                e.distinct_events, e.duplicates, e.malformed
            ))
        );
    }

    step("3/3", "analyst queries over the lake");
    let ctx = auditlake_query::session(&lake).await?;
    for (title, sql) in QUERIES {
        println!("\n-- {title}\n{sql}");
        let df = ctx.sql(sql).await.map_err(auditlake_query::Error::Query)?;
        let schema = df.schema().inner().clone();
        let batches = df.collect().await?;
        auditlake_query::write_batches(&batches, schema, Format::Table, std::io::stdout())?;
    }
    println!(
        "\ndone in {:.1} s. The lake is in {}; try:\n  auditlake sql --lake {} \"SELECT * FROM quarantine\"",
        started.elapsed().as_secs_f64(),
        lake_dir.display(),
        lake_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

const QUERIES: [(&str, &str); 4] = [
    (
        "rows per table, stored exactly once",
        "SELECT 'api_access' AS tbl, count(*) AS n_rows, count(DISTINCT event_id) AS distinct_ids FROM api_access \
         UNION ALL SELECT 'grants', count(*), count(DISTINCT event_id) FROM grants \
         UNION ALL SELECT 'apps', count(*), count(DISTINCT event_id) FROM apps \
         UNION ALL SELECT 'deletions', count(*), count(DISTINCT event_id) FROM deletions \
         UNION ALL SELECT 'quarantine', count(*), count(DISTINCT source_id) FROM quarantine ORDER BY tbl",
    ),
    (
        "busiest apps: data accesses and distinct users",
        "SELECT app_id, count(*) AS accesses, count(DISTINCT user_id) AS users \
         FROM api_access WHERE status BETWEEN 200 AND 299 AND user_id IS NOT NULL \
         GROUP BY app_id ORDER BY accesses DESC LIMIT 5",
    ),
    (
        "accesses from outside CN by region",
        "SELECT client_region, count(*) AS accesses, count(DISTINCT app_id) AS apps \
         FROM api_access WHERE client_region <> 'CN' GROUP BY client_region ORDER BY accesses DESC",
    ),
    (
        "why messages were quarantined",
        "SELECT topic, reason, count(*) AS n FROM quarantine GROUP BY topic, reason ORDER BY topic, reason",
    ),
];

fn step(n: &str, what: &str) {
    println!("\n== [{n}] {what}");
}

fn prepare_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        if !dir.join(MARKER).exists() {
            anyhow::bail!(
                "{} exists and was not made by `auditlake demo`; pass --dir with a new directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by auditlake demo\n")?;
    Ok(())
}
