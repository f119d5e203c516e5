//! Decoding cost: gateway JSON -> Arrow, events/s on one core.
//! `cargo bench -p auditlake-benches --bench decode`

use std::time::Instant;

use auditlake_benches::access_event;
use auditlake_schemas::{Decoder, RawMessage, Source, Topic};

fn main() {
    let n: u64 = std::env::var("DECODE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let events: Vec<String> = (0..n).map(access_event).collect();
    let bytes: usize = events.iter().map(String::len).sum();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut d = Decoder::new(Topic::ApiAccess);
        let t0 = Instant::now();
        let mut rows = 0;
        for (i, e) in events.iter().enumerate() {
            d.push(RawMessage {
                payload: e.as_bytes(),
                source: Source::Kafka {
                    partition: 0,
                    offset: i as i64,
                },
            });
            if d.len() == 65_536 {
                rows += d.finish(0).expect("finish").events.num_rows();
            }
        }
        rows += d.finish(0).expect("finish").events.num_rows();
        assert_eq!(rows as u64, n);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "decode: {n} events ({} B avg) in {best:.3} s: {:.0} events/s, {:.0} MB/s",
        bytes as u64 / n,
        n as f64 / best,
        bytes as f64 / best / 1e6
    );
}
