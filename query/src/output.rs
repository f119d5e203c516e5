//! Query results to the formats analysts ask for: a table, CSV, JSON lines, Parquet.

use std::io::Write;
use std::str::FromStr;

use arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// An output format of `sql` and `detect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text table for a terminal.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row (JSON lines); nulls written as `null`.
    Json,
    /// A Parquet file (zstd).
    Parquet,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" | "jsonl" => Ok(Format::Json),
            "parquet" => Ok(Format::Parquet),
            other => Err(format!(
                "unknown format {other:?}; expected table, csv, json or parquet"
            )),
        }
    }
}

/// Writes `batches` to `out` in `format`. An empty result still prints a table
/// header or CSV header where the format has one.
pub fn write_batches<W: Write + Send>(
    batches: &[RecordBatch],
    schema: arrow::datatypes::SchemaRef,
    format: Format,
    mut out: W,
) -> Result<()> {
    match format {
        Format::Table => {
            let text = if batches.iter().all(|b| b.num_rows() == 0) {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(schema)])?
            } else {
                arrow::util::pretty::pretty_format_batches(batches)?
            };
            writeln!(out, "{text}")?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let level = ZstdLevel::try_new(3).map_err(|e| Error::Config(e.to_string()))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(level))
                .build();
            let mut w = ArrowWriter::try_new(out, schema, Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    Ok(())
}
