//! The source side, on its own OS thread (file I/O is blocking): discover files, tail them,
//! parse, enrich, batch, and hand batches to the delivery side through a bounded channel.
//! When that channel is full the thread blocks: the log files are the buffer, memory stays
//! flat while sinks are slow or down.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use super::LogsConfig;
use super::ack::Update;
use super::batch::{Batch, BatchBuilder};
use super::checkpoint::Entry;
use super::discovery::{self, NamespaceFilter};
use super::file_id::{self, FileKey};
use super::metrics::metrics;
use super::parse::{Assembler, ParseStats, Parsed};
use super::tailer::Tailer;
use node_agent_core::kubelet::{FileKind, PodLogPath};
use node_agent_core::record::{LogRecord, SourceMeta};

/// How long a file that was renamed away or deleted is still watched for late writes
/// after we reached its end (the runtime reopens its log only after kubelet's rename).
const ROTATE_WAIT: Duration = Duration::from_secs(1);
/// Upper bound on an idle wait, so missed notifications cost at most this much latency.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Second look after a watch-triggered rescan (see the loop in [`Reader::run`]).
const FOLLOW_UP_SCAN: Duration = Duration::from_millis(200);
/// Extra room a raw line gets beyond `max_line_bytes` for the CRI/docker framing.
const LINE_FRAMING: usize = 1024;
/// Bound on remembered first-line hashes (cleared when reached; a miss only risks
/// re-shipping a copytruncate copy).
const MAX_SEEN_HEADS: usize = 100_000;

/// Committed offsets, shared with the delivery side, for the lag gauge.
pub type CommittedView = Arc<Mutex<HashMap<FileKey, u64>>>;

struct Tracked {
    tailer: Tailer,
    assembler: Assembler,
    key: FileKey,
    path: PathBuf,
    info: PodLogPath,
    /// Built once the first line is complete (the file id hashes it).
    meta: Option<Arc<SourceMeta>>,
    /// Hash of the first line, with `meta`.
    head: Option<u64>,
    /// Records were emitted or the position moved since the last sealed batch.
    dirty: bool,
    /// The last read hit the end of the file.
    at_eof: bool,
    /// When we noticed the path no longer names this file (rotated away or deleted).
    detached_since: Option<Instant>,
}

impl Tracked {
    /// Where a restart may resume: after the last complete message.
    fn safe_offset(&self) -> u64 {
        let consumed = self.tailer.consumed_offset();
        self.assembler
            .pending_start()
            .map_or(consumed, |p| p.min(consumed))
    }
}

pub struct Reader {
    config: LogsConfig,
    node: String,
    filter: NamespaceFilter,
    files: HashMap<FileKey, Tracked>,
    /// Positions from the checkpoint not yet matched to a file (consumed by the first scan).
    loaded: HashMap<FileKey, Entry>,
    /// Files read to the end and dropped; a rotated name of theirs must not be re-read.
    finished: HashSet<FileKey>,
    /// First-line hashes of files we read: a rotated file starting with one of them is a
    /// copy (copytruncate) of what we already shipped.
    seen_heads: HashSet<u64>,
    builder: BatchBuilder,
    updates: Vec<Update>,
    tx: Sender<Batch>,
    wake: Receiver<()>,
    wake_tx: SyncSender<()>,
    /// Set by the file watch on structural changes.
    rescan: Arc<AtomicBool>,
    /// Established once `pods_dir` exists (it may appear after we start).
    watcher: Option<notify::RecommendedWatcher>,
    watch_warned: bool,
    committed: CommittedView,
    started: SystemTime,
    /// When the loaded checkpoint was written (`None`: no checkpoint).
    checkpoint_time: Option<SystemTime>,
    scratch: Vec<Parsed>,
    /// One read buffer for all files (`read_chunk_bytes`).
    read_buf: Vec<u8>,
    lag_labels: HashSet<(String, String, String)>,
    warned_open_limit: bool,
}

/// Why the reader stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    ReceiverGone,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: LogsConfig,
        node: String,
        (loaded, checkpoint_time): (HashMap<FileKey, Entry>, Option<SystemTime>),
        tx: Sender<Batch>,
        (wake_tx, wake): (SyncSender<()>, Receiver<()>),
        committed: CommittedView,
    ) -> Self {
        let builder = BatchBuilder::new(
            config.batch_max_records,
            config.batch_max_bytes,
            config.batch_timeout,
        );
        let chunk = config.read_chunk_bytes;
        Self {
            filter: NamespaceFilter {
                include: config.namespaces_include.clone(),
                exclude: config.namespaces_exclude.clone(),
            },
            config,
            node,
            files: HashMap::new(),
            loaded,
            finished: HashSet::new(),
            seen_heads: HashSet::new(),
            builder,
            updates: Vec::new(),
            tx,
            wake,
            wake_tx,
            rescan: Arc::new(AtomicBool::new(false)),
            watcher: None,
            watch_warned: false,
            committed,
            started: SystemTime::now(),
            checkpoint_time,
            scratch: Vec::new(),
            read_buf: vec![0; chunk],
            lag_labels: HashSet::new(),
            warned_open_limit: false,
        }
    }

    /// Reads until `shutdown`, then hands over what was already read and returns.
    pub fn run(mut self, shutdown: &CancellationToken) -> Exit {
        self.scan(true);
        let mut last_scan = Instant::now();
        let mut last_idle = Instant::now();
        // The second scan settles checkpoint entries the first one did not match.
        let mut follow_up: Option<Instant> = Some(last_scan + FOLLOW_UP_SCAN);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            if self.rescan.swap(false, Ordering::Relaxed) {
                self.scan(false);
                last_scan = now;
                // inotify cannot watch a directory before it exists: files created in a
                // new pod directory right after it may go unnoticed, so look once more.
                follow_up = Some(now + FOLLOW_UP_SCAN);
            } else if follow_up.is_some_and(|t| now >= t)
                || now.duration_since(last_scan) >= self.config.rescan_interval
            {
                self.scan(false);
                last_scan = now;
                follow_up = None;
            }
            let read_any = self.read_pass();
            if self.builder.is_due(Instant::now()) && !self.seal_and_send() {
                return Exit::ReceiverGone;
            }
            // Files at their end are checked even while others keep us busy, so rotated
            // files get closed and truncations noticed under sustained load too.
            if !read_any || last_idle.elapsed() >= IDLE_POLL {
                self.idle_pass();
                last_idle = Instant::now();
            }
            if read_any {
                continue;
            }
            if !self.updates.is_empty() && self.builder.is_empty() && !self.seal_and_send() {
                return Exit::ReceiverGone;
            }
            let now = Instant::now();
            let mut wait = IDLE_POLL
                .min((last_scan + self.config.rescan_interval).saturating_duration_since(now));
            for d in [self.builder.deadline(), follow_up].into_iter().flatten() {
                wait = wait.min(d.saturating_duration_since(now));
            }
            // A wake-up that arrived during the pass returns at once (the channel holds
            // one, coalescing bursts): no write goes unnoticed for a whole poll interval.
            if !wait.is_zero() {
                let _ = self.wake.recv_timeout(wait);
            }
        }
        if (!self.builder.is_empty() || !self.updates.is_empty()) && !self.seal_and_send() {
            return Exit::ReceiverGone;
        }
        Exit::Shutdown
    }

    /// Opens files that appeared, marks files whose path moved on, expires stale state.
    fn scan(&mut self, first: bool) {
        if self.watcher.is_none() {
            self.ensure_watch();
        }
        let candidates = discovery::scan(&self.config.pods_dir, &self.filter);
        let mut seen: HashSet<FileKey> = HashSet::new();
        let mut compressed = Vec::new();
        for c in candidates {
            let meta = match std::fs::metadata(&c.path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(path = %c.path.display(), error = %e, "log file vanished");
                    continue;
                }
            };
            let key = FileKey::of(&meta);
            seen.insert(key);
            if c.info.kind == FileKind::RotatedCompressed {
                // Compressed rotations hold bytes we read from the plain file already,
                // except when a checkpoint points into one (see below).
                compressed.push(c);
                continue;
            }
            if self.files.contains_key(&key) {
                continue;
            }
            self.consider(c.path, c.info, key, &meta, first);
        }
        // Checkpoint entries not matched by now: the file was compressed (resume from the
        // .gz) or is gone (forget it). Not at the first scan: a rename racing with our
        // listing can hide a file once.
        if !first && !self.loaded.is_empty() {
            let gone: Vec<FileKey> = self
                .loaded
                .keys()
                .filter(|k| !seen.contains(k))
                .copied()
                .collect();
            for key in &gone {
                self.resume_compressed(*key, &compressed);
            }
            let gone: Vec<FileKey> = gone
                .into_iter()
                .filter(|k| self.loaded.contains_key(k))
                .collect();
            for key in gone {
                self.loaded.remove(&key);
                self.updates.push(Update::Forget(key));
            }
        }
        self.finished.retain(|k| seen.contains(k));
        for t in self.files.values_mut() {
            if t.detached_since.is_some() {
                continue;
            }
            let same = std::fs::metadata(&t.path).is_ok_and(|m| FileKey::of(&m) == t.key);
            let unlinked = t.tailer.file().metadata().is_ok_and(|m| m.nlink() == 0);
            if !same || unlinked || t.info.kind != FileKind::Current {
                t.detached_since = Some(Instant::now());
            }
        }
        metrics().open_files.set(self.files.len() as i64);
        self.update_lag();
    }

    /// A file we were reading was rotated and then compressed by kubelet while no agent
    /// ran: find the `.gz` in its directory whose content matches the checkpoint's
    /// fingerprint, decompress it into an unlinked file in `state_dir`, and finish it from
    /// the saved offset under the original identity (same offsets, same file id).
    fn resume_compressed(&mut self, key: FileKey, compressed: &[discovery::Candidate]) {
        let Some(entry) = self.loaded.get(&key).cloned() else {
            return;
        };
        let dir = entry.path.parent();
        for c in compressed.iter().filter(|c| c.path.parent() == dir) {
            let file = match decompress_to_unlinked(&c.path, &self.config.state_dir) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(path = %c.path.display(), error = %e, "decompressing rotated log file");
                    continue;
                }
            };
            // The first line identifies the file; the fingerprint guards the offset.
            let len = file.metadata().map_or(0, |m| m.len());
            let same_head = entry.head.is_some() && file_id::head_hash(&file).ok() == entry.head;
            if !same_head
                || entry.offset > len
                || !file_id::matches(&file, entry.offset, &entry.fingerprint)
            {
                continue;
            }
            tracing::info!(path = %c.path.display(), offset = entry.offset, "finishing a log file that was compressed while no agent ran");
            self.loaded.remove(&key);
            let tailer = Tailer::new(
                file,
                entry.offset,
                self.config.max_line_bytes + LINE_FRAMING,
            );
            self.files.insert(
                key,
                Tracked {
                    tailer,
                    assembler: Assembler::new(self.config.max_line_bytes),
                    key,
                    path: entry.path.clone(),
                    info: c.info.clone(),
                    meta: None,
                    head: entry.head,
                    dirty: false,
                    at_eof: false,
                    detached_since: Some(Instant::now()),
                },
            );
            return;
        }
    }

    fn ensure_watch(&mut self) {
        match discovery::watch(
            &self.config.pods_dir,
            Arc::clone(&self.rescan),
            self.wake_tx.clone(),
        ) {
            Ok(w) => {
                self.watcher = Some(w);
                if self.watch_warned {
                    tracing::info!(pods_dir = %self.config.pods_dir.display(), "watching the pods directory");
                }
            }
            Err(e) if !self.watch_warned => {
                self.watch_warned = true;
                tracing::warn!(
                    pods_dir = %self.config.pods_dir.display(),
                    error = %e,
                    interval = ?self.config.rescan_interval,
                    "cannot watch the pods directory (yet); relying on periodic rescans"
                );
            }
            Err(_) => {}
        }
    }

    /// Decides whether and where to start reading a newly seen file.
    fn consider(
        &mut self,
        path: PathBuf,
        info: PodLogPath,
        key: FileKey,
        meta: &std::fs::Metadata,
        first: bool,
    ) {
        let saved = self.loaded.remove(&key);
        if saved.is_none() && info.kind == FileKind::Rotated {
            // A rotated file without a position of ours is read from its start only if it
            // holds bytes written after what we know: after our last checkpoint (rotated
            // while no agent ran, e.g. between two leaders) or after we started (rotated
            // before we opened it). Older ones predate us or were finished and forgotten.
            let just_started = self.started - Duration::from_secs(1);
            let since = match (first, self.checkpoint_time) {
                (_, Some(t)) => Some(t.min(just_started)),
                (true, None) => None,
                (false, None) => Some(just_started),
            };
            let recent = since.is_some_and(|t| meta.modified().is_ok_and(|m| m > t));
            if !recent || self.finished.contains(&key) {
                return;
            }
        }
        if self.files.len() >= self.config.max_open_files {
            if !self.warned_open_limit {
                tracing::warn!(
                    limit = self.config.max_open_files,
                    path = %path.display(),
                    "logs.max_open_files reached; new log files wait until others are finished"
                );
                self.warned_open_limit = true;
            }
            if let Some(s) = saved {
                self.loaded.insert(key, s);
            }
            return;
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                metrics().read_errors.inc();
                tracing::warn!(path = %path.display(), error = %e, "cannot open log file");
                if let Some(s) = saved {
                    self.loaded.insert(key, s);
                }
                return;
            }
        };
        if saved.is_none() && info.kind == FileKind::Rotated {
            match file_id::head(&file) {
                // Still being written (a copy in progress?): look again at the next scan.
                Ok((_, false)) | Err(_) => return,
                Ok((h, true)) if self.seen_heads.contains(&h) => {
                    // A copy of a file we read (copytruncate), not a file we missed.
                    tracing::debug!(path = %path.display(), "ignoring copy of an already shipped log file");
                    self.finished.insert(key);
                    return;
                }
                Ok(_) => {}
            }
        }
        let start = match saved {
            Some(s)
                if s.offset <= meta.len() && file_id::matches(&file, s.offset, &s.fingerprint) =>
            {
                s.offset
            }
            Some(s) => {
                tracing::info!(
                    path = %path.display(),
                    saved_offset = s.offset,
                    "checkpointed inode now holds another file (reused inode or truncated); reading from the start"
                );
                0
            }
            None => 0,
        };
        tracing::debug!(path = %path.display(), offset = start, "tailing log file");
        let tailer = Tailer::new(file, start, self.config.max_line_bytes + LINE_FRAMING);
        self.files.insert(
            key,
            Tracked {
                tailer,
                assembler: Assembler::new(self.config.max_line_bytes),
                key,
                path,
                info,
                meta: None,
                head: None,
                dirty: start == 0,
                at_eof: false,
                detached_since: None,
            },
        );
    }

    /// Reads one chunk from every file; returns whether any bytes were read.
    fn read_pass(&mut self) -> bool {
        let mut read_any = false;
        let keys: Vec<FileKey> = self.files.keys().copied().collect();
        for key in keys {
            let n = self.read_file(key);
            read_any |= n > 0;
            if self.builder.is_full() && !self.seal_and_send() {
                return read_any;
            }
        }
        read_any
    }

    fn read_file(&mut self, key: FileKey) -> usize {
        let Some(t) = self.files.get_mut(&key) else {
            return 0;
        };
        let now_nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut stats = ParseStats::default();
        let scratch = &mut self.scratch;
        let assembler = &mut t.assembler;
        let result = t
            .tailer
            .read_chunk(&mut self.read_buf, |offset, line, cut| {
                assembler.push(offset, line, cut, now_nanos, &mut stats, scratch);
            });
        let read = match result {
            Ok(s) => {
                metrics().bytes_read.inc_by(s.bytes as u64);
                metrics().lines_read.inc_by(s.lines);
                s.bytes
            }
            Err(e) => {
                metrics().read_errors.inc();
                tracing::warn!(path = %t.path.display(), error = %e, "reading log file");
                0
            }
        };
        t.at_eof = read == 0;
        if read > 0 {
            t.dirty = true;
        }
        self.emit(key, stats);
        read
    }

    /// Turns parsed messages of `key` into records in the current batch.
    fn emit(&mut self, key: FileKey, stats: ParseStats) {
        metrics().malformed_lines.inc_by(stats.malformed);
        metrics().truncated_messages.inc_by(stats.truncated);
        if self.scratch.is_empty() {
            return;
        }
        let Some(t) = self.files.get_mut(&key) else {
            return;
        };
        let meta = match &t.meta {
            Some(m) => Arc::clone(m),
            None => {
                let head = file_id::head_hash(t.tailer.file()).unwrap_or_else(|e| {
                    tracing::warn!(path = %t.path.display(), error = %e, "hashing log file head");
                    0
                });
                if self.seen_heads.len() >= MAX_SEEN_HEADS {
                    self.seen_heads.clear();
                }
                self.seen_heads.insert(head);
                t.head = Some(head);
                let file_id = file_id::file_id(key, head);
                let m = Arc::new(SourceMeta {
                    namespace: t.info.namespace.clone(),
                    pod: t.info.pod.clone(),
                    pod_uid: t.info.pod_uid.clone(),
                    container: t.info.container.clone(),
                    node: self.node.clone(),
                    path: t.path.clone(),
                    file_id,
                });
                t.meta = Some(Arc::clone(&m));
                m
            }
        };
        t.dirty = true;
        let parse_json = self.config.parse_json;
        for p in self.scratch.drain(..) {
            let mut r = LogRecord::new(
                Arc::clone(&meta),
                p.timestamp_nanos,
                p.stream,
                p.offset,
                p.message,
            );
            r.truncated = p.truncated;
            r.malformed = p.malformed;
            if parse_json && !p.malformed && r.message.starts_with('{') {
                r.fields = serde_json::from_str(&r.message).ok();
            }
            self.builder.push(r);
        }
    }

    /// Nothing to read: check for copytruncate and drop files that are finished.
    fn idle_pass(&mut self) {
        let mut finished = Vec::new();
        for t in self.files.values_mut() {
            if !t.at_eof {
                continue;
            }
            match t.tailer.check_truncated() {
                Ok(true) => {
                    tracing::info!(path = %t.path.display(), "log file was truncated (copytruncate); reading from the start");
                    t.assembler.reset();
                    t.meta = None;
                    t.head = None;
                    t.dirty = true;
                    t.at_eof = false;
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(path = %t.path.display(), error = %e, "fstat"),
            }
            if t.at_eof && t.detached_since.is_some_and(|d| d.elapsed() >= ROTATE_WAIT) {
                finished.push(t.key);
            }
        }
        for key in finished {
            let mut stats = ParseStats::default();
            if let Some(t) = self.files.get_mut(&key) {
                // The final part never came: ship what there is rather than lose it.
                t.assembler.flush(&mut stats, &mut self.scratch);
                tracing::debug!(path = %t.path.display(), "finished rotated or deleted log file");
            }
            self.emit(key, stats);
            self.files.remove(&key);
            self.finished.insert(key);
            self.updates.push(Update::Forget(key));
        }
        metrics().open_files.set(self.files.len() as i64);
    }

    /// Seals the current batch with the positions it completes and sends it (blocking
    /// while the delivery side is saturated). `false` when the delivery side is gone.
    fn seal_and_send(&mut self) -> bool {
        let mut updates = Vec::new();
        for t in self.files.values_mut().filter(|t| t.dirty) {
            t.dirty = false;
            let offset = t.safe_offset();
            match file_id::fingerprint_before(t.tailer.file(), offset) {
                Ok(fingerprint) => updates.push(Update::Advance(Entry {
                    dev: t.key.dev,
                    inode: t.key.inode,
                    fingerprint,
                    offset,
                    path: t.path.clone(),
                    head: t.head,
                })),
                Err(e) => {
                    tracing::warn!(path = %t.path.display(), error = %e, "fingerprinting log file")
                }
            }
        }
        // Forgets go last: a file's final records are in this very batch.
        updates.append(&mut self.updates);
        let batch = self.builder.take(updates);
        if batch.records.is_empty() && batch.updates.is_empty() {
            return true;
        }
        self.tx.blocking_send(batch).is_ok()
    }

    /// Per-container bytes not yet confirmed; series vanish with the container's files.
    fn update_lag(&mut self) {
        let committed = match self.committed.lock() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let mut lag: HashMap<(String, String, String), i64> = HashMap::new();
        for t in self.files.values() {
            let size = t.tailer.file().metadata().map_or(0, |m| m.len());
            let done = committed.get(&t.key).copied().unwrap_or(0).min(size);
            *lag.entry((
                t.info.namespace.clone(),
                t.info.pod.clone(),
                t.info.container.clone(),
            ))
            .or_default() += (size - done) as i64;
        }
        let gauge = &metrics().lag_bytes;
        for labels in self.lag_labels.iter().filter(|l| !lag.contains_key(*l)) {
            let _ = gauge.remove_label_values(&[&labels.0, &labels.1, &labels.2]);
        }
        for (labels, v) in &lag {
            gauge
                .with_label_values(&[&labels.0, &labels.1, &labels.2])
                .set(*v);
        }
        self.lag_labels = lag.into_keys().collect();
    }
}

/// Decompresses a gzip file into an anonymous (already unlinked) file under `dir`.
fn decompress_to_unlinked(gz: &std::path::Path, dir: &std::path::Path) -> std::io::Result<File> {
    let tmp_path = dir.join(format!(".logs-gunzip-{}", std::process::id()));
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp_path)?;
    std::fs::remove_file(&tmp_path)?;
    let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(File::open(gz)?));
    std::io::copy(&mut dec, &mut out)?;
    Ok(out)
}
