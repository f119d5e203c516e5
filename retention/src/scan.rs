//! Looking for a user inside an object's bytes, below the table layer.
//!
//! Two ways, because the id is known in plaintext only sometimes:
//!
//! ```text
//! plaintext (verify --user, erase)  raw bytes of the object           memmem
//!                                   + Parquet: every byte-array column chunk,
//!                                     decompressed page by page          memmem
//!                                     (all-dictionary chunks: the dictionary only)
//! keyed hash (tombstones only)      JSON/text: every token            HMAC, set lookup
//!                                   Parquet data: user_id / app_id / raw columns
//!                                   Parquet checkpoint: every string value's tokens
//! ```
//!
//! A plaintext match is of the whole id ([`find_whole`]); bytes found only
//! inside a longer id are confirmed on decoded values (see [`find_plain`]).
//!
//! A zstd-compressed page hides its strings from a raw byte scan, hence the
//! page decoding. Strings in PLAIN pages are 4-byte-length-prefixed, so an id
//! (which holds no NUL bytes) cannot match across two values. Column chunks
//! using DELTA_BYTE_ARRAY (prefix-compressed, never written by auditlake) are
//! decoded through Arrow instead.

use std::collections::HashMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use bytes::Bytes;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::basic::{Encoding, Type as PhysicalType};
use deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use deltalake::parquet::file::page_index::column_index::ColumnIndexMetaData;
use deltalake::parquet::file::reader::RowGroupReader;
use memchr::memmem::Finder;

use crate::object::ObjectBytes;
use crate::{Error, Result};
use auditlake_schemas::erasure::{ErasedUsers, ErasureKey, UserHash, tokens};

/// Where in an object a match was found.
pub type Place = String;

/// How much of a Parquet data file a plaintext search decompresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    /// Every byte-array column: the id is nowhere, in any column.
    Deep,
    /// Only the columns a user id is stored in ([`FAST_COLUMNS`]), with
    /// `user_id` chunks whose min/max exclude the id skipped: the rows
    /// erasure removes are gone. The raw bytes of every object (statistics,
    /// footers, uncompressed pages) and the whole log are still searched.
    Fast,
    /// [`Fast`](Self::Fast) for the files the lake's tables reference in
    /// the tables that hold users' rows (where an erasure removes rows by
    /// `user_id`), [`Deep`](Self::Deep) for everything else: unreferenced
    /// files (a restored backup, an orphan), other tables (the evidence, the
    /// tombstones, `apps`), anything not Parquet. The default: everything
    /// an erasure is responsible for, at the cost of a point lookup (see
    /// the crate README).
    #[default]
    Standard,
}

/// The columns a [`Depth::Fast`] search decompresses.
pub const FAST_COLUMNS: [&str; 2] = ["user_id", "raw"];

impl std::str::FromStr for Depth {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "deep" => Ok(Self::Deep),
            "fast" => Ok(Self::Fast),
            "standard" => Ok(Self::Standard),
            other => Err(format!("{other:?}: expected standard, deep or fast")),
        }
    }
}

/// Whether `bytes` look like a Parquet file (magic at both ends).
pub fn is_parquet(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1")
}

/// Where `hay` holds the needle as a whole id: an occurrence that no ASCII
/// letter or digit extends into a longer run on either side (`u1002` inside
/// `u10023` is another user's id, not this one). The offset of the first.
pub fn find_whole(hay: &[u8], finder: &Finder<'_>) -> Option<usize> {
    if finder.needle().is_empty() {
        return None;
    }
    finder
        .find_iter(hay)
        .find(|&at| is_whole_at(hay, at, finder.needle()))
}

/// Whether the occurrence of (non-empty) `id` at `at` in `hay` is whole.
fn is_whole_at(hay: &[u8], at: usize, id: &[u8]) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric();
    let end = at + id.len();
    let extended_before = at > 0 && word(id[0]) && word(hay[at - 1]);
    let extended_after = end < hay.len() && word(id[id.len() - 1]) && word(hay[end]);
    !extended_before && !extended_after
}

/// Finds the plaintext `finder` as a whole id (see [`find_whole`]) in an
/// object. The raw bytes first: an occurrence whole there is whole in the
/// value holding it too (a neighbour is either the value's own byte or
/// framing around it), so it is found at once. An occurrence only inside a
/// longer run of letters and digits is confirmed on values: the text of a
/// UTF-8 object, the decoded strings of a Parquet column, the statistics of
/// a Parquet footer; so is one that (for Parquet) a decompressed page of a
/// byte-array column `depth` says holds. What cannot be confirmed that way
/// (an occurrence in a binary object, in a Parquet chunk of another type,
/// or in footer bytes no statistic explains) counts as found.
pub fn find_plain(
    path: &str,
    object: &ObjectBytes,
    finder: &Finder<'_>,
    depth: Depth,
) -> Result<Option<Place>> {
    if finder.needle().is_empty() {
        return Ok(None);
    }
    // One pass: a whole occurrence ends the search, the others are kept.
    let mut raw = Vec::new();
    for (offset, bytes) in object.parts() {
        for at in finder.find_iter(bytes) {
            if is_whole_at(bytes, at, finder.needle()) {
                return Ok(Some(format!("raw bytes at offset {}", offset + at as u64)));
            }
            raw.push(offset + at as u64);
        }
    }
    if !object.is_parquet() {
        let utf8 = object
            .as_whole()
            .is_some_and(|b| std::str::from_utf8(b).is_ok());
        return Ok(match raw.first() {
            Some(at) if !utf8 => Some(format!("raw bytes at offset {at}")),
            _ => None,
        });
    }
    find_in_parquet(path, object, finder, depth, &raw)
}

fn find_in_parquet(
    path: &str,
    object: &ObjectBytes,
    finder: &Finder<'_>,
    depth: Depth,
    raw: &[u64],
) -> Result<Option<Place>> {
    let meta = object.metadata().map_err(|e| Error::parquet(path, e))?;
    let schema = meta.file_metadata().schema_descr();
    let is_bytes = |i: usize| {
        matches!(
            schema.column(i).physical_type(),
            PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY
        )
    };
    // Leaf columns to decode, and whether some occurrence lies outside
    // every column chunk (the footer, the page index).
    let mut candidates = std::collections::BTreeSet::new();
    let mut outside_chunks = None;
    for &at in raw {
        let chunk = meta.row_groups().iter().find_map(|rg| {
            rg.columns().iter().enumerate().find_map(|(i, col)| {
                let (start, len) = col.byte_range();
                let range = start..start + len;
                range
                    .contains(&at)
                    .then(|| (i, object.holds(range.clone())))
            })
        });
        match chunk {
            // A byte-array chunk fetched whole: its values decide.
            Some((i, true)) if is_bytes(i) => {
                candidates.insert(i);
            }
            Some((i, _)) => {
                return Ok(Some(format!(
                    "raw bytes at offset {at} (column {})",
                    schema.column(i).path().string()
                )));
            }
            None => {
                outside_chunks.get_or_insert(at);
            }
        }
    }
    for (rg_index, rg) in meta.row_groups().iter().enumerate() {
        let row_group = object
            .row_group(&meta, rg_index)
            .map_err(|e| Error::parquet(path, e))?;
        for (col_index, col) in rg.columns().iter().enumerate() {
            if !is_bytes(col_index) || candidates.contains(&col_index) {
                continue;
            }
            if depth == Depth::Fast {
                let column = schema.column(col_index);
                let top = column
                    .path()
                    .parts()
                    .first()
                    .map(String::as_str)
                    .unwrap_or("");
                if !FAST_COLUMNS.contains(&top) {
                    continue;
                }
                // `user_id` holds ids whole: a chunk whose range excludes
                // the id cannot hold it.
                if top == "user_id"
                    && let Some(st) = col.statistics()
                    && let (Some(min), Some(max)) = (st.min_bytes_opt(), st.max_bytes_opt())
                    && (finder.needle() < min || finder.needle() > max)
                {
                    continue;
                }
            }
            if col.encodings().any(|e| e == Encoding::DELTA_BYTE_ARRAY) {
                candidates.insert(col_index);
                continue;
            }
            let dictionary_only = col.dictionary_page_offset().is_some()
                && col.page_encoding_stats_mask().is_some_and(|m| {
                    m.is_only(Encoding::RLE_DICTIONARY) || m.is_only(Encoding::PLAIN_DICTIONARY)
                });
            let pages = row_group
                .get_column_page_reader(col_index)
                .map_err(|e| Error::parquet(path, e))?;
            for page in pages {
                let page = page.map_err(|e| Error::parquet(path, e))?;
                if find_whole(page.buffer(), finder).is_some() {
                    return Ok(Some(format!(
                        "column {} (row group {rg_index}, decompressed {:?} page)",
                        schema.column(col_index).path().string(),
                        page.page_type()
                    )));
                }
                if finder.find(page.buffer()).is_some() {
                    candidates.insert(col_index);
                    break;
                }
                if dictionary_only && page.is_dictionary_page() {
                    break;
                }
            }
        }
    }
    if !candidates.is_empty()
        && let Some((column, ())) = first_in_strings(path, object, Some(candidates), |v| {
            find_whole(v, finder).map(|_| ())
        })?
    {
        return Ok(Some(format!("column {column} (decoded)")));
    }
    match outside_chunks {
        Some(at) => Ok(explain_by_statistics(object, finder, at)),
        None => Ok(None),
    }
}

/// An occurrence of the id's bytes at `at`, outside every column chunk of a
/// Parquet object: found unless the column statistics (footer and page
/// index) hold the bytes, and only inside longer ids.
fn explain_by_statistics(object: &ObjectBytes, finder: &Finder<'_>, at: u64) -> Option<Place> {
    let found = || Some(format!("raw bytes at offset {at}"));
    let Ok(meta) = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(object)
    else {
        return found();
    };
    let schema = meta.file_metadata().schema_descr();
    let mut explained = false;
    let mut check = |value: Option<&[u8]>, column: usize| -> Option<Place> {
        let v = value?;
        if find_whole(v, finder).is_some() {
            return Some(format!(
                "statistics of column {} (raw bytes at offset {at})",
                schema.column(column).path().string()
            ));
        }
        explained |= finder.find(v).is_some();
        None
    };
    for rg in meta.row_groups() {
        for (i, col) in rg.columns().iter().enumerate() {
            if let Some(st) = col.statistics()
                && let Some(p) =
                    check(st.min_bytes_opt(), i).or_else(|| check(st.max_bytes_opt(), i))
            {
                return Some(p);
            }
        }
    }
    if let Some(index) = meta.column_index() {
        for rg in index {
            for (i, col) in rg.iter().enumerate() {
                if let ColumnIndexMetaData::BYTE_ARRAY(c)
                | ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(c) = col
                {
                    for v in c.min_values_iter().chain(c.max_values_iter()) {
                        if let Some(p) = check(v, i) {
                            return Some(p);
                        }
                    }
                }
            }
        }
    }
    if explained { None } else { found() }
}

/// Calls `f` on every string or binary value inside `array` (through lists,
/// structs, maps and dictionaries) until it returns true; returns whether it did.
pub fn visit_strings(array: &dyn Array, f: &mut dyn FnMut(&[u8]) -> bool) -> bool {
    macro_rules! each {
        ($arr:expr) => {{
            let a = $arr;
            for i in 0..a.len() {
                if a.is_valid(i) && f(a.value(i).as_ref()) {
                    return true;
                }
            }
            false
        }};
    }
    match array.data_type() {
        DataType::Utf8 => each!(array.as_string::<i32>()),
        DataType::LargeUtf8 => each!(array.as_string::<i64>()),
        DataType::Utf8View => each!(array.as_string_view()),
        DataType::Binary => each!(array.as_binary::<i32>()),
        DataType::LargeBinary => each!(array.as_binary::<i64>()),
        DataType::BinaryView => each!(array.as_binary_view()),
        DataType::FixedSizeBinary(_) => each!(array.as_fixed_size_binary()),
        DataType::List(_) => visit_strings(array.as_list::<i32>().values().as_ref(), f),
        DataType::LargeList(_) => visit_strings(array.as_list::<i64>().values().as_ref(), f),
        DataType::Struct(_) => array
            .as_struct()
            .columns()
            .iter()
            .any(|c| visit_strings(c.as_ref(), f)),
        DataType::Map(_, _) => {
            let m = array.as_map();
            visit_strings(m.keys().as_ref(), f) || visit_strings(m.values().as_ref(), f)
        }
        DataType::Dictionary(_, _) => array
            .as_any_dictionary_opt()
            .is_some_and(|d| visit_strings(d.values().as_ref(), f)),
        _ => false,
    }
}

/// Keyed hashes of byte strings, computed once per distinct value and shared
/// by the threads of one verification (a user id recurs in every file).
pub struct HashCache {
    key: ErasureKey,
    map: std::sync::Mutex<HashMap<Box<[u8]>, Option<UserHash>>>,
}

/// Entries kept before a [`HashCache`] starts over (bounds its memory).
const HASH_CACHE_ENTRIES: usize = 4_000_000;

impl HashCache {
    /// A cache hashing under `key`.
    pub fn new(key: ErasureKey) -> Self {
        Self {
            key,
            map: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The keyed hash of `value` (`None` if it is not UTF-8: not an id).
    pub fn hash(&self, value: &[u8]) -> Option<UserHash> {
        if let Some(h) = self.map.lock().expect("hash cache lock").get(value) {
            return *h;
        }
        let h = std::str::from_utf8(value).ok().map(|s| self.key.hash(s));
        let mut map = self.map.lock().expect("hash cache lock");
        if map.len() >= HASH_CACHE_ENTRIES {
            map.clear();
        }
        map.insert(value.into(), h);
        h
    }
}

/// Keyed-hash lookups of tokens against the users erased from every app.
pub struct HashedNeedles<'a> {
    hashes: &'a HashCache,
    erased: &'a ErasedUsers,
}

impl<'a> HashedNeedles<'a> {
    /// Needles for `erased`; `None` when nothing was erased from every app.
    pub fn new(erased: &'a ErasedUsers, hashes: &'a HashCache) -> Option<Self> {
        erased.erased_everywhere().next()?;
        Some(Self { hashes, erased })
    }

    /// The keyed hash of `token` if it is the id of a user erased from
    /// every app.
    pub fn erased_hash(&mut self, token: &[u8]) -> Option<UserHash> {
        self.hashes
            .hash(token)
            .filter(|h| self.erased.covers_hash(None, h))
    }

    /// Whether `token` is the id of a user erased from every app.
    pub fn is_erased(&mut self, token: &[u8]) -> bool {
        self.erased_hash(token).is_some()
    }

    /// The first token of `text` naming an erased user, as a place (the
    /// token itself is not reported: it is an erased id) and its hash.
    pub fn find_in_text(&mut self, text: &[u8]) -> Option<(Place, UserHash)> {
        for t in tokens(text) {
            if let Some(h) = self.erased_hash(t) {
                let offset = t.as_ptr() as usize - text.as_ptr() as usize;
                return Some((format!("an erased user's id at byte {offset}"), h));
            }
        }
        None
    }

    /// The first string value (any column) of a Parquet object holding a
    /// token that names an erased user, and its hash.
    pub fn find_in_parquet_strings(
        &mut self,
        path: &str,
        object: &ObjectBytes,
    ) -> Result<Option<(Place, UserHash)>> {
        let hit = first_in_strings(path, object, None, |v| {
            tokens(v).into_iter().find_map(|t| self.erased_hash(t))
        })?;
        Ok(hit.map(|(column, h)| (format!("column {column}: an erased user's id"), h)))
    }
}

/// Decodes a Parquet object (the leaf columns `leaves`, or every column)
/// and calls `test` on its string and binary values until it answers:
/// the answer and the name of the top-level column holding the value.
fn first_in_strings<T>(
    path: &str,
    object: &ObjectBytes,
    leaves: Option<std::collections::BTreeSet<usize>>,
    mut test: impl FnMut(&[u8]) -> Option<T>,
) -> Result<Option<(String, T)>> {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(object.clone())
        .map_err(|e| Error::parquet(path, e))?;
    if let Some(leaves) = leaves {
        let mask = ProjectionMask::leaves(builder.parquet_schema(), leaves);
        builder = builder.with_projection(mask);
    }
    let reader = builder.build().map_err(|e| Error::parquet(path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::parquet(path, e))?;
        for (i, col) in batch.columns().iter().enumerate() {
            let mut hit = None;
            visit_strings(col.as_ref(), &mut |v| {
                hit = test(v);
                hit.is_some()
            });
            if let Some(t) = hit {
                return Ok(Some((batch.schema().field(i).name().clone(), t)));
            }
        }
    }
    Ok(None)
}

/// The distinct values of a top-level byte-array column, read from the
/// dictionary pages alone, when every data page of every chunk of it is
/// dictionary-encoded; `None` otherwise (or if the column is absent).
pub fn dictionary_values(
    path: &str,
    object: &ObjectBytes,
    column: &str,
) -> Result<Option<Vec<Bytes>>> {
    let meta = object.metadata().map_err(|e| Error::parquet(path, e))?;
    let schema = meta.file_metadata().schema_descr();
    let Some(index) = (0..schema.num_columns()).find(|i| {
        let c = schema.column(*i);
        c.path().parts().len() == 1 && c.name() == column
    }) else {
        return Ok(None);
    };
    let mut values = Vec::new();
    for (rg_index, rg) in meta.row_groups().iter().enumerate() {
        let col = rg.column(index);
        let dictionary_only = col.column_type() == PhysicalType::BYTE_ARRAY
            && col.dictionary_page_offset().is_some()
            && col.page_encoding_stats_mask().is_some_and(|m| {
                m.is_only(Encoding::RLE_DICTIONARY) || m.is_only(Encoding::PLAIN_DICTIONARY)
            });
        if !dictionary_only {
            return Ok(None);
        }
        let mut pages = object
            .row_group(&meta, rg_index)
            .and_then(|r| r.get_column_page_reader(index))
            .map_err(|e| Error::parquet(path, e))?;
        let Some(page) = pages
            .next()
            .transpose()
            .map_err(|e| Error::parquet(path, e))?
        else {
            continue;
        };
        if !page.is_dictionary_page() {
            return Ok(None);
        }
        // PLAIN byte arrays: a 4-byte little-endian length, then the bytes.
        let buf = page.buffer();
        let mut at = 0usize;
        while at + 4 <= buf.len() {
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            at += 4;
            if at + len > buf.len() {
                return Ok(None);
            }
            values.push(buf.slice(at..at + len));
            at += len;
        }
    }
    Ok(Some(values))
}

/// Rows of erased users in a data file, checked by keyed hash on its
/// `user_id`/`app_id` (or, for `quarantine`, `raw`) columns. When `user_id`
/// is dictionary-encoded throughout and no dictionary value is an erased
/// user, the answer (0) comes from the dictionaries alone.
pub fn erased_rows_in_data(
    path: &str,
    table: &str,
    object: &ObjectBytes,
    erased: &ErasedUsers,
    hashes: &HashCache,
) -> Result<u64> {
    Ok(erased_rows_outside_holds(path, table, object, erased, hashes, &[])?.unheld)
}

/// Rows of erased users in a data file, split by whether a legal hold
/// covers them.
#[derive(Debug, Default)]
pub struct ErasedRows {
    /// Rows no hold covers: a failure.
    pub unheld: u64,
    /// Rows a hold covers (the erasure is pending for them).
    pub held: u64,
    /// Keyed hashes of the users whose rows are held (`user_id` tables).
    pub held_users: std::collections::HashSet<UserHash>,
}

/// [`erased_rows_in_data`], with rows under `holds` counted apart.
pub fn erased_rows_outside_holds(
    path: &str,
    table: &str,
    object: &ObjectBytes,
    erased: &ErasedUsers,
    hashes: &HashCache,
    holds: &[crate::policy::Hold],
) -> Result<ErasedRows> {
    let mut out = ErasedRows::default();
    if !may_hold_erased(path, table, object, erased, hashes)? {
        return Ok(out);
    }
    let cols: &[&str] = if !holds.is_empty() {
        &crate::filters::FILTER_COLUMNS
    } else if erased.erased_by_app().next().is_some() {
        // `app_id` only matters for erasures from one app.
        &["user_id", "app_id", "raw"]
    } else {
        &["user_id", "raw"]
    };
    tracing::debug!(
        path,
        "erased-user check decodes the file's user columns (no dictionary rules it out)"
    );
    let batches = crate::files::decode(path, object.clone(), Some(cols))?;
    for b in batches {
        let Some(mask) = erased
            .doomed_rows(table, &b)
            .map_err(|e| Error::parquet(path, e))?
        else {
            continue;
        };
        if holds.is_empty() {
            out.unheld += mask.true_count() as u64;
            continue;
        }
        let c = crate::filters::Cols::of(table, &b)?;
        for i in (0..b.num_rows()).filter(|i| mask.value(*i)) {
            if c.held_by(i, holds).is_some() {
                out.held += 1;
                if let Some(h) = c.user(i).and_then(|u| hashes.hash(u.as_bytes())) {
                    out.held_users.insert(h);
                }
            } else {
                out.unheld += 1;
            }
        }
    }
    Ok(out)
}

/// Whether a data file may hold rows of erased users: false only when its
/// `user_id` dictionaries prove it holds none (see [`dictionary_values`]).
pub fn may_hold_erased(
    path: &str,
    table: &str,
    object: &ObjectBytes,
    erased: &ErasedUsers,
    hashes: &HashCache,
) -> Result<bool> {
    if erased.is_empty() {
        return Ok(false);
    }
    if table == auditlake_schemas::tables::QUARANTINE {
        return Ok(true);
    }
    match dictionary_values(path, object, "user_id")? {
        Some(values) => Ok(values
            .iter()
            .any(|v| hashes.hash(v).is_some_and(|h| erased.names_hash(&h)))),
        None => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ListBuilder, RecordBatch, StringBuilder};
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::basic::{Compression, ZstdLevel};
    use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use std::sync::Arc;

    fn parquet(values: &[&str], list: &[&str]) -> Bytes {
        parquet_with(
            values,
            list,
            EnabledStatistics::None,
            Compression::ZSTD(ZstdLevel::try_new(3).unwrap()),
        )
    }

    fn parquet_with(
        values: &[&str],
        list: &[&str],
        statistics: EnabledStatistics,
        compression: Compression,
    ) -> Bytes {
        let mut lb = ListBuilder::new(StringBuilder::new());
        for v in list {
            lb.values().append_value(v);
            lb.append(true);
        }
        let batch = RecordBatch::try_from_iter(vec![
            (
                "s",
                Arc::new(arrow::array::StringArray::from(values.to_vec())) as _,
            ),
            ("l", Arc::new(lb.finish()) as _),
        ])
        .unwrap();
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_statistics_enabled(statistics)
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        Bytes::from(buf)
    }

    #[test]
    fn dictionary_values_of_a_dictionary_column() {
        let vals: Vec<String> = (0..5000).map(|i| format!("user-{:06}", i % 50)).collect();
        let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
        let bytes = ObjectBytes::whole(parquet(&refs, &vec!["a"; refs.len()]));
        let got = dictionary_values("t.parquet", &bytes, "s")
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 50);
        assert_eq!(&got[0][..], b"user-000000");
        assert!(
            dictionary_values("t.parquet", &bytes, "nope")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn finds_ids_inside_compressed_pages() {
        // Repetitive values compress well: the id is not in the raw bytes.
        let mut vals: Vec<String> = (0..5000).map(|i| format!("user-{:06}", i % 50)).collect();
        vals.push("needle-user-777".into());
        let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
        let list: Vec<&str> = vec!["a"; refs.len()];
        let bytes = ObjectBytes::whole(parquet(&refs, &list));
        let f = Finder::new("needle-user-777");
        assert!(
            find_plain("t.parquet", &bytes, &f, Depth::Deep)
                .unwrap()
                .is_some()
        );
        let place = find_plain("t.parquet", &bytes, &f, Depth::Deep)
            .unwrap()
            .unwrap();
        assert!(place.contains("column s"), "{place}");
        // A prefix of stored ids, in no raw byte: the decompressed pages
        // hold its bytes, the decoded values show they are other ids.
        let prefix = Finder::new("user-00004");
        assert!(bytes.parts().iter().all(|(_, b)| prefix.find(b).is_none()));
        assert_eq!(
            find_plain("t.parquet", &bytes, &prefix, Depth::Deep).unwrap(),
            None
        );
        let absent = Finder::new("user-999999");
        assert_eq!(
            find_plain("t.parquet", &bytes, &absent, Depth::Deep).unwrap(),
            None
        );
        // Fast: only user columns ("s" is not one).
        assert_eq!(
            find_plain("t.parquet", &bytes, &f, Depth::Fast).unwrap(),
            None
        );
        // In a list column too.
        let mut list2 = list.clone();
        list2[3] = "needle-user-777";
        let bytes = ObjectBytes::whole(parquet(&list, &list2));
        // (The small dictionary of `l` is in the raw bytes: its pages alone.)
        let place = find_in_parquet("t.parquet", &bytes, &f, Depth::Deep, &[])
            .unwrap()
            .unwrap();
        assert!(place.contains("column l"), "{place}");
    }

    #[test]
    fn a_whole_id_is_not_extended_by_letters_or_digits() {
        let f = Finder::new("u1002");
        assert_eq!(find_whole(b"u1002", &f), Some(0));
        assert_eq!(find_whole(b"u10023", &f), None);
        assert_eq!(find_whole(b"xu1002", &f), None);
        assert_eq!(find_whole(b"u10023 u1002", &f), Some(7));
        assert_eq!(find_whole(br#"{"user_id":"u1002"}"#, &f), Some(12));
        assert_eq!(find_whole(b"u1002-x u1002.", &f), Some(0));
        assert_eq!(find_whole(b"", &f), None);
        assert_eq!(find_whole(b"abc", &Finder::new("")), None);
        // An id ending in punctuation is whole wherever its bytes are.
        assert_eq!(find_whole(b"a-1-2", &Finder::new("-1-")), Some(1));
    }

    /// Another user's id that begins with this one's (`u1002` / `u10023`)
    /// is no trace of it: not in the values, the statistics, the page index
    /// nor uncompressed pages; the id itself is found in each of them.
    #[test]
    fn a_longer_id_holding_the_bytes_is_not_the_user() {
        let f = Finder::new("u1002");
        for compression in [
            Compression::UNCOMPRESSED,
            Compression::ZSTD(ZstdLevel::try_new(3).unwrap()),
        ] {
            for stats in [
                EnabledStatistics::None,
                EnabledStatistics::Chunk,
                EnabledStatistics::Page,
            ] {
                let others = ["u10023", "u10024", "u10029"];
                let bytes = ObjectBytes::whole(parquet_with(
                    &others,
                    &["a", "b", "u100299"],
                    stats,
                    compression,
                ));
                assert!(
                    bytes.parts().iter().any(|(_, b)| f.find(b).is_some()),
                    "the bytes are in the file ({stats:?}, {compression:?})"
                );
                for depth in [Depth::Deep, Depth::Fast] {
                    assert_eq!(
                        find_plain("t.parquet", &bytes, &f, depth).unwrap(),
                        None,
                        "{stats:?}, {compression:?}, {depth:?}"
                    );
                }
                // The id itself, as a value and inside a list.
                for (values, list, column) in [
                    (&["u10023", "u1002", "u10024"], &["a", "b", "c"], "column s"),
                    (&others, &["a", "u1002", "b"], "column l"),
                ] {
                    let mine = ObjectBytes::whole(parquet_with(values, list, stats, compression));
                    let place = find_plain("t.parquet", &mine, &f, Depth::Deep).unwrap();
                    assert!(place.is_some(), "{column}: {stats:?}, {compression:?}");
                }
            }
        }
    }

    #[test]
    fn text_objects_hold_the_id_only_whole() {
        let f = Finder::new("u1002");
        let log = br#"{"add":{"stats":"{\"minValues\":{\"user_id\":\"u10023\"}}"}}"#;
        let object = ObjectBytes::whole(Bytes::from_static(log));
        assert_eq!(
            find_plain("00.json", &object, &f, Depth::Deep).unwrap(),
            None
        );
        let log = br#"{"add":{"stats":"{\"minValues\":{\"user_id\":\"u1002\"}}"}}"#;
        let object = ObjectBytes::whole(Bytes::from_static(log));
        assert!(
            find_plain("00.json", &object, &f, Depth::Deep)
                .unwrap()
                .is_some()
        );
        // Not UTF-8: any occurrence of the bytes counts.
        let object = ObjectBytes::whole(Bytes::from_static(b"\xffu10023"));
        assert!(
            find_plain("blob", &object, &f, Depth::Deep)
                .unwrap()
                .is_some()
        );
    }
}
