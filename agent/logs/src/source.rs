//! The seam between where records come from and the rest of the pipeline.
//!
//! A [`Source`] runs on its own OS thread (its I/O is blocking: files, journals), reads from
//! the positions its checkpoint holds, runs each record through the stage chain and seals
//! batches that carry the position updates they complete. Sending blocks while the
//! delivery side is saturated, so the source's own storage (the log files) is the buffer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchBuilder};
use crate::position::Position;
use crate::stages::Chain;

/// Confirmed progress per stream ([`Position::progress`]), published by the delivery side
/// after every acknowledgement, for the source's lag gauges.
#[derive(Debug)]
pub struct Committed<K> {
    progress: Mutex<HashMap<K, u64>>,
    changed: AtomicBool,
}

pub type CommittedView<K> = Arc<Committed<K>>;

impl<K: Clone> Committed<K> {
    pub fn new(progress: HashMap<K, u64>) -> Self {
        Self {
            progress: Mutex::new(progress),
            changed: AtomicBool::new(false),
        }
    }

    /// Replaces the confirmed progress (delivery side).
    pub fn publish(&self, progress: HashMap<K, u64>) {
        *lock(&self.progress) = progress;
        self.changed.store(true, Ordering::Release);
    }

    /// Whether it changed since the last call (source side).
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }

    pub fn snapshot(&self) -> HashMap<K, u64> {
        lock(&self.progress).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// How batches are cut (`logs.batch_*`).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BatchLimits {
    pub fn builder(&self) -> BatchBuilder {
        BatchBuilder::new(self.max_records, self.max_bytes, self.timeout)
    }
}

/// What the pipeline hands a source when it starts it.
pub struct SourceContext<P: Position> {
    /// Positions from the source's checkpoint.
    pub positions: HashMap<P::Key, P>,
    /// Content ids of streams the checkpoint says were finished and forgotten.
    pub finished: Vec<u64>,
    /// When that checkpoint was written (`None`: there was none).
    pub checkpoint_time: Option<SystemTime>,
    /// Where sealed batches go.
    pub out: Sender<Batch<P>>,
    /// Pokes the source awake (coalesced); watchers the source creates get a clone, and
    /// shutdown uses it so a waiting source stops at once.
    pub wake_tx: SyncSender<()>,
    pub wake_rx: Receiver<()>,
    pub committed: CommittedView<P::Key>,
    pub stages: Chain,
    pub batches: BatchLimits,
}

/// Why a source stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// `stop` fired; everything read was sealed and sent.
    Shutdown,
    /// The delivery side went away (it stopped accepting batches).
    ReceiverGone,
}

/// A producer of records with resumable positions.
pub trait Source: Send + 'static {
    type Position: Position;

    /// Short name: thread name, logs, metrics.
    fn name(&self) -> &'static str;

    /// Name of its checkpoint file under the state directory.
    fn checkpoint_file(&self) -> &str;

    /// Reads until `stop`, then seals and sends what it read and returns.
    fn run(self: Box<Self>, ctx: SourceContext<Self::Position>, stop: &CancellationToken) -> Exit;
}
