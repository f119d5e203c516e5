//! `retention erase` and `retention sweep` beside a running `ingest`, all
//! three processes committing to one lake on moto (whose conditional puts
//! are atomic, so racing Delta writers are decided by the store, as on S3).
//!
//! The ingest streams rows of other users into the very partitions the
//! erase rewrites and the sweep clusters, one small commit after another.
//! Afterwards no row of anyone else is lost or doubled, the erased user is
//! gone, and `verify --user` exits 0.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use auditlake_testkit::S3Server;

const BIN: &str = env!("CARGO_BIN_EXE_auditlake");
const VICTIM: &str = "user-0007";
const NOW: &str = "2026-11-16T12:00:00Z";
const LIVE_ACCESS: usize = 6000;
const LIVE_GRANTS: usize = 600;
const LIVE_PARTS: usize = 40;

struct Lake {
    s3: S3Server,
    dir: tempfile::TempDir,
}

impl Lake {
    fn cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env("AUDITLAKE_LOG", "warn")
            .env("AUDITLAKE_LAKE", self.s3.lake_url("lake"))
            .envs(self.s3.env());
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

    /// Rows per (table, user).
    fn counts(&self) -> BTreeMap<(String, String), u64> {
        let mut out = BTreeMap::new();
        for table in ["api_access", "grants"] {
            let q = format!(
                "SELECT coalesce(user_id, '') AS u, count(*) AS n, count(DISTINCT event_id) AS d FROM {table} GROUP BY 1"
            );
            for l in self.ok(&["sql", "--format", "json", &q]).lines() {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(r["n"], r["d"], "{table}: duplicated rows: {r}");
                out.insert(
                    (table.to_string(), r["u"].as_str().unwrap().to_string()),
                    r["n"].as_u64().unwrap(),
                );
            }
        }
        out
    }

    fn write(&self, name: &str, lines: impl Iterator<Item = String>) -> String {
        let path = self.dir.path().join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        path.display().to_string()
    }
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
    let lake = Lake {
        s3: S3Server::start_moto().expect("start moto"),
        dir: tempfile::tempdir().unwrap(),
    };
    // The lake as it was: 40 users, the victim among them.
    let base_access = lake.write(
        "base-access.jsonl",
        (0..4000).map(|i| access("req", i, &format!("user-{:04}", (i / 3) % 40))),
    );
    let base_grants = lake.write(
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
    let before = lake.counts();
    assert!(before[&("api_access".to_string(), VICTIM.to_string())] > 50);

    // The live stream: other users only (ids 100..), into the same days,
    // as 40 small inputs ingested one after another, each its own commits
    // (a backfill reads a whole input chunk at once, so one big file would
    // be a handful of commits and could end before the erase starts).
    let mut inputs = Vec::new();
    for part in 0..LIVE_PARTS {
        let rows = (part..LIVE_ACCESS).step_by(LIVE_PARTS);
        let path = lake.write(
            &format!("live-access-{part:03}.jsonl"),
            rows.map(|i| access("live", i, &format!("user-{:04}", 100 + i % 60))),
        );
        inputs.push(format!("api-access={path}"));
        if part % 8 == 0 {
            let rows = (part / 8..LIVE_GRANTS).step_by(LIVE_PARTS / 8);
            let path = lake.write(
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
    let policy = lake.dir.path().join("cluster.toml");
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
    assert_eq!(lake.counts(), expected);
    let out = lake.run(&["retention", "verify", "--user", VICTIM, "--now", NOW]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
