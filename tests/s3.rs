//! End-to-end through `s3://` against a real S3-protocol server (s3s-fs):
//! backfill twice, and Kafka ingest surviving an object store outage.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use auditlake_testkit::{Broker, S3Server};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const BIN: &str = env!("CARGO_BIN_EXE_auditlake");

fn auditlake(s3: &S3Server) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.envs(s3.env())
        .env("AUDITLAKE_LOG", "warn,auditlake_ingest=info");
    cmd
}

fn count(s3: &S3Server, lake: &str, query: &str) -> i64 {
    let out = auditlake(s3)
        .args(["sql", "--format", "json", "--lake", lake, query])
        .output()
        .expect("run sql");
    assert!(
        out.status.success(),
        "sql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one json row");
    row["n"].as_i64().unwrap()
}

fn grant(i: usize) -> String {
    format!(
        r#"{{"event_id":"g-{i}","event_time":"2026-11-2{d}T08:00:00Z","app_id":"app-{a}","user_id":"u-{i}","action":"grant","scopes":["order.read"]}}"#,
        d = i % 3,
        a = i % 4
    )
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

#[test]
fn backfill_into_s3_is_exact_and_idempotent() {
    let s3 = S3Server::start().expect("start s3s-fs");
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..500).map(grant).collect();
    lines.push(grant(7)); // a producer retry
    lines.push(String::new()); // blank: skipped
    lines.push("{\"event_id\":\"g-bad\"}".into()); // missing fields: quarantined
    let file = dir.path().join("grants.jsonl");
    write_lines(&file, &lines);
    let lake = s3.lake_url("lake");
    for _ in 0..2 {
        let out = auditlake(&s3)
            .args(["ingest", "--lake", &lake, "--input"])
            .arg(format!("grants={}", file.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(count(&s3, &lake, "SELECT count(*) AS n FROM grants"), 500);
        assert_eq!(
            count(
                &s3,
                &lake,
                "SELECT count(DISTINCT event_id) AS n FROM grants"
            ),
            500
        );
        assert_eq!(count(&s3, &lake, "SELECT count(*) AS n FROM quarantine"), 1);
    }
    // The objects really are in the bucket, Hive-partitioned.
    let root = s3.root().unwrap().join(s3.bucket()).join("lake/grants");
    assert!(root.join("_delta_log").is_dir());
    assert!(root.join("date=2026-11-21").is_dir());
}

fn access(i: usize) -> String {
    format!(
        r#"{{"event_id":"req-{i:08}","event_time":"2026-11-20T{h:02}:15:30Z","app_id":"app-{a}","developer_id":"dev-{a}","user_id":"u-{u}","api":"order.list","required_scope":"order.read","status":200}}"#,
        h = i % 24,
        a = i % 5,
        u = i % 97
    )
}

async fn produce(brokers: &str, range: std::ops::Range<usize>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in range {
        let payload = access(i);
        producer
            .send(
                FutureRecord::to("api-access").key("k").payload(&payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn ingest(s3: &S3Server, lake: &str, brokers: &str) -> Child {
    auditlake(s3)
        .args([
            "ingest",
            "--lake",
            lake,
            "--brokers",
            brokers,
            "--group",
            "s3g",
            "--flush-interval",
            "1s",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_ingest_recovers_from_an_object_store_outage() {
    let mut s3 = S3Server::start().expect("start s3s-fs");
    let broker = Broker::start().expect("start tansu");
    for t in ["api-access", "grants", "apps", "deletions"] {
        broker.create_topic(t, 2).unwrap();
    }
    let lake = s3.lake_url("lake");
    let brokers = broker.bootstrap();
    produce(&brokers, 0..1000).await;
    let mut child = ingest(&s3, &lake, &brokers);
    let wait_for = |s3: &S3Server, n: i64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if s3_has_table(s3) && count(s3, &lake, "SELECT count(*) AS n FROM api_access") >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("the lake never reached {n} rows");
    };
    wait_for(&s3, 1000);
    // The store goes away while more events arrive and flushes fail.
    s3.stop();
    produce(&brokers, 1000..2500).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "ingest must keep running through the outage"
    );
    s3.restart().expect("restart s3s-fs");
    wait_for(&s3, 2500);
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        count(&s3, &lake, "SELECT count(*) AS n FROM api_access"),
        2500
    );
    assert_eq!(
        count(
            &s3,
            &lake,
            "SELECT count(DISTINCT event_id) AS n FROM api_access"
        ),
        2500
    );
}

fn s3_has_table(s3: &S3Server) -> bool {
    s3.root()
        .unwrap()
        .join(s3.bucket())
        .join("lake/api_access/_delta_log")
        .is_dir()
}
