//! Joins the lines of one logical message (stack traces, panics, goroutine dumps) into one
//! record: `type: multiline` in `logs.processors`. It runs on messages, i.e. after CRI/docker
//! partial lines were joined, and separately per stream (stdout, stderr) of each file.
//!
//! ```yaml
//! - type: multiline
//!   detector: auto          # or java, python, go, ruby, nodejs, dotnet (default auto)
//!   # or a custom rule instead of `detector`:
//!   # start: '^\d{4}-\d{2}-\d{2} '   # a line that begins a record
//!   # continuation: '^\s'           # lines that extend it (default: lines not matching start)
//!   max_lines: 1000         # a group is closed at this many lines…
//!   max_bytes: 262144       # …or bytes (default logs.max_line_bytes)
//!   flush_timeout: 1s       # …or when no line came for this long
//!   annotation: node-agent.io/multiline   # a pod annotation naming the detector (or `none`)
//! ```
//!
//! Detectors are small state machines over lines: every non-indented line may begin a
//! group (the *head*, e.g. a log line saying what failed), and the detector's rules say which
//! lines continue it from each state. Built-ins:
//! - `java`: indented lines (`\tat …`, `\t... 5 more`, `\tSuppressed:`), `Caused by: …`, and
//!   an exception line (`java.lang.IllegalStateException: …`) right after the head.
//! - `python`: `Traceback (most recent call last):`, its indented frames, the exception
//!   line, and chained tracebacks (`During handling of the above exception…`).
//! - `go` (never joined to the line before): `panic:`, `fatal error:`, `SIGSEGV:`-style headers and goroutine dumps (goroutine
//!   headers, function lines, tab-indented file lines, blank lines between goroutines).
//! - `ruby`, `dotnet`: indented lines (`\tfrom app.rb:7:in …`, `   at Program.Main()`,
//!   ` ---> System.Exception`).
//! - `nodejs`: indented lines and the closing `}` of error properties, and the uncaught
//!   exception report from `file.js:3` to `Node.js v20.1.0`.
//! - `auto`: all of them at once.
//!
//! A joined record keeps the first line's timestamp, stream and offset; lines are joined
//! with `\n` and trailing blank lines dropped.
//!
//! **Positions.** While a group is open the file's records that follow it (of either
//! stream) wait behind it, and [`Stage::held_from`] reports the group's first offset: a
//! checkpoint never passes an unfinished group and nothing after it has been shipped, so a
//! restart re-reads the whole group and loses or duplicates nothing. What waits is bounded:
//! past `4 × max_bytes` (or 10 000 records) the file's open groups are closed early, and
//! past `logs.max_pending_bytes` over all files the oldest group is ([`crate::budget`]).
//! Groups never span files: a rotation closes them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use serde::Deserialize;

use node_agent_core::config::Problems;
use node_agent_core::duration::serde_format as duration_serde;
use node_agent_core::record::{LogRecord, SourceMeta, Stream};

use super::Stage;
use super::config::BuildContext;
use super::matcher::{MatchConfig, Matcher};
use crate::metrics::metrics;

/// Records that may wait behind an open group of their file before it is closed early.
const MAX_WAITING_RECORDS: usize = 10_000;
/// Capacity a message gets when a first line is joined to it (at most `max_bytes`).
const JOIN_CAPACITY: usize = 1024;
/// The built-in detectors, by name.
pub const BUILT_IN: [&str; 7] = ["auto", "java", "python", "go", "ruby", "nodejs", "dotnet"];

/// `type: multiline`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MultilineConfig {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// A built-in detector (default `auto` unless `start` is given).
    pub detector: Option<String>,
    /// Custom rule: regex of a line that begins a record.
    pub start: Option<String>,
    /// Custom rule: regex of a line that continues one (default: not matching `start`).
    pub continuation: Option<String>,
    pub max_lines: usize,
    /// Default `logs.max_line_bytes`.
    pub max_bytes: Option<usize>,
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub flush_timeout: Duration,
    /// Pod annotation whose value names the detector for that pod's containers (`none`
    /// turns joining off). `node-agent.io/*` ones always reach the stage (as hints); others
    /// only if the Kubernetes metadata config keeps them.
    pub annotation: String,
}

impl Default for MultilineConfig {
    fn default() -> Self {
        Self {
            name: None,
            matcher: MatchConfig::default(),
            detector: None,
            start: None,
            continuation: None,
            max_lines: 1000,
            max_bytes: None,
            flush_timeout: Duration::from_secs(1),
            annotation: "node-agent.io/multiline".into(),
        }
    }
}

fn regex(
    text: &str,
    at: &node_agent_core::config::KeyPath,
    problems: &mut Problems,
) -> Option<regex::Regex> {
    problems.take(
        at,
        regex::Regex::new(text).map_err(|e| format!("invalid regex {text:?}: {e}")),
    )
}

impl MultilineConfig {
    pub fn build(&self, cx: &mut BuildContext<'_>) -> Option<Multiline> {
        let at = cx.at.clone();
        let matcher = cx.matcher(&self.matcher);
        let problems = &mut *cx.problems;
        problems.check(
            self.max_lines > 0,
            &at.key("max_lines"),
            "must be greater than 0",
        );
        let max_bytes = self.max_bytes.unwrap_or(cx.max_line_bytes);
        problems.check(
            max_bytes > 0,
            &at.key("max_bytes"),
            "must be greater than 0",
        );
        problems.check(
            !self.flush_timeout.is_zero(),
            &at.key("flush_timeout"),
            "must be greater than 0",
        );
        let configured = match (&self.detector, &self.start) {
            (Some(_), Some(_)) => {
                problems.add(
                    &at.key("start"),
                    "give either `detector` or a custom `start`, not both",
                );
                None
            }
            (detector, None) => {
                problems.check(
                    self.continuation.is_none(),
                    &at.key("continuation"),
                    "needs a custom `start`",
                );
                let name = detector.as_deref().unwrap_or("auto");
                let d = Detector::built_in(name);
                if d.is_none() {
                    problems.add(
                        &at.key("detector"),
                        format!(
                            "unknown detector {name:?}; expected one of {}",
                            BUILT_IN.join(", ")
                        ),
                    );
                }
                d
            }
            (None, Some(start)) => {
                let start = regex(start, &at.key("start"), problems);
                let continuation = self
                    .continuation
                    .as_ref()
                    .map(|c| regex(c, &at.key("continuation"), problems));
                match (start, continuation) {
                    (Some(s), None) => Some(Detector::custom(s, None)),
                    (Some(s), Some(Some(c))) => Some(Detector::custom(s, Some(c))),
                    _ => None,
                }
            }
        }?;
        let mut detectors = vec![configured];
        let mut by_name = HashMap::new();
        for name in BUILT_IN {
            by_name.insert(name, detectors.len());
            detectors.push(Detector::built_in(name)?);
        }
        Some(Multiline {
            matcher,
            detectors,
            by_name,
            annotation: self.annotation.clone(),
            max_lines: self.max_lines,
            max_bytes,
            timeout: self.flush_timeout,
            files: FxHashMap::default(),
            pending: 0,
        })
    }
}

// ---- line predicates of the built-in detectors -------------------------------------------

fn indented(l: &str) -> bool {
    l.starts_with([' ', '\t'])
}

/// A line that may begin a group: not blank, not indented.
fn header(l: &str) -> bool {
    !l.is_empty() && !indented(l)
}

fn blank(l: &str) -> bool {
    l.trim().is_empty()
}

fn any_line(_: &str) -> bool {
    true
}

/// The JVM's report of an uncaught exception: `Exception in thread "main" …`.
fn java_uncaught(l: &str) -> bool {
    l.starts_with("Exception in thread ")
}

/// `java.lang.IllegalStateException: …`, `com.acme.FooError`.
fn java_exception(l: &str) -> bool {
    let name = l.split(':').next().unwrap_or(l);
    name.contains('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'$')
        && ["Exception", "Error", "Throwable"]
            .iter()
            .any(|s| name.ends_with(s))
}

fn java_caused_by(l: &str) -> bool {
    l.starts_with("Caused by: ")
}

fn py_traceback(l: &str) -> bool {
    l.trim_end() == "Traceback (most recent call last):"
}

/// `ValueError: boom`, `KeyboardInterrupt`, `mod.CustomError: …`.
fn py_exception(l: &str) -> bool {
    let name = l.split(':').next().unwrap_or(l);
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
}

fn py_chained(l: &str) -> bool {
    l.starts_with("During handling of the above exception")
        || l.starts_with("The above exception was the direct cause")
}

/// `goroutine 1 [running]:`, `goroutine 7 gp=0xc000 m=0 mp=0x5b4e40 [chan receive]:`.
fn go_goroutine(l: &str) -> bool {
    l.strip_prefix("goroutine ").is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_digit()) && l.trim_end().ends_with("]:")
    })
}

fn go_start(l: &str) -> bool {
    l.starts_with("panic: ")
        || l.starts_with("fatal error: ")
        || go_goroutine(l)
        || l.strip_prefix("SIG").is_some_and(|rest| {
            let name_len = rest.bytes().take_while(u8::is_ascii_uppercase).count();
            name_len > 0 && rest[name_len..].starts_with(": ")
        })
}

/// `main.main()`, `net/http.(*conn).serve(0xc000, {0x7, 0x8})`, `main.f(...)`.
fn go_function(l: &str) -> bool {
    let Some(open) = l.find('(') else {
        return false;
    };
    let prefix = &l[..open];
    !prefix.is_empty()
        && prefix.contains('.')
        && !prefix.contains(char::is_whitespace)
        && l.trim_end().ends_with(')')
}

fn go_continuation(l: &str) -> bool {
    blank(l)
        || l.starts_with('\t')
        || go_start(l)
        || go_function(l)
        || [
            "created by ",
            "[signal ",
            "PC=",
            "exit status ",
            "...additional frames elided...",
            "goroutine running on other thread",
        ]
        .iter()
        .any(|p| l.starts_with(p))
        // Register dumps after a signal: `rax    0x0`.
        || l.split_once(char::is_whitespace).is_some_and(|(reg, v)| {
            (2..=6).contains(&reg.len())
                && reg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && v.trim_start().starts_with("0x")
        })
}

/// The first line of Node's uncaught exception report: `/app/index.js:3`.
fn node_uncaught(l: &str) -> bool {
    l.rsplit_once(':').is_some_and(|(file, line)| {
        !line.is_empty()
            && line.bytes().all(|b| b.is_ascii_digit())
            && !file.contains(char::is_whitespace)
            && [".js", ".mjs", ".cjs", ".ts"]
                .iter()
                .any(|e| file.ends_with(e))
    })
}

fn node_version(l: &str) -> bool {
    l.starts_with("Node.js v")
}

fn closing_brace(l: &str) -> bool {
    l == "}"
}

fn dotnet_end_of_inner(l: &str) -> bool {
    l.starts_with("--- End of ")
}

type Table = &'static [(&'static str, fn(&str) -> bool, &'static str)];

const JAVA: Table = &[
    ("start", java_uncaught, "stack"),
    ("head", java_exception, "stack"),
    ("head", indented, "stack"),
    ("stack", indented, "stack"),
    ("stack", java_caused_by, "stack"),
];
const PYTHON: Table = &[
    ("start", py_traceback, "py_tb"),
    ("head", py_traceback, "py_tb"),
    ("py_tb", indented, "py_tb"),
    ("py_tb", py_exception, "py_end"),
    ("py_end", blank, "py_gap"),
    ("py_gap", py_chained, "py_chain"),
    ("py_chain", blank, "py_gap2"),
    ("py_gap2", py_traceback, "py_tb"),
];
const GO: Table = &[
    // A panic is never part of the line before it: the runtime writes it on its own.
    ("start", go_start, "go"),
    ("go", go_continuation, "go"),
];
const RUBY: Table = &[("head", indented, "stack"), ("stack", indented, "stack")];
const DOTNET: Table = &[
    ("head", indented, "stack"),
    ("stack", indented, "stack"),
    ("stack", dotnet_end_of_inner, "stack"),
];
const NODEJS: Table = &[
    ("start", node_uncaught, "node_uncaught"),
    ("node_uncaught", node_version, "node_end"),
    ("node_uncaught", any_line, "node_uncaught"),
    ("head", indented, "stack"),
    ("stack", indented, "stack"),
    ("stack", closing_brace, "stack"),
];
/// Every detector lets any non-indented line begin a group; tried after their own starts.
const HEAD: Table = &[("start", header, "head")];

enum Cond {
    Fn(fn(&str) -> bool),
    Regex(regex::Regex),
    NotRegex(regex::Regex),
}

impl Cond {
    fn is_match(&self, line: &str) -> bool {
        match self {
            Cond::Fn(f) => f(line),
            Cond::Regex(r) => r.is_match(line),
            Cond::NotRegex(r) => !r.is_match(line),
        }
    }
}

/// A compiled state machine: `rules[state]` in order, state 0 being "no group yet".
pub struct Detector {
    rules: Vec<Vec<(Cond, u16)>>,
}

impl Detector {
    fn from_tables(tables: &[Table]) -> Self {
        let mut names: Vec<&str> = vec!["start"];
        let mut rules: Vec<Vec<(Cond, u16)>> = vec![Vec::new()];
        let mut id = |name: &'static str, rules: &mut Vec<Vec<(Cond, u16)>>| -> u16 {
            let i = names.iter().position(|n| *n == name).unwrap_or_else(|| {
                names.push(name);
                rules.push(Vec::new());
                names.len() - 1
            });
            u16::try_from(i).unwrap_or(u16::MAX)
        };
        for table in tables {
            for (from, cond, to) in table.iter() {
                let from = id(from, &mut rules);
                let to = id(to, &mut rules);
                rules[usize::from(from)].push((Cond::Fn(*cond), to));
            }
        }
        Self { rules }
    }

    /// A built-in detector by name.
    pub fn built_in(name: &str) -> Option<Self> {
        let tables: &[Table] = match name {
            "java" => &[JAVA, HEAD],
            "python" => &[PYTHON, HEAD],
            "go" => &[GO, HEAD],
            "ruby" => &[RUBY, HEAD],
            "nodejs" => &[NODEJS, HEAD],
            "dotnet" => &[DOTNET, HEAD],
            "auto" => &[PYTHON, GO, NODEJS, JAVA, RUBY, DOTNET, HEAD],
            _ => return None,
        };
        Some(Self::from_tables(tables))
    }

    /// `start` begins a group; `continuation` (default: not `start`) extends it.
    pub fn custom(start: regex::Regex, continuation: Option<regex::Regex>) -> Self {
        let cont = match continuation {
            Some(c) => Cond::Regex(c),
            None => Cond::NotRegex(start.clone()),
        };
        Self {
            rules: vec![vec![(Cond::Regex(start), 1)], vec![(cont, 1)]],
        }
    }

    /// The state after `line` in `state`, if the line starts (state 0) or continues a group.
    fn next(&self, state: u16, line: &str) -> Option<u16> {
        self.rules
            .get(usize::from(state))?
            .iter()
            .find(|(c, _)| c.is_match(line))
            .map(|(_, to)| *to)
    }
}

/// Memory a held record takes besides its message (for `logs.max_pending_bytes`).
const RECORD_OVERHEAD: usize = std::mem::size_of::<LogRecord>();

/// A group being joined.
struct Group {
    record: LogRecord,
    detector: usize,
    state: u16,
    lines: usize,
    started: Instant,
    last_line: Instant,
}

impl Group {
    fn finish(mut self) -> LogRecord {
        let keep = self.record.message.trim_end_matches(['\n', '\r']).len();
        self.record.message.truncate(keep);
        self.record
    }
}

/// One file: its open groups (per stream) and the complete records waiting behind them.
#[derive(Default)]
struct FileState {
    open: [Option<Group>; 2],
    /// Sorted by offset; all after the earliest open group.
    waiting: Vec<LogRecord>,
    waiting_bytes: usize,
    /// Memory `waiting` holds (messages' capacity plus the records).
    waiting_cost: usize,
}

impl FileState {
    fn barrier(&self) -> u64 {
        self.open
            .iter()
            .flatten()
            .map(|g| g.record.offset)
            .min()
            .unwrap_or(u64::MAX)
    }

    fn complete(&mut self, record: LogRecord, out: &mut Vec<LogRecord>) {
        if self.waiting.is_empty() && record.offset < self.barrier() {
            out.push(record);
            return;
        }
        self.waiting_bytes += record.message.len();
        self.waiting_cost += record.message.capacity() + RECORD_OVERHEAD;
        let at = self.waiting.partition_point(|r| r.offset < record.offset);
        self.waiting.insert(at, record);
    }

    /// Emits what no open group is in front of any more.
    fn release(&mut self, out: &mut Vec<LogRecord>) {
        let barrier = self.barrier();
        let n = self.waiting.partition_point(|r| r.offset < barrier);
        for r in self.waiting.drain(..n) {
            self.waiting_bytes -= r.message.len();
            self.waiting_cost -= r.message.capacity() + RECORD_OVERHEAD;
            out.push(r);
        }
    }

    fn close_where(&mut self, out: &mut Vec<LogRecord>, mut pred: impl FnMut(&Group) -> bool) {
        for slot in 0..self.open.len() {
            if self.open[slot].as_ref().is_some_and(&mut pred)
                && let Some(g) = self.open[slot].take()
            {
                self.complete(g.finish(), out);
            }
        }
        self.release(out);
    }

    /// Memory this file's groups and waiting records hold.
    fn cost(&self) -> usize {
        let groups: usize = self
            .open
            .iter()
            .flatten()
            .map(|g| g.record.message.capacity() + RECORD_OVERHEAD)
            .sum();
        groups + self.waiting_cost
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.open.iter().all(Option::is_none)
    }

    fn held_from(&self) -> Option<u64> {
        let barrier = self.barrier();
        let waiting = self.waiting.first().map_or(u64::MAX, |r| r.offset);
        Some(barrier.min(waiting)).filter(|o| *o != u64::MAX)
    }
}

/// The multiline stage (see the module docs).
pub struct Multiline {
    matcher: Matcher,
    /// `[0]` is the configured one, then the built-ins ([`BUILT_IN`] order).
    detectors: Vec<Detector>,
    by_name: HashMap<&'static str, usize>,
    annotation: String,
    max_lines: usize,
    max_bytes: usize,
    timeout: Duration,
    /// Looked up several times per record: FxHash, not SipHash (file ids are our own hashes).
    files: FxHashMap<u64, FileState>,
    /// Sum of the files' [`FileState::cost`].
    pending: usize,
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Multiline {
    /// The detector for records of `source`, `None` when they are not joined. The pod's
    /// annotation, when the metadata carries it, overrides the configured detector.
    fn detector_for(&mut self, source: &std::sync::Arc<SourceMeta>) -> Option<usize> {
        if !self.matcher.matches(source) {
            return None;
        }
        // `node-agent.io/*` annotations arrive as hints, unaffected by the annotation filter.
        let chosen = source.kubernetes.as_ref().and_then(|k| {
            self.annotation
                .strip_prefix("node-agent.io/")
                .and_then(|hint| k.hints.get(hint))
                .or_else(|| k.annotations.get(&self.annotation))
        });
        match chosen.map(|v| v.trim()) {
            None => Some(0),
            Some("none" | "off" | "false") => None,
            Some(name) => Some(self.by_name.get(name).copied().unwrap_or(0)),
        }
    }
}

impl Stage for Multiline {
    fn name(&self) -> &'static str {
        "multiline"
    }

    fn process(&mut self, record: LogRecord, out: &mut Vec<LogRecord>) {
        let file_id = record.source.file_id;
        let before = self.files.get(&file_id).map_or(0, FileState::cost);
        self.join(record, out);
        let after = self.files.get(&file_id).map_or(0, FileState::cost);
        self.pending = (self.pending + after).saturating_sub(before);
    }

    fn flush_due(&mut self, now: Instant, out: &mut Vec<LogRecord>) {
        let timeout = self.timeout;
        self.files.retain(|_, file| {
            file.close_where(out, |g| now >= g.last_line + timeout);
            !file.is_empty()
        });
        self.pending = self.files.values().map(FileState::cost).sum();
    }

    fn flush_file(&mut self, file_id: u64, out: &mut Vec<LogRecord>) {
        if let Some(mut file) = self.files.remove(&file_id) {
            self.pending = self.pending.saturating_sub(file.cost());
            file.close_where(out, |_| true);
        }
    }

    fn held_from(&self, file_id: u64) -> Option<u64> {
        self.files.get(&file_id)?.held_from()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.files
            .values()
            .flat_map(|f| f.open.iter().flatten())
            .map(|g| g.last_line + self.timeout)
            .min()
    }

    fn pending_bytes(&self) -> usize {
        self.pending
    }

    fn oldest_pending(&self) -> Option<Instant> {
        self.files
            .values()
            .flat_map(|f| f.open.iter().flatten())
            .map(|g| g.started)
            .min()
    }

    fn flush_oldest(&mut self, out: &mut Vec<LogRecord>) -> bool {
        let oldest = self
            .files
            .iter()
            .flat_map(|(id, f)| {
                f.open
                    .iter()
                    .enumerate()
                    .filter_map(move |(slot, g)| g.as_ref().map(|g| (g.started, *id, slot)))
            })
            .min();
        let Some((_, file_id, slot)) = oldest else {
            return false;
        };
        let Some(file) = self.files.get_mut(&file_id) else {
            return false;
        };
        let before = file.cost();
        let Some(g) = file.open[slot].take() else {
            return false;
        };
        let mut record = g.finish();
        // Its later lines become a record of their own.
        record.truncated = true;
        metrics()
            .force_flushed
            .with_label_values(&["multiline"])
            .inc();
        file.complete(record, out);
        file.release(out);
        let after = file.cost();
        if file.is_empty() {
            self.files.remove(&file_id);
        }
        self.pending = (self.pending + after).saturating_sub(before);
        true
    }
}

impl Multiline {
    /// [`Stage::process`] without the accounting.
    fn join(&mut self, record: LogRecord, out: &mut Vec<LogRecord>) {
        let detector = self.detector_for(&record.source);
        let file_id = record.source.file_id;
        if detector.is_none() && !self.files.contains_key(&file_id) {
            out.push(record);
            return;
        }
        let now = Instant::now();
        let slot = slot(record.stream);
        let (max_lines, max_bytes) = (self.max_lines, self.max_bytes);
        let file = self.files.entry(file_id).or_default();
        if let Some(g) = &mut file.open[slot] {
            // A record no longer joined (its pod's annotation changed) only closes the group.
            let fits = detector.is_some()
                && g.lines < max_lines
                && g.record.message.len() + 1 + record.message.len() <= max_bytes;
            if fits && let Some(next) = self.detectors[g.detector].next(g.state, &record.message) {
                let message = &mut g.record.message;
                let needed = message.len() + 1 + record.message.len();
                if needed > message.capacity() {
                    // A trace is tens of lines: grow in few steps, not by doubling from the
                    // first line's size (each step copies what was joined so far).
                    let target = needed.max(JOIN_CAPACITY.min(max_bytes));
                    message.reserve(target - message.len());
                }
                g.record.message.push('\n');
                g.record.message.push_str(&record.message);
                g.record.truncated |= record.truncated;
                g.record.malformed |= record.malformed;
                g.state = next;
                g.lines += 1;
                g.last_line = now;
                return;
            }
            if let Some(g) = file.open[slot].take() {
                file.complete(g.finish(), out);
            }
        }
        match detector.and_then(|d| Some((d, self.detectors[d].next(0, &record.message)?))) {
            Some((detector, state)) => {
                file.open[slot] = Some(Group {
                    record,
                    detector,
                    state,
                    lines: 1,
                    started: now,
                    last_line: now,
                });
            }
            None => file.complete(record, out),
        }
        file.release(out);
        let overfull = file.waiting.len() > MAX_WAITING_RECORDS
            || file.waiting_bytes > max_bytes.saturating_mul(4);
        if overfull {
            file.close_where(out, |_| true);
        }
        if file.is_empty() {
            self.files.remove(&file_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_support::meta;
    use super::*;
    use node_agent_core::config::KeyPath;
    use node_agent_core::kube::PodMetadata;

    fn stage(yaml: &str) -> Result<Multiline, String> {
        let config: MultilineConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let mut problems = Problems::new();
        let at = KeyPath::root().key("logs").key("processors").index(0);
        let mut cx = BuildContext {
            at: &at,
            problems: &mut problems,
            max_line_bytes: 256 * 1024,
            counting: true,
        };
        let built = config.build(&mut cx);
        problems.into_result().map_err(|e| e.to_string())?;
        built.ok_or_else(|| "not built".into())
    }

    /// Feeds `text` line by line (offsets as in the file) and ends the file.
    fn run(stage: &mut Multiline, text: &str) -> Vec<LogRecord> {
        let source = meta("ns", "pod", "c");
        let mut out = Vec::new();
        let mut offset = 0;
        for line in text.lines() {
            let r = LogRecord::new(
                Arc::clone(&source),
                offset as i64,
                Stream::Stdout,
                offset,
                line.into(),
            );
            stage.process(r, &mut out);
            offset += line.len() as u64 + 1;
        }
        stage.flush_file(1, &mut out);
        out
    }

    /// Each output record's line count, checking offsets and timestamps are the first line's.
    fn groups(out: &[LogRecord], text: &str) -> Vec<usize> {
        let mut offset = 0u64;
        let mut starts = Vec::new();
        for line in text.lines() {
            starts.push(offset);
            offset += line.len() as u64 + 1;
        }
        let mut next = 0;
        let mut sizes = Vec::new();
        for r in out {
            assert_eq!(
                r.offset, starts[next],
                "group starts where its first line does"
            );
            assert_eq!(r.timestamp_nanos, r.offset as i64, "first line's timestamp");
            let n = r.message.split('\n').count();
            // Trailing blank lines are dropped from the message, not from the file.
            let mut consumed = n;
            while next + consumed < starts.len()
                && text
                    .lines()
                    .nth(next + consumed)
                    .is_some_and(|l| l.trim().is_empty())
                && out.iter().all(|o| o.offset != starts[next + consumed])
            {
                consumed += 1;
            }
            sizes.push(n);
            next += consumed;
        }
        assert_eq!(next, starts.len(), "every line is in some record");
        sizes
    }

    const FIXTURES: [(&str, &str, &[usize]); 6] = [
        ("java", include_str!("testdata/java.log"), &[1, 10, 1, 2, 1]),
        (
            "python",
            include_str!("testdata/python.log"),
            &[1, 15, 1, 1, 3, 1],
        ),
        ("go", include_str!("testdata/go.log"), &[1, 8, 1, 17, 1]),
        ("ruby", include_str!("testdata/ruby.log"), &[1, 3, 1]),
        ("nodejs", include_str!("testdata/nodejs.log"), &[1, 6, 1, 9]),
        ("dotnet", include_str!("testdata/dotnet.log"), &[2, 5, 2]),
    ];

    #[test]
    fn built_in_detectors_join_real_traces_and_leave_ordinary_lines() {
        for (name, text, want) in FIXTURES {
            for detector in [name, "auto"] {
                let mut s = stage(&format!("detector: {detector}")).unwrap();
                let out = run(&mut s, text);
                assert_eq!(groups(&out, text), want, "{name} with detector {detector}");
                assert!(s.files.is_empty());
            }
        }
        let mut s = stage("detector: java").unwrap();
        let out = run(&mut s, FIXTURES[0].1);
        assert!(out[1].message.starts_with("2024-05-01 12:00:01.456 ERROR"));
        assert!(
            out[1]
                .message
                .ends_with("\t\tat com.acme.io.Res.close(Res.java:9)")
        );
    }

    #[test]
    fn pending_budget_flush_closes_the_oldest_group_flagged() {
        let mut s = stage("detector: java").unwrap();
        let one = meta("ns", "pod", "c");
        let two = Arc::new(SourceMeta {
            file_id: 2,
            ..(*one).clone()
        });
        let mut out = Vec::new();
        let push = |s: &mut Multiline, m: &Arc<SourceMeta>, offset, line: &str, out: &mut _| {
            s.process(
                LogRecord::new(Arc::clone(m), 0, Stream::Stdout, offset, line.into()),
                out,
            )
        };
        push(&mut s, &one, 0, "ERROR first", &mut out);
        push(&mut s, &one, 12, "\tat a.B(B.java:1)", &mut out);
        push(&mut s, &two, 0, "ERROR second", &mut out);
        push(&mut s, &two, 13, "\tat c.D(D.java:2)", &mut out);
        assert!(out.is_empty());
        let held = s.pending_bytes();
        assert!(held >= 2 * RECORD_OVERHEAD, "{held}");
        let first = s.oldest_pending().unwrap();
        assert!(s.flush_oldest(&mut out));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, "ERROR first\n\tat a.B(B.java:1)");
        assert!(out[0].truncated);
        assert_eq!(out[0].source.file_id, 1);
        assert!(s.pending_bytes() < held);
        assert!(s.oldest_pending().unwrap() >= first);
        // A later line of file 1 starts over; file 2's group is untouched.
        push(&mut s, &one, 30, "\tat e.F(F.java:3)", &mut out);
        assert_eq!(out.len(), 2);
        assert!(!out[1].truncated);
        assert!(s.flush_oldest(&mut out));
        assert_eq!(out[2].source.file_id, 2);
        assert!(!s.flush_oldest(&mut out));
        assert_eq!(s.pending_bytes(), 0);
        assert!(s.files.is_empty());
    }

    #[test]
    fn all_fixtures_concatenated_under_auto() {
        let text: String = FIXTURES.iter().map(|f| f.1).collect();
        let want: Vec<usize> = FIXTURES.iter().flat_map(|f| f.2.iter().copied()).collect();
        let mut s = stage("{}").unwrap();
        assert_eq!(groups(&run(&mut s, &text), &text), want);
    }

    #[test]
    fn streams_are_joined_apart_and_nothing_passes_an_open_group() {
        let mut s = stage("detector: java").unwrap();
        let source = meta("ns", "pod", "c");
        let mut out = Vec::new();
        let push = |s: &mut Multiline, stream, offset, line: &str, out: &mut Vec<LogRecord>| {
            s.process(
                LogRecord::new(Arc::clone(&source), 0, stream, offset, line.into()),
                out,
            )
        };
        push(&mut s, Stream::Stderr, 0, "ERROR failed", &mut out);
        push(&mut s, Stream::Stdout, 10, "GET /a 200", &mut out);
        push(&mut s, Stream::Stderr, 20, "\tat A.b(A.java:1)", &mut out);
        push(&mut s, Stream::Stdout, 30, "GET /b 200", &mut out);
        // Everything after the open stderr group waits; positions stay at its start.
        assert!(out.is_empty());
        assert_eq!(s.held_from(1), Some(0));
        assert_eq!(s.held_from(2), None);
        push(&mut s, Stream::Stderr, 40, "INFO recovered", &mut out);
        let got: Vec<(u64, &str)> = out.iter().map(|r| (r.offset, r.message.as_str())).collect();
        assert_eq!(
            got,
            [(0, "ERROR failed\n\tat A.b(A.java:1)"), (10, "GET /a 200")],
            "the stdout line at 30 is still open, so 40 waits too"
        );
        assert_eq!(s.held_from(1), Some(30));
        let mut rest = Vec::new();
        s.flush_file(1, &mut rest);
        let offsets: Vec<u64> = rest.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [30, 40]);
        assert_eq!(s.held_from(1), None);
    }

    #[test]
    fn groups_close_on_timeout_line_and_byte_limits() {
        let mut s = stage("detector: java\nflush_timeout: 2s").unwrap();
        let mut out = Vec::new();
        s.process(super::super::test_support::record(0, "ERROR x"), &mut out);
        let deadline = s.next_deadline().expect("a group is open");
        s.flush_due(deadline - Duration::from_millis(1), &mut out);
        assert!(out.is_empty());
        s.flush_due(deadline, &mut out);
        assert_eq!(out.len(), 1);
        assert!(s.next_deadline().is_none() && s.files.is_empty());

        let mut s = stage("detector: java\nmax_lines: 3").unwrap();
        let text = "E\n\tat 1\n\tat 2\n\tat 3\n\tat 4\n";
        let out = run(&mut s, text);
        let msgs: Vec<&str> = out.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(msgs, ["E\n\tat 1\n\tat 2", "\tat 3", "\tat 4"]);

        let mut s = stage("detector: java\nmax_bytes: 12").unwrap();
        let out = run(&mut s, text);
        let msgs: Vec<&str> = out.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(msgs, ["E\n\tat 1", "\tat 2", "\tat 3", "\tat 4"]);
    }

    #[test]
    fn what_waits_behind_an_open_group_is_bounded() {
        let mut s = stage("detector: java\nflush_timeout: 1h").unwrap();
        let source = meta("ns", "pod", "c");
        let mut out = Vec::new();
        let rec = |stream, offset: u64, line: &str| {
            LogRecord::new(Arc::clone(&source), 0, stream, offset, line.into())
        };
        s.process(rec(Stream::Stderr, 0, "ERROR open"), &mut out);
        for i in 1..=MAX_WAITING_RECORDS as u64 {
            s.process(rec(Stream::Stdout, i, ""), &mut out);
        }
        assert!(out.is_empty(), "all wait behind the group");
        s.process(rec(Stream::Stdout, 1_000_000, ""), &mut out);
        assert_eq!(
            out.len(),
            MAX_WAITING_RECORDS + 2,
            "the group was closed early"
        );
        assert_eq!(out[0].message, "ERROR open");
        assert!(s.files.is_empty() && s.held_from(1).is_none());
    }

    #[test]
    fn custom_rules() {
        let text = "2024-05-01 first\n  more\nstill more\n2024-05-02 second\n2024-05-03 third\n";
        let mut s = stage(r"start: '^\d{4}-\d{2}-\d{2} '").unwrap();
        let msgs: Vec<String> = run(&mut s, text).into_iter().map(|r| r.message).collect();
        assert_eq!(
            msgs,
            [
                "2024-05-01 first\n  more\nstill more",
                "2024-05-02 second",
                "2024-05-03 third"
            ]
        );
        let mut s = stage("start: '^\\d{4}-'\ncontinuation: '^\\s'").unwrap();
        let msgs: Vec<String> = run(&mut s, text).into_iter().map(|r| r.message).collect();
        assert_eq!(
            msgs,
            [
                "2024-05-01 first\n  more",
                "still more",
                "2024-05-02 second",
                "2024-05-03 third"
            ]
        );
    }

    #[test]
    fn match_and_annotation_choose_what_is_joined() {
        let text = "ERROR x\n\tat a\n";
        let mut s = stage("match: {namespace: other}").unwrap();
        assert_eq!(
            run(&mut s, text).len(),
            2,
            "not matched: passes line by line"
        );

        let mut s = stage("detector: go").unwrap();
        let mut pod = PodMetadata::default();
        pod.annotations
            .insert("node-agent.io/multiline".into(), "java".into());
        let mut m = (*meta("ns", "pod", "c")).clone();
        m.kubernetes = Some(Arc::new(pod.clone()));
        let m = Arc::new(m);
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            s.process(
                LogRecord::new(
                    Arc::clone(&m),
                    0,
                    Stream::Stdout,
                    i as u64 * 10,
                    line.into(),
                ),
                &mut out,
            );
        }
        s.flush_file(1, &mut out);
        assert_eq!(out.len(), 1, "the annotation picked java");

        pod.annotations
            .insert("node-agent.io/multiline".into(), "none".into());
        let mut m = (*meta("ns", "pod", "c")).clone();
        m.kubernetes = Some(Arc::new(pod));
        let m = Arc::new(m);
        let mut s = stage("{}").unwrap();
        let mut out = Vec::new();
        s.process(
            LogRecord::new(Arc::clone(&m), 0, Stream::Stdout, 0, "ERROR x".into()),
            &mut out,
        );
        assert_eq!(out.len(), 1, "`none` turns joining off");
    }

    #[test]
    fn bad_settings_are_rejected_with_their_key_path() {
        let err = stage("start: '(unclosed'").err().unwrap();
        assert!(
            err.contains("logs.processors[0].start: invalid regex"),
            "{err}"
        );
        let err = stage("detector: cobol").err().unwrap();
        assert!(
            err.contains("logs.processors[0].detector: unknown detector \"cobol\""),
            "{err}"
        );
        let err = stage("detector: java\nstart: x").err().unwrap();
        assert!(err.contains("either"), "{err}");
        let err = stage("continuation: x\nmax_lines: 0\nflush_timeout: 0s")
            .err()
            .unwrap();
        assert!(err.contains("3 problems"), "{err}");
        assert!(stage("stat: x").is_err(), "unknown key");
    }
}
