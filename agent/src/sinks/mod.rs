//! Where log records go. Each sink delivers a batch or says why not; the pipeline advances
//! checkpoints only after every sink said yes.
//!
//! Layout: [`config`] (what the `sinks:` entries look like), [`stdout`] and [`file`] (JSON
//! lines, see [`jsonl`]), [`loki`] and [`elasticsearch`] (HTTP, sharing [`http`] for the
//! client, auth, gzip and response classes, and [`retry`] for backoff), [`deadletter`]
//! (records a receiver refused for good), [`metrics`] (the `node_agent_sink_*` families).

pub mod config;
pub mod deadletter;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod jsonl;
pub mod loki;
pub mod metrics;
pub mod retry;
pub mod stdout;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::identity::NodeIdentity;
use crate::logs::record::LogRecord;

pub use config::SinkConfig;

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
/// Dead letters default to [`config::DEFAULT_STATE_DIR`]; see [`build_all_in`].
pub fn build_all(
    configs: &[SinkConfig],
    identity: &NodeIdentity,
) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    build_all_in(configs, identity, Path::new(config::DEFAULT_STATE_DIR))
}

/// [`build_all`] with dead letters defaulting to `<state_dir>/deadletter/<sink>.ndjson`.
pub fn build_all_in(
    configs: &[SinkConfig],
    identity: &NodeIdentity,
    state_dir: &Path,
) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    let defaults = [SinkConfig::Stdout(config::StdoutConfig::default())];
    let configs = if configs.is_empty() {
        &defaults[..]
    } else {
        configs
    };
    let mut names = std::collections::HashSet::new();
    let mut sinks = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let name = config.name();
        if !names.insert(name.clone()) {
            anyhow::bail!(
                "sinks[{i}]: a second sink is named {name:?}; give each sink a distinct `name`"
            );
        }
        let sink =
            build(config, identity, state_dir).with_context(|| format!("sinks[{i}] ({name})"))?;
        sinks.push(sink);
    }
    Ok(sinks)
}

/// Builds one sink from its config.
pub fn build(
    config: &SinkConfig,
    identity: &NodeIdentity,
    state_dir: &Path,
) -> anyhow::Result<Arc<dyn Sink>> {
    config.validate()?;
    let name = config.name();
    Ok(match config {
        SinkConfig::Stdout(_) => Arc::new(stdout::StdoutSink::new(name)),
        SinkConfig::File(c) => Arc::new(file::FileSink::open(name, &c.path)?),
        SinkConfig::Loki(c) => Arc::new(loki::LokiSink::with_state_dir(
            name, c, identity, state_dir,
        )?),
        SinkConfig::Elasticsearch(c) => Arc::new(elasticsearch::ElasticsearchSink::with_state_dir(
            name, c, state_dir,
        )?),
    })
}
