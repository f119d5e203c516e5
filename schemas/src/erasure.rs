//! Erasure tombstones: which users were erased, recorded as keyed hashes so the
//! lake never holds an erased id again, not even in the list of erased ids.
//!
//! ```text
//! retention erase --user U  --> append_tombstones(lake, [Tombstone{ hash: key.hash(U), .. }])
//!                                 table `erasures`, one row per erasure, append-only
//! ingest (every flush)      --> load_erased(lake) -> ErasedUsers
//!                                 .apply_to_incoming(table, batch)  drops the erased rows,
//!                                   pseudonymizes the user's events after the erasure
//!                                 .covers(app, user) / .mentioned_in(raw)  for single messages
//! ```
//!
//! The hash is HMAC-SHA256 under a 32-byte lake key. The key comes from
//! `AUDITLAKE_ERASURE_KEY` (hex) when set, else from the object
//! `_auditlake/erasure.key` under the lake root, created by the first erase.
//! Without a key the tombstones cannot be reversed by guessing ids (user ids
//! are often enumerable); with the key stored in the lake, anyone who can read
//! the lake can test a guessed id against them. Production setups keep the key
//! in a secret store and set the variable for both `ingest` and `retention`.
//! Every tombstone carries the key's id, and [`load_erased`] refuses to run
//! with a different key: an ingest with the wrong key would otherwise write
//! erased users back.
//!
//! A tombstone is permanent, and splits the user's events at its `erased_at`
//! (for one app when the erasure named one). Events at or before it are the
//! erased data: ingest drops them, so replaying a topic from offset 0 never
//! brings the user back. Events after it are new accesses the platform must
//! still audit (an app reading an erased user's data is exactly what the
//! security team needs to see): ingest stores them under the user's
//! [`pseudonym`], `erased:` followed by the keyed hash, never the id. Every
//! rule works on the pseudonym as on an id, and it joins to
//! `erasures.user_hash`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};

use crate::lake::WriteOptions;
use crate::tables::{self, PARTITION_COLUMN, timestamp_type};
use crate::time::date32_of_micros;
use crate::{Error, Lake, Result};

/// The tombstone table.
pub const ERASURES: &str = "erasures";
/// Environment variable holding the erasure key (hex, at least 16 bytes).
pub const KEY_ENV: &str = "AUDITLAKE_ERASURE_KEY";
/// Where the key is kept under the lake root when [`KEY_ENV`] is not set.
pub const KEY_OBJECT: &str = "_auditlake/erasure.key";
/// Bytes of a generated key.
pub const KEY_BYTES: usize = 32;
const MIN_KEY_BYTES: usize = 16;
/// What a [`pseudonym`] starts with.
pub const PSEUDONYM_PREFIX: &str = "erased:";

/// The `user_id` ingest stores, in place of an erased user's id, on events
/// after the erasure: `erased:` and the hex keyed hash (the tombstone's
/// `user_hash`).
pub fn pseudonym(hash: &UserHash) -> String {
    format!("{PSEUDONYM_PREFIX}{hash}")
}

/// The keyed hash a [`pseudonym`] stands for; `None` if `id` is not one.
pub fn parse_pseudonym(id: &str) -> Option<UserHash> {
    id.strip_prefix(PSEUDONYM_PREFIX)?.parse().ok()
}

/// Schema of `erasures`: one row per erasure.
///
/// `user_hash` is the hex HMAC-SHA256 of the user id under the key whose id is
/// `key_id`; `app_id` null means the user was erased from every app.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("erasure_id", DataType::Utf8, false),
        Field::new("user_hash", DataType::Utf8, false),
        Field::new("key_id", DataType::Utf8, false),
        Field::new("app_id", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("erased_at", timestamp_type(), false),
        Field::new(PARTITION_COLUMN, DataType::Date32, false),
    ]))
}

/// The keyed hash of a user id (HMAC-SHA256).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserHash(pub [u8; 32]);

impl fmt::Display for UserHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for UserHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserHash({self})")
    }
}

impl std::str::FromStr for UserHash {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bytes = hex::decode(s).map_err(|e| format!("not a hex hash: {e}"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "a user hash has 32 bytes".to_string())?;
        Ok(Self(arr))
    }
}

/// The lake's erasure key, ready to hash (the HMAC pads are pre-absorbed).
#[derive(Clone)]
pub struct ErasureKey {
    inner: Sha256,
    outer: Sha256,
    id: String,
}

impl fmt::Debug for ErasureKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErasureKey").field("id", &self.id).finish()
    }
}

impl ErasureKey {
    /// A key from raw bytes (at least 16).
    pub fn from_bytes(key: &[u8]) -> Result<Self> {
        if key.len() < MIN_KEY_BYTES {
            return Err(Error::ErasureKey(format!(
                "an erasure key needs at least {MIN_KEY_BYTES} bytes, got {}",
                key.len()
            )));
        }
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |b: u8| block.iter().map(|k| k ^ b).collect::<Vec<u8>>();
        let mut k = Self {
            inner: Sha256::new_with_prefix(pad(0x36)),
            outer: Sha256::new_with_prefix(pad(0x5c)),
            id: String::new(),
        };
        k.id = hex::encode(&k.mac(b"auditlake erasure key id")[..8]);
        Ok(k)
    }

    /// A key from its hex text (as in [`KEY_ENV`] or [`KEY_OBJECT`]).
    pub fn from_hex(text: &str) -> Result<Self> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| Error::ErasureKey(format!("the erasure key is not hex: {e}")))?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random key and its hex text.
    pub fn generate() -> Result<(Self, String)> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::ErasureKey(format!("no randomness for a key: {e}")))?;
        let text = hex::encode(bytes);
        Ok((Self::from_bytes(&bytes)?, text))
    }

    fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let inner = self.inner.clone().chain_update(msg).finalize();
        self.outer.clone().chain_update(inner).finalize().into()
    }

    /// The keyed hash of a user id.
    pub fn hash(&self, user_id: &str) -> UserHash {
        UserHash(self.mac(user_id.as_bytes()))
    }

    /// A short public fingerprint of the key (never the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lake's key: [`KEY_ENV`] if set, else [`KEY_OBJECT`]; `None` if
    /// neither exists (nothing was ever erased with an in-lake key).
    pub async fn load(lake: &Lake) -> Result<Option<Self>> {
        if let Some(text) = std::env::var(KEY_ENV).ok().filter(|v| !v.trim().is_empty()) {
            return Self::from_hex(&text).map(Some);
        }
        let store = lake.object_store()?;
        match store.get(&KEY_OBJECT.into()).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let text = std::str::from_utf8(&bytes).map_err(|_| {
                    Error::ErasureKey(format!("{KEY_OBJECT} under {lake} is not text"))
                })?;
                Self::from_hex(text).map(Some)
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The lake's key, creating [`KEY_OBJECT`] if there is none (first erase).
    /// Two racing creators agree: the object is written only if absent.
    pub async fn load_or_create(lake: &Lake) -> Result<Self> {
        if let Some(k) = Self::load(lake).await? {
            return Ok(k);
        }
        let (key, text) = Self::generate()?;
        let store = lake.object_store()?;
        let put = store
            .put_opts(
                &KEY_OBJECT.into(),
                PutPayload::from(format!("{text}\n")),
                PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                },
            )
            .await;
        match put {
            Ok(_) => Ok(key),
            Err(object_store::Error::AlreadyExists { .. }) => Self::load(lake)
                .await?
                .ok_or_else(|| Error::Internal("erasure key vanished after a race".into())),
            Err(e) => Err(e.into()),
        }
    }
}

/// One erasure, as recorded in `erasures` (never holds the id itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    /// Unique id of the erasure (the evidence names it too).
    pub erasure_id: String,
    /// Keyed hash of the user id.
    pub user_hash: UserHash,
    /// The app the user was erased from; `None`: every app.
    pub app_id: Option<String>,
    /// Why (`user_request`, `platform_order`, ...), free text.
    pub reason: Option<String>,
    /// When the erasure took effect (UTC microseconds): the later of the
    /// erase's `--now` and the wall clock. The user's events dated at or
    /// before it are erased data; later ones are new (see the module doc).
    pub erased_at: i64,
}

impl Tombstone {
    /// A tombstone for `user_id` under `key`; its id is derived from the hash,
    /// app and time, so a rerun of the same erasure yields the same id.
    pub fn new(
        key: &ErasureKey,
        user_id: &str,
        app_id: Option<&str>,
        reason: Option<&str>,
        erased_at: i64,
    ) -> Self {
        Self::of_hash(key.hash(user_id), app_id, reason, erased_at)
    }

    /// A tombstone for the user whose keyed hash is `user_hash` (an erasure
    /// named by the user's [`pseudonym`]).
    pub fn of_hash(
        user_hash: UserHash,
        app_id: Option<&str>,
        reason: Option<&str>,
        erased_at: i64,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(user_hash.0);
        h.update(app_id.unwrap_or("").as_bytes());
        h.update([0]);
        h.update(erased_at.to_be_bytes());
        let erasure_id = format!("er-{}", &hex::encode(h.finalize())[..24]);
        Self {
            erasure_id,
            user_hash,
            app_id: app_id.map(str::to_string),
            reason: reason.map(str::to_string),
            erased_at,
        }
    }
}

/// The rows of `tombstones` as a batch of [`schema`].
pub fn tombstone_batch(key: &ErasureKey, tombstones: &[Tombstone]) -> Result<RecordBatch> {
    let col = |f: &dyn Fn(&Tombstone) -> Option<String>| -> ArrayRef {
        Arc::new(tombstones.iter().map(f).collect::<StringArray>())
    };
    let times: TimestampMicrosecondArray = tombstones.iter().map(|t| Some(t.erased_at)).collect();
    let dates: Date32Array = tombstones
        .iter()
        .map(|t| Some(date32_of_micros(t.erased_at)))
        .collect();
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            col(&|t| Some(t.erasure_id.clone())),
            col(&|t| Some(t.user_hash.to_string())),
            col(&|_| Some(key.id().to_string())),
            col(&|t| t.app_id.clone()),
            col(&|t| t.reason.clone()),
            Arc::new(times.with_timezone("UTC")),
            Arc::new(dates),
        ],
    )?)
}

/// Appends tombstones to `erasures` (one commit); a tombstone whose
/// `erasure_id` is already there is not written again.
pub async fn append_tombstones(
    lake: &Lake,
    key: &ErasureKey,
    tombstones: &[Tombstone],
) -> Result<usize> {
    let existing: HashSet<String> = read_tombstones(lake)
        .await?
        .into_iter()
        .map(|(t, _)| t.erasure_id)
        .collect();
    let fresh: Vec<Tombstone> = tombstones
        .iter()
        .filter(|t| !existing.contains(&t.erasure_id))
        .cloned()
        .collect();
    if fresh.is_empty() {
        return Ok(0);
    }
    let batch = tombstone_batch(key, &fresh)?;
    lake.append(ERASURES, vec![batch], Vec::new(), &WriteOptions::default())
        .await?;
    Ok(fresh.len())
}

/// Every tombstone in the lake with the id of the key it was hashed under.
pub async fn read_tombstones(lake: &Lake) -> Result<Vec<(Tombstone, String)>> {
    let mut out = Vec::new();
    for batch in read_table(lake, ERASURES).await? {
        let s = |name: &str| -> Result<&StringArray> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| Error::Internal(format!("{ERASURES}: column {name} missing")))
        };
        let (ids, hashes, keys, apps, reasons) = (
            s("erasure_id")?,
            s("user_hash")?,
            s("key_id")?,
            s("app_id")?,
            s("reason")?,
        );
        let times = batch
            .column_by_name("erased_at")
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>())
            .ok_or_else(|| Error::Internal(format!("{ERASURES}: column erased_at missing")))?;
        for i in 0..batch.num_rows() {
            let user_hash = hashes.value(i).parse().map_err(|e| {
                Error::Internal(format!(
                    "{ERASURES}: bad user_hash {:?}: {e}",
                    hashes.value(i)
                ))
            })?;
            let opt = |a: &StringArray| a.is_valid(i).then(|| a.value(i).to_string());
            out.push((
                Tombstone {
                    erasure_id: ids.value(i).to_string(),
                    user_hash,
                    app_id: opt(apps),
                    reason: opt(reasons),
                    erased_at: times.value(i),
                },
                keys.value(i).to_string(),
            ));
        }
    }
    Ok(out)
}

/// Reads every active data file of a small table (no DataFusion), without the
/// partition column. Empty if the table does not exist.
pub(crate) async fn read_table(lake: &Lake, name: &str) -> Result<Vec<RecordBatch>> {
    let Some(table) = lake.table(name).await? else {
        return Ok(Vec::new());
    };
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::delta(name, "snapshot", e))?;
    let store = table.object_store();
    let paths: Vec<_> = snapshot
        .log_data()
        .iter()
        .map(|f| f.object_store_path())
        .collect();
    let mut out = Vec::new();
    for path in paths {
        let bytes = store.get(&path).await?.bytes().await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| Error::Internal(format!("{name}: reading {path}: {e}")))?;
        for batch in reader {
            out.push(batch?);
        }
    }
    Ok(out)
}

/// The erased users, as loaded by [`load_erased`]: what ingest must not write.
#[derive(Debug, Clone, Default)]
pub struct ErasedUsers {
    key: Option<ErasureKey>,
    /// Erased from every app, with the latest `erased_at`.
    everywhere: HashMap<UserHash, i64>,
    /// Erased from some apps only, with the latest `erased_at` per app.
    by_app: HashMap<UserHash, HashMap<String, i64>>,
    tombstones: usize,
}

/// A batch arriving at ingest after [`ErasedUsers::apply_to_incoming`].
#[derive(Debug)]
pub struct Applied {
    /// The rows to store.
    pub batch: RecordBatch,
    /// Rows of erased users at or before their erasure: dropped.
    pub dropped: usize,
    /// Rows of erased users after their erasure: kept under the pseudonym.
    pub pseudonymized: usize,
}

impl ErasedUsers {
    /// No erased user.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A set from tombstones hashed under `key`.
    pub fn from_tombstones(key: ErasureKey, tombstones: &[Tombstone]) -> Self {
        let mut out = Self {
            key: Some(key),
            tombstones: tombstones.len(),
            ..Self::default()
        };
        for t in tombstones {
            let at = match &t.app_id {
                None => out.everywhere.entry(t.user_hash).or_insert(t.erased_at),
                Some(app) => out
                    .by_app
                    .entry(t.user_hash)
                    .or_default()
                    .entry(app.clone())
                    .or_insert(t.erased_at),
            };
            *at = (*at).max(t.erased_at);
        }
        out
    }

    /// Whether nothing was ever erased (then every check is free).
    pub fn is_empty(&self) -> bool {
        self.tombstones == 0
    }

    /// Number of tombstones.
    pub fn len(&self) -> usize {
        self.tombstones
    }

    /// The key the tombstones were hashed under.
    pub fn key(&self) -> Option<&ErasureKey> {
        self.key.as_ref()
    }

    /// Hashes of users erased from every app.
    pub fn erased_everywhere(&self) -> impl Iterator<Item = &UserHash> {
        self.everywhere.keys()
    }

    /// Hashes of users erased from some apps, with the apps.
    pub fn erased_by_app(
        &self,
    ) -> impl Iterator<Item = (&UserHash, impl Iterator<Item = &String>)> {
        self.by_app.iter().map(|(h, apps)| (h, apps.keys()))
    }

    /// Whether `user_id` was erased from every app. Rows that carry an
    /// `app_id` must be checked with [`covers`](Self::covers) instead, which
    /// also honours erasures from one app.
    pub fn contains(&self, user_id: &str) -> bool {
        match &self.key {
            Some(key) if !self.is_empty() => self.everywhere.contains_key(&key.hash(user_id)),
            _ => false,
        }
    }

    /// Whether a row of (`app_id`, `user_id`) belongs to an erased user: erased
    /// from every app, or from this app.
    pub fn covers(&self, app_id: Option<&str>, user_id: &str) -> bool {
        match &self.key {
            Some(key) if !self.is_empty() => self.covers_hash(app_id, &key.hash(user_id)),
            _ => false,
        }
    }

    /// [`covers`](Self::covers) for an already hashed user.
    pub fn covers_hash(&self, app_id: Option<&str>, hash: &UserHash) -> bool {
        self.erased_at(app_id, hash).is_some()
    }

    /// When the latest erasure covering a row of (`app_id`, user) took
    /// effect; `None` when no erasure covers it.
    pub fn erased_at(&self, app_id: Option<&str>, hash: &UserHash) -> Option<i64> {
        let everywhere = self.everywhere.get(hash).copied();
        let this_app = app_id.and_then(|a| self.by_app.get(hash)?.get(a).copied());
        everywhere.max(this_app)
    }

    /// Whether any erasure (from every app or from some) names this hash.
    pub fn names_hash(&self, hash: &UserHash) -> bool {
        self.everywhere.contains_key(hash) || self.by_app.contains_key(hash)
    }

    /// Whether raw message bytes (a quarantined message) mention an erased
    /// user: every JSON string and every run of id characters in them is
    /// hashed and looked up. An erasure from one app counts when the bytes
    /// also mention that app.
    pub fn mentioned_in(&self, raw: &[u8]) -> bool {
        let Some(key) = self.key.as_ref().filter(|_| !self.is_empty()) else {
            return false;
        };
        let tokens = tokens(raw);
        tokens.iter().any(|t| {
            let Ok(s) = std::str::from_utf8(t) else {
                return false;
            };
            let h = key.hash(s);
            self.everywhere.contains_key(&h)
                || self.by_app.get(&h).is_some_and(|apps| {
                    apps.keys()
                        .any(|a| tokens.iter().any(|t| t == &a.as_bytes()))
                })
        })
    }

    /// Which rows of a batch of `table` belong to erased users: true = drop.
    /// Uses the batch's `user_id` (and `app_id`) columns, or for `quarantine`
    /// the `raw` bytes; hashes each distinct user once. `None` when the table
    /// holds no user data (`apps`) or nothing was erased.
    pub fn doomed_rows(&self, table: &str, batch: &RecordBatch) -> Result<Option<BooleanArray>> {
        if self.is_empty() {
            return Ok(None);
        }
        let Some(key) = &self.key else {
            return Ok(None);
        };
        if table == tables::QUARANTINE {
            let Some(raw) = batch.column_by_name("raw") else {
                return Ok(None);
            };
            let raw = arrow::compute::cast(raw, &DataType::Binary)?;
            let raw = raw.as_binary::<i32>();
            return Ok(Some(
                (0..raw.len())
                    .map(|i| Some(raw.is_valid(i) && self.mentioned_in(raw.value(i))))
                    .collect(),
            ));
        }
        let Some(rows) = UserColumns::of(batch)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(batch.num_rows());
        rows.for_each(key, |_, row| {
            out.push(Some(row.is_some_and(|(h, app)| self.covers_hash(app, h))))
        });
        Ok(Some(out.into_iter().collect()))
    }

    /// `batch` without the rows of erased users, and how many were dropped.
    pub fn retain_batch(&self, table: &str, batch: RecordBatch) -> Result<(RecordBatch, usize)> {
        let Some(doomed) = self.doomed_rows(table, &batch)? else {
            return Ok((batch, 0));
        };
        let dropped = doomed.true_count();
        if dropped == 0 {
            return Ok((batch, 0));
        }
        let keep = arrow::compute::not(&doomed)?;
        Ok((arrow::compute::filter_record_batch(&batch, &keep)?, dropped))
    }

    /// What ingest stores of a batch of `table` (a topic's table or
    /// `quarantine`): rows of erased users whose `event_time` is at or before
    /// the erasure are dropped, later ones keep every field but the id, which
    /// becomes the [`pseudonym`]. Quarantined messages that mention an erased
    /// user are dropped whatever their time (their time is not known to be
    /// valid), as are rows of a table without `event_time`.
    pub fn apply_to_incoming(&self, table: &str, batch: RecordBatch) -> Result<Applied> {
        let unchanged = |batch| Applied {
            batch,
            dropped: 0,
            pseudonymized: 0,
        };
        let (Some(key), Some(rows), Some(times)) = (
            self.key.as_ref().filter(|_| !self.is_empty()),
            UserColumns::of(&batch)?,
            batch
                .column_by_name("event_time")
                .and_then(|c| c.as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>()),
        ) else {
            let (batch, dropped) = self.retain_batch(table, batch)?;
            return Ok(Applied {
                dropped,
                ..unchanged(batch)
            });
        };
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut renamed: Vec<(usize, String)> = Vec::new();
        rows.for_each(key, |i, row| {
            match row.and_then(|(h, app)| Some((h, self.erased_at(app, h)?))) {
                Some((_, at)) if times.is_null(i) || times.value(i) <= at => keep.push(false),
                Some((h, _)) => {
                    renamed.push((i, pseudonym(h)));
                    keep.push(true);
                }
                None => keep.push(true),
            }
        });
        let pseudonymized = renamed.len();
        let dropped = keep.iter().filter(|k| !**k).count();
        if dropped == 0 && pseudonymized == 0 {
            return Ok(unchanged(batch));
        }
        let mut batch = batch;
        if pseudonymized > 0 {
            let users = rows.users.as_string::<i32>();
            let mut ids: Vec<Option<&str>> = users.iter().collect();
            for (i, p) in &renamed {
                ids[*i] = Some(p);
            }
            let idx = batch.schema().index_of("user_id")?;
            let user_type = batch.column(idx).data_type().clone();
            let column: ArrayRef = Arc::new(StringArray::from(ids));
            let mut columns = batch.columns().to_vec();
            columns[idx] = arrow::compute::cast(&column, &user_type)?;
            batch = RecordBatch::try_new(batch.schema(), columns)?;
        }
        if dropped > 0 {
            batch = arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep))?;
        }
        Ok(Applied {
            batch,
            dropped,
            pseudonymized,
        })
    }
}

/// A batch's `user_id` and `app_id` as UTF-8, to hash each row's user.
struct UserColumns {
    users: ArrayRef,
    apps: Option<ArrayRef>,
}

impl UserColumns {
    /// `None` when the batch has no `user_id`.
    fn of(batch: &RecordBatch) -> Result<Option<Self>> {
        let Some(users) = batch.column_by_name("user_id") else {
            return Ok(None);
        };
        let utf8 = |a: &ArrayRef| arrow::compute::cast(a, &DataType::Utf8);
        Ok(Some(Self {
            users: utf8(users)?,
            apps: batch.column_by_name("app_id").map(utf8).transpose()?,
        }))
    }

    /// Calls `f(row, Some((hash, app)))` for each row, `f(row, None)` where
    /// `user_id` is null; each distinct user is hashed once.
    fn for_each(
        &self,
        key: &ErasureKey,
        mut f: impl FnMut(usize, Option<(&UserHash, Option<&str>)>),
    ) {
        let users = self.users.as_string::<i32>();
        let apps = self.apps.as_ref().map(|a| a.as_string::<i32>());
        let mut cache: HashMap<&str, UserHash> = HashMap::new();
        for i in 0..users.len() {
            if !users.is_valid(i) {
                f(i, None);
                continue;
            }
            let u = users.value(i);
            let h = *cache.entry(u).or_insert_with(|| key.hash(u));
            let app = apps.and_then(|a| a.is_valid(i).then(|| a.value(i)));
            f(i, Some((&h, app)));
        }
    }
}

/// Loads the erased users of the lake. Cheap when nothing was erased (one
/// listing). Fails if tombstones exist but the key is missing or differs from
/// the one they were hashed under: ingest must not run blind to erasures.
pub async fn load_erased(lake: &Lake) -> Result<ErasedUsers> {
    let tombstones = read_tombstones(lake).await?;
    if tombstones.is_empty() {
        return Ok(ErasedUsers::empty());
    }
    let key = ErasureKey::load(lake).await?.ok_or_else(|| {
        Error::ErasureKey(format!(
            "lake {lake} has {} erasure tombstones but no erasure key: set {KEY_ENV} to the key they were made with",
            tombstones.len()
        ))
    })?;
    if let Some((t, other)) = tombstones.iter().find(|(_, id)| id != key.id()) {
        return Err(Error::ErasureKey(format!(
            "tombstone {} was hashed under key {other}, but the key in use is {}: set {KEY_ENV} to the lake's key",
            t.erasure_id,
            key.id()
        )));
    }
    let list: Vec<Tombstone> = tombstones.into_iter().map(|(t, _)| t).collect();
    Ok(ErasedUsers::from_tombstones(key, &list))
}

/// The tokens of raw bytes that may be a user id: the contents of every
/// double-quoted string (escapes kept as written) and every maximal run of
/// characters other than JSON punctuation and white space.
pub fn tokens(raw: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    // Quoted strings.
    let mut i = 0;
    while let Some(off) = memchr_quote(&raw[i..]) {
        let start = i + off + 1;
        let mut j = start;
        while j < raw.len() && raw[j] != b'"' {
            j += if raw[j] == b'\\' { 2 } else { 1 };
        }
        let end = j.min(raw.len());
        if end > start {
            out.push(&raw[start..end]);
        }
        i = end + 1;
        if i >= raw.len() {
            break;
        }
    }
    // Runs of id characters (catch ids in broken JSON too).
    let is_sep = |b: u8| {
        matches!(
            b,
            b'"' | b'{' | b'}' | b'[' | b']' | b',' | b':' | b' ' | b'\t' | b'\r' | b'\n' | b'\\'
        )
    };
    for run in raw.split(|b| is_sep(*b)) {
        if !run.is_empty() {
            out.push(run);
        }
    }
    out
}

fn memchr_quote(s: &[u8]) -> Option<usize> {
    s.iter().position(|b| *b == b'"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    fn key() -> ErasureKey {
        ErasureKey::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .unwrap()
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // (The key is padded to 16 bytes here: check through the raw HMAC.)
        let k = ErasureKey::from_bytes(b"Jefe\0\0\0\0\0\0\0\0\0\0\0\0").unwrap();
        assert_eq!(
            hex::encode(k.mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ErasureKey::from_bytes(b"short").is_err());
        assert!(ErasureKey::from_hex("zz").is_err());
    }

    #[test]
    fn covers_everywhere_and_by_app() {
        let k = key();
        let users = ErasedUsers::from_tombstones(
            k.clone(),
            &[
                Tombstone::new(&k, "u-1", None, None, 0),
                Tombstone::new(&k, "u-2", Some("app-a"), None, 0),
            ],
        );
        assert!(users.contains("u-1"));
        assert!(!users.contains("u-2"));
        assert!(users.covers(Some("app-z"), "u-1"));
        assert!(users.covers(Some("app-a"), "u-2"));
        assert!(!users.covers(Some("app-b"), "u-2"));
        assert!(!users.covers(None, "u-2"));
        assert!(!users.covers(Some("app-a"), "u-3"));
        assert!(users.mentioned_in(br#"{"user_id":"u-1","event_time":"bad"#));
        assert!(users.mentioned_in(b"garbage u-1 more"));
        assert!(!users.mentioned_in(br#"{"user_id":"u-10"}"#));
        assert!(users.mentioned_in(br#"{"app_id":"app-a","user_id":"u-2"#));
        assert!(!users.mentioned_in(br#"{"app_id":"app-b","user_id":"u-2"}"#));
        assert!(!ErasedUsers::empty().covers(Some("a"), "u-1"));
    }

    #[test]
    fn retain_batch_drops_erased_rows() {
        let k = key();
        let users =
            ErasedUsers::from_tombstones(k.clone(), &[Tombstone::new(&k, "u-1", None, None, 0)]);
        let batch = RecordBatch::try_from_iter(vec![
            (
                "app_id",
                Arc::new(StringArray::from(vec!["a", "a", "b"])) as ArrayRef,
            ),
            (
                "user_id",
                Arc::new(StringArray::from(vec![Some("u-1"), None, Some("u-2")])) as ArrayRef,
            ),
        ])
        .unwrap();
        let (kept, dropped) = users.retain_batch(tables::API_ACCESS, batch).unwrap();
        assert_eq!((kept.num_rows(), dropped), (2, 1));
    }

    #[test]
    fn events_after_the_erasure_are_kept_under_the_pseudonym() {
        let k = key();
        let users = ErasedUsers::from_tombstones(
            k.clone(),
            &[
                Tombstone::new(&k, "u-1", None, None, 100),
                Tombstone::new(&k, "u-2", Some("a"), None, 200),
            ],
        );
        let rows = [
            // (app, user, time): what happens
            ("a", Some("u-1"), 50),  // dropped: before u-1's erasure
            ("b", Some("u-1"), 100), // dropped: at it
            ("b", Some("u-1"), 101), // pseudonym
            ("a", Some("u-2"), 150), // dropped: before u-2's erasure from a
            ("a", Some("u-2"), 250), // pseudonym
            ("b", Some("u-2"), 150), // kept: u-2 was erased from a only
            ("a", None, 10),         // kept
            ("a", Some("u-3"), 10),  // kept
        ];
        let batch = RecordBatch::try_from_iter(vec![
            (
                "app_id",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "user_id",
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))) as ArrayRef,
            ),
            (
                "event_time",
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )) as ArrayRef,
            ),
        ])
        .unwrap();
        let out = users.apply_to_incoming(tables::API_ACCESS, batch).unwrap();
        assert_eq!((out.dropped, out.pseudonymized), (3, 2));
        let ids: Vec<Option<String>> = out
            .batch
            .column_by_name("user_id")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|u| u.map(str::to_string))
            .collect();
        let p1 = pseudonym(&k.hash("u-1"));
        let p2 = pseudonym(&k.hash("u-2"));
        assert!(p1.starts_with("erased:") && !p1.contains("u-1"));
        assert_eq!(
            ids,
            vec![
                Some(p1),
                Some(p2),
                Some("u-2".into()),
                None,
                Some("u-3".into())
            ]
        );
        // The pseudonym is no erased user: a sweep leaves it, ingest again keeps it.
        let again = users
            .apply_to_incoming(tables::API_ACCESS, out.batch)
            .unwrap();
        assert_eq!((again.dropped, again.pseudonymized), (0, 0));
        // Quarantined messages naming an erased user are dropped whatever their time.
        let quarantined = RecordBatch::try_from_iter(vec![(
            "raw",
            Arc::new(arrow::array::BinaryArray::from_vec(vec![
                br#"{"user_id":"u-1","event_time":"2099-01-01T00:00:00Z""#.as_slice(),
                b"{}",
            ])) as ArrayRef,
        )])
        .unwrap();
        let out = users
            .apply_to_incoming(tables::QUARANTINE, quarantined)
            .unwrap();
        assert_eq!((out.batch.num_rows(), out.dropped), (1, 1));
    }

    #[tokio::test]
    async fn tombstones_round_trip_and_key_is_checked() {
        let lake = Lake::open("memory:///lake").unwrap();
        assert!(load_erased(&lake).await.unwrap().is_empty());
        let k = ErasureKey::load_or_create(&lake).await.unwrap();
        assert_eq!(
            ErasureKey::load_or_create(&lake).await.unwrap().id(),
            k.id()
        );
        let t = Tombstone::new(&k, "u-9", None, Some("user_request"), 1_000_000);
        assert_eq!(
            append_tombstones(&lake, &k, std::slice::from_ref(&t))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            append_tombstones(&lake, &k, std::slice::from_ref(&t))
                .await
                .unwrap(),
            0
        );
        let erased = load_erased(&lake).await.unwrap();
        assert_eq!(erased.len(), 1);
        assert!(erased.contains("u-9"));
        assert!(!erased.contains("u-8"));
        // The id never lands in the table.
        let store = lake.object_store().unwrap();
        let listing: Vec<_> = store.list(None).try_collect().await.unwrap();
        for meta in listing {
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(!bytes.windows(3).any(|w| w == b"u-9"), "{}", meta.location);
        }
        // A different key is refused.
        store
            .put(&KEY_OBJECT.into(), PutPayload::from(hex::encode([7u8; 32])))
            .await
            .unwrap();
        let err = load_erased(&lake).await.unwrap_err();
        assert!(err.to_string().contains("hashed under key"), "{err}");
    }
}
