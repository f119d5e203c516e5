//! `detect` against an independent reference evaluator (`tests/reference/`)
//! on `gen` output for three seeds: the same findings, field by field, and the
//! same obligations and states; every planted violation found; the same lake
//! and `--now` give byte-identical output.

mod reference;

use std::collections::BTreeSet;
use std::path::Path;

use auditlake::r#gen::{GenArgs, Planted, Topic, run_to_files};
use auditlake_ingest::Backfill;
use auditlake_query::Detect;
use auditlake_schemas::Lake;
use chrono::{DateTime, Utc};
use reference::{Finding, Obligation, Settings};
use serde_json::Value;

const EVENTS: u64 = 15_000;

fn time(v: &Value) -> Option<i64> {
    v.as_str().map(|s| {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .timestamp_micros()
    })
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// Parses `detect`'s JSON lines, checking each has exactly the SPEC fields.
fn parse_findings(jsonl: &[u8]) -> Vec<Finding> {
    let fields = auditlake_query::detect::SPEC_FIELDS;
    let mut out = Vec::new();
    for line in jsonl.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v: serde_json::Map<String, Value> = serde_json::from_slice(line).unwrap();
        let keys: Vec<&str> = v.keys().map(String::as_str).collect();
        let mut want: Vec<&str> = fields.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want, "fields of {}", String::from_utf8_lossy(line));
        out.push(Finding {
            rule_id: text(&v["rule_id"]).unwrap(),
            app_id: text(&v["app_id"]).unwrap(),
            user_id: text(&v["user_id"]),
            event_time: time(&v["event_time"]),
            window_start: time(&v["window_start"]),
            created_at: time(&v["created_at"]),
            scope: text(&v["scope"]),
            reason: text(&v["reason"]),
            event_ids: v["event_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect(),
            window_end: time(&v["window_end"]),
            due_at: time(&v["due_at"]),
            developer_id: text(&v["developer_id"]),
            clause: text(&v["clause"]).unwrap(),
            severity: text(&v["severity"]).unwrap(),
        });
    }
    out
}

fn obligations_of(b: &arrow::array::RecordBatch) -> Vec<Obligation> {
    let mut json = Vec::new();
    auditlake_query::detect::write_jsonl(b, &mut json).unwrap();
    let mut out: Vec<Obligation> = json
        .split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_slice(l).unwrap();
            Obligation {
                app_id: text(&v["app_id"]).unwrap(),
                user_id: text(&v["user_id"]),
                reason: text(&v["reason"]).unwrap(),
                created_at: time(&v["created_at"]).unwrap(),
                due_at: time(&v["due_at"]).unwrap(),
                fulfilled_at: time(&v["fulfilled_at"]),
                state: text(&v["state"]).unwrap(),
                source_event_id: text(&v["source_event_id"]).unwrap(),
            }
        })
        .collect();
    out.sort();
    out
}

/// Prints what only one side has, then fails.
fn assert_same<T: Ord + std::fmt::Debug + Clone>(what: &str, detect: &[T], reference: &[T]) {
    let a: BTreeSet<T> = detect.iter().cloned().collect();
    let b: BTreeSet<T> = reference.iter().cloned().collect();
    let only_detect: Vec<_> = a.difference(&b).take(5).collect();
    let only_ref: Vec<_> = b.difference(&a).take(5).collect();
    assert!(
        only_detect.is_empty() && only_ref.is_empty() && detect.len() == reference.len(),
        "{what}: detect {} vs reference {}\nonly in detect: {only_detect:#?}\nonly in reference: {only_ref:#?}",
        detect.len(),
        reference.len()
    );
}

async fn ingest(dir: &Path, lake: &Lake) {
    let mut backfill = Backfill::new(lake.clone());
    for t in Topic::ALL {
        let topic: auditlake_schemas::Topic = t.name().parse().unwrap();
        backfill = backfill.with_input(topic, dir.join(t.file_name()));
    }
    backfill.execute().await.unwrap();
}

async fn check_seed(seed: u64, twice: bool) {
    let gen_dir = tempfile::tempdir().unwrap();
    let lake_dir = tempfile::tempdir().unwrap();
    let report = run_to_files(&GenArgs {
        seed,
        events: EVENTS,
        out: Some(gen_dir.path().to_path_buf()),
        ..GenArgs::default()
    })
    .unwrap();
    let lake = Lake::open(lake_dir.path().to_str().unwrap()).unwrap();
    ingest(gen_dir.path(), &lake).await;

    let now: DateTime<Utc> = DateTime::parse_from_rfc3339(&report.manifest.suggested_now)
        .unwrap()
        .with_timezone(&Utc);
    let (found, _) = Detect::new(lake.clone())
        .with_now(now)
        .execute()
        .await
        .unwrap();
    let mut jsonl = Vec::new();
    found.write_jsonl(&mut jsonl).unwrap();
    if twice {
        let (again, _) = Detect::new(lake.clone())
            .with_now(now)
            .execute()
            .await
            .unwrap();
        let mut second = Vec::new();
        again.write_jsonl(&mut second).unwrap();
        assert!(
            jsonl == second,
            "seed {seed}: a second run printed other bytes"
        );
    }
    let detected = parse_findings(&jsonl);
    let mut sorted = detected.clone();
    sorted.sort_by(|a, b| {
        (
            &a.rule_id,
            &a.app_id,
            &a.user_id,
            a.event_time,
            a.window_start,
            a.created_at,
            &a.scope,
        )
            .cmp(&(
                &b.rule_id,
                &b.app_id,
                &b.user_id,
                b.event_time,
                b.window_start,
                b.created_at,
                &b.scope,
            ))
    });
    assert_eq!(
        detected.iter().map(|f| &f.rule_id).collect::<Vec<_>>(),
        sorted.iter().map(|f| &f.rule_id).collect::<Vec<_>>(),
        "seed {seed}: output not sorted by rule"
    );

    let events = reference::load(&lake).await;
    let (ref_findings, ref_obligations) =
        reference::evaluate(&events, &Settings::new(now.timestamp_micros()));
    let mut detected_sorted = detected.clone();
    detected_sorted.sort();
    assert_same(
        &format!("seed {seed} findings"),
        &detected_sorted,
        &ref_findings,
    );
    let obligations = obligations_of(&found.obligations);
    assert_same(
        &format!("seed {seed} obligations"),
        &obligations,
        &ref_obligations,
    );

    // Every planted finding is found, and every planted obligation has its state.
    let planted: Planted =
        serde_json::from_slice(&std::fs::read(gen_dir.path().join("planted.json")).unwrap())
            .unwrap();
    let key = |rule: &str,
               app: &str,
               user: Option<&str>,
               ids: &[String],
               scope: Option<&str>,
               window: Option<i64>| match rule {
        "bulk_harvest" => format!("{rule}|{app}|{}", window.unwrap_or(-1)),
        "unused_scope" => format!("{rule}|{app}|{}", scope.unwrap_or("")),
        "deletion_overdue" => format!("{rule}|{app}|{}|{}", user.unwrap_or("*"), ids[0]),
        _ => format!("{rule}|{}", ids[0]),
    };
    let have: BTreeSet<String> = detected
        .iter()
        .map(|f| {
            key(
                &f.rule_id,
                &f.app_id,
                f.user_id.as_deref(),
                &f.event_ids,
                f.scope.as_deref(),
                f.window_start,
            )
        })
        .collect();
    let mut rules_planted = BTreeSet::new();
    for p in &planted.findings {
        let window = p
            .window_start
            .as_ref()
            .map(|w| time(&Value::from(w.as_str())).unwrap());
        let k = key(
            &p.rule_id,
            &p.app_id,
            p.user_id.as_deref(),
            &p.event_ids,
            p.scope.as_deref(),
            window,
        );
        assert!(
            have.contains(&k),
            "seed {seed}: planted finding not found: {k} ({})",
            p.note
        );
        rules_planted.insert(p.rule_id.clone());
    }
    assert_eq!(
        rules_planted.len(),
        11,
        "seed {seed}: gen plants every rule"
    );
    for p in &planted.obligations {
        let mine = obligations
            .iter()
            .find(|o| o.source_event_id == p.source_event_id && o.app_id == p.app_id)
            .unwrap_or_else(|| panic!("seed {seed}: planted obligation missing: {p:?}"));
        assert_eq!(mine.state, p.state, "seed {seed}: state of {p:?}");
        assert_eq!(
            Some(mine.due_at),
            time(&Value::from(p.due_at.as_str())),
            "{p:?}"
        );
    }
    assert_eq!(
        obligations.len(),
        planted.obligations.len(),
        "seed {seed}: obligations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_matches_reference_seed_1() {
    check_seed(1, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_matches_reference_seed_2() {
    check_seed(2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_matches_reference_seed_3() {
    check_seed(3, false).await;
}
