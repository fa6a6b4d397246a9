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

/// Builds every configured sink; no `sinks:` entry means the embedded default (stdout).
pub fn build_all(
    configs: &[SinkConfig],
    identity: &crate::identity::NodeIdentity,
) -> anyhow::Result<Vec<std::sync::Arc<dyn Sink>>> {
    let _ = identity;
    let defaults = [SinkConfig::Stdout {}];
    let configs = if configs.is_empty() {
        &defaults[..]
    } else {
        configs
    };
    configs
        .iter()
        .map(|config| -> anyhow::Result<std::sync::Arc<dyn Sink>> {
            match config {
                SinkConfig::Stdout {} => Ok(std::sync::Arc::new(stdout::StdoutSink)),
                SinkConfig::File { path } => {
                    anyhow::bail!("file sink {} not implemented yet", path.display())
                }
            }
        })
        .collect()
}

pub mod stdout {
    //! JSON lines on standard output. (Minimal until the sinks land.)
    use std::io::Write as _;

    use super::{DeliverFuture, Sink, SinkError};
    use crate::logs::record::LogRecord;
    use tokio_util::sync::CancellationToken;

    pub struct StdoutSink;

    impl Sink for StdoutSink {
        fn name(&self) -> &str {
            "stdout"
        }

        fn deliver<'a>(
            &'a self,
            records: &'a [LogRecord],
            _cancel: &'a CancellationToken,
        ) -> DeliverFuture<'a> {
            Box::pin(async move {
                let mut out = std::io::stdout().lock();
                for r in records {
                    let line = serde_json::json!({
                        "timestamp_nanos": r.timestamp_nanos,
                        "namespace": r.source.namespace,
                        "pod": r.source.pod,
                        "container": r.source.container,
                        "stream": r.stream.as_str(),
                        "message": r.message,
                    });
                    writeln!(out, "{line}")
                        .map_err(|e| SinkError::Failed(format!("writing to stdout: {e}")))?;
                }
                out.flush()
                    .map_err(|e| SinkError::Failed(format!("flushing stdout: {e}")))
            })
        }
    }
}
