//! `Erase`: after it, the id's bytes are nowhere under the root, everyone
//! else's rows are intact, and a rerun (as after a crash) changes nothing.

use auditlake_retention::{Erase, Verify, evidence};
use auditlake_schemas::Lake;
use auditlake_schemas::erasure;

use crate::fixture::{self, VICTIM, now};

#[tokio::test]
async fn erase_leaves_no_byte_of_the_user_and_everyone_else_intact() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;

    let before = fixture::rows_by_user(&lake).await;
    let victim_rows: u64 = before
        .iter()
        .filter(|((_, u), _)| u == VICTIM)
        .map(|(_, n)| n)
        .sum();
    assert!(
        victim_rows > 50,
        "the fixture names the victim: {victim_rows}"
    );
    assert_eq!(fixture::quarantine_mentions(&lake, VICTIM).await, 2);
    let quarantine_others = fixture::quarantine_mentions(&lake, "bad-3").await;
    assert_eq!(quarantine_others, 1);
    // The independent scanner sees the id before: in data and in the log's statistics.
    let holders = fixture::objects_containing(&lake, VICTIM).await;
    assert!(
        holders.iter().any(|p| p.contains("_delta_log/")),
        "{holders:?}"
    );
    assert!(
        holders
            .iter()
            .any(|p| p.ends_with(".parquet") && !p.contains("_delta_log"))
    );

    let (outcome, metrics) = Erase::new(lake.clone(), VICTIM, now("2026-11-20T00:00:00Z"))
        .with_reason(Some("user_request".into()))
        .execute()
        .await
        .unwrap();
    assert!(
        outcome.passed(),
        "{:?}",
        outcome.verify.as_ref().map(|v| v.failures())
    );
    assert_eq!(metrics.rows_removed(), victim_rows + 2);
    assert_eq!(outcome.rows_removed["quarantine"], 2);

    let left = fixture::objects_containing(&lake, VICTIM).await;
    assert!(left.is_empty(), "the id survives in {left:?}");
    let after = fixture::rows_by_user(&lake).await;
    let mut expected = before.clone();
    expected.retain(|(_, u), _| u != VICTIM);
    assert_eq!(after, expected);
    assert_eq!(fixture::quarantine_mentions(&lake, "bad-3").await, 1);
    assert_eq!(fixture::quarantine_mentions(&lake, "not json").await, 1);

    // The tombstone holds the keyed hash, and ingest would drop the user.
    let erased = erasure::load_erased(&lake).await.unwrap();
    assert!(erased.covers(Some("app-1"), VICTIM));
    assert!(!erased.covers(Some("app-1"), "user-0008"));

    // Verify passes by plaintext and by hash; the evidence chain holds the
    // erase record without the id.
    let report = Verify::new(lake.clone(), now("2026-11-20T00:00:00Z"))
        .with_user(VICTIM)
        .execute()
        .await
        .unwrap();
    assert!(report.passed(), "{:?}", report.failures());
    let names: Vec<_> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["erased_user_bytes", "erased_users_hashed", "evidence_chain"]
    );
    let (records, _) = evidence::read(&lake).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records[0].json.contains("\"kind\":\"erase\""));
    assert!(records[0].json.contains(&outcome.user_hash));
    assert!(!records[0].json.contains(VICTIM));
    let erase_rec: evidence::EvidenceRecord = serde_json::from_str(&records[0].json).unwrap();
    assert!(
        erase_rec
            .objects_removed
            .iter()
            .any(|o| o.why == "rewritten")
    );
    assert!(erase_rec.objects_removed.iter().any(|o| o.why == "log"));
    assert!(
        erase_rec
            .objects_removed
            .iter()
            .all(|o| o.sha256.len() == 64)
    );

    // A rerun (as after a crash) finds nothing more, reuses the tombstone
    // and still passes.
    let (again, m2) = Erase::new(lake.clone(), VICTIM, now("2026-11-20T00:00:00Z"))
        .execute()
        .await
        .unwrap();
    assert!(again.passed());
    assert_eq!(m2.rows_removed(), 0);
    assert_eq!(again.erasure_id, outcome.erasure_id);
    assert_eq!(fixture::rows_by_user(&lake).await, expected);
    // Erasing again as of a later time records a tombstone that reaches
    // further (events up to then are erased data, not new accesses).
    let (later, _) = Erase::new(lake.clone(), VICTIM, now("2026-11-21T00:00:00Z"))
        .execute()
        .await
        .unwrap();
    assert!(later.passed());
    assert_ne!(later.erasure_id, outcome.erasure_id);
    let erased = auditlake_schemas::erasure::load_erased(&lake)
        .await
        .unwrap();
    let hash = erased.key().unwrap().hash(VICTIM);
    assert_eq!(
        erased.erased_at(None, &hash),
        Some(now("2026-11-21T00:00:00Z").timestamp_micros())
    );
}

#[tokio::test]
async fn erase_from_one_app_keeps_the_users_other_apps() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let (outcome, _) = Erase::new(lake.clone(), VICTIM, now("2026-11-20T00:00:00Z"))
        .with_app(Some("app-1".into()))
        .execute()
        .await
        .unwrap();
    assert!(
        outcome.passed(),
        "{:?}",
        outcome.verify.map(|v| v.failures())
    );
    let checks: Vec<_> = outcome
        .verify
        .as_ref()
        .unwrap()
        .checks
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert!(
        checks.contains(&"erased_user_rows".to_string()),
        "{checks:?}"
    );
    // Still there for other apps.
    let after = fixture::rows_by_user(&lake).await;
    assert!(after.contains_key(&("api_access".into(), VICTIM.into())));
    let erased = erasure::load_erased(&lake).await.unwrap();
    assert!(erased.covers(Some("app-1"), VICTIM));
    assert!(!erased.covers(Some("app-2"), VICTIM));

    // Named by its pseudonym (any case of hex), the user erased from app-1
    // only must be erased from app-1 again, never from every app at once.
    let pseudonym = erasure::pseudonym(&erased.key().unwrap().hash(VICTIM));
    let typed = format!("erased:{}", pseudonym["erased:".len()..].to_uppercase());
    let later = now("2026-11-21T00:00:00Z");
    let err = Erase::new(lake.clone(), typed.clone(), later)
        .execute()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("erased from app-1 only"), "{err}");
    let (outcome, _) = Erase::new(lake.clone(), typed, later)
        .with_app(Some("app-1".into()))
        .execute()
        .await
        .unwrap();
    assert!(outcome.passed());
    assert!(
        fixture::rows_by_user(&lake)
            .await
            .contains_key(&("api_access".into(), VICTIM.into()))
    );
    // Not a pseudonym: refused, no tombstone of a junk id.
    let err = Erase::new(lake.clone(), "erased:abc", later)
        .execute()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("64 hex digits"), "{err}");
}

#[tokio::test]
async fn a_legal_hold_keeps_its_rows_and_the_erasure_stays_pending() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let before = fixture::rows_by_user(&lake).await;
    let policy = auditlake_retention::Policy::parse(
        &format!("[[holds]]\nreason = \"litigation\"\nuser = \"{VICTIM}\"\napp = \"app-2\"\n"),
        "p.toml",
    )
    .unwrap();
    let t = now("2026-11-20T00:00:00Z");
    let (outcome, _) = Erase::new(lake.clone(), VICTIM, t)
        .with_policy(Some(policy.clone()))
        .execute()
        .await
        .unwrap();
    assert!(
        outcome.passed(),
        "{:?}",
        outcome.verify.as_ref().map(|v| v.failures())
    );
    assert!(outcome.pending());
    let held: u64 = outcome.held.iter().map(|h| h.rows).sum();
    assert!(held > 0);
    assert!(
        outcome
            .held
            .iter()
            .all(|h| h.hold_line == 1 && h.hold_reason == "litigation")
    );
    // Only the held rows of the user are left; the others' rows are intact.
    let after = fixture::rows_by_user(&lake).await;
    let left: u64 = after
        .iter()
        .filter(|((_, u), _)| u == VICTIM)
        .map(|(_, n)| n)
        .sum();
    assert_eq!(left, held);
    for (k, n) in before.iter().filter(|((_, u), _)| u != VICTIM) {
        assert_eq!(after.get(k), Some(n), "{k:?}");
    }
    // Verify with the holds passes and lists what they keep; without, it fails.
    let v = Verify::new(lake.clone(), t)
        .with_user(VICTIM)
        .with_policy(policy.clone())
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(v.passed(), "{:?}", v.failures());
    assert!(!v.held.is_empty());
    let v = Verify::new(lake.clone(), t)
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(!v.passed());
    // The hold is lifted: a sweep finishes the erasure.
    let lifted = auditlake_retention::Policy::parse("", "p.toml").unwrap();
    let sweep = auditlake_retention::Sweep::new(lake.clone(), lifted, t)
        .execute()
        .await
        .unwrap();
    assert!(sweep.passed(), "{:?}", sweep.verify.map(|v| v.failures()));
    assert_eq!(sweep.rows_removed(), held);
    let v = Verify::new(lake.clone(), t)
        .with_user(VICTIM)
        .with_depth(auditlake_retention::scan::Depth::Deep)
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(v.passed(), "{:?}", v.failures());
    assert!(fixture::objects_containing(&lake, VICTIM).await.is_empty());
}

#[tokio::test]
async fn kafka_offsets_in_the_log_survive_the_log_cleanup() {
    use auditlake_schemas::lake::{TxnUpdate, WriteOptions};
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    // An ingest commit carrying a Kafka offset as a Delta app transaction.
    let t = lake.require_table("api_access").await.unwrap();
    let empty = arrow::array::RecordBatch::new_empty(auditlake_schemas::tables::api_access());
    lake.append(
        "api_access",
        vec![empty],
        vec![TxnUpdate {
            app_id: "auditlake-ingest/api-access/0".into(),
            from: lake
                .txn_version(&t, "auditlake-ingest/api-access/0")
                .await
                .unwrap(),
            to: 4242,
        }],
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let (outcome, _) = Erase::new(lake.clone(), VICTIM, now("2026-11-20T00:00:00Z"))
        .execute()
        .await
        .unwrap();
    assert!(outcome.passed());
    let store = lake.object_store().unwrap();
    let log: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(
        object_store::ObjectStore::list(store.as_ref(), Some(&"api_access/_delta_log/".into())),
    )
    .await
    .unwrap();
    assert!(log.len() <= 3, "old log files remain: {log:?}");
    let t = lake.require_table("api_access").await.unwrap();
    assert_eq!(
        lake.txn_version(&t, "auditlake-ingest/api-access/0")
            .await
            .unwrap(),
        Some(4242)
    );
}
