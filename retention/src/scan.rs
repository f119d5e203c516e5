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
use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
use memchr::memmem::Finder;

use crate::{Error, Result};
use auditlake_schemas::erasure::{ErasedUsers, ErasureKey, UserHash, tokens};

/// Where in an object a match was found.
pub type Place = String;

/// Whether `bytes` look like a Parquet file (magic at both ends).
pub fn is_parquet(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1")
}

/// Finds the plaintext `finder` in an object: raw bytes first, then (for
/// Parquet) the decompressed pages of every byte-array column.
pub fn find_plain(path: &str, bytes: &Bytes, finder: &Finder<'_>) -> Result<Option<Place>> {
    if let Some(at) = finder.find(bytes) {
        return Ok(Some(format!("raw bytes at offset {at}")));
    }
    if !is_parquet(bytes) {
        return Ok(None);
    }
    find_in_pages(path, bytes, finder)
}

fn find_in_pages(path: &str, bytes: &Bytes, finder: &Finder<'_>) -> Result<Option<Place>> {
    let reader = SerializedFileReader::new(bytes.clone()).map_err(|e| Error::parquet(path, e))?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let mut arrow_fallback = Vec::new();
    for (rg_index, rg) in meta.row_groups().iter().enumerate() {
        let row_group = reader
            .get_row_group(rg_index)
            .map_err(|e| Error::parquet(path, e))?;
        for (col_index, col) in rg.columns().iter().enumerate() {
            if !matches!(
                col.column_type(),
                PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY
            ) {
                continue;
            }
            if col.encodings().any(|e| e == Encoding::DELTA_BYTE_ARRAY) {
                arrow_fallback.push(col_index);
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
                if finder.find(page.buffer()).is_some() {
                    return Ok(Some(format!(
                        "column {} (row group {rg_index}, decompressed {:?} page)",
                        schema.column(col_index).path().string(),
                        page.page_type()
                    )));
                }
                if dictionary_only && page.is_dictionary_page() {
                    break;
                }
            }
        }
    }
    if arrow_fallback.is_empty() {
        return Ok(None);
    }
    arrow_fallback.sort_unstable();
    arrow_fallback.dedup();
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(|e| Error::parquet(path, e))?;
    let mask = ProjectionMask::leaves(builder.parquet_schema(), arrow_fallback);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| Error::parquet(path, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| Error::parquet(path, e))?;
        for (i, col) in batch.columns().iter().enumerate() {
            let mut hit = false;
            visit_strings(col.as_ref(), &mut |v| {
                hit = finder.find(v).is_some();
                hit
            });
            if hit {
                return Ok(Some(format!(
                    "column {} (decoded)",
                    batch.schema().field(i).name()
                )));
            }
        }
    }
    Ok(None)
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

/// Keyed-hash lookups of tokens against the users erased from every app,
/// caching each token's verdict.
pub struct HashedNeedles<'a> {
    key: &'a ErasureKey,
    erased: &'a ErasedUsers,
    cache: HashMap<Vec<u8>, bool>,
}

impl<'a> HashedNeedles<'a> {
    /// Needles for `erased`; `None` when nothing was erased from every app.
    pub fn new(erased: &'a ErasedUsers) -> Option<Self> {
        let key = erased.key()?;
        erased.erased_everywhere().next()?;
        Some(Self {
            key,
            erased,
            cache: HashMap::new(),
        })
    }

    /// Whether `token` is the id of a user erased from every app.
    pub fn is_erased(&mut self, token: &[u8]) -> bool {
        if let Some(v) = self.cache.get(token) {
            return *v;
        }
        let v = std::str::from_utf8(token).is_ok_and(|s| {
            let h: UserHash = self.key.hash(s);
            self.erased.covers_hash(None, &h)
        });
        self.cache.insert(token.to_vec(), v);
        v
    }

    /// The first token of `text` naming an erased user, as a place (the
    /// token itself is not reported: it is an erased id).
    pub fn find_in_text(&mut self, text: &[u8]) -> Option<Place> {
        for t in tokens(text) {
            if self.is_erased(t) {
                let offset = t.as_ptr() as usize - text.as_ptr() as usize;
                return Some(format!("an erased user's id at byte {offset}"));
            }
        }
        None
    }

    /// The first string value (any column) of a Parquet object holding a
    /// token that names an erased user.
    pub fn find_in_parquet_strings(&mut self, path: &str, bytes: &Bytes) -> Result<Option<Place>> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .and_then(|b| b.build())
            .map_err(|e| Error::parquet(path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::parquet(path, e))?;
            for (i, col) in batch.columns().iter().enumerate() {
                let mut hit = false;
                visit_strings(col.as_ref(), &mut |v| {
                    hit = tokens(v).into_iter().any(|t| self.is_erased(t));
                    hit
                });
                if hit {
                    return Ok(Some(format!(
                        "column {}: an erased user's id",
                        batch.schema().field(i).name()
                    )));
                }
            }
        }
        Ok(None)
    }
}

/// Rows of erased users in a data file, checked by keyed hash on its
/// `user_id`/`app_id` (or, for `quarantine`, `raw`) columns.
pub fn erased_rows_in_data(
    path: &str,
    table: &str,
    bytes: &Bytes,
    erased: &ErasedUsers,
) -> Result<u64> {
    let cols: &[&str] = &["user_id", "app_id", "raw"];
    let batches = crate::files::decode(path, bytes.clone(), Some(cols), None)?;
    let mut n = 0;
    for b in batches {
        if let Some(mask) = erased
            .doomed_rows(table, &b)
            .map_err(|e| Error::parquet(path, e))?
        {
            n += mask.true_count() as u64;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ListBuilder, RecordBatch, StringBuilder};
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::basic::{Compression, ZstdLevel};
    use deltalake::parquet::file::properties::WriterProperties;
    use std::sync::Arc;

    fn parquet(values: &[&str], list: &[&str]) -> Bytes {
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
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
            .set_statistics_enabled(deltalake::parquet::file::properties::EnabledStatistics::None)
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        Bytes::from(buf)
    }

    #[test]
    fn finds_ids_inside_compressed_pages() {
        // Repetitive values compress well: the id is not in the raw bytes.
        let mut vals: Vec<String> = (0..5000).map(|i| format!("user-{:06}", i % 50)).collect();
        vals.push("needle-user-777".into());
        let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
        let list: Vec<&str> = vec!["a"; refs.len()];
        let bytes = parquet(&refs, &list);
        let f = Finder::new("needle-user-777");
        assert!(find_plain("t.parquet", &bytes, &f).unwrap().is_some());
        let place = find_in_pages("t.parquet", &bytes, &f).unwrap().unwrap();
        assert!(place.contains("column s"), "{place}");
        let absent = Finder::new("user-999999");
        assert_eq!(find_plain("t.parquet", &bytes, &absent).unwrap(), None);
        // In a list column too.
        let mut list2 = list.clone();
        list2[3] = "needle-user-777";
        let bytes = parquet(&list, &list2);
        let place = find_in_pages("t.parquet", &bytes, &f).unwrap().unwrap();
        assert!(place.contains("column l"), "{place}");
    }
}
