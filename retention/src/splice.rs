//! Rewriting one data file without some of its rows: row groups that lose
//! no row are copied byte for byte (pages, statistics, page index); only the
//! row groups that lose rows are decoded and encoded again. The new file's
//! Delta statistics come from its row groups' statistics
//! ([`delta_stats`](auditlake_schemas::datafile::delta_stats)), so they
//! never keep a bound of a removed row.
//!
//! ```text
//! source row groups:  [rg0 keep] [rg1 loses rows] [rg2 keep] [rg3 loses all]
//! new file:           [rg0 copy] [rg1' re-encoded] [rg2 copy]
//! ```
//!
//! A clustered file (sorted by `user_id`, row groups of
//! [`CLUSTERED_ROW_GROUP_ROWS`](crate::cluster::CLUSTERED_ROW_GROUP_ROWS))
//! holds one user in one or two row groups: erasing that user re-encodes a
//! few thousand rows and copies the rest.

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::concat;
use bytes::Bytes;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use deltalake::parquet::arrow::arrow_writer::{ArrowWriter, compute_leaves};
use deltalake::parquet::column::writer::ColumnCloseResult;
use deltalake::parquet::file::metadata::PageIndexPolicy;
use deltalake::parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use deltalake::parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// A data file read for a rewrite: its bytes and parsed footer (with the
/// page index, which copied row groups keep).
pub struct Source {
    path: String,
    bytes: Bytes,
    meta: ArrowReaderMetadata,
}

impl Source {
    /// Parses the footer of `bytes` (the data file at `path`).
    pub fn open(path: &str, bytes: Bytes) -> Result<Self> {
        // Page encoding statistics in full: a copied chunk keeps them only
        // in that form (verify's dictionary check reads them).
        let options = ArrowReaderOptions::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .with_encoding_stats_as_mask(false);
        let meta =
            ArrowReaderMetadata::load(&bytes, options).map_err(|e| Error::parquet(path, e))?;
        Ok(Self {
            path: path.to_string(),
            bytes,
            meta,
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The file's row groups.
    pub fn row_groups(&self) -> &[RowGroupMetaData] {
        self.meta.metadata().row_groups()
    }

    /// Decodes the columns named in `columns` (all when `None`) of the row
    /// groups `groups` (in that order), the rows `selection` keeps of them,
    /// `batch_rows` at a time.
    pub fn decode(
        &self,
        columns: Option<&[&str]>,
        groups: Vec<usize>,
        selection: Option<RowSelection>,
        batch_rows: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch>> + use<>> {
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(
            self.bytes.clone(),
            self.meta.clone(),
        )
        .with_row_groups(groups)
        .with_batch_size(batch_rows);
        if let Some(cols) = columns {
            builder = crate::files::project(builder, cols);
        }
        if let Some(sel) = selection {
            builder = builder.with_row_selection(sel);
        }
        let reader = builder.build().map_err(|e| Error::parquet(&self.path, e))?;
        let path = self.path.clone();
        Ok(reader.map(move |b| b.map_err(|e| Error::parquet(&path, e))))
    }

    /// One mask per row group in `groups` from masks over their rows in
    /// order (as [`decode`](Self::decode) yields them).
    pub fn split_masks(
        &self,
        groups: &[usize],
        masks: &[BooleanArray],
    ) -> Result<Vec<BooleanArray>> {
        let refs: Vec<&dyn Array> = masks.iter().map(|m| m as &dyn Array).collect();
        let all = if refs.is_empty() {
            BooleanArray::from(Vec::<bool>::new())
        } else {
            concat(&refs)?
                .as_any()
                .downcast_ref::<BooleanArray>()
                .cloned()
                .ok_or_else(|| Error::Internal("concatenated masks are not boolean".into()))?
        };
        let mut out = Vec::with_capacity(groups.len());
        let mut at = 0usize;
        for &g in groups {
            let n = usize::try_from(self.row_groups()[g].num_rows()).unwrap_or(0);
            if at + n > all.len() {
                return Err(Error::Internal(format!(
                    "{}: masks cover {} rows, row groups {}",
                    self.path,
                    all.len(),
                    at + n
                )));
            }
            out.push(all.slice(at, n));
            at += n;
        }
        Ok(out)
    }
}

/// What a rewrite keeps of each source row group.
#[derive(Debug, Clone)]
pub enum Keep {
    /// Every row: copied as encoded.
    All,
    /// The rows whose mask value is true (none: the group is left out).
    Rows(BooleanArray),
}

/// A file written by [`splice`].
pub struct Spliced {
    /// The new file's bytes.
    pub bytes: Bytes,
    /// Its footer.
    pub metadata: ParquetMetaData,
    /// Rows it holds.
    pub rows: u64,
}

/// Writes the rows of `src` that `keep` (one entry per row group) keeps into
/// a new file with `props`, `batch_rows` decoded at a time.
pub fn splice(
    src: &Source,
    keep: &[Keep],
    props: WriterProperties,
    batch_rows: usize,
) -> Result<Spliced> {
    let path = src.path.as_str();
    let pq = |e| Error::parquet(path, e);
    let groups = src.row_groups();
    if keep.len() != groups.len() {
        return Err(Error::Internal(format!(
            "{path}: {} row groups, {} keep entries",
            groups.len(),
            keep.len()
        )));
    }
    let schema = src.meta.schema().clone();
    let writer = ArrowWriter::try_new(
        Vec::with_capacity(src.bytes.len()),
        schema.clone(),
        Some(props),
    )
    .map_err(pq)?;
    let (mut file, factory) = writer.into_serialized_writer().map_err(pq)?;
    let meta = src.meta.metadata();
    let (column_index, offset_index) = (meta.column_index(), meta.offset_index());
    let mut rows = 0u64;
    let mut written_groups = 0usize;
    for (g, (group, keep)) in groups.iter().zip(keep).enumerate() {
        match keep {
            Keep::All => {
                let mut rg = file.next_row_group().map_err(pq)?;
                for (c, chunk) in group.columns().iter().enumerate() {
                    let close = ColumnCloseResult {
                        bytes_written: u64::try_from(chunk.compressed_size()).unwrap_or(0),
                        rows_written: u64::try_from(group.num_rows()).unwrap_or(0),
                        metadata: chunk.clone(),
                        bloom_filter: None,
                        column_index: column_index.and_then(|ci| ci.get(g)?.get(c).cloned()),
                        offset_index: offset_index.and_then(|oi| oi.get(g)?.get(c).cloned()),
                    };
                    rg.append_column(&src.bytes, close).map_err(pq)?;
                }
                rg.close().map_err(pq)?;
                rows += u64::try_from(group.num_rows()).unwrap_or(0);
                written_groups += 1;
            }
            Keep::Rows(mask) => {
                if mask.true_count() == 0 {
                    continue;
                }
                let mut writers = factory.create_column_writers(written_groups).map_err(pq)?;
                let selection = RowSelection::from_filters(std::slice::from_ref(mask));
                for batch in src.decode(None, vec![g], Some(selection), batch_rows)? {
                    let batch = batch?;
                    rows += batch.num_rows() as u64;
                    let mut w = writers.iter_mut();
                    for (array, field) in batch.columns().iter().zip(schema.fields()) {
                        for leaf in compute_leaves(field, array).map_err(pq)? {
                            w.next()
                                .ok_or_else(|| {
                                    Error::Internal(format!(
                                        "{path}: more leaves than column writers"
                                    ))
                                })?
                                .write(&leaf)
                                .map_err(pq)?;
                        }
                    }
                }
                let mut rg = file.next_row_group().map_err(pq)?;
                for w in writers {
                    w.close()
                        .map_err(pq)?
                        .append_to_row_group(&mut rg)
                        .map_err(pq)?;
                }
                rg.close().map_err(pq)?;
                written_groups += 1;
            }
        }
    }
    let metadata = file.finish().map_err(pq)?;
    let bytes = Bytes::from(std::mem::take(file.inner_mut()));
    Ok(Spliced {
        bytes,
        metadata,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use deltalake::parquet::file::properties::EnabledStatistics;
    use std::sync::Arc;

    fn file(rows: usize, group: usize) -> Bytes {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new(
                "t",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let users: Vec<Option<String>> = (0..rows)
            .map(|i| (i % 7 != 0).then(|| format!("u-{:04}", i / 10)))
            .collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(users)),
            Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    (0..rows as i64).map(|i| 1_700_000_000_000_000 + i * 1_500),
                )
                .with_timezone("UTC"),
            ),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(group))
            .set_statistics_enabled(EnabledStatistics::Page)
            .build();
        let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props.clone())).unwrap();
        w.write(&batch).unwrap();
        Bytes::from(w.into_inner().unwrap())
    }

    fn read_all(bytes: Bytes) -> RecordBatch {
        let src = Source::open("x", bytes).unwrap();
        let groups = (0..src.row_groups().len()).collect();
        let batches: Vec<RecordBatch> = src
            .decode(None, groups, None, 1024)
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn copies_untouched_groups_and_drops_rows() {
        let bytes = file(1000, 100);
        let src = Source::open("x", bytes.clone()).unwrap();
        assert_eq!(src.row_groups().len(), 10);
        // Drop the rows of u-0042 (group 4) and all of group 7.
        let mut keep = vec![Keep::All; 10];
        let g4 = read_all(bytes.clone()).slice(400, 100);
        let users = g4.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        keep[4] = Keep::Rows(
            (0..100)
                .map(|i| Some(users.is_null(i) || users.value(i) != "u-0042"))
                .collect(),
        );
        keep[7] = Keep::Rows(BooleanArray::from(vec![false; 100]));
        let out = splice(&src, &keep, WriterProperties::default(), 64).unwrap();
        assert_eq!(out.metadata.row_groups().len(), 9);
        let dropped = 100 + (420..430).filter(|i| i % 7 != 0).count();
        assert_eq!(out.rows, (1000 - dropped) as u64);
        let back = read_all(out.bytes.clone());
        assert_eq!(back.num_rows(), 1000 - dropped);
        let users = back
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(users.iter().all(|u| u != Some("u-0042")));
        assert!(
            users
                .iter()
                .all(|u| u.is_none_or(|u| !("u-0070".."u-0080").contains(&u)))
        );
        let n = back
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let expected: Vec<i64> = (0..1000)
            .filter(|i| !((700..800).contains(i) || ((420..430).contains(i) && i % 7 != 0)))
            .collect();
        assert_eq!(n.values().to_vec(), expected);
        // Copied groups keep their page index and page encoding statistics.
        let again = Source::open("y", out.bytes.clone()).unwrap();
        assert!(again.meta.metadata().offset_index().is_some());
        let meta = deltalake::parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&out.bytes)
            .unwrap();
        for rg in meta.row_groups() {
            assert!(rg.column(0).page_encoding_stats_mask().is_some());
        }
    }

    #[test]
    fn stats_leave_out_removed_bounds() {
        let bytes = file(100, 50);
        let src = Source::open("x", bytes).unwrap();
        // Drop u-0000 (the file's minimum user) and u-0009 (its maximum).
        let all = read_all(src.bytes().clone());
        let users = all
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let mask: Vec<bool> = (0..100)
            .map(|i| users.is_null(i) || !["u-0000", "u-0009"].contains(&users.value(i)))
            .collect();
        let keep = vec![
            Keep::Rows(BooleanArray::from(mask[..50].to_vec())),
            Keep::Rows(BooleanArray::from(mask[50..].to_vec())),
        ];
        let out = splice(&src, &keep, WriterProperties::default(), 64).unwrap();
        let stats: serde_json::Value =
            serde_json::from_str(&auditlake_schemas::datafile::delta_stats(&out.metadata)).unwrap();
        assert_eq!(stats["numRecords"], serde_json::Value::from(out.rows));
        assert_eq!(stats["minValues"]["user_id"], "u-0001");
        assert_eq!(stats["maxValues"]["user_id"], "u-0008");
        assert_eq!(
            stats["nullCount"]["user_id"],
            serde_json::Value::from((0..100).filter(|i| i % 7 == 0).count())
        );
        // Row 0 has no user (kept): the minimum of the other columns stays;
        // the maximum is row 98 (no user), timestamps cut to milliseconds.
        assert_eq!(stats["minValues"]["n"], serde_json::Value::from(0));
        assert_eq!(stats["minValues"]["t"], "2023-11-14T22:13:20Z");
        assert_eq!(stats["maxValues"]["n"], serde_json::Value::from(98));
        assert_eq!(stats["maxValues"]["t"], "2023-11-14T22:13:20.147Z");
    }
}
