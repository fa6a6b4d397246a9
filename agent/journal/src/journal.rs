//! A set of journal directories read as one journal: discovery, the merged order across
//! files, seeking (head, tail, realtime, after a cursor), follow (appends, rotation,
//! vacuuming) and per-kind issue counting.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::cursor::{Cursor, EntryKey, compare_entries, compare_with_location};
use crate::entry::Entry;
use crate::error::{Corruption, Issue, IssueKind};
use crate::file::{FieldProblems, JournalFile, KeyError, Limits, Located};
use crate::filter::Filter;
use crate::format::Id128;

/// Where and how to read.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    /// Journal roots; each may hold `*.journal` files and machine-id subdirectories.
    pub directories: Vec<PathBuf>,
    /// Single files read in addition (as `journalctl --file`).
    pub files: Vec<PathBuf>,
    pub filter: Filter,
    pub limits: Limits,
    /// Most files open at once; more are reported as [`IssueKind::TooManyFiles`].
    pub max_files: usize,
    /// Most issues kept for [`Journal::take_issues`]; more are only counted.
    pub max_queued_issues: usize,
}

pub const DEFAULT_DIRECTORIES: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

impl Default for JournalOptions {
    fn default() -> JournalOptions {
        JournalOptions {
            directories: DEFAULT_DIRECTORIES.iter().map(PathBuf::from).collect(),
            files: Vec::new(),
            filter: Filter::new(),
            limits: Limits::default(),
            max_files: 1024,
            max_queued_issues: 1024,
        }
    }
}

/// Counters since the journal was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries returned by [`Journal::next_entry`].
    pub entries: u64,
    /// Entries the filter dropped.
    pub filtered: u64,
    /// Entries skipped because they could not be decoded.
    pub skipped: u64,
    /// `NAME=value` bytes of returned entries.
    pub payload_bytes: u64,
    /// Issues by kind, indexed like [`IssueKind::ALL`].
    pub issues: [u64; IssueKind::ALL.len()],
    /// Issues counted but not queued (queue full).
    pub issues_dropped: u64,
    pub files_open: usize,
    /// Files opened since the start (including rotated and reopened ones).
    pub files_opened: u64,
    /// Files closed after being read to the end or deleted.
    pub files_closed: u64,
}

impl Stats {
    pub fn issue_count(&self, kind: IssueKind) -> u64 {
        self.issues.get(kind.index()).copied().unwrap_or(0)
    }
}

/// What resuming after a cursor found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CursorSeek {
    /// A file still holds the cursor's position: resumed right after it, nothing lost.
    Found,
    /// The cursor's entries were vacuumed: resumed at the oldest entry after it; entries
    /// in between may have been lost (also reported as [`IssueKind::EntriesMayBeLost`]).
    EntriesMayBeLost { detail: String },
}

/// (device, inode): a file keeps its identity across the rename of a rotation.
type FileKey = (u64, u64);

struct Slot {
    file: JournalFile,
    key: FileKey,
    mtime: i64,
    /// Next entry index to look at.
    next: u64,
    candidate: Option<Located>,
    /// Still skipping entries not past the journal's location (after a seek or when the
    /// file was added). Once past, a file's entries are taken in its own order, so entries
    /// appended late (another file refreshed first) are delivered, not dropped.
    positioned: bool,
    /// Reading stopped at this index (broken chain, unreadable tail); retried only after
    /// the header changes.
    stalled_at: Option<u64>,
    /// Not seen in the last directory scan (deleted/vacuumed): dropped once read to the end.
    unlinked: bool,
    /// ENTRY offset of the last entry located: entries are appended, so the entry array
    /// must point strictly forward; a slot pointing back (hostile file) is skipped, which
    /// also keeps such a file from returning one entry many times.
    last_offset: u64,
    last_refresh: Option<Instant>,
}

/// Journal files read as one journal in journalctl's order.
pub struct Journal {
    opts: JournalOptions,
    slots: Vec<Slot>,
    /// Position of the last entry taken (returned or filtered); `None` = head.
    location: Option<Cursor>,
    issues: VecDeque<Issue>,
    stats: Stats,
    /// Files that failed to open, not retried until their size or mtime changes.
    bad: HashMap<FileKey, (u64, i64)>,
    /// Archived files read to the end and closed; not reopened until a seek.
    done: HashSet<(FileKey, i64)>,
    problems: FieldProblems,
}

/// Files not archived re-read their header at their end at most this often while other files
/// still have entries (the last pass before "nothing more" always re-reads).
const REFRESH_EVERY: Duration = Duration::from_millis(50);

impl Journal {
    /// Opens the directories and files of `opts` and positions at the head. Missing
    /// directories are fine (no journal there yet); unreadable files become issues.
    pub fn open(opts: JournalOptions) -> Journal {
        let mut j = Journal {
            opts,
            slots: Vec::new(),
            location: None,
            issues: VecDeque::new(),
            stats: Stats::default(),
            bad: HashMap::new(),
            done: HashSet::new(),
            problems: FieldProblems::default(),
        };
        j.scan();
        j
    }

    /// Opens in-memory bytes as one journal file (fuzzing, tests).
    pub fn open_bytes(bytes: &[u8], opts: JournalOptions) -> Journal {
        let mut j = Journal::open(JournalOptions {
            directories: Vec::new(),
            files: Vec::new(),
            ..opts
        });
        let src: std::sync::Arc<[u8]> = bytes.into();
        let path = Path::new("<memory>");
        match JournalFile::open(path, Box::new(src), j.opts.limits) {
            Ok(f) => j.add_slot(f, (0, 0), 0),
            Err(e) => j.issue(e.kind(), Some(path), e.to_string()),
        }
        j
    }

    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.files_open = self.slots.len();
        s
    }

    /// Takes the queued issues (oldest first). Counts stay in [`Stats::issues`].
    pub fn take_issues(&mut self) -> Vec<Issue> {
        self.issues.drain(..).collect()
    }

    /// Paths of the files currently open, in discovery order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.slots
            .iter()
            .map(|s| s.file.path().to_path_buf())
            .collect()
    }

    /// The position of the last entry taken (also advanced by filtered entries): saving it
    /// and resuming with [`Journal::seek_after_cursor`] skips no entry and repeats none.
    pub fn position(&self) -> Option<&Cursor> {
        self.location.as_ref()
    }

    fn issue(&mut self, kind: IssueKind, path: Option<&Path>, detail: String) {
        if let Some(c) = self.stats.issues.get_mut(kind.index()) {
            *c += 1;
        }
        if self.issues.len() >= self.opts.max_queued_issues {
            self.stats.issues_dropped += 1;
            return;
        }
        self.issues.push_back(Issue {
            kind,
            path: path.map(Path::to_path_buf),
            detail,
        });
    }

    fn corruption(&mut self, e: &Corruption, path: &Path, what: &str) {
        self.issue(e.kind(), Some(path), format!("{what}: {e}"));
    }

    fn add_slot(&mut self, file: JournalFile, key: FileKey, mtime: i64) {
        if file.is_truncated() {
            self.issue(
                IssueKind::Truncated,
                Some(file.path()),
                "file shorter than its header says; reading what is there".into(),
            );
        }
        self.stats.files_opened += 1;
        self.slots.push(Slot {
            file,
            key,
            mtime,
            next: 0,
            candidate: None,
            positioned: self.location.is_none(),
            stalled_at: None,
            unlinked: false,
            last_offset: 0,
            last_refresh: None,
        });
    }

    /// Lists the directories (and machine-id subdirectories): opens new files, follows
    /// renamed ones (rotation), marks deleted ones to be dropped once read to the end.
    /// Call it periodically in follow mode; appends to open files need no rescan.
    pub fn refresh(&mut self) {
        self.scan();
    }

    fn scan(&mut self) {
        let mut found: Vec<(PathBuf, fs::Metadata)> = Vec::new();
        for dir in self.opts.directories.clone() {
            self.list_dir(&dir, true, &mut found);
        }
        for f in self.opts.files.clone() {
            match fs::metadata(&f) {
                Ok(m) => found.push((f, m)),
                Err(e) => self.issue(IssueKind::Io, Some(&f), e.to_string()),
            }
        }
        let mut seen: HashSet<FileKey> = HashSet::new();
        let mut too_many = 0usize;
        for (path, meta) in found {
            let key = (meta.dev(), meta.ino());
            if !seen.insert(key) {
                continue;
            }
            let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
            if let Some(s) = self.slots.iter_mut().find(|s| s.key == key) {
                s.unlinked = false;
                if s.file.path() != path {
                    s.file.set_path(path);
                }
                continue;
            }
            if self.done.contains(&(key, mtime)) {
                continue;
            }
            if self.bad.get(&key) == Some(&(meta.len(), mtime)) {
                continue;
            }
            if self.slots.len() >= self.opts.max_files {
                too_many += 1;
                continue;
            }
            let opened = fs::File::open(&path)
                .map_err(Corruption::from)
                .and_then(|f| JournalFile::open(&path, Box::new(f), self.opts.limits));
            match opened {
                Ok(f) => {
                    self.bad.remove(&key);
                    self.add_slot(f, key, mtime);
                }
                Err(e) => {
                    self.bad.insert(key, (meta.len(), mtime));
                    self.corruption(&e, &path, "skipped");
                }
            }
        }
        if too_many > 0 {
            self.issue(
                IssueKind::TooManyFiles,
                None,
                format!(
                    "{too_many} journal files not opened (max_files {})",
                    self.opts.max_files
                ),
            );
        }
        for s in &mut self.slots {
            if s.key != (0, 0) && !seen.contains(&s.key) {
                s.unlinked = true;
            }
        }
        self.done.retain(|(k, _)| seen.contains(k));
        self.bad.retain(|k, _| seen.contains(k));
    }

    fn list_dir(&mut self, dir: &Path, top: bool, out: &mut Vec<(PathBuf, fs::Metadata)>) {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return self.issue(IssueKind::Io, Some(dir), e.to_string()),
        };
        let mut names: Vec<(PathBuf, fs::Metadata)> = Vec::new();
        for de in rd.flatten() {
            let path = de.path();
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let name = de.file_name();
            let name = name.to_string_lossy();
            if meta.is_file() && (name.ends_with(".journal") || name.ends_with(".journal~")) {
                names.push((path, meta));
            } else if meta.is_dir() && top && Id128::parse(&name).is_some() && name.len() == 32 {
                self.list_dir(&path, false, out);
            }
        }
        names.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(names);
    }

    /// Reads everything from the oldest entry on.
    pub fn seek_head(&mut self) {
        self.reposition(None);
    }

    /// Positions after the newest entry: only entries written from now on will be read.
    pub fn seek_tail(&mut self) {
        self.reposition(None);
        let mut newest: Option<EntryKey> = None;
        for s in &mut self.slots {
            if let Some(t) = s.file.tail() {
                let newer = newest.is_none_or(|n| compare_entries(&t.key, &n).is_gt());
                if newer {
                    newest = Some(t.key);
                }
            }
            s.next = s.file.n_entries();
            s.positioned = true;
        }
        self.location = Some(match newest {
            Some(k) => k.cursor(),
            None => Cursor::at_realtime(now_usec()),
        });
    }

    /// Positions at the first entry at or after `realtime_usec` (wall clock, µs since epoch).
    pub fn seek_realtime(&mut self, realtime_usec: u64) {
        self.reposition(Some(Cursor::at_realtime(realtime_usec.saturating_sub(1))));
    }

    /// Positions right after `cursor` (as `journalctl --after-cursor`). When the files that
    /// held it were vacuumed, resumes at the oldest entry after it and says so.
    pub fn seek_after_cursor(&mut self, cursor: &Cursor) -> CursorSeek {
        self.reposition(Some(cursor.clone()));
        let outcome = match (cursor.seqnum_id, cursor.seqnum) {
            (Some(id), Some(seqnum)) => {
                let heads: Vec<u64> = self
                    .slots
                    .iter()
                    .filter(|s| s.file.header().seqnum_id == id && s.file.n_entries() > 0)
                    .map(|s| s.file.header().head_entry_seqnum)
                    .collect();
                match heads.iter().min() {
                    None => CursorSeek::EntriesMayBeLost {
                        detail: format!("no journal file of sequence {id} left; resuming by time"),
                    },
                    Some(&head) if head > seqnum.saturating_add(1) => {
                        CursorSeek::EntriesMayBeLost {
                            detail: format!(
                                "entries {}..{} of sequence {id} were vacuumed",
                                seqnum + 1,
                                head - 1
                            ),
                        }
                    }
                    Some(_) => CursorSeek::Found,
                }
            }
            _ => CursorSeek::Found,
        };
        if let CursorSeek::EntriesMayBeLost { detail } = &outcome {
            self.issue(IssueKind::EntriesMayBeLost, None, detail.clone());
        }
        outcome
    }

    fn reposition(&mut self, location: Option<Cursor>) {
        self.done.clear();
        self.scan();
        let positioned = location.is_none();
        for s in &mut self.slots {
            s.next = 0;
            s.candidate = None;
            s.positioned = positioned;
            s.stalled_at = None;
            s.last_offset = 0;
        }
        self.location = location;
    }

    /// The next entry in journalctl's order, or `None` when no file has more right now
    /// (call again later to follow; [`Journal::refresh`] picks up new and rotated files).
    pub fn next_entry(&mut self) -> Option<Entry> {
        loop {
            let best = self.pick(false).or_else(|| self.pick(true));
            let Some(i) = best else {
                self.release_idle();
                return None;
            };
            let slot = self.slots.get_mut(i)?;
            let at = slot.candidate.take()?;
            slot.next += 1;
            self.location = Some(at.key.cursor());
            let result = slot
                .file
                .read_entry(&at, &self.opts.filter, &mut self.problems);
            let path = slot.file.path().to_path_buf();
            for p in std::mem::take(&mut self.problems.list) {
                self.corruption(&p, &path, "field skipped");
            }
            match result {
                Ok(Some(e)) => {
                    self.stats.entries += 1;
                    self.stats.payload_bytes += e.payload_len() as u64;
                    return Some(e);
                }
                Ok(None) => self.stats.filtered += 1,
                Err(e) => {
                    self.stats.skipped += 1;
                    self.corruption(&e, &path, "entry skipped");
                }
            }
        }
    }

    /// Index of the file whose next entry comes first (a linear scan, as sd-journal does:
    /// the order is not transitive across seqnum sources). `refresh_all`: files at their
    /// end re-read their header now.
    fn pick(&mut self, refresh_all: bool) -> Option<usize> {
        let mut best: Option<(usize, EntryKey)> = None;
        for i in 0..self.slots.len() {
            let Some(key) = self.peek(i, refresh_all) else {
                continue;
            };
            if best.is_none_or(|(_, b)| compare_entries(&key, &b).is_lt()) {
                best = Some((i, key));
            }
        }
        best.map(|(i, _)| i)
    }

    /// The key of slot `i`'s next entry past the location, reading ahead as needed.
    fn peek(&mut self, i: usize, refresh_all: bool) -> Option<EntryKey> {
        loop {
            let location = self.location.clone();
            let slot = self.slots.get_mut(i)?;
            if let Some(c) = slot.candidate {
                let order = location.as_ref().map(|l| compare_with_location(&c.key, l));
                match order {
                    // Same position as the entry just taken: a duplicate in another file.
                    Some(o) if o.is_eq() => {}
                    Some(o) if o.is_lt() && !slot.positioned => {}
                    _ => {
                        slot.positioned = true;
                        return Some(c.key);
                    }
                }
                slot.candidate = None;
                slot.next += 1;
                continue;
            }
            if !slot.positioned
                && slot.next == 0
                && let Some(l) = &location
            {
                slot.next = first_candidate(&mut slot.file, l);
            }
            if slot.next >= slot.file.n_entries() || slot.stalled_at == Some(slot.next) {
                // Offline is not final: journald marks its current file offline after every
                // sync and online again at the next write. Only archived files never grow.
                if slot.file.is_archived() {
                    return None;
                }
                let due = slot
                    .last_refresh
                    .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
                if !refresh_all && !due {
                    return None;
                }
                slot.last_refresh = Some(Instant::now());
                match slot.file.refresh() {
                    Ok(true) => {
                        slot.stalled_at = None;
                        if slot.next >= slot.file.n_entries() {
                            return None;
                        }
                    }
                    Ok(false) => return None,
                    Err(e) => {
                        let path = slot.file.path().to_path_buf();
                        slot.stalled_at = Some(slot.next);
                        self.corruption(&e, &path, "header re-read failed");
                        return None;
                    }
                }
            }
            let slot = self.slots.get_mut(i)?;
            match slot.file.locate(slot.next) {
                Ok(l) if l.offset > slot.last_offset => {
                    slot.last_offset = l.offset;
                    slot.candidate = Some(l);
                }
                Ok(l) => {
                    slot.next += 1;
                    self.stats.skipped += 1;
                    let path = slot.file.path().to_path_buf();
                    let e = Corruption::Bad(format!("entry array points back to {:#x}", l.offset));
                    self.corruption(&e, &path, "entry skipped");
                }
                Err(KeyError::Entry(e)) => {
                    slot.next += 1;
                    self.stats.skipped += 1;
                    let path = slot.file.path().to_path_buf();
                    self.corruption(&e, &path, "entry skipped");
                }
                Err(KeyError::Chain(e)) => {
                    // Read up to the corruption; an online file may heal (the writer was
                    // mid-append), so it is retried when its header changes.
                    slot.stalled_at = Some(slot.next);
                    let path = slot.file.path().to_path_buf();
                    let at = slot.next;
                    self.corruption(&e, &path, &format!("reading stopped at entry {at}"));
                    return None;
                }
            }
        }
    }

    /// Closes archived files read to the end and deleted files read to the end; frees the
    /// buffers of files with nothing more to read now.
    fn release_idle(&mut self) {
        let mut i = 0;
        while i < self.slots.len() {
            let s = &mut self.slots[i];
            let at_end = s.candidate.is_none()
                && (s.next >= s.file.n_entries() || s.stalled_at == Some(s.next));
            if at_end && (s.unlinked || s.file.is_archived()) {
                if !s.unlinked {
                    // The version read to the end (archiving rewrote the state byte).
                    let mtime = s.file.mtime_ns().unwrap_or(s.mtime);
                    self.done.insert((s.key, mtime));
                }
                self.slots.remove(i);
                self.stats.files_closed += 1;
                continue;
            }
            if at_end {
                s.file.release_buffers();
            }
            i += 1;
        }
    }
}

/// Where a file's entries past `l` start: bisect by seqnum within the cursor's sequence,
/// else by wall clock; the caller skips forward from there entry by entry.
fn first_candidate(f: &mut JournalFile, l: &Cursor) -> u64 {
    let seqnum_id = f.header().seqnum_id;
    match (l.seqnum_id, l.seqnum, l.realtime) {
        (Some(id), Some(seqnum), _) if id == seqnum_id => f.partition(0, |k| k.seqnum > seqnum),
        (_, _, Some(t)) => f.partition(0, |k| k.realtime >= t),
        _ => 0,
    }
}

fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
