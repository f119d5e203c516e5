//! End-to-end: `gen` -> `ingest --input` (all four topics) -> `sql`: every
//! distinct event stored once, every malformed line quarantined with a reason,
//! and a rerun changes nothing.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_auditlake");

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("AUDITLAKE_LOG", "warn")
        .output()
        .expect("run auditlake");
    assert!(
        out.status.success(),
        "auditlake {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sql(lake: &Path, query: &str) -> Vec<serde_json::Value> {
    run(&[
        "sql",
        "--format",
        "json",
        "--lake",
        lake.to_str().unwrap(),
        query,
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

fn n(lake: &Path, query: &str) -> u64 {
    sql(lake, query)[0]["n"].as_u64().unwrap()
}

/// `auditlake gen` of `events` access events with `seed` into `data`; its manifest.
fn generate(data: &Path, seed: u64, events: u64) -> serde_json::Value {
    run(&[
        "gen",
        "--out",
        data.to_str().unwrap(),
        "--seed",
        &seed.to_string(),
        "--events",
        &events.to_string(),
    ]);
    serde_json::from_slice(&std::fs::read(data.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn gen_ingest_sql_counts_are_exact_and_reruns_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let lake = dir.path().join("lake");
    let manifest = generate(&data, 1, 20000);
    let inputs: Vec<String> = ["api-access", "grants", "apps", "deletions"]
        .iter()
        .map(|t| format!("{t}={}", data.join(format!("{t}.jsonl")).display()))
        .collect();
    let mut args = vec!["ingest", "--lake", lake.to_str().unwrap()];
    for i in &inputs {
        args.extend(["--input", i]);
    }
    let summary = run(&args);
    assert!(summary.contains("stored"), "{summary}");
    let mut malformed = 0;
    for (topic, table) in [
        ("api-access", "api_access"),
        ("grants", "grants"),
        ("apps", "apps"),
        ("deletions", "deletions"),
    ] {
        let t = &manifest["topics"][topic];
        let distinct = t["distinct_events"].as_u64().unwrap();
        assert_eq!(
            n(&lake, &format!("SELECT count(*) AS n FROM {table}")),
            distinct,
            "{topic}"
        );
        assert_eq!(
            n(
                &lake,
                &format!("SELECT count(DISTINCT event_id) AS n FROM {table}")
            ),
            distinct,
            "{topic}"
        );
        let bad = t["malformed"].as_u64().unwrap();
        assert_eq!(
            n(
                &lake,
                &format!("SELECT count(*) AS n FROM quarantine WHERE topic = '{topic}'")
            ),
            bad,
            "{topic}"
        );
        malformed += bad;
    }
    // Every quarantine row names a field or the parse error, and keeps its bytes and line.
    for row in sql(&lake, "SELECT reason, raw, file, line FROM quarantine") {
        let reason = row["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("field `")
                || reason.starts_with("missing field `")
                || reason.starts_with("invalid JSON")
                || reason == "not a JSON object",
            "unexpected reason {reason:?}"
        );
        assert!(row["line"].as_u64().unwrap() > 0);
        assert!(row["file"].as_str().unwrap().ends_with(".jsonl"));
        assert!(!row["raw"].is_null());
    }
    // The same backfill again changes no count.
    run(&args);
    assert_eq!(n(&lake, "SELECT count(*) AS n FROM quarantine"), malformed);
    let access = manifest["topics"]["api-access"]["distinct_events"]
        .as_u64()
        .unwrap();
    assert_eq!(n(&lake, "SELECT count(*) AS n FROM api_access"), access);
    // Hive-style date partitions, zstd Parquet.
    let parts: Vec<_> = std::fs::read_dir(lake.join("api_access"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("date="))
        .collect();
    assert!(parts.len() >= 6, "{parts:?}");
    let any_file = std::fs::read_dir(lake.join("api_access").join(&parts[0]))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    assert!(
        any_file.to_string_lossy().ends_with(".zstd.parquet"),
        "{any_file:?}"
    );
}

#[test]
fn bad_flags_and_missing_lakes_fail_with_a_clear_error() {
    let out = Command::new(BIN)
        .args([
            "ingest",
            "--lake",
            "/tmp/x",
            "--input",
            "nosuchtopic=a.jsonl",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown topic \"nosuchtopic\""));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["sql", "--lake", dir.path().to_str().unwrap(), "SELECT 1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no tables yet"));
    let out = Command::new(BIN)
        .args(["ingest", "--lake", dir.path().to_str().unwrap(), "--input"])
        .arg("grants=/nonexistent/g.jsonl")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/g.jsonl"));
    // ... and, into a lake that does not exist yet, leaves no empty lake.
    let fresh = dir.path().join("fresh");
    let out = Command::new(BIN)
        .args(["ingest", "--lake", fresh.to_str().unwrap(), "--input"])
        .arg("grants=/nonexistent/g.jsonl")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input grants=/nonexistent/g.jsonl"));
    assert!(!fresh.exists());
}

/// A tiny `--memory-limit`: flushes at every chunk and a dedupe index that
/// keeps about one date, so dates are evicted and read back from the lake;
/// the counts stay exact and a rerun still stores nothing. A `--flush-bytes`
/// over the limit's share is refused before any change.
#[test]
fn a_small_memory_limit_keeps_dedupe_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let lake = dir.path().join("lake");
    let manifest = generate(&data, 3, 20000);
    let distinct = manifest["topics"]["api-access"]["distinct_events"]
        .as_u64()
        .unwrap();
    let input = format!("api-access={}", data.join("api-access.jsonl").display());
    let args = [
        "ingest",
        "--lake",
        lake.to_str().unwrap(),
        "--memory-limit",
        "256KiB",
        "--json",
        "--input",
        &input,
    ];
    for round in 0..2 {
        let report: serde_json::Value = serde_json::from_str(&run(&args)).unwrap();
        let stored = report["inputs"][0]["stored"].as_u64().unwrap();
        assert_eq!(stored, if round == 0 { distinct } else { 0 }, "{report}");
        assert!(report["peak_rss_bytes"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(n(&lake, "SELECT count(*) AS n FROM api_access"), distinct);
        assert_eq!(
            n(
                &lake,
                "SELECT count(DISTINCT event_id) AS n FROM api_access"
            ),
            distinct
        );
    }

    let out = Command::new(BIN)
        .args([
            "ingest",
            "--lake",
            dir.path().join("other").to_str().unwrap(),
            "--memory-limit",
            "64MiB",
            "--flush-bytes",
            "32MiB",
            "--input",
            &input,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--flush-bytes 32MiB is more than --memory-limit 64MiB allows (5MiB"),
        "{err}"
    );
    assert!(!dir.path().join("other").exists());
}

/// Writers racing on one lake: three backfills of the same files at once
/// (an operator rerunning a job that is still running) store every event and
/// quarantine every bad line once. Each commit is made on the version its
/// dedupe saw; a writer that finds the table moved reads what the others
/// added, leaves those rows out and commits again.
#[test]
fn concurrent_backfills_store_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let lake = dir.path().join("lake");
    let manifest = generate(&data, 5, 20000);
    let mut args: Vec<String> = [
        "ingest",
        "--lake",
        lake.to_str().unwrap(),
        // Small flushes: many commits, so the writers interleave.
        "--memory-limit",
        "2MiB",
        "--json",
    ]
    .map(String::from)
    .to_vec();
    for t in ["api-access", "grants", "deletions"] {
        args.push("--input".into());
        args.push(format!("{t}={}", data.join(format!("{t}.jsonl")).display()));
    }
    let writers: Vec<_> = (0..3)
        .map(|_| {
            Command::new(BIN)
                .args(&args)
                .env("AUDITLAKE_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut stored = 0;
    let mut quarantined = 0;
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for input in report["inputs"].as_array().unwrap() {
            // Every line is accounted for, whoever stored it.
            let count = |k: &str| input[k].as_u64().unwrap();
            assert_eq!(
                count("stored")
                    + count("duplicates")
                    + count("quarantined")
                    + count("quarantine_duplicates"),
                count("lines"),
                "{input}"
            );
            if input["topic"] == "api-access" {
                stored += input["stored"].as_u64().unwrap();
            }
            quarantined += input["quarantined"].as_u64().unwrap();
        }
    }
    let distinct = manifest["topics"]["api-access"]["distinct_events"]
        .as_u64()
        .unwrap();
    assert_eq!(n(&lake, "SELECT count(*) AS n FROM api_access"), distinct);
    assert_eq!(
        n(
            &lake,
            "SELECT count(DISTINCT event_id) AS n FROM api_access"
        ),
        distinct
    );
    assert_eq!(stored, distinct, "the writers' stored counts add up");
    for t in ["grants", "deletions"] {
        assert_eq!(
            n(&lake, &format!("SELECT count(*) AS n FROM {t}")),
            n(
                &lake,
                &format!("SELECT count(DISTINCT event_id) AS n FROM {t}")
            ),
            "{t}"
        );
    }
    let q = n(&lake, "SELECT count(*) AS n FROM quarantine");
    assert!(q > 0);
    assert_eq!(
        q,
        n(
            &lake,
            "SELECT count(DISTINCT source_id) AS n FROM quarantine"
        )
    );
    assert_eq!(quarantined, q, "the writers' quarantined counts add up");
}

/// `auditlake retention VERB` on `lake` under `policy`, judged at `now`.
fn retention_at(verb: &str, lake: &Path, policy: &Path, now: &str) -> String {
    run(&[
        "retention",
        verb,
        "--lake",
        lake.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--now",
        now,
    ])
}

/// A backfill rerun after a sweep does not write back what the sweep
/// deleted: the sweep leaves a retention floor (the first day it kept) that
/// ingest honours, and verification still passes.
#[test]
fn a_rerun_after_a_sweep_does_not_bring_expired_days_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let lake = dir.path().join("lake");
    let manifest = generate(&data, 7, 20000);
    let distinct = manifest["topics"]["api-access"]["distinct_events"]
        .as_u64()
        .unwrap();
    let input = format!("api-access={}", data.join("api-access.jsonl").display());
    let ingest = [
        "ingest",
        "--lake",
        lake.to_str().unwrap(),
        "--json",
        "--input",
        &input,
    ];
    run(&ingest);
    let policy = dir.path().join("p.toml");
    std::fs::write(&policy, "[tables.api_access]\nkeep = \"5d\"\n").unwrap();
    let now = "2026-11-12T00:00:00Z";
    let retention = |verb: &str| retention_at(verb, &lake, &policy, now);
    retention("sweep");
    let kept = n(&lake, "SELECT count(*) AS n FROM api_access");
    assert!(kept > 0 && kept < distinct, "{kept} of {distinct}");
    assert_eq!(
        n(
            &lake,
            "SELECT count(*) AS n FROM api_access WHERE date < DATE '2026-11-07'"
        ),
        0
    );

    let report: serde_json::Value = serde_json::from_str(&run(&ingest)).unwrap();
    let stats = &report["inputs"][0];
    assert_eq!(stats["stored"].as_u64(), Some(0), "{report}");
    assert_eq!(stats["expired"].as_u64(), Some(distinct - kept), "{report}");
    assert_eq!(n(&lake, "SELECT count(*) AS n FROM api_access"), kept);
    retention("verify");

    // A longer keep does not lower the floor: the lake still keeps from the
    // day the first sweep kept, and the sweep says so.
    std::fs::write(&policy, "[tables.api_access]\nkeep = \"9d\"\n").unwrap();
    let out = retention("sweep");
    assert!(
        out.contains("api_access: deleted 0 rows") && out.contains("keeps from 2026-11-07"),
        "{out}"
    );
    assert_eq!(n(&lake, "SELECT count(*) AS n FROM api_access"), kept);
}

/// Rows older than the floor that a legal hold covers still land: an app
/// under a hold delivers its old events late, after a sweep.
#[test]
fn late_rows_under_a_legal_hold_pass_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let lake = dir.path().join("lake");
    generate(&data, 8, 20000);
    let lines = std::fs::read_to_string(data.join("api-access.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let held_app = first["app_id"].as_str().unwrap().to_string();
    let mark = format!("\"app_id\":\"{held_app}\"");
    let (late, rest): (Vec<&str>, Vec<&str>) = lines.lines().partition(|l| l.contains(&mark));
    let write = |name: &str, lines: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n")).unwrap();
        format!("api-access={}", path.display())
    };
    let (late_input, rest_input) = (write("late.jsonl", &late), write("rest.jsonl", &rest));
    run(&[
        "ingest",
        "--lake",
        lake.to_str().unwrap(),
        "--input",
        &rest_input,
    ]);
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[tables.api_access]\nkeep = \"5d\"\n\n[[holds]]\nreason = \"inquiry\"\napp = \"{held_app}\"\n"
        ),
    )
    .unwrap();
    let retention = |verb: &str| retention_at(verb, &lake, &policy, "2026-11-12T00:00:00Z");
    retention("sweep");
    let report: serde_json::Value = serde_json::from_str(&run(&[
        "ingest",
        "--lake",
        lake.to_str().unwrap(),
        "--json",
        "--input",
        &late_input,
    ]))
    .unwrap();
    let stats = &report["inputs"][0];
    assert!(stats["stored"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(stats["expired"].as_u64(), Some(0), "{report}");
    assert!(
        n(
            &lake,
            &format!(
                "SELECT count(*) AS n FROM api_access WHERE app_id = '{held_app}' \
                 AND date < DATE '2026-11-07'"
            )
        ) > 0
    );
    retention("verify");
}
