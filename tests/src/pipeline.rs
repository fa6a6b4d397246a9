//! Driving the log pipeline in-process: start it with given sinks, stop it (drain and
//! final checkpoint), wait for a condition, and a sink that keeps what it is given.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node_agent::core::record::LogRecord;
use node_agent::logs::{LogsConfig, RunSummary, run_with_sinks};
use node_agent::sinks::{DeliverFuture, Sink, SinkError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The node name every in-process pipeline runs as.
pub const NODE: &str = "node-1";

/// A pipeline running on its own task.
pub struct Running {
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<RunSummary>>,
}

impl Running {
    /// Starts the pipeline of `config` delivering to `sinks`.
    pub fn start(config: LogsConfig, sinks: Vec<Arc<dyn Sink>>) -> Self {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run_with_sinks(config, NODE.into(), sinks, shutdown.clone()));
        Self { shutdown, handle }
    }

    /// Whether the pipeline ended on its own (an error, or nothing left to run).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Asks the pipeline to stop and waits for its drain; panics if it fails or takes
    /// longer than 15 s (a hang must fail the test, not stall CI).
    pub async fn stop(self) -> RunSummary {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.handle)
            .await
            .expect("pipeline stops in time")
            .expect("pipeline task")
            .expect("pipeline result")
    }
}

/// Polls `cond` every 10 ms; panics naming `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A sink that keeps every record it accepts, and refuses all while `failing` is set.
#[derive(Default)]
pub struct CollectingSink {
    pub records: Mutex<Vec<LogRecord>>,
    pub failing: AtomicBool,
}

impl CollectingSink {
    pub fn messages(&self) -> Vec<String> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.message.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl Sink for CollectingSink {
    fn name(&self) -> &str {
        "test"
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        _cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(SinkError::Failed("receiver down".into()));
            }
            self.records.lock().unwrap().extend_from_slice(records);
            Ok(())
        })
    }
}
