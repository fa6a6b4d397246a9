//! The systemd journal, read directly from its files (`node_agent_journal`, no
//! libsystemd): `/var/log/journal` and `/run/log/journal` by default, as one journal in
//! journalctl's order, with unit/identifier/kernel filters ([`config`]) and the fields
//! users query mapped into `fields` ([`map`]).
//!
//! - **Position**: one systemd cursor (the last entry taken, filtered ones included),
//!   checkpointed in `<state_dir>/journal-checkpoint.json` like a file offset: it moves
//!   only once every sink confirmed the entries before it, so a restart resumes right
//!   after the last confirmed entry (`--after-cursor`), nothing lost or repeated.
//! - **First run** (no checkpoint): `logs.journal.start` (the last hour by default).
//! - **Rotation and vacuuming** are the reader's: a renamed file is followed through its
//!   handle, a deleted one read to its end; a cursor whose entries were vacuumed while we
//!   were away resumes at the oldest entry after it, counted as `entries_may_be_lost`.
//! - **Corrupt or truncated files** are read as far as they are sound and counted by kind
//!   (`node_agent_logs_journal_issues_total`); they never stop the source.
//! - **Wake-ups**: journald signals its writes through inotify (it ftruncates to trigger
//!   `IN_MODIFY` after writing through its mapping), so the directories are watched; the
//!   poll is the fallback.
//! - Records: kind `journal`; `offset` is the entry's seqnum and `file_id` a hash of its
//!   seqnum id, so (file_id, offset) names an entry uniquely (the ES `_id`).

pub mod config;
pub mod map;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use xxhash_rust::xxh3::xxh3_64;

use node_agent_core::record::{SourceKind, SourceMeta};
use node_agent_core::telemetry;
use node_agent_journal::{Cursor, CursorSeek, Id128, IssueKind, Journal, Stats};

use crate::batch::BatchBuilder;
use crate::position::{Position, Update};
use crate::source::{Exit, Source, SourceContext};
use crate::sources::tail::watch;
pub use config::{JournalSourceConfig, StartAt};

/// The journal source's checkpoint file.
pub const CHECKPOINT_FILE: &str = "journal-checkpoint.json";
/// Entries read in one go before the loop looks at deadlines and shutdown again.
const PASS_ENTRIES: usize = 4096;
/// With a working watch, the poll runs this many times less often (lost events only).
const WATCHED_POLL_FACTOR: u32 = 10;
/// Bound on remembered positions of records stages may hold (see `JournalSource::safe`).
const MAX_TRACKED: usize = 100_000;
/// Bound on remembered seqnum ids (each gets its own record metadata).
const MAX_SEQNUM_IDS: usize = 1024;

/// The checkpointed position: the cursor of the last entry whose record (and all before
/// it) every sink confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalPosition {
    pub cursor: String,
    /// Wall-clock time of that entry (µs since the epoch), for lag.
    pub realtime_usec: u64,
}

impl Position for JournalPosition {
    /// The journal is one stream: its merged order.
    type Key = ();

    fn key(&self) {}

    fn progress(&self) -> u64 {
        self.realtime_usec
    }
}

struct JournalMetrics {
    entries: IntCounter,
    filtered: IntCounter,
    bytes: IntCounter,
    issues: IntCounterVec,
    files_open: IntGauge,
    lag_seconds: IntGauge,
}

fn metrics() -> &'static JournalMetrics {
    static METRICS: OnceLock<JournalMetrics> = OnceLock::new();
    METRICS.get_or_init(|| JournalMetrics {
        entries: counter(
            "node_agent_logs_journal_entries_total",
            "Journal entries read and passed to the pipeline.",
        ),
        filtered: counter(
            "node_agent_logs_journal_filtered_total",
            "Journal entries left out by logs.journal's unit/identifier/kernel filters.",
        ),
        bytes: counter(
            "node_agent_logs_journal_bytes_total",
            "NAME=value payload bytes of the journal entries read.",
        ),
        issues: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_journal_issues_total",
                    "Problems reading journal files, by kind (corrupt, truncated, \
                     entries_may_be_lost, ...); the rest of the journal is still read.",
                ),
                &["kind"],
            )
            .expect("static metric definition"),
        ),
        files_open: gauge(
            "node_agent_logs_journal_files_open",
            "Journal files held open.",
        ),
        lag_seconds: gauge(
            "node_agent_logs_journal_lag_seconds",
            "Wall-clock age of the newest journal entry read minus that of the newest confirmed.",
        ),
    })
}

fn counter(name: &str, help: &str) -> IntCounter {
    telemetry::register(IntCounter::new(name, help).expect("static metric definition"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    telemetry::register(IntGauge::new(name, help).expect("static metric definition"))
}

/// The journal source; run it through [`crate::delivery::run_source`].
pub struct JournalSource {
    config: JournalSourceConfig,
    node: String,
    max_line_bytes: usize,
}

impl JournalSource {
    pub fn new(config: JournalSourceConfig, node: String, max_line_bytes: usize) -> Self {
        Self {
            config,
            node,
            max_line_bytes,
        }
    }
}

impl Source for JournalSource {
    type Position = JournalPosition;

    fn name(&self) -> &'static str {
        "journal"
    }

    fn checkpoint_file(&self) -> &str {
        CHECKPOINT_FILE
    }

    fn run(self: Box<Self>, ctx: SourceContext<JournalPosition>, stop: &CancellationToken) -> Exit {
        Reader::new(*self, ctx).run(stop)
    }
}

/// A record a stage may still hold: where to resume if it is.
struct Tracked {
    file_id: u64,
    seqnum: u64,
    /// The position before its entry.
    before: Option<Cursor>,
}

struct Reader {
    config: JournalSourceConfig,
    node: String,
    max_line_bytes: usize,
    journal: Journal,
    builder: BatchBuilder,
    ctx: SourceContext<JournalPosition>,
    /// The position the last sealed batch carried (or the checkpoint's).
    sent: Option<Cursor>,
    /// Entries emitted since the last seal, while stages are configured.
    tracked: VecDeque<Tracked>,
    metas: HashMap<Id128, Arc<SourceMeta>>,
    changes: Arc<watch::Changes>,
    watchers: HashMap<PathBuf, watch::Watcher>,
    stats: Stats,
    newest_read_usec: u64,
}

impl Reader {
    fn new(source: JournalSource, ctx: SourceContext<JournalPosition>) -> Reader {
        let opts = source.config.reader().options();
        let builder = ctx.batches.builder();
        Reader {
            journal: Journal::open(opts),
            config: source.config,
            node: source.node,
            max_line_bytes: source.max_line_bytes,
            builder,
            ctx,
            sent: None,
            tracked: VecDeque::new(),
            metas: HashMap::new(),
            changes: Arc::new(watch::Changes::default()),
            watchers: HashMap::new(),
            stats: Stats::default(),
            newest_read_usec: 0,
        }
    }

    fn run(mut self, stop: &CancellationToken) -> Exit {
        self.position();
        self.ensure_watches();
        let mut last_refresh = Instant::now();
        loop {
            if stop.is_cancelled() {
                break;
            }
            let poll = self.poll_interval();
            let changes = self.changes.take();
            if changes.structural || last_refresh.elapsed() >= poll {
                // New files (rotation), renamed and deleted ones (vacuuming).
                self.journal.refresh();
                self.ensure_watches();
                last_refresh = Instant::now();
            }
            let mut read = 0;
            while read < PASS_ENTRIES && !stop.is_cancelled() {
                let before = self.journal.position().cloned();
                let Some(entry) = self.journal.next_entry() else {
                    break;
                };
                read += 1;
                self.emit(&entry, before);
                if self.builder.is_full() && !self.seal_and_send() {
                    return Exit::ReceiverGone;
                }
            }
            self.account();
            let now = Instant::now();
            self.ctx
                .stages
                .flush_due(now, &mut |r| self.builder.push(r));
            if self.builder.is_due(now) && !self.seal_and_send() {
                return Exit::ReceiverGone;
            }
            if read > 0 {
                continue;
            }
            // Idle: a position moved by filtered entries only (or a seek to the tail) is
            // checkpointed too, so a restart does not re-filter or miss them.
            if self.builder.is_empty()
                && self.journal.position() != self.sent.as_ref()
                && !self.seal_and_send()
            {
                return Exit::ReceiverGone;
            }
            let now = Instant::now();
            let mut wait = (last_refresh + poll).saturating_duration_since(now);
            for d in [self.builder.deadline(), self.ctx.stages.next_deadline()]
                .into_iter()
                .flatten()
            {
                wait = wait.min(d.saturating_duration_since(now));
            }
            if !wait.is_zero() {
                let _ = self.ctx.wake_rx.recv_timeout(wait);
            }
        }
        if (!self.builder.is_empty() || self.journal.position() != self.sent.as_ref())
            && !self.seal_and_send()
        {
            return Exit::ReceiverGone;
        }
        Exit::Shutdown
    }

    fn poll_interval(&self) -> Duration {
        let dirs = self.config.directories.len();
        if dirs > 0 && self.watchers.len() == dirs {
            self.config.poll_interval * WATCHED_POLL_FACTOR
        } else {
            self.config.poll_interval
        }
    }

    /// Resumes after the checkpointed cursor, or applies `start` on a first run.
    fn position(&mut self) {
        let saved = self.ctx.positions.remove(&());
        if let Some(p) = saved {
            match p.cursor.parse::<Cursor>() {
                Ok(cursor) => {
                    match self.journal.seek_after_cursor(&cursor) {
                        CursorSeek::Found => {
                            tracing::info!(cursor = %cursor, "journal: resuming after the checkpointed cursor")
                        }
                        CursorSeek::EntriesMayBeLost { detail } => tracing::warn!(
                            cursor = %cursor,
                            detail,
                            "journal: the checkpointed entries were vacuumed; resuming at the oldest entry after them"
                        ),
                    }
                    self.sent = Some(cursor);
                    return;
                }
                Err(e) => tracing::warn!(
                    cursor = p.cursor,
                    error = %e,
                    "journal: checkpointed cursor is unreadable; starting as on a first run"
                ),
            }
        }
        match self.config.start {
            StartAt::Head => self.journal.seek_head(),
            StartAt::Tail => self.journal.seek_tail(),
            start => {
                if let Some(t) = start.realtime_usec(SystemTime::now()) {
                    self.journal.seek_realtime(t);
                }
            }
        }
        tracing::info!(start = ?self.config.start, "journal: no checkpoint; first run");
    }

    /// Watches each journal directory that exists (it may appear later).
    fn ensure_watches(&mut self) {
        for dir in &self.config.directories {
            if self.watchers.contains_key(dir) || !dir.is_dir() {
                continue;
            }
            match watch::watch(dir, Arc::clone(&self.changes), self.ctx.wake_tx.clone()) {
                Ok(w) => {
                    self.watchers.insert(dir.clone(), w);
                }
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "journal: cannot watch; polling")
                }
            }
        }
    }

    fn meta(&mut self, seqnum_id: Id128) -> Arc<SourceMeta> {
        if let Some(m) = self.metas.get(&seqnum_id) {
            return Arc::clone(m);
        }
        if self.metas.len() >= MAX_SEQNUM_IDS {
            self.metas.clear();
        }
        let m = Arc::new(SourceMeta {
            kind: SourceKind::Journal,
            namespace: String::new(),
            pod: String::new(),
            pod_uid: String::new(),
            container: String::new(),
            node: self.node.clone(),
            path: PathBuf::new(),
            file_id: xxh3_64(seqnum_id.to_string().as_bytes()),
            kubernetes: None,
        });
        self.metas.insert(seqnum_id, Arc::clone(&m));
        m
    }

    fn emit(&mut self, entry: &node_agent_journal::Entry, before: Option<Cursor>) {
        let meta = self.meta(entry.seqnum_id());
        self.newest_read_usec = self.newest_read_usec.max(entry.realtime_usec());
        if !self.ctx.stages.is_empty() {
            if self.tracked.len() >= MAX_TRACKED {
                self.tracked.pop_front();
            }
            self.tracked.push_back(Tracked {
                file_id: meta.file_id,
                seqnum: entry.seqnum(),
                before,
            });
        }
        let record = map::record(entry, meta, self.config.all_fields, self.max_line_bytes);
        crate::sources::source_metrics()
            .read(SourceKind::Journal)
            .inc();
        let builder = &mut self.builder;
        self.ctx.stages.process(record, &mut |r| builder.push(r));
    }

    /// Where a restart may resume: after the last entry taken, unless a stage still holds
    /// a record, then before the earliest held one.
    fn safe(&mut self) -> Option<Cursor> {
        let stages = &self.ctx.stages;
        let held = self.tracked.iter().position(|t| {
            stages
                .held_from(t.file_id)
                .is_some_and(|from| t.seqnum >= from)
        });
        match held {
            Some(i) => {
                self.tracked.drain(..i);
                self.tracked.front().and_then(|t| t.before.clone())
            }
            None => {
                self.tracked.clear();
                self.journal.position().cloned()
            }
        }
    }

    /// Seals the batch with the position it completes and sends it (blocking while the
    /// delivery side is saturated); `false` when the delivery side is gone.
    fn seal_and_send(&mut self) -> bool {
        let position = self.safe();
        let mut updates = Vec::new();
        if position.is_some() && position != self.sent {
            if let Some(c) = &position {
                updates.push(Update::Advance(JournalPosition {
                    cursor: c.to_string(),
                    realtime_usec: c.realtime.unwrap_or(0),
                }));
            }
            self.sent = position;
        }
        let batch = self.builder.take(updates);
        if batch.records.is_empty() && batch.updates.is_empty() {
            return true;
        }
        self.ctx.out.blocking_send(batch).is_ok()
    }

    /// Moves the reader's counters into the metrics and logs its issues.
    fn account(&mut self) {
        let now = self.journal.stats();
        let m = metrics();
        m.entries
            .inc_by(now.entries.saturating_sub(self.stats.entries));
        m.filtered
            .inc_by(now.filtered.saturating_sub(self.stats.filtered));
        m.bytes
            .inc_by(now.payload_bytes.saturating_sub(self.stats.payload_bytes));
        for kind in IssueKind::ALL {
            let delta = now
                .issue_count(kind)
                .saturating_sub(self.stats.issue_count(kind));
            if delta > 0 {
                m.issues.with_label_values(&[kind.as_str()]).inc_by(delta);
            }
        }
        m.files_open
            .set(i64::try_from(now.files_open).unwrap_or(i64::MAX));
        self.stats = now;
        for issue in self.journal.take_issues() {
            tracing::warn!(issue = %issue, "journal: skipped what could not be read");
        }
        if self.ctx.committed.take_changed() || self.newest_read_usec > 0 {
            let done = self.ctx.committed.snapshot().get(&()).copied().unwrap_or(0);
            let lag = self
                .newest_read_usec
                .saturating_sub(done.min(self.newest_read_usec));
            m.lag_seconds
                .set(i64::try_from(lag / 1_000_000).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_through_the_checkpoint_store() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::checkpoint::CheckpointStore::<JournalPosition>::new(dir.path(), CHECKPOINT_FILE);
        let p = JournalPosition {
            cursor: "s=0123456789abcdef0123456789abcdef;i=2a;b=0123456789abcdef0123456789abcdef;m=10;t=5e2c4a0000000;x=ff".into(),
            realtime_usec: 7,
        };
        store.save([&p]).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.get(&()), Some(&p));
        assert_eq!(p.progress(), 7);
        assert!(p.cursor.parse::<Cursor>().is_ok());
    }
}
