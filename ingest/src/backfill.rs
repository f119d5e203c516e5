//! `ingest --input TOPIC=PATH`: JSON-lines files into the lake, as if each line
//! were a message of the topic.
//!
//! ```text
//! file --(blocking thread: read 8 MiB chunks, split lines, decode)--> Decoded
//!      --(bounded channel, 2 chunks)--> TopicSink::add (dedupe) --> flush every N rows
//!      (one flush job in flight: it sorts, encodes and commits while reading goes on)
//! ```
//!
//! Blank lines are skipped. Every event id is stored once per table, whether it
//! is repeated in the input or already in the lake: rerunning a backfill changes
//! nothing. Quarantine rows are keyed by `file:<topic>:<canonical path>:<line>`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use auditlake_schemas::lake::WriteOptions;
use auditlake_schemas::{Decoded, Decoder, Lake, RawMessage, Source, Topic};
use serde::Serialize;

use tokio::task::JoinHandle;

use crate::sink::{FlushOutcome, SinkStats, TopicSink};
use crate::{Error, Result};

/// Default rows buffered before a commit.
pub const DEFAULT_FLUSH_ROWS: usize = 2_000_000;
const CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Bytes read from the file at a time, decoded before the next read: the copy
/// out of the page cache then lands in the L2 cache, where the decoder reads
/// it. Reading a whole chunk at once sent it out to memory and back (the
/// kernel's copy alone was ~7% of a pinned ingest).
const READ_BYTES: usize = 256 * 1024;

/// Reports progress (bytes of input consumed) to whoever shows it.
pub trait Progress: Send + Sync {
    /// A topic's input starts; `total_bytes` is the file size.
    fn start(&self, topic: Topic, path: &Path, total_bytes: u64);
    /// `bytes` more of the current input were consumed.
    fn advance(&self, bytes: u64);
    /// The current input is done.
    fn finish(&self, topic: Topic, stats: &SinkStats);
}

/// What a backfill did, per topic and in total.
#[derive(Debug, Default, Clone, Serialize)]
pub struct BackfillReport {
    /// One entry per input, in order.
    pub inputs: Vec<InputReport>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Peak resident set size of the process so far (Linux), in bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// What one input file gave.
#[derive(Debug, Clone, Serialize)]
pub struct InputReport {
    /// The topic it was read as.
    pub topic: String,
    /// The file.
    pub path: PathBuf,
    /// Non-blank lines read.
    pub lines: u64,
    /// Blank lines skipped.
    pub blank: u64,
    /// Counters of the sink.
    #[serde(flatten)]
    pub stats: SinkStats,
    /// Seconds spent on this input.
    pub seconds: f64,
}

impl BackfillReport {
    /// Sum over inputs: (lines, stored, duplicates, quarantined, files, bytes).
    pub fn totals(&self) -> SinkStats {
        let mut t = SinkStats::default();
        for i in &self.inputs {
            t.events += i.stats.events;
            t.stored += i.stats.stored;
            t.duplicates += i.stats.duplicates;
            t.quarantined += i.stats.quarantined;
            t.quarantine_duplicates += i.stats.quarantine_duplicates;
            t.erased += i.stats.erased;
            t.commits += i.stats.commits;
            t.files += i.stats.files;
            t.bytes += i.stats.bytes;
        }
        t
    }

    /// Non-blank lines read over all inputs.
    pub fn lines(&self) -> u64 {
        self.inputs.iter().map(|i| i.lines).sum()
    }
}

/// A backfill of JSON-lines files into the lake.
pub struct Backfill {
    lake: Lake,
    inputs: Vec<(Topic, PathBuf)>,
    opts: WriteOptions,
    flush_rows: usize,
    flush_bytes: usize,
    index_bytes: usize,
    progress: Option<Arc<dyn Progress>>,
}

impl std::fmt::Debug for Backfill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backfill")
            .field("lake", &self.lake)
            .field("inputs", &self.inputs)
            .finish()
    }
}

impl Backfill {
    /// A backfill into `lake` with no inputs yet.
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            inputs: Vec::new(),
            opts: WriteOptions::default(),
            flush_rows: DEFAULT_FLUSH_ROWS,
            flush_bytes: crate::MemoryBudget::default().flush_bytes,
            index_bytes: crate::MemoryBudget::default().index_bytes,
            progress: None,
        }
    }

    /// Adds a file to read as `topic`'s messages.
    pub fn with_input(mut self, topic: Topic, path: impl Into<PathBuf>) -> Self {
        self.inputs.push((topic, path.into()));
        self
    }

    /// How data files are written.
    pub fn with_write_options(mut self, opts: WriteOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Rows buffered before a commit (bounds memory).
    pub fn with_flush_rows(mut self, rows: usize) -> Self {
        self.flush_rows = rows.max(1);
        self
    }

    /// Arrow bytes buffered before a commit (bounds memory).
    pub fn with_flush_bytes(mut self, bytes: usize) -> Self {
        self.flush_bytes = bytes.max(1);
        self
    }

    /// Flush buffer and dedupe index sized from one memory limit.
    pub fn with_memory(mut self, budget: crate::MemoryBudget) -> Self {
        self.flush_bytes = budget.flush_bytes;
        self.index_bytes = budget.index_bytes;
        self
    }

    /// Where progress goes.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Runs the backfill, input after input.
    pub async fn execute(self) -> Result<BackfillReport> {
        let started = Instant::now();
        // Check every input before any change.
        let mut inputs = Vec::new();
        for (topic, path) in &self.inputs {
            let canonical = std::fs::canonicalize(path).map_err(|source| Error::Input {
                path: path.clone(),
                source,
            })?;
            let meta = std::fs::metadata(&canonical).map_err(|source| Error::Input {
                path: path.clone(),
                source,
            })?;
            if !meta.is_file() {
                return Err(Error::Input {
                    path: path.clone(),
                    source: std::io::Error::other("not a regular file"),
                });
            }
            inputs.push((*topic, path.clone(), canonical, meta.len()));
        }
        let mut report = BackfillReport::default();
        for (topic, path, canonical, size) in inputs {
            let t0 = Instant::now();
            let span = tracing::info_span!("backfill", topic = %topic, path = %path.display());
            let _guard = span.enter();
            if let Some(p) = &self.progress {
                p.start(topic, &path, size);
            }
            let mut sink = TopicSink::open(self.lake.clone(), topic, self.opts.clone()).await?;
            sink.max_index_bytes = self.index_bytes;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Chunk>>(2);
            let reader_path = canonical.clone();
            let reader =
                tokio::task::spawn_blocking(move || read_and_decode(topic, &reader_path, tx));
            let (mut lines, mut blank) = (0u64, 0u64);
            let mut in_flight: Option<JoinHandle<Result<FlushOutcome>>> = None;
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk?;
                lines += chunk.lines;
                blank += chunk.blank;
                sink.add(chunk.decoded).await?;
                if let Some(p) = &self.progress {
                    p.advance(chunk.bytes);
                }
                if sink.pending_rows() >= self.flush_rows
                    || sink.pending_bytes() >= self.flush_bytes
                {
                    // One flush in flight at a time: it sorts, encodes and
                    // commits while the reader and the dedupe go on.
                    if let Some(prev) = in_flight.take() {
                        finish_flush(&mut sink, prev).await?;
                    }
                    let job = sink.detach();
                    in_flight = Some(tokio::spawn(job.run()));
                }
            }
            reader
                .await
                .map_err(|e| Error::Internal(format!("reader task: {e}")))??;
            if let Some(prev) = in_flight.take() {
                finish_flush(&mut sink, prev).await?;
            }
            let f = sink.flush(Vec::new()).await?;
            log_flush(&f);
            let stats = sink.stats().clone();
            if let Some(p) = &self.progress {
                p.finish(topic, &stats);
            }
            tracing::info!(
                lines,
                stored = stats.stored,
                duplicates = stats.duplicates,
                quarantined = stats.quarantined,
                "input done"
            );
            report.inputs.push(InputReport {
                topic: topic.name().to_string(),
                path,
                lines,
                blank,
                stats,
                seconds: t0.elapsed().as_secs_f64(),
            });
        }
        report.seconds = started.elapsed().as_secs_f64();
        report.peak_rss_bytes = crate::memory::peak_rss();
        Ok(report)
    }
}

/// Waits for a detached flush and counts it.
async fn finish_flush(sink: &mut TopicSink, job: JoinHandle<Result<FlushOutcome>>) -> Result<()> {
    let f = job
        .await
        .map_err(|e| Error::Internal(format!("flush task: {e}")))??;
    sink.record(&f);
    log_flush(&f);
    Ok(())
}

fn log_flush(f: &FlushOutcome) {
    tracing::info!(
        rows = f.rows,
        files = f.files,
        bytes = f.bytes,
        seconds = f.seconds,
        "flushed"
    );
}

struct Chunk {
    decoded: Decoded,
    lines: u64,
    blank: u64,
    bytes: u64,
}

/// Reads `path` in chunks of whole lines, decodes each chunk, sends it on.
fn read_and_decode(
    topic: Topic,
    path: &Path,
    tx: tokio::sync::mpsc::Sender<Result<Chunk>>,
) -> Result<()> {
    let io_err = |source| Error::Input {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let path_str = path.to_string_lossy().into_owned();
    let mut decoder = Decoder::new(topic);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BYTES * 2);
    let mut line_no = 0u64;
    let mut eof = false;
    // What the decoder holds since the last chunk was sent.
    let (mut lines, mut blank, mut bytes) = (0u64, 0u64, 0u64);
    while !eof {
        // Add READ_BYTES or up to EOF (`read_to_end` reads into the spare
        // capacity without zeroing it first).
        buf.reserve(READ_BYTES);
        let want = READ_BYTES as u64;
        let got = (&mut file)
            .take(want)
            .read_to_end(&mut buf)
            .map_err(io_err)?;
        if (got as u64) < want {
            eof = true;
        }
        // Decode complete lines; keep a trailing partial line unless at EOF.
        let end = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', &buf) {
                Some(i) => i + 1,
                None => continue, // a line longer than a read: read more
            }
        };
        let mut from = 0;
        let data = &buf[..end];
        let breaks = memchr::memchr_iter(b'\n', data)
            .chain((end > 0 && data[end - 1] != b'\n').then_some(end));
        for to in breaks {
            let raw = &data[from..to];
            from = to + 1;
            line_no += 1;
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.iter().all(u8::is_ascii_whitespace) {
                blank += 1;
                continue;
            }
            lines += 1;
            decoder.push(RawMessage {
                payload: line,
                source: Source::File {
                    path: &path_str,
                    line: line_no,
                },
            });
        }
        buf.drain(..end);
        bytes += end as u64;
        if bytes < CHUNK_BYTES as u64 && !eof {
            continue;
        }
        let chunk = Chunk {
            decoded: decoder.finish(now_micros())?,
            lines,
            blank,
            bytes,
        };
        (lines, blank, bytes) = (0, 0, 0);
        if tx.blocking_send(Ok(chunk)).is_err() {
            return Ok(()); // the consumer stopped (it reports its own error)
        }
    }
    Ok(())
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;

    fn event(id: &str, extra: &str) -> String {
        format!(
            r#"{{"event_id":"{id}","event_time":"2026-11-20T08:00:00Z","app_id":"a","developer_id":"d","api":"x","status":200{extra}}}"#
        )
    }

    /// Lines cut across reads, a line longer than several reads, CRLF, blank
    /// lines, a bad line and no final newline: every line is decoded once,
    /// with its own line number, and chunks count every byte.
    #[test]
    fn reads_whole_lines_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let long = format!(r#","note":"{}""#, "x".repeat(READ_BYTES * 2 + 17));
        let mut text = String::new();
        for i in 0..3000 {
            text += &event(&format!("a{i}"), "");
            text += "\n";
        }
        text += &event("crlf", "");
        text += "\r\n\n   \n";
        text += &event("long", &long);
        text += "\n{not json\n";
        text += &event("last", "");
        std::fs::write(&path, &text).unwrap();

        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        read_and_decode(Topic::ApiAccess, &path, tx).unwrap();
        let (mut events, mut lines, mut blank, mut bytes) = (Vec::new(), 0, 0, 0);
        let mut bad_lines = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            let chunk = chunk.unwrap();
            (lines, blank, bytes) = (
                lines + chunk.lines,
                blank + chunk.blank,
                bytes + chunk.bytes,
            );
            let ids = chunk.decoded.events.column(0).as_string::<i32>();
            events.extend(ids.iter().map(|v| v.unwrap().to_string()));
            let q = &chunk.decoded.quarantine;
            let at = q.schema().index_of("line").unwrap();
            bad_lines.extend(q.column(at).as_primitive::<Int64Type>().iter().flatten());
        }
        assert_eq!(bytes, text.len() as u64);
        assert_eq!((lines, blank), (3004, 2));
        assert_eq!(events.len(), 3003);
        assert_eq!(events[3000..], ["crlf", "long", "last"]);
        assert_eq!(bad_lines, [3005]);
    }
}
