//! The `Detect` builder beyond the rules themselves: rule files from a
//! directory (override, add, errors with path and line), partial runs that
//! keep other findings, a dry run, and findings joinable back to api_access.

use auditlake_query::{Detect, Error, RuleSet};
use auditlake_schemas::{Decoder, Lake, RawMessage, Source, Topic, WriteOptions};
use chrono::{DateTime, Utc};

fn now() -> DateTime<Utc> {
    "2026-11-10T00:00:00Z".parse().unwrap()
}

async fn lake_with(lines: &[(Topic, &str)]) -> Lake {
    let lake = Lake::open("memory://").unwrap();
    for topic in Topic::ALL {
        let mut d = Decoder::new(topic);
        for (i, (t, line)) in lines.iter().enumerate() {
            if *t == topic {
                assert!(d.push(RawMessage {
                    payload: line.as_bytes(),
                    source: Source::File {
                        path: "test",
                        line: i as u64 + 1,
                    },
                }));
            }
        }
        let out = d.finish(0).unwrap();
        if out.events.num_rows() > 0 {
            lake.append(
                topic.table(),
                vec![out.events],
                vec![],
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        }
    }
    lake
}

const ACCESS_NO_GRANT: &str = r#"{"event_id":"e1","event_time":"2026-11-01T00:00:00Z","app_id":"a1","developer_id":"d1","user_id":"u1","api":"x","required_scope":"s1","status":200}"#;
const ACCESS_US: &str = r#"{"event_id":"e2","event_time":"2026-11-02T00:00:00Z","app_id":"a1","developer_id":"d1","user_id":"u1","api":"x","data_categories":["order"],"client_region":"US","status":200}"#;

async fn rows(lake: &Lake, sql: &str) -> Vec<String> {
    let ctx = auditlake_query::session(lake).await.unwrap();
    let batches = auditlake_query::run_sql(&ctx, sql).await.unwrap();
    let mut out = Vec::new();
    auditlake_query::detect::write_jsonl(
        &arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap(),
        &mut out,
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn a_bad_rule_file_fails_with_its_path_and_line() {
    let lake = lake_with(&[(Topic::ApiAccess, ACCESS_NO_GRANT)]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my_rule.sql");
    std::fs::write(
        &path,
        "-- id: my_rule\n-- clause: 6.5.1\n-- severity: low\nSELECT app_id,\n       event_ids\nFROM data_access\nWHERE nonexistent_column = 1\n",
    )
    .unwrap();
    let err = Detect::new(lake.clone())
        .with_now(now())
        .with_rules_dir(dir.path())
        .unwrap()
        .execute()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Rule { .. }), "{msg}");
    assert!(msg.starts_with(&format!("{}:", path.display())), "{msg}");
    // The first unknown column is named with its line.
    assert!(
        msg.contains("event_ids") || msg.contains("nonexistent_column"),
        "{msg}"
    );
    let line: usize = msg[path.display().to_string().len() + 1..]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(line == 5 || line == 7, "{msg}");
    // Nothing was written.
    assert!(!lake.table_exists("findings").await.unwrap());

    // A header error names its line too, at load time.
    std::fs::write(
        &path,
        "-- id: my_rule\n-- clause: 6.5.1\n-- severity: urgent\nSELECT 1\n",
    )
    .unwrap();
    let msg = RuleSet::builtin()
        .with_dir(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with(&format!("{}:3: severity", path.display())),
        "{msg}"
    );

    // A column that is not a finding column.
    std::fs::write(
        &path,
        "-- id: my_rule\n-- clause: 6.5.1\n-- severity: low\nSELECT app_id, api FROM api_access\n",
    )
    .unwrap();
    let msg = Detect::new(lake)
        .with_now(now())
        .with_rules_dir(dir.path())
        .unwrap()
        .execute()
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("returns column \"api\""), "{msg}");
}

#[tokio::test]
async fn rules_dir_overrides_and_adds() {
    let lake = lake_with(&[(Topic::ApiAccess, ACCESS_NO_GRANT)]).await;
    let dir = tempfile::tempdir().unwrap();
    // Replaces the built-in: a different severity and no findings.
    std::fs::write(
        dir.path().join("scope_not_granted.sql"),
        "-- id: scope_not_granted\n-- clause: 6.5.1\n-- severity: low\nSELECT app_id FROM access WHERE false\n",
    )
    .unwrap();
    // A new rule: every call by app a1, severity per row.
    std::fs::write(
        dir.path().join("calls_by_a1.sql"),
        "-- id: calls_by_a1\n-- clause: internal\n-- severity: low\nSELECT app_id, user_id, event_time, [event_id] AS event_ids, 'high' AS severity\nFROM access WHERE app_id = 'a1'\n",
    )
    .unwrap();
    let (found, metrics) = Detect::new(lake)
        .with_now(now())
        .with_rules_dir(dir.path())
        .unwrap()
        .with_rules_only(["scope_not_granted", "calls_by_a1"])
        .execute()
        .await
        .unwrap();
    let mut out = Vec::new();
    found.write_jsonl(&mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        out,
        "{\"rule_id\":\"calls_by_a1\",\"clause\":\"internal\",\"severity\":\"high\",\"app_id\":\"a1\",\"developer_id\":null,\"user_id\":\"u1\",\"scope\":null,\"reason\":null,\"event_time\":\"2026-11-01T00:00:00Z\",\"window_start\":null,\"window_end\":null,\"created_at\":null,\"due_at\":null,\"event_ids\":[\"e1\"]}\n"
    );
    let sources: Vec<&str> = metrics.rules.iter().map(|r| r.source.as_str()).collect();
    assert!(
        sources
            .iter()
            .all(|s| s.starts_with(dir.path().to_str().unwrap())),
        "{sources:?}"
    );
}

#[tokio::test]
async fn partial_runs_keep_the_other_findings() {
    let lake = lake_with(&[
        (Topic::ApiAccess, ACCESS_NO_GRANT),
        (Topic::ApiAccess, ACCESS_US),
    ])
    .await;
    Detect::new(lake.clone())
        .with_now(now())
        .execute()
        .await
        .unwrap();
    let all = rows(
        &lake,
        "SELECT rule_id, event_ids FROM findings ORDER BY rule_id, event_ids",
    )
    .await;
    assert!(all.iter().any(|r| r.contains("cross_border")), "{all:?}");
    assert!(
        all.iter().any(|r| r.contains("scope_not_granted")),
        "{all:?}"
    );

    // Only cross_border, and with US allowed: its finding goes, the rest
    // stays; `obligations` (what deletion_overdue reports) is left as it was.
    let obligations_before = lake.require_table("obligations").await.unwrap().version();
    let (found, metrics) = Detect::new(lake.clone())
        .with_now(now())
        .with_rules_only(["cross_border"])
        .with_allowed_regions(["CN", "US"])
        .execute()
        .await
        .unwrap();
    assert_eq!(metrics.findings, 0);
    assert_eq!(metrics.findings_kept, all.len() - 1);
    assert_eq!(found.len(), 0, "prints only the run's own findings");
    assert_eq!(metrics.obligations_version, None);
    assert_eq!(
        lake.require_table("obligations").await.unwrap().version(),
        obligations_before
    );
    let now_rows = rows(
        &lake,
        "SELECT rule_id, event_ids FROM findings ORDER BY rule_id, event_ids",
    )
    .await;
    assert!(
        !now_rows.iter().any(|r| r.contains("cross_border")),
        "{now_rows:?}"
    );
    assert_eq!(now_rows.len(), all.len() - 1);

    // --since: findings before it are kept as they were, later ones replaced.
    let (_, metrics) = Detect::new(lake.clone())
        .with_now(now())
        .with_since(Some("2026-11-01T12:00:00Z".parse().unwrap()))
        .execute()
        .await
        .unwrap();
    assert!(metrics.findings_kept > 0);
    let after = rows(
        &lake,
        "SELECT rule_id, event_ids FROM findings ORDER BY rule_id, event_ids",
    )
    .await;
    assert_eq!(after, all, "back to the full set");

    // A dry run writes nothing.
    let before = lake.require_table("findings").await.unwrap().version();
    Detect::new(lake.clone())
        .with_now(now())
        .with_write(false)
        .execute()
        .await
        .unwrap();
    assert_eq!(
        lake.require_table("findings").await.unwrap().version(),
        before
    );

    // Findings join back to the events that prove them.
    let joined = rows(
        &lake,
        "SELECT f.rule_id, a.event_id, a.client_region FROM findings f \
         JOIN api_access a ON array_has(f.event_ids, a.event_id) \
         WHERE f.rule_id = 'cross_border'",
    )
    .await;
    assert_eq!(
        joined,
        ["{\"rule_id\":\"cross_border\",\"event_id\":\"e2\",\"client_region\":\"US\"}"]
    );
}

#[tokio::test]
async fn no_now_no_run() {
    let lake = Lake::open("memory://").unwrap();
    let err = Detect::new(lake).execute().await.unwrap_err().to_string();
    assert!(err.contains("with_now"), "{err}");
}

#[tokio::test]
async fn memory_budget_changes_time_not_findings() {
    let lake = lake_with(&[
        (Topic::ApiAccess, ACCESS_NO_GRANT),
        (Topic::ApiAccess, ACCESS_US),
    ])
    .await;
    let mut outputs = Vec::new();
    for budget in [0, 1, auditlake_query::detect::DEFAULT_MATERIALIZE_BUDGET] {
        let (found, _) = Detect::new(lake.clone())
            .with_now(now())
            .with_write(false)
            .with_materialize_budget(budget)
            .execute()
            .await
            .unwrap();
        let mut out = Vec::new();
        found.write_jsonl(&mut out).unwrap();
        outputs.push(out);
    }
    assert!(!outputs[0].is_empty());
    assert_eq!(outputs[0], outputs[1]);
    assert_eq!(outputs[0], outputs[2]);
}
