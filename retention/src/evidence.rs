//! The evidence table `retention_evidence`: one append-only record per sweep,
//! erase and verify, each carrying the SHA-256 of the one before.
//!
//! ```text
//! record_k.json = canonical JSON of EvidenceRecord { seq: k, prev_sha256: sha_{k-1}, .. }
//! sha_k         = SHA-256(record_k.json)
//! row           = broken-out columns for SQL + `record` (the JSON) + `sha256`
//! ```
//!
//! Appends go through the Delta application transaction
//! `auditlake-retention/evidence`, a compare-and-swap on the last sequence
//! number: two jobs cannot both append record k (the loser re-reads and
//! appends k+1), and the transaction's version in the log pins the newest
//! record, so deleting it shows. A record never holds a user id: subjects and
//! predicates name users by keyed hash.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, SecondsFormat, Utc};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};
use auditlake_schemas::lake::{TxnUpdate, WriteOptions};
use auditlake_schemas::tables::{PARTITION_COLUMN, timestamp_type};
use auditlake_schemas::time::date32_of_micros;
use auditlake_schemas::{Error as LakeError, Lake};

/// The evidence table.
pub const EVIDENCE: &str = "retention_evidence";
/// The application transaction that sequences evidence records.
pub const EVIDENCE_TXN: &str = "auditlake-retention/evidence";
const APPEND_ATTEMPTS: u32 = 10;

/// An object removed from the lake, as evidence lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemovedObject {
    /// Path under the lake root.
    pub path: String,
    /// Bytes.
    pub bytes: u64,
    /// SHA-256 of the content before deletion (hex).
    pub sha256: String,
    /// Why it went: `rewritten`, `expired`, `tombstoned`, `orphan`, `log`.
    pub why: String,
}

/// One check run, and its result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    /// Check name, e.g. `erased_user_bytes`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was checked (counts, scope).
    pub detail: String,
    /// Each failing object and why.
    pub failures: Vec<String>,
}

/// One evidence record (the JSON that is hashed).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvidenceRecord {
    /// Position in the chain, from 0.
    pub seq: i64,
    /// `sweep`, `erase` or `verify`.
    pub kind: String,
    /// The operation's time (`--now`), RFC 3339.
    pub run_at: String,
    /// The wall-clock time the operation ran, RFC 3339 (`run_at` is the
    /// time retention was judged at, which `--now` may set to the past).
    /// Absent from records written before it existed, which keeps their
    /// JSON, and so the chain's hashes, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
    /// `ok` or `failed`.
    pub outcome: String,
    /// SHA-256 of the policy file, if one was used.
    pub policy_sha256: Option<String>,
    /// Whom it was about: `user:<keyed hash>` (optionally `app:<id>`), or null.
    pub subject: Option<String>,
    /// The deletion criteria, without plaintext user ids.
    pub predicates: Vec<String>,
    /// Objects deleted from the store.
    pub objects_removed: Vec<RemovedObject>,
    /// Rows removed per table.
    pub rows_removed: BTreeMap<String, u64>,
    /// Checks run and their results.
    pub checks: Vec<Check>,
    /// Operation metrics (free form).
    pub metrics: serde_json::Value,
    /// SHA-256 of the previous record's JSON (null for the first).
    pub prev_sha256: Option<String>,
}

impl EvidenceRecord {
    /// A record of `kind` at `now`; sequence and chain are set on append.
    pub fn new(kind: &str, now: DateTime<Utc>) -> Self {
        Self {
            seq: 0,
            kind: kind.to_string(),
            run_at: timestamp(now),
            recorded_at: None,
            outcome: "ok".to_string(),
            policy_sha256: None,
            subject: None,
            predicates: Vec::new(),
            objects_removed: Vec::new(),
            rows_removed: BTreeMap::new(),
            checks: Vec::new(),
            metrics: serde_json::Value::Null,
            prev_sha256: None,
        }
    }

    /// The canonical JSON and its SHA-256.
    pub fn seal(&self) -> Result<(String, String)> {
        let json = serde_json::to_string(self)
            .map_err(|e| Error::Internal(format!("evidence JSON: {e}")))?;
        let sha = hex::encode(Sha256::digest(json.as_bytes()));
        Ok((json, sha))
    }
}

/// A time as evidence records write it: RFC 3339, microseconds, `Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Schema of `retention_evidence`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("run_at", timestamp_type(), false),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("policy_sha256", DataType::Utf8, true),
        Field::new("subject", DataType::Utf8, true),
        Field::new("objects_removed", DataType::Int64, false),
        Field::new("bytes_removed", DataType::Int64, false),
        Field::new("rows_removed", DataType::Int64, false),
        Field::new("checks_failed", DataType::Int64, false),
        Field::new("passed", DataType::Boolean, false),
        Field::new("prev_sha256", DataType::Utf8, true),
        Field::new("sha256", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
        Field::new(PARTITION_COLUMN, DataType::Date32, false),
    ]))
}

fn row(record: &EvidenceRecord, json: &str, sha: &str) -> Result<RecordBatch> {
    let run_at = DateTime::parse_from_rfc3339(&record.run_at)
        .map_err(|e| Error::Internal(format!("evidence run_at: {e}")))?
        .timestamp_micros();
    let s = |v: Option<&str>| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let i = |v: i64| -> ArrayRef { Arc::new(Int64Array::from(vec![v])) };
    let failed = record.checks.iter().filter(|c| !c.passed).count() as i64;
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            i(record.seq),
            s(Some(&record.kind)),
            Arc::new(TimestampMicrosecondArray::from(vec![run_at]).with_timezone("UTC")),
            s(Some(&record.outcome)),
            s(record.policy_sha256.as_deref()),
            s(record.subject.as_deref()),
            i(record.objects_removed.len() as i64),
            i(record.objects_removed.iter().map(|o| o.bytes as i64).sum()),
            i(record.rows_removed.values().map(|v| *v as i64).sum()),
            i(failed),
            Arc::new(BooleanArray::from(vec![failed == 0])),
            s(record.prev_sha256.as_deref()),
            s(Some(sha)),
            s(Some(json)),
            Arc::new(Date32Array::from(vec![date32_of_micros(run_at)])),
        ],
    )?)
}

/// A stored record: its JSON and hash as found in the table.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// Sequence number column.
    pub seq: i64,
    /// `sha256` column.
    pub sha256: String,
    /// `prev_sha256` column.
    pub prev_sha256: Option<String>,
    /// `record` column (the hashed JSON).
    pub json: String,
}

/// Every evidence record, sorted by sequence number, and the table's
/// sequencing transaction version (the newest record's seq).
pub async fn read(lake: &Lake) -> Result<(Vec<StoredRecord>, Option<i64>)> {
    let Some(table) = lake.table(EVIDENCE).await? else {
        return Ok((Vec::new(), None));
    };
    let txn = lake.txn_version(&table, EVIDENCE_TXN).await?;
    let files = crate::files::data_files(&table, EVIDENCE)?;
    let store = table.object_store();
    let mut out = Vec::new();
    for f in files {
        let location =
            object_store::path::Path::parse(&f.path).unwrap_or_else(|_| f.path.as_str().into());
        let bytes = store.get(&location).await?.bytes().await?;
        for b in crate::files::decode(&f.path, bytes, None)? {
            let col = |n: &str| {
                b.column_by_name(n)
                    .cloned()
                    .ok_or_else(|| Error::Internal(format!("{EVIDENCE}: no column {n}")))
            };
            let seq = col("seq")?;
            let seq = seq.as_primitive::<arrow::datatypes::Int64Type>();
            let (sha, prev, json) = (col("sha256")?, col("prev_sha256")?, col("record")?);
            let (sha, prev, json) = (
                sha.as_string::<i32>(),
                prev.as_string::<i32>(),
                json.as_string::<i32>(),
            );
            for r in 0..b.num_rows() {
                out.push(StoredRecord {
                    seq: seq.value(r),
                    sha256: sha.value(r).to_string(),
                    prev_sha256: prev.is_valid(r).then(|| prev.value(r).to_string()),
                    json: json.value(r).to_string(),
                });
            }
        }
    }
    out.sort_by_key(|r| r.seq);
    Ok((out, txn))
}

/// Appends `record` at the end of the chain (setting its `seq` and
/// `prev_sha256`); returns the sealed record's hash. Retries when another
/// job appended first.
pub async fn append(lake: &Lake, mut record: EvidenceRecord) -> Result<(i64, String)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (records, txn) = read(lake).await?;
        let last = records.last();
        record.seq = last.map_or(0, |r| r.seq + 1);
        record.prev_sha256 = last.map(|r| r.sha256.clone());
        let (json, sha) = record.seal()?;
        let batch = row(&record, &json, &sha)?;
        let update = TxnUpdate {
            app_id: EVIDENCE_TXN.to_string(),
            from: txn,
            to: record.seq,
        };
        match lake
            .append(
                EVIDENCE,
                vec![batch],
                vec![update],
                &WriteOptions::default(),
            )
            .await
        {
            Ok(out) if out.version.is_some() => return Ok((record.seq, sha)),
            // "Already committed": someone else's record took this seq, or
            // ours did on an attempt whose acknowledgement was lost.
            Ok(_) => {
                let (records, _) = read(lake).await?;
                if records.iter().any(|r| r.sha256 == sha) {
                    return Ok((record.seq, sha));
                }
            }
            Err(LakeError::Fenced { .. }) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => return Err(e.into()),
        }
        if attempt >= APPEND_ATTEMPTS {
            return Err(Error::Internal(format!(
                "could not append evidence after {attempt} attempts (concurrent retention jobs?)"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
    }
}

/// Checks the chain: sequence numbers 0..n without gaps or repeats, each
/// record's JSON hashing to its `sha256`, each `prev_sha256` (column and JSON)
/// equal to the previous `sha256`, and the sequencing transaction at the last
/// seq. Returns the failures (empty: intact).
pub fn check_chain(records: &[StoredRecord], txn: Option<i64>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut prev: Option<&str> = None;
    for (i, r) in records.iter().enumerate() {
        if r.seq != i as i64 {
            failures.push(format!(
                "record at position {i} has seq {} (a record is missing or repeated)",
                r.seq
            ));
        }
        let sha = hex::encode(Sha256::digest(r.json.as_bytes()));
        if sha != r.sha256 {
            failures.push(format!(
                "record {}: its JSON hashes to {sha}, not the stored {}",
                r.seq, r.sha256
            ));
        }
        match serde_json::from_str::<EvidenceRecord>(&r.json) {
            Ok(rec) => {
                if rec.seq != r.seq || rec.prev_sha256 != r.prev_sha256 {
                    failures.push(format!(
                        "record {}: the JSON disagrees with the columns",
                        r.seq
                    ));
                }
            }
            Err(e) => failures.push(format!("record {}: unreadable JSON: {e}", r.seq)),
        }
        if r.prev_sha256.as_deref() != prev {
            failures.push(format!(
                "record {}: prev_sha256 {:?} is not the previous record's {:?}",
                r.seq, r.prev_sha256, prev
            ));
        }
        prev = Some(&r.sha256);
    }
    let last = records.last().map(|r| r.seq);
    if txn != last {
        failures.push(format!(
            "the log's evidence transaction is at {txn:?} but the newest record is {last:?} (records deleted?)"
        ));
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chain_appends_and_detects_tampering() {
        let lake = Lake::open("memory:///lake").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z")
            .unwrap()
            .to_utc();
        for kind in ["erase", "sweep", "verify"] {
            append(&lake, EvidenceRecord::new(kind, now)).await.unwrap();
        }
        let (records, txn) = read(&lake).await.unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(txn, Some(2));
        assert!(check_chain(&records, txn).is_empty());

        let mut tampered = records.clone();
        tampered[1].json = tampered[1].json.replace("sweep", "swept");
        assert_eq!(check_chain(&tampered, txn).len(), 1);
        let mut gap = records.clone();
        gap.remove(1);
        assert!(!check_chain(&gap, txn).is_empty());
        assert!(!check_chain(&records[..2], txn).is_empty());
    }
}
