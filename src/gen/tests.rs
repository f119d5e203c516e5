use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::reference::{self, Evaluation};
use super::*;

fn small(seed: u64) -> GenArgs {
    GenArgs {
        seed,
        events: 12_000,
        ..GenArgs::default()
    }
}

fn run(args: &GenArgs) -> (GenReport, MemorySink) {
    let mut sink = MemorySink::default();
    let report = generate(args, &mut sink).expect("generate");
    (report, sink)
}

fn evaluate(sink: &MemorySink, report: &GenReport) -> Evaluation {
    let files: Vec<Vec<u8>> = Topic::ALL.iter().map(|t| sink.file(*t)).collect();
    let now = chrono::DateTime::parse_from_rfc3339(&report.manifest.suggested_now)
        .unwrap()
        .timestamp_millis();
    reference::evaluate([&files[0], &files[1], &files[2], &files[3]], now)
}

/// planted.json must equal what the SPEC semantics give on the files.
fn assert_truth(report: &GenReport, eval: &Evaluation) {
    let planted: BTreeSet<String> = report
        .planted
        .findings
        .iter()
        .map(PlantedFinding::key)
        .collect();
    assert_eq!(
        planted.len(),
        report.planted.findings.len(),
        "duplicate planted findings"
    );
    let found: BTreeSet<String> = eval.findings.iter().map(|f| f.key()).collect();
    let missing: Vec<_> = planted.difference(&found).collect();
    let extra: Vec<_> = found.difference(&planted).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "planted but not found: {missing:#?}\nfound but not planted: {extra:#?}"
    );
    // bulk_harvest evidence: every data access of the app in the hour.
    for f in report
        .planted
        .findings
        .iter()
        .filter(|f| f.rule_id == "bulk_harvest")
    {
        let r = eval.findings.iter().find(|r| r.key() == f.key()).unwrap();
        let mut a = r.event_ids.clone();
        a.sort();
        assert_eq!(a, f.event_ids);
    }
    let obl = |app: &str, user: &Option<String>, reason: &str, src: &str| {
        format!("{app}|{user:?}|{reason}|{src}")
    };
    let planted: BTreeMap<String, (String, String, Option<String>)> = report
        .planted
        .obligations
        .iter()
        .map(|o| {
            (
                obl(&o.app_id, &o.user_id, &o.reason, &o.source_event_id),
                (o.state.clone(), o.due_at.clone(), o.fulfilled_at.clone()),
            )
        })
        .collect();
    let found: BTreeMap<String, (String, String, Option<String>)> = eval
        .obligations
        .iter()
        .map(|o| {
            (
                obl(&o.app_id, &o.user_id, &o.reason, &o.source_event_id),
                (
                    o.state.to_string(),
                    o.due_at.clone(),
                    o.fulfilled_at.clone(),
                ),
            )
        })
        .collect();
    assert_eq!(planted, found);
    // The clean edge cases are in no finding.
    let flagged: BTreeSet<&String> = eval.findings.iter().flat_map(|f| &f.event_ids).collect();
    let sources: BTreeSet<&String> = eval
        .obligations
        .iter()
        .map(|o| &o.source_event_id)
        .collect();
    for c in &report.planted.expected_clean {
        assert!(!flagged.contains(&c.event_id), "clean edge flagged: {c:?}");
        if c.topic != Topic::ApiAccess && c.topic != Topic::Deletions {
            assert!(
                !sources.contains(&c.event_id),
                "clean edge made an obligation: {c:?}"
            );
        }
    }
}

#[test]
fn same_args_same_bytes() {
    let (r1, a) = run(&small(7));
    let (r2, b) = run(&small(7));
    for t in Topic::ALL {
        assert!(a.file(t) == b.file(t), "{t} differs between two runs");
    }
    assert_eq!(r1.planted, r2.planted);
    assert_eq!(r1.manifest, r2.manifest);
    let (_, c) = run(&small(8));
    assert!(
        a.file(Topic::ApiAccess) != c.file(Topic::ApiAccess),
        "the seed changes the output"
    );
}

#[test]
fn manifest_counts_match_the_lines() {
    let args = GenArgs {
        malformed: 3,
        dup_rate: 0.05,
        ..small(3)
    };
    let (report, sink) = run(&args);
    let eval = evaluate(&sink, &report);
    for t in Topic::ALL {
        let m = report.manifest.topics[t.name()];
        let lines = &sink.lines[t.index()];
        let blank = lines.iter().filter(|(_, l)| l.is_empty()).count() as u64;
        assert_eq!(m.blank, blank, "{t}");
        assert_eq!(m.lines, lines.len() as u64 - blank, "{t}");
        assert_eq!(
            m.lines,
            m.distinct_events + m.duplicates + m.malformed,
            "{t}"
        );
        let e = eval.stats[t.index()];
        assert_eq!(
            (e.events, e.duplicates, e.malformed, e.blank),
            (m.distinct_events, m.duplicates, m.malformed, 0),
            "{t}"
        );
        assert_eq!(m.malformed, 5 * 3, "{t}");
        assert!(m.duplicates > 0, "{t}");
        // Malformed lines are all different; retries are exact copies of a line
        // at most MAX_RETRY_DELAY_LINES earlier.
        let mut pos: HashMap<&[u8], usize> = HashMap::new();
        let mut dups = 0;
        for (i, (_, l)) in lines.iter().enumerate() {
            if l.is_empty() {
                continue;
            }
            if let Some(j) = pos.get(l.as_slice()) {
                assert!(
                    i - j <= MAX_RETRY_DELAY_LINES as usize + 5 * 3 + 2,
                    "{t}: retry too late"
                );
                dups += 1;
            } else {
                pos.insert(l, i);
            }
        }
        assert_eq!(dups, m.duplicates, "{t}");
    }
    assert_eq!(
        report.manifest.topics["api-access"].distinct_events,
        args.events
    );
}

#[test]
fn lines_are_in_time_order_within_the_period() {
    let (report, sink) = run(&small(5));
    let start = &report.manifest.start;
    let end = &report.manifest.end;
    for t in Topic::ALL {
        let mut seen = BTreeSet::new();
        let mut last = String::new();
        for (_, l) in &sink.lines[t.index()] {
            if !reference::is_well_formed(t, l) {
                continue;
            }
            let o: serde_json::Value = serde_json::from_slice(l).unwrap();
            let (id, time) = (
                o["event_id"].as_str().unwrap(),
                o["event_time"].as_str().unwrap(),
            );
            if !seen.insert(id.to_string()) {
                continue; // a retry
            }
            assert!(time >= last.as_str(), "{t}: {time} after {last}");
            assert!(time >= start.as_str() && time < end.as_str(), "{t}: {time}");
            last = time.to_string();
        }
    }
}

#[test]
fn planted_truth_matches_the_reference_evaluator() {
    for args in [
        GenArgs {
            events: 20_000,
            ..GenArgs::default()
        },
        GenArgs {
            seed: 99,
            users: 400,
            apps: 16,
            days: 6,
            events: 6_000,
            dup_rate: 0.1,
            malformed: 2,
            ..GenArgs::default()
        },
        GenArgs {
            seed: 4,
            users: 900,
            apps: 25,
            days: 8,
            events: 9_000,
            start: parse_start("2027-02-27T05:30:00+08:00").unwrap(),
            ..GenArgs::default()
        },
    ] {
        let (report, sink) = run(&args);
        let eval = evaluate(&sink, &report);
        assert_truth(&report, &eval);
    }
}

#[test]
fn every_rule_and_every_state_is_planted() {
    let (report, _) = run(&small(1));
    for (rule, n) in &report.manifest.findings_by_rule {
        assert!(*n >= 3, "{rule}: {n}");
    }
    for (state, n) in &report.manifest.obligations_by_state {
        assert!(*n >= 3, "{state}: {n}");
    }
    assert!(
        report
            .planted
            .obligations
            .iter()
            .any(|o| o.user_id.is_none() && o.state == "not_effective")
    );
    assert!(report.planted.expected_clean.len() >= 20);
}

#[test]
fn rejects_too_small_worlds() {
    let mut sink = CountingSink::default();
    for args in [
        GenArgs {
            users: 100,
            ..small(1)
        },
        GenArgs {
            apps: 10,
            ..small(1)
        },
        GenArgs {
            days: 3,
            ..small(1)
        },
        GenArgs {
            events: 500,
            ..small(1)
        },
    ] {
        assert!(generate(&args, &mut sink).is_err(), "{args:?}");
    }
    assert!(parse_start("2026-11-01").is_ok());
    assert!(parse_start("2026-11-01T00:00:00").is_err());
}

/// Many seeds and shapes: generation's own checks and the reference must agree.
#[test]
#[ignore = "slow; run with --ignored"]
fn many_seeds_and_shapes() {
    for seed in 0..40u64 {
        let days = [6, 7, 9, 14, 31, 40][seed as usize % 6];
        let args = GenArgs {
            seed,
            users: [400, 700, 2000, 5000][seed as usize % 4],
            apps: [16, 17, 23, 40, 90][seed as usize % 5],
            days,
            events: 3_000 + 400 * seed,
            dup_rate: [0.0, 0.02, 0.3][seed as usize % 3],
            malformed: (seed % 3) as u32,
            ..GenArgs::default()
        };
        let (report, sink) = run(&args);
        let eval = evaluate(&sink, &report);
        assert_truth(&report, &eval);
        eprintln!(
            "seed {seed}: ok {:?}",
            report
                .manifest
                .findings_by_rule
                .values()
                .collect::<Vec<_>>()
        );
    }
}
