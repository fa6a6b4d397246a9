//! Can this host run the eBPF program? Checked up front so that an unsupported node gets
//! one clear log line instead of a verifier or permission error.

use std::path::{Path, PathBuf};

use node_agent_core::host::HostPaths;

/// Why eBPF syscall monitoring cannot run here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unsupported {
    #[error("kernel has no BTF ({0} missing; needs CONFIG_DEBUG_INFO_BTF)")]
    NoBtf(PathBuf),
    #[error(
        "missing capabilities: need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); effective set is {0:#x}"
    )]
    NoCapabilities(u64),
    #[error("cannot read own capabilities from {path}: {detail}")]
    CapabilitiesUnknown { path: PathBuf, detail: String },
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// BTF and capabilities (bpffs is handled by the loader, which may mount it).
pub fn check(paths: &HostPaths) -> Result<(), Unsupported> {
    let btf = paths.sys_path("kernel/btf/vmlinux");
    if !btf.exists() {
        return Err(Unsupported::NoBtf(btf));
    }
    // Our own capabilities: /proc/self of whichever procfs we see is this process.
    let status = Path::new("/proc/self/status");
    let text = std::fs::read_to_string(status).map_err(|e| Unsupported::CapabilitiesUnknown {
        path: status.into(),
        detail: e.to_string(),
    })?;
    let caps = parse_cap_eff(&text).ok_or_else(|| Unsupported::CapabilitiesUnknown {
        path: status.into(),
        detail: "no valid CapEff line".into(),
    })?;
    if !has_bpf_capabilities(caps) {
        return Err(Unsupported::NoCapabilities(caps));
    }
    Ok(())
}

/// The `CapEff:` bitmask of `/proc/<pid>/status`.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Loading tracing programs and creating maps needs CAP_BPF + CAP_PERFMON (kernel ≥ 5.8),
/// or CAP_SYS_ADMIN which implies both.
pub fn has_bpf_capabilities(caps: u64) -> bool {
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_parsing() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert!(has_bpf_capabilities(0x1ff_ffff_ffff));
        assert!(has_bpf_capabilities(1 << CAP_SYS_ADMIN));
        assert!(has_bpf_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(!has_bpf_capabilities(1 << CAP_BPF));
        assert!(!has_bpf_capabilities(0));
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn missing_btf_is_reported_with_its_path() {
        let paths = HostPaths {
            sys: "/nonexistent-sys".into(),
            ..HostPaths::default()
        };
        assert_eq!(
            check(&paths),
            Err(Unsupported::NoBtf(
                "/nonexistent-sys/kernel/btf/vmlinux".into()
            ))
        );
    }
}
