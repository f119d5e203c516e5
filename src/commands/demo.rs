//! `auditlake demo`: the whole pipeline on the embedded default, with no
//! service installed: an in-process Kafka cluster (librdkafka's mock cluster)
//! and a local lake.
//!
//! gen --> produce into Kafka --> ingest (consumer group, exactly once) --> lake
//!     --> analyst queries --> detect (findings, obligations)
//!     --> erase one user --> verify --> evidence

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

    step("1/5", "starting an in-process Kafka cluster (3 brokers)");
    let cluster = MockCluster::new(3).context("starting the mock Kafka cluster")?;
    for topic in auditlake_schemas::Topic::ALL {
        cluster
            .create_topic(topic.name(), PARTITIONS, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    let brokers = cluster.bootstrap_servers();

    step(
        "2/5",
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

    step("3/5", "analyst queries over the lake");
    let ctx = auditlake_query::session(&lake).await?;
    for (title, sql) in QUERIES {
        println!("\n-- {title}\n{sql}");
        let df = ctx.sql(sql).await.map_err(auditlake_query::Error::Query)?;
        let schema = df.schema().inner().clone();
        let batches = df.collect().await?;
        auditlake_query::write_batches(&batches, schema, Format::Table, super::stdout())?;
    }
    let now = chrono::DateTime::parse_from_rfc3339(&gen_report.manifest.suggested_now)
        .context("gen's suggested_now")?
        .with_timezone(&chrono::Utc);
    step(
        "4/5",
        &format!(
            "detect: every rule at --now {}",
            gen_report.manifest.suggested_now
        ),
    );
    let (findings, metrics) = auditlake_query::detect::Detect::new(lake.clone())
        .with_now(now)
        .execute()
        .await?;
    println!(
        "  {} findings, obligations by state: {:?} ({} ms)",
        findings.findings.num_rows(),
        metrics.obligations,
        metrics.total_ms
    );
    let ctx = auditlake_query::session(&lake).await?;
    show(
        &ctx,
        "findings per rule (and how many gen planted)",
        &format!(
            "SELECT rule_id, array_to_string(array_agg(DISTINCT clause), '; ') AS clauses, severity, \
             count(*) AS findings, count(DISTINCT app_id) AS apps, {} AS planted \
             FROM findings GROUP BY rule_id, severity ORDER BY rule_id",
            planted_case(&gen_report.manifest.findings_by_rule)
        ),
    )
    .await?;
    show(
        &ctx,
        "findings per app (top 8)",
        "SELECT app_id, developer_id, count(*) AS findings, count(DISTINCT rule_id) AS rules \
         FROM findings GROUP BY app_id, developer_id ORDER BY findings DESC, app_id LIMIT 8",
    )
    .await?;

    let user = busiest_user(&ctx).await?;
    step(
        "5/5",
        &format!("retention: erase user {user}, verify, evidence"),
    );
    let before = count(&ctx, "SELECT count(*) AS n FROM api_access").await?;
    let (erased, _) = auditlake_retention::Erase::new(lake.clone(), user.clone(), now)
        .with_reason(Some("user_request".into()))
        .execute()
        .await?;
    let ctx = auditlake_query::session(&lake).await?;
    let after = count(&ctx, "SELECT count(*) AS n FROM api_access").await?;
    println!(
        "  rows removed per table: {:?}; api_access {before} -> {after}",
        erased.rows_removed
    );
    let report = auditlake_retention::Verify::new(lake.clone(), now)
        .with_user(user.clone())
        .execute()
        .await?;
    println!(
        "  verify: {} objects ({} bytes) read back, {} checks, {}",
        report.objects,
        report.bytes,
        report.checks.len(),
        if report.passed() {
            "all passed"
        } else {
            "FAILED"
        }
    );
    let ctx = auditlake_query::session(&lake).await?;
    show(
        &ctx,
        "retention evidence (hash-chained)",
        "SELECT seq, kind, run_at, outcome, subject, objects_removed, rows_removed, passed, \
         substr(prev_sha256, 1, 16) AS prev_sha256, substr(sha256, 1, 16) AS sha256 \
         FROM retention_evidence ORDER BY seq",
    )
    .await
    .ok();
    if !report.passed() {
        anyhow::bail!("verification failed: {:?}", report.failures());
    }
    println!(
        "\ndone in {:.1} s. The lake is in {}; try:\n  auditlake sql --lake {} \"SELECT * FROM quarantine\"",
        started.elapsed().as_secs_f64(),
        lake_dir.display(),
        lake_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn show(
    ctx: &datafusion::prelude::SessionContext,
    title: &str,
    sql: &str,
) -> anyhow::Result<()> {
    println!("\n-- {title}");
    let df = ctx.sql(sql).await.map_err(auditlake_query::Error::Query)?;
    let schema = df.schema().inner().clone();
    let batches = df.collect().await?;
    auditlake_query::write_batches(&batches, schema, Format::Table, super::stdout())?;
    Ok(())
}

async fn count(ctx: &datafusion::prelude::SessionContext, sql: &str) -> anyhow::Result<i64> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let col = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Int64)?;
    Ok(arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&col).value(0))
}

/// The user with the most accesses: the erasure touches many files.
async fn busiest_user(ctx: &datafusion::prelude::SessionContext) -> anyhow::Result<String> {
    let batches = ctx
        .sql("SELECT CAST(user_id AS VARCHAR) AS u FROM api_access WHERE user_id IS NOT NULL GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1")
        .await?
        .collect()
        .await?;
    let col = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Utf8)?;
    Ok(arrow::array::AsArray::as_string::<i32>(&col)
        .value(0)
        .to_string())
}

/// `CASE rule_id WHEN .. THEN n .. END`: the planted count per rule.
fn planted_case(by_rule: &std::collections::BTreeMap<String, usize>) -> String {
    let arms: String = by_rule
        .iter()
        .map(|(rule, n)| format!(" WHEN '{rule}' THEN {n}"))
        .collect();
    format!("CASE rule_id{arms} ELSE 0 END")
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
