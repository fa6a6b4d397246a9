//! Optional eBPF syscall monitoring (`--collector.syscalls`).
//! (Placeholder until the aya program lands.)

use serde::Deserialize;

use crate::metrics::{BuildContext, Collector, CollectorError};

/// `syscalls:` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyscallsConfig {}

/// Builds the syscalls collector; fails with a clear reason when eBPF is unavailable.
pub fn build_collector(_ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Err(CollectorError::Other(
        "this build has no eBPF support (build with --features ebpf)".into(),
    ))
}

/// The leader's part: attach the eBPF program (if `--collector.syscalls` is on and the
/// kernel supports it) and keep it attached until `shutdown`. Only the handover leader
/// calls this, so two pods never attach twice.
pub async fn run_leader(
    _config: crate::config::Config,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    shutdown.cancelled().await;
    Ok(())
}
