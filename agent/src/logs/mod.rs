//! Container log pipeline: discover → tail → parse → enrich → batch → sink → acknowledge
//! → checkpoint. (Placeholder until the pipeline lands.)

pub mod record;

use std::path::PathBuf;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// `logs:` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Ship container logs at all.
    pub enabled: bool,
    /// kubelet's pod log root.
    pub pods_dir: PathBuf,
    /// Where checkpoints are persisted (a hostPath in a DaemonSet).
    pub state_dir: PathBuf,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pods_dir: PathBuf::from("/var/log/pods"),
            state_dir: PathBuf::from("/var/lib/node-agent"),
        }
    }
}

/// Runs the pipeline until `shutdown`, then drains in-flight batches.
pub async fn run(_config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
