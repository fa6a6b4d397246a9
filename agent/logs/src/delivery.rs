//! The delivery side of one source for one lane: takes its sealed batches, keeps the
//! records the lane's router takes, hands them to it (a bounded number at once), applies
//! acknowledgements strictly in batch order and persists the lane's checkpoint after each.
//!
//! Per-sink progress. With several sinks, [`crate::run_with_sinks`] runs one lane per
//! sink: its own reader of the source (from its own checkpoint), its own bounded queue
//! and in-flight limit, its own confirmed positions
//! (`<state_dir>/<checkpoint>.<sink>.json`). A sink that is down, slow or answering 429
//! stalls only its lane's reader, so the files are the buffer for that sink alone: the
//! other sinks keep their throughput, memory stays bounded per lane
//! ((in-flight + 2) × `batch_max_bytes`), and after a restart each sink resumes from what
//! it confirmed, so duplicates are bounded by what that sink had not confirmed. The price
//! is that each lane reads and parses the files itself (N sinks: N reads, mostly from the
//! page cache). A record a sink's `match:` does not take counts as confirmed for that
//! lane. With one sink there is one lane and the checkpoint keeps its plain name; a lane
//! without its own file yet starts from the plain one (an upgrade from one shared
//! checkpoint loses and duplicates nothing).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::ack::AckTracker;
use crate::batch::Batch;
use crate::checkpoint::CheckpointStore;
use crate::metrics::metrics;
use crate::position::Position;
use crate::router::Router;
use crate::source::{BatchLimits, Committed, CommittedView, Exit, Source, SourceContext};
use crate::stages::Chain;

/// After the drain deadline, how long cancelled deliveries get to return.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// What a finished run did, for tests and the final log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub batches_delivered: u64,
    pub records_delivered: u64,
    /// Batches given up at the drain deadline; the next run re-reads them.
    pub batches_abandoned: u64,
    /// The most bytes incomplete messages held at once ([`crate::budget`]); set by
    /// [`crate::run_with_sinks`], 0 for one source's run.
    pub pending_peak_bytes: usize,
}

/// How the delivery side of one source behaves (from `logs:`).
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub state_dir: std::path::PathBuf,
    pub max_in_flight_batches: usize,
    pub drain_timeout: Duration,
    pub checkpoint_interval: Duration,
    /// The least time from one checkpoint write's start to the next (see `logs:`).
    pub checkpoint_min_interval: Duration,
    pub batches: BatchLimits,
    /// The lane's own checkpoint: `<file stem>.<lane>.json` (`None`: the source's file).
    pub lane: Option<String>,
}

/// `logs-checkpoint.json` → `logs-checkpoint.<lane>.json`, with the lane name reduced to
/// file-name-safe characters.
pub fn lane_checkpoint_file(file: &str, lane: &str) -> String {
    let safe: String = lane
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match file.strip_suffix(".json") {
        Some(stem) => format!("{stem}.{safe}.json"),
        None => format!("{file}.{safe}"),
    }
}

/// Runs `source` on its own thread, delivers its batches through `router`, acknowledges
/// them in order and checkpoints, until `shutdown`; then drains (bounded by
/// `drain_timeout`) and writes the final checkpoint.
pub async fn run_source<S: Source>(
    source: S,
    stages: Chain,
    settings: DeliverySettings,
    router: Arc<Router>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let name = source.name();
    let file = match &settings.lane {
        Some(lane) => lane_checkpoint_file(source.checkpoint_file(), lane),
        None => source.checkpoint_file().to_string(),
    };
    let store = CheckpointStore::<S::Position>::new(&settings.state_dir, &file);
    let load = |store: &CheckpointStore<S::Position>| {
        store.load_full().with_context(|| {
            format!(
                "loading the {name} checkpoint from {}",
                settings.state_dir.display()
            )
        })
    };
    // A lane without its own checkpoint yet starts from the source's shared one.
    let shared = CheckpointStore::<S::Position>::new(&settings.state_dir, source.checkpoint_file());
    let from = if settings.lane.is_some() && !store.path().exists() && shared.path().exists() {
        &shared
    } else {
        &store
    };
    let crate::checkpoint::Loaded {
        entries: loaded,
        covered_until,
        finished,
    } = load(from)?;
    // Which rotated files hold bytes not confirmed: those written after the checkpoint's
    // coverage time. Not the file's mtime, unless an older agent wrote it: a lane behind
    // its sink keeps confirming old batches, so its checkpoint is newer than files it had
    // not reached (found by the chaos soak: whole rotated files lost after a restart).
    let checkpoint_time = covered_until.or_else(|| {
        std::fs::metadata(from.path())
            .and_then(|m| m.modified())
            .ok()
    });
    let max_in_flight = settings
        .max_in_flight_batches
        .min(router.max_in_flight().unwrap_or(usize::MAX))
        .max(1);
    let committed_view: CommittedView<<S::Position as Position>::Key> = Arc::new(Committed::new(
        loaded.iter().map(|(k, e)| (*k, e.progress())).collect(),
    ));
    let mut tracker = AckTracker::new(loaded.clone())
        .with_covered_until(covered_until)
        .with_finished(finished.clone());

    // Capacity 1: with the in-flight bound this caps memory at
    // (max_in_flight_batches + 2) × batch_max_bytes (one queued, one being built).
    let (tx, mut rx) = mpsc::channel::<Batch<S::Position>>(1);
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let ctx = SourceContext {
        positions: loaded,
        finished,
        checkpoint_time,
        out: tx,
        wake_tx: wake_tx.clone(),
        wake_rx,
        committed: Arc::clone(&committed_view),
        stages,
        batches: settings.batches,
    };

    let reader_stop = CancellationToken::new();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reader_token = reader_stop.clone();
    let source = Box::new(source);
    std::thread::Builder::new()
        .name(format!("logs-{name}"))
        .spawn(move || {
            let exit = source.run(ctx, &reader_token);
            let _ = done_tx.send(exit);
        })
        .with_context(|| format!("spawning the {name} source thread"))?;

    let deliver_cancel = CancellationToken::new();
    let mut inflight: JoinSet<(u64, usize, bool)> = JoinSet::new();
    let mut summary = RunSummary::default();
    let mut rx_open = true;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // Confirmed positions are saved after acknowledgements, one save at a time and at most
    // one per `checkpoint_min_interval`: acks that arrive meanwhile are coalesced into the
    // next save. A crash then re-ships at most the unconfirmed batches plus what was acked
    // in the last interval and save. (A save per ack was 7-14 % of a backlog's CPU.)
    let mut saving: Option<tokio::task::JoinHandle<bool>> = None;
    let mut saves = SaveSpacing::new(settings.checkpoint_min_interval);
    let mut checkpoint_tick = tokio::time::interval(settings.checkpoint_interval);
    checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        if !rx_open && inflight.is_empty() {
            break;
        }
        let deadline = drain_deadline;
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                tracing::info!(source = name, timeout = ?settings.drain_timeout, "log pipeline draining");
                drain_deadline = Some(tokio::time::Instant::now() + settings.drain_timeout);
                reader_stop.cancel();
                let _ = wake_tx.try_send(());
            }
            _ = sleep_until_opt(deadline) => {
                tracing::warn!(
                    source = name,
                    in_flight = inflight.len(),
                    "drain timeout reached; unconfirmed batches will be re-read by the next run"
                );
                deliver_cancel.cancel();
                // Unblock a reader waiting for queue space, and stop accepting batches.
                rx.close();
                while rx.recv().await.is_some() {
                    summary.batches_abandoned += 1;
                }
                let grace = tokio::time::sleep(CANCEL_GRACE);
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        joined = inflight.join_next() => match joined {
                            Some(Ok((seq, n, true))) => {
                                tracker.ack(seq);
                                summary.batches_delivered += 1;
                                summary.records_delivered += n as u64;
                            }
                            Some(_) => summary.batches_abandoned += 1,
                            None => break,
                        },
                        _ = &mut grace => {
                            summary.batches_abandoned += inflight.len() as u64;
                            inflight.abort_all();
                            break;
                        }
                    }
                }
                break;
            }
            joined = inflight.join_next(), if !inflight.is_empty() => {
                match joined {
                    Some(Ok((seq, n, true))) => {
                        tracker.ack(seq);
                        summary.batches_delivered += 1;
                        summary.records_delivered += n as u64;
                        publish(&tracker, &committed_view);
                        // The source updates its lag gauges from it.
                        let _ = wake_tx.try_send(());
                        saves.want();
                    }
                    Some(Ok((_, _, false))) => summary.batches_abandoned += 1,
                    Some(Err(e)) => {
                        tracing::error!(source = name, error = %e, "log delivery task failed; its batch will be re-read after restart");
                        summary.batches_abandoned += 1;
                    }
                    None => {}
                }
                metrics().batches_in_flight.set(inflight.len() as i64);
            }
            // Checkpoint writes come before new batches: under a reader that always has
            // one ready, a later branch would never be polled and positions would go
            // unsaved until the stream paused.
            saved = async { saving.as_mut().expect("guarded by is_some").await }, if saving.is_some() => {
                saving = None;
                finish_save(saved, &mut tracker);
                if tracker.is_dirty() {
                    saves.want();
                }
            }
            _ = sleep_until_opt(saves.due()), if saving.is_none() => {
                saving = saves.start(&store, &mut tracker);
            }
            _ = checkpoint_tick.tick(), if saving.is_none() => saving = saves.start(&store, &mut tracker),
            batch = rx.recv(), if rx_open && inflight.len() < max_in_flight => {
                match batch {
                    Some(batch) => {
                        let seq = tracker.register(batch.updates, batch.covered_until);
                        let records = router.select(batch.records);
                        if records.is_empty() {
                            tracker.ack(seq);
                        } else {
                            let router = Arc::clone(&router);
                            let cancel = deliver_cancel.clone();
                            inflight.spawn(async move {
                                let ok = router.deliver(&records, &cancel).await;
                                if ok {
                                    crate::sources::count_delivered(&records);
                                }
                                (seq, records.len(), ok)
                            });
                            metrics().batches_in_flight.set(inflight.len() as i64);
                        }
                    }
                    None => rx_open = false,
                }
            }
        }
    }
    if let Some(pending) = saving.take() {
        finish_save(pending.await, &mut tracker);
    }
    metrics().batches_in_flight.set(0);
    reader_stop.cancel();
    let _ = wake_tx.try_send(());
    drop(rx);
    match done_rx.await {
        Ok(Exit::Shutdown) | Ok(Exit::ReceiverGone) => {}
        Err(_) => tracing::error!(source = name, "log source thread panicked"),
    }
    save(&store, &mut tracker).await;
    let unconfirmed = tracker.unapplied();
    tracing::info!(
        source = name,
        batches = summary.batches_delivered,
        records = summary.records_delivered,
        abandoned = summary.batches_abandoned,
        unconfirmed,
        "log pipeline stopped"
    );
    Ok(summary)
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// When the next checkpoint write may start: no sooner than `min_interval` after the
/// previous one started, and only once something asked for it.
struct SaveSpacing {
    min_interval: Duration,
    last_start: Option<tokio::time::Instant>,
    due: Option<tokio::time::Instant>,
}

impl SaveSpacing {
    fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_start: None,
            due: None,
        }
    }

    /// Positions changed: save as soon as the spacing allows.
    fn want(&mut self) {
        if self.due.is_none() {
            let now = tokio::time::Instant::now();
            let earliest = self.last_start.map_or(now, |t| t + self.min_interval);
            self.due = Some(earliest.max(now));
        }
    }

    fn due(&self) -> Option<tokio::time::Instant> {
        self.due
    }

    fn start<P: Position>(
        &mut self,
        store: &CheckpointStore<P>,
        tracker: &mut AckTracker<P>,
    ) -> Option<tokio::task::JoinHandle<bool>> {
        self.due = None;
        let write = start_save(store, tracker);
        if write.is_some() {
            self.last_start = Some(tokio::time::Instant::now());
        }
        write
    }
}

fn publish<P: Position>(tracker: &AckTracker<P>, view: &CommittedView<P::Key>) {
    view.publish(
        tracker
            .committed()
            .iter()
            .map(|(k, e)| (*k, e.progress()))
            .collect(),
    );
}

/// Starts writing the confirmed positions in the background if they changed; the
/// tracker counts as saved from the snapshot on (re-marked dirty if the write fails).
/// The fsyncs run on the blocking pool so a slow disk does not stall acknowledgements on
/// the runtime's workers.
fn start_save<P: Position>(
    store: &CheckpointStore<P>,
    tracker: &mut AckTracker<P>,
) -> Option<tokio::task::JoinHandle<bool>> {
    if !tracker.is_dirty() {
        return None;
    }
    let entries: Vec<_> = tracker.committed().values().cloned().collect();
    let covered_until = tracker.covered_until();
    let finished = tracker.finished();
    tracker.mark_saved();
    let writer = store.clone();
    Some(tokio::task::spawn_blocking(move || {
        match writer.save_full(entries.iter(), covered_until, &finished) {
            Ok(()) => {
                metrics().checkpoint_writes.inc();
                true
            }
            Err(e) => {
                metrics().checkpoint_errors.inc();
                tracing::error!(error = %e, "writing log checkpoint");
                false
            }
        }
    }))
}

/// Writes the confirmed positions now and waits for the write (shutdown path).
async fn save<P: Position>(store: &CheckpointStore<P>, tracker: &mut AckTracker<P>) {
    if let Some(write) = start_save(store, tracker) {
        finish_save(write.await, tracker);
    }
}

/// A write that failed (or whose task died) leaves the positions unsaved for the next one.
fn finish_save<P: Position>(
    result: Result<bool, tokio::task::JoinError>,
    tracker: &mut AckTracker<P>,
) {
    match result {
        Ok(true) => {}
        Ok(false) => tracker.mark_dirty(),
        Err(e) => {
            metrics().checkpoint_errors.inc();
            tracing::error!(error = %e, "checkpoint writer task failed");
            tracker.mark_dirty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    use node_agent_core::record::{LogRecord, SourceKind, SourceMeta, Stream};
    use node_agent_core::sink::{DeliverFuture, Sink};

    use crate::position::Update;
    use crate::sources::live::Delivered;

    /// A reader that always has the next batch ready: one record per batch, sent as fast
    /// as the delivery side takes them, until `stop`.
    struct Endless;

    impl Source for Endless {
        type Position = Delivered;

        fn name(&self) -> &'static str {
            "endless"
        }

        fn checkpoint_file(&self) -> &str {
            "endless.json"
        }

        fn run(self: Box<Self>, ctx: SourceContext<Delivered>, stop: &CancellationToken) -> Exit {
            let meta = Arc::new(SourceMeta {
                kind: SourceKind::Pod,
                namespace: "ns".into(),
                pod: "p".into(),
                pod_uid: "u".into(),
                container: "c".into(),
                node: String::new(),
                path: "/p".into(),
                file_id: 1,
                kubernetes: None,
            });
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let record = LogRecord::new(Arc::clone(&meta), 1, Stream::Stdout, 0, "x".into());
                let batch = Batch {
                    records: vec![record],
                    bytes: 1,
                    updates: vec![Update::Advance(Delivered(n))],
                    covered_until: None,
                };
                if ctx.out.blocking_send(batch).is_err() {
                    return Exit::ReceiverGone;
                }
            }
            Exit::Shutdown
        }
    }

    /// Confirms every batch at once and, on each, reads what the checkpoint holds; stops
    /// the run once a save shows up (or after `give_up` batches).
    struct Watching {
        store: CheckpointStore<Delivered>,
        delivered: AtomicU64,
        saved_at: AtomicU64,
        give_up: u64,
        stop: CancellationToken,
    }

    impl Sink for Watching {
        fn name(&self) -> &str {
            "watching"
        }

        fn deliver<'a>(
            &'a self,
            _records: &'a [LogRecord],
            _cancel: &'a CancellationToken,
        ) -> DeliverFuture<'a> {
            let n = self.delivered.fetch_add(1, Ordering::SeqCst) + 1;
            let saved = self
                .store
                .load()
                .ok()
                .and_then(|m| m.get(&()).map(|d| d.0))
                .unwrap_or(0);
            if saved > 0 && self.saved_at.load(Ordering::SeqCst) == 0 {
                self.saved_at.store(n, Ordering::SeqCst);
                self.stop.cancel();
            }
            if n >= self.give_up {
                self.stop.cancel();
            }
            Box::pin(async { Ok(()) })
        }
    }

    /// Under a reader that never runs dry and a sink that confirms at once (so in-flight
    /// never reaches its bound), acknowledged positions must still reach the checkpoint
    /// while the stream runs, not only when it pauses: a crash would otherwise re-ship
    /// everything since the stream began. (The reader thread cannot be made to win every
    /// race for the queue, so this does not force the case the branch order guards
    /// against, where the queue is ready at every poll; with the order reversed it passed
    /// too.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn positions_are_saved_while_a_never_idle_stream_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shutdown = CancellationToken::new();
        let give_up = 200_000;
        let sink = Arc::new(Watching {
            store: CheckpointStore::new(dir.path(), "endless.json"),
            delivered: AtomicU64::new(0),
            saved_at: AtomicU64::new(0),
            give_up,
            stop: shutdown.clone(),
        });
        let router = Arc::new(Router::new(vec![sink.clone() as Arc<dyn Sink>]).expect("router"));
        let settings = DeliverySettings {
            state_dir: dir.path().to_path_buf(),
            max_in_flight_batches: 1_000,
            drain_timeout: Duration::from_secs(5),
            // Neither the periodic tick nor spacing may be what saves here.
            checkpoint_interval: Duration::from_secs(3600),
            checkpoint_min_interval: Duration::ZERO,
            batches: BatchLimits {
                max_records: 1,
                max_bytes: 1 << 20,
                timeout: Duration::from_secs(1),
            },
            lane: None,
        };
        let summary = run_source(Endless, Chain::new(Vec::new()), settings, router, shutdown)
            .await
            .expect("run");
        let saved_at = sink.saved_at.load(Ordering::SeqCst);
        assert!(
            saved_at > 0,
            "no checkpoint written during {} batches of a never-idle reader",
            summary.batches_delivered
        );
        assert!(saved_at < give_up);
    }

    #[tokio::test]
    async fn saves_are_spaced_and_only_when_wanted() {
        let min = Duration::from_secs(60);
        let mut saves = SaveSpacing::new(min);
        assert_eq!(saves.due(), None, "nothing changed yet");
        let before = tokio::time::Instant::now();
        saves.want();
        let first = saves.due().expect("wanted");
        assert!(
            first >= before && first <= tokio::time::Instant::now(),
            "the first save is due at once"
        );
        // A save starts (as `start` records it), then more acks arrive.
        saves.due = None;
        let started = tokio::time::Instant::now();
        saves.last_start = Some(started);
        saves.want();
        saves.want();
        assert_eq!(
            saves.due(),
            Some(started + min),
            "the next one waits for the interval"
        );

        let mut every_ack = SaveSpacing::new(Duration::ZERO);
        every_ack.last_start = Some(started);
        every_ack.want();
        assert!(
            every_ack.due().expect("wanted") >= started,
            "0s: due at once"
        );
    }
}
