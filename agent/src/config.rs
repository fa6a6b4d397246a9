//! Composes each subsystem's own config into one validated [`Config`]: node_exporter's
//! flags (owned by `node_agent_metrics::config`), the agent's own flags, and the YAML file
//! whose sections belong to their subsystems. Only `main` and `app` use this module.
//!
//! Everything is checked here, once, before anything starts; a bad file reports every
//! problem with its YAML key path.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{ArgAction, CommandFactory, Parser};
use serde::Deserialize;

use node_agent_core::config::{InvalidConfig, KeyPath, Problems, Validate};
use node_agent_core::node::NodeIdentity;
use node_agent_handover::HandoverConfig;
use node_agent_kube::KubeConfig;
use node_agent_logs::LogsConfig;
use node_agent_metrics::config::{ExtraCollector, MetricsArgs, MetricsConfig, preprocess_args};
use node_agent_sinks::SinksConfig;
use node_agent_syscalls::{SyscallsConfig, SyscallsOptions};

mod type_errors;

/// Collectors that other subsystems register with the metrics endpoint.
const EXTRA_COLLECTORS: &[ExtraCollector] = &[ExtraCollector {
    name: node_agent_syscalls::COLLECTOR_NAME,
    default_enabled: false,
}];

/// Flags: node_exporter's (flattened from the metrics crate) plus the agent's own.
#[derive(Debug, Parser)]
#[command(
    name = "node-agent",
    version,
    about = "Node metrics, container logs and syscall monitoring in one process"
)]
struct RawArgs {
    #[command(flatten)]
    metrics: MetricsArgs,
    /// YAML file with the logs, sinks, handover and syscalls settings.
    #[arg(long = "config.file", env = "NODE_AGENT_CONFIG")]
    config_file: Option<PathBuf>,
    /// Only log messages with the given severity or above (or a tracing filter directive).
    #[arg(
        long = "log.level",
        default_value = "info",
        env = "NODE_AGENT_LOG_LEVEL"
    )]
    log_level: String,
    /// Output format of log messages: logfmt (text) or json.
    #[arg(
        long = "log.format",
        default_value = "logfmt",
        env = "NODE_AGENT_LOG_FORMAT"
    )]
    log_format: String,
    /// Tokio worker threads; the agent is I/O bound, so few are enough.
    #[arg(long = "runtime.worker-threads")]
    worker_threads: Option<usize>,
    /// node_exporter's GOMAXPROCS: used as the worker thread count unless
    /// --runtime.worker-threads is given.
    #[arg(long = "runtime.gomaxprocs")]
    gomaxprocs: Option<usize>,
    /// Check the flags and files (config, web config, certificates), then exit: 0 if valid.
    #[arg(long = "dry-run", action = ArgAction::SetTrue)]
    pub dry_run: bool,
}

/// Worker threads when neither --runtime.worker-threads nor --runtime.gomaxprocs is given.
const DEFAULT_WORKER_THREADS: usize = 2;

/// Long names of the flags that take `--<name>=true|false`: kingpin gives each a
/// `--no-<name>` form, which [`preprocess_args`] rewrites.
fn bool_flags() -> Vec<String> {
    RawArgs::command()
        .get_arguments()
        .filter(|a| {
            matches!(a.get_action(), ArgAction::Set)
                && a.get_num_args().is_some_and(|n| n.min_values() == 0)
        })
        .filter_map(|a| a.get_long().map(String::from))
        .collect()
}

/// Output format of the agent's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Logfmt,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// The YAML file: everything that is not a node_exporter flag, one section per subsystem.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub logs: LogsConfig,
    pub sinks: SinksConfig,
    pub handover: HandoverConfig,
    pub syscalls: SyscallsConfig,
    /// Kubernetes metadata for log records (`node_agent_kube::KubeConfig`).
    pub kubernetes: KubeConfig,
    /// Runtime security (Falco rules on the eBPF capture; needs `--collector.syscalls`).
    pub security: node_agent_security::config::SecurityConfig,
}

impl Validate for FileConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        self.logs.validate(&at.key("logs"), problems);
        self.sinks.validate(&at.key("sinks"), problems);
        self.handover.validate(&at.key("handover"), problems);
        self.syscalls.validate(&at.key("syscalls"), problems);
        validate_kubernetes(&self.kubernetes, at, problems);
        // The security crate keeps its own key paths (`security.…`).
        if let Err(errors) = self.security.validate() {
            for e in errors.0 {
                problems.add(&KeyPath::root().key(&e.key), e.message);
            }
        }
    }
}

/// The `kubernetes:` section reports its own key paths (`kubernetes.pod_labels.include[1]`).
/// Its node name is not in the file (it is the Downward API's NODE_NAME, with the
/// hostname as fallback, so never empty): a stand-in keeps that check quiet here.
fn validate_kubernetes(config: &KubeConfig, at: &KeyPath, problems: &mut Problems) {
    let mut config = config.clone();
    if config.node_name.is_empty() {
        config.node_name = "(NODE_NAME)".into();
    }
    if let Err(errors) = config.validate() {
        for e in errors.0 {
            problems.add(&at.key(&e.path), e.message);
        }
    }
}

/// Everything the agent needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub identity: NodeIdentity,
    pub file: FileConfig,
    /// `--config.file`, re-read on SIGHUP or when its content changes (`reload`).
    pub config_file: Option<PathBuf>,
    pub worker_threads: usize,
    /// `--dry-run`: validate and exit.
    pub dry_run: bool,
}

impl Config {
    /// Parses process arguments (first item is the program name) and the config file.
    pub fn from_args<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let (args, toggles) = preprocess_args(args, EXTRA_COLLECTORS, &bool_flags())?;
        let raw = RawArgs::try_parse_from(args)?;
        let metrics = raw.metrics.into_config(&toggles, EXTRA_COLLECTORS)?;
        let format = match raw.log_format.as_str() {
            "logfmt" | "text" => LogFormat::Logfmt,
            "json" => LogFormat::Json,
            other => bail!("--log.format must be logfmt or json, not {other:?}"),
        };
        let worker_threads = raw
            .worker_threads
            .or(raw.gomaxprocs)
            .unwrap_or(DEFAULT_WORKER_THREADS);
        if worker_threads == 0 {
            bail!("--runtime.worker-threads (or --runtime.gomaxprocs) must be at least 1");
        }
        let file = match &raw.config_file {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Ok(Config {
            metrics,
            log: LogConfig {
                level: raw.log_level,
                format,
            },
            identity: NodeIdentity::from_env(),
            file,
            config_file: raw.config_file,
            worker_threads,
            dry_run: raw.dry_run,
        })
    }

    /// Whether `--collector.<name>` is on.
    pub fn collector_enabled(&self, name: &str) -> bool {
        self.metrics.collectors.contains(name)
    }

    /// What the eBPF syscalls collector and the leader's loader need.
    pub fn syscalls_options(&self) -> SyscallsOptions {
        SyscallsOptions {
            config: self.file.syscalls.clone(),
            pods_dir: self.file.logs.pods_dir.clone(),
            // No metadata: the agent passes its cache's slot (`app.rs`).
            ..SyscallsOptions::default()
        }
    }
}

impl FileConfig {
    /// Reads and validates the YAML config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses YAML text and validates every section; an empty document means all defaults.
    /// Every type error and validation problem is reported at once, each at its key path.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Self = match serde_path_to_error::deserialize(de) {
            Ok(config) => config,
            Err(e) => {
                // serde stops at the first bad value; list all of them (and what
                // validation finds in the rest), so one run shows every mistake.
                if let Some(problems) = type_errors::collect(text)
                    && !problems.is_empty()
                {
                    return Err(InvalidConfig(problems).into());
                }
                let path = e.path().to_string();
                let inner = e.into_inner();
                return Err(if path == "." {
                    anyhow::anyhow!("invalid YAML: {inner}")
                } else {
                    anyhow::anyhow!("invalid YAML at {path}: {inner}")
                });
            }
        };
        config.validated()?;
        Ok(config)
    }
}

/// Durations as "5s", "250ms", "2m", "1h" or a bare number of seconds.
pub use node_agent_core::duration::parse as parse_duration;
pub use node_agent_metrics::config::parse_listen_address;

#[cfg(test)]
mod tests {
    use super::*;
    use node_agent_core::host::HostPaths;
    use node_agent_metrics::config::Listen;
    use std::time::Duration;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_args(std::iter::once("node-agent").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_node_exporter() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            c.metrics.web.listen,
            Listen::Addresses(vec!["[::]:9100".parse().unwrap()])
        );
        assert_eq!(c.worker_threads, 2);
        assert!(c.metrics.warnings.is_empty(), "{:?}", c.metrics.warnings);
        assert_eq!(c.metrics.web.telemetry_path, "/metrics");
        assert_eq!(c.metrics.paths, HostPaths::default());
        assert!(c.metrics.collectors.contains("cpu"));
        assert!(c.metrics.collectors.contains("meminfo"));
        assert!(c.metrics.options.cpu_guest);
    }

    #[test]
    fn collector_toggles() {
        let c = parse(&[
            "--no-collector.cpu",
            "--collector.textfile.directory=/tmp/x",
            "--no-collector.cpu.guest",
        ])
        .unwrap();
        assert!(!c.metrics.collectors.contains("cpu"));
        assert_eq!(c.metrics.options.textfile_directory, "/tmp/x");
        assert!(!c.metrics.options.cpu_guest);
        let c = parse(&["--collector.disable-defaults", "--collector.loadavg"]).unwrap();
        assert_eq!(
            c.metrics.collectors.iter().copied().collect::<Vec<_>>(),
            vec!["loadavg"]
        );
    }

    #[test]
    fn collector_filter_and_info_flags() {
        let c = parse(&[]).unwrap();
        assert!(!c.metrics.options.cpu_info);
        assert!(!c.metrics.options.arp_devices.ignored("eth0"));
        assert!(!c.metrics.options.powersupply_ignored.is_match("BAT0"));
        let c = parse(&[
            "--collector.arp.device-exclude=^veth",
            "--collector.powersupply.ignored-supplies=^AC$",
            "--collector.cpu.info.flags-include=^avx",
        ])
        .unwrap();
        assert!(c.metrics.options.arp_devices.ignored("veth12"));
        assert!(!c.metrics.options.arp_devices.ignored("eth0"));
        assert!(c.metrics.options.powersupply_ignored.is_match("AC"));
        // A flags/bugs regex turns the info metrics on, as in node_exporter.
        assert!(c.metrics.options.cpu_info);
        let err = parse(&["--collector.arp.device-include=("]).unwrap_err();
        assert!(format!("{err:#}").contains("arp.device-include"), "{err:#}");
    }

    #[test]
    fn rejects_bad_input_clearly() {
        let err = parse(&["--collector.vmstat.fields=("]).unwrap_err();
        assert!(format!("{err:#}").contains("vmstat.fields"), "{err:#}");
        let err = parse(&["--web.listen-address=nonsense"]).unwrap_err();
        assert!(format!("{err:#}").contains("listen address"), "{err:#}");
        let err = parse(&["--no-collector.nosuch"]).unwrap_err();
        assert!(format!("{err:#}").contains("nosuch"), "{err:#}");
        let err = parse(&["--log.format=xml"]).unwrap_err();
        assert!(format!("{err:#}").contains("log.format"), "{err:#}");
    }

    #[test]
    fn listen_addresses_and_durations() {
        assert_eq!(
            parse_listen_address("127.0.0.1:9200").unwrap(),
            "127.0.0.1:9200".parse().unwrap()
        );
        assert_eq!(
            parse_listen_address("localhost:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn config_file_sections_are_validated_at_load() {
        let err = FileConfig::parse("logs:\n  batch_max_records: 0\n").unwrap_err();
        assert!(format!("{err:#}").contains("logs"), "{err:#}");
        let err = FileConfig::parse("sinks:\n  - type: loki\n").unwrap_err();
        assert!(format!("{err:#}").contains("url"), "{err:#}");
        let err = FileConfig::parse("handover:\n  lock_file: relative.lock\n").unwrap_err();
        assert!(format!("{err:#}").contains("absolute"), "{err:#}");
        assert!(FileConfig::parse("sinks:\n  - type: stdout\n").is_ok());
    }

    #[test]
    fn kubernetes_section_is_parsed_and_validated_with_key_paths() {
        let c = FileConfig::parse(
            "kubernetes:\n  enabled: true\n  kubeconfig: /etc/kubeconfig\n  hold_time: 500ms\n  \
             pod_labels: {include: ['app', 'app.kubernetes.io/*']}\n  node_labels: {include: ['topology.kubernetes.io/*']}\n",
        )
        .unwrap();
        assert_eq!(c.kubernetes.enabled, Some(true));
        assert_eq!(c.kubernetes.hold_time, Duration::from_millis(500));
        assert_eq!(
            c.kubernetes.pod_labels.include,
            ["app", "app.kubernetes.io/*"]
        );
        let err = FileConfig::parse(
            "kubernetes:\n  enabled: true\n  pod_annotations: {exclude: ['bad[']}\n  hold_time: 5m\n",
        )
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("kubernetes.pod_annotations.exclude[0]"),
            "{text}"
        );
        assert!(text.contains("kubernetes.hold_time"), "{text}");
        let err = FileConfig::parse("kubernetes:\n  bogus: 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
        // Off outside a cluster unless asked for.
        let c = FileConfig::parse("").unwrap();
        assert!(!c.kubernetes.is_enabled_with(false));
    }

    #[test]
    fn config_file_rejects_unknown_keys() {
        assert!(FileConfig::parse("").is_ok());
        let err = FileConfig::parse("nosuchsection: 1").unwrap_err();
        assert!(format!("{err:#}").contains("nosuchsection"), "{err:#}");
    }

    #[test]
    fn node_exporter_command_lines_parse() {
        // Collectors node-agent does not implement are accepted; asking for one warns.
        let c = parse(&[
            "--no-collector.wifi",
            "--no-collector.btrfs",
            "--no-collector.xfs",
            "--collector.processes",
            "--collector.ntp=true",
            "--collector.loadavg=false",
        ])
        .unwrap();
        assert!(!c.metrics.collectors.contains("loadavg"));
        assert!(!c.metrics.collectors.contains("ntp"));
        assert!(
            c.metrics.warnings.iter().any(|w| w.contains("\"ntp\"")),
            "{:?}",
            c.metrics.warnings
        );
        // kingpin's --no-<bool flag> and --flag=bool.
        let c = parse(&[
            "--no-web.disable-exporter-metrics",
            "--collector.cpu.info=true",
            "--no-collector.netclass.ignore-invalid-speed",
            "--collector.stat.softirq",
            "--no-collector.disable-defaults",
        ])
        .unwrap();
        assert!(!c.metrics.web.disable_exporter_metrics);
        assert!(c.metrics.options.cpu_info);
        assert!(c.metrics.options.more.stat_softirq);
        assert!(parse(&["--no-collector.textfile.directory"]).is_err());
    }

    #[test]
    fn deprecated_aliases_work_with_a_warning() {
        let c = parse(&[
            "--collector.filesystem.ignored-mount-points=^/x$",
            "--collector.filesystem.ignored-fs-types=^tmpfs$",
            "--collector.diskstats.ignored-devices=^sdz$",
            "--collector.netdev.device-blacklist=^veth",
            "--collector.systemd.unit-whitelist=a.service",
        ])
        .unwrap();
        let o = &c.metrics.options;
        assert!(o.fs_mount_points_exclude.is_match("/x"));
        assert!(!o.fs_mount_points_exclude.is_match("/proc"));
        assert!(o.fs_types_exclude.is_match("tmpfs"));
        assert!(o.diskstats_device_exclude.is_match("sdz"));
        assert!(!o.diskstats_device_exclude.is_match("loop0"));
        assert!(o.netdev_devices.ignored("veth1"));
        assert!(o.more.systemd_unit_include.is_match("a.service"));
        assert!(!o.more.systemd_unit_include.is_match("b.service"));
        assert_eq!(c.metrics.warnings.len(), 5, "{:?}", c.metrics.warnings);
        assert!(c.metrics.warnings[0].contains("DEPRECATED"));
        let c = parse(&["--collector.netdev.device-whitelist=^eth"]).unwrap();
        assert!(c.metrics.options.netdev_devices.ignored("lo"));
        let err = parse(&[
            "--collector.diskstats.ignored-devices=a",
            "--collector.diskstats.device-exclude=b",
        ])
        .unwrap_err();
        assert!(format!("{err:#}").contains("mutually exclusive"), "{err:#}");
    }

    #[test]
    fn diskstats_include_replaces_the_default_exclude() {
        let c = parse(&["--collector.diskstats.device-include=^sda"]).unwrap();
        let o = &c.metrics.options;
        assert!(!o.diskstats_device_exclude.is_match("sda1"));
        assert!(
            o.more
                .diskstats_device_include
                .as_ref()
                .unwrap()
                .is_match("sda1")
        );
        assert!(
            parse(&[
                "--collector.diskstats.device-include=^sda",
                "--collector.diskstats.device-exclude=^sdb"
            ])
            .is_err()
        );
    }

    #[test]
    fn several_listen_addresses_and_runtime_flags() {
        let c = parse(&[
            "--web.listen-address=[127.0.0.1]:9100",
            "--web.listen-address=[::1]:9100",
            "--web.listen-address=localhost:9101",
            "--runtime.gomaxprocs=1",
        ])
        .unwrap();
        assert_eq!(
            c.metrics.web.listen,
            Listen::Addresses(vec![
                "127.0.0.1:9100".parse().unwrap(),
                "[::1]:9100".parse().unwrap(),
                "127.0.0.1:9101".parse().unwrap(),
            ])
        );
        assert_eq!(c.worker_threads, 1);
        let c = parse(&["--runtime.gomaxprocs=1", "--runtime.worker-threads=3"]).unwrap();
        assert_eq!(c.worker_threads, 3);
        let c = parse(&["--web.systemd-socket"]).unwrap();
        assert_eq!(c.metrics.web.listen, Listen::SystemdSocket);
    }
}
