//! `gen` end to end through the library (no broker): files on disk,
//! `manifest.json` and `planted.json`, checked against the reference
//! evaluator and against the ingester's own decoder.

use std::collections::BTreeSet;
use std::path::Path;

use auditlake::r#gen::{GenArgs, Manifest, Planted, Topic, reference, run_to_files};

fn args(dir: &Path, events: u64) -> GenArgs {
    GenArgs {
        events,
        out: Some(dir.to_path_buf()),
        ..GenArgs::default()
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn files_manifest_and_planted_truth() {
    let dir = tempfile::tempdir().unwrap();
    let report = run_to_files(&args(dir.path(), 25_000)).unwrap();
    let manifest: Manifest = read_json(&dir.path().join("manifest.json"));
    let planted: Planted = read_json(&dir.path().join("planted.json"));
    assert_eq!(manifest, report.manifest);
    assert_eq!(planted, report.planted);
    assert_eq!(manifest.suggested_now, "2026-11-11T00:00:00.000Z");
    assert_eq!(planted.suggested_now, manifest.suggested_now);

    let eval = reference::evaluate_dir(dir.path(), &manifest.suggested_now).unwrap();
    for t in Topic::ALL {
        let m = manifest.topics[t.name()];
        let e = eval.stats[t.index()];
        assert_eq!(
            (e.events, e.duplicates, e.malformed),
            (m.distinct_events, m.duplicates, m.malformed),
            "{t}"
        );
        let text = std::fs::read(dir.path().join(&manifest.files[t.name()])).unwrap();
        let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        assert_eq!(
            lines.last(),
            Some(&&b""[..]),
            "{t}: file ends with a newline"
        );
        let lines = &lines[..lines.len() - 1];
        assert_eq!(
            lines.iter().filter(|l| l.is_empty()).count() as u64,
            m.blank,
            "{t}"
        );
        assert_eq!(
            lines.iter().filter(|l| !l.is_empty()).count() as u64,
            m.lines,
            "{t}"
        );
    }
    let want: BTreeSet<String> = planted.findings.iter().map(|f| f.key()).collect();
    let got: BTreeSet<String> = eval.findings.iter().map(|f| f.key()).collect();
    assert_eq!(want, got);
    let want: BTreeSet<(String, String)> = planted
        .obligations
        .iter()
        .map(|o| (o.source_event_id.clone(), o.state.clone()))
        .collect();
    let got: BTreeSet<(String, String)> = eval
        .obligations
        .iter()
        .map(|o| (o.source_event_id.clone(), o.state.to_string()))
        .collect();
    assert_eq!(want, got);
    for rule in [
        "scope_not_granted",
        "access_after_revocation",
        "access_after_termination",
        "undeclared_scope",
        "undeclared_category",
        "cross_border",
        "client_id_sharing",
        "bulk_harvest",
        "deletion_not_effective",
        "deletion_overdue",
        "unused_scope",
    ] {
        assert!(manifest.findings_by_rule[rule] >= 3, "{rule}");
    }
    for state in [
        "open",
        "fulfilled",
        "fulfilled_late",
        "overdue",
        "not_effective",
    ] {
        assert!(manifest.obligations_by_state[state] >= 3, "{state}");
    }
}

#[test]
fn same_arguments_give_identical_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_to_files(&args(a.path(), 8_000)).unwrap();
    run_to_files(&args(b.path(), 8_000)).unwrap();
    for name in [
        "api-access.jsonl",
        "grants.jsonl",
        "apps.jsonl",
        "deletions.jsonl",
        "manifest.json",
        "planted.json",
    ] {
        let (x, y) = (
            std::fs::read(a.path().join(name)).unwrap(),
            std::fs::read(b.path().join(name)).unwrap(),
        );
        assert!(x == y, "{name} differs");
    }
}

/// The ingester's decoder quarantines exactly the malformed lines.
#[test]
fn the_ingester_decoder_agrees() {
    use auditlake_schemas::{Decoder, RawMessage, Source};
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path(), 5_000);
    a.malformed = 2;
    let report = run_to_files(&a).unwrap();
    for t in Topic::ALL {
        let m = report.manifest.topics[t.name()];
        let text = std::fs::read(dir.path().join(t.file_name())).unwrap();
        let mut d = Decoder::new(t.name().parse().unwrap());
        let (mut good, mut bad) = (0u64, 0u64);
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let ok = d.push(RawMessage {
                payload: line,
                source: Source::File {
                    path: "x",
                    line: i as u64 + 1,
                },
            });
            if ok {
                good += 1;
            } else {
                bad += 1;
            }
            assert_eq!(
                ok,
                reference::is_well_formed(t, line),
                "{t}: {}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(bad, m.malformed, "{t}");
        assert_eq!(good, m.distinct_events + m.duplicates, "{t}");
    }
}

#[test]
fn out_dir_is_required_for_files() {
    let err = run_to_files(&GenArgs::default()).unwrap_err().to_string();
    assert!(err.contains("--out"), "{err}");
}
