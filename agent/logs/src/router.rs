//! Hands batches to the sinks. Today every record goes to every sink and a batch is
//! confirmed once all of them confirmed it; a sink that failed gets the batch again after
//! a backoff with jitter (sinks retry transient errors themselves first).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use node_agent_core::backoff::Backoff;
use node_agent_core::record::LogRecord;
use node_agent_core::sink::{Sink, SinkError};

use crate::metrics::metrics;

/// First pause before re-delivering a batch a sink failed; the ceiling doubles up to the cap.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The configured sinks.
pub struct Router {
    sinks: Vec<Arc<dyn Sink>>,
}

impl Router {
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> anyhow::Result<Self> {
        anyhow::ensure!(!sinks.is_empty(), "no sinks to deliver logs to");
        Ok(Self { sinks })
    }

    /// Delivers `records` to every sink until each confirmed (`true`) or `cancel` fires
    /// (`false`: the batch stays unacknowledged and is re-read by the next run).
    pub async fn deliver(&self, records: &[LogRecord], cancel: &CancellationToken) -> bool {
        let started = Instant::now();
        let mut confirmed = vec![false; self.sinks.len()];
        let mut backoff = Backoff::new(RETRY_BACKOFF, RETRY_BACKOFF_MAX);
        loop {
            for (sink, done) in self.sinks.iter().zip(confirmed.iter_mut()) {
                if *done {
                    continue;
                }
                match sink.deliver(records, cancel).await {
                    Ok(()) => *done = true,
                    Err(SinkError::Cancelled) => return false,
                    Err(SinkError::Failed(reason)) => {
                        metrics()
                            .delivery_failures
                            .with_label_values(&[sink.name()])
                            .inc();
                        tracing::warn!(sink = sink.name(), %reason, "log batch delivery failed; retrying");
                    }
                }
            }
            if confirmed.iter().all(|d| *d) {
                metrics()
                    .delivery_seconds
                    .observe(started.elapsed().as_secs_f64());
                metrics().records_shipped.inc_by(records.len() as u64);
                return true;
            }
            if backoff.wait(cancel).await.is_err() {
                return false;
            }
        }
    }
}
