//! Helpers for tests, here and in the crates that build on this one (their
//! dev-dependencies enable the `test-util` feature).

use arrow::array::RecordBatch;

use crate::{Decoder, RawMessage, Source, Topic};

/// The events of `payloads`, messages of `topic` that must all decode
/// (panics naming the first that does not).
pub fn events<P: AsRef<[u8]>>(topic: Topic, payloads: impl IntoIterator<Item = P>) -> RecordBatch {
    let mut d = Decoder::new(topic);
    for payload in payloads {
        let payload = payload.as_ref();
        assert!(
            d.push(RawMessage {
                payload,
                source: Source::Kafka {
                    partition: 0,
                    offset: 0
                },
            }),
            "a {topic} message does not decode: {}",
            String::from_utf8_lossy(payload)
        );
    }
    d.finish(0).expect("decoded events form a batch").events
}
