//! Arrow schemas of every lake table.
//!
//! Every table carries a `date` column (the UTC date of the row's own time) that
//! is the Hive-style partition column (`date=2026-11-20/`). Times are UTC
//! microsecond timestamps; lists are lists of nullable strings.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Table of `api-access` events.
pub const API_ACCESS: &str = "api_access";
/// Table of `grants` events.
pub const GRANTS: &str = "grants";
/// Table of `apps` events.
pub const APPS: &str = "apps";
/// Table of `deletions` events.
pub const DELETIONS: &str = "deletions";
/// Table of messages that could not be decoded.
pub const QUARANTINE: &str = "quarantine";
/// Table of detection findings (replaced by every `detect`).
pub const FINDINGS: &str = "findings";
/// Table of deletion obligations (replaced by every `detect`).
pub const OBLIGATIONS: &str = "obligations";

/// The partition column of every table.
pub const PARTITION_COLUMN: &str = "date";

/// The tables written by ingest and detection, by name (retention adds its own).
pub const TABLES: [&str; 7] = [
    API_ACCESS,
    GRANTS,
    APPS,
    DELETIONS,
    QUARANTINE,
    FINDINGS,
    OBLIGATIONS,
];

/// UTC microsecond timestamp, the type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// List of nullable strings (scopes, categories, event ids).
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

fn s(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, timestamp_type(), nullable)
}
fn list(name: &str) -> Field {
    Field::new(name, string_list_type(), true)
}
fn date() -> Field {
    Field::new(PARTITION_COLUMN, DataType::Date32, false)
}

/// `api_access`: one row per API call (SPEC section 2).
pub fn api_access() -> SchemaRef {
    Arc::new(Schema::new(vec![
        s("event_id", false),
        ts("event_time", false),
        s("app_id", false),
        s("developer_id", false),
        s("user_id", true),
        s("api", false),
        s("required_scope", true),
        list("token_scopes"),
        list("data_categories"),
        Field::new("record_count", DataType::Int64, true),
        Field::new("status", DataType::Int32, false),
        s("client_ip", true),
        s("client_region", true),
        s("token_id", true),
        Field::new("latency_ms", DataType::Int32, true),
        Field::new("response_bytes", DataType::Int64, true),
        date(),
    ]))
}

/// `grants`: grant / revoke / unsubscribe of an app by a user.
pub fn grants() -> SchemaRef {
    Arc::new(Schema::new(vec![
        s("event_id", false),
        ts("event_time", false),
        s("app_id", false),
        s("user_id", false),
        s("action", false),
        list("scopes"),
        date(),
    ]))
}

/// `apps`: register / update / terminate of an app and its declarations.
pub fn apps() -> SchemaRef {
    Arc::new(Schema::new(vec![
        s("event_id", false),
        ts("event_time", false),
        s("app_id", false),
        s("developer_id", true),
        s("app_kind", true),
        s("action", false),
        list("declared_scopes"),
        list("declared_categories"),
        Field::new("export_approved", DataType::Boolean, true),
        date(),
    ]))
}

/// `deletions`: deletion requests and receipts; `user_id` null means every user.
pub fn deletions() -> SchemaRef {
    Arc::new(Schema::new(vec![
        s("event_id", false),
        ts("event_time", false),
        s("app_id", false),
        s("user_id", true),
        s("kind", false),
        s("reason", true),
        date(),
    ]))
}

/// `quarantine`: a message that could not be decoded, kept with its raw bytes.
///
/// `source_id` identifies the message's origin (`kafka:<topic>:<partition>:<offset>`
/// or `file:<topic>:<path>:<line>`) and is the table's dedupe key, so a replay or a
/// rerun backfill quarantines a message once.
pub fn quarantine() -> SchemaRef {
    Arc::new(Schema::new(vec![
        s("source_id", false),
        s("topic", false),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, true),
        s("file", true),
        Field::new("line", DataType::Int64, true),
        Field::new("raw", DataType::Binary, false),
        s("reason", false),
        ts("ingested_at", false),
        date(),
    ]))
}

/// `findings`: one row per rule violation (SPEC section 6 lists the fields).
pub fn findings() -> SchemaRef {
    Arc::new(Schema::new(vec![
        s("rule_id", false),
        s("clause", false),
        s("severity", false),
        s("app_id", true),
        s("developer_id", true),
        s("user_id", true),
        s("scope", true),
        s("reason", true),
        ts("event_time", true),
        ts("window_start", true),
        ts("window_end", true),
        ts("created_at", true),
        ts("due_at", true),
        list("event_ids"),
        ts("evaluated_at", false),
        date(),
    ]))
}

/// `obligations`: deletion obligations and their state at the evaluation time.
pub fn obligations() -> SchemaRef {
    Arc::new(Schema::new(vec![
        s("app_id", false),
        s("user_id", true),
        s("reason", false),
        ts("created_at", false),
        ts("due_at", false),
        ts("fulfilled_at", true),
        s("state", false),
        s("source_event_id", false),
        ts("evaluated_at", false),
        date(),
    ]))
}

/// The schema of a table by name.
pub fn schema_of(table: &str) -> Option<SchemaRef> {
    Some(match table {
        API_ACCESS => api_access(),
        GRANTS => grants(),
        APPS => apps(),
        DELETIONS => deletions(),
        QUARANTINE => quarantine(),
        FINDINGS => findings(),
        OBLIGATIONS => obligations(),
        _ => return None,
    })
}

/// The column that identifies a row for dedupe, if the table has one.
pub fn dedupe_key(table: &str) -> Option<&'static str> {
    match table {
        API_ACCESS | GRANTS | APPS | DELETIONS => Some("event_id"),
        QUARANTINE => Some("source_id"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_partitioned_by_date() {
        for t in TABLES {
            let schema = schema_of(t).unwrap();
            let f = schema.field_with_name(PARTITION_COLUMN).unwrap();
            assert_eq!(f.data_type(), &DataType::Date32, "{t}");
        }
    }
}
