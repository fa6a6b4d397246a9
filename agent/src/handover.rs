//! Leadership between an old and a new pod during a `maxSurge: 1` rollout.
//! (Placeholder: runs the leader work directly until the lock-file handover lands.)

use std::future::Future;
use std::path::PathBuf;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// `handover:` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoverConfig {
    /// flock()ed file shared by the old and new pod on a hostPath.
    pub lock_file: PathBuf,
}

impl Default for HandoverConfig {
    fn default() -> Self {
        Self {
            lock_file: PathBuf::from("/var/run/node-agent/leader.lock"),
        }
    }
}

/// Runs `work` (the leader's job) until `shutdown` fires and the work has drained.
pub async fn run<F, Fut>(
    _config: &Config,
    shutdown: CancellationToken,
    work: F,
) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    work(shutdown).await
}
