//! Hands batches to sinks, by route. Each sink may have a `match:`
//! ([`node_agent_core::route`]); a record goes to every sink it matches, and a record no
//! sink matches counts as delivered (`node_agent_logs_records_unrouted_total`).
//!
//! The pipeline ([`crate::run_with_sinks`]) gives each sink its own router, so a sink that
//! is down or slow only holds back its own lane (see [`crate::delivery`]). A router with
//! several sinks (tests, or code that wants them in lockstep) confirms a batch once every
//! sink confirmed the part routed to it; a sink that failed gets its part again after a
//! backoff with jitter (sinks retry transient errors themselves first).

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

/// Some sinks, with their routes.
pub struct Router {
    sinks: Vec<Arc<dyn Sink>>,
    /// Every configured sink, when this router counts the records none of them takes
    /// (exactly one router per source does, so each such record is counted once).
    count_unrouted: Option<Vec<Arc<dyn Sink>>>,
}

impl Router {
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> anyhow::Result<Self> {
        anyhow::ensure!(!sinks.is_empty(), "no sinks to deliver logs to");
        Ok(Self {
            sinks,
            count_unrouted: None,
        })
    }

    /// Makes this router count the records that none of `all` takes.
    pub fn counting_unrouted(mut self, all: Vec<Arc<dyn Sink>>) -> Self {
        self.count_unrouted = Some(all);
        self
    }

    /// Names of the sinks, for logs.
    pub fn names(&self) -> Vec<&str> {
        self.sinks.iter().map(|s| s.name()).collect()
    }

    /// The fewest concurrent deliveries one of the sinks allows.
    pub fn max_in_flight(&self) -> Option<usize> {
        self.sinks.iter().filter_map(|s| s.max_in_flight()).min()
    }

    /// Keeps the records some sink of this router takes; the others count as delivered.
    pub fn select(&self, mut records: Vec<LogRecord>) -> Vec<LogRecord> {
        if let Some(all) = &self.count_unrouted
            && all.iter().all(|s| s.route().is_some())
        {
            let unrouted = records
                .iter()
                .filter(|r| !all.iter().any(|s| takes(s.as_ref(), r)))
                .count();
            metrics().records_unrouted.inc_by(unrouted as u64);
        }
        if self.sinks.iter().any(|s| s.route().is_none()) {
            return records;
        }
        let before = records.len();
        records.retain(|r| self.sinks.iter().any(|s| takes(s.as_ref(), r)));
        let skipped = before - records.len();
        if skipped > 0 {
            for sink in &self.sinks {
                metrics()
                    .records_not_routed
                    .with_label_values(&[sink.name()])
                    .inc_by(skipped as u64);
            }
        }
        records
    }

    /// Delivers `records` to every sink (the part each one takes) until each confirmed
    /// (`true`) or `cancel` fires (`false`: the batch stays unacknowledged and is re-read
    /// by the next run).
    pub async fn deliver(&self, records: &[LogRecord], cancel: &CancellationToken) -> bool {
        let started = Instant::now();
        let mut confirmed = vec![false; self.sinks.len()];
        // Records a sink dead-lettered are acknowledged but were not shipped; with several
        // sinks only counts are known, so the largest one is taken (a lower bound of loss).
        let mut dead_lettered = 0usize;
        let mut backoff = Backoff::new(RETRY_BACKOFF, RETRY_BACKOFF_MAX);
        loop {
            for (sink, done) in self.sinks.iter().zip(confirmed.iter_mut()) {
                if *done {
                    continue;
                }
                // A sink that takes only some of a shared batch gets its own copy of them.
                let part: Option<Vec<LogRecord>> = sink.route().and_then(|m| {
                    (!records.iter().all(|r| m.matches(r)))
                        .then(|| records.iter().filter(|r| m.matches(r)).cloned().collect())
                });
                let part = part.as_deref().unwrap_or(records);
                if part.is_empty() {
                    *done = true;
                    continue;
                }
                match sink.deliver_counted(part, cancel).await {
                    Ok(dead) => {
                        *done = true;
                        dead_lettered = dead_lettered.max(dead);
                        metrics()
                            .records_delivered
                            .with_label_values(&[sink.name()])
                            .inc_by(part.len() as u64);
                    }
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
                metrics()
                    .records_shipped
                    .inc_by(records.len().saturating_sub(dead_lettered) as u64);
                return true;
            }
            if backoff.wait(cancel).await.is_err() {
                return false;
            }
        }
    }
}

fn takes(sink: &dyn Sink, record: &LogRecord) -> bool {
    sink.route().is_none_or(|m| m.matches(record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_agent_core::record::{SourceKind, SourceMeta, Stream};
    use node_agent_core::sink::{CountedFuture, DeliverFuture};

    /// Accepts every batch but says its receiver refused `dead` records for good.
    struct DeadLettering {
        dead: usize,
    }

    impl Sink for DeadLettering {
        fn name(&self) -> &str {
            "router-test-dead-lettering"
        }

        fn deliver<'a>(
            &'a self,
            _records: &'a [LogRecord],
            _cancel: &'a CancellationToken,
        ) -> DeliverFuture<'a> {
            Box::pin(async { Ok(()) })
        }

        fn deliver_counted<'a>(
            &'a self,
            _records: &'a [LogRecord],
            _cancel: &'a CancellationToken,
        ) -> CountedFuture<'a> {
            let dead = self.dead;
            Box::pin(async move { Ok(dead) })
        }
    }

    #[tokio::test]
    async fn dead_lettered_records_are_not_counted_as_shipped() {
        let source = Arc::new(SourceMeta {
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
        let records: Vec<LogRecord> = (0..5)
            .map(|i| LogRecord::new(Arc::clone(&source), 1, Stream::Stdout, i, format!("m{i}")))
            .collect();
        let router = Router::new(vec![Arc::new(DeadLettering { dead: 3 })]).unwrap();
        let shipped = metrics().records_shipped.get();
        let delivered = metrics()
            .records_delivered
            .with_label_values(&["router-test-dead-lettering"]);
        let before = delivered.get();
        assert!(router.deliver(&records, &CancellationToken::new()).await);
        assert_eq!(metrics().records_shipped.get() - shipped, 2);
        // "Delivered" counts what the sink confirmed, dead letters included.
        assert_eq!(delivered.get() - before, 5);
    }
}
