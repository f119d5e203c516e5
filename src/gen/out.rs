//! Where generated lines go: the [`GenSink`] trait, its file and in-memory
//! implementations, and the per-topic writer that adds producer retries
//! (duplicates), malformed lines and blank lines around the real events.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::rng::Rng;

/// One of the four input topics (SPEC section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Topic {
    #[serde(rename = "api-access")]
    ApiAccess,
    #[serde(rename = "grants")]
    Grants,
    #[serde(rename = "apps")]
    Apps,
    #[serde(rename = "deletions")]
    Deletions,
}

impl Topic {
    /// All topics, in file-writing order.
    pub const ALL: [Topic; 4] = [
        Topic::ApiAccess,
        Topic::Grants,
        Topic::Apps,
        Topic::Deletions,
    ];

    /// The topic name (`api-access`, `grants`, `apps`, `deletions`).
    pub fn name(self) -> &'static str {
        match self {
            Topic::ApiAccess => "api-access",
            Topic::Grants => "grants",
            Topic::Apps => "apps",
            Topic::Deletions => "deletions",
        }
    }

    /// The JSON-lines file name `run_to_files` writes for the topic.
    pub fn file_name(self) -> &'static str {
        match self {
            Topic::ApiAccess => "api-access.jsonl",
            Topic::Grants => "grants.jsonl",
            Topic::Apps => "apps.jsonl",
            Topic::Deletions => "deletions.jsonl",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Topic::ApiAccess => 0,
            Topic::Grants => 1,
            Topic::Apps => 2,
            Topic::Deletions => 3,
        }
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Receives generated messages, in generation order (roughly event time).
pub trait GenSink {
    /// One message: `line` is the JSON payload without a newline; `key` is
    /// the app_id (the Kafka partition key).
    fn emit(&mut self, topic: Topic, key: &str, line: &[u8]) -> anyhow::Result<()>;

    /// A blank line in a JSON-lines file. Sinks that are not files ignore it.
    fn blank(&mut self, topic: Topic) -> anyhow::Result<()> {
        let _ = topic;
        Ok(())
    }
}

/// Buffer size of each file written by [`FileSink`].
pub const FILE_BUFFER_BYTES: usize = 4 << 20;

/// Writes `DIR/<topic>.jsonl`, one message per line.
pub struct FileSink {
    dir: PathBuf,
    files: Vec<BufWriter<File>>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").field("dir", &self.dir).finish()
    }
}

impl FileSink {
    /// Creates (truncates) the four topic files in `dir`, creating `dir` if needed.
    pub fn create(dir: &Path) -> anyhow::Result<FileSink> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let files = Topic::ALL
            .iter()
            .map(|t| {
                let path = dir.join(t.file_name());
                File::create(&path)
                    .map(|f| BufWriter::with_capacity(FILE_BUFFER_BYTES, f))
                    .with_context(|| format!("creating {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(FileSink {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// Flushes every file.
    pub fn finish(mut self) -> anyhow::Result<()> {
        for (t, f) in Topic::ALL.iter().zip(&mut self.files) {
            f.flush()
                .with_context(|| format!("writing {}", self.dir.join(t.file_name()).display()))?;
        }
        Ok(())
    }
}

impl GenSink for FileSink {
    fn emit(&mut self, topic: Topic, _key: &str, line: &[u8]) -> anyhow::Result<()> {
        let f = &mut self.files[Topic::ALL.iter().position(|t| *t == topic).expect("topic")];
        f.write_all(line)?;
        f.write_all(b"\n")?;
        Ok(())
    }

    fn blank(&mut self, topic: Topic) -> anyhow::Result<()> {
        let f = &mut self.files[Topic::ALL.iter().position(|t| *t == topic).expect("topic")];
        f.write_all(b"\n")?;
        Ok(())
    }
}

/// Keeps every line in memory (tests, small runs). Blank lines are kept as
/// empty entries, so `lines[topic]` joined by `\n` is exactly the file.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    /// Per topic, in [`Topic::index`] order: (key, line).
    pub lines: [Vec<(String, Vec<u8>)>; 4],
}

impl MemorySink {
    /// The file content of a topic (lines joined and terminated by `\n`).
    pub fn file(&self, topic: Topic) -> Vec<u8> {
        let mut out = Vec::new();
        for (_, l) in &self.lines[topic.index()] {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    }
}

impl GenSink for MemorySink {
    fn emit(&mut self, topic: Topic, key: &str, line: &[u8]) -> anyhow::Result<()> {
        self.lines[topic.index()].push((key.to_string(), line.to_vec()));
        Ok(())
    }

    fn blank(&mut self, topic: Topic) -> anyhow::Result<()> {
        self.lines[topic.index()].push((String::new(), Vec::new()));
        Ok(())
    }
}

/// Counts messages and bytes and drops them (speed measurements).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingSink {
    pub messages: u64,
    pub bytes: u64,
}

impl GenSink for CountingSink {
    fn emit(&mut self, _topic: Topic, _key: &str, line: &[u8]) -> anyhow::Result<()> {
        self.messages += 1;
        self.bytes += line.len() as u64 + 1;
        Ok(())
    }
}

/// Line counts of one topic, as written to `manifest.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicStats {
    /// Non-blank lines: events + duplicates + malformed.
    pub lines: u64,
    /// Distinct event_ids among the well-formed lines.
    pub distinct_events: u64,
    /// Exact copies of an earlier line (producer retries).
    pub duplicates: u64,
    /// Lines the ingester must quarantine.
    pub malformed: u64,
    /// Empty lines (files only; skipped by the ingester).
    pub blank: u64,
}

/// A line to insert before the `at`-th event of a topic.
#[derive(Debug)]
pub(crate) struct Insert {
    pub at: u64,
    /// `None`: a blank line.
    pub line: Option<Vec<u8>>,
    pub key: String,
}

/// A pending retry: (due after this many lines, tie-break, key, line).
type Retry = Reverse<(u64, u64, String, Vec<u8>)>;

/// Writes one topic: events, plus retries, malformed and blank lines.
pub(crate) struct TopicWriter {
    topic: Topic,
    dup_rate: f64,
    rng: Rng,
    pending: BinaryHeap<Retry>,
    /// Inserts sorted by descending `at`, popped from the back.
    inserts: Vec<Insert>,
    events: u64,
    written: u64,
    pub stats: TopicStats,
}

/// Retries arrive within this many lines of the original.
pub const MAX_RETRY_DELAY_LINES: u64 = 300;

impl TopicWriter {
    pub fn new(topic: Topic, dup_rate: f64, rng: Rng, mut inserts: Vec<Insert>) -> Self {
        inserts.sort_by_key(|i| Reverse(i.at));
        Self {
            topic,
            dup_rate,
            rng,
            pending: BinaryHeap::new(),
            inserts,
            events: 0,
            written: 0,
            stats: TopicStats::default(),
        }
    }

    fn put(&mut self, sink: &mut dyn GenSink, key: &str, line: &[u8]) -> anyhow::Result<()> {
        sink.emit(self.topic, key, line)?;
        self.written += 1;
        self.stats.lines += 1;
        Ok(())
    }

    fn inserts_due(&mut self, sink: &mut dyn GenSink) -> anyhow::Result<()> {
        while self.inserts.last().is_some_and(|i| i.at <= self.events) {
            let ins = self.inserts.pop().expect("checked");
            match ins.line {
                Some(line) => {
                    self.put(sink, &ins.key, &line)?;
                    self.stats.malformed += 1;
                }
                None => {
                    sink.blank(self.topic)?;
                    self.stats.blank += 1;
                }
            }
        }
        Ok(())
    }

    fn retries_due(&mut self, sink: &mut dyn GenSink, all: bool) -> anyhow::Result<()> {
        while let Some(Reverse((due, ..))) = self.pending.peek() {
            if !all && *due > self.written {
                break;
            }
            let Reverse((_, _, key, line)) = self.pending.pop().expect("peeked");
            self.put(sink, &key, &line)?;
            self.stats.duplicates += 1;
        }
        Ok(())
    }

    /// Writes one well-formed event.
    pub fn event(&mut self, sink: &mut dyn GenSink, key: &str, line: &[u8]) -> anyhow::Result<()> {
        self.inserts_due(sink)?;
        self.put(sink, key, line)?;
        self.events += 1;
        self.stats.distinct_events += 1;
        if self.dup_rate > 0.0 && self.rng.chance(self.dup_rate) {
            let delay = 1 + self.rng.below(MAX_RETRY_DELAY_LINES);
            let seq = self.rng.next_u64();
            self.pending.push(Reverse((
                self.written + delay,
                seq,
                key.to_string(),
                line.to_vec(),
            )));
        }
        self.retries_due(sink, false)
    }

    /// Writes what is still pending (inserts past the end, late retries).
    pub fn finish(&mut self, sink: &mut dyn GenSink) -> anyhow::Result<TopicStats> {
        self.events = u64::MAX;
        self.inserts_due(sink)?;
        self.retries_due(sink, true)?;
        Ok(self.stats)
    }
}
