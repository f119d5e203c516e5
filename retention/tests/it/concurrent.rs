//! Retention beside a running ingest: appends keep landing while an erase and
//! a sweep rewrite the same partitions; no appended row is lost, and the
//! erased user's old rows are gone.

use auditlake_retention::{Erase, Policy, Sweep, Verify};
use auditlake_schemas::lake::WriteOptions;
use auditlake_schemas::{Lake, Topic};

use crate::fixture::{self, VICTIM, now};

fn batch(round: usize) -> arrow::array::RecordBatch {
    // Other users only, into the partitions being rewritten.
    auditlake_schemas::testing::events(
        Topic::ApiAccess,
        (0..50).map(|i| {
            format!(
                r#"{{"event_id":"live-{round}-{i}","event_time":"2026-11-{d:02}T10:00:00Z","app_id":"app-{a}","developer_id":"dev-{a}","user_id":"user-{u:04}","api":"order.list","status":200}}"#,
                d = 1 + i % 10,
                a = i % 4,
                u = 100 + i,
            )
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_and_sweep_beside_appends_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let before = fixture::rows_by_user(&lake).await;
    let rounds = 30;
    let appender = {
        let lake = lake.clone();
        tokio::spawn(async move {
            // Like ingest: a retryable error (a conflict, a log file that
            // retention just cleaned up) is retried.
            for r in 0..rounds {
                loop {
                    match lake
                        .append(
                            "api_access",
                            vec![batch(r)],
                            Vec::new(),
                            &WriteOptions::default(),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if e.is_retryable() => {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await
                        }
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
            }
        })
    };
    let t = now("2026-11-20T00:00:00Z");
    let (outcome, _) = Erase::new(lake.clone(), VICTIM, t).execute().await.unwrap();
    let policy = Policy::parse(
        "[clustering]\ntables = [\"api_access\"]\ntarget_file_size = \"3KiB\"\n",
        "p.toml",
    )
    .unwrap();
    let sweep = Sweep::new(lake.clone(), policy, t).execute().await.unwrap();
    appender.await.unwrap();
    assert!(
        outcome.passed(),
        "{:?}",
        outcome.verify.map(|v| v.failures())
    );
    assert!(sweep.passed(), "{:?}", sweep.verify.map(|v| v.failures()));

    let after = fixture::rows_by_user(&lake).await;
    for ((table, user), n) in &before {
        if user != VICTIM {
            assert_eq!(
                after.get(&(table.clone(), user.clone())),
                Some(n),
                "{table} {user}"
            );
        }
    }
    let live: u64 = after
        .iter()
        .filter(|((t, u), _)| t == "api_access" && u.as_str() >= "user-0100")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(live, (rounds * 50) as u64, "appended rows lost");
    assert!(!after.contains_key(&("api_access".to_string(), VICTIM.to_string())));
    let v = Verify::new(lake.clone(), t)
        .with_user(VICTIM)
        .execute()
        .await
        .unwrap();
    assert!(v.passed(), "{:?}", v.failures());
}
