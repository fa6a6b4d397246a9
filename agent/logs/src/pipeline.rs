//! The delivery side: takes sealed batches, delivers each to every sink (a bounded number
//! of batches at once), applies acknowledgements in order and persists checkpoints.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::LogsConfig;
use super::ack::AckTracker;
use super::batch::Batch;
use super::checkpoint::CheckpointStore;
use super::metrics::metrics;
use super::reader::{CommittedView, Exit, Reader};
use node_agent_core::record::LogRecord;
use node_agent_core::sink::{Sink, SinkError};

/// First pause before re-delivering a batch a sink failed; doubles up to the cap.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// After the drain deadline, how long cancelled deliveries get to return.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// What a finished run did, for tests and the final log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub batches_delivered: u64,
    pub records_delivered: u64,
    /// Batches given up at the drain deadline; the next run re-reads them.
    pub batches_abandoned: u64,
}

/// Runs discovery → … → checkpoint with the given sinks until `shutdown`, then drains.
pub async fn run_with_sinks(
    config: LogsConfig,
    node: String,
    sinks: Vec<Arc<dyn Sink>>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    anyhow::ensure!(!sinks.is_empty(), "no sinks to deliver logs to");
    let store = CheckpointStore::new(&config.state_dir);
    let loaded = store
        .load()
        .with_context(|| format!("loading log checkpoint from {}", config.state_dir.display()))?;
    // A checkpoint that survived loading is valid: its age tells which rotated files hold
    // bytes written after it.
    let checkpoint_time = std::fs::metadata(store.path())
        .and_then(|m| m.modified())
        .ok();
    let committed_view: CommittedView = Arc::new(Mutex::new(
        loaded.iter().map(|(k, e)| (*k, e.offset)).collect(),
    ));
    let mut tracker = AckTracker::new(loaded.clone());

    // Capacity 1: with the in-flight bound this caps memory at
    // (max_in_flight_batches + 2) × batch_max_bytes (one queued, one being built).
    let (tx, mut rx) = mpsc::channel::<Batch>(1);
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel::<()>(1);

    let reader_stop = CancellationToken::new();
    let reader = Reader::new(
        config.clone(),
        node,
        (loaded, checkpoint_time),
        tx,
        (wake_tx.clone(), wake_rx),
        Arc::clone(&committed_view),
    );
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let reader_token = reader_stop.clone();
    std::thread::Builder::new()
        .name("logs-reader".into())
        .spawn(move || {
            let exit = reader.run(&reader_token);
            let _ = done_tx.send(exit);
        })
        .context("spawning the log reader thread")?;

    let deliver_cancel = CancellationToken::new();
    let mut inflight: JoinSet<(u64, usize, bool)> = JoinSet::new();
    let mut summary = RunSummary::default();
    let mut rx_open = true;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // Confirmed positions are saved right after each acknowledgement, one save at a time:
    // acks that arrive while a save runs are coalesced into the next one. A crash then
    // re-ships at most the unconfirmed batches plus what was acked during one save.
    let mut saving: Option<tokio::task::JoinHandle<bool>> = None;
    let mut checkpoint_tick = tokio::time::interval(config.checkpoint_interval);
    checkpoint_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let sinks = Arc::new(sinks);

    loop {
        if !rx_open && inflight.is_empty() {
            break;
        }
        let deadline = drain_deadline;
        tokio::select! {
            biased;
            _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                tracing::info!(timeout = ?config.drain_timeout, "log pipeline draining");
                drain_deadline = Some(tokio::time::Instant::now() + config.drain_timeout);
                reader_stop.cancel();
                let _ = wake_tx.try_send(());
            }
            _ = sleep_until_opt(deadline) => {
                tracing::warn!(
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
                        if saving.is_none() {
                            saving = start_save(&store, &mut tracker);
                        }
                    }
                    Some(Ok((_, _, false))) => summary.batches_abandoned += 1,
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "log delivery task failed; its batch will be re-read after restart");
                        summary.batches_abandoned += 1;
                    }
                    None => {}
                }
                metrics().batches_in_flight.set(inflight.len() as i64);
            }
            batch = rx.recv(), if rx_open && inflight.len() < config.max_in_flight_batches => {
                match batch {
                    Some(batch) => {
                        let seq = tracker.register(batch.updates);
                        if batch.records.is_empty() {
                            tracker.ack(seq);
                        } else {
                            let records = Arc::new(batch.records);
                            inflight.spawn(deliver(seq, records, Arc::clone(&sinks), deliver_cancel.clone()));
                            metrics().batches_in_flight.set(inflight.len() as i64);
                        }
                    }
                    None => rx_open = false,
                }
            }
            saved = async { saving.as_mut().expect("guarded by is_some").await }, if saving.is_some() => {
                finish_save(saved, &mut tracker);
                saving = start_save(&store, &mut tracker);
            }
            _ = checkpoint_tick.tick(), if saving.is_none() => saving = start_save(&store, &mut tracker),
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
        Err(_) => tracing::error!("log reader thread panicked"),
    }
    save(&store, &mut tracker).await;
    let unconfirmed = tracker.unapplied();
    tracing::info!(
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

fn publish(tracker: &AckTracker, view: &CommittedView) {
    let mut v = match view.lock() {
        Ok(v) => v,
        Err(p) => p.into_inner(),
    };
    *v = tracker
        .committed()
        .iter()
        .map(|(k, e)| (*k, e.offset))
        .collect::<HashMap<_, _>>();
}

/// Persists confirmed positions if they changed. The fsyncs run on the blocking pool so a
/// slow disk does not stall acknowledgements on the runtime's workers.
/// Starts writing the confirmed positions in the background if they changed; the
/// tracker counts as saved from the snapshot on (re-marked dirty if the write fails).
fn start_save(
    store: &CheckpointStore,
    tracker: &mut AckTracker,
) -> Option<tokio::task::JoinHandle<bool>> {
    if !tracker.is_dirty() {
        return None;
    }
    let entries: Vec<_> = tracker.committed().values().cloned().collect();
    tracker.mark_saved();
    let writer = store.clone();
    Some(tokio::task::spawn_blocking(move || {
        match writer.save(entries.iter()) {
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
async fn save(store: &CheckpointStore, tracker: &mut AckTracker) {
    if let Some(write) = start_save(store, tracker) {
        finish_save(write.await, tracker);
    }
}

/// A write that failed (or whose task died) leaves the positions unsaved for the next one.
fn finish_save(result: Result<bool, tokio::task::JoinError>, tracker: &mut AckTracker) {
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

/// Delivers one batch to every sink; a sink that failed gets it again (after backoff)
/// until it confirms or `cancel` fires. Returns (seq, records, confirmed by all).
async fn deliver(
    seq: u64,
    records: Arc<Vec<LogRecord>>,
    sinks: Arc<Vec<Arc<dyn Sink>>>,
    cancel: CancellationToken,
) -> (u64, usize, bool) {
    let started = Instant::now();
    let mut confirmed = vec![false; sinks.len()];
    let mut backoff = RETRY_BACKOFF;
    loop {
        for (sink, done) in sinks.iter().zip(confirmed.iter_mut()) {
            if *done {
                continue;
            }
            match sink.deliver(&records, &cancel).await {
                Ok(()) => *done = true,
                Err(SinkError::Cancelled) => return (seq, records.len(), false),
                Err(SinkError::Failed(reason)) => {
                    metrics()
                        .delivery_failures
                        .with_label_values(&[sink.name()])
                        .inc();
                    tracing::warn!(sink = sink.name(), %reason, retry_in = ?backoff, "log batch delivery failed");
                }
            }
        }
        if confirmed.iter().all(|d| *d) {
            metrics()
                .delivery_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics().records_shipped.inc_by(records.len() as u64);
            return (seq, records.len(), true);
        }
        tokio::select! {
            _ = cancel.cancelled() => return (seq, records.len(), false),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
    }
}
