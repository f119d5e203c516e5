//! A small lake built from hand-written JSON lines through the backfill path
//! (as `auditlake ingest --input` does), plus derived `findings` rows, and an
//! object-level scanner written independently of the crate's own.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use auditlake_ingest::Backfill;
use auditlake_schemas::lake::WriteOptions;
use auditlake_schemas::{Lake, Topic};
use chrono::{DateTime, Utc};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

/// Users `user-0000` .. `user-0039` (fixed width: no id is a substring of another).
pub const USERS: usize = 40;
/// The user the tests erase.
pub const VICTIM: &str = "user-0007";
/// Days 2026-11-01 .. 2026-11-10.
pub const DAYS: usize = 10;

pub fn user(i: usize) -> String {
    format!("user-{:04}", i % USERS)
}

pub fn now(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

/// JSON lines of the four topics: (topic file name, lines).
pub fn topics() -> Vec<(&'static str, Vec<String>)> {
    let access = (0..2000)
        .map(|i| {
            format!(
                r#"{{"event_id":"req-{i:06}","event_time":"2026-11-{d:02}T{h:02}:15:30Z","app_id":"app-{a}","developer_id":"dev-{a}","user_id":"{u}","api":"order.list","required_scope":"order.read","token_scopes":["order.read"],"data_categories":["order"],"record_count":3,"status":200,"client_ip":"10.0.0.{ip}","client_region":"CN","token_id":"tok-{u}","latency_ms":12,"response_bytes":900}}"#,
                d = 1 + i % DAYS,
                h = i % 24,
                a = i % 4,
                u = user(i / 3),
                ip = i % 200,
            )
        })
        .collect();
    let grants = (0..200)
        .map(|i| {
            format!(
                r#"{{"event_id":"g-{i}","event_time":"2026-11-{d:02}T08:00:00Z","app_id":"app-{a}","user_id":"{u}","action":"grant","scopes":["order.read"]}}"#,
                d = 1 + i % DAYS,
                a = i % 4,
                u = user(i),
            )
        })
        .collect();
    let apps = (0..4)
        .map(|a| {
            format!(
                r#"{{"event_id":"app-ev-{a}","event_time":"2026-11-01T00:00:00Z","app_id":"app-{a}","developer_id":"dev-{a}","app_kind":"third_party","action":"register","declared_scopes":["order.read"],"declared_categories":["order"],"export_approved":false}}"#
            )
        })
        .collect();
    let mut deletions: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"event_id":"del-{i}","event_time":"2026-11-{d:02}T09:00:00Z","app_id":"app-{a}","user_id":"{u}","kind":"request","reason":"user_request"}}"#,
                d = 1 + i % DAYS,
                a = i % 4,
                u = user(i * 7),
            )
        })
        .collect();
    // Malformed: quarantined with their raw bytes, some naming the victim.
    deletions.push(format!(
        r#"{{"event_id":"bad-1","event_time":"2026-11-03T09:00:00Z","app_id":"app-1","user_id":"{VICTIM}","kind":"request""#
    ));
    deletions.push(format!(r#"{{"event_id":"bad-2","user_id":"{VICTIM}"}}"#));
    deletions.push(r#"{"event_id":"bad-3","user_id":"user-0008"}"#.to_string());
    deletions.push("not json at all".to_string());
    vec![
        ("api-access", access),
        ("grants", grants),
        ("apps", apps),
        ("deletions", deletions),
    ]
}

/// Builds the fixture lake: the four topics in several commits (small
/// flushes: several files per partition), then `findings` rows.
pub async fn build(lake: &Lake, dir: &Path) {
    let mut job = Backfill::new(lake.clone()).with_flush_rows(250);
    for (topic, lines) in topics() {
        let path = dir.join(format!("{topic}.jsonl"));
        write_lines(&path, &lines);
        job = job.with_input(topic.parse::<Topic>().unwrap(), path);
    }
    job.execute().await.unwrap();
    lake.append(
        "findings",
        vec![findings()],
        Vec::new(),
        &WriteOptions::default(),
    )
    .await
    .unwrap();
}

pub fn findings() -> RecordBatch {
    use arrow::array::{ListBuilder, StringArray, StringBuilder, TimestampMicrosecondArray};
    let n = 30;
    let users: Vec<String> = (0..n).map(|i| user(i * 3 + 1)).collect();
    let s = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let t0 = now("2026-11-05T00:00:00Z").timestamp_micros();
    let ts = |v: Option<i64>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(vec![v; n]).with_timezone("UTC"))
    };
    let mut ids = ListBuilder::new(StringBuilder::new()).with_field(arrow::datatypes::Field::new(
        "element",
        DataType::Utf8,
        true,
    ));
    for i in 0..n {
        ids.values().append_value(format!("req-{i:06}"));
        ids.append(true);
    }
    let cols: Vec<ArrayRef> = vec![
        s(vec![Some("scope_not_granted".into()); n]),
        s(vec![Some("6.5.1".into()); n]),
        s(vec![Some("high".into()); n]),
        s((0..n).map(|i| Some(format!("app-{}", i % 4))).collect()),
        s(vec![None; n]),
        s(users.into_iter().map(Some).collect()),
        s(vec![Some("order.read".into()); n]),
        s(vec![None; n]),
        ts(Some(t0)),
        ts(None),
        ts(None),
        ts(None),
        ts(None),
        Arc::new(ids.finish()),
        ts(Some(t0)),
        Arc::new(arrow::array::Date32Array::from(vec![
            auditlake_schemas::time::date32_of_micros(t0);
            n
        ])),
    ];
    RecordBatch::try_new(auditlake_schemas::tables::findings(), cols).unwrap()
}

/// Rows per user in each user table, read through the Delta snapshot.
pub async fn rows_by_user(lake: &Lake) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for table in ["api_access", "grants", "deletions", "findings"] {
        let Some(t) = lake.table(table).await.unwrap() else {
            continue;
        };
        let store = t.object_store();
        let paths: Vec<_> = t
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| f.object_store_path())
            .collect();
        for p in paths {
            let bytes = store.get(&p).await.unwrap().bytes().await.unwrap();
            for b in ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap()
            {
                let b = b.unwrap();
                let users =
                    arrow::compute::cast(b.column_by_name("user_id").unwrap(), &DataType::Utf8)
                        .unwrap();
                let users = users.as_string::<i32>();
                for i in 0..users.len() {
                    let u = if users.is_valid(i) {
                        users.value(i)
                    } else {
                        ""
                    };
                    *out.entry((table.to_string(), u.to_string())).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

/// Quarantine rows whose raw bytes contain `needle`.
pub async fn quarantine_mentions(lake: &Lake, needle: &str) -> usize {
    let Some(t) = lake.table("quarantine").await.unwrap() else {
        return 0;
    };
    let store = t.object_store();
    let paths: Vec<_> = t
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.object_store_path())
        .collect();
    let mut n = 0;
    for p in paths {
        let bytes = store.get(&p).await.unwrap().bytes().await.unwrap();
        for b in ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
        {
            let raw = b.unwrap().column_by_name("raw").unwrap().clone();
            let raw = raw.as_binary::<i32>();
            n += (0..raw.len())
                .filter(|i| {
                    raw.value(*i)
                        .windows(needle.len())
                        .any(|w| w == needle.as_bytes())
                })
                .count();
        }
    }
    n
}

/// Every object under the lake root whose bytes contain `needle`: the raw
/// bytes, and for Parquet every value of every column decoded to text.
pub async fn objects_containing(lake: &Lake, needle: &str) -> Vec<String> {
    let store = lake.object_store().unwrap();
    let listing: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut out = Vec::new();
    for meta in listing {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let raw_hit = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        let decoded_hit = bytes.starts_with(b"PAR1") && parquet_text(&bytes).contains(needle);
        if raw_hit || decoded_hit {
            out.push(meta.location.to_string());
        }
    }
    out
}

/// All values of a Parquet file as text (strings and binaries as UTF-8).
fn parquet_text(bytes: &bytes::Bytes) -> String {
    let mut text = String::new();
    for b in ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .unwrap()
        .build()
        .unwrap()
    {
        for col in b.unwrap().columns() {
            push_text(col.as_ref(), &mut text);
        }
    }
    text
}

fn push_text(a: &dyn Array, text: &mut String) {
    match a.data_type() {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let c = arrow::compute::cast(a, &DataType::LargeBinary).unwrap();
            for v in c.as_binary::<i64>().iter().flatten() {
                text.push_str(&String::from_utf8_lossy(v));
                text.push('\n');
            }
        }
        DataType::List(_) => push_text(a.as_list::<i32>().values().as_ref(), text),
        DataType::LargeList(_) => push_text(a.as_list::<i64>().values().as_ref(), text),
        DataType::Struct(_) => {
            for c in a.as_struct().columns() {
                push_text(c.as_ref(), text);
            }
        }
        DataType::Map(_, _) => {
            let m = a.as_map();
            push_text(m.keys().as_ref(), text);
            push_text(m.values().as_ref(), text);
        }
        _ => {
            let f = arrow::util::display::ArrayFormatter::try_new(a, &Default::default()).unwrap();
            for i in 0..a.len() {
                text.push_str(&f.value(i).to_string());
                text.push('\n');
            }
        }
    }
}

/// Every object path under the root with its size, sorted.
pub async fn listing(lake: &Lake) -> Vec<(String, u64)> {
    let store = lake.object_store().unwrap();
    let mut v: Vec<(String, u64)> = store
        .list(None)
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
        .unwrap();
    v.sort();
    v
}
