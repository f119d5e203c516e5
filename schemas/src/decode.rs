//! Raw messages -> one Arrow batch of events plus quarantine rows.
//!
//! ```text
//! payload bytes --sonic-rs (serde, borrowed strings)--> typed row --> Arrow builders --> RecordBatch
//!        \--- not JSON / not an object / missing field / wrong type / bad time --> quarantine row
//! ```
//!
//! Each message is parsed straight into a typed row that borrows its strings from
//! the payload, then appended to column builders: no `serde_json::Value` trees.
//! A message that fails is re-parsed on the slow path only to name the failing
//! field, and becomes a quarantine row with its raw bytes and coordinates. A bad
//! message never stops the batch. Unknown fields are ignored.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Int32Builder,
    Int64Builder, ListBuilder, PrimitiveBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, SchemaRef};
use serde::Deserialize;
use smallvec::SmallVec;

use crate::flat::Flat;
use crate::time::{date32_of_micros, parse_rfc3339_micros};
use crate::{Result, Topic, tables};

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A Kafka record.
    Kafka { partition: i32, offset: i64 },
    /// A line of a JSON-lines file (1-based).
    File { path: &'a str, line: u64 },
}

impl Source<'_> {
    /// The quarantine dedupe key of a message from this source, read from
    /// the Kafka topic `kafka_topic` (the topic's own name by default): a
    /// record's coordinates are only unique within its Kafka topic.
    pub fn source_id(&self, topic: Topic, kafka_topic: Option<&str>) -> String {
        match self {
            Source::Kafka { partition, offset } => {
                let name = kafka_topic.unwrap_or(topic.name());
                format!("kafka:{name}:{partition}:{offset}")
            }
            Source::File { path, line } => format!("file:{topic}:{path}:{line}"),
        }
    }
}

/// One message to decode.
#[derive(Debug, Clone, Copy)]
pub struct RawMessage<'a> {
    /// The message value, one JSON object (UTF-8).
    pub payload: &'a [u8],
    /// Its coordinates, kept with it if it is quarantined.
    pub source: Source<'a>,
}

/// The output of [`Decoder::finish`].
#[derive(Debug)]
pub struct Decoded {
    /// Well-formed events in the topic's table schema (with the `date` column).
    pub events: RecordBatch,
    /// Malformed messages in the `quarantine` schema.
    pub quarantine: RecordBatch,
}

impl Decoded {
    /// Moves the line numbers of quarantined file lines `by` lines on, and
    /// their source ids with them: a file decoded in chunks on several
    /// threads numbers each chunk's lines from 1, then places the chunk.
    pub fn shift_file_lines(&mut self, topic: Topic, by: u64) -> Result<()> {
        use arrow::array::AsArray;
        use arrow::datatypes::Int64Type;
        if by == 0 || self.quarantine.num_rows() == 0 {
            return Ok(());
        }
        let q = &self.quarantine;
        let schema = q.schema();
        let (id_at, file_at, line_at) = (
            schema.index_of("source_id")?,
            schema.index_of("file")?,
            schema.index_of("line")?,
        );
        let (ids, files) = (
            q.column(id_at).as_string::<i32>(),
            q.column(file_at).as_string::<i32>(),
        );
        let lines = q.column(line_at).as_primitive::<Int64Type>();
        let mut new_ids = StringBuilder::with_capacity(q.num_rows(), ids.value_data().len());
        let mut new_lines = Int64Builder::with_capacity(q.num_rows());
        for r in 0..q.num_rows() {
            if files.is_valid(r) && lines.is_valid(r) {
                let line = lines.value(r) as u64 + by;
                let source = Source::File {
                    path: files.value(r),
                    line,
                };
                new_ids.append_value(source.source_id(topic, None));
                new_lines.append_value(line as i64);
            } else {
                new_ids.append_value(ids.value(r));
                new_lines.append_option(lines.is_valid(r).then(|| lines.value(r)));
            }
        }
        let mut columns = q.columns().to_vec();
        columns[id_at] = Arc::new(new_ids.finish());
        columns[line_at] = Arc::new(new_lines.finish());
        self.quarantine = RecordBatch::try_new(schema, columns)?;
        Ok(())
    }
}

/// Decodes raw messages of one topic into Arrow, quarantining the bad ones.
///
/// ```
/// use auditlake_schemas::{Decoder, RawMessage, Source, Topic};
/// let mut d = Decoder::new(Topic::Grants);
/// let good = br#"{"event_id":"e1","event_time":"2026-11-20T08:00:00Z","app_id":"a","user_id":"u","action":"grant","scopes":["order.read"]}"#;
/// d.push(RawMessage { payload: good, source: Source::Kafka { partition: 0, offset: 7 } });
/// d.push(RawMessage { payload: b"{not json", source: Source::Kafka { partition: 0, offset: 8 } });
/// let out = d.finish(0).unwrap();
/// assert_eq!(out.events.num_rows(), 1);
/// assert_eq!(out.quarantine.num_rows(), 1);
/// ```
pub struct Decoder {
    topic: Topic,
    /// The Kafka topic read, when not named after `topic`.
    kafka_topic: Option<String>,
    rows: Box<dyn TopicRows + Send>,
    quarantine: QuarantineBuilder,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("topic", &self.topic)
            .field("events", &self.rows.len())
            .field("quarantined", &self.quarantine.len())
            .finish()
    }
}

impl Decoder {
    /// A decoder for `topic`.
    pub fn new(topic: Topic) -> Self {
        let rows: Box<dyn TopicRows + Send> = match topic {
            Topic::ApiAccess => Box::new(AccessRows::default()),
            Topic::Grants => Box::new(GrantRows::default()),
            Topic::Apps => Box::new(AppRows::default()),
            Topic::Deletions => Box::new(DeletionRows::default()),
        };
        Self {
            topic,
            kafka_topic: None,
            rows,
            quarantine: QuarantineBuilder::default(),
        }
    }

    /// Messages come from the Kafka topic `name`: quarantined records are
    /// keyed by it, so records of another Kafka topic mapped to the same
    /// topic later (at the same partition and offset) are not taken for
    /// ones already quarantined.
    pub fn with_kafka_topic(mut self, name: &str) -> Self {
        self.kafka_topic = (name != self.topic.name()).then(|| name.to_string());
        self
    }

    /// The topic this decoder decodes.
    pub fn topic(&self) -> Topic {
        self.topic
    }

    /// Decodes one message; a bad one is kept for quarantine, never an error.
    /// Returns `true` if the message was a well-formed event.
    pub fn push(&mut self, msg: RawMessage<'_>) -> bool {
        match self.rows.append(msg.payload) {
            Ok(()) => true,
            Err(fast_reason) => {
                let reason = explain(self.topic, msg.payload).unwrap_or(fast_reason);
                self.quarantine.append(
                    self.topic,
                    self.kafka_topic.as_deref(),
                    msg.source,
                    msg.payload,
                    &reason,
                );
                false
            }
        }
    }

    /// Events decoded since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing was decoded since the last finish.
    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0 && self.quarantine.len() == 0
    }

    /// Messages quarantined since the last finish.
    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// Takes what was decoded so far; `ingested_at` (UTC µs) stamps quarantine rows.
    pub fn finish(&mut self, ingested_at: i64) -> Result<Decoded> {
        Ok(Decoded {
            events: self.rows.finish()?,
            quarantine: self.quarantine.finish(ingested_at)?,
        })
    }
}

/// The full reason of a failure, with the path of the failing field, from a
/// slower serde_json pass used only for bad messages.
fn explain(topic: Topic, payload: &[u8]) -> Option<String> {
    fn check<'de, T: Deserialize<'de> + Validate>(payload: &'de [u8]) -> Option<String> {
        let first = payload.iter().find(|c| !c.is_ascii_whitespace());
        match first {
            None => return Some("empty message".into()),
            Some(b'{') => {}
            Some(_) => {
                return Some(
                    match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
                        Ok(_) => "not a JSON object".into(),
                        Err(e) => format!("invalid JSON: {e}"),
                    },
                );
            }
        }
        let de = &mut serde_json::Deserializer::from_slice(payload);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(row) => row.validate().err(),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                Some(if inner.is_syntax() || inner.is_eof() {
                    format!("invalid JSON: {inner}")
                } else if path == "." || path.is_empty() {
                    // serde names a missing field in the message itself.
                    strip_position(&inner.to_string())
                } else {
                    format!("field `{path}`: {}", strip_position(&inner.to_string()))
                })
            }
        }
    }
    match topic {
        Topic::ApiAccess => check::<AccessEvent>(payload),
        Topic::Grants => check::<GrantEvent>(payload),
        Topic::Apps => check::<AppEvent>(payload),
        Topic::Deletions => check::<DeletionEvent>(payload),
    }
}

fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// An RFC 3339 time with offset, as UTC microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Time(i64);

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Time;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RFC 3339 time with offset")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Time, E> {
                parse_rfc3339_micros(v)
                    .map(Time)
                    .map_err(|why| E::custom(format!("invalid time {v:?}: {why}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// Checks beyond types: non-empty ids, known enum values.
trait Validate {
    fn validate(&self) -> std::result::Result<(), String>;
}

fn non_empty(field: &str, v: &str) -> std::result::Result<(), String> {
    if v.is_empty() {
        Err(format!("field `{field}`: must not be empty"))
    } else {
        Ok(())
    }
}

fn one_of(field: &str, v: &str, allowed: &[&str]) -> std::result::Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "field `{field}`: unknown value {v:?}, expected one of {}",
            allowed.join(", ")
        ))
    }
}

type Str<'a> = Cow<'a, str>;
type StrList<'a> = Option<Vec<Cow<'a, str>>>;
/// A list of the fast path: items borrowed from the payload, inline up to 8.
type FastList<'a> = Option<SmallVec<[&'a str; 8]>>;

/// An access event; `L` is how its two lists are held: owned on the serde
/// path, borrowed and on the stack on the fast path (two heap allocations an
/// event less).
#[derive(Deserialize, Debug, PartialEq)]
struct AccessEvent<'a, L = StrList<'a>> {
    #[serde(borrow)]
    event_id: Str<'a>,
    event_time: Time,
    #[serde(borrow)]
    app_id: Str<'a>,
    #[serde(borrow)]
    developer_id: Str<'a>,
    #[serde(borrow)]
    user_id: Option<Str<'a>>,
    #[serde(borrow)]
    api: Str<'a>,
    #[serde(borrow)]
    required_scope: Option<Str<'a>>,
    token_scopes: L,
    data_categories: L,
    record_count: Option<i64>,
    status: i32,
    #[serde(borrow)]
    client_ip: Option<Str<'a>>,
    #[serde(borrow)]
    client_region: Option<Str<'a>>,
    #[serde(borrow)]
    token_id: Option<Str<'a>>,
    latency_ms: Option<i32>,
    response_bytes: Option<i64>,
}

impl<L> Validate for AccessEvent<'_, L> {
    fn validate(&self) -> std::result::Result<(), String> {
        non_empty("event_id", &self.event_id)?;
        non_empty("app_id", &self.app_id)?;
        if !(100..=599).contains(&self.status) {
            return Err(format!(
                "field `status`: {} is not an HTTP status",
                self.status
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct GrantEvent<'a> {
    #[serde(borrow)]
    event_id: Str<'a>,
    event_time: Time,
    #[serde(borrow)]
    app_id: Str<'a>,
    #[serde(borrow)]
    user_id: Str<'a>,
    #[serde(borrow)]
    action: Str<'a>,
    #[serde(borrow)]
    scopes: StrList<'a>,
}

impl Validate for GrantEvent<'_> {
    fn validate(&self) -> std::result::Result<(), String> {
        non_empty("event_id", &self.event_id)?;
        non_empty("app_id", &self.app_id)?;
        non_empty("user_id", &self.user_id)?;
        one_of("action", &self.action, &["grant", "revoke", "unsubscribe"])
    }
}

#[derive(Deserialize)]
struct AppEvent<'a> {
    #[serde(borrow)]
    event_id: Str<'a>,
    event_time: Time,
    #[serde(borrow)]
    app_id: Str<'a>,
    #[serde(borrow)]
    developer_id: Option<Str<'a>>,
    #[serde(borrow)]
    app_kind: Option<Str<'a>>,
    #[serde(borrow)]
    action: Str<'a>,
    #[serde(borrow)]
    declared_scopes: StrList<'a>,
    #[serde(borrow)]
    declared_categories: StrList<'a>,
    export_approved: Option<bool>,
}

impl Validate for AppEvent<'_> {
    fn validate(&self) -> std::result::Result<(), String> {
        non_empty("event_id", &self.event_id)?;
        non_empty("app_id", &self.app_id)?;
        one_of("action", &self.action, &["register", "update", "terminate"])?;
        if let Some(kind) = &self.app_kind {
            one_of("app_kind", kind, &["self_use", "third_party"])?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct DeletionEvent<'a> {
    #[serde(borrow)]
    event_id: Str<'a>,
    event_time: Time,
    #[serde(borrow)]
    app_id: Str<'a>,
    #[serde(borrow)]
    user_id: Option<Str<'a>>,
    #[serde(borrow)]
    kind: Str<'a>,
    #[serde(borrow)]
    reason: Option<Str<'a>>,
}

/// Reasons a deletion request may carry (SPEC section 2).
pub const DELETION_REASONS: [&str; 5] = [
    "user_request",
    "platform_order",
    "unsubscribe",
    "revoke",
    "termination",
];

impl Validate for DeletionEvent<'_> {
    fn validate(&self) -> std::result::Result<(), String> {
        non_empty("event_id", &self.event_id)?;
        non_empty("app_id", &self.app_id)?;
        one_of("kind", &self.kind, &["request", "receipt"])?;
        match &self.reason {
            Some(r) => one_of("reason", r, &DELETION_REASONS),
            None if self.kind == "request" => {
                Err("field `reason`: required for a deletion request".into())
            }
            None => Ok(()),
        }
    }
}

/// Column builders of one topic's table.
trait TopicRows {
    /// Parses and appends one payload, or returns a short reason.
    fn append(&mut self, payload: &[u8]) -> std::result::Result<(), String>;
    fn len(&self) -> usize;
    fn finish(&mut self) -> Result<RecordBatch>;
}

fn parse<'a, T: Deserialize<'a> + Validate>(payload: &'a [u8]) -> std::result::Result<T, String> {
    let row: T = sonic_rs::from_slice(payload).map_err(|e| e.to_string())?;
    row.validate()?;
    Ok(row)
}

fn list_item_field() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Utf8, true))
}

fn list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new()).with_field(list_item_field())
}

fn ts_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::new().with_timezone("UTC")
}

/// Appends a list of strings (`None`: a null list), however a path holds it.
fn append_list<S: AsRef<str>>(b: &mut ListBuilder<StringBuilder>, v: Option<&[S]>) {
    match v {
        Some(items) => {
            for item in items {
                b.values().append_value(item);
            }
            b.append(true);
        }
        None => b.append(false),
    }
}

fn batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(schema, columns)?)
}

macro_rules! builders {
    ($name:ident { $($field:ident : $ty:ty = $init:expr),* $(,)? }) => {
        struct $name { len: usize, $($field: $ty),* }
        impl Default for $name {
            fn default() -> Self { Self { len: 0, $($field: $init),* } }
        }
    };
}

builders!(AccessRows {
    event_id: StringBuilder = StringBuilder::new(),
    event_time: TimestampMicrosecondBuilder = ts_builder(),
    app_id: StringBuilder = StringBuilder::new(),
    developer_id: StringBuilder = StringBuilder::new(),
    user_id: StringBuilder = StringBuilder::new(),
    api: StringBuilder = StringBuilder::new(),
    required_scope: StringBuilder = StringBuilder::new(),
    token_scopes: ListBuilder<StringBuilder> = list_builder(),
    data_categories: ListBuilder<StringBuilder> = list_builder(),
    record_count: Int64Builder = Int64Builder::new(),
    status: Int32Builder = Int32Builder::new(),
    client_ip: StringBuilder = StringBuilder::new(),
    client_region: StringBuilder = StringBuilder::new(),
    token_id: StringBuilder = StringBuilder::new(),
    latency_ms: Int32Builder = Int32Builder::new(),
    response_bytes: Int64Builder = Int64Builder::new(),
    date: Date32Builder = Date32Builder::new(),
});

/// The fast path of an access event (see [`crate::flat`]); `None` sends the
/// message to the serde path.
fn fast_access(payload: &[u8]) -> Option<AccessEvent<'_, FastList<'_>>> {
    let mut f = Flat::open(payload)?;
    let mut seen = 0u32;
    let mut mark = |bit: u32| {
        let fresh = seen & (1 << bit) == 0;
        seen |= 1 << bit;
        fresh.then_some(())
    };
    let (mut event_id, mut event_time, mut app_id, mut developer_id, mut api, mut status) =
        (None, None, None, None, None, None);
    let (mut user_id, mut required_scope, mut token_scopes, mut data_categories) =
        (None, None, None, None);
    let (mut record_count, mut client_ip, mut client_region, mut token_id) =
        (None, None, None, None);
    let (mut latency_ms, mut response_bytes) = (None, None);
    let mut first = true;
    while let Some(key) = f.next_key(first)? {
        first = false;
        match key {
            b"event_id" => {
                mark(0)?;
                event_id = Some(f.str()?);
            }
            b"event_time" => {
                mark(1)?;
                event_time = Some(Time(parse_rfc3339_micros(&f.str()?).ok()?));
            }
            b"app_id" => {
                mark(2)?;
                app_id = Some(f.str()?);
            }
            b"developer_id" => {
                mark(3)?;
                developer_id = Some(f.str()?);
            }
            b"user_id" => {
                mark(4)?;
                user_id = f.opt_str()?;
            }
            b"api" => {
                mark(5)?;
                api = Some(f.str()?);
            }
            b"required_scope" => {
                mark(6)?;
                required_scope = f.opt_str()?;
            }
            b"token_scopes" => {
                mark(7)?;
                token_scopes = f.opt_str_list()?;
            }
            b"data_categories" => {
                mark(8)?;
                data_categories = f.opt_str_list()?;
            }
            b"record_count" => {
                mark(9)?;
                record_count = f.opt_i64()?;
            }
            b"status" => {
                mark(10)?;
                status = Some(f.i32()?);
            }
            b"client_ip" => {
                mark(11)?;
                client_ip = f.opt_str()?;
            }
            b"client_region" => {
                mark(12)?;
                client_region = f.opt_str()?;
            }
            b"token_id" => {
                mark(13)?;
                token_id = f.opt_str()?;
            }
            b"latency_ms" => {
                mark(14)?;
                latency_ms = f.opt_i32()?;
            }
            b"response_bytes" => {
                mark(15)?;
                response_bytes = f.opt_i64()?;
            }
            _ => f.skip()?,
        }
    }
    Some(AccessEvent {
        event_id: event_id?,
        event_time: event_time?,
        app_id: app_id?,
        developer_id: developer_id?,
        user_id,
        api: api?,
        required_scope,
        token_scopes,
        data_categories,
        record_count,
        status: status?,
        client_ip,
        client_region,
        token_id,
        latency_ms,
        response_bytes,
    })
}

impl TopicRows for AccessRows {
    fn append(&mut self, payload: &[u8]) -> std::result::Result<(), String> {
        match fast_access(payload) {
            Some(e) => {
                e.validate()?;
                self.push(&e);
            }
            None => self.push(&parse::<AccessEvent>(payload)?),
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Builders start the next batch sized like this one, so appends do not
    /// grow (and copy) their buffers step by step.
    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        batch(
            tables::api_access(),
            vec![
                renew_str(&mut self.event_id),
                renew_primitive(&mut self.event_time),
                renew_str(&mut self.app_id),
                renew_str(&mut self.developer_id),
                renew_str(&mut self.user_id),
                renew_str(&mut self.api),
                renew_str(&mut self.required_scope),
                renew_list(&mut self.token_scopes),
                renew_list(&mut self.data_categories),
                renew_primitive(&mut self.record_count),
                renew_primitive(&mut self.status),
                renew_str(&mut self.client_ip),
                renew_str(&mut self.client_region),
                renew_str(&mut self.token_id),
                renew_primitive(&mut self.latency_ms),
                renew_primitive(&mut self.response_bytes),
                renew_primitive(&mut self.date),
            ],
        )
    }
}

impl AccessRows {
    /// Appends one checked event to the builders.
    #[inline]
    fn push<L, S>(&mut self, e: &AccessEvent<'_, Option<L>>)
    where
        L: std::ops::Deref<Target = [S]>,
        S: AsRef<str>,
    {
        self.event_id.append_value(&e.event_id);
        self.event_time.append_value(e.event_time.0);
        self.app_id.append_value(&e.app_id);
        self.developer_id.append_value(&e.developer_id);
        self.user_id.append_option(e.user_id.as_deref());
        self.api.append_value(&e.api);
        self.required_scope
            .append_option(e.required_scope.as_deref());
        append_list(&mut self.token_scopes, e.token_scopes.as_deref());
        append_list(&mut self.data_categories, e.data_categories.as_deref());
        self.record_count.append_option(e.record_count);
        self.status.append_value(e.status);
        self.client_ip.append_option(e.client_ip.as_deref());
        self.client_region.append_option(e.client_region.as_deref());
        self.token_id.append_option(e.token_id.as_deref());
        self.latency_ms.append_option(e.latency_ms);
        self.response_bytes.append_option(e.response_bytes);
        self.date.append_value(date32_of_micros(e.event_time.0));
        self.len += 1;
    }
}

/// The capacity to give the next batch's builder after one that held `n`:
/// an eighth more, as the next chunk of input may hold a few more rows or
/// bytes, and a builder that overflows doubles (allocates and copies) its
/// buffer: that was ~270 bytes copied and faulted in per event. Capacity
/// never written is address space, not resident memory.
const fn headroom(n: usize) -> usize {
    n + n / 8 + 64
}

/// Finishes a string builder and replaces it with one sized like it.
fn renew_str(b: &mut StringBuilder) -> ArrayRef {
    let (items, bytes) = (b.len(), b.values_slice().len());
    let array = b.finish();
    *b = StringBuilder::with_capacity(headroom(items), headroom(bytes));
    Arc::new(array)
}

/// Finishes a primitive builder and replaces it with one sized like it.
fn renew_primitive<T: ArrowPrimitiveType>(b: &mut PrimitiveBuilder<T>) -> ArrayRef {
    let items = b.len();
    let array = b.finish();
    *b = PrimitiveBuilder::<T>::with_capacity(headroom(items))
        .with_data_type(array.data_type().clone());
    Arc::new(array)
}

/// Finishes a list-of-strings builder and replaces it with one sized like it.
fn renew_list(b: &mut ListBuilder<StringBuilder>) -> ArrayRef {
    let items = b.len();
    let (values, bytes) = (b.values().len(), b.values().values_slice().len());
    let array = b.finish();
    *b = ListBuilder::with_capacity(
        StringBuilder::with_capacity(headroom(values), headroom(bytes)),
        headroom(items),
    )
    .with_field(list_item_field());
    Arc::new(array)
}

builders!(GrantRows {
    event_id: StringBuilder = StringBuilder::new(),
    event_time: TimestampMicrosecondBuilder = ts_builder(),
    app_id: StringBuilder = StringBuilder::new(),
    user_id: StringBuilder = StringBuilder::new(),
    action: StringBuilder = StringBuilder::new(),
    scopes: ListBuilder<StringBuilder> = list_builder(),
    date: Date32Builder = Date32Builder::new(),
});

impl TopicRows for GrantRows {
    fn append(&mut self, payload: &[u8]) -> std::result::Result<(), String> {
        let e: GrantEvent = parse(payload)?;
        self.event_id.append_value(&e.event_id);
        self.event_time.append_value(e.event_time.0);
        self.app_id.append_value(&e.app_id);
        self.user_id.append_value(&e.user_id);
        self.action.append_value(&e.action);
        append_list(&mut self.scopes, e.scopes.as_deref());
        self.date.append_value(date32_of_micros(e.event_time.0));
        self.len += 1;
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        batch(
            tables::grants(),
            vec![
                Arc::new(self.event_id.finish()),
                Arc::new(self.event_time.finish()),
                Arc::new(self.app_id.finish()),
                Arc::new(self.user_id.finish()),
                Arc::new(self.action.finish()),
                Arc::new(self.scopes.finish()),
                Arc::new(self.date.finish()),
            ],
        )
    }
}

builders!(AppRows {
    event_id: StringBuilder = StringBuilder::new(),
    event_time: TimestampMicrosecondBuilder = ts_builder(),
    app_id: StringBuilder = StringBuilder::new(),
    developer_id: StringBuilder = StringBuilder::new(),
    app_kind: StringBuilder = StringBuilder::new(),
    action: StringBuilder = StringBuilder::new(),
    declared_scopes: ListBuilder<StringBuilder> = list_builder(),
    declared_categories: ListBuilder<StringBuilder> = list_builder(),
    export_approved: BooleanBuilder = BooleanBuilder::new(),
    date: Date32Builder = Date32Builder::new(),
});

impl TopicRows for AppRows {
    fn append(&mut self, payload: &[u8]) -> std::result::Result<(), String> {
        let e: AppEvent = parse(payload)?;
        self.event_id.append_value(&e.event_id);
        self.event_time.append_value(e.event_time.0);
        self.app_id.append_value(&e.app_id);
        self.developer_id.append_option(e.developer_id.as_deref());
        self.app_kind.append_option(e.app_kind.as_deref());
        self.action.append_value(&e.action);
        append_list(&mut self.declared_scopes, e.declared_scopes.as_deref());
        append_list(
            &mut self.declared_categories,
            e.declared_categories.as_deref(),
        );
        self.export_approved.append_option(e.export_approved);
        self.date.append_value(date32_of_micros(e.event_time.0));
        self.len += 1;
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        batch(
            tables::apps(),
            vec![
                Arc::new(self.event_id.finish()),
                Arc::new(self.event_time.finish()),
                Arc::new(self.app_id.finish()),
                Arc::new(self.developer_id.finish()),
                Arc::new(self.app_kind.finish()),
                Arc::new(self.action.finish()),
                Arc::new(self.declared_scopes.finish()),
                Arc::new(self.declared_categories.finish()),
                Arc::new(self.export_approved.finish()),
                Arc::new(self.date.finish()),
            ],
        )
    }
}

builders!(DeletionRows {
    event_id: StringBuilder = StringBuilder::new(),
    event_time: TimestampMicrosecondBuilder = ts_builder(),
    app_id: StringBuilder = StringBuilder::new(),
    user_id: StringBuilder = StringBuilder::new(),
    kind: StringBuilder = StringBuilder::new(),
    reason: StringBuilder = StringBuilder::new(),
    date: Date32Builder = Date32Builder::new(),
});

impl TopicRows for DeletionRows {
    fn append(&mut self, payload: &[u8]) -> std::result::Result<(), String> {
        let e: DeletionEvent = parse(payload)?;
        self.event_id.append_value(&e.event_id);
        self.event_time.append_value(e.event_time.0);
        self.app_id.append_value(&e.app_id);
        self.user_id.append_option(e.user_id.as_deref());
        self.kind.append_value(&e.kind);
        self.reason.append_option(e.reason.as_deref());
        self.date.append_value(date32_of_micros(e.event_time.0));
        self.len += 1;
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        batch(
            tables::deletions(),
            vec![
                Arc::new(self.event_id.finish()),
                Arc::new(self.event_time.finish()),
                Arc::new(self.app_id.finish()),
                Arc::new(self.user_id.finish()),
                Arc::new(self.kind.finish()),
                Arc::new(self.reason.finish()),
                Arc::new(self.date.finish()),
            ],
        )
    }
}

builders!(QuarantineBuilder {
    source_id: StringBuilder = StringBuilder::new(),
    topic: StringBuilder = StringBuilder::new(),
    partition: Int32Builder = Int32Builder::new(),
    offset: Int64Builder = Int64Builder::new(),
    file: StringBuilder = StringBuilder::new(),
    line: Int64Builder = Int64Builder::new(),
    raw: BinaryBuilder = BinaryBuilder::new(),
    reason: StringBuilder = StringBuilder::new(),
});

impl QuarantineBuilder {
    fn append(
        &mut self,
        topic: Topic,
        kafka_topic: Option<&str>,
        source: Source<'_>,
        raw: &[u8],
        reason: &str,
    ) {
        self.source_id
            .append_value(source.source_id(topic, kafka_topic));
        self.topic.append_value(topic.name());
        match source {
            Source::Kafka { partition, offset } => {
                self.partition.append_value(partition);
                self.offset.append_value(offset);
                self.file.append_null();
                self.line.append_null();
            }
            Source::File { path, line } => {
                self.partition.append_null();
                self.offset.append_null();
                self.file.append_value(path);
                self.line.append_value(line as i64);
            }
        }
        self.raw.append_value(raw);
        self.reason.append_value(reason);
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn finish(&mut self, ingested_at: i64) -> Result<RecordBatch> {
        let n = std::mem::take(&mut self.len);
        let mut at = ts_builder();
        let mut date = Date32Builder::new();
        for _ in 0..n {
            at.append_value(ingested_at);
            date.append_value(date32_of_micros(ingested_at));
        }
        batch(
            tables::quarantine(),
            vec![
                Arc::new(self.source_id.finish()),
                Arc::new(self.topic.finish()),
                Arc::new(self.partition.finish()),
                Arc::new(self.offset.finish()),
                Arc::new(self.file.finish()),
                Arc::new(self.line.finish()),
                Arc::new(self.raw.finish()),
                Arc::new(self.reason.finish()),
                Arc::new(at.finish()),
                Arc::new(date.finish()),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, TimestampMicrosecondType};

    const GOOD: &str = r#"{"event_id":"req-1","event_time":"2026-11-20T08:15:30.123+08:00","app_id":"app-1","developer_id":"dev-1","user_id":"u-1","api":"order.list","required_scope":"order.read","token_scopes":["order.read","user.phone"],"data_categories":["order","phone"],"record_count":3,"status":200,"client_ip":"10.0.0.1","client_region":"CN","token_id":"t-1","latency_ms":12,"response_bytes":2048,"extra":{"nested":[1,2]}}"#;

    fn reason_of(topic: Topic, payload: &str) -> String {
        let mut d = Decoder::new(topic);
        assert!(!d.push(RawMessage {
            payload: payload.as_bytes(),
            source: Source::File {
                path: "in.jsonl",
                line: 3
            },
        }));
        let out = d.finish(0).unwrap();
        assert_eq!(out.events.num_rows(), 0);
        assert_eq!(out.quarantine.num_rows(), 1);
        let q = &out.quarantine;
        assert_eq!(
            q.column(0).as_string::<i32>().value(0),
            format!("file:{topic}:in.jsonl:3")
        );
        assert_eq!(q.column(6).as_binary::<i32>().value(0), payload.as_bytes());
        q.column(7).as_string::<i32>().value(0).to_string()
    }

    /// Shifting a chunk's line numbers moves the file lines and their
    /// source ids, and leaves Kafka messages as they were.
    #[test]
    fn quarantine_keys_name_the_kafka_topic_read() {
        use arrow::array::AsArray;
        let key = |d: Decoder| {
            let mut d = d;
            d.push(RawMessage {
                payload: b"{not json",
                source: Source::Kafka {
                    partition: 0,
                    offset: 5,
                },
            });
            let q = d.finish(0).unwrap().quarantine;
            let ids = q.column_by_name("source_id").unwrap().as_string::<i32>();
            ids.value(0).to_string()
        };
        assert_eq!(key(Decoder::new(Topic::ApiAccess)), "kafka:api-access:0:5");
        assert_eq!(
            key(Decoder::new(Topic::ApiAccess).with_kafka_topic("api-access")),
            "kafka:api-access:0:5"
        );
        assert_eq!(
            key(Decoder::new(Topic::ApiAccess).with_kafka_topic("gateway.v2")),
            "kafka:gateway.v2:0:5"
        );
    }

    #[test]
    fn shift_file_lines_moves_file_lines_only() {
        use arrow::datatypes::Int64Type;
        let mut d = Decoder::new(Topic::ApiAccess);
        let file = |line| Source::File {
            path: "in.jsonl",
            line,
        };
        for source in [
            file(1),
            Source::Kafka {
                partition: 2,
                offset: 9,
            },
            file(3),
        ] {
            d.push(RawMessage {
                payload: b"{bad",
                source,
            });
        }
        d.push(RawMessage {
            payload: GOOD.as_bytes(),
            source: file(4),
        });
        let mut out = d.finish(0).unwrap();
        out.shift_file_lines(Topic::ApiAccess, 10).unwrap();
        let q = &out.quarantine;
        let ids: Vec<_> = q.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(
            ids,
            [
                "file:api-access:in.jsonl:11",
                "kafka:api-access:2:9",
                "file:api-access:in.jsonl:13"
            ]
        );
        let line_at = q.schema().index_of("line").unwrap();
        let lines: Vec<_> = q
            .column(line_at)
            .as_primitive::<Int64Type>()
            .iter()
            .collect();
        assert_eq!(lines, [Some(11), None, Some(13)]);
        assert_eq!(out.events.num_rows(), 1);
    }

    /// The fast path either gives up or decodes exactly what serde decodes,
    /// on the gateway's shape and on many variations of it.
    #[test]
    fn fast_path_agrees_with_serde() {
        let base = r#"{"event_id":"e-1","event_time":"2026-11-20T08:15:30.123Z","app_id":"a","developer_id":"d","user_id":"u","api":"order.list","required_scope":"order.read","token_scopes":["order.read","user.phone"],"data_categories":[],"record_count":3,"status":200,"client_ip":"10.0.0.1","client_region":"CN","token_id":"t","latency_ms":12,"response_bytes":2048}"#;
        let variants: Vec<String> = vec![
            base.to_string(),
            base.replace(r#""user_id":"u""#, r#""user_id":null"#),
            base.replace(r#","user_id":"u""#, ""),
            base.replace(
                r#""token_scopes":["order.read","user.phone"]"#,
                r#""token_scopes":null"#,
            ),
            base.replace(
                r#""token_scopes":["order.read","user.phone"]"#,
                r#""token_scopes":[ "x" , "y" ]"#,
            ),
            base.replace(
                r#""token_scopes":["order.read","user.phone"]"#,
                r#""token_scopes":["x",null]"#,
            ),
            base.replace(
                r#""token_scopes":["order.read","user.phone"]"#,
                r#""token_scopes":"x""#,
            ),
            base.replace(r#""status":200"#, r#""status":200.0"#),
            base.replace(r#""status":200"#, r#""status":"200""#),
            base.replace(r#""status":200"#, r#""status":null"#),
            base.replace(r#""status":200"#, r#""status":99"#),
            base.replace(r#""status":200"#, r#""status":4294967296"#),
            base.replace(r#","status":200"#, ""),
            base.replace(r#""latency_ms":12"#, r#""latency_ms":-3"#),
            base.replace(r#""latency_ms":12"#, r#""latency_ms":3000000000"#),
            base.replace(r#""record_count":3"#, r#""record_count":1e2"#),
            base.replace(r#""app_id":"a""#, r#""app_id":"""#),
            base.replace(r#""app_id":"a""#, r#""app_id":"a\u00e9\"""#),
            base.replace(r#""app_id":"a""#, r#""app_id":"é€""#),
            base.replace(r#""app_id":"a""#, r#""app_id":"a","app_id":"b""#),
            base.replace(r#""app_id":"a""#, r#""app_id":null"#),
            base.replace(
                r#""event_time":"2026-11-20T08:15:30.123Z""#,
                r#""event_time":"2026-11-20 08:15""#,
            ),
            base.replace(
                r#""event_time":"2026-11-20T08:15:30.123Z""#,
                r#""event_time":"2026-11-20T08:15:30+08:00""#,
            ),
            base.replace('{', r#"{"extra":"x","n":-1,"b":true,"z":null,"#),
            base.replace('{', r#"{"extra":{"nested":[1]},"#),
            base.replace(':', " : ").replace(',', " ,\t"),
            format!("  {base}\r\n"),
            format!("{base}x"),
            base.replace('}', ",}"),
            base[..base.len() - 5].to_string(),
            String::new(),
            "[]".into(),
            "{}".into(),
        ];
        let mut fast = 0;
        for v in &variants {
            let serde = parse::<AccessEvent>(v.as_bytes());
            // None: the serde path decides.
            if let Some(e) = fast_access(v.as_bytes()) {
                fast += 1;
                let checked = e.validate().map(|_| e);
                let serde = serde.as_ref().map(as_fast).map_err(Clone::clone);
                assert_eq!(checked, serde, "{v}");
            }
        }
        assert!(fast >= 8, "the fast path took only {fast} variants");
    }

    /// A serde-path event with its lists borrowed as the fast path holds them.
    fn as_fast<'b>(e: &'b AccessEvent<'b>) -> AccessEvent<'b, FastList<'b>> {
        let list = |l: &'b StrList<'b>| l.as_ref().map(|v| v.iter().map(|i| i.as_ref()).collect());
        AccessEvent {
            event_id: e.event_id.clone(),
            event_time: e.event_time,
            app_id: e.app_id.clone(),
            developer_id: e.developer_id.clone(),
            user_id: e.user_id.clone(),
            api: e.api.clone(),
            required_scope: e.required_scope.clone(),
            token_scopes: list(&e.token_scopes),
            data_categories: list(&e.data_categories),
            record_count: e.record_count,
            status: e.status,
            client_ip: e.client_ip.clone(),
            client_region: e.client_region.clone(),
            token_id: e.token_id.clone(),
            latency_ms: e.latency_ms,
            response_bytes: e.response_bytes,
        }
    }

    #[test]
    fn decodes_a_full_access_event_and_ignores_unknown_fields() {
        let mut d = Decoder::new(Topic::ApiAccess);
        assert!(d.push(RawMessage {
            payload: GOOD.as_bytes(),
            source: Source::Kafka {
                partition: 1,
                offset: 2
            }
        }));
        let out = d.finish(0).unwrap();
        let b = out.events;
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema(), tables::api_access());
        let t = b
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0);
        assert_eq!(t, parse_rfc3339_micros("2026-11-20T00:15:30.123Z").unwrap());
        assert_eq!(b.column(10).as_primitive::<Int32Type>().value(0), 200);
        let scopes = b.column(7).as_list::<i32>().value(0);
        assert_eq!(scopes.len(), 2);
        assert_eq!(out.quarantine.num_rows(), 0);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let mut d = Decoder::new(Topic::Grants);
        let p = r#"{"event_id":"e\"1","event_time":"2026-11-20T08:00:00Z","app_id":"a\u00e9","user_id":"u","action":"grant"}"#;
        assert!(d.push(RawMessage {
            payload: p.as_bytes(),
            source: Source::Kafka {
                partition: 0,
                offset: 0
            }
        }));
        let b = d.finish(0).unwrap().events;
        assert_eq!(b.column(0).as_string::<i32>().value(0), "e\"1");
        assert_eq!(b.column(2).as_string::<i32>().value(0), "aé");
        assert!(b.column(5).is_null(0), "missing list is null");
    }

    #[test]
    fn every_class_of_bad_input_is_quarantined_with_its_reason() {
        let g = Topic::Grants;
        let r = reason_of(g, "{not json");
        assert!(r.starts_with("invalid JSON"), "{r}");
        let r = reason_of(g, "[1,2]");
        assert_eq!(r, "not a JSON object");
        let r = reason_of(g, "\"text\"");
        assert_eq!(r, "not a JSON object");
        let r = reason_of(g, "");
        assert_eq!(r, "empty message");
        let r = reason_of(
            g,
            r#"{"event_id":"e","event_time":"2026-11-20T08:00:00Z","user_id":"u","action":"grant"}"#,
        );
        assert!(r.contains("missing field `app_id`"), "{r}");
        let r = reason_of(
            g,
            r#"{"event_id":"e","event_time":"2026-11-20T08:00:00Z","app_id":null,"user_id":"u","action":"grant"}"#,
        );
        assert!(r.starts_with("field `app_id`: invalid type: null"), "{r}");
        let r = reason_of(
            g,
            r#"{"event_id":"e","event_time":"2026-11-20T08:00:00","app_id":"a","user_id":"u","action":"grant"}"#,
        );
        assert!(
            r.starts_with("field `event_time`: invalid time") && r.contains("offset"),
            "{r}"
        );
        let r = reason_of(
            g,
            r#"{"event_id":"e","event_time":"2026-13-45T99:00:00Z","app_id":"a","user_id":"u","action":"grant"}"#,
        );
        assert!(r.starts_with("field `event_time`: invalid time"), "{r}");
        let r = reason_of(
            g,
            r#"{"event_id":"e","event_time":"2026-11-20T08:00:00Z","app_id":"a","user_id":"u","action":"grant","scopes":"order.read"}"#,
        );
        assert!(r.starts_with("field `scopes`: invalid type: string"), "{r}");
        let r = reason_of(
            g,
            r#"{"event_id":"e","event_time":"2026-11-20T08:00:00Z","app_id":"a","user_id":"u","action":"borrow"}"#,
        );
        assert!(
            r.starts_with("field `action`: unknown value \"borrow\""),
            "{r}"
        );
        let r = reason_of(
            g,
            r#"{"event_id":"","event_time":"2026-11-20T08:00:00Z","app_id":"a","user_id":"u","action":"grant"}"#,
        );
        assert_eq!(r, "field `event_id`: must not be empty");

        let a = Topic::ApiAccess;
        let r = reason_of(a, &GOOD.replace("\"status\":200", "\"status\":\"200\""));
        assert!(
            r.starts_with("field `status`: invalid type: string \"200\", expected i32"),
            "{r}"
        );
        let r = reason_of(a, &GOOD.replace("\"status\":200", "\"status\":200.5"));
        assert!(
            r.starts_with("field `status`: invalid type: floating point"),
            "{r}"
        );
        let r = reason_of(
            a,
            &GOOD.replace("\"record_count\":3", "\"record_count\":\"x\""),
        );
        assert!(r.starts_with("field `record_count`: invalid type"), "{r}");
        let r = reason_of(
            a,
            &GOOD.replace("\"token_scopes\":[\"order.read\"", "\"token_scopes\":[7"),
        );
        assert!(
            r.starts_with("field `token_scopes[0]`: invalid type: integer"),
            "{r}"
        );
        let r = reason_of(a, &GOOD.replace("\"status\":200", "\"status\":42"));
        assert_eq!(r, "field `status`: 42 is not an HTTP status");
        let r = reason_of(a, &GOOD[..GOOD.len() - 5]);
        assert!(r.starts_with("invalid JSON"), "{r}");
        let r = reason_of(
            Topic::Deletions,
            r#"{"event_id":"d","event_time":"2026-11-20T08:00:00Z","app_id":"a","kind":"request"}"#,
        );
        assert_eq!(r, "field `reason`: required for a deletion request");
    }

    #[test]
    fn a_bad_message_does_not_stop_the_batch() {
        let mut d = Decoder::new(Topic::ApiAccess);
        for (i, p) in [GOOD, "nope", GOOD, "{}", GOOD].iter().enumerate() {
            d.push(RawMessage {
                payload: p.as_bytes(),
                source: Source::Kafka {
                    partition: 0,
                    offset: i as i64,
                },
            });
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.quarantined(), 2);
        let out = d.finish(1_000_000).unwrap();
        assert_eq!(out.events.num_rows(), 3);
        let q = out.quarantine;
        assert_eq!(q.column(2).as_primitive::<Int32Type>().value(1), 0);
        assert_eq!(
            q.column(0).as_string::<i32>().value(1),
            "kafka:api-access:0:3"
        );
        assert!(d.is_empty());
    }
}
