//! Where log records go. Each sink delivers a batch or says why not; the pipeline advances
//! checkpoints only after every sink said yes. (Placeholder until the sinks land.)

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::logs::record::LogRecord;

/// One `sinks:` entry of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON lines on standard output (the embedded default).
    Stdout {},
    /// JSON lines appended to a file.
    File { path: PathBuf },
}

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Shutdown came before the sink confirmed; the batch stays unacknowledged.
    #[error("delivery cancelled by shutdown")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

pub type DeliverFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

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
}
