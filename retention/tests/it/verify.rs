//! `Verify` fails, naming the object, when an erased user's data comes back.

use auditlake_retention::{Erase, Verify};
use auditlake_schemas::Lake;
use object_store::{ObjectStoreExt, PutPayload};

use crate::fixture::{self, VICTIM, now};

/// The path and bytes of an `api_access` data file whose bytes hold `needle`.
async fn copy_of_access_file(lake: &Lake, needle: &str) -> (String, bytes::Bytes) {
    let holder = fixture::objects_containing(lake, needle)
        .await
        .into_iter()
        .find(|p| p.starts_with("api_access/date=") && p.ends_with(".parquet"))
        .unwrap();
    let store = lake.object_store().unwrap();
    let got = store.get(&holder.as_str().into()).await.unwrap();
    (holder, got.bytes().await.unwrap())
}

#[tokio::test]
async fn a_planted_copy_of_an_old_data_file_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;

    // Keep a copy of a data file holding the victim, from before the erasure.
    let store = lake.object_store().unwrap();
    let (holder, copy) = copy_of_access_file(&lake, VICTIM).await;

    let t = now("2026-11-20T00:00:00Z");
    let (outcome, _) = Erase::new(lake.clone(), VICTIM, t).execute().await.unwrap();
    assert!(outcome.passed());

    let planted = holder.replace(".parquet", "-restored-from-backup.parquet");
    store
        .put(&planted.as_str().into(), PutPayload::from(copy))
        .await
        .unwrap();

    // By plaintext.
    let report = Verify::new(lake.clone(), t)
        .with_user(VICTIM)
        .execute()
        .await
        .unwrap();
    assert!(!report.passed());
    let failures = report.failures();
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with(&format!("erased_user_bytes: {planted}: "))),
        "{failures:?}"
    );
    // By keyed hash alone (no plaintext given).
    let report = Verify::new(lake.clone(), t).execute().await.unwrap();
    assert!(!report.passed());
    assert!(
        report
            .failures()
            .iter()
            .any(|f| f.starts_with(&format!("erased_users_hashed: {planted}: "))),
        "{:?}",
        report.failures()
    );
    assert!(report.unreferenced.contains(&planted));

    // A sweep's purge removes the orphan once it is older than the grace.
    let policy = auditlake_retention::Policy::parse("", "p.toml").unwrap();
    let sweep = auditlake_retention::Sweep::new(lake.clone(), policy, t)
        .with_wall_clock(chrono::Utc::now() + chrono::TimeDelta::hours(2))
        .execute()
        .await
        .unwrap();
    assert!(sweep.passed(), "{:?}", sweep.verify.map(|v| v.failures()));
    assert!(fixture::objects_containing(&lake, VICTIM).await.is_empty());
}

#[tokio::test]
async fn a_tampered_evidence_chain_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let t = now("2026-11-20T00:00:00Z");
    Erase::new(lake.clone(), VICTIM, t).execute().await.unwrap();
    let report = Verify::new(lake.clone(), t).execute().await.unwrap();
    assert!(report.passed(), "{:?}", report.failures());

    // Rewrite the evidence table without its first record.
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    let table = lake.require_table("retention_evidence").await.unwrap();
    let (_, _) = table.delete().with_predicate("seq = 0").await.unwrap();
    let _ = ctx;
    let report = Verify::new(lake.clone(), t)
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(!report.passed());
    assert!(
        report
            .failures()
            .iter()
            .any(|f| f.starts_with("evidence_chain:")),
        "{:?}",
        report.failures()
    );
}

/// Cutting the newest records off together with their commits leaves a chain
/// that is intact on its own; an anchor kept outside the lake shows the cut.
#[tokio::test]
async fn an_anchor_shows_newest_records_cut_off_with_their_commits() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let t = now("2026-11-20T00:00:00Z");
    Erase::new(lake.clone(), VICTIM, t).execute().await.unwrap();
    let first = Verify::new(lake.clone(), t).execute().await.unwrap();
    let anchor = (
        first.evidence_seq.unwrap(),
        first.evidence_sha256.clone().unwrap(),
    );
    let anchored = || {
        Verify::new(lake.clone(), t)
            .with_evidence(false)
            .with_evidence_anchor(anchor.0, anchor.1.clone())
    };
    assert!(anchored().execute().await.unwrap().passed());
    let wrong = Verify::new(lake.clone(), t)
        .with_evidence(false)
        .with_evidence_anchor(anchor.0, "0".repeat(64))
        .execute()
        .await
        .unwrap();
    assert!(!wrong.passed());

    // Remove the newest commit of the evidence table (the verify's record).
    let log = dir.path().join("lake/retention_evidence/_delta_log");
    let mut commits: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    commits.sort();
    std::fs::remove_file(commits.last().unwrap()).unwrap();
    let plain = Verify::new(lake.clone(), t)
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(
        plain
            .checks
            .iter()
            .any(|c| c.name == "evidence_chain" && c.passed),
        "without the anchor the shorter chain looks intact"
    );
    let cut = anchored().execute().await.unwrap();
    let failures = cut.failures();
    assert!(
        failures
            .iter()
            .any(|f| f.starts_with("evidence_chain:") && f.contains("cut off")),
        "{failures:?}"
    );
}

/// Numeric ids share prefixes: erasing `1002` leaves `10023`, `91002` and
/// `1002b`'s rows in data files, statistics, the log and quarantine. A
/// verification of `1002` passes at every depth (the other ids are not it),
/// and fails as soon as a row of `1002` itself is back.
#[tokio::test]
async fn another_id_holding_the_erased_ids_digits_is_not_the_user() {
    use auditlake_ingest::Backfill;
    use auditlake_retention::scan::Depth;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    let line = |i: usize, user: &str| {
        format!(
            r#"{{"event_id":"req-{i}","event_time":"2026-11-0{d}T08:00:00Z","app_id":"app-1","developer_id":"dev-1","user_id":"{user}","api":"order.list","required_scope":"order.read","token_scopes":["order.read"],"data_categories":["order"],"record_count":1,"status":200,"client_ip":"10.0.0.1","client_region":"CN","token_id":"tok-{user}","latency_ms":5,"response_bytes":100}}"#,
            d = 1 + i % 3
        )
    };
    let users = ["1002", "10023", "91002", "1002b"];
    let mut lines: Vec<String> = (0..400).map(|i| line(i, users[i % 4])).collect();
    // A malformed line of another user: quarantined with its raw bytes.
    lines.push(r#"{"event_id":"bad-1","user_id":"10023"}"#.into());
    let input = dir.path().join("api-access.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();
    Backfill::new(lake.clone())
        .with_flush_rows(100)
        .with_input(auditlake_schemas::Topic::ApiAccess, input)
        .execute()
        .await
        .unwrap();

    // A copy of a data file from before the erasure, holding `1002`'s rows.
    let store = lake.object_store().unwrap();
    let (holder, copy) = copy_of_access_file(&lake, "1002").await;

    let t = now("2026-11-20T00:00:00Z");
    let (outcome, _) = Erase::new(lake.clone(), "1002", t).execute().await.unwrap();
    assert!(
        outcome.passed(),
        "{:?}",
        outcome.verify.as_ref().map(|v| v.failures())
    );
    for depth in [Depth::Standard, Depth::Fast, Depth::Deep] {
        let report = Verify::new(lake.clone(), t)
            .with_user("1002")
            .with_depth(depth)
            .with_evidence(false)
            .execute()
            .await
            .unwrap();
        assert!(report.passed(), "{depth:?}: {:?}", report.failures());
    }
    // The others are still there, found whole.
    let report = Verify::new(lake.clone(), t)
        .with_user("10023")
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(!report.passed());

    // A restored copy of a file holding `1002` itself fails.
    let planted = holder.replace(".parquet", "-restored.parquet");
    store
        .put(&planted.as_str().into(), PutPayload::from(copy))
        .await
        .unwrap();
    let report = Verify::new(lake.clone(), t)
        .with_user("1002")
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(
        report
            .failures()
            .iter()
            .any(|f| f.starts_with(&format!("erased_user_bytes: {planted}: "))),
        "{:?}",
        report.failures()
    );
}
