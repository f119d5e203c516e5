//! `auditlake retention` end to end through the binary, on a local lake and
//! on s3s-fs: erase leaves no byte of the user under the root and everyone
//! else intact; a planted old file fails verify; `kill -9` at every step of
//! an erase, then a rerun, passes; a sweep honours a legal hold and its dry
//! run changes nothing; bad policies are refused with the line; a legal hold
//! keeps only its rows; erase and sweep beside a running ingest on moto lose
//! and double nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use auditlake_testkit::{LakePlace, S3Server};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_auditlake");
const VICTIM: &str = "user-0007";
const NOW: &str = "2026-11-16T12:00:00Z";

/// Where the lake lives: a local directory, or a prefix in an s3s-fs bucket.
struct Place(LakePlace);

impl std::ops::Deref for Place {
    type Target = LakePlace;
    fn deref(&self) -> &LakePlace {
        &self.0
    }
}

impl Place {
    fn local() -> Self {
        Self(LakePlace::local())
    }

    fn s3() -> Option<Self> {
        LakePlace::s3("retention on s3s-fs").map(Self)
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("AUDITLAKE_LOG", "warn")
            .env("AUDITLAKE_LAKE", self.lake());
        cmd.envs(self.env());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run auditlake")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "auditlake {args:?} failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn rows(&self, query: &str) -> Vec<serde_json::Value> {
        self.ok(&["sql", "--format", "json", query])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn n(&self, query: &str) -> u64 {
        self.rows(query)[0]["n"].as_u64().unwrap()
    }

    /// Rows per (table, user).
    fn counts(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for table in ["api_access", "grants", "deletions"] {
            for r in self.rows(&format!(
                "SELECT coalesce(user_id, '') AS u, count(*) AS n FROM {table} GROUP BY 1"
            )) {
                out.insert(
                    (table.to_string(), r["u"].as_str().unwrap().to_string()),
                    r["n"].as_u64().unwrap(),
                );
            }
        }
        out
    }

    /// Builds the fixture lake with `auditlake ingest --input`.
    fn ingest_fixture(&self) {
        let data = self.dir().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut args = vec!["ingest".to_string(), "--flush-rows".into(), "300".into()];
        for (topic, lines) in topics() {
            let path = data.join(format!("{topic}.jsonl"));
            let mut f = std::fs::File::create(&path).unwrap();
            for l in lines {
                writeln!(f, "{l}").unwrap();
            }
            args.push("--input".into());
            args.push(format!("{topic}={}", path.display()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ok(&args);
    }
}

fn user(i: usize) -> String {
    format!("user-{:04}", i % 40)
}

fn topics() -> Vec<(&'static str, Vec<String>)> {
    let access = (0..3000)
        .map(|i| {
            format!(
                r#"{{"event_id":"req-{i:06}","event_time":"2026-11-{d:02}T{h:02}:15:30Z","app_id":"app-{a}","developer_id":"dev-{a}","user_id":"{u}","api":"order.list","required_scope":"order.read","data_categories":["order"],"status":200,"client_region":"CN","token_id":"tok-{u}"}}"#,
                d = 1 + i % 10,
                h = i % 24,
                a = i % 4,
                u = user(i / 3),
            )
        })
        .collect();
    let grants = (0..200)
        .map(|i| {
            format!(
                r#"{{"event_id":"g-{i}","event_time":"2026-11-{d:02}T08:00:00Z","app_id":"app-{a}","user_id":"{u}","action":"grant","scopes":["order.read"]}}"#,
                d = 1 + i % 10,
                a = i % 4,
                u = user(i),
            )
        })
        .collect();
    let mut deletions: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"event_id":"del-{i}","event_time":"2026-11-{d:02}T09:00:00Z","app_id":"app-{a}","user_id":"{u}","kind":"request","reason":"user_request"}}"#,
                d = 1 + i % 10,
                a = i % 4,
                u = user(i * 7),
            )
        })
        .collect();
    deletions.push(format!(
        r#"{{"event_id":"bad-1","user_id":"{VICTIM}","kind":"#
    ));
    deletions.push(r#"{"event_id":"bad-2","user_id":"user-0008"}"#.to_string());
    vec![
        ("api-access", access),
        ("grants", grants),
        ("deletions", deletions),
    ]
}

/// Every file under `root` whose bytes hold `needle`: raw, or (Parquet) in
/// any decoded value.
fn files_containing(root: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            let raw = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            let decoded = bytes.starts_with(b"PAR1") && parquet_text(&p).contains(needle);
            if raw || decoded {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn parquet_text(path: &Path) -> String {
    fn push(a: &dyn Array, text: &mut String) {
        match a.data_type() {
            DataType::List(_) => push(a.as_list::<i32>().values().as_ref(), text),
            DataType::Struct(_) => a
                .as_struct()
                .columns()
                .iter()
                .for_each(|c| push(c.as_ref(), text)),
            DataType::Map(_, _) => {
                push(a.as_map().keys().as_ref(), text);
                push(a.as_map().values().as_ref(), text);
            }
            DataType::Binary => {
                for v in a.as_binary::<i32>().iter().flatten() {
                    text.push_str(&String::from_utf8_lossy(v));
                    text.push('\n');
                }
            }
            _ => {
                let f =
                    arrow::util::display::ArrayFormatter::try_new(a, &Default::default()).unwrap();
                for i in 0..a.len() {
                    text.push_str(&f.value(i).to_string());
                    text.push('\n');
                }
            }
        }
    }
    let mut text = String::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
    {
        for c in b.unwrap().columns() {
            push(c.as_ref(), &mut text);
        }
    }
    text
}

fn listing(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push((
                    e.path().strip_prefix(root).unwrap().display().to_string(),
                    e.metadata().unwrap().len(),
                ));
            }
        }
    }
    out.sort();
    out
}

fn erase_leaves_no_byte(place: &Place) {
    place.ingest_fixture();
    let before = place.counts();
    let victim: u64 = before
        .iter()
        .filter(|((_, u), _)| u == VICTIM)
        .map(|(_, n)| n)
        .sum();
    assert!(victim > 50);
    assert!(!files_containing(&place.root_on_disk(), VICTIM).is_empty());

    let out = place.ok(&[
        "retention",
        "erase",
        "--user",
        VICTIM,
        "--reason",
        "user_request",
        "--now",
        NOW,
    ]);
    assert!(
        out.contains(&format!("{} rows removed", victim + 1)),
        "{out}"
    );
    let left = files_containing(&place.root_on_disk(), VICTIM);
    assert!(left.is_empty(), "the id survives in {left:?}");

    let mut expected = before;
    expected.retain(|(_, u), _| u != VICTIM);
    assert_eq!(place.counts(), expected);
    assert_eq!(
        place.n("SELECT count(*) AS n FROM quarantine WHERE strpos(CAST(raw AS VARCHAR), 'user-0008') > 0"),
        1
    );
    let out = place.ok(&["retention", "verify", "--user", VICTIM, "--now", NOW]);
    assert!(out.contains("PASS erased_user_bytes"), "{out}");
    // Evidence is readable with sql, and names no id.
    let ev = place
        .rows("SELECT seq, kind, outcome, subject, record FROM retention_evidence ORDER BY seq");
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0]["kind"], "erase");
    assert_eq!(ev[1]["kind"], "verify");
    assert!(!ev.iter().any(|r| r.to_string().contains(VICTIM)));
}

#[test]
fn erase_leaves_no_byte_local() {
    erase_leaves_no_byte(&Place::local());
}

#[test]
fn erase_leaves_no_byte_s3() {
    if let Some(place) = Place::s3() {
        erase_leaves_no_byte(&place);
    }
}

/// Erasing from clustered files of many row groups: the row groups without
/// the user are copied as encoded, the others re-encoded without them.
fn erase_from_clustered_row_groups(place: &Place) {
    place.ingest_fixture();
    let policy = place.dir().join("cluster.toml");
    std::fs::write(
        &policy,
        "[clustering]\nmin_age = \"1d\"\ntarget_file_size = \"1MiB\"\nrow_group_rows = 16\n",
    )
    .unwrap();
    place.ok(&[
        "retention",
        "sweep",
        "--policy",
        policy.to_str().unwrap(),
        "--now",
        "2026-12-01T00:00:00Z",
    ]);
    let before = place.counts();
    let victim: u64 = before
        .iter()
        .filter(|((_, u), _)| u == VICTIM)
        .map(|(_, n)| n)
        .sum();
    assert!(victim > 50);
    let out = place.ok(&[
        "retention",
        "erase",
        "--user",
        VICTIM,
        "--now",
        NOW,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let api = &report["metrics"]["rewrites"]["api_access"];
    let retired = api["retired"].as_array().unwrap();
    assert!(!retired.is_empty(), "{api}");
    // Clustered files of 16-row groups: each rewritten file kept most rows.
    assert!(
        retired
            .iter()
            .any(|r| r["rows_kept"].as_u64().unwrap() > 16),
        "{api}"
    );
    let left = files_containing(&place.root_on_disk(), VICTIM);
    assert!(left.is_empty(), "the id survives in {left:?}");
    let mut expected = before;
    expected.retain(|(_, u), _| u != VICTIM);
    assert_eq!(place.counts(), expected);
    // The rewritten files' statistics still prune: a lookup of another user
    // finds its rows.
    let other = user(3);
    assert_eq!(
        place.n(&format!(
            "SELECT count(*) AS n FROM api_access WHERE user_id = '{other}'"
        )),
        expected[&("api_access".to_string(), other.clone())]
    );
    let out = place.ok(&["retention", "verify", "--user", VICTIM, "--now", NOW]);
    assert!(out.contains("PASS erased_user_bytes"), "{out}");
}

#[test]
fn erase_from_clustered_row_groups_local() {
    erase_from_clustered_row_groups(&Place::local());
}

#[test]
fn erase_from_clustered_row_groups_s3() {
    if let Some(place) = Place::s3() {
        erase_from_clustered_row_groups(&place);
    }
}

fn planted_file_fails_verify(place: &Place) {
    place.ingest_fixture();
    let root = place.root_on_disk();
    let holder = files_containing(&root, VICTIM)
        .into_iter()
        .find(|p| p.starts_with("api_access/date=") && p.ends_with(".parquet"))
        .unwrap();
    let copy = std::fs::read(root.join(&holder)).unwrap();
    place.ok(&["retention", "erase", "--user", VICTIM, "--now", NOW]);

    // Restored from a backup, straight onto the store's disk.
    let planted = holder.replace(".parquet", ".restored.parquet");
    std::fs::write(root.join(&planted), &copy).unwrap();
    for args in [
        vec!["retention", "verify", "--user", VICTIM, "--now", NOW],
        vec!["retention", "verify", "--now", NOW],
    ] {
        let out = place.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("    {planted}: ")),
            "{args:?}: {stdout}"
        );
        assert!(stdout.contains("FAIL"), "{stdout}");
    }
}

#[test]
fn planted_file_fails_verify_local() {
    planted_file_fails_verify(&Place::local());
}

#[test]
fn planted_file_fails_verify_s3() {
    if let Some(place) = Place::s3() {
        planted_file_fails_verify(&place);
    }
}

/// Starts an erase that pauses at `step`, waits for it, and kills it with SIGKILL.
fn kill_erase_at(place: &Place, step: &str) {
    let mut child = place
        .cmd()
        .args([
            "retention",
            "erase",
            "--user",
            VICTIM,
            "--now",
            NOW,
            "--orphan-grace",
            "1s",
        ])
        .env("AUDITLAKE_RETENTION_PAUSE_AT", step)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("paused at") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_else(|_| panic!("erase never reached {step}"));
    assert!(line.contains(step));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

fn kill_during_erase_then_rerun(place: &Place) {
    place.ingest_fixture();
    let before = place.counts();
    let mut expected = before.clone();
    expected.retain(|(_, u), _| u != VICTIM);
    for step in [
        "tombstoned",
        "written",
        "committed",
        "purging",
        "checkpointed",
    ] {
        kill_erase_at(place, step);
        // Whatever the crash left, no other user lost a row.
        let now = place.counts();
        for (k, n) in &expected {
            assert_eq!(now.get(k), Some(n), "after a kill at {step}: {k:?}");
        }
    }
    // Wait out the orphan grace (1 s) so files of a killed rewrite count as orphans.
    std::thread::sleep(Duration::from_millis(1500));
    place.ok(&[
        "retention",
        "erase",
        "--user",
        VICTIM,
        "--now",
        NOW,
        "--orphan-grace",
        "1s",
    ]);
    assert_eq!(place.counts(), expected);
    let out = place.ok(&["retention", "verify", "--user", VICTIM, "--now", NOW]);
    assert!(out.contains("PASS erased_user_bytes"), "{out}");
    assert!(files_containing(&place.root_on_disk(), VICTIM).is_empty());
}

#[test]
fn kill_during_erase_then_rerun_local() {
    kill_during_erase_then_rerun(&Place::local());
}

#[test]
fn kill_during_erase_then_rerun_s3() {
    if let Some(place) = Place::s3() {
        kill_during_erase_then_rerun(&place);
    }
}

const POLICY: &str = r#"# keep 10 days of access logs and grants
[tables.api_access]
keep = "10d"
[tables.grants]
keep = "10d"

[[holds]]
reason = "regulator inquiry 2026-88"
app = "app-2"
"#;

fn sweep_with_hold(place: &Place) {
    place.ingest_fixture();
    let policy = place.dir().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let policy = policy.to_str().unwrap();
    let old = "date < DATE '2026-11-06'";
    let held = place.n(&format!(
        "SELECT count(*) AS n FROM api_access WHERE {old} AND app_id = 'app-2'"
    ));
    let recent = place.n("SELECT count(*) AS n FROM api_access WHERE date >= DATE '2026-11-06'");
    let expired = place.n(&format!(
        "SELECT count(*) AS n FROM api_access WHERE {old} AND app_id <> 'app-2'"
    ));
    assert!(held > 0 && recent > 0 && expired > 0);

    let before = listing(&place.root_on_disk());
    let out = place.ok(&[
        "retention",
        "sweep",
        "--policy",
        policy,
        "--now",
        NOW,
        "--dry-run",
    ]);
    assert!(
        out.contains(&format!("api_access: would delete {expired} rows")),
        "{out}"
    );
    assert!(out.contains("api_access/date=2026-11-01"), "{out}");
    assert_eq!(
        listing(&place.root_on_disk()),
        before,
        "the dry run changed something"
    );

    let out = place.ok(&["retention", "sweep", "--policy", policy, "--now", NOW]);
    assert!(
        out.contains(&format!("api_access: deleted {expired} rows")),
        "{out}"
    );
    assert!(out.contains("PASS retention"), "{out}");
    assert_eq!(
        place.n(&format!(
            "SELECT count(*) AS n FROM api_access WHERE {old} AND app_id <> 'app-2'"
        )),
        0
    );
    assert_eq!(
        place.n(&format!(
            "SELECT count(*) AS n FROM api_access WHERE {old} AND app_id = 'app-2'"
        )),
        held
    );
    assert_eq!(
        place.n("SELECT count(*) AS n FROM api_access WHERE date >= DATE '2026-11-06'"),
        recent
    );
    let out = place.ok(&["retention", "verify", "--policy", policy, "--now", NOW]);
    assert!(
        out.contains("PASS retention") && out.contains("PASS evidence_chain"),
        "{out}"
    );
}

#[test]
fn sweep_with_hold_local() {
    sweep_with_hold(&Place::local());
}

#[test]
fn sweep_with_hold_s3() {
    if let Some(place) = Place::s3() {
        sweep_with_hold(&place);
    }
}

fn bad_policies_are_refused(place: &Place) {
    place.ingest_fixture();
    let before = listing(&place.root_on_disk());
    for (text, line, what) in [
        (
            "[tables.api_access]\nkeep = \"30d\"\n\n[tables.acces_log]\nkeep = \"30d\"\n",
            4,
            "unknown table",
        ),
        ("[tables.grants]\n\nkeep = \"-7d\"\n", 3, "negative"),
        (
            "[tables.grants]\nkeep = \"7d\"\n[[holds]\nreason = \"x\"\n",
            3,
            "",
        ),
    ] {
        let path = place.dir().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        for verb in [
            vec!["retention", "sweep", "--now", NOW, "--policy"],
            vec!["retention", "sweep", "--dry-run", "--policy"],
        ] {
            let mut args = verb.clone();
            args.push(path.to_str().unwrap());
            let out = place.run(&args);
            assert_eq!(out.status.code(), Some(1), "{text}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("bad.toml:{line}:")), "{text}: {err}");
            assert!(err.contains(what), "{text}: {err}");
        }
    }
    assert_eq!(
        listing(&place.root_on_disk()),
        before,
        "a bad policy changed the lake"
    );
}

#[test]
fn bad_policies_are_refused_local() {
    bad_policies_are_refused(&Place::local());
}

#[test]
fn bad_policies_are_refused_s3() {
    if let Some(place) = Place::s3() {
        bad_policies_are_refused(&place);
    }
}

#[test]
fn help_lists_the_verbs() {
    let out = Command::new(BIN)
        .args(["retention", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for verb in ["sweep", "erase", "verify"] {
        assert!(text.contains(verb), "{text}");
    }
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["retention", "erase", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(30));
}

const HOLD_POLICY: &str = r#"# the regulator's inquiry into app-2
[[holds]]
reason = "regulator inquiry 2026-88"
app = "app-2"
"#;

/// A hold covering some of the user's rows: the erase removes the rest,
/// keeps the held rows, says so (output, evidence), verify passes with the
/// policy and fails without it, and a sweep after the hold is lifted
/// finishes the erasure.
fn erase_under_hold(place: &Place) {
    place.ingest_fixture();
    let before = place.counts();
    let held = place.n(&format!(
        "SELECT count(*) AS n FROM api_access WHERE user_id = '{VICTIM}' AND app_id = 'app-2'"
    ));
    assert!(held > 0);
    let policy = place.dir().join("hold.toml");
    std::fs::write(&policy, HOLD_POLICY).unwrap();
    let policy = policy.to_str().unwrap();

    let out = place.ok(&[
        "retention",
        "erase",
        "--user",
        VICTIM,
        "--policy",
        policy,
        "--now",
        NOW,
    ]);
    assert!(
        out.contains(&format!(
            "pending: {held} rows of api_access kept under the legal hold at policy line 2 (\"regulator inquiry 2026-88\")"
        )),
        "{out}"
    );
    assert!(out.contains("PASS erased_user_bytes"), "{out}");
    // Only the held rows of the user remain; everyone else is intact.
    let mut expected = before.clone();
    expected.retain(|(_, u), _| u != VICTIM);
    expected.insert(("api_access".into(), VICTIM.into()), held);
    assert_eq!(place.counts(), expected);
    assert_eq!(
        place.n(&format!(
            "SELECT count(*) AS n FROM api_access WHERE user_id = '{VICTIM}' AND app_id <> 'app-2'"
        )),
        0
    );
    // The evidence says the erasure is pending, and why; it names no id.
    let ev = place.rows("SELECT kind, outcome, record FROM retention_evidence ORDER BY seq");
    assert_eq!(ev[0]["outcome"], "pending", "{ev:?}");
    let record = ev[0]["record"].as_str().unwrap();
    assert!(
        record.contains("kept under the hold at policy line 2"),
        "{record}"
    );
    assert!(!record.contains(VICTIM));

    // verify knows the holds only from the policy.
    let out = place.ok(&[
        "retention",
        "verify",
        "--user",
        VICTIM,
        "--policy",
        policy,
        "--now",
        NOW,
    ]);
    assert!(out.contains("held: "), "{out}");
    for args in [
        vec!["retention", "verify", "--user", VICTIM, "--now", NOW],
        vec!["retention", "verify", "--now", NOW],
    ] {
        let out = place.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }

    // The hold is lifted: the next sweep finishes the erasure.
    let lifted = place.dir().join("lifted.toml");
    std::fs::write(&lifted, "# inquiry closed\n").unwrap();
    let out = place.ok(&[
        "retention",
        "sweep",
        "--policy",
        lifted.to_str().unwrap(),
        "--now",
        NOW,
    ]);
    assert!(
        out.contains(&format!("api_access: deleted {held} rows")),
        "{out}"
    );
    expected.retain(|(_, u), _| u != VICTIM);
    assert_eq!(place.counts(), expected);
    place.ok(&["retention", "verify", "--user", VICTIM, "--now", NOW]);
    let left = files_containing(&place.root_on_disk(), VICTIM);
    assert!(left.is_empty(), "the id survives in {left:?}");
}

#[test]
fn erase_under_hold_local() {
    erase_under_hold(&Place::local());
}

#[test]
fn erase_under_hold_s3() {
    if let Some(place) = Place::s3() {
        erase_under_hold(&place);
    }
}

// --- erase and sweep beside a running ingest, on moto ------------------------
//
// All three processes commit to one lake on moto (whose conditional puts are
// atomic, so racing Delta writers are decided by the store, as on S3). The
// ingest streams rows of other users into the very partitions the erase
// rewrites and the sweep clusters, one small commit after another. Afterwards
// no row of anyone else is lost or doubled, the erased user is gone, and
// `verify --user` exits 0.

const LIVE_ACCESS: usize = 6000;
const LIVE_GRANTS: usize = 600;
const LIVE_PARTS: usize = 40;

/// Rows per (table, user) of api_access and grants, asserting none is doubled.
fn race_counts(place: &Place) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for table in ["api_access", "grants"] {
        for r in place.rows(&format!(
            "SELECT coalesce(user_id, '') AS u, count(*) AS n, count(DISTINCT event_id) AS d FROM {table} GROUP BY 1"
        )) {
            assert_eq!(r["n"], r["d"], "{table}: duplicated rows: {r}");
            out.insert(
                (table.to_string(), r["u"].as_str().unwrap().to_string()),
                r["n"].as_u64().unwrap(),
            );
        }
    }
    out
}

/// Writes `lines` into a file of the place's directory; its path.
fn write_lines(place: &Place, name: &str, lines: impl Iterator<Item = String>) -> String {
    let path = place.dir().join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    path.display().to_string()
}

fn access(prefix: &str, i: usize, user: &str) -> String {
    format!(
        r#"{{"event_id":"{prefix}-{i:06}","event_time":"2026-11-{d:02}T{h:02}:15:30Z","app_id":"app-{a}","developer_id":"dev-{a}","user_id":"{user}","api":"order.list","required_scope":"order.read","data_categories":["order"],"status":200,"client_region":"CN","token_id":"tok-{user}"}}"#,
        d = 1 + i % 10,
        h = i % 24,
        a = i % 4,
    )
}

fn grant(prefix: &str, i: usize, user: &str) -> String {
    format!(
        r#"{{"event_id":"{prefix}-{i}","event_time":"2026-11-{d:02}T08:00:00Z","app_id":"app-{a}","user_id":"{user}","action":"grant","scopes":["order.read"]}}"#,
        d = 1 + i % 10,
        a = i % 4,
    )
}

#[test]
fn erase_and_sweep_beside_ingest_on_moto() {
    if auditlake_testkit::skip_services("erase_and_sweep_beside_ingest_on_moto") {
        return;
    }
    let lake = Place(LakePlace::on(S3Server::start_moto().expect("start moto")));
    // The lake as it was: 40 users, the victim among them.
    let base_access = write_lines(
        &lake,
        "base-access.jsonl",
        (0..4000).map(|i| access("req", i, &format!("user-{:04}", (i / 3) % 40))),
    );
    let base_grants = write_lines(
        &lake,
        "base-grants.jsonl",
        (0..200).map(|i| grant("g", i, &format!("user-{:04}", i % 40))),
    );
    lake.ok(&[
        "ingest",
        "--flush-rows",
        "500",
        "--input",
        &format!("api-access={base_access}"),
        "--input",
        &format!("grants={base_grants}"),
    ]);
    let before = race_counts(&lake);
    assert!(before[&("api_access".to_string(), VICTIM.to_string())] > 50);

    // The live stream: other users only (ids 100..), into the same days,
    // as 40 small inputs ingested one after another, each its own commits
    // (a backfill reads a whole input chunk at once, so one big file would
    // be a handful of commits and could end before the erase starts).
    let mut inputs = Vec::new();
    for part in 0..LIVE_PARTS {
        let rows = (part..LIVE_ACCESS).step_by(LIVE_PARTS);
        let path = write_lines(
            &lake,
            &format!("live-access-{part:03}.jsonl"),
            rows.map(|i| access("live", i, &format!("user-{:04}", 100 + i % 60))),
        );
        inputs.push(format!("api-access={path}"));
        if part % 8 == 0 {
            let rows = (part / 8..LIVE_GRANTS).step_by(LIVE_PARTS / 8);
            let path = write_lines(
                &lake,
                &format!("live-grants-{part:03}.jsonl"),
                rows.map(|i| grant("lg", i, &format!("user-{:04}", 100 + i % 60))),
            );
            inputs.push(format!("grants={path}"));
        }
    }
    let mut args = vec!["ingest".to_string(), "--flush-rows".into(), "100".into()];
    for input in &inputs {
        args.push("--input".into());
        args.push(input.clone());
    }
    let mut ingest = lake
        .cmd()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let a few of its commits land first.
    std::thread::sleep(Duration::from_millis(1500));

    let started = Instant::now();
    let out = lake.ok(&[
        "retention",
        "erase",
        "--user",
        VICTIM,
        "--reason",
        "user_request",
        "--now",
        NOW,
        "--orphan-grace",
        "1h",
    ]);
    assert!(out.contains("PASS erased_user_bytes"), "{out}");
    let policy = lake.dir().join("cluster.toml");
    std::fs::write(
        &policy,
        "[clustering]\ntables = [\"api_access\", \"grants\"]\nmin_age = \"1d\"\ntarget_file_size = \"8KiB\"\n",
    )
    .unwrap();
    let sweep = lake.run(&[
        "retention",
        "sweep",
        "--policy",
        policy.to_str().unwrap(),
        "--now",
        "2026-12-01T00:00:00Z",
    ]);
    let ingest_still_running = ingest.try_wait().unwrap().is_none();
    let raced = started.elapsed();
    let status = ingest.wait().unwrap();
    eprintln!(
        "erase and sweep took {raced:?}; ingest ended {:?} after the erase began",
        started.elapsed()
    );
    let stderr = std::io::read_to_string(ingest.stderr.take().unwrap()).unwrap();
    assert!(status.success(), "ingest failed: {stderr}");
    assert!(
        sweep.status.success(),
        "sweep failed: {}\n{}",
        String::from_utf8_lossy(&sweep.stderr),
        String::from_utf8_lossy(&sweep.stdout)
    );
    assert!(
        ingest_still_running,
        "ingest ended before erase and sweep ({:?}): the race was not run",
        started.elapsed()
    );

    // Nobody else lost (or doubled) a row; the victim is gone.
    let mut expected = before;
    expected.retain(|(_, u), _| u != VICTIM);
    for i in 0..LIVE_ACCESS {
        *expected
            .entry(("api_access".into(), format!("user-{:04}", 100 + i % 60)))
            .or_default() += 1;
    }
    for i in 0..LIVE_GRANTS {
        *expected
            .entry(("grants".into(), format!("user-{:04}", 100 + i % 60)))
            .or_default() += 1;
    }
    assert_eq!(race_counts(&lake), expected);
    let out = lake.run(&["retention", "verify", "--user", VICTIM, "--now", NOW]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Erasing a user from one app, and verifying it, on files large enough that
/// verify fetches only the columns it checks (over 128 KiB): the columns
/// the per-app count decodes are among those fetched. (Both used to fail
/// with "offset N was not fetched", after the erase had committed.)
#[test]
fn erase_from_one_app_on_large_files_local() {
    let place = Place::local();
    let data = place.dir().join("gen");
    place.ok(&[
        "gen",
        "--out",
        data.to_str().unwrap(),
        "--events",
        "100000",
        "--seed",
        "9",
    ]);
    let input = format!("api-access={}", data.join("api-access.jsonl").display());
    place.ok(&["ingest", "--input", &input]);
    let largest = listing(&place.root_on_disk())
        .into_iter()
        .filter(|(p, _)| p.ends_with(".parquet"))
        .map(|(_, size)| size)
        .max()
        .unwrap();
    assert!(
        largest > 128 * 1024,
        "files of {largest} bytes take the whole-object path"
    );
    // The user with most rows in one app (some events carry no user).
    let first = place.rows(
        "SELECT user_id, app_id FROM api_access WHERE user_id IS NOT NULL \
         GROUP BY 1, 2 ORDER BY count(*) DESC, 1, 2 LIMIT 1",
    );
    let (user, app) = (
        first[0]["user_id"].as_str().unwrap().to_string(),
        first[0]["app_id"].as_str().unwrap().to_string(),
    );
    let count = |cond: &str| {
        place.n(&format!(
            "SELECT count(*) AS n FROM api_access WHERE user_id = '{user}' AND {cond}"
        ))
    };
    let elsewhere = count(&format!("app_id <> '{app}'"));
    assert!(count(&format!("app_id = '{app}'")) > 0);
    place.ok(&[
        "retention",
        "erase",
        "--user",
        &user,
        "--app",
        &app,
        "--now",
        NOW,
    ]);
    assert_eq!(count(&format!("app_id = '{app}'")), 0);
    assert_eq!(
        count(&format!("app_id <> '{app}'")),
        elsewhere,
        "other apps keep theirs"
    );
    let out = place.ok(&[
        "retention",
        "verify",
        "--user",
        &user,
        "--app",
        &app,
        "--now",
        NOW,
    ]);
    assert!(out.contains("PASS"), "{out}");
}
