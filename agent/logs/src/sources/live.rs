//! A live source: records pushed by another subsystem (runtime-security alerts) through a
//! bounded channel, with no position to resume from. The producer never blocks (it counts
//! what does not fit); from here on the records get the pipeline's guarantees: stages,
//! routes, sinks, in-order acknowledgement. The checkpoint only records how many records
//! were confirmed (nothing is re-read after a restart: the records are gone with the
//! process that made them).

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use node_agent_core::record::LogRecord;

use crate::position::{Position, Update};
use crate::source::{Exit, Source, SourceContext};

/// Records confirmed so far in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered(pub u64);

impl Position for Delivered {
    type Key = ();

    fn key(&self) {}

    fn progress(&self) -> u64 {
        self.0
    }
}

/// Records from a channel (see the module doc).
pub struct LiveSource {
    name: &'static str,
    checkpoint: &'static str,
    rx: Receiver<LogRecord>,
}

impl LiveSource {
    pub fn new(name: &'static str, checkpoint: &'static str, rx: Receiver<LogRecord>) -> Self {
        Self {
            name,
            checkpoint,
            rx,
        }
    }
}

/// How long the source waits for a record before it checks for due batches and `stop`.
const POLL: Duration = Duration::from_millis(100);

impl Source for LiveSource {
    type Position = Delivered;

    fn name(&self) -> &'static str {
        self.name
    }

    fn checkpoint_file(&self) -> &'static str {
        self.checkpoint
    }

    fn run(self: Box<Self>, mut ctx: SourceContext<Delivered>, stop: &CancellationToken) -> Exit {
        let mut builder = ctx.batches.builder();
        let mut count = 0u64;
        let mut producer_gone = false;
        loop {
            let stopping = stop.is_cancelled();
            if !stopping && !producer_gone {
                let wait = builder.deadline().map_or(POLL, |d| {
                    d.saturating_duration_since(Instant::now()).min(POLL)
                });
                match self.rx.recv_timeout(wait) {
                    Ok(record) => {
                        count += 1;
                        ctx.stages.process(record, &mut |r| builder.push(r));
                        // Take whatever else is queued without waiting.
                        while !builder.is_full() {
                            let Ok(record) = self.rx.try_recv() else {
                                break;
                            };
                            count += 1;
                            ctx.stages.process(record, &mut |r| builder.push(r));
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => producer_gone = true,
                }
            } else {
                // Drain what the producer queued before it stopped.
                while let Ok(record) = self.rx.try_recv() {
                    count += 1;
                    ctx.stages.process(record, &mut |r| builder.push(r));
                }
            }
            let now = Instant::now();
            ctx.stages.flush_due(now, &mut |r| builder.push(r));
            let finishing = stopping || producer_gone;
            if builder.is_full() || builder.is_due(now) || (finishing && !builder.is_empty()) {
                let batch = builder.take(vec![Update::Advance(Delivered(count))]);
                if ctx.out.blocking_send(batch).is_err() {
                    return Exit::ReceiverGone;
                }
            }
            if finishing && builder.is_empty() {
                if stopping {
                    return Exit::Shutdown;
                }
                // The producer is gone but the pipeline runs on: wait for `stop`.
                let _ = ctx.wake_rx.recv_timeout(POLL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use node_agent_core::record::{SourceKind, SourceMeta, Stream};

    use crate::source::{BatchLimits, Committed};
    use crate::stages::Chain;

    #[test]
    fn forwards_records_in_batches_and_drains_on_stop() {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let (out, mut batches) = tokio::sync::mpsc::channel(4);
        let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel(1);
        let ctx = SourceContext {
            positions: Default::default(),
            finished: Vec::new(),
            checkpoint_time: None,
            out,
            wake_tx,
            wake_rx,
            committed: Arc::new(Committed::new(Default::default())),
            stages: Chain::new(Vec::new()),
            batches: BatchLimits {
                max_records: 2,
                max_bytes: 1 << 20,
                timeout: Duration::from_secs(3600),
            },
        };
        let meta = Arc::new(SourceMeta {
            kind: SourceKind::Security,
            namespace: String::new(),
            pod: String::new(),
            pod_uid: String::new(),
            container: String::new(),
            node: "n".into(),
            path: "security".into(),
            file_id: 1,
            kubernetes: None,
        });
        for i in 0..3 {
            tx.send(LogRecord::new(
                meta.clone(),
                i,
                Stream::Stdout,
                i as u64,
                format!("a{i}"),
            ))
            .unwrap();
        }
        let stop = CancellationToken::new();
        let source = Box::new(LiveSource::new("security", "security.json", rx));
        let stopper = stop.clone();
        let thread = std::thread::spawn(move || source.run(ctx, &stopper));
        // A full batch of two goes at once; the third waits for the (long) timeout…
        let first = batches.blocking_recv().expect("first batch");
        assert_eq!(first.records.len(), 2);
        assert_eq!(first.updates, vec![Update::Advance(Delivered(2))]);
        // …until stop drains it.
        stop.cancel();
        let second = batches.blocking_recv().expect("drained batch");
        assert_eq!(second.records[0].message, "a2");
        assert_eq!(second.updates, vec![Update::Advance(Delivered(3))]);
        assert_eq!(thread.join().unwrap(), Exit::Shutdown);
        drop(tx);
    }
}
