//! The contract between the log pipeline and its destinations. A sink delivers a batch or
//! says why not; the pipeline advances positions only after the sinks a record was routed
//! to said yes.

use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

use crate::record::LogRecord;

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Shutdown came before the sink confirmed; the batch stays unacknowledged.
    #[error("delivery cancelled by shutdown")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

impl From<crate::backoff::Cancelled> for SinkError {
    fn from(_: crate::backoff::Cancelled) -> Self {
        SinkError::Cancelled
    }
}

pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// [`Sink::deliver_counted`]'s future: how many records were dead-lettered.
pub type CountedFuture<'a> = Pin<Box<dyn Future<Output = Result<usize, SinkError>> + Send + 'a>>;

/// A destination for log records.
pub trait Sink: Send + Sync {
    fn name(&self) -> &str;

    /// Delivers `records`, retrying transient failures (with backoff) until the receiver
    /// confirms, the records are dead-lettered, or `cancel` fires. `Ok` means the
    /// records may be acknowledged.
    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a>;

    /// [`Self::deliver`], also saying how many of `records` the receiver refused for good
    /// and the sink dead-lettered: they may be acknowledged, but were not shipped
    /// (`node_agent_logs_records_shipped_total` leaves them out). Sinks that dead-letter
    /// override it.
    fn deliver_counted<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> CountedFuture<'a> {
        Box::pin(async move { self.deliver(records, cancel).await.map(|()| 0) })
    }

    /// Which records the sink takes (`match:`); `None`: all of them.
    fn route(&self) -> Option<&crate::route::Matcher> {
        None
    }

    /// The most deliveries the pipeline may run on this sink at once (`None`: its own
    /// limit). A sink whose receiver needs each stream in order (Loki without unordered
    /// writes) says 1, so a retried batch can never land after a later one.
    fn max_in_flight(&self) -> Option<usize> {
        None
    }
}

/// A sink with the `match:` its config gave it.
pub struct Routed {
    pub inner: std::sync::Arc<dyn Sink>,
    pub matcher: crate::route::Matcher,
}

impl Sink for Routed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        self.inner.deliver(records, cancel)
    }

    fn deliver_counted<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> CountedFuture<'a> {
        self.inner.deliver_counted(records, cancel)
    }

    fn route(&self) -> Option<&crate::route::Matcher> {
        Some(&self.matcher)
    }

    fn max_in_flight(&self) -> Option<usize> {
        self.inner.max_in_flight()
    }
}
