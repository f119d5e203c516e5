//! An object as verification reads it: whole, or (for a Parquet data file
//! when only some columns matter) its footer and those columns' chunks, with
//! ranged reads — about the bytes a query engine reads for a point lookup.
//!
//! [`ObjectBytes`] is a Parquet [`ChunkReader`] over the fetched ranges, at
//! their real file offsets: the Parquet readers work on it as on the file,
//! and fail loudly if they ask for a range that was not fetched.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::{Buf, Bytes};
use deltalake::ObjectStore;
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use deltalake::parquet::file::properties::ReaderProperties;
use deltalake::parquet::file::reader::{ChunkReader, Length};
use deltalake::parquet::file::serialized_reader::SerializedRowGroupReader;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::Result;

/// Fetched ranges of one object (`parts` sorted by offset, not overlapping).
#[derive(Debug, Clone)]
pub struct ObjectBytes {
    len: u64,
    parts: Arc<Vec<(u64, Bytes)>>,
    /// The Parquet footer, parsed once for every check that reads it.
    meta: Arc<OnceLock<Arc<ParquetMetaData>>>,
}

/// Footer bytes fetched at first: most Parquet footers fit.
const FOOTER_GUESS: u64 = 64 * 1024;

impl ObjectBytes {
    /// A whole object.
    pub fn whole(bytes: Bytes) -> Self {
        Self {
            len: bytes.len() as u64,
            parts: Arc::new(vec![(0, bytes)]),
            meta: Arc::default(),
        }
    }

    /// The Parquet footer (parsed on first use, or when it was fetched).
    pub fn metadata(&self) -> std::result::Result<Arc<ParquetMetaData>, ParquetError> {
        if let Some(m) = self.meta.get() {
            return Ok(m.clone());
        }
        let m = Arc::new(ParquetMetaDataReader::new().parse_and_finish(self)?);
        Ok(self.meta.get_or_init(|| m).clone())
    }

    /// A reader of row group `index` of `meta` (this object's footer).
    pub fn row_group<'a>(
        &self,
        meta: &'a ParquetMetaData,
        index: usize,
    ) -> std::result::Result<SerializedRowGroupReader<'a, ObjectBytes>, ParquetError> {
        SerializedRowGroupReader::new(
            Arc::new(self.clone()),
            meta.row_group(index),
            None,
            Arc::new(ReaderProperties::builder().build()),
        )
    }

    /// Whether every byte of the object is here.
    pub fn is_whole(&self) -> bool {
        self.parts.len() == 1 && self.parts[0].0 == 0 && self.parts[0].1.len() as u64 == self.len
    }

    /// Whether every byte of `range` was fetched.
    pub fn holds(&self, range: Range<u64>) -> bool {
        self.parts
            .iter()
            .any(|(off, b)| *off <= range.start && range.end <= off + b.len() as u64)
    }

    /// The fetched ranges and their bytes.
    pub fn parts(&self) -> &[(u64, Bytes)] {
        &self.parts
    }

    /// Bytes fetched.
    pub fn fetched(&self) -> u64 {
        self.parts.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Whether the object looks like a Parquet file (magic at both ends;
    /// a partial object's footer parsed when it was fetched).
    pub fn is_parquet(&self) -> bool {
        let head = self
            .parts
            .first()
            .is_some_and(|(o, b)| *o > 0 || b.starts_with(b"PAR1"));
        let tail = self
            .parts
            .last()
            .is_some_and(|(o, b)| o + b.len() as u64 == self.len && b.ends_with(b"PAR1"));
        self.len >= 12 && head && tail
    }

    /// The whole object, if fetched whole.
    pub fn as_whole(&self) -> Option<&Bytes> {
        self.is_whole().then(|| &self.parts[0].1)
    }

    fn slice(&self, start: u64, len: Option<usize>) -> std::result::Result<Bytes, ParquetError> {
        for (off, b) in self.parts.iter() {
            let end = off + b.len() as u64;
            if start >= *off && (start < end || (start == end && len.is_none_or(|l| l == 0))) {
                let from = (start - off) as usize;
                let to = match len {
                    Some(l) if from + l <= b.len() => from + l,
                    Some(l) => {
                        return Err(ParquetError::General(format!(
                            "range {start}+{l} was not fetched (have {off}..{end})"
                        )));
                    }
                    None => b.len(),
                };
                return Ok(b.slice(from..to));
            }
        }
        Err(ParquetError::General(format!(
            "offset {start} was not fetched"
        )))
    }
}

impl Length for ObjectBytes {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for ObjectBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> deltalake::parquet::errors::Result<Self::T> {
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> deltalake::parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// Reads a whole object (empty if it vanished meanwhile).
pub async fn fetch_whole(store: &dyn ObjectStore, path: &Path) -> Result<ObjectBytes> {
    match store.get(path).await {
        Ok(got) => Ok(ObjectBytes::whole(got.bytes().await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(ObjectBytes::whole(Bytes::new())),
        Err(e) => Err(e.into()),
    }
}

/// Reads a Parquet object's footer and the chunks of the top-level columns
/// named in `columns`; falls back to the whole object if it is small, not
/// Parquet, or its footer does not parse.
pub async fn fetch_columns(
    store: &dyn ObjectStore,
    path: &Path,
    size: u64,
    columns: &[&str],
) -> Result<ObjectBytes> {
    if size <= 2 * FOOTER_GUESS {
        return fetch_whole(store, path).await;
    }
    let tail_start = size - FOOTER_GUESS;
    let tail = match store.get_range(path, tail_start..size).await {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => return Ok(ObjectBytes::whole(Bytes::new())),
        Err(e) => return Err(e.into()),
    };
    if !tail.ends_with(b"PAR1") {
        return fetch_whole(store, path).await;
    }
    let n = tail.len();
    let meta_len = u32::from_le_bytes([tail[n - 8], tail[n - 7], tail[n - 6], tail[n - 5]]) as u64;
    let (footer_start, footer) = if meta_len + 8 <= FOOTER_GUESS {
        (tail_start, tail)
    } else {
        let start = size.saturating_sub(meta_len + 8);
        (start, store.get_range(path, start..size).await?)
    };
    let meta_bytes = &footer[footer.len() - 8 - meta_len as usize..footer.len() - 8];
    let Ok(meta) = ParquetMetaDataReader::decode_metadata(meta_bytes) else {
        return fetch_whole(store, path).await;
    };
    let schema = meta.file_metadata().schema_descr();
    let mut ranges: Vec<Range<u64>> = Vec::new();
    for rg in meta.row_groups() {
        for (i, col) in rg.columns().iter().enumerate() {
            let top = schema
                .column(i)
                .path()
                .parts()
                .first()
                .cloned()
                .unwrap_or_default();
            if columns.contains(&top.as_str()) {
                let (start, len) = col.byte_range();
                ranges.push(start..start + len);
            }
            // Page indexes hold every page's min/max: statistics are read
            // raw for every column.
            for (offset, len) in [
                (col.column_index_offset(), col.column_index_length()),
                (col.offset_index_offset(), col.offset_index_length()),
            ] {
                if let (Some(o), Some(l)) = (offset, len)
                    && let (Ok(o), Ok(l)) = (u64::try_from(o), u64::try_from(l))
                    && o + l <= size
                {
                    ranges.push(o..o + l);
                }
            }
        }
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    // Ranges reaching into the footer are covered by it.
    let merged: Vec<Range<u64>> = merged
        .into_iter()
        .filter_map(|r| (r.start < footer_start).then(|| r.start..r.end.min(footer_start)))
        .collect();
    let got = store.get_ranges(path, &merged).await?;
    let mut parts: Vec<(u64, Bytes)> = merged.iter().map(|r| r.start).zip(got).collect();
    match parts.last_mut() {
        Some((off, b)) if *off + b.len() as u64 == footer_start => {
            let mut joined = Vec::with_capacity(b.len() + footer.len());
            joined.extend_from_slice(b);
            joined.extend_from_slice(&footer);
            *b = Bytes::from(joined);
        }
        _ => parts.push((footer_start, footer)),
    }
    Ok(ObjectBytes {
        len: size,
        parts: Arc::new(parts),
        meta: Arc::new(OnceLock::from(Arc::new(meta))),
    })
}
