//! The retention floor: per table, the first day a sweep kept. Rows dated
//! before it are past their keep time, and ingest must not write them back
//! (a backfill rerun, a Kafka replay from offset 0).
//!
//! ```text
//! retention sweep (not --dry-run) --> RetentionFloor::raise(lake, {table: first day kept})
//!                                       writes _auditlake/retention_floor/<version>.json
//! ingest (every flush)            --> RetentionFloor::load(lake)      the latest version
//!                                       .retain_batch(table, batch)  drops rows before it
//! ```
//!
//! The floor only rises: a sweep under a policy that keeps longer than an
//! earlier one does not lower it (what the earlier sweep deleted stays gone).
//! The sweep also records the policy's legal holds, and ingest keeps a row
//! older than the floor that a hold covers (a held app's late delivery), as
//! the sweep would have.
//!
//! Each raise writes a new version, numbered one past the latest, only if no
//! object of that number exists (`PutMode::Create`, the atomic put Delta's
//! commits rely on too). Two sweeps at once therefore cannot lose each
//! other's floor: the one that loses the race reads the winner's version,
//! merges its own days in and writes the next one. The last few versions are
//! kept. To let ingest write older days again on purpose, delete
//! `_auditlake/retention_floor/` (or write a higher version by hand). A lake
//! from before versions has one `_auditlake/retention_floor.json`; it is read
//! while no version exists, and the first raise carries it forward.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::Date32Type;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::erasure::ErasureKey;
use crate::tables::PARTITION_COLUMN;
use crate::{Error, Lake, Result};

/// Where the floor's versions are kept under the lake root: one
/// `<version>.json` per raise, 20 digits so names sort as numbers.
pub const FLOOR_PREFIX: &str = "_auditlake/retention_floor";

/// The single floor object of lakes written before versions; read while no
/// version exists.
pub const LEGACY_FLOOR_OBJECT: &str = "_auditlake/retention_floor.json";

/// Versions kept after a raise (older ones are deleted): enough that a
/// reader that listed just before a raise still finds the one it listed.
const VERSIONS_KEPT: u64 = 5;

/// Raises that lose the race to another sweep are retried this many times.
const RAISE_ATTEMPTS: usize = 32;

fn version_path(version: u64) -> object_store::path::Path {
    format!("{FLOOR_PREFIX}/{version:020}.json").into()
}

/// Per table, the first day kept (days since 1970-01-01, as `date`), and
/// the legal holds in force at the last sweep. Stored as
/// `{"tables": {"api_access": "2026-11-07"}, "holds": [{"app": "app-3"}]}`.
#[derive(Debug, Clone, Default)]
pub struct RetentionFloor {
    /// Table -> first day kept.
    pub tables: BTreeMap<String, i32>,
    /// Legal holds: rows they cover are kept below the floor.
    pub holds: Vec<FloorHold>,
    /// The lake's erasure key, to match rows against holds on a user (kept
    /// by keyed hash); loaded with a floor that has such holds.
    key: Option<ErasureKey>,
}

impl PartialEq for RetentionFloor {
    fn eq(&self, other: &Self) -> bool {
        self.tables == other.tables && self.holds == other.holds
    }
}

impl Eq for RetentionFloor {}

/// A legal hold as ingest applies it: every criterion given must match the
/// row's `app_id`, user and `event_time` (`[from, until)`). A hold on a
/// user names them by keyed hash (`user_hash`, as `erasures` does), never
/// by id: the floor must not keep an id that an erasure removes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloorHold {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The held user's keyed hash (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_hash: Option<String>,
    /// A user id in plain text, as the first floors (a development
    /// version) stored it: read, never written.
    #[serde(default, skip_serializing)]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl FloorHold {
    fn covers(
        &self,
        key: Option<&ErasureKey>,
        app: Option<&str>,
        user: Option<&str>,
        time: Option<i64>,
    ) -> bool {
        // A hold on a user matches by hash; without the key it matches none.
        let user_matches = match (&self.user_hash, &self.user) {
            (Some(hash), _) => key
                .zip(user)
                .is_some_and(|(k, u)| k.hash(u).to_string() == *hash),
            (None, Some(plain)) => user == Some(plain.as_str()),
            (None, None) => true,
        };
        user_matches
            && HoldCriteria {
                app: self.app.as_deref(),
                user: None,
                from: self.from.map(|t| t.timestamp_micros()),
                until: self.until.map(|t| t.timestamp_micros()),
            }
            .covers(app, user, time)
    }

    fn on_user(&self) -> bool {
        self.user_hash.is_some()
    }
}

/// What a legal hold matches, borrowed from wherever the hold is kept: the
/// one rule ingest (the floor) and retention (sweeps, erasures, verify)
/// apply.
#[derive(Debug, Clone, Copy)]
pub struct HoldCriteria<'a> {
    /// Only rows of this app.
    pub app: Option<&'a str>,
    /// Only rows of this user.
    pub user: Option<&'a str>,
    /// Only rows at or after this time (UTC microseconds).
    pub from: Option<i64>,
    /// Only rows before this time (UTC microseconds).
    pub until: Option<i64>,
}

impl HoldCriteria<'_> {
    /// Whether a row with these values is covered. A `None` app or user (the
    /// table has no such column) does not match a criterion on it; a row
    /// without a time matches any time bound.
    pub fn covers(&self, app: Option<&str>, user: Option<&str>, time: Option<i64>) -> bool {
        self.app.is_none_or(|w| app == Some(w))
            && self.user.is_none_or(|w| user == Some(w))
            && self.from.is_none_or(|f| time.is_none_or(|t| t >= f))
            && self.until.is_none_or(|u| time.is_none_or(|t| t < u))
    }
}

/// The stored form: days as `YYYY-MM-DD`, for an operator to read or edit.
#[derive(Serialize, Deserialize)]
struct Stored {
    tables: BTreeMap<String, chrono::NaiveDate>,
    #[serde(default)]
    holds: Vec<FloorHold>,
}

const EPOCH: chrono::NaiveDate = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");

impl Stored {
    fn of(floor: &RetentionFloor) -> Self {
        let tables = floor
            .tables
            .iter()
            .map(|(t, d)| {
                (
                    t.clone(),
                    EPOCH + chrono::Days::new(u64::try_from(*d).unwrap_or(0)),
                )
            })
            .collect();
        Self {
            tables,
            holds: floor.holds.clone(),
        }
    }

    fn floor(self) -> RetentionFloor {
        let tables = self
            .tables
            .into_iter()
            .map(|(t, d)| (t, (d - EPOCH).num_days() as i32))
            .collect();
        RetentionFloor {
            tables,
            holds: self.holds,
            key: None,
        }
    }
}

impl RetentionFloor {
    /// The lake's floor; empty when no sweep ever deleted by keep time.
    pub async fn load(lake: &Lake) -> Result<Self> {
        Ok(Self::load_versioned(lake).await?.0)
    }

    /// The latest floor and its version (0: none, or only the legacy object).
    async fn load_versioned(lake: &Lake) -> Result<(Self, u64)> {
        let store = lake.object_store()?;
        // A raise deletes old versions: one listed here may be gone by the
        // time it is read; list again then.
        for _ in 0..RAISE_ATTEMPTS {
            let prefix = object_store::path::Path::from(FLOOR_PREFIX);
            let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
            let latest = listed
                .iter()
                .filter_map(|meta| {
                    let name = meta.location.filename()?;
                    name.strip_suffix(".json")?.parse::<u64>().ok()
                })
                .max();
            let (path, version) = match latest {
                Some(v) => (version_path(v), v),
                None => (LEGACY_FLOOR_OBJECT.into(), 0),
            };
            match store.get(&path).await {
                Ok(got) => {
                    let bytes = got.bytes().await?;
                    let mut floor = serde_json::from_slice::<Stored>(&bytes)
                        .map(Stored::floor)
                        .map_err(|e| Error::Floor {
                            path: format!("{path} under {lake}"),
                            reason: format!(
                                "not {{\"tables\": {{\"TABLE\": \"YYYY-MM-DD\", ...}}}}: {e}; \
                                 fix it, or delete {FLOOR_PREFIX}/ to let ingest write any \
                                 day again"
                            ),
                        })?;
                    if floor.holds.iter().any(FloorHold::on_user) {
                        floor.key = ErasureKey::load(lake).await?;
                    }
                    return Ok((floor, version));
                }
                Err(object_store::Error::NotFound { .. }) if version == 0 => {
                    return Ok((Self::default(), 0));
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Floor {
            path: format!("{FLOOR_PREFIX}/ under {lake}"),
            reason: format!(
                "its latest version vanished {RAISE_ATTEMPTS} times while being read \
                 (something keeps deleting it)"
            ),
        })
    }

    /// Raises the floor of each table in `first_kept` (never lowers one),
    /// records `holds` (the policy's, replacing the last sweep's) and stores
    /// it as a new version; returns the floor now in force. A sweep that
    /// raced this one and stored its version first is merged, not lost.
    pub async fn raise(
        lake: &Lake,
        first_kept: &BTreeMap<String, i32>,
        holds: Vec<FloorHold>,
    ) -> Result<Self> {
        let store = lake.object_store()?;
        for _ in 0..RAISE_ATTEMPTS {
            let (mut floor, version) = Self::load_versioned(lake).await?;
            let mut changed = floor.holds != holds || version == 0 && !floor.tables.is_empty();
            floor.holds = holds.clone();
            if floor.key.is_none() && floor.holds.iter().any(FloorHold::on_user) {
                floor.key = ErasureKey::load(lake).await?;
            }
            for (table, day) in first_kept {
                let at = floor.tables.entry(table.clone()).or_insert(i32::MIN);
                if *day > *at {
                    *at = *day;
                    changed = true;
                }
            }
            if !changed {
                return Ok(floor);
            }
            let text = serde_json::to_string_pretty(&Stored::of(&floor))
                .map_err(|e| Error::Internal(format!("encoding the retention floor: {e}")))?;
            let next = version + 1;
            let put = store
                .put_opts(
                    &version_path(next),
                    PutPayload::from(text),
                    PutOptions {
                        mode: PutMode::Create,
                        ..Default::default()
                    },
                )
                .await;
            match put {
                Ok(_) => {
                    if version == 0 {
                        // Carried forward: the legacy object must not come
                        // back into force if the versions are deleted.
                        match store.delete(&LEGACY_FLOOR_OBJECT.into()).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                    // Old versions go; a failure only leaves them behind.
                    for old in
                        next.saturating_sub(VERSIONS_KEPT + 8)..=next.saturating_sub(VERSIONS_KEPT)
                    {
                        if old > 0 {
                            match store.delete(&version_path(old)).await {
                                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                                Err(e) => {
                                    tracing::warn!(version = old, error = %e, "keeping an old retention floor version");
                                }
                            }
                        }
                    }
                    return Ok(floor);
                }
                // Another sweep stored this version first: merge with it.
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Floor {
            path: format!("{FLOOR_PREFIX}/ under {lake}"),
            reason: format!(
                "{RAISE_ATTEMPTS} other writers stored a version first; run the sweep again"
            ),
        })
    }

    /// The first day kept of `table`, if a sweep set one.
    pub fn first_kept(&self, table: &str) -> Option<i32> {
        self.tables.get(table).copied()
    }

    /// `batch` (of `table`) without the rows dated before the table's floor
    /// that no hold covers, and how many were dropped.
    pub fn retain_batch(&self, table: &str, batch: RecordBatch) -> Result<(RecordBatch, usize)> {
        let (Some(floor), Some(dates)) = (
            self.first_kept(table),
            batch
                .column_by_name(PARTITION_COLUMN)
                .and_then(|c| c.as_primitive_opt::<Date32Type>()),
        ) else {
            return Ok((batch, 0));
        };
        let text = |name: &str| -> Result<Option<arrow::array::ArrayRef>> {
            Ok(match batch.column_by_name(name) {
                Some(c) if !self.holds.is_empty() => {
                    Some(arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)?)
                }
                _ => None,
            })
        };
        let (apps, users) = (text("app_id")?, text("user_id")?);
        let (apps, users) = (
            apps.as_ref().map(|c| c.as_string::<i32>()),
            users.as_ref().map(|c| c.as_string::<i32>()),
        );
        fn value(c: Option<&arrow::array::StringArray>, i: usize) -> Option<&str> {
            c.filter(|c| c.is_valid(i)).map(|c| c.value(i))
        }
        let times = batch
            .column_by_name("event_time")
            .and_then(|c| c.as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>());
        let held = |i: usize| {
            let time = times.filter(|t| t.is_valid(i)).map(|t| t.value(i));
            self.holds
                .iter()
                .any(|h| h.covers(self.key.as_ref(), value(apps, i), value(users, i), time))
        };
        let keep: BooleanArray = dates
            .iter()
            .enumerate()
            .map(|(i, d)| Some(d.is_none_or(|d| d >= floor) || held(i)))
            .collect();
        let dropped = keep.len() - keep.true_count();
        if dropped == 0 {
            return Ok((batch, 0));
        }
        Ok((arrow::compute::filter_record_batch(&batch, &keep)?, dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Date32Array, StringArray};

    #[tokio::test]
    async fn a_damaged_floor_is_an_error_naming_it() {
        let lake = Lake::open("memory:///damaged").unwrap();
        lake.object_store()
            .unwrap()
            .put(&version_path(7), PutPayload::from("{\"tables\": 3}"))
            .await
            .unwrap();
        let err = RetentionFloor::load(&lake).await.unwrap_err().to_string();
        assert!(
            err.starts_with("retention floor _auditlake/retention_floor/00000000000000000007.json")
                && !err.contains("bug"),
            "{err}"
        );
    }

    /// Sweeps raising the floor at once each land their days: none
    /// overwrites another's (the lost update of a plain put).
    #[tokio::test]
    async fn racing_raises_lose_no_table() {
        let dir = tempfile::tempdir().unwrap();
        for root in [
            "memory:///race".to_string(),
            dir.path().display().to_string(),
        ] {
            let lake = Lake::open(&root).unwrap();
            let raises = (0..12).map(|i| {
                let lake = lake.clone();
                tokio::spawn(async move {
                    let first_kept = BTreeMap::from([(format!("table_{i}"), 100 + i)]);
                    RetentionFloor::raise(&lake, &first_kept, vec![]).await
                })
            });
            for raise in futures::future::join_all(raises).await {
                raise.unwrap().unwrap();
            }
            let floor = RetentionFloor::load(&lake).await.unwrap();
            for i in 0..12 {
                assert_eq!(
                    floor.first_kept(&format!("table_{i}")),
                    Some(100 + i),
                    "{root}"
                );
            }
            // Old versions were pruned: the last few are kept.
            let store = lake.object_store().unwrap();
            let prefix = object_store::path::Path::from(FLOOR_PREFIX);
            let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
            assert!(
                (1..=VERSIONS_KEPT as usize + 1).contains(&listed.len()),
                "{root}: {listed:?}"
            );
        }
    }

    /// A hold on a user is stored by keyed hash, never by id (an erasure
    /// must leave no id behind), and still lets the user's old rows in.
    #[tokio::test]
    async fn a_hold_on_a_user_keeps_no_id() {
        let lake = Lake::open("memory:///held-user").unwrap();
        let key = ErasureKey::load_or_create(&lake).await.unwrap();
        let hold = FloorHold {
            user_hash: Some(key.hash("user-held-17").to_string()),
            ..FloorHold::default()
        };
        RetentionFloor::raise(
            &lake,
            &BTreeMap::from([("api_access".into(), 100)]),
            vec![hold],
        )
        .await
        .unwrap();
        let store = lake.object_store().unwrap();
        let stored = store
            .get(&version_path(1))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&stored);
        assert!(
            !text.contains("user-held-17") && text.contains("user_hash"),
            "{text}"
        );

        let floor = RetentionFloor::load(&lake).await.unwrap();
        let rows = RecordBatch::try_from_iter(vec![
            (
                "user_id",
                Arc::new(StringArray::from(vec!["user-held-17", "user-other"])) as ArrayRef,
            ),
            (
                PARTITION_COLUMN,
                Arc::new(Date32Array::from(vec![99, 99])) as ArrayRef,
            ),
        ])
        .unwrap();
        let (kept, dropped) = floor.retain_batch("api_access", rows).unwrap();
        assert_eq!((kept.num_rows(), dropped), (1, 1));
        let users = kept.column(0).as_string::<i32>();
        assert_eq!(users.value(0), "user-held-17");
    }

    /// A lake's floor from before versions still holds, and the first raise
    /// carries it forward and removes it.
    #[tokio::test]
    async fn the_legacy_floor_is_carried_forward() {
        let lake = Lake::open("memory:///legacy").unwrap();
        let store = lake.object_store().unwrap();
        store
            .put(
                &LEGACY_FLOOR_OBJECT.into(),
                PutPayload::from(r#"{"tables": {"api_access": "2026-11-07"}}"#),
            )
            .await
            .unwrap();
        let day = (chrono::NaiveDate::from_ymd_opt(2026, 11, 7).unwrap() - EPOCH).num_days() as i32;
        assert_eq!(
            RetentionFloor::load(&lake)
                .await
                .unwrap()
                .first_kept("api_access"),
            Some(day)
        );
        let floor = RetentionFloor::raise(&lake, &BTreeMap::from([("grants".into(), 5)]), vec![])
            .await
            .unwrap();
        assert_eq!(floor.first_kept("api_access"), Some(day));
        assert_eq!(floor.first_kept("grants"), Some(5));
        assert!(matches!(
            store.get(&LEGACY_FLOOR_OBJECT.into()).await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert_eq!(RetentionFloor::load(&lake).await.unwrap(), floor);
    }

    #[tokio::test]
    async fn the_floor_only_rises_and_drops_older_rows() {
        let lake = Lake::open("memory:///floor").unwrap();
        assert_eq!(
            RetentionFloor::load(&lake).await.unwrap(),
            Default::default()
        );
        let set = |pairs: &[(&str, i32)]| -> BTreeMap<String, i32> {
            pairs.iter().map(|(t, d)| (t.to_string(), *d)).collect()
        };
        RetentionFloor::raise(&lake, &set(&[("api_access", 100), ("grants", 50)]), vec![])
            .await
            .unwrap();
        // A later sweep under a longer keep does not lower it.
        let floor =
            RetentionFloor::raise(&lake, &set(&[("api_access", 90), ("grants", 60)]), vec![])
                .await
                .unwrap();
        assert_eq!(floor.first_kept("api_access"), Some(100));
        assert_eq!(floor.first_kept("grants"), Some(60));
        assert_eq!(RetentionFloor::load(&lake).await.unwrap(), floor);
        let stored = lake
            .object_store()
            .unwrap()
            .get(&version_path(2))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&stored).contains(r#""api_access": "1970-04-11""#),
            "{}",
            String::from_utf8_lossy(&stored)
        );

        let batch = RecordBatch::try_from_iter(vec![
            (
                "event_id",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            (
                PARTITION_COLUMN,
                Arc::new(Date32Array::from(vec![99, 100, 101])) as ArrayRef,
            ),
        ])
        .unwrap();
        let (kept, dropped) = floor.retain_batch("api_access", batch.clone()).unwrap();
        assert_eq!((kept.num_rows(), dropped), (2, 1));
        // A table without a floor keeps everything.
        let (kept, dropped) = floor.retain_batch("deletions", batch).unwrap();
        assert_eq!((kept.num_rows(), dropped), (3, 0));

        // A row below the floor that a hold covers is kept.
        let hold = FloorHold {
            app: Some("app-3".into()),
            ..FloorHold::default()
        };
        let floor = RetentionFloor::raise(&lake, &set(&[]), vec![hold.clone()])
            .await
            .unwrap();
        assert_eq!(floor.holds, vec![hold]);
        let rows = RecordBatch::try_from_iter(vec![
            (
                "app_id",
                Arc::new(StringArray::from(vec!["app-3", "app-4"])) as ArrayRef,
            ),
            (
                PARTITION_COLUMN,
                Arc::new(Date32Array::from(vec![99, 99])) as ArrayRef,
            ),
        ])
        .unwrap();
        let (kept, dropped) = floor.retain_batch("api_access", rows).unwrap();
        assert_eq!((kept.num_rows(), dropped), (1, 1));
        assert_eq!(RetentionFloor::load(&lake).await.unwrap(), floor);
    }
}
