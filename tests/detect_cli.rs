//! `auditlake detect` as a scheduler runs it: exit codes, byte-identical
//! output for the same lake and --now, the tables it leaves, errors a user
//! can act on.

use std::path::Path;
use std::process::{Command, Output};

use auditlake::r#gen::{GenArgs, Topic, run_to_files};

const BIN: &str = env!("CARGO_BIN_EXE_auditlake");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("AUDITLAKE_LOG", "error")
        .output()
        .expect("runs the binary")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn gen_and_ingest(data: &Path, lake: &str) -> String {
    let report = run_to_files(&GenArgs {
        seed: 11,
        events: 6_000,
        out: Some(data.to_path_buf()),
        ..GenArgs::default()
    })
    .unwrap();
    let mut args = vec!["ingest".to_string(), "--lake".into(), lake.into()];
    for t in Topic::ALL {
        args.push("--input".into());
        args.push(format!(
            "{}={}",
            t.name(),
            data.join(t.file_name()).display()
        ));
    }
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    report.manifest.suggested_now
}

#[test]
fn detect_prints_the_same_bytes_and_writes_the_tables() {
    let data = tempfile::tempdir().unwrap();
    let lake_dir = tempfile::tempdir().unwrap();
    let lake = lake_dir.path().to_str().unwrap();
    let now = gen_and_ingest(data.path(), lake);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("manifest.json")).unwrap()).unwrap();
    let planted: u64 = manifest["findings_by_rule"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();

    let first = ok(&["detect", "--lake", lake, "--now", &now]);
    let second = ok(&["detect", "--lake", lake, "--now", &now, "--format", "jsonl"]);
    assert_eq!(first, second, "same lake, same --now: same bytes");
    assert_eq!(first.lines().count() as u64, planted, "{first}");
    for line in first.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 14, "{line}");
    }

    // The tables are there for analysts, and agree with what was printed.
    let count = ok(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "json",
        "SELECT count(*) AS n FROM findings",
    ]);
    assert_eq!(count.trim(), format!("{{\"n\":{planted}}}"));
    let states = ok(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "json",
        "SELECT state, count(*) AS n FROM obligations GROUP BY state ORDER BY state",
    ]);
    for (state, n) in manifest["obligations_by_state"].as_object().unwrap() {
        if n.as_u64().unwrap() > 0 {
            assert!(
                states.contains(&format!("{{\"state\":\"{state}\",\"n\":{n}}}")),
                "{state}: {states}"
            );
        }
    }

    // One rule as a table; the table format cuts long evidence lists.
    let table = ok(&[
        "detect",
        "--lake",
        lake,
        "--now",
        &now,
        "--rule",
        "bulk_harvest",
        "--format",
        "table",
        "--dry-run",
    ]);
    assert!(
        table.contains("bulk_harvest") && table.contains("ids)"),
        "{table}"
    );
    assert!(!table.contains("scope_not_granted"), "{table}");
}

#[test]
fn detect_errors_are_actionable() {
    let lake_dir = tempfile::tempdir().unwrap();
    let lake = lake_dir.path().to_str().unwrap();

    let out = run(&["detect", "--lake", lake, "--now", "yesterday"]);
    assert_eq!(out.status.code(), Some(64), "a bad flag is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));

    let now = "2026-11-11T00:00:00Z";
    let out = run(&["detect", "--lake", lake, "--now", now]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingest something first"), "{err}");
    assert!(
        !lake_dir.path().join("findings").exists(),
        "an empty lake stays empty"
    );

    // A lake with something in it for the rest.
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        data.path().join("apps.jsonl"),
        r#"{"event_id":"p1","event_time":"2026-11-01T00:00:00Z","app_id":"a1","developer_id":"d1","app_kind":"third_party","action":"register","declared_scopes":[],"declared_categories":[],"export_approved":false}"#,
    )
    .unwrap();
    let apps = format!("apps={}", data.path().join("apps.jsonl").display());
    ok(&["ingest", "--lake", lake, "--input", &apps]);

    let out = run(&["detect", "--lake", lake, "--now", now, "--rule", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown rule \"nope\"") && err.contains("bulk_harvest"),
        "{err}"
    );

    let rules = tempfile::tempdir().unwrap();
    let path = rules.path().join("broken.sql");
    // A rule's rows may set their own severity, but only a known one; a rule
    // that fails while running is the rule's error, not auditlake's bug.
    for (sql, expect) in [
        ("SELECT app_id\nFROM data_access\nWHERE", ""),
        (
            "SELECT 'a1' AS app_id, 'ultra' AS severity",
            "severity \"ultra\"",
        ),
        (
            "SELECT 'a1' AS app_id FROM data_access WHERE 1 / (record_count - record_count) = 1 \
             UNION ALL SELECT 'a1' AS app_id WHERE CAST(random() * 0 AS INT) / 0 = 1",
            "",
        ),
        ("CREATE VIEW v AS SELECT 'a1' AS app_id", "one query"),
        (
            "SELECT 'a1' AS app_id, 42 AS event_time",
            "event_time as Int64; a finding's event_time is a timestamp",
        ),
        (
            "SELECT 'a1' AS app_id, 'e1' AS event_ids",
            "a list of strings",
        ),
    ] {
        std::fs::write(
            &path,
            format!("-- id: broken\n-- clause: x\n-- severity: low\n{sql}\n"),
        )
        .unwrap();
        let out = run(&[
            "detect",
            "--lake",
            lake,
            "--now",
            now,
            "--rules",
            rules.path().to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{sql}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:", path.display())), "{err}");
        assert!(err.contains(expect) && !err.contains("bug"), "{err}");
    }
    std::fs::remove_file(&path).unwrap();

    // Accesses without the grants that authorise them: refused, not flagged.
    std::fs::write(
        data.path().join("api-access.jsonl"),
        r#"{"event_id":"e1","event_time":"2026-11-02T00:00:00Z","app_id":"a1","developer_id":"d1","user_id":"u1","api":"order.get","required_scope":"order.read","token_scopes":["order.read"],"data_categories":["order"],"record_count":1,"status":200,"client_ip":"10.0.0.1","client_region":"CN","token_id":"t1","latency_ms":5,"response_bytes":100}"#,
    )
    .unwrap();
    let access = format!(
        "api-access={}",
        data.path().join("api-access.jsonl").display()
    );
    ok(&["ingest", "--lake", lake, "--input", &access]);
    let out = run(&["detect", "--lake", lake, "--now", now]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no grants table"), "{err}");
}
