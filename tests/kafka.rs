//! End-to-end: the `auditlake ingest --brokers` process against a real
//! Kafka-protocol broker (tansu), killed and restarted, with a local lake.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auditlake_testkit::Broker;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const BIN: &str = env!("CARGO_BIN_EXE_auditlake");
const PARTITIONS: u32 = 3;

fn broker() -> Broker {
    let broker = Broker::start().expect("start tansu");
    for t in ["api-access", "grants", "apps", "deletions"] {
        broker.create_topic(t, PARTITIONS).expect("create topic");
    }
    broker
}

fn access(i: usize) -> String {
    format!(
        r#"{{"event_id":"req-{i:08}","event_time":"2026-11-{day:02}T{h:02}:15:30.123Z","app_id":"app-{app}","developer_id":"dev-{app}","user_id":"u-{u}","api":"order.list","required_scope":"order.read","token_scopes":["order.read"],"data_categories":["order"],"record_count":1,"status":200,"client_ip":"10.0.0.{app}","client_region":"CN","token_id":"t-{u}","latency_ms":5,"response_bytes":99}}"#,
        day = 20 + i % 3,
        h = i % 24,
        app = i % 7,
        u = i % 101
    )
}

/// Produces `n` access events numbered from `from`, every 50th twice (a
/// producer retry at another offset), plus `bad` malformed messages.
/// Returns the number of distinct events.
async fn produce(brokers: &str, from: usize, n: usize, bad: usize) -> usize {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let mut futures = Vec::new();
    let mut send = |key: String, payload: String| {
        let producer = producer.clone();
        futures.push(tokio::spawn(async move {
            producer
                .send(
                    FutureRecord::to("api-access").key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }));
    };
    for i in from..from + n {
        send(format!("app-{}", i % 7), access(i));
        if i % 50 == 0 {
            send(format!("app-{}", i % 7), access(i));
        }
    }
    for j in 0..bad {
        send("bad".into(), format!("{{not json {from}-{j}"));
    }
    for f in futures {
        f.await.expect("join");
    }
    n
}

fn ingest(lake: &Path, brokers: &str, group: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["ingest", "--lake"])
        .arg(lake)
        .args([
            "--brokers",
            brokers,
            "--group",
            group,
            "--flush-interval",
            "1s",
        ])
        .args(extra)
        .env("AUDITLAKE_LOG", "warn,auditlake_ingest=info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ingest")
}

fn sql_json(lake: &Path, query: &str) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["sql", "--format", "json", "--lake"])
        .arg(lake)
        .arg(query)
        .output()
        .expect("run sql");
    assert!(
        out.status.success(),
        "sql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn count(lake: &Path, query: &str) -> i64 {
    if !lake.join("api_access").exists() {
        return 0;
    }
    sql_json(lake, query)[0]["n"].as_i64().unwrap()
}

fn counts(lake: &Path) -> (i64, i64, i64) {
    (
        count(lake, "SELECT count(*) AS n FROM api_access"),
        count(lake, "SELECT count(DISTINCT event_id) AS n FROM api_access"),
        count(lake, "SELECT count(*) AS n FROM quarantine"),
    )
}

/// Sends SIGTERM and asserts the clean shutdown (flush, commit, exit 0).
fn terminate(child: &mut Child) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "ingest exits 0 on SIGTERM, got {status}");
}

/// Runs an ingest until the lake holds `events` distinct access events and
/// `quarantined` quarantine rows (or 150 s pass), then stops it with SIGTERM.
///
/// tansu keeps a member killed with -9 in the group, holding its partitions,
/// until a member leaves cleanly (FACTS.md): when nothing lands for 15 s the
/// member is stopped with SIGTERM and started again, as an operator would.
async fn ingest_until(
    lake: &Path,
    brokers: &str,
    group: &str,
    extra: &[&str],
    events: i64,
    quarantined: i64,
) {
    let mut child = ingest(lake, brokers, group, extra);
    let deadline = Instant::now() + Duration::from_secs(150);
    let (mut last, mut progress_at) = ((-1, -1), Instant::now());
    loop {
        let (_, distinct, q) = counts(lake);
        if (distinct >= events && q >= quarantined) || Instant::now() > deadline {
            break;
        }
        if (distinct, q) != last {
            (last, progress_at) = ((distinct, q), Instant::now());
        } else if progress_at.elapsed() > Duration::from_secs(15) {
            eprintln!("no progress for 15 s at {last:?}: restarting the member");
            terminate(&mut child);
            child = ingest(lake, brokers, group, extra);
            progress_at = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    terminate(&mut child);
}

/// Runs an ingest until it has been idle for 3 s, and waits for it.
fn ingest_to_idle(lake: &Path, brokers: &str, group: &str) {
    let status = ingest(lake, brokers, group, &["--stop-when-idle", "3s"])
        .wait()
        .expect("wait ingest");
    assert!(status.success(), "ingest exited with {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_counts_with_duplicates_and_malformed() {
    let broker = broker();
    let lake = tempfile::tempdir().unwrap();
    let n = produce(&broker.bootstrap(), 0, 3000, 7).await;
    ingest_to_idle(lake.path(), &broker.bootstrap(), "g1");
    assert_eq!(counts(lake.path()), (n as i64, n as i64, 7));
    let reasons = sql_json(lake.path(), "SELECT DISTINCT reason FROM quarantine");
    assert!(
        reasons
            .iter()
            .all(|r| r["reason"].as_str().unwrap().starts_with("invalid JSON"))
    );
    // A second run (same group, then a new group replaying from offset 0) changes nothing.
    ingest_to_idle(lake.path(), &broker.bootstrap(), "g1");
    ingest_to_idle(lake.path(), &broker.bootstrap(), "replay");
    assert_eq!(counts(lake.path()), (n as i64, n as i64, 7));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_at_random_moments_loses_and_duplicates_nothing() {
    let broker = broker();
    let lake = tempfile::tempdir().unwrap();
    let brokers = broker.bootstrap();
    let total = 20_000;
    let producer = {
        let brokers = brokers.clone();
        tokio::spawn(async move { produce(&brokers, 0, total, 11).await })
    };
    // Deterministic pseudo-random kill times between 0.3 and 2.5 s.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let wait = Duration::from_millis(300 + x % 2200);
        let mut child = ingest(lake.path(), &brokers, "crashy", &["--flush-rows", "700"]);
        tokio::time::sleep(wait).await;
        child.kill().expect("kill -9");
        child.wait().unwrap();
        eprintln!("round {round}: killed after {wait:?}");
    }
    producer.await.unwrap();
    ingest_until(lake.path(), &brokers, "crashy", &[], total as i64, 11).await;
    assert_eq!(counts(lake.path()), (total as i64, total as i64, 11));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_members_one_killed_and_restarted() {
    let broker = broker();
    let lake = tempfile::tempdir().unwrap();
    let brokers = broker.bootstrap();
    produce(&brokers, 0, 4000, 3).await;
    let mut a = ingest(lake.path(), &brokers, "pair", &["--flush-rows", "500"]);
    let mut b = ingest(lake.path(), &brokers, "pair", &["--flush-rows", "500"]);
    tokio::time::sleep(Duration::from_secs(4)).await;
    produce(&brokers, 4000, 4000, 3).await;
    b.kill().unwrap();
    b.wait().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut b = ingest(lake.path(), &brokers, "pair", &["--flush-rows", "500"]);
    produce(&brokers, 8000, 2000, 0).await;
    // Let both catch up, then stop them cleanly with SIGTERM. tansu may keep
    // the killed member's partitions unassigned until a member leaves cleanly
    // (FACTS.md): if nothing lands for 15 s, restart b as an operator would.
    let deadline = Instant::now() + Duration::from_secs(150);
    let (mut last, mut progress_at) = (-1, Instant::now());
    loop {
        let distinct = counts(lake.path()).1;
        if distinct >= 10_000 || Instant::now() > deadline {
            break;
        }
        if distinct != last {
            (last, progress_at) = (distinct, Instant::now());
        } else if progress_at.elapsed() > Duration::from_secs(15) {
            eprintln!("no progress for 15 s at {last}: restarting member b");
            terminate(&mut b);
            b = ingest(lake.path(), &brokers, "pair", &["--flush-rows", "500"]);
            progress_at = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    terminate(&mut a);
    terminate(&mut b);
    assert_eq!(counts(lake.path()), (10_000, 10_000, 6));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lone_message_lands_within_the_flush_interval() {
    let broker = broker();
    let lake = tempfile::tempdir().unwrap();
    let brokers = broker.bootstrap();
    let mut child = ingest(lake.path(), &brokers, "lone", &[]);
    // Wait until the consumer has joined (its first empty flush creates nothing,
    // so give the group a moment), then send one message.
    tokio::time::sleep(Duration::from_secs(6)).await;
    produce(&brokers, 42, 1, 0).await;
    let sent = Instant::now();
    let mut landed = None;
    while sent.elapsed() < Duration::from_secs(20) {
        if counts(lake.path()).0 == 1 {
            landed = Some(sent.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let landed = landed.expect("the lone message never landed");
    // Flush interval 1 s, plus the sql process start and a poll period.
    assert!(landed < Duration::from_secs(5), "landed after {landed:?}");
    let ids: HashSet<String> = sql_json(lake.path(), "SELECT event_id FROM api_access")
        .into_iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, HashSet::from(["req-00000042".to_string()]));
}
