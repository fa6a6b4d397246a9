//! Optional eBPF syscall monitoring (`--collector.syscalls`, cargo feature `ebpf`).
//!
//! Split of work between the two pods of a handover:
//! * the leader ([`run_leader`]) loads the `sys_enter` raw tracepoint program, pins its
//!   counter maps in bpffs and keeps it attached until shutdown; with `security.enabled`
//!   it also attaches the security capture and runs its records through the rule engine
//!   ([`security`]): alerts go to the Falco outputs and the log pipeline;
//! * every pod's collector ([`build_collector`]) reads the *pinned* maps, so leader and
//!   standby serve the same monotonic counters, and a new leader that reuses the pins
//!   continues the counts where the old one left them.

pub mod btf;
pub mod cgroups;
#[cfg(feature = "ebpf")]
mod collector;
#[cfg(feature = "ebpf")]
pub mod gc;
#[cfg(feature = "ebpf")]
pub mod loader;
pub mod names;
pub mod security;
pub mod series;
pub mod support;

/// Key of the counter map (cgroup id and syscall number packed into a u64).
pub use syscalls_common::SysKey;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use cgroups::AttributionSources;
use node_agent_core::config::{KeyPath, Problems, Validate};
use node_agent_core::host::HostPaths;
use node_agent_core::kube::{MetadataValue, NoContainers, SharedContainerLookup};
use node_agent_metrics::{Collector, CollectorError};

/// `syscalls:` section of the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyscallsConfig {
    /// bpffs directory where the counter maps are pinned (shared by old and new leader).
    pub pin_path: PathBuf,
    /// Capacity of the (cgroup, syscall) counter map; increments beyond it are counted in
    /// `node_agent_syscalls_map_overflow_total`. Only applies when the map is created: a
    /// pinned map is reused as is.
    pub map_entries: u32,
    /// cgroup v2 root; default: `<sysfs>/fs/cgroup`, or `<sysfs>/fs/cgroup/unified` on
    /// hybrid hosts.
    pub cgroup_root: Option<PathBuf>,
    /// kubelet's container log links (container id → name); default: `containers` next to
    /// `logs.pods_dir`.
    pub containers_dir: Option<PathBuf>,
    /// Maximum number of `node_agent_syscalls_total` series; more are folded into one
    /// series with all labels "other".
    pub max_series: usize,
    /// Extra labels of `node_agent_syscalls_total` from the Kubernetes metadata of the
    /// series' container: label name → value (`workload`, `workload_kind`,
    /// `label:<pod label>`, `annotation:<key>`, `namespace_label:<key>`,
    /// `metadata:<ECS name>`), as the Loki sink's labels name them. Empty by default:
    /// each label is one more value per container series, under `max_series` all the same.
    pub kube_labels: BTreeMap<String, MetadataValue>,
    /// Minimum time between two walks of the cgroup tree to attribute new cgroups.
    #[serde(with = "node_agent_core::duration::serde_format")]
    pub attribution_refresh: Duration,
    /// How often the leader removes counter-map entries of cgroups that no longer exist.
    #[serde(with = "node_agent_core::duration::serde_format")]
    pub gc_interval: Duration,
}

impl Default for SyscallsConfig {
    fn default() -> Self {
        Self {
            pin_path: PathBuf::from("/sys/fs/bpf/node-agent"),
            map_entries: syscalls_common::DEFAULT_COUNTS_ENTRIES,
            cgroup_root: None,
            containers_dir: None,
            max_series: 5000,
            kube_labels: BTreeMap::new(),
            attribution_refresh: Duration::from_secs(5),
            gc_interval: Duration::from_secs(60),
        }
    }
}

impl Validate for SyscallsConfig {
    /// Checks the values that can be wrong independently of the host.
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.check(
            self.map_entries > 0,
            &at.key("map_entries"),
            "must be at least 1",
        );
        problems.check(
            !self.gc_interval.is_zero(),
            &at.key("gc_interval"),
            "must be positive",
        );
        problems.check(
            !self.attribution_refresh.is_zero(),
            &at.key("attribution_refresh"),
            "must be positive",
        );
        problems.check(
            self.max_series > 0,
            &at.key("max_series"),
            "must be at least 1",
        );
        for name in self.kube_labels.keys() {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("__");
            problems.check(
                valid,
                &at.key("kube_labels").key(name),
                "must be a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
            );
            problems.check(
                !RESERVED_LABELS.contains(&name.as_str()),
                &at.key("kube_labels").key(name),
                format!(
                    "is a label of every series already ({})",
                    RESERVED_LABELS.join(", ")
                ),
            );
        }
        problems.check(
            self.kube_labels.len() <= MAX_KUBE_LABELS,
            &at.key("kube_labels"),
            format!("at most {MAX_KUBE_LABELS} labels"),
        );
        problems.check(
            self.pin_path.is_absolute(),
            &at.key("pin_path"),
            format!("must be absolute, got {}", self.pin_path.display()),
        );
    }
}

/// The labels `node_agent_syscalls_total` has without `kube_labels`.
const RESERVED_LABELS: [&str; 4] = ["syscall", "namespace", "pod", "container"];
/// A bound on `kube_labels`, against a config that would make every series heavy.
const MAX_KUBE_LABELS: usize = 16;

/// What the collector needs besides [`HostPaths`]: the `syscalls:` section, kubelet's pod
/// log directory (`logs.pods_dir`) and the Kubernetes metadata by container id.
#[derive(Clone)]
pub struct SyscallsOptions {
    pub config: SyscallsConfig,
    pub pods_dir: PathBuf,
    /// For `kube_labels` (and the security events' `k8s.*` fields): the agent passes a
    /// slot the leader fills once its metadata cache runs; [`NoContainers`] otherwise.
    pub containers: SharedContainerLookup,
}

impl Default for SyscallsOptions {
    fn default() -> Self {
        Self {
            config: SyscallsConfig::default(),
            pods_dir: PathBuf::new(),
            containers: Arc::new(NoContainers),
        }
    }
}

impl std::fmt::Debug for SyscallsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyscallsOptions")
            .field("config", &self.config)
            .field("pods_dir", &self.pods_dir)
            .finish_non_exhaustive()
    }
}

impl SyscallsOptions {
    /// Where cgroup ids are resolved to containers.
    pub fn attribution_sources(&self, paths: &HostPaths) -> AttributionSources {
        let pods_dir = if self.pods_dir.as_os_str().is_empty() {
            PathBuf::from("/var/log/pods")
        } else {
            self.pods_dir.clone()
        };
        let containers_dir = self
            .config
            .containers_dir
            .clone()
            .unwrap_or_else(|| pods_dir.parent().unwrap_or(&pods_dir).join("containers"));
        AttributionSources {
            cgroup_root: self
                .config
                .cgroup_root
                .clone()
                .or_else(|| cgroups::detect_v2_root(paths)),
            pods_dir,
            containers_dir,
        }
    }
}

/// Builds the syscalls collector; fails with a clear reason when this build or this kernel
/// cannot do eBPF (the agent logs it and runs without the collector).
pub fn build_collector(
    options: &SyscallsOptions,
    paths: &HostPaths,
) -> Result<Box<dyn Collector>, CollectorError> {
    #[cfg(feature = "ebpf")]
    {
        collector::build(options, paths)
    }
    #[cfg(not(feature = "ebpf"))]
    {
        let _ = (options, paths);
        Err(CollectorError::Other(NOT_BUILT.into()))
    }
}

/// The collector's name for `--collector.syscalls` (off by default, as it needs eBPF).
pub const COLLECTOR_NAME: &str = "syscalls";

/// Why the collector is missing from a build without the `ebpf` feature.
pub const NOT_BUILT: &str = "syscalls collector unavailable: this node-agent was built without eBPF support (cargo feature `ebpf`)";

/// The leader's part: attach the eBPF program (when the kernel supports it) and keep it
/// attached until `shutdown`. Only the handover leader calls this (and only with
/// `--collector.syscalls` on), so two pods never attach twice. An unsupported host is
/// logged, not fatal.
pub async fn run_leader(
    options: SyscallsOptions,
    paths: HostPaths,
    security: Option<security::SecurityOptions>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    #[cfg(feature = "ebpf")]
    {
        loader::run_leader(&options, &paths, security, shutdown).await
    }
    #[cfg(not(feature = "ebpf"))]
    {
        let _ = (options, paths, security);
        tracing::warn!(reason = NOT_BUILT, "syscall monitoring disabled");
        shutdown.cancelled().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_yaml() {
        let config: SyscallsConfig = serde_yaml_ng::from_str(
            "pin_path: /sys/fs/bpf/x\nmap_entries: 100\nmax_series: 10\nattribution_refresh: 1s\n",
        )
        .expect("valid yaml");
        assert_eq!(config.pin_path, PathBuf::from("/sys/fs/bpf/x"));
        assert_eq!(config.map_entries, 100);
        assert_eq!(config.max_series, 10);
        assert_eq!(config.attribution_refresh, Duration::from_secs(1));
        config.validated().expect("valid");
        SyscallsConfig::default()
            .validated()
            .expect("defaults are valid");
    }

    #[test]
    fn config_rejects_bad_values() {
        assert!(serde_yaml_ng::from_str::<SyscallsConfig>("nope: 1").is_err());
        let zero = SyscallsConfig {
            map_entries: 0,
            ..Default::default()
        };
        assert!(zero.validated().is_err());
        let relative = SyscallsConfig {
            pin_path: "bpf".into(),
            ..Default::default()
        };
        assert!(relative.validated().is_err());
        let labels: SyscallsConfig =
            serde_yaml_ng::from_str("kube_labels: {app: \"label:app\", workload: workload}\n")
                .expect("valid yaml");
        assert_eq!(
            labels.kube_labels.get("app"),
            Some(&MetadataValue::Label("app".into()))
        );
        labels.validated().expect("valid");
        assert!(
            serde_yaml_ng::from_str::<SyscallsConfig>("kube_labels: {app: nope}\n").is_err(),
            "an unknown value"
        );
        for name in ["pod", "1app", "__x", "a-b"] {
            let mut c = SyscallsConfig::default();
            c.kube_labels.insert(name.into(), MetadataValue::Workload);
            let err = c.validated().expect_err(name);
            assert!(err.to_string().contains("kube_labels"), "{err}");
        }
    }

    #[test]
    fn attribution_sources_follow_paths_and_pods_dir() {
        let options = SyscallsOptions {
            config: SyscallsConfig {
                cgroup_root: Some("/cg".into()),
                ..Default::default()
            },
            pods_dir: "/host/var/log/pods".into(),
            ..Default::default()
        };
        let sources = options.attribution_sources(&HostPaths::default());
        assert_eq!(sources.cgroup_root, Some(PathBuf::from("/cg")));
        assert_eq!(
            sources.containers_dir,
            PathBuf::from("/host/var/log/containers")
        );
    }

    #[cfg(not(feature = "ebpf"))]
    #[test]
    fn build_collector_fails_clearly_without_the_feature() {
        let err = build_collector(&SyscallsOptions::default(), &HostPaths::default())
            .err()
            .expect("no eBPF in this build");
        assert!(err.to_string().contains("without eBPF support"), "{err}");
    }
}
