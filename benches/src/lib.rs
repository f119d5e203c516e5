//! # auditlake-benches
//!
//! Benchmarks of auditlake side by side with DuckDB, on the same machine and
//! data in one run. Two parts:
//!
//! - `benches/run.sh` (driver `benches/bench.py`): end to end, release binary vs
//!   DuckDB: ingest (JSON lines -> zstd Parquet, one core and all cores, bytes
//!   per event, peak RSS) and five analyst queries. Results go to `RESULTS.md`.
//! - `cargo bench -p auditlake-benches` (`benches/decode.rs`): the cost of one
//!   stage, decoding gateway JSON into Arrow, in events/s on one core.
//!
//! This crate's library only holds the sample events those benchmarks share.

/// A realistic `api-access` message (~520 bytes), varied by `i`.
pub fn access_event(i: u64) -> String {
    format!(
        concat!(
            r#"{{"event_id":"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}","event_time":"2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z","#,
            r#""app_id":"app_{:012x}","developer_id":"dev_{:08x}","user_id":"u_{:010}","api":"order.list","#,
            r#""required_scope":"order.read","token_scopes":["order.read","user.phone","user.address"],"#,
            r#""data_categories":["order","address","phone"],"record_count":{},"status":200,"#,
            r#""client_ip":"10.{}.{}.{}","client_region":"CN","token_id":"tok_{:016x}","latency_ms":{},"response_bytes":{}}}"#
        ),
        i.wrapping_mul(2654435761) as u32,
        i % 65536,
        i % 4096,
        (i * 7) % 4096,
        i.wrapping_mul(11400714819323198485) >> 16,
        1 + i % 28,
        i % 24,
        i % 60,
        (i / 60) % 60,
        i % 1000,
        i % 40,
        i % 25,
        i % 20_000,
        i % 50,
        i % 256,
        (i / 256) % 256,
        i % 7,
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        5 + i % 300,
        200 + i % 60_000,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn sample_events_decode() {
        use auditlake_schemas::{Decoder, RawMessage, Source, Topic};
        let mut d = Decoder::new(Topic::ApiAccess);
        for i in 0..100 {
            let e = super::access_event(i);
            assert!(
                d.push(RawMessage {
                    payload: e.as_bytes(),
                    source: Source::Kafka {
                        partition: 0,
                        offset: i as i64
                    }
                }),
                "{e}"
            );
        }
        assert_eq!(d.finish(0).unwrap().events.num_rows(), 100);
    }
}
