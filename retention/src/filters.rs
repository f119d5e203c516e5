//! Row filters: which rows of a file an erasure or a sweep removes, and which
//! a legal hold keeps.

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Result;
use crate::files::DataFile;
use crate::policy::Hold;
use crate::rewrite::RowFilter;
use crate::scan::HashCache;
use auditlake_schemas::erasure::{self, ErasedUsers, ErasureKey};
use auditlake_schemas::tables;
use deltalake::parquet::file::metadata::RowGroupMetaData;
use deltalake::parquet::file::statistics::Statistics;

/// Tables that hold users' data, in the order erasure visits them. `apps`
/// (the app registry) names no user.
pub const USER_TABLES: [&str; 6] = [
    tables::API_ACCESS,
    tables::GRANTS,
    tables::DELETIONS,
    tables::QUARANTINE,
    tables::FINDINGS,
    tables::OBLIGATIONS,
];

/// Columns that give a row's time, in order of preference.
pub const TIME_COLUMNS: [&str; 5] = [
    "event_time",
    "window_start",
    "created_at",
    "ingested_at",
    "evaluated_at",
];

/// Every column a filter may read.
pub const FILTER_COLUMNS: [&str; 8] = [
    "user_id",
    "app_id",
    "raw",
    "event_time",
    "window_start",
    "created_at",
    "ingested_at",
    "evaluated_at",
];

/// The columns of one batch a filter looks at.
pub struct Cols {
    user: Option<ArrayRef>,
    app: Option<ArrayRef>,
    raw: Option<ArrayRef>,
    times: Vec<ArrayRef>,
    /// Rows are raw messages (`quarantine`): ids are searched in the bytes.
    pub raw_only: bool,
}

impl Cols {
    /// The filter columns of `batch` (of `table`), cast to plain types.
    pub fn of(table: &str, batch: &RecordBatch) -> Result<Self> {
        let get = |name: &str, to: &DataType| -> Result<Option<ArrayRef>> {
            Ok(match batch.column_by_name(name) {
                Some(c) => Some(arrow::compute::cast(c, to)?),
                None => None,
            })
        };
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let mut times = Vec::new();
        for name in TIME_COLUMNS {
            if let Some(c) = get(name, &ts)? {
                times.push(c);
            }
        }
        Ok(Self {
            user: get("user_id", &DataType::Utf8)?,
            app: get("app_id", &DataType::Utf8)?,
            raw: get("raw", &DataType::Binary)?,
            times,
            raw_only: table == tables::QUARANTINE,
        })
    }

    /// `user_id` of row `i`.
    pub fn user(&self, i: usize) -> Option<&str> {
        let a = self.user.as_ref()?.as_string::<i32>();
        a.is_valid(i).then(|| a.value(i))
    }

    /// `app_id` of row `i`.
    pub fn app(&self, i: usize) -> Option<&str> {
        let a = self.app.as_ref()?.as_string::<i32>();
        a.is_valid(i).then(|| a.value(i))
    }

    /// `raw` bytes of row `i`.
    pub fn raw(&self, i: usize) -> Option<&[u8]> {
        let a = self.raw.as_ref()?.as_binary::<i32>();
        a.is_valid(i).then(|| a.value(i))
    }

    /// The row's time (UTC microseconds): its first non-null time column.
    pub fn time(&self, i: usize) -> Option<i64> {
        self.times.iter().find_map(|c| {
            let a = c.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            a.is_valid(i).then(|| a.value(i))
        })
    }

    /// Whether the raw message of row `i` names `needle` as a whole token
    /// (a quoted string or a run of id characters, as ingest and sweep match
    /// erased users): `u12` does not match a message about `u123`.
    fn raw_mentions(&self, i: usize, needle: &str) -> bool {
        self.raw(i)
            .is_some_and(|r| auditlake_schemas::erasure::tokens(r).contains(&needle.as_bytes()))
    }

    /// Whether row `i` has this user (and app): by columns, or for raw
    /// messages by the bytes mentioning them.
    pub fn is_users(&self, i: usize, user: &str, app: Option<&str>) -> bool {
        if self.raw_only {
            self.raw_mentions(i, user) && app.is_none_or(|a| self.raw_mentions(i, a))
        } else {
            self.user(i) == Some(user) && app.is_none_or(|a| self.app(i) == Some(a))
        }
    }

    /// The first hold covering row `i`.
    pub fn held_by<'h>(&self, i: usize, holds: &'h [Hold]) -> Option<&'h Hold> {
        holds.iter().find(|h| {
            let (app, user) = if self.raw_only {
                (
                    h.app.as_deref().filter(|a| self.raw_mentions(i, a)),
                    h.user.as_deref().filter(|u| self.raw_mentions(i, u)),
                )
            } else {
                (self.app(i), self.user(i))
            };
            h.covers(app, user, self.time(i))
        })
    }
}

/// `holds` and, for each hold on a user's id, the same hold on the user's
/// pseudonym (`erased:<hash>` under `key`): a hold on U keeps the rows stored
/// under U's pseudonym after an erasure of U too. Without a key nothing was
/// ever erased, so no row carries a pseudonym.
pub fn with_pseudonym_holds(holds: &[Hold], key: Option<&ErasureKey>) -> Vec<Hold> {
    let mut out = holds.to_vec();
    if let Some(key) = key {
        for h in holds {
            if let Some(u) = h
                .user
                .as_deref()
                .filter(|u| erasure::parse_pseudonym(u).is_none())
            {
                out.push(Hold {
                    user: Some(erasure::pseudonym(&key.hash(u))),
                    ..h.clone()
                });
            }
        }
    }
    out
}

/// Whether a hold may cover rows of `file` (by day and statistics).
pub fn hold_may_cover(hold: &Hold, table: &str, file: &DataFile) -> bool {
    let raw = table == tables::QUARANTINE;
    file.date.is_none_or(|d| hold.may_cover_day(d))
        && hold
            .app
            .as_deref()
            .is_none_or(|a| raw || file.may_hold("app_id", a))
        && hold
            .user
            .as_deref()
            .is_none_or(|u| raw || file.may_hold("user_id", u))
}

/// The erasure of one user (plaintext), optionally from one app.
pub struct UserFilter {
    /// Table being filtered.
    pub table: String,
    /// The user id.
    pub user: String,
    /// Only this app's rows.
    pub app: Option<String>,
    /// The user's pseudonym (`erased:<hash>`): rows stored under it since an
    /// earlier erasure are the user's too.
    pub pseudonym: Option<String>,
    /// Holds: covered rows are never doomed (they are counted instead).
    pub holds: Vec<Hold>,
    /// The user's rows kept because a hold covers them: per file read, the
    /// rows per hold (index into `holds`). Set per file, so a rerun of a
    /// table's step does not count twice.
    pub held: std::sync::Mutex<std::collections::BTreeMap<String, BTreeMap<usize, u64>>>,
}

impl UserFilter {
    /// A filter of `table` for `user` (and `app`), keeping rows `holds` cover.
    pub fn new(table: &str, user: &str, app: Option<&str>, holds: Vec<Hold>) -> Self {
        Self {
            table: table.to_string(),
            user: user.to_string(),
            app: app.map(str::to_string),
            pseudonym: None,
            holds,
            held: Default::default(),
        }
    }

    /// Rows of the user kept under each hold (index into `holds`), over the
    /// files read.
    pub fn held_rows(&self) -> BTreeMap<usize, u64> {
        let mut out = BTreeMap::new();
        for per_file in self.held.lock().expect("held lock").values() {
            for (h, n) in per_file {
                *out.entry(*h).or_default() += n;
            }
        }
        out
    }

    /// Whether `file` may hold the user's rows, by partition statistics.
    pub fn may_match(&self, file: &DataFile) -> bool {
        if self.table == tables::QUARANTINE {
            return true;
        }
        self.ids().any(|id| file.may_hold("user_id", id))
            && self
                .app
                .as_deref()
                .is_none_or(|a| file.may_hold("app_id", a))
    }

    /// The ids the user's rows carry: the id, and the pseudonym if any.
    fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.user.as_str()).chain(self.pseudonym.as_deref())
    }

    /// The user's rows in `batch`, and among them the held ones.
    pub fn matches(&self, batch: &RecordBatch) -> Result<(BooleanArray, BooleanArray)> {
        let c = Cols::of(&self.table, batch)?;
        let mut doomed = Vec::with_capacity(batch.num_rows());
        let mut held = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let mine = self.ids().any(|id| c.is_users(i, id, self.app.as_deref()));
            let h = mine && c.held_by(i, &self.holds).is_some();
            doomed.push(Some(mine && !h));
            held.push(Some(h));
        }
        Ok((doomed.into_iter().collect(), held.into_iter().collect()))
    }
}

impl RowFilter for UserFilter {
    fn columns(&self) -> Vec<&'static str> {
        // Holds need app and time; otherwise the user (raw for quarantine),
        // and the app for an erasure from one app.
        if !self.holds.is_empty() {
            FILTER_COLUMNS.to_vec()
        } else if self.app.is_some() {
            vec!["user_id", "app_id", "raw"]
        } else {
            vec!["user_id", "raw"]
        }
    }
    fn begin_file(&self, file: &DataFile) {
        self.held.lock().expect("held lock").remove(&file.path);
    }
    fn may_doom(&self, _file: &DataFile, group: &RowGroupMetaData) -> bool {
        // Quarantine rows name the user in their raw bytes, which have no
        // usable statistics.
        if self.table == tables::QUARANTINE {
            return true;
        }
        let Some(idx) = group
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.path().parts() == ["user_id"])
        else {
            return true;
        };
        match group.column(idx).statistics() {
            Some(Statistics::ByteArray(s)) => match (s.min_bytes_opt(), s.max_bytes_opt()) {
                // Bounds (a truncated maximum is rounded up): the user's rows
                // can only lie between them.
                (Some(lo), Some(hi)) => self
                    .ids()
                    .any(|id| lo <= id.as_bytes() && id.as_bytes() <= hi),
                // No bounds: every value null, or no statistics kept.
                _ => s.null_count_opt() != u64::try_from(group.num_rows()).ok(),
            },
            _ => true,
        }
    }
    fn doomed(&self, file: &DataFile, batch: &RecordBatch) -> Result<BooleanArray> {
        let (doomed, held) = self.matches(batch)?;
        let mut per_hold: BTreeMap<usize, u64> = BTreeMap::new();
        if held.true_count() > 0 {
            let c = Cols::of(&self.table, batch)?;
            for i in (0..batch.num_rows()).filter(|i| held.value(*i)) {
                if let Some(hold) = c.held_by(i, &self.holds)
                    && let Some(h) = self.holds.iter().position(|h| std::ptr::eq(h, hold))
                {
                    *per_hold.entry(h).or_default() += 1;
                }
            }
        }
        let mut map = self.held.lock().expect("held lock");
        let entry = map.entry(file.path.clone()).or_default();
        for (h, n) in per_hold {
            *entry.entry(h).or_default() += n;
        }
        Ok(doomed)
    }
}

/// A sweep's filter for one table: rows past the table's cutoff day, and
/// rows of erased users (by keyed hash), except rows under a hold.
pub struct SweepFilter {
    /// Table being filtered.
    pub table: String,
    /// First day kept (`None`: no expiry for this table).
    pub cutoff: Option<i32>,
    /// Legal holds.
    pub holds: Vec<Hold>,
    /// Erased users (`None` or empty: no erasure pass).
    pub erased: Option<Arc<ErasedUsers>>,
    /// Keyed hashes of the values seen (shared across files).
    pub hashes: Option<Arc<HashCache>>,
}

impl SweepFilter {
    /// Whether every row of `file` is past the cutoff.
    pub fn file_expired(&self, file: &DataFile) -> bool {
        matches!((self.cutoff, file.date), (Some(c), Some(d)) if d < c)
    }
}

impl RowFilter for SweepFilter {
    fn columns(&self) -> Vec<&'static str> {
        FILTER_COLUMNS.to_vec()
    }
    fn rules_out(&self, file: &DataFile, bytes: &bytes::Bytes) -> Result<bool> {
        if self.file_expired(file) {
            return Ok(false);
        }
        match (self.erased.as_deref(), self.hashes.as_deref()) {
            (Some(e), Some(h)) => Ok(!crate::scan::may_hold_erased(
                &file.path,
                &self.table,
                &crate::object::ObjectBytes::whole(bytes.clone()),
                e,
                h,
            )?),
            _ => Ok(false),
        }
    }

    fn doomed(&self, file: &DataFile, batch: &RecordBatch) -> Result<BooleanArray> {
        let expired = self.file_expired(file);
        let erased = match self.erased.as_deref() {
            Some(e) if !e.is_empty() => e.doomed_rows(&self.table, batch)?,
            _ => None,
        };
        let c = Cols::of(&self.table, batch)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                let gone = expired || erased.as_ref().is_some_and(|m| m.value(i));
                Some(gone && c.held_by(i, &self.holds).is_none())
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::BinaryArray;
    use arrow::datatypes::{Field, Schema};

    fn quarantine(raws: &[&[u8]]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("raw", DataType::Binary, true)]);
        let raw = BinaryArray::from_iter_values(raws.iter().copied());
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(raw)]).unwrap()
    }

    #[test]
    fn a_hold_on_a_user_keeps_their_pseudonymized_rows() {
        let key = ErasureKey::from_hex(&"ab".repeat(32)).unwrap();
        let hold = Hold {
            line: 3,
            reason: "litigation".into(),
            app: None,
            user: Some("u-1".into()),
            from: None,
            until: None,
        };
        assert_eq!(
            with_pseudonym_holds(std::slice::from_ref(&hold), None).len(),
            1
        );
        let holds = with_pseudonym_holds(std::slice::from_ref(&hold), Some(&key));
        assert_eq!(holds.len(), 2);
        let p = erasure::pseudonym(&key.hash("u-1"));
        let other = erasure::pseudonym(&key.hash("u-2"));
        let schema = Schema::new(vec![Field::new("user_id", DataType::Utf8, true)]);
        let users = arrow::array::StringArray::from(vec![p.as_str(), other.as_str(), "u-1"]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(users)]).unwrap();
        let c = Cols::of(tables::API_ACCESS, &batch).unwrap();
        let held: Vec<bool> = (0..3).map(|i| c.held_by(i, &holds).is_some()).collect();
        assert_eq!(held, vec![true, false, true]);
        // A hold on a pseudonym is not doubled.
        let on_pseudonym = Hold {
            user: Some(p),
            ..hold
        };
        assert_eq!(with_pseudonym_holds(&[on_pseudonym], Some(&key)).len(), 1);
    }

    #[test]
    fn raw_messages_match_whole_ids_only() {
        let batch = quarantine(&[
            br#"{"event_id":"e1","user_id":"u123","app_id":"app-1""#,
            br#"{"event_id":"e2","user_id":"u12","app_id":"app-1"}"#,
            b"broken u12,app-2",
        ]);
        let c = Cols::of(tables::QUARANTINE, &batch).unwrap();
        assert!(c.raw_only);
        // A prefix of another user's id is not that user.
        assert!(!c.is_users(0, "u12", None));
        assert!(c.is_users(0, "u123", Some("app-1")));
        assert!(c.is_users(1, "u12", None));
        assert!(!c.is_users(1, "u12", Some("app-2")));
        assert!(c.is_users(2, "u12", Some("app-2")));
        // Nor is a year inside a timestamp an id.
        assert!(!c.is_users(0, "2026", None));
    }
}
