//! `ingest --input TOPIC=PATH`: JSON-lines files into the lake, as if each line
//! were a message of the topic.
//!
//! ```text
//! file --(a blocking thread per core: 8 MiB chunks of lines, read and decoded
//!         in turn, chunk k on thread k % n)--> Decoded, back in file order
//!      --(a bounded channel per thread)--> TopicSink::add (dedupe) --> flush every N rows
//!      (one flush job in flight: it sorts, encodes and commits while reading goes on)
//! ```
//!
//! Blank lines are skipped. Every event id is stored once per table, whether it
//! is repeated in the input or already in the lake: rerunning a backfill changes
//! nothing. Quarantine rows are keyed by `file:<topic>:<canonical path>:<line>`.

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
            t.pseudonymized += i.stats.pseudonymized;
            t.expired += i.stats.expired;
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
            inputs.push((*topic, path.clone(), canonical));
        }
        let mut report = BackfillReport::default();
        for (topic, path, canonical) in inputs {
            let t0 = Instant::now();
            let span = tracing::info_span!("backfill", topic = %topic, path = %path.display());
            let _guard = span.enter();
            let mut sink = TopicSink::open(self.lake.clone(), topic, self.opts.clone()).await?;
            sink.max_index_bytes = self.index_bytes;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut decoders = Decoders::open(
                topic,
                &canonical,
                CHUNK_BYTES as u64,
                cores.min(MAX_DECODERS),
            )?;
            tracing::debug!(
                threads = decoders.threads(),
                bytes = decoders.size,
                "decoding"
            );
            if let Some(p) = &self.progress {
                p.start(topic, &path, decoders.size);
            }
            let (mut lines, mut blank) = (0u64, 0u64);
            let mut in_flight: Option<JoinHandle<Result<FlushOutcome>>> = None;
            while let Some(chunk) = decoders.next().await {
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
            decoders.join().await?;
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
    sink.record(&f)?;
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

/// Most threads that decode one input at a time.
const MAX_DECODERS: usize = 4;

/// The decode side of one input: chunk `k` of the file (the lines that start
/// in bytes `[k * chunk_bytes, (k + 1) * chunk_bytes)`) is decoded by thread
/// `k % n` and received here in file order, so the sink sees the lines in
/// the order of the file whatever the number of threads. One thread per
/// core (up to [`MAX_DECODERS`]): decoding is most of an ingest's work, and
/// with a single decoder a flush's sort and encode left a second core idle
/// between flushes.
struct Decoders {
    topic: Topic,
    /// Bytes of the input read: its size when opened.
    size: u64,
    rxs: Vec<tokio::sync::mpsc::Receiver<Result<Chunk>>>,
    handles: Vec<JoinHandle<Result<()>>>,
    next: usize,
    /// Lines (blank ones too) of the chunks received so far.
    line_base: u64,
}

impl Decoders {
    /// Opens `path` once (every thread reads the same open file, up to its
    /// size now: lines written after this point are left for the next run)
    /// and starts up to `max_threads` threads, at most one per chunk.
    fn open(topic: Topic, path: &Path, chunk_bytes: u64, max_threads: usize) -> Result<Self> {
        let io_err = |source| Error::Input {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        let file = Arc::new(file);
        let chunk_bytes = chunk_bytes.max(1);
        let chunks = size.div_ceil(chunk_bytes).max(1);
        let workers = max_threads.clamp(1, usize::try_from(chunks).unwrap_or(usize::MAX));
        let (mut rxs, mut handles) = (Vec::new(), Vec::new());
        for worker in 0..workers {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Chunk>>(1);
            let (file, path) = (file.clone(), path.to_path_buf());
            let regions = Regions {
                size,
                chunk_bytes,
                first: worker as u64,
                step: workers as u64,
            };
            handles.push(tokio::task::spawn_blocking(move || {
                decode_chunks(topic, &file, &path, regions, tx)
            }));
            rxs.push(rx);
        }
        Ok(Self {
            topic,
            size,
            rxs,
            handles,
            next: 0,
            line_base: 0,
        })
    }

    /// How many threads decode.
    fn threads(&self) -> usize {
        self.rxs.len()
    }

    /// The next chunk in file order, its lines numbered in the file; `None`
    /// after the last (or after a thread stopped: [`Decoders::join`] says why).
    async fn next(&mut self) -> Option<Result<Chunk>> {
        let n = self.rxs.len();
        let mut chunk = match self.rxs[self.next % n].recv().await? {
            Ok(chunk) => chunk,
            Err(e) => return Some(Err(e)),
        };
        self.next += 1;
        if let Err(e) = chunk.decoded.shift_file_lines(self.topic, self.line_base) {
            return Some(Err(e.into()));
        }
        self.line_base += chunk.lines + chunk.blank;
        Some(Ok(chunk))
    }

    /// Waits for every thread; the first error (or panic) of any.
    async fn join(self) -> Result<()> {
        drop(self.rxs);
        for handle in self.handles {
            handle
                .await
                .map_err(|e| Error::Internal(format!("decode task: {e}")))??;
        }
        Ok(())
    }
}

/// Which chunks one decode thread takes: `first`, `first + step`, ... while
/// the chunk starts before `size` (the input's size when opened).
#[derive(Debug, Clone, Copy)]
struct Regions {
    size: u64,
    chunk_bytes: u64,
    first: u64,
    step: u64,
}

/// Decodes this thread's chunks of `file` (opened from `path`) in order and
/// sends each on.
fn decode_chunks(
    topic: Topic,
    file: &std::fs::File,
    path: &Path,
    regions: Regions,
    tx: tokio::sync::mpsc::Sender<Result<Chunk>>,
) -> Result<()> {
    let path_str = path.to_string_lossy().into_owned();
    let mut decoder = Decoder::new(topic);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BYTES * 2);
    let mut k = regions.first;
    while k == 0 || k * regions.chunk_bytes < regions.size {
        let start = k * regions.chunk_bytes;
        let end = ((k + 1) * regions.chunk_bytes).min(regions.size);
        let chunk = decode_chunk(
            file,
            path,
            &path_str,
            &mut decoder,
            &mut buf,
            (start, end),
            regions.size,
        );
        let stop = chunk.is_err();
        if tx.blocking_send(chunk).is_err() || stop {
            return Ok(()); // the consumer stopped, or has the error
        }
        k += regions.step;
    }
    Ok(())
}

/// Reads up to `want` bytes of `file` at `offset` onto the end of `buf`;
/// fewer only at the end of the file.
fn read_at(
    file: &std::fs::File,
    offset: u64,
    want: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let old = buf.len();
    buf.resize(old + want, 0);
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[old + got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(old);
                return Err(e);
            }
        }
    }
    buf.truncate(old + got);
    Ok(got)
}

/// Decodes the lines of `file` that start in bytes `[start, end)` (the last
/// one may run past `end`, never past `size`), `READ_BYTES` at a time: each
/// read is decoded while it is still in the L2 cache (reading a whole chunk
/// at once sent it out to memory and back). Lines are numbered from 1.
fn decode_chunk(
    file: &std::fs::File,
    path: &Path,
    path_str: &str,
    decoder: &mut Decoder,
    buf: &mut Vec<u8>,
    (start, end): (u64, u64),
    size: u64,
) -> Result<Chunk> {
    let io_err = |source| Error::Input {
        path: path.to_path_buf(),
        source,
    };
    // Reads at `offset` onto `buf`, never past `size`; true at `size`.
    let read = |offset: u64, buf: &mut Vec<u8>| -> Result<bool> {
        let left = usize::try_from(size.saturating_sub(offset)).unwrap_or(usize::MAX);
        let want = READ_BYTES.min(left);
        let got = read_at(file, offset, want, buf).map_err(io_err)?;
        Ok(got < want || offset + got as u64 >= size)
    };
    buf.clear();
    // The first line that starts at or after `start`: the line the byte
    // before `start` belongs to is the previous chunk's.
    let mut pos = start;
    if start > 0 {
        let mut at = start - 1;
        loop {
            buf.clear();
            let eof = read(at, buf)?;
            if let Some(i) = memchr::memchr(b'\n', buf) {
                pos = at + i as u64 + 1;
                break;
            }
            at += buf.len() as u64;
            if eof {
                pos = at; // no line starts in this chunk
                break;
            }
        }
        buf.clear();
    }
    let first = pos;
    let (mut lines, mut blank, mut line_no) = (0u64, 0u64, 0u64);
    let mut eof = false;
    // `buf` holds the file from `pos` on.
    while pos < end && !eof {
        eof = read(pos + buf.len() as u64, buf)?;
        let mut from = 0;
        while pos < end {
            let rest = &buf[from..];
            let (raw, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], i + 1),
                None if eof && !rest.is_empty() => (rest, rest.len()),
                None => break, // a partial line: read more
            };
            from += next;
            pos += next as u64;
            line_no += 1;
            let mut line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if start == 0 && line_no == 1 {
                // A file saved with a UTF-8 byte order mark (some Windows
                // tools write one): the mark is not part of the first message.
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                blank += 1;
                continue;
            }
            lines += 1;
            decoder.push(RawMessage {
                payload: line,
                source: Source::File {
                    path: path_str,
                    line: line_no,
                },
            });
        }
        buf.drain(..from);
    }
    Ok(Chunk {
        decoded: decoder.finish(now_micros())?,
        lines,
        blank,
        bytes: pos - first,
    })
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

    /// Decodes `path` in chunks of `chunk_bytes` on `threads` threads, as an
    /// ingest does: (event ids, quarantined lines, lines, blank, bytes).
    fn decode_file(
        path: &Path,
        chunk_bytes: u64,
        threads: usize,
    ) -> (Vec<String>, Vec<(i64, String)>, u64, u64, u64) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let mut d = Decoders::open(Topic::ApiAccess, path, chunk_bytes, threads).unwrap();
            assert!(d.threads() <= threads);
            let (mut events, mut bad, mut lines, mut blank, mut bytes) =
                (Vec::new(), Vec::new(), 0, 0, 0);
            while let Some(chunk) = d.next().await {
                let chunk = chunk.unwrap();
                (lines, blank, bytes) = (
                    lines + chunk.lines,
                    blank + chunk.blank,
                    bytes + chunk.bytes,
                );
                let ids = chunk.decoded.events.column(0).as_string::<i32>();
                events.extend(ids.iter().map(|v| v.unwrap().to_string()));
                let q = &chunk.decoded.quarantine;
                let line = q.column(q.schema().index_of("line").unwrap());
                let ids = q.column(0).as_string::<i32>();
                for r in 0..q.num_rows() {
                    let line = line.as_primitive::<Int64Type>().value(r);
                    bad.push((line, ids.value(r).to_string()));
                }
            }
            d.join().await.unwrap();
            (events, bad, lines, blank, bytes)
        })
    }

    /// Lines cut across reads and chunks, a line longer than several reads
    /// and chunks, CRLF, blank lines, bad lines and no final newline, on one
    /// to three threads and chunk sizes down to one byte: every line is
    /// decoded once, in file order, with its line number in the file, and
    /// the chunks count every byte.
    #[test]
    fn decodes_every_line_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let long = format!(r#","note":"{}""#, "x".repeat(READ_BYTES * 2 + 17));
        let mut text = String::new();
        for i in 0..3000 {
            text += &event(&format!("a{i}"), "");
            text += "\n";
        }
        text += "{bad one\n";
        text += &event("crlf", "");
        text += "\r\n\n   \n";
        text += &event("long", &long);
        text += "\n{not json\n";
        text += &event("last", "");
        std::fs::write(&path, &text).unwrap();
        let canonical = std::fs::canonicalize(&path).unwrap();
        let source = |line| format!("file:api-access:{}:{line}", canonical.display());
        let mut expected: Vec<String> = (0..3000).map(|i| format!("a{i}")).collect();
        expected.extend(["crlf", "long", "last"].map(String::from));

        for (chunk_bytes, threads) in [
            (CHUNK_BYTES as u64, 1),
            (CHUNK_BYTES as u64, 3),
            (100_000, 1),
            (100_000, 2),
            (7_777, 3),
            (1, 2),
        ] {
            if chunk_bytes == 1 && threads == 2 {
                // One chunk per byte: only the small file's head is worth it.
                let small = dir.path().join("small.jsonl");
                let head = "\n{x\n".to_string() + &event("s1", "") + "\r\n" + &event("s2", "");
                std::fs::write(&small, &head).unwrap();
                let small = std::fs::canonicalize(&small).unwrap();
                let (events, bad, lines, blank, bytes) = decode_file(&small, 1, 2);
                assert_eq!(events, ["s1", "s2"]);
                let at = format!("file:api-access:{}:2", small.display());
                assert_eq!(bad, [(2, at)]);
                assert_eq!((lines, blank, bytes), (3, 1, head.len() as u64));
                continue;
            }
            let (events, bad, lines, blank, bytes) = decode_file(&canonical, chunk_bytes, threads);
            let case = format!("{chunk_bytes} bytes a chunk, {threads} threads");
            assert_eq!(bytes, text.len() as u64, "{case}");
            assert_eq!((lines, blank), (3005, 2), "{case}");
            assert_eq!(events, expected, "{case}");
            assert_eq!(bad, [(3001, source(3001)), (3006, source(3006))], "{case}");
        }
    }

    /// A UTF-8 byte order mark before the first line is not part of it; one
    /// anywhere else is (and quarantines its line).
    #[test]
    fn a_byte_order_mark_opens_the_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bom.jsonl");
        let text = format!(
            "\u{feff}{}\n\u{feff}{}\n{}\n",
            event("b1", ""),
            event("b2", ""),
            event("b3", "")
        );
        std::fs::write(&path, &text).unwrap();
        let path = std::fs::canonicalize(&path).unwrap();
        for threads in [1, 2] {
            let (events, bad, lines, _, _) = decode_file(&path, 20, threads);
            assert_eq!(events, ["b1", "b3"]);
            assert_eq!(bad.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [2]);
            assert_eq!(lines, 3);
        }
    }

    /// An input is read up to its size when opened: lines appended while it
    /// is decoded are left for the next run, and a line half written at
    /// that point is decoded as it was (here: quarantined), whatever the
    /// threads have read by then.
    #[test]
    fn reads_up_to_the_size_when_opened() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("growing.jsonl");
        let mut text = String::new();
        for i in 0..500 {
            text += &event(&format!("g{i}"), "");
            text += "\n";
        }
        text += r#"{"event_id":"half"#;
        std::fs::write(&path, &text).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let mut d = Decoders::open(Topic::ApiAccess, &path, 4_000, 3).unwrap();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            // Completes the half line into a valid event, then adds another.
            let rest = event("", "").replacen("{\"event_id\":\"", "", 1);
            write!(f, "{rest}\n{}\n", event("later", "")).unwrap();
            drop(f);
            let (mut events, mut quarantined, mut bytes) = (0, 0, 0);
            while let Some(chunk) = d.next().await {
                let chunk = chunk.unwrap();
                events += chunk.decoded.events.num_rows();
                quarantined += chunk.decoded.quarantine.num_rows();
                bytes += chunk.bytes;
            }
            d.join().await.unwrap();
            assert_eq!((events, quarantined), (500, 1));
            assert_eq!(bytes, text.len() as u64);
        });
    }
}
