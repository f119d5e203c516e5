//! End-to-end: erase a user, then replay the whole Kafka topic from offset 0
//! into the same lake: the user stays absent, everyone else exactly once.
//! Events of the user dated after the erasure are new accesses: they are
//! stored under the user's pseudonym and the rules flag them. On a local lake
//! and on s3s-fs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use auditlake_testkit::{Broker, LakePlace};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const BIN: &str = env!("CARGO_BIN_EXE_auditlake");
const USERS: usize = 97;

fn access(i: usize) -> String {
    format!(
        r#"{{"event_id":"req-{i:08}","event_time":"2026-11-2{d}T{h:02}:15:30Z","app_id":"app-{a}","developer_id":"dev-{a}","user_id":"user-{u:03}","api":"order.list","required_scope":"order.read","status":200}}"#,
        d = i % 3,
        h = i % 24,
        a = i % 5,
        u = i % USERS
    )
}

fn grant(i: usize) -> String {
    format!(
        r#"{{"event_id":"g-{i}","event_time":"2026-11-19T08:00:00Z","app_id":"app-{a}","user_id":"user-{u:03}","action":"grant","scopes":["order.read"]}}"#,
        a = i % 5,
        u = i % USERS
    )
}

fn register(app: usize) -> String {
    format!(
        r#"{{"event_id":"r-{app}","event_time":"2026-11-01T00:00:00Z","app_id":"app-{app}","developer_id":"dev-{app}","app_kind":"third_party","action":"register","declared_scopes":["order.read"],"declared_categories":[],"export_approved":false}}"#
    )
}

/// An access by `app` to `user`'s orders at `time`.
fn access_at(id: &str, time: &str, app: usize, user: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","event_time":"{time}","app_id":"app-{app}","developer_id":"dev-{app}","user_id":"{user}","api":"order.list","required_scope":"order.read","status":200}}"#
    )
}

async fn produce(brokers: &str, topic: &str, lines: Vec<String>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let sends: Vec<_> = lines
        .iter()
        .map(|l| {
            producer.send(
                FutureRecord::to(topic).key("k").payload(l),
                Duration::from_secs(30),
            )
        })
        .collect();
    for s in sends {
        s.await.map_err(|(e, _)| e).unwrap();
    }
}

/// Where the lake lives: a local directory, or a bucket on s3s-fs.
struct Place(LakePlace);

impl Place {
    fn auditlake(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("AUDITLAKE_LOG", "warn")
            .env("AUDITLAKE_LAKE", self.0.lake())
            .envs(self.0.env())
            .stderr(Stdio::inherit());
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "auditlake {args:?} failed");
        String::from_utf8(out.stdout).unwrap()
    }

    fn n(&self, query: &str) -> i64 {
        let out = self.auditlake(&["sql", "--format", "json", query]);
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap()["n"]
            .as_i64()
            .unwrap()
    }

    fn ingest_to_idle(&self, brokers: &str, group: &str, extra: &[&str]) {
        let mut args = vec![
            "ingest",
            "--brokers",
            brokers,
            "--group",
            group,
            "--flush-interval",
            "1s",
            "--stop-when-idle",
            "4s",
        ];
        args.extend(extra);
        self.auditlake(&args);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_from_offset_zero_does_not_bring_an_erased_user_back_local() {
    replay_after_erase(Place(LakePlace::local())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_from_offset_zero_does_not_bring_an_erased_user_back_s3() {
    if let Some(place) = LakePlace::s3("replay on s3s-fs") {
        replay_after_erase(Place(place)).await;
    }
}

async fn replay_after_erase(place: Place) {
    let broker = Broker::start().expect("start tansu");
    for t in ["api-access", "grants", "apps", "deletions"] {
        broker.create_topic(t, 2).unwrap();
    }
    let brokers = broker.bootstrap();
    let total = 3000;
    produce(&brokers, "api-access", (0..total).map(access).collect()).await;
    produce(&brokers, "grants", (0..USERS * 2).map(grant).collect()).await;
    produce(&brokers, "apps", (0..5).map(register).collect()).await;
    place.ingest_to_idle(&brokers, "first", &[]);
    assert_eq!(
        place.n("SELECT count(*) AS n FROM api_access"),
        total as i64
    );
    let victim = "user-005";
    let theirs = place.n(&format!(
        "SELECT count(*) AS n FROM api_access WHERE user_id = '{victim}'"
    ));
    let their_grants = place.n(&format!(
        "SELECT count(*) AS n FROM grants WHERE user_id = '{victim}'"
    ));
    assert!(theirs > 0 && their_grants > 0);

    place.auditlake(&[
        "retention",
        "erase",
        "--user",
        victim,
        "--reason",
        "user_request",
    ]);
    let after_erase = place.n("SELECT count(*) AS n FROM api_access");
    assert_eq!(after_erase, total as i64 - theirs);

    // The erasure took effect now (the wall clock). After it the gateway
    // keeps sending: one late event of before it (erased data: dropped), and
    // new accesses (kept under the pseudonym). The user grants app-0 again
    // at +2h, so app-0's access at +3h is lawful; the ones at +1h (app-0)
    // and +4h (app-1) are not.
    let at = |hours: i64| {
        (chrono::Utc::now() + chrono::TimeDelta::hours(hours))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    produce(
        &brokers,
        "api-access",
        vec![
            access_at("late-1", "2026-11-21T10:00:00Z", 0, victim),
            access_at("new-1", &at(1), 0, victim),
            access_at("new-2", &at(3), 0, victim),
            access_at("new-3", &at(4), 1, victim),
        ],
    )
    .await;
    produce(
        &brokers,
        "grants",
        vec![format!(
            r#"{{"event_id":"g-new","event_time":"{}","app_id":"app-0","user_id":"{victim}","action":"grant","scopes":["order.read"]}}"#,
            at(2)
        )],
    )
    .await;

    // Replay both topics from offset 0, with a new group.
    place.ingest_to_idle(&brokers, "replay", &["--replay-from-beginning"]);
    assert_eq!(
        place.n(&format!(
            "SELECT count(*) AS n FROM api_access WHERE user_id = '{victim}'"
        )),
        0
    );
    assert_eq!(
        place.n(&format!(
            "SELECT count(*) AS n FROM grants WHERE user_id = '{victim}'"
        )),
        0
    );
    assert_eq!(
        place.n("SELECT count(*) AS n FROM api_access"),
        after_erase + 3
    );
    assert_eq!(
        place.n("SELECT count(DISTINCT event_id) AS n FROM api_access"),
        after_erase + 3
    );
    assert_eq!(
        place.n("SELECT count(*) AS n FROM grants"),
        (USERS * 2) as i64 - their_grants + 1
    );
    // The new events carry the pseudonym, which joins to the tombstone.
    let pseudonym = "(SELECT 'erased:' || user_hash FROM erasures)";
    assert_eq!(
        place.n(&format!(
            "SELECT count(*) AS n FROM api_access WHERE user_id = {pseudonym} \
             AND event_id IN ('new-1', 'new-2', 'new-3')"
        )),
        3
    );
    assert_eq!(
        place.n(&format!(
            "SELECT count(*) AS n FROM grants WHERE user_id = {pseudonym} AND event_id = 'g-new'"
        )),
        1
    );
    assert_eq!(
        place.n("SELECT count(*) AS n FROM api_access WHERE event_id = 'late-1'"),
        0
    );
    // The rules see the pseudonym as a user: the two accesses without a grant
    // in force are findings, the one after the new grant is not.
    let findings = place.auditlake(&["detect", "--now", &at(24), "--format", "jsonl"]);
    let mut flagged: Vec<(String, String)> = findings
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|f| {
            f["user_id"]
                .as_str()
                .is_some_and(|u| u.starts_with("erased:"))
        })
        .map(|f| {
            (
                f["rule_id"].as_str().unwrap().to_string(),
                f["event_ids"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    flagged.sort();
    assert_eq!(
        flagged,
        vec![
            ("scope_not_granted".to_string(), "new-1".to_string()),
            ("scope_not_granted".to_string(), "new-3".to_string())
        ]
    );
    assert!(!findings.contains(victim), "a finding names the erased id");
    // verify --user finds no trace of the id.
    place.auditlake(&["retention", "verify", "--user", victim]);

    // Erasing the user again (as of a day later) removes the rows stored
    // under the pseudonym too, and moves the split: another replay brings
    // none of them back.
    place.auditlake(&["retention", "erase", "--user", victim, "--now", &at(24)]);
    let theirs_now = format!(
        "SELECT count(*) AS n FROM api_access WHERE user_id = '{victim}' OR user_id LIKE 'erased:%'"
    );
    assert_eq!(place.n(&theirs_now), 0);
    place.ingest_to_idle(&brokers, "replay-2", &["--replay-from-beginning"]);
    assert_eq!(place.n(&theirs_now), 0);
    assert_eq!(place.n("SELECT count(*) AS n FROM api_access"), after_erase);
    assert_eq!(
        place.n("SELECT count(*) AS n FROM grants WHERE user_id LIKE 'erased:%'"),
        0
    );
    assert_eq!(place.n("SELECT count(*) AS n FROM erasures"), 2);
    // And the erased id is in no object under the lake root.
    let root = place.0.root_on_disk();
    assert!(
        root.join("api_access").is_dir(),
        "no lake at {}",
        root.display()
    );
    let mut found = Vec::new();
    scan(&root, victim.as_bytes(), &mut found);
    assert!(found.is_empty(), "erased id found in {found:?}");
}

fn scan(dir: &Path, needle: &[u8], found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            scan(&path, needle, found);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
}
