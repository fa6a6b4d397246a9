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
