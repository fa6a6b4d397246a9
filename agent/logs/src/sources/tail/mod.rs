//! Tailing files by identity: the machinery every file-based source shares (pod logs
//! today, host files next). A [`Layout`] says which files exist and how their lines decode;
//! [`TailSource`] does the rest, on its own thread:
//!
//! 1. **discover**: the layout lists candidate files (current and rotated). A recursive
//!    inotify watch ([`watch`]) reports writes and structural changes; the periodic rescan
//!    (`logs.watched_rescan_interval`, or `logs.rescan_interval` while no watch works) is
//!    the fallback for lost events.
//! 2. **start**: each newly seen file is keyed by (dev, inode) and resumed from its
//!    checkpoint if the fingerprint of the bytes before the saved offset still matches
//!    ([`file_id`]); see [`TailSource::consider`] for rotated files without a position.
//! 3. **read**: only files the kernel said were written (plus files with unread data and
//!    rotated files being finished) are read, a chunk per pass ([`tailer`]); every file is
//!    read on the periodic full pass.
//! 4. **decode** lines into messages ([`decode`]), build records, run them through the
//!    stage chain, and **batch** them with the position updates they complete. A file's
//!    safe position is the start of anything not yet emitted: a partial line, a message
//!    waiting for its final part, a record a stage holds.
//! 5. **finish**: a file renamed away or deleted is read to its end through the fd we hold
//!    and dropped after [`ROTATE_WAIT`]; a truncated file (copytruncate) restarts at 0.
//!
//! Policies worth knowing:
//! - No checkpoint (first start on a node, or a corrupt one moved aside): every current
//!   file is shipped from its beginning (unlike Promtail/Vector's "start at the end"), so
//!   nothing still on disk is lost; rotated files from before our start are not.
//! - Rotated files are finished from the fd we hold across the rename; a rotated name is
//!   read on its own only if a checkpoint points into it, or it was rotated after we
//!   started before we ever opened it. Compressed rotations are read only when a
//!   checkpoint points into the file they were compressed from ([`gzip`]).
//! - copytruncate is detected when the file is found shorter than our offset; bytes
//!   written between the copy and the truncate, or a file regrown past our offset before we
//!   look, can be lost or garbled (inherent to copytruncate; kubelet does not use it).

pub mod decode;
pub mod file_id;
pub mod gzip;
pub mod tailer;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use node_agent_core::record::{LogRecord, SourceMeta};

use crate::batch::BatchBuilder;
use crate::budget::{BudgetShare, PendingBudget};
use crate::metrics::metrics;
use crate::position::Update;
use crate::source::{Exit, SourceContext};
use decode::{Decoder, ParseStats, Parsed};
use file_id::{FileEntry, FileKey};
use tailer::Tailer;

/// How long a file that was renamed away or deleted is still watched for late writes
/// after we reached its end (the runtime reopens its log only after kubelet's rename).
pub const ROTATE_WAIT: Duration = Duration::from_secs(1);
/// Read pass period without a working watch, and while rotated files are being finished.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// Second look after a watch-triggered rescan (see [`TailSource::run`]).
const FOLLOW_UP_SCAN: Duration = Duration::from_millis(200);
/// How often a reached open-files limit is warned about while files wait.
const OPEN_LIMIT_WARNING: Duration = Duration::from_secs(60);
/// How long a checkpoint entry's file may be missing from the scans before its position
/// is given up (a rotation racing with a listing hides a file for one scan).
const GONE_GRACE: Duration = Duration::from_secs(2);
/// Bound on remembered refused paths (cleared when reached).
const MAX_REFUSED: usize = 10_000;
/// Minimum time between two lag gauge updates outside scans.
const LAG_UPDATE: Duration = Duration::from_secs(1);
/// Extra room a raw line gets beyond `max_line_bytes` for the CRI/docker framing.
const LINE_FRAMING: usize = 1024;
/// Bound on remembered first-line hashes (cleared when reached; a miss only risks
/// re-shipping a copytruncate copy).
const MAX_SEEN_HEADS: usize = 100_000;

/// Whether a file is the one being written or one rotated away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Current,
    /// Renamed away, plain text.
    Rotated,
    /// Rotated and compressed; read to finish a checkpointed file, or whole when no lane
    /// read its plain file (see [`TailSource::read_unshipped_compressed`]).
    RotatedCompressed,
}

/// A file a layout found.
#[derive(Debug, Clone)]
pub struct Candidate<I> {
    pub path: PathBuf,
    pub kind: FileKind,
    pub info: I,
}

/// What a file-based source knows that the tailing machinery does not.
pub trait Layout: Send + 'static {
    /// Facts about a file from its path (e.g. namespace, pod, container).
    type Info: Clone + Send + 'static;
    type Decoder: Decoder;

    /// The directory watched (recursively) for changes.
    fn root(&self) -> &Path;
    /// Every file worth tailing now, current and rotated, junk left out.
    fn scan(&self) -> Vec<Candidate<Self::Info>>;
    /// A fresh line decoder for one file.
    fn decoder(&self, info: &Self::Info) -> Self::Decoder;
    /// Metadata shared by every record of a file; `file_id` names the file uniquely.
    fn source_meta(&self, info: &Self::Info, path: &Path, file_id: u64) -> SourceMeta;
    /// Labels of the `node_agent_logs_lag_bytes` series the file counts towards.
    fn lag_labels(&self, info: &Self::Info) -> [String; 3];
    /// Directory levels below [`Self::root`] watched for changes (0: the root only).
    fn watch_depth(&self) -> usize {
        watch::MAX_DEPTH
    }
    /// Completes a record before the stages (e.g. fields parsed from its message).
    fn decorate(&self, _info: &Self::Info, _record: &mut LogRecord) {}
}

/// Settings of the tailing machinery (from `logs:`).
#[derive(Debug, Clone)]
pub struct TailSettings {
    /// Full rescan + read period without a working watch…
    pub rescan_interval: Duration,
    /// …and with one (only the fallback for lost events).
    pub watched_rescan_interval: Duration,
    pub max_line_bytes: usize,
    pub max_open_files: usize,
    pub read_chunk_bytes: usize,
    /// Where decompressed rotations are staged (unlinked at once).
    pub state_dir: PathBuf,
    /// `logs.max_pending_bytes`, shared by every tail source and lane ([`crate::budget`]).
    pub budget: Arc<PendingBudget>,
}

struct Tracked<I, D> {
    tailer: Tailer,
    decoder: D,
    key: FileKey,
    path: PathBuf,
    kind: FileKind,
    info: I,
    /// Built once the first line is complete (the file id hashes it).
    meta: Option<Arc<SourceMeta>>,
    /// Hash of the first line, with `meta`.
    head: Option<u64>,
    /// Records were emitted or the position moved since the last sealed batch.
    dirty: bool,
    /// The last read hit the end of the file.
    at_eof: bool,
    /// The kernel reported a write (or a full pass is due): read it this pass.
    woken: bool,
    /// Read this round: check for truncation/finish once it is at its end.
    check: bool,
    /// When we noticed the path no longer names this file (rotated away or deleted).
    detached_since: Option<Instant>,
    /// `decoder.pending_bytes()` as last counted into `TailSource::decoder_pending`.
    pending: usize,
}

/// A tail source over a [`Layout`]; run it through [`crate::source::Source`].
pub struct TailSource<L: Layout> {
    layout: L,
    settings: TailSettings,
    files: HashMap<FileKey, Tracked<L::Info, L::Decoder>>,
    /// Current path of each tracked, attached file, for the watch's write events.
    by_path: HashMap<PathBuf, FileKey>,
    /// Positions from the checkpoint not yet matched to a file (consumed by the scans).
    loaded: HashMap<FileKey, FileEntry>,
    /// Files read to the end and dropped, with the size we read them to: a rotated name of
    /// theirs must not be re-read, and bytes it gains later were written after
    /// [`ROTATE_WAIT`] and are lost (counted, see [`TailSource::consider`]).
    finished: HashMap<FileKey, u64>,
    /// First-line hashes of files we read: a rotated file starting with one of them is a
    /// copy (copytruncate) of what we already shipped.
    seen_heads: HashSet<u64>,
    updates: Vec<Update<FileEntry>>,
    changes: Arc<watch::Changes>,
    /// Established once the root exists (it may appear after we start).
    watcher: Option<watch::Watcher>,
    watch_warned: bool,
    started: SystemTime,
    scratch: Vec<Parsed>,
    /// One read buffer for all files (`read_chunk_bytes`).
    read_buf: Vec<u8>,
    lag_labels: HashSet<[String; 3]>,
    /// When the open-files limit was last warned about.
    warned_open_limit: Option<Instant>,
    /// Files waiting for a slot under `max_open_files` (counted once each).
    waiting: HashSet<FileKey>,
    /// Paths refused as symlinks or special files (counted once each).
    refused: HashSet<PathBuf>,
    /// Since the last seal, stages dropped or held records (see `positions_pending`).
    stages_consumed: bool,
    /// What this source holds of `logs.max_pending_bytes`.
    share: BudgetShare,
    /// Sum of the files' decoders' pending bytes.
    decoder_pending: usize,
    /// When the last scan that opened (or rightly skipped) every file it listed started:
    /// each file written before then has its position in a sealed batch, so a batch sealed
    /// now carries it as its coverage time ([`crate::checkpoint::Loaded::covered_until`]).
    covered_until: Option<SystemTime>,
    /// The current scan left a file for later (open limit, open error, still copied).
    scan_deferred: bool,
    /// Compressed rotations already looked at (read, resumed or known as shipped).
    gz_handled: HashSet<FileKey>,
    /// First-line hashes of files the checkpoint says were finished and forgotten.
    finished_heads: HashSet<u64>,
    /// Checkpoint entries whose file was not found, since when ([`GONE_GRACE`]).
    gone_since: HashMap<FileKey, Instant>,
    /// Checkpoint entries whose inode now holds another file, by first-line hash: their
    /// file may be found compressed ([`TailSource::read_unshipped_compressed`]).
    displaced: HashMap<u64, FileEntry>,
}

impl<L: Layout> TailSource<L> {
    pub fn new(layout: L, settings: TailSettings) -> Self {
        let chunk = settings.read_chunk_bytes;
        let share = BudgetShare::new(Arc::clone(&settings.budget));
        Self {
            layout,
            settings,
            files: HashMap::new(),
            by_path: HashMap::new(),
            loaded: HashMap::new(),
            finished: HashMap::new(),
            seen_heads: HashSet::new(),
            updates: Vec::new(),
            changes: Arc::new(watch::Changes::default()),
            watcher: None,
            watch_warned: false,
            started: SystemTime::now(),
            scratch: Vec::new(),
            read_buf: vec![0; chunk],
            lag_labels: HashSet::new(),
            warned_open_limit: None,
            waiting: HashSet::new(),
            refused: HashSet::new(),
            stages_consumed: false,
            share,
            decoder_pending: 0,
            covered_until: None,
            scan_deferred: false,
            gz_handled: HashSet::new(),
            finished_heads: HashSet::new(),
            gone_since: HashMap::new(),
            displaced: HashMap::new(),
        }
    }

    /// Reads until `stop`, then hands over what was already read and returns.
    pub fn run(mut self, mut ctx: SourceContext<FileEntry>, stop: &CancellationToken) -> Exit {
        self.loaded = std::mem::take(&mut ctx.positions);
        self.finished_heads = std::mem::take(&mut ctx.finished).into_iter().collect();
        let mut run = Run {
            builder: ctx.batches.builder(),
            ctx,
        };
        self.scan(true, &mut run, stop);
        let mut last_scan = Instant::now();
        let mut last_full = Instant::now();
        let mut last_idle = Instant::now();
        // The second scan settles checkpoint entries the first one did not match.
        let mut follow_up: Option<Instant> = Some(last_scan + FOLLOW_UP_SCAN);
        let mut last_lag = Instant::now();
        let mut lag_due: Option<Instant> = None;
        loop {
            let interval = if self.watcher.is_some() {
                self.settings.watched_rescan_interval
            } else {
                self.settings.rescan_interval
            };
            if stop.is_cancelled() {
                break;
            }
            let now = Instant::now();
            let changes = self.changes.take();
            if changes.structural {
                self.scan(false, &mut run, stop);
                last_scan = now;
                // inotify cannot watch a directory before it exists: files created in a
                // new directory right after it may go unnoticed, so look once more.
                follow_up = Some(now + FOLLOW_UP_SCAN);
            } else if follow_up.is_some_and(|t| now >= t)
                || now.duration_since(last_scan) >= interval
            {
                self.scan(false, &mut run, stop);
                last_scan = now;
                follow_up = None;
            }
            // Without a watch every pass reads every file; with one, only what changed,
            // plus a full pass each interval for events that were lost.
            let full = self.watcher.is_none()
                || changes.written.is_none()
                || now.duration_since(last_full) >= interval;
            if full {
                last_full = now;
            }
            self.wake_files(full, changes.written);
            let read_any = self.read_pass(&mut run);
            // The lag gauges follow reading and delivery, at most once a second.
            if read_any || run.ctx.committed.take_changed() {
                lag_due = lag_due.or(Some(last_lag + LAG_UPDATE));
            }
            if lag_due.is_some_and(|d| Instant::now() >= d) {
                self.update_lag(&run);
                last_lag = Instant::now();
                lag_due = None;
            }
            if run.builder.is_due(Instant::now()) && !self.seal_and_send(&mut run) {
                return Exit::ReceiverGone;
            }
            run.ctx
                .stages
                .flush_due(Instant::now(), &mut |r| run.builder.push(r));
            self.share
                .set(self.decoder_pending + run.ctx.stages.pending_bytes());
            // Files at their end are checked even while others keep us busy, so rotated
            // files get closed and truncations noticed under sustained load too.
            if !read_any || last_idle.elapsed() >= IDLE_POLL {
                self.idle_pass(&mut run);
                last_idle = Instant::now();
            }
            if read_any {
                continue;
            }
            // Positions move on also when stages dropped (or hold) everything read.
            if run.builder.is_empty() && self.positions_pending() && !self.seal_and_send(&mut run) {
                return Exit::ReceiverGone;
            }
            let now = Instant::now();
            let poll =
                self.watcher.is_none() || self.files.values().any(|t| t.detached_since.is_some());
            let mut wait = (last_scan + interval)
                .min(last_full + interval)
                .saturating_duration_since(now);
            if poll {
                wait = wait.min(IDLE_POLL);
            }
            // A due lag update is a deadline too: after the last acknowledgement nothing
            // else may wake us, and the gauge would show the delivered bytes as lag.
            for d in [
                run.builder.deadline(),
                follow_up,
                run.ctx.stages.next_deadline(),
                lag_due,
            ]
            .into_iter()
            .flatten()
            {
                wait = wait.min(d.saturating_duration_since(now));
            }
            // A wake-up that arrived during the pass returns at once (the channel holds
            // one, coalescing bursts): no write goes unnoticed for a whole wait.
            if !wait.is_zero() {
                let _ = run.ctx.wake_rx.recv_timeout(wait);
            }
        }
        if (!run.builder.is_empty() || self.positions_pending()) && !self.seal_and_send(&mut run) {
            return Exit::ReceiverGone;
        }
        Exit::Shutdown
    }

    /// Position updates not yet sealed into a batch: forgotten files, or files whose records
    /// stages dropped or hold (no batch with records would carry their positions).
    fn positions_pending(&self) -> bool {
        !self.updates.is_empty() || (self.stages_consumed && self.files.values().any(|t| t.dirty))
    }

    /// Marks the files this pass reads: all (full pass) or those the kernel said changed.
    fn wake_files(&mut self, full: bool, written: Option<HashSet<PathBuf>>) {
        if full {
            for t in self.files.values_mut() {
                t.woken = true;
            }
            return;
        }
        for path in written.into_iter().flatten() {
            if let Some(t) = self.by_path.get(&path).and_then(|k| self.files.get_mut(k)) {
                t.woken = true;
            }
        }
    }

    /// Opens files that appeared, marks files whose path moved on, expires stale state.
    fn scan(&mut self, first: bool, run: &mut Run, stop: &CancellationToken) {
        if self.watcher.is_none() {
            self.ensure_watch(run);
        }
        // Taken before listing: a file created during the listing may be missed by it.
        let scan_started = SystemTime::now();
        self.scan_deferred = false;
        let candidates = self.layout.scan();
        let mut seen: HashSet<FileKey> = HashSet::new();
        let mut compressed = Vec::new();
        for c in candidates {
            // Not followed: a symlink in a log directory may point at the node's secrets.
            let meta = match std::fs::symlink_metadata(&c.path) {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(path = %c.path.display(), error = %e, "log file vanished");
                    continue;
                }
            };
            if !meta.file_type().is_file() {
                self.refuse(
                    &c.path,
                    if meta.file_type().is_symlink() {
                        "symlink"
                    } else {
                        "not_regular"
                    },
                );
                continue;
            }
            let key = FileKey::of(&meta);
            if c.kind == FileKind::RotatedCompressed {
                // Compressed rotations hold bytes we read from the plain file already,
                // except when a checkpoint points into one or the plain file was never
                // read (see below). Not `seen`: a .gz written after its plain file was
                // deleted may reuse that inode, and the checkpoint entry must still count
                // as gone to be resumed from it.
                compressed.push((c, key, meta));
                continue;
            }
            seen.insert(key);
            if self.files.contains_key(&key) {
                continue;
            }
            self.consider(c, key, &meta, first, run);
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
            for key in gone {
                let unreadable = match self.resume_compressed(key, &compressed, stop) {
                    // Stopped: the position stays for the next run.
                    Resume::Resumed | Resume::Stopped => continue,
                    Resume::Unreadable(reason) => Some(reason),
                    // Its name now holds a directory, FIFO, symlink…: the file itself
                    // is gone (a file deleted outright is not counted: it may have
                    // been read to its end).
                    Resume::NotFound => {
                        let not_regular = self.loaded.get(&key).and_then(|e| {
                            std::fs::symlink_metadata(&e.path)
                                .is_ok_and(|m| !m.file_type().is_file())
                                .then_some("rotated_not_regular")
                        });
                        // A rotation racing with our listing (renamed, compressed, the
                        // plain file removed) can hide both names from one scan: wait a
                        // little before the position is given up.
                        let since = *self.gone_since.entry(key).or_insert_with(Instant::now);
                        if not_regular.is_none() && since.elapsed() < GONE_GRACE {
                            continue;
                        }
                        not_regular
                    }
                };
                self.gone_since.remove(&key);
                if let Some(entry) = self.loaded.remove(&key) {
                    if let Some(reason) = unreadable {
                        // The rest of that file is lost: count it (the NodeAgentLogsLost
                        // alert) and say which.
                        metrics().files_skipped.with_label_values(&[reason]).inc();
                        tracing::warn!(
                            path = %entry.path.display(),
                            offset = entry.offset,
                            reason,
                            "a rotated log file the checkpoint points into cannot be read; the rest of it is not shipped"
                        );
                    }
                    self.updates.push(Update::Forget(key));
                }
            }
        }
        if !first {
            self.read_unshipped_compressed(&compressed, run, stop);
        }
        let listed: HashSet<FileKey> = compressed.iter().map(|(_, key, _)| *key).collect();
        self.gz_handled.retain(|k| listed.contains(k));
        self.finished.retain(|k, _| seen.contains(k));
        if !self.scan_deferred {
            self.covered_until = Some(scan_started);
        }
        for t in self.files.values_mut() {
            if t.detached_since.is_some() {
                continue;
            }
            let same = std::fs::metadata(&t.path).is_ok_and(|m| FileKey::of(&m) == t.key);
            let unlinked = t.tailer.file().metadata().is_ok_and(|m| m.nlink() == 0);
            if !same || unlinked || t.kind != FileKind::Current {
                t.detached_since = Some(Instant::now());
                if self.by_path.get(&t.path) == Some(&t.key) {
                    self.by_path.remove(&t.path);
                }
            }
        }
        metrics().open_files.set(self.files.len() as i64);
        self.update_lag(run);
    }

    /// Whether a rotated file without a position of ours holds bytes written after what
    /// we know: after the checkpoint's coverage time (rotated while no agent ran, or while
    /// a lagging lane had not reached it) or after we started (rotated before we opened it).
    fn written_since_known(&self, first: bool, run: &Run, meta: &std::fs::Metadata) -> bool {
        let just_started = self
            .started
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(self.started);
        let since = match (first, run.ctx.checkpoint_time) {
            (_, Some(t)) => Some(t.min(just_started)),
            (true, None) => None,
            (false, None) => Some(just_started),
        };
        since.is_some_and(|t| meta.modified().is_ok_and(|m| m > t))
    }

    /// Compressed rotations whose plain file no lane position ever covered: compressed
    /// after the coverage time, and their first line is neither a file we read, a file
    /// the checkpoint finished, nor one a checkpoint entry still points into. A lane that
    /// was stalled (its sink down) over two rotations would otherwise never read them,
    /// because kubelet compresses each rotated file at the next rotation. Read whole.
    fn read_unshipped_compressed(
        &mut self,
        compressed: &[(Candidate<L::Info>, FileKey, std::fs::Metadata)],
        run: &Run,
        stop: &CancellationToken,
    ) {
        for (c, key, meta) in compressed {
            if self.gz_handled.contains(key) || self.files.contains_key(key) {
                continue;
            }
            if !self.written_since_known(false, run, meta) {
                self.gz_handled.insert(*key);
                continue;
            }
            let head = match gzip::head_of(self.layout.root(), &c.path) {
                Ok((_, false)) => {
                    // Still being written by the compressor: look again next scan.
                    self.scan_deferred = true;
                    continue;
                }
                Ok((h, true)) => h,
                Err(e) => {
                    self.gz_handled.insert(*key);
                    metrics().read_errors.inc();
                    tracing::warn!(path = %c.path.display(), error = %e, "reading a compressed rotated log file");
                    continue;
                }
            };
            let displaced = self.displaced.remove(&head);
            let known = displaced.is_none()
                && (self.seen_heads.contains(&head)
                    || self.finished_heads.contains(&head)
                    || self.files.values().any(|t| t.head == Some(head))
                    || self.loaded.values().any(|e| e.head == Some(head)));
            if known {
                self.gz_handled.insert(*key);
                continue;
            }
            let file = match self.gunzip(&c.path, stop) {
                Ok(f) => f,
                Err(gzip::GunzipError::Stopped) => return,
                Err(e) => {
                    self.gz_handled.insert(*key);
                    metrics().read_errors.inc();
                    tracing::warn!(path = %c.path.display(), error = %e, "decompressing rotated log file");
                    continue;
                }
            };
            // A displaced position (its inode was reused) resumes where it was.
            let start = displaced
                .filter(|e| {
                    file.metadata().is_ok_and(|m| e.offset <= m.len())
                        && file_id::matches(&file, e.offset, &e.fingerprint)
                })
                .map_or(0, |e| e.offset);
            tracing::info!(path = %c.path.display(), offset = start, "reading a rotated log file that was compressed before it was finished");
            self.gz_handled.insert(*key);
            let position = (*key, start, Some(head), true);
            self.track_decompressed(file, position, c.path.clone(), &c.info);
        }
    }

    /// Decompresses a rotation into an unlinked file under the state dir (size-capped).
    fn gunzip(
        &self,
        gz: &Path,
        stop: &CancellationToken,
    ) -> Result<std::fs::File, gzip::GunzipError> {
        gzip::decompress_to_unlinked(
            self.layout.root(),
            gz,
            &self.settings.state_dir,
            gzip::MAX_DECOMPRESSED_BYTES,
            stop,
        )
    }

    /// Tracks a decompressed rotation (a finished, detached file) under `key` from
    /// `start`; `dirty` when its position is not in the checkpoint yet.
    fn track_decompressed(
        &mut self,
        file: std::fs::File,
        (key, start, head, dirty): (FileKey, u64, Option<u64>, bool),
        path: PathBuf,
        info: &L::Info,
    ) {
        let tailer = Tailer::new(file, start, self.settings.max_line_bytes + LINE_FRAMING);
        self.files.insert(
            key,
            Tracked {
                tailer,
                decoder: self.layout.decoder(info),
                key,
                path,
                kind: FileKind::Rotated,
                info: info.clone(),
                meta: None,
                head,
                dirty,
                at_eof: false,
                woken: true,
                check: false,
                detached_since: Some(Instant::now()),
                pending: 0,
            },
        );
    }

    /// A file we were reading was rotated and then compressed while no agent ran: find the
    /// compressed file in its directory whose content matches the checkpoint's
    /// fingerprint, decompress it, and finish it from the saved offset under the original
    /// identity (same offsets, same file id). Removes the entry from `loaded` if found.
    fn resume_compressed(
        &mut self,
        key: FileKey,
        compressed: &[(Candidate<L::Info>, FileKey, std::fs::Metadata)],
        stop: &CancellationToken,
    ) -> Resume {
        let Some(entry) = self.loaded.get(&key).cloned() else {
            return Resume::NotFound;
        };
        let dir = entry.path.parent();
        let mut unreadable = None;
        for (c, gz_key, _) in compressed.iter().filter(|(c, _, _)| c.path.parent() == dir) {
            if self.gz_handled.contains(gz_key) {
                continue;
            }
            let file = match self.gunzip(&c.path, stop) {
                Ok(f) => f,
                Err(gzip::GunzipError::Stopped) => return Resume::Stopped,
                Err(e) => {
                    metrics().read_errors.inc();
                    tracing::warn!(path = %c.path.display(), error = %e, "decompressing rotated log file");
                    unreadable.get_or_insert(match &e {
                        gzip::GunzipError::Corrupt(_) => "rotated_corrupt",
                        gzip::GunzipError::TooLarge { .. } => "rotated_too_large",
                        gzip::GunzipError::Open(io)
                            if io.kind() == std::io::ErrorKind::InvalidInput =>
                        {
                            "rotated_not_regular"
                        }
                        _ => "rotated_unreadable",
                    });
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
            self.gz_handled.insert(*gz_key);
            let position = (key, entry.offset, entry.head, false);
            self.track_decompressed(file, position, entry.path.clone(), &c.info);
            return Resume::Resumed;
        }
        // The checkpoint's file is gone and a compressed candidate could not be read: the
        // rest of that file is lost (the caller counts it and forgets its position).
        unreadable.map_or(Resume::NotFound, Resume::Unreadable)
    }

    /// Counts and (once per path) logs a candidate that is not read: a symlink or a
    /// special file under the log root.
    fn refuse(&mut self, path: &Path, reason: &'static str) {
        if self.refused.len() < MAX_REFUSED && self.refused.insert(path.to_path_buf()) {
            metrics().files_skipped.with_label_values(&[reason]).inc();
            tracing::warn!(path = %path.display(), reason, "not reading a log path that is not a regular file");
        }
    }

    fn ensure_watch(&mut self, run: &Run) {
        match watch::watch_to_depth(
            self.layout.root(),
            self.layout.watch_depth(),
            Arc::clone(&self.changes),
            run.ctx.wake_tx.clone(),
        ) {
            Ok(w) => {
                self.watcher = Some(w);
                if self.watch_warned {
                    tracing::info!(root = %self.layout.root().display(), "watching the log directory");
                }
            }
            Err(e) if !self.watch_warned => {
                self.watch_warned = true;
                tracing::warn!(
                    root = %self.layout.root().display(),
                    error = %e,
                    interval = ?IDLE_POLL,
                    "cannot watch the log directory (yet); polling instead"
                );
            }
            Err(_) => {}
        }
    }

    /// Decides whether and where to start reading a newly seen file.
    fn consider(
        &mut self,
        c: Candidate<L::Info>,
        key: FileKey,
        meta: &std::fs::Metadata,
        first: bool,
        run: &Run,
    ) {
        let Candidate { path, kind, info } = c;
        let saved = self.loaded.remove(&key);
        if saved.is_none() && kind == FileKind::Rotated {
            // A rotated file without a position of ours is read from its start only if it
            // holds bytes written after what we know: after our last checkpoint (rotated
            // while no agent ran, e.g. between two leaders) or after we started (rotated
            // before we opened it). Older ones predate us or were finished and forgotten.
            let recent = self.written_since_known(first, run, meta);
            if let Some(done) = self.finished.get_mut(&key) {
                if meta.len() > *done {
                    // Written to after we let the file go: nothing will read these bytes.
                    let lost = meta.len() - *done;
                    metrics()
                        .lost_bytes
                        .with_label_values(&["written_after_rotate_wait"])
                        .inc_by(lost);
                    tracing::warn!(
                        path = %path.display(),
                        bytes = lost,
                        wait = ?ROTATE_WAIT,
                        "a rotated log file was written to after the rotate wait; those bytes are not shipped"
                    );
                    *done = meta.len();
                }
                return;
            }
            if !recent {
                return;
            }
        }
        if self.files.len() >= self.settings.max_open_files {
            // Each waiting file counts once; the warning repeats while files wait.
            if self.waiting.len() < MAX_REFUSED && self.waiting.insert(key) {
                metrics()
                    .files_skipped
                    .with_label_values(&["open_limit"])
                    .inc();
            }
            if self
                .warned_open_limit
                .is_none_or(|t| t.elapsed() >= OPEN_LIMIT_WARNING)
            {
                tracing::warn!(
                    limit = self.settings.max_open_files,
                    waiting = self.waiting.len(),
                    path = %path.display(),
                    "logs.max_open_files reached; new log files wait until others are finished"
                );
                self.warned_open_limit = Some(Instant::now());
            }
            if let Some(s) = saved {
                self.loaded.insert(key, s);
            }
            self.scan_deferred = true;
            return;
        }
        let file = match node_agent_core::fsutil::open_regular_beneath(self.layout.root(), &path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                // Raced into a symlink or special file between listing and opening.
                self.refuse(&path, "not_regular");
                if let Some(s) = saved {
                    self.loaded.insert(key, s);
                }
                return;
            }
            Err(e) => {
                metrics().read_errors.inc();
                tracing::warn!(path = %path.display(), error = %e, "cannot open log file");
                if let Some(s) = saved {
                    self.loaded.insert(key, s);
                }
                self.scan_deferred = true;
                return;
            }
        };
        if saved.is_none() && kind == FileKind::Rotated {
            match file_id::head(&file) {
                // Still being written (a copy in progress?): look again at the next scan.
                Ok((_, false)) | Err(_) => {
                    self.scan_deferred = true;
                    return;
                }
                Ok((h, true)) if self.seen_heads.contains(&h) => {
                    // A copy of a file we read (copytruncate), not a file we missed.
                    tracing::debug!(path = %path.display(), "ignoring copy of an already shipped log file");
                    self.finished.insert(key, meta.len());
                    return;
                }
                Ok(_) => {}
            }
        }
        // A file resumed from its position may have nothing left to read, so its first line
        // is never hashed by the read path: take the saved one, so a compressed copy of it
        // is known as shipped (see `read_unshipped_compressed`).
        let mut resumed_head = None;
        let start = match saved {
            Some(s)
                if s.offset <= meta.len() && file_id::matches(&file, s.offset, &s.fingerprint) =>
            {
                resumed_head = s.head;
                s.offset
            }
            Some(s) => {
                tracing::info!(
                    path = %path.display(),
                    saved_offset = s.offset,
                    "checkpointed inode now holds another file (reused inode or truncated); reading from the start"
                );
                // The file it was may live on compressed (its inode freed when the plain
                // file was removed, then reused): keep the position for that.
                if let Some(h) = s.head {
                    self.displaced.insert(h, s);
                }
                0
            }
            None => 0,
        };
        if let Some(h) = resumed_head {
            self.seen_heads.insert(h);
        }
        tracing::debug!(path = %path.display(), offset = start, "tailing log file");
        self.waiting.remove(&key);
        let tailer = Tailer::new(file, start, self.settings.max_line_bytes + LINE_FRAMING);
        if kind == FileKind::Current {
            self.by_path.insert(path.clone(), key);
        }
        self.files.insert(
            key,
            Tracked {
                tailer,
                decoder: self.layout.decoder(&info),
                key,
                path,
                kind,
                info,
                meta: None,
                head: resumed_head,
                dirty: start == 0,
                at_eof: false,
                woken: true,
                check: false,
                detached_since: None,
                pending: 0,
            },
        );
    }

    /// Reads one chunk from every file that has something to read; returns whether any
    /// bytes were read.
    fn read_pass(&mut self, run: &mut Run) -> bool {
        let mut read_any = false;
        let now = Instant::now();
        let stages = &run.ctx.stages;
        let keys: Vec<FileKey> = self
            .files
            .values()
            .filter(|t| t.woken || !t.at_eof || t.detached_since.is_some())
            // A throttle slowing this file's container down: it waits, the others are read.
            .filter(|t| {
                t.meta
                    .as_ref()
                    .and_then(|m| stages.paused_until(m.file_id))
                    .is_none_or(|until| until <= now)
            })
            .map(|t| t.key)
            .collect();
        for key in keys {
            let n = self.read_file(key, run);
            read_any |= n > 0;
            if run.builder.is_full() && !self.seal_and_send(run) {
                return read_any;
            }
        }
        read_any
    }

    fn read_file(&mut self, key: FileKey, run: &mut Run) -> usize {
        let Some(t) = self.files.get_mut(&key) else {
            return 0;
        };
        t.woken = false;
        t.check = true;
        let now_nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let mut stats = ParseStats::default();
        let scratch = &mut self.scratch;
        let decoder = &mut t.decoder;
        let result = t
            .tailer
            .read_chunk(&mut self.read_buf, |offset, line, cut| {
                decoder.push(offset, line, cut, now_nanos, &mut stats, scratch);
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
        self.note_pending(key);
        self.emit(key, stats, run);
        self.enforce_budget(run);
        read
    }

    /// Recounts the decoder pending bytes of `key` into `decoder_pending`.
    fn note_pending(&mut self, key: FileKey) {
        if let Some(t) = self.files.get_mut(&key) {
            let now = t.decoder.pending_bytes();
            self.decoder_pending = (self.decoder_pending + now).saturating_sub(t.pending);
            t.pending = now;
        }
    }

    /// Reports what this source holds and, while every holder together is over
    /// `logs.max_pending_bytes`, ships the oldest incomplete message it holds as it is
    /// (a partial line being joined or a multiline group; see [`crate::budget`]).
    fn enforce_budget(&mut self, run: &mut Run) {
        loop {
            self.share
                .set(self.decoder_pending + run.ctx.stages.pending_bytes());
            if !self.share.over() {
                return;
            }
            let decoder = self
                .files
                .values()
                .filter_map(|t| t.decoder.oldest_pending().map(|since| (since, t.key)))
                .min();
            let stage = run.ctx.stages.oldest_pending();
            match (decoder, stage) {
                (None, None) => return,
                (Some((since, key)), stage) if stage.is_none_or(|s| since <= s) => {
                    let Some(t) = self.files.get_mut(&key) else {
                        return;
                    };
                    if !t.decoder.flush_oldest(&mut self.scratch) {
                        return;
                    }
                    metrics()
                        .force_flushed
                        .with_label_values(&["partial_line"])
                        .inc();
                    self.note_pending(key);
                    // Through the stages like any message (a multiline group may take it).
                    self.emit(key, ParseStats::default(), run);
                }
                _ => {
                    let Run { builder, ctx } = &mut *run;
                    if !ctx.stages.flush_oldest(&mut |r| builder.push(r)) {
                        return;
                    }
                    // Positions of the files it held move on with the next batch.
                    self.stages_consumed = true;
                }
            }
        }
    }

    /// Turns decoded messages of `key` into records, through the stages, into the batch.
    fn emit(&mut self, key: FileKey, stats: ParseStats, run: &mut Run) {
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
                let m = Arc::new(self.layout.source_meta(
                    &t.info,
                    &t.path,
                    file_id::file_id(key, head),
                ));
                t.meta = Some(Arc::clone(&m));
                m
            }
        };
        t.dirty = true;
        let Run { builder, ctx } = run;
        let before = builder.len();
        let mut fed = 0;
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
            self.layout.decorate(&t.info, &mut r);
            ctx.stages.process(r, &mut |r| builder.push(r));
            fed += 1;
        }
        if builder.len() < before + fed {
            self.stages_consumed = true;
        }
    }

    /// Files at their end: check for copytruncate and drop files that are finished.
    fn idle_pass(&mut self, run: &mut Run) {
        let mut finished = Vec::new();
        for t in self.files.values_mut() {
            if !t.at_eof || !(t.check || t.detached_since.is_some()) {
                continue;
            }
            t.check = false;
            match t.tailer.check_truncated() {
                Ok(true) => {
                    tracing::info!(path = %t.path.display(), "log file was truncated (copytruncate); reading from the start");
                    t.decoder.reset();
                    self.decoder_pending = self.decoder_pending.saturating_sub(t.pending);
                    t.pending = 0;
                    if let Some(m) = t.meta.take() {
                        let Run { builder, ctx } = &mut *run;
                        ctx.stages.flush_file(m.file_id, &mut |r| builder.push(r));
                    }
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
            let mut file_id = None;
            let mut size = 0;
            if let Some(t) = self.files.get_mut(&key) {
                size = t.tailer.read_offset();
                // The final part never came: ship what there is rather than lose it.
                t.decoder.flush(&mut stats, &mut self.scratch);
                file_id = t.meta.as_ref().map(|m| m.file_id);
                tracing::debug!(path = %t.path.display(), "finished rotated or deleted log file");
            }
            self.emit(key, stats, run);
            if let Some(id) = file_id {
                let Run { builder, ctx } = &mut *run;
                ctx.stages.flush_file(id, &mut |r| builder.push(r));
            }
            if let Some(t) = self.files.remove(&key) {
                self.decoder_pending = self.decoder_pending.saturating_sub(t.pending);
                if self.by_path.get(&t.path) == Some(&key) {
                    self.by_path.remove(&t.path);
                }
            }
            self.finished.insert(key, size);
            self.updates.push(Update::Forget(key));
        }
        metrics().open_files.set(self.files.len() as i64);
        self.share
            .set(self.decoder_pending + run.ctx.stages.pending_bytes());
    }

    /// Seals the current batch with the positions it completes and sends it (blocking
    /// while the delivery side is saturated). `false` when the delivery side is gone.
    fn seal_and_send(&mut self, run: &mut Run) -> bool {
        let mut updates = Vec::new();
        let mut all_positions = true;
        for t in self.files.values_mut().filter(|t| t.dirty) {
            t.dirty = false;
            let offset = safe_offset(t, &run.ctx.stages);
            match file_id::fingerprint_before(t.tailer.file(), offset) {
                Ok(fingerprint) => updates.push(Update::Advance(FileEntry {
                    dev: t.key.dev,
                    inode: t.key.inode,
                    fingerprint,
                    offset,
                    path: t.path.clone(),
                    head: t.head,
                })),
                Err(e) => {
                    // Tried again at the next seal; until then this batch covers no time.
                    t.dirty = true;
                    all_positions = false;
                    tracing::warn!(path = %t.path.display(), error = %e, "fingerprinting log file")
                }
            }
        }
        self.stages_consumed = false;
        // Forgets go last: a file's final records are in this very batch.
        updates.append(&mut self.updates);
        let mut batch = run.builder.take(updates);
        if batch.records.is_empty() && batch.updates.is_empty() {
            return true;
        }
        batch.covered_until = self.covered_until.filter(|_| all_positions);
        run.ctx.out.blocking_send(batch).is_ok()
    }

    /// Per-series bytes not yet confirmed; series vanish with their files.
    fn update_lag(&mut self, run: &Run) {
        let committed = run.ctx.committed.snapshot();
        let mut lag: HashMap<[String; 3], i64> = HashMap::new();
        for t in self.files.values() {
            // A file read to its end is as long as what we read: no fstat needed.
            let size = if t.at_eof {
                t.tailer.read_offset()
            } else {
                t.tailer.file().metadata().map_or(0, |m| m.len())
            };
            let done = committed.get(&t.key).copied().unwrap_or(0).min(size);
            *lag.entry(self.layout.lag_labels(&t.info)).or_default() +=
                i64::try_from(size - done).unwrap_or(i64::MAX);
        }
        let gauge = &metrics().lag_bytes;
        for labels in self.lag_labels.iter().filter(|l| !lag.contains_key(*l)) {
            let _ = gauge.remove_label_values(&[&labels[0], &labels[1], &labels[2]]);
        }
        for (labels, v) in &lag {
            gauge
                .with_label_values(&[&labels[0], &labels[1], &labels[2]])
                .set(*v);
        }
        self.lag_labels = lag.into_keys().collect();
    }
}

/// What [`TailSource::resume_compressed`] did with a checkpoint entry whose file is gone.
enum Resume {
    /// Finishing it from its compressed rotation.
    Resumed,
    /// No compressed rotation of it.
    NotFound,
    /// Compressed rotations were there, and one could not be read (the reason label of
    /// `node_agent_logs_files_skipped_total`).
    Unreadable(&'static str),
    /// Shutdown interrupted the decompression.
    Stopped,
}

/// The run-time state the loop threads through: the pipeline's context and the batch.
struct Run {
    builder: BatchBuilder,
    ctx: SourceContext<FileEntry>,
}

/// Where a restart may resume in `t`: after the last complete, emitted message that no
/// stage still holds.
fn safe_offset<I, D: Decoder>(t: &Tracked<I, D>, stages: &crate::stages::Chain) -> u64 {
    let consumed = t.tailer.consumed_offset();
    let pending = t.decoder.pending_start();
    let held = t.meta.as_ref().and_then(|m| stages.held_from(m.file_id));
    [Some(consumed), pending, held]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(consumed)
}
