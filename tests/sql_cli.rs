//! `auditlake sql` end to end: nested columns in CSV and table output, several
//! queries in one session, `--repeat` and `--timings`.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_auditlake");

fn auditlake(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("AUDITLAKE_LOG", "warn")
        .output()
        .expect("run auditlake")
}

fn ok(args: &[&str]) -> String {
    let out = auditlake(args);
    assert!(
        out.status.success(),
        "auditlake {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A small lake: gen + ingest of api-access and grants.
fn lake(dir: &Path) -> String {
    let data = dir.join("d");
    let lake = dir.join("lake");
    ok(&[
        "gen",
        "--out",
        data.to_str().unwrap(),
        "--seed",
        "3",
        "--events",
        "2000",
    ]);
    let access = format!("api-access={}", data.join("api-access.jsonl").display());
    let grants = format!("grants={}", data.join("grants.jsonl").display());
    ok(&[
        "ingest",
        "--lake",
        lake.to_str().unwrap(),
        "--input",
        &access,
        "--input",
        &grants,
    ]);
    lake.to_str().unwrap().to_string()
}

const LISTS: &str = "SELECT event_id, token_scopes, data_categories FROM api_access \
                     WHERE cardinality(token_scopes) > 1 ORDER BY event_id LIMIT 5";

#[test]
fn nested_columns_print_as_json_text_in_csv_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());

    let json: Vec<serde_json::Value> = ok(&["sql", "--lake", &lake, "--format", "json", LISTS])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(json.len(), 5);

    let csv = ok(&["sql", "--lake", &lake, "--format", "csv", LISTS]);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("event_id,token_scopes,data_categories"));
    for (line, row) in lines.zip(&json) {
        // Quoted CSV field -> the JSON text; it parses back to the JSON format's value.
        let mut fields = csv_fields(line).into_iter();
        assert_eq!(fields.next().unwrap(), row["event_id"].as_str().unwrap());
        let scopes: serde_json::Value = serde_json::from_str(&fields.next().unwrap()).unwrap();
        assert_eq!(scopes, row["token_scopes"], "{line}");
        let categories = fields.next().unwrap();
        if row["data_categories"].is_null() {
            assert_eq!(categories, "");
        } else {
            let categories: serde_json::Value = serde_json::from_str(&categories).unwrap();
            assert_eq!(categories, row["data_categories"], "{line}");
        }
    }

    let table = ok(&["sql", "--lake", &lake, "--format", "table", LISTS]);
    let first = serde_json::to_string(&json[0]["token_scopes"]).unwrap();
    assert!(table.contains(&first), "{first} not in\n{table}");

    // A whole row of every type, and an empty result, print too.
    ok(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "csv",
        "SELECT * FROM api_access LIMIT 3",
    ]);
    let empty = ok(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "csv",
        "SELECT token_scopes FROM api_access WHERE false",
    ]);
    assert_eq!(empty, "token_scopes\n");
}

/// Splits one CSV line (RFC 4180 quoting) into fields.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[test]
fn several_queries_repeat_and_timings() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let timings = dir.path().join("t.json");
    let out = ok(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "json",
        "--repeat",
        "3",
        "--timings",
        timings.to_str().unwrap(),
        "SELECT count(*) AS n FROM api_access",
        "SELECT count(*) AS g FROM grants",
    ]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "one result per query, printed once: {out}");
    assert!(rows[0]["n"].as_u64().unwrap() > 0);
    assert!(rows[1]["g"].as_u64().unwrap() > 0);

    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(&timings).unwrap()).unwrap();
    assert!(t["open_ms"].as_f64().unwrap() > 0.0);
    let queries = t["queries"].as_array().unwrap();
    assert_eq!(queries.len(), 2);
    for q in queries {
        assert_eq!(q["runs_ms"].as_array().unwrap().len(), 3);
        assert_eq!(q["rows"], 1);
        assert!(q["best_ms"].as_f64().unwrap() > 0.0);
    }

    // Parquet holds one result; a failing query leaves no output file.
    let refused = auditlake(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "parquet",
        "--output",
        dir.path().join("x.parquet").to_str().unwrap(),
        "SELECT 1",
        "SELECT 2",
    ]);
    assert!(!refused.status.success());
    let out_file = dir.path().join("bad.csv");
    let failed = auditlake(&[
        "sql",
        "--lake",
        &lake,
        "--format",
        "csv",
        "--output",
        out_file.to_str().unwrap(),
        "SELECT no_such_column FROM api_access",
    ]);
    assert!(!failed.status.success());
    assert!(!out_file.exists(), "a failed query must not leave a file");
}

/// A mistyped `--lake` of a verb that reads fails, naming the path, and
/// leaves no empty directory behind.
#[test]
fn a_missing_lake_is_an_error_not_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("lak");
    for args in [
        vec!["sql", "--lake", typo.to_str().unwrap(), "SELECT 1"],
        vec!["detect", "--lake", typo.to_str().unwrap()],
        vec!["retention", "verify", "--lake", typo.to_str().unwrap()],
    ] {
        let out = auditlake(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no lake at") && stderr.contains("lak"),
            "{args:?}: {stderr}"
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
}

/// `auditlake sql ... | head -1`: the reader closing the pipe ends the
/// command quietly with success, not with "Error: ... Broken pipe" and 1,
/// and `--timings` still records the query that ran.
#[test]
fn a_reader_closing_the_pipe_is_not_an_error() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    for format in ["csv", "table", "json"] {
        let timings = dir.path().join(format!("timings-{format}.json"));
        let mut child = Command::new(BIN)
            .args(["sql", "--lake", &lake, "--format", format, "--timings"])
            .arg(&timings)
            // Far more rows than a pipe buffer holds, so writes block and fail.
            .arg("SELECT a.* FROM api_access a CROSS JOIN (SELECT 1 FROM api_access LIMIT 20) b")
            .env("AUDITLAKE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader is gone (the BufReader and its pipe were dropped).
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{format}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("Error"), "{format}: {stderr}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&timings).expect("timings written")).unwrap();
        assert_eq!(report["queries"].as_array().unwrap().len(), 1, "{report}");
    }
}

/// `detect --metrics ... | head`: the metrics are printed even when the
/// reader has gone before the findings were written.
#[test]
fn detect_prints_its_metrics_when_the_reader_is_gone() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let apps = format!("apps={}", dir.path().join("d/apps.jsonl").display());
    ok(&["ingest", "--lake", &lake, "--input", &apps]);
    let args = ["detect", "--lake", &lake, "--dry-run", "--format", "jsonl"];
    let findings = ok(&args);
    assert!(findings.lines().count() > 0, "the fixture has findings");
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--metrics")
        .env("AUDITLAKE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?} {stderr}", out.status);
    let metrics: serde_json::Value = serde_json::from_str(
        stderr
            .lines()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no metrics in {stderr}")),
    )
    .unwrap();
    assert!(metrics.is_object(), "{metrics}");
}

/// `sql` changes nothing: writes (INSERT, COPY TO) and definitions (DROP,
/// CREATE TABLE), which would only change this command's session while
/// looking as if they changed the lake, are refused with a message that says
/// so; a view, which names a query for the call's next ones, is allowed.
#[test]
fn writes_and_definitions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lake = lake(dir.path());
    let before = ok(&[
        "sql",
        "--lake",
        &lake,
        "SELECT count(*) AS n FROM api_access",
    ]);
    let target = dir.path().join("copy.csv");
    for statement in [
        "INSERT INTO grants SELECT * FROM grants".to_string(),
        format!("COPY (SELECT 1) TO '{}'", target.display()),
        "DROP TABLE api_access".to_string(),
        "CREATE TABLE t AS SELECT 1".to_string(),
    ] {
        let out = auditlake(&["sql", "--lake", &lake, &statement]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{statement}: {stderr}");
        assert!(stderr.contains("read-only"), "{statement}: {stderr}");
    }
    assert!(!target.exists());
    assert_eq!(
        ok(&[
            "sql",
            "--lake",
            &lake,
            "SELECT count(*) AS n FROM api_access"
        ]),
        before
    );
    // A view names a query for the next ones of the same call, and prints nothing.
    assert_eq!(
        ok(&[
            "sql",
            "--lake",
            &lake,
            "CREATE VIEW v AS SELECT * FROM api_access",
            "SELECT count(*) AS n FROM v",
        ]),
        before
    );
}
