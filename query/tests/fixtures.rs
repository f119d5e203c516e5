//! Hand-written detection fixtures: `tests/fixtures/*.fixture`, one or more per
//! rule, each a small lake with the findings and obligations it must give.
//!
//! A fixture is lines of directives (`#` starts a comment):
//!
//! ```text
//! now 2026-11-10T00:00:00Z          evaluation time (required)
//! regions CN,HK                     allowed regions (default CN)
//! deadline revoke=1                 obligation deadline override, hours
//! check scope_not_granted obligations
//!                                   what to compare: these rules' findings
//!                                   (others are ignored) and/or obligations
//! access {...}                      an api-access message (also grant, app, deletion)
//! repeat i=0..100 j=0..3            the next event line, once per (i, j),
//!                                   with {i} and {j} replaced by the numbers
//! finding RULE APP USER SCOPE TIME IDS
//!                                   an expected finding: - for null; TIME is
//!                                   the first of event_time, window_start,
//!                                   created_at; IDS the event_ids joined by ,
//!                                   (more than 10: `count:N`)
//! obligation APP USER REASON STATE SOURCE DUE FULFILLED
//!                                   an expected obligation (- for null)
//! ```
//!
//! Messages get defaults for fields a fixture does not care about: access
//! `api` = `x.get`, `status` = 200, `developer_id` = `dev-<app_id>`,
//! `client_region` = `CN`; app `developer_id` = `dev-<app_id>`. An
//! `event_time` may be `BASE+N[hms]...`, e.g. `2026-11-01T00:00:00Z+{i}h+5m`.
//! A message that does not decode fails the fixture.
//!
//! Every fixture runs through the real path: decode, append to a Delta lake in
//! memory, `Detect::execute` (which writes the tables), then the findings
//! table is read back and compared.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use auditlake_query::Detect;
use auditlake_query::detect::write_jsonl;
use auditlake_schemas::{Decoder, Lake, RawMessage, Source, Topic, WriteOptions};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

#[derive(Debug, Default)]
struct Fixture {
    now: Option<DateTime<Utc>>,
    regions: Option<Vec<String>>,
    deadlines: Vec<(String, i64)>,
    check_rules: BTreeSet<String>,
    check_obligations: bool,
    events: Vec<(Topic, String, usize)>,
    findings: BTreeSet<String>,
    obligations: BTreeSet<String>,
}

fn parse_time_expr(s: &str) -> Option<String> {
    let (base, rest) = match s.find("Z+") {
        Some(i) => (&s[..=i], &s[i + 1..]),
        None => return None,
    };
    let mut t = DateTime::parse_from_rfc3339(base).ok()?.with_timezone(&Utc);
    for part in rest.split('+').filter(|p| !p.is_empty()) {
        let (n, unit) = part.split_at(part.len() - 1);
        let n: i64 = n.parse().ok()?;
        t += match unit {
            "h" => Duration::hours(n),
            "m" => Duration::minutes(n),
            "s" => Duration::seconds(n),
            _ => return None,
        };
    }
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn with_defaults(topic: Topic, line: &str, path: &Path, no: usize) -> String {
    let mut v: Map<String, Value> = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{}:{no}: not a JSON object: {e}", path.display()));
    if let Some(Value::String(t)) = v.get("event_time")
        && let Some(expanded) = parse_time_expr(t)
    {
        v.insert("event_time".into(), Value::from(expanded));
    }
    let app = v
        .get("app_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut default = |k: &str, val: Value| {
        v.entry(k.to_string()).or_insert(val);
    };
    match topic {
        Topic::ApiAccess => {
            default("api", Value::from("x.get"));
            default("status", Value::from(200));
            default("developer_id", Value::from(format!("dev-{app}")));
            default("client_region", Value::from("CN"));
        }
        Topic::Apps => default("developer_id", Value::from(format!("dev-{app}"))),
        _ => {}
    }
    Value::Object(v).to_string()
}

fn parse(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).unwrap();
    let mut f = Fixture::default();
    let mut repeat: Option<Vec<(String, std::ops::Range<i64>)>> = None;
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let topic = match word {
            "access" => Some(Topic::ApiAccess),
            "grant" => Some(Topic::Grants),
            "app" => Some(Topic::Apps),
            "deletion" => Some(Topic::Deletions),
            _ => None,
        };
        if let Some(topic) = topic {
            match repeat.take() {
                None => f
                    .events
                    .push((topic, with_defaults(topic, rest, path, no), no)),
                Some(vars) => {
                    let (iv, ir) = vars[0].clone();
                    let (jv, jr) = vars.get(1).cloned().unwrap_or(("j".into(), 0..1));
                    for a in ir.clone() {
                        for b in jr.clone() {
                            let l = rest
                                .replace(&format!("{{{iv}}}"), &a.to_string())
                                .replace(&format!("{{{jv}}}"), &b.to_string());
                            f.events
                                .push((topic, with_defaults(topic, &l, path, no), no));
                        }
                    }
                }
            }
            continue;
        }
        let bad = |what: &str| -> ! { panic!("{}:{no}: {what}: {line}", path.display()) };
        match word {
            "now" => {
                f.now = Some(
                    DateTime::parse_from_rfc3339(rest)
                        .unwrap_or_else(|_| bad("bad time"))
                        .with_timezone(&Utc),
                )
            }
            "regions" => f.regions = Some(rest.split(',').map(str::to_string).collect()),
            "deadline" => {
                let (r, h) = rest.split_once('=').unwrap_or_else(|| bad("REASON=HOURS"));
                f.deadlines
                    .push((r.to_string(), h.parse().unwrap_or_else(|_| bad("hours"))));
            }
            "check" => {
                for w in rest.split_whitespace() {
                    if w == "obligations" {
                        f.check_obligations = true;
                    } else {
                        f.check_rules.insert(w.to_string());
                    }
                }
            }
            "repeat" => {
                let vars = rest
                    .split_whitespace()
                    .map(|v| {
                        let (name, range) = v.split_once('=').unwrap_or_else(|| bad("i=A..B"));
                        let (a, b) = range.split_once("..").unwrap_or_else(|| bad("i=A..B"));
                        (
                            name.to_string(),
                            a.parse().unwrap_or_else(|_| bad("number"))
                                ..b.parse().unwrap_or_else(|_| bad("number")),
                        )
                    })
                    .collect();
                repeat = Some(vars);
            }
            "finding" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                if parts.len() != 6 {
                    bad("finding RULE APP USER SCOPE TIME IDS");
                }
                let time = if parts[4] == "-" {
                    "-".to_string()
                } else {
                    normal_time(parts[4]).unwrap_or_else(|| bad("bad time"))
                };
                f.findings.insert(format!(
                    "{} {} {} {} {} {}",
                    parts[0], parts[1], parts[2], parts[3], time, parts[5]
                ));
            }
            "obligation" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                if parts.len() != 7 {
                    bad("obligation APP USER REASON STATE SOURCE DUE FULFILLED");
                }
                let t = |s: &str| {
                    if s == "-" {
                        "-".to_string()
                    } else {
                        normal_time(s).unwrap_or_else(|| bad("bad time"))
                    }
                };
                f.obligations.insert(format!(
                    "{} {} {} {} {} {} {}",
                    parts[0],
                    parts[1],
                    parts[2],
                    parts[3],
                    parts[4],
                    t(parts[5]),
                    t(parts[6])
                ));
            }
            _ => bad("unknown directive"),
        }
    }
    f
}

fn normal_time(s: &str) -> Option<String> {
    let t = parse_time_expr(s).unwrap_or_else(|| s.to_string());
    DateTime::parse_from_rfc3339(&t).ok().map(|t| {
        t.with_timezone(&Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    })
}

fn rows(b: &RecordBatch) -> Vec<Map<String, Value>> {
    let mut out = Vec::new();
    write_jsonl(b, &mut out).unwrap();
    out.split(|c| *c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

async fn run(path: &Path) -> Result<(), String> {
    let f = parse(path);
    let lake = Lake::open("memory://").unwrap();
    for topic in Topic::ALL {
        let mut d = Decoder::new(topic);
        let path_s = path.display().to_string();
        for (t, line, no) in f.events.iter().filter(|(t, _, _)| *t == topic) {
            let ok = d.push(RawMessage {
                payload: line.as_bytes(),
                source: Source::File {
                    path: &path_s,
                    line: *no as u64,
                },
            });
            assert!(
                ok,
                "{}:{no}: {t} message does not decode: {line}",
                path.display()
            );
        }
        let decoded = d.finish(0).unwrap();
        if decoded.events.num_rows() > 0 {
            lake.append(
                topic.table(),
                vec![decoded.events],
                vec![],
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        }
    }
    let mut detect = Detect::new(lake.clone())
        .with_now(f.now.expect("fixture without `now`"))
        .with_policy(
            auditlake_query::ObligationPolicy::default().with_deadlines(
                f.deadlines
                    .iter()
                    .map(|(r, h)| (r.clone(), Duration::hours(*h))),
            ),
        );
    if let Some(regions) = &f.regions {
        detect = detect.with_allowed_regions(regions.clone());
    }
    let (found, _) = detect.execute().await.map_err(|e| e.to_string())?;

    // Read the tables back: what was written is what is checked.
    let ctx = auditlake_query::session(&lake).await.unwrap();
    let findings = auditlake_query::run_sql(&ctx, "SELECT * FROM findings")
        .await
        .unwrap();
    let written: usize = findings.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(written, found.len(), "{}: findings table", path.display());
    let mut got = BTreeSet::new();
    for r in rows(&found.findings) {
        let rule = s(&r["rule_id"]);
        if !f.check_rules.contains(&rule) {
            continue;
        }
        let time = ["event_time", "window_start", "created_at"]
            .iter()
            .map(|k| s(&r[*k]))
            .find(|t| t != "-")
            .unwrap_or_else(|| "-".into());
        let ids: Vec<String> = r["event_ids"].as_array().unwrap().iter().map(s).collect();
        let ids = match ids.len() {
            0 => "-".into(),
            1..=10 => ids.join(","),
            n => format!("count:{n}"),
        };
        got.insert(format!(
            "{rule} {} {} {} {time} {ids}",
            s(&r["app_id"]),
            s(&r["user_id"]),
            s(&r["scope"])
        ));
    }
    let mut problems = Vec::new();
    for x in got.difference(&f.findings) {
        problems.push(format!("unexpected: finding {x}"));
    }
    for x in f.findings.difference(&got) {
        problems.push(format!("missing:    finding {x}"));
    }
    if f.check_obligations {
        let got: BTreeSet<String> = rows(&found.obligations)
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {} {}",
                    s(&r["app_id"]),
                    s(&r["user_id"]),
                    s(&r["reason"]),
                    s(&r["state"]),
                    s(&r["source_event_id"]),
                    s(&r["due_at"]),
                    s(&r["fulfilled_at"])
                )
            })
            .collect();
        for x in got.difference(&f.obligations) {
            problems.push(format!("unexpected: obligation {x}"));
        }
        for x in f.obligations.difference(&got) {
            problems.push(format!("missing:    obligation {x}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "fixture"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_gives_its_findings() {
    let only = std::env::var("FIXTURE").ok();
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        ran += 1;
        if let Err(e) = run(&path).await {
            failures.push(format!("== {name}\n{e}"));
        }
    }
    assert!(ran > 0, "no fixture ran");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_rule_has_a_fixture() {
    let names: Vec<String> = fixtures()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for id in auditlake_query::RuleSet::builtin().ids() {
        assert!(
            names
                .iter()
                .any(|t| t.lines().any(|l| l.starts_with("check ") && l.contains(id))),
            "no fixture checks {id}"
        );
    }
}
