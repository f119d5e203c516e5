//! `Sweep`: whole expired partitions go, held rows stay, `--dry-run` changes
//! nothing, tombstones are applied to rows that came back.

use auditlake_retention::{Policy, Sweep, Verify};
use auditlake_schemas::Lake;

use crate::fixture::{self, now};

const POLICY: &str = r#"
[tables.api_access]
keep = "10d"
[tables.grants]
keep = "10d"
[tables.quarantine]
keep = "1d"

[[holds]]
reason = "regulator inquiry 2026-88"
app = "app-2"
"#;

#[tokio::test]
async fn sweep_deletes_expired_partitions_except_held_rows_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let policy = Policy::parse(POLICY, "p.toml").unwrap();
    // Keep 10 days at 2026-11-16T12:00Z: days before 2026-11-06 are past.
    let t = now("2026-11-16T12:00:00Z");

    let q = |sql: String| {
        let lake = lake.clone();
        async move {
            let ctx = auditlake_query::session(&lake).await.unwrap();
            let b = auditlake_query::run_sql(&ctx, &sql).await.unwrap();
            let c =
                arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Int64).unwrap();
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(&c).value(0) as u64
        }
    };
    let old = "date < DATE '2026-11-06'";
    let count = |table: &str, cond: &str| q(format!("SELECT count(*) FROM {table} WHERE {cond}"));
    let expired = count("api_access", &format!("{old} AND app_id <> 'app-2'")).await;
    let held = count("api_access", &format!("{old} AND app_id = 'app-2'")).await;
    let recent = count("api_access", "date >= DATE '2026-11-06'").await;
    let expired_grants = count("grants", &format!("{old} AND app_id <> 'app-2'")).await;
    assert!(expired > 0 && held > 0 && recent > 0 && expired_grants > 0);

    let before = fixture::listing(&lake).await;
    let dry = Sweep::new(lake.clone(), policy.clone(), t)
        .with_dry_run(true)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        fixture::listing(&lake).await,
        before,
        "a dry run changes nothing"
    );
    assert_eq!(dry.tables["api_access"].rewrite.rows_removed, expired);
    assert_eq!(dry.tables["grants"].rewrite.rows_removed, expired_grants);
    assert_eq!(dry.tables["api_access"].rewrite.partitions.len(), 5);
    assert!(dry.evidence_seq.is_none());

    let report = Sweep::new(lake.clone(), policy.clone(), t)
        .execute()
        .await
        .unwrap();
    assert!(
        report.passed(),
        "{:?}",
        report.verify.as_ref().map(|v| v.failures())
    );
    assert_eq!(report.rows_removed(), dry.rows_removed());

    assert_eq!(
        count("api_access", &format!("{old} AND app_id <> 'app-2'")).await,
        0
    );
    assert_eq!(
        count("api_access", &format!("{old} AND app_id = 'app-2'")).await,
        held
    );
    assert_eq!(
        count("api_access", "date >= DATE '2026-11-06'").await,
        recent
    );
    assert_eq!(count("apps", "true").await, 4, "apps has no keep time");

    // The evidence names the hold and the policy.
    let (records, _) = auditlake_retention::evidence::read(&lake).await.unwrap();
    let rec: auditlake_retention::EvidenceRecord =
        serde_json::from_str(&records.last().unwrap().json).unwrap();
    assert_eq!(rec.kind, "sweep");
    assert_eq!(rec.policy_sha256.as_deref(), Some(policy.sha256.as_str()));
    assert!(
        rec.predicates
            .iter()
            .any(|p| p.contains("regulator inquiry"))
    );
    assert_eq!(rec.rows_removed["api_access"], expired);

    // Verify with the policy passes now; a sweep again removes nothing.
    let v = Verify::new(lake.clone(), t)
        .with_policy(policy.clone())
        .execute()
        .await
        .unwrap();
    assert!(v.passed(), "{:?}", v.failures());
    let again = Sweep::new(lake.clone(), policy.clone(), t)
        .execute()
        .await
        .unwrap();
    assert_eq!(again.rows_removed(), 0);

    // Without the hold, verify at the same time reports the held rows.
    let no_hold = Policy::parse(POLICY.split("[[holds]]").next().unwrap(), "p.toml").unwrap();
    let v = Verify::new(lake.clone(), t)
        .with_policy(no_hold)
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(!v.passed());
    assert!(v.failures().iter().all(|f| f.starts_with("retention: api_access/") || f.starts_with("retention: grants/")), "{:?}", v.failures());
}

#[tokio::test]
async fn clustering_by_user_makes_an_erasure_rewrite_few_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let before = fixture::rows_by_user(&lake).await;
    let policy = Policy::parse(
        "[clustering]\ntables = [\"api_access\"]\ntarget_file_size = \"3KiB\"\nmin_age = \"1d\"\n",
        "p.toml",
    )
    .unwrap();
    // Every day of the fixture ended more than a day before this.
    let t = now("2026-11-20T00:00:00Z");
    let dry = Sweep::new(lake.clone(), policy.clone(), t)
        .with_dry_run(true)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        dry.tables["api_access"]
            .cluster
            .as_ref()
            .unwrap()
            .partitions
            .len(),
        10
    );
    let report = Sweep::new(lake.clone(), policy.clone(), t)
        .execute()
        .await
        .unwrap();
    assert!(report.passed(), "{:?}", report.verify.map(|v| v.failures()));
    let c = report.tables["api_access"].cluster.clone().unwrap();
    assert_eq!(c.partitions.len(), 10);
    // Each partition is cut into several files (how many depends on the
    // writer's size estimate: 2 per day since event_id has no dictionary).
    assert!(c.files_added >= 2 * c.partitions.len(), "{c:?}");
    assert_eq!(
        fixture::rows_by_user(&lake).await,
        before,
        "clustering changes no row"
    );
    // Clustered partitions are left alone next time.
    let again = Sweep::new(lake.clone(), policy, t).execute().await.unwrap();
    assert!(
        again.tables["api_access"]
            .cluster
            .as_ref()
            .unwrap()
            .partitions
            .is_empty()
    );

    let t_files =
        auditlake_schemas::lake::table_size(&lake.require_table("api_access").await.unwrap()).0;
    let (outcome, m) = auditlake_retention::Erase::new(lake.clone(), fixture::VICTIM, t)
        .execute()
        .await
        .unwrap();
    assert!(outcome.passed());
    let api = &m.rewrites["api_access"];
    assert!(
        api.retired.len() * 3 <= t_files,
        "{} of {t_files} files rewritten",
        api.retired.len()
    );
    // Rewritten files stay marked clustered: the next sweep leaves them.
    let policy = Policy::parse(
        "[clustering]\ntables = [\"api_access\"]\ntarget_file_size = \"3KiB\"\n",
        "p.toml",
    )
    .unwrap();
    let after = Sweep::new(lake.clone(), policy, t).execute().await.unwrap();
    assert!(
        after.tables["api_access"]
            .cluster
            .as_ref()
            .unwrap()
            .partitions
            .is_empty()
    );
    // Statistics rule out every file whose user range misses the victim.
    assert!(
        api.files_read * 2 <= t_files,
        "{} of {t_files} files read",
        api.files_read
    );
}

/// A table without a keep time keeps its rows, but the files a commit retired
/// (detect replacing `findings` at every run) are purged like any table's.
#[tokio::test]
async fn retired_files_of_tables_kept_forever_are_purged() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let parquet = |prefix: &'static str| {
        let lake = lake.clone();
        async move {
            fixture::listing(&lake)
                .await
                .into_iter()
                .filter(|(p, _)| p.starts_with(prefix) && p.ends_with(".parquet"))
                .count()
        }
    };
    let live = parquet("findings/").await;
    for _ in 0..2 {
        lake.overwrite(
            "findings",
            vec![fixture::findings()],
            &auditlake_schemas::lake::WriteOptions::default(),
        )
        .await
        .unwrap();
    }
    assert!(parquet("findings/").await > live);
    let policy = Policy::parse(POLICY, "p.toml").unwrap();
    assert!(!policy.tables.contains_key("findings"));
    let report = Sweep::new(lake.clone(), policy, now("2026-11-16T12:00:00Z"))
        .execute()
        .await
        .unwrap();
    assert_eq!(report.tables["findings"].rewrite.rows_removed, 0);
    assert!(!report.tables["findings"].purge.deleted.is_empty());
    assert_eq!(parquet("findings/").await, live);
    let ctx = auditlake_query::session(&lake).await.unwrap();
    let b = auditlake_query::run_sql(&ctx, "SELECT count(*) FROM findings")
        .await
        .unwrap();
    assert_eq!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b[0].column(0)).value(0),
        30
    );
}

/// An ingest flush that read the floor before the sweep raised it, and
/// commits expired rows between the sweep's planning and its commit (an
/// append does not conflict with the sweep's commit): a further pass over
/// the files that appeared meanwhile removes them, so verify passes at once.
#[tokio::test]
async fn rows_committed_during_a_sweep_below_its_floor_are_removed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use auditlake_schemas::Topic;
    use auditlake_schemas::lake::WriteOptions;

    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    fixture::build(&lake, dir.path()).await;
    let policy = Policy::parse(POLICY, "p.toml").unwrap();
    let t = now("2026-11-16T12:00:00Z");
    let late = auditlake_schemas::testing::events(
        Topic::ApiAccess,
        (0..5).map(|i| {
            format!(
                r#"{{"event_id":"late-{i}","event_time":"2026-11-02T10:00:00Z","app_id":"app-1","developer_id":"dev-1","user_id":"user-late","api":"order.list","required_scope":"order.read","token_scopes":["order.read"],"data_categories":["order"],"record_count":1,"status":200,"client_ip":"10.0.0.9","client_region":"CN","token_id":"tok-late","latency_ms":3,"response_bytes":10}}"#
            )
        }),
    );
    let raced = Arc::new(AtomicBool::new(false));
    let hook = {
        let (lake, raced) = (lake.clone(), raced.clone());
        Arc::new(move |table: &str| {
            let (lake, raced, late) = (lake.clone(), raced.clone(), late.clone());
            let ours = table == "api_access" && !raced.swap(true, Ordering::SeqCst);
            Box::pin(async move {
                if ours {
                    lake.append(
                        "api_access",
                        vec![late],
                        Vec::new(),
                        &WriteOptions::default(),
                    )
                    .await
                    .unwrap();
                }
            }) as futures::future::BoxFuture<'static, ()>
        })
    };
    let report = Sweep::new(lake.clone(), policy.clone(), t)
        .with_before_commit(hook)
        .execute()
        .await
        .unwrap();
    assert!(raced.load(Ordering::SeqCst), "the hook ran");

    let ctx = auditlake_query::session(&lake).await.unwrap();
    let b = auditlake_query::run_sql(
        &ctx,
        "SELECT count(*) FROM api_access WHERE user_id = 'user-late' \
         OR (date < DATE '2026-11-06' AND app_id <> 'app-2')",
    )
    .await
    .unwrap();
    let left =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b[0].column(0)).value(0);
    assert_eq!(left, 0, "expired rows left after the sweep");
    let removed = &report.tables["api_access"].rewrite;
    assert!(
        removed.retired.iter().any(|f| f.rows_removed == 5),
        "the raced file is in the report: {:?}",
        removed.retired
    );
    let v = Verify::new(lake.clone(), t)
        .with_policy(policy)
        .with_evidence(false)
        .execute()
        .await
        .unwrap();
    assert!(v.passed(), "{:?}", v.failures());
}
