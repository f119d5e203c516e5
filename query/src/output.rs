//! Query results to the formats analysts ask for: a table, CSV, JSON lines, Parquet.
//!
//! Nested values (lists such as `token_scopes`, structs, maps) have no CSV form
//! in arrow's writer; in CSV and table output they are rendered as JSON text
//! (`["read","write"]`, `{"k":1}`), the same text the JSON format prints, so a
//! spreadsheet cell or a terminal shows what `--format json` would. A null list
//! stays an empty CSV cell (table: blank); an empty list is `[]`.

use std::io::Write;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::json::writer::{EncoderOptions, make_encoder};
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
            let flat = flat_schema(&schema);
            let text = if batches.iter().all(|b| b.num_rows() == 0) {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(flat)])?
            } else {
                let flat = batches
                    .iter()
                    .map(nested_as_json)
                    .collect::<Result<Vec<_>>>()?;
                arrow::util::pretty::pretty_format_batches(&flat)?
            };
            writeln!(out, "{text}")?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(flat_schema(&schema)))?;
            }
            for b in batches {
                w.write(&nested_as_json(b)?)?;
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

/// Whether arrow's CSV writer and pretty printer lack a text form for `t`
/// (anything holding child values).
fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(_, _)
            | DataType::Struct(_)
            | DataType::Map(_, _)
            | DataType::Union(_, _)
    )
}

/// The schema after [`nested_as_json`]: nested columns become nullable Utf8.
fn flat_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| is_nested(f.data_type())) {
        return schema.clone();
    }
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| {
            if is_nested(f.data_type()) {
                Arc::new(Field::new(f.name(), DataType::Utf8, true))
            } else {
                f.clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with every nested column replaced by its values as JSON text (null
/// stays null). Other columns are shared, not copied.
pub fn nested_as_json(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| is_nested(f.data_type())) {
        return Ok(batch.clone());
    }
    let options = EncoderOptions::default().with_explicit_nulls(true);
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            if is_nested(field.data_type()) {
                json_text(field, column.as_ref(), &options)
            } else {
                Ok(column.clone())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(flat_schema(&schema), columns)?)
}

fn json_text(field: &FieldRef, column: &dyn Array, options: &EncoderOptions) -> Result<ArrayRef> {
    let mut encoder = make_encoder(field, column, options)?;
    let mut builder = StringBuilder::with_capacity(column.len(), column.len() * 16);
    let mut buf = Vec::with_capacity(64);
    for i in 0..column.len() {
        if encoder.is_null(i) {
            builder.append_null();
            continue;
        }
        buf.clear();
        encoder.encode(i, &mut buf);
        let text = std::str::from_utf8(&buf)
            .map_err(|e| Error::Internal(format!("JSON encoder wrote invalid UTF-8: {e}")))?;
        builder.append_value(text);
    }
    Ok(Arc::new(builder.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, ListBuilder, StringBuilder, StructArray};

    /// Two rows: id, a list of scopes (one row null), a struct.
    fn nested_batch() -> RecordBatch {
        let mut scopes = ListBuilder::new(StringBuilder::new());
        scopes.values().append_value("read");
        scopes.values().append_value("write,all");
        scopes.append(true);
        scopes.append(false);
        let scopes = scopes.finish();
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let detail = StructArray::from(vec![(
            Arc::new(Field::new("n", DataType::Int64, false)),
            Arc::new(Int64Array::from(vec![7, 8])) as ArrayRef,
        )]);
        RecordBatch::try_from_iter(vec![
            ("id", ids),
            ("token_scopes", Arc::new(scopes) as ArrayRef),
            ("detail", Arc::new(detail) as ArrayRef),
        ])
        .unwrap()
    }

    fn render(batches: &[RecordBatch], schema: SchemaRef, format: Format) -> String {
        let mut out = Vec::new();
        write_batches(batches, schema, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_renders_lists_and_structs_as_json() {
        let batch = nested_batch();
        let csv = render(std::slice::from_ref(&batch), batch.schema(), Format::Csv);
        assert_eq!(
            csv,
            "id,token_scopes,detail\n1,\"[\"\"read\"\",\"\"write,all\"\"]\",\"{\"\"n\"\":7}\"\n2,,\"{\"\"n\"\":8}\"\n"
        );
    }

    #[test]
    fn csv_of_no_rows_has_the_header() {
        let batch = nested_batch();
        let csv = render(&[], batch.schema(), Format::Csv);
        assert_eq!(csv, "id,token_scopes,detail\n");
    }

    #[test]
    fn table_renders_lists_as_json() {
        let batch = nested_batch();
        let table = render(std::slice::from_ref(&batch), batch.schema(), Format::Table);
        assert!(table.contains(r#"["read","write,all"]"#), "{table}");
        assert!(table.contains(r#"{"n":8}"#), "{table}");
        let empty = render(&[], batch.schema(), Format::Table);
        assert!(empty.contains("token_scopes"), "{empty}");
    }

    #[test]
    fn flat_batches_pass_through() {
        let batch = RecordBatch::try_from_iter(vec![(
            "n",
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        )])
        .unwrap();
        assert_eq!(nested_as_json(&batch).unwrap(), batch);
    }
}
