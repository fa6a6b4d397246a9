//! JSON lines on standard output: the default sink, handy with `kubectl logs`.

use std::io::Write as _;

use tokio_util::sync::CancellationToken;

use super::metrics::SinkMetrics;
use super::{DeliverFuture, Sink, SinkError, jsonl};
use node_agent_core::record::LogRecord;

pub struct StdoutSink {
    name: String,
    metrics: SinkMetrics,
}

impl StdoutSink {
    pub fn new(name: String) -> Self {
        let metrics = SinkMetrics::new(&name);
        Self { name, metrics }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        _cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        Box::pin(async move {
            let mut buf = Vec::with_capacity(records.iter().map(|r| r.message.len() + 256).sum());
            jsonl::encode(records, &mut buf);
            // One write per batch keeps lines from interleaving with other stdout users.
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .map_err(|e| SinkError::Failed(format!("writing to stdout: {e}")))?;
            self.metrics.sent(records.len(), buf.len());
            Ok(())
        })
    }
}
