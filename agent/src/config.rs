//! Command line (node_exporter-compatible flags) + YAML file → one validated [`Config`].

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Parser};
use serde::Deserialize;

use crate::host::HostPaths;
use crate::identity::NodeIdentity;
use crate::metrics::{COLLECTORS, CollectorOptions};

/// Flags as node_exporter spells them, so existing DaemonSet args carry over.
#[derive(Debug, Parser)]
#[command(
    name = "node-agent",
    version,
    about = "Node metrics, container logs and syscall monitoring in one process"
)]
struct RawArgs {
    /// Address to serve metrics on (":9100" means every interface, as in node_exporter).
    #[arg(
        long = "web.listen-address",
        default_value = ":9100",
        env = "NODE_AGENT_LISTEN_ADDRESS"
    )]
    listen_address: String,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    telemetry_path: String,
    /// Maximum number of parallel scrape requests (0 = no limit).
    #[arg(long = "web.max-requests", default_value_t = 40)]
    max_requests: usize,
    /// Exclude the agent's own process_* and build info metrics.
    #[arg(long = "web.disable-exporter-metrics")]
    disable_exporter_metrics: bool,

    /// procfs mountpoint.
    #[arg(long = "path.procfs", default_value = "/proc")]
    procfs: PathBuf,
    /// sysfs mountpoint.
    #[arg(long = "path.sysfs", default_value = "/sys")]
    sysfs: PathBuf,
    /// rootfs mountpoint.
    #[arg(long = "path.rootfs", default_value = "/")]
    rootfs: PathBuf,
    /// udev data path.
    #[arg(long = "path.udev.data", default_value = "/run/udev/data")]
    udev_data: PathBuf,

    /// Disable every collector that is not explicitly enabled.
    #[arg(long = "collector.disable-defaults")]
    disable_defaults: bool,
    /// Directory to read text files with metrics from ("" disables).
    #[arg(long = "collector.textfile.directory", default_value = "")]
    textfile_directory: String,
    /// Regexp of mount points to exclude for filesystem collector.
    #[arg(long = "collector.filesystem.mount-points-exclude", default_value = crate::metrics::filesystem::DEFAULT_MOUNT_POINTS_EXCLUDE)]
    fs_mount_points_exclude: String,
    /// Regexp of filesystem types to exclude for filesystem collector.
    #[arg(long = "collector.filesystem.fs-types-exclude", default_value = crate::metrics::filesystem::DEFAULT_FS_TYPES_EXCLUDE)]
    fs_types_exclude: String,
    /// How long to wait for a mount to respond before marking it as stale (seconds or "5s").
    #[arg(long = "collector.filesystem.mount-timeout", default_value = "5s")]
    fs_mount_timeout: String,
    /// Regexp of diskstats devices to exclude.
    #[arg(long = "collector.diskstats.device-exclude", default_value = crate::metrics::diskstats::DEFAULT_DEVICE_EXCLUDE)]
    diskstats_device_exclude: String,
    /// Regexp of net devices to exclude (mutually exclusive to device-include).
    #[arg(long = "collector.netdev.device-exclude", default_value = "")]
    netdev_device_exclude: String,
    /// Regexp of net devices to include (mutually exclusive to device-exclude).
    #[arg(long = "collector.netdev.device-include", default_value = "")]
    netdev_device_include: String,
    /// Regexp of arp devices to exclude (mutually exclusive to device-include).
    #[arg(long = "collector.arp.device-exclude", default_value = "")]
    arp_device_exclude: String,
    /// Regexp of arp devices to include (mutually exclusive to device-exclude).
    #[arg(long = "collector.arp.device-include", default_value = "")]
    arp_device_include: String,
    /// Regexp of power supplies to ignore for powersupplyclass collector.
    #[arg(long = "collector.powersupply.ignored-supplies", default_value = "^$")]
    powersupply_ignored_supplies: String,
    /// Regexp of net devices to ignore for netclass collector.
    #[arg(long = "collector.netclass.ignored-devices", default_value = "^$")]
    netclass_ignored_devices: String,
    /// Ignore devices where the speed is invalid.
    #[arg(long = "collector.netclass.ignore-invalid-speed")]
    netclass_ignore_invalid_speed: bool,
    /// Regexp of fields to return for netstat collector.
    #[arg(long = "collector.netstat.fields", default_value = crate::metrics::netstat::DEFAULT_FIELDS)]
    netstat_fields: String,
    /// Regexp of fields to return for vmstat collector.
    #[arg(long = "collector.vmstat.fields", default_value = crate::metrics::vmstat::DEFAULT_FIELDS)]
    vmstat_fields: String,
    /// Enables metric node_cpu_guest_seconds_total.
    #[arg(long = "collector.cpu.guest", action = ArgAction::Set, default_value_t = true, num_args = 0..=1, default_missing_value = "true")]
    cpu_guest: bool,
    /// Enables metric node_cpu_info.
    #[arg(long = "collector.cpu.info")]
    cpu_info: bool,
    /// Filter the `flags` field in cpuInfo with a value that must be a regular expression.
    #[arg(long = "collector.cpu.info.flags-include", default_value = "")]
    cpu_flags_include: String,
    /// Filter the `bugs` field in cpuInfo with a value that must be a regular expression.
    #[arg(long = "collector.cpu.info.bugs-include", default_value = "")]
    cpu_bugs_include: String,

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
    #[arg(long = "runtime.worker-threads", default_value_t = 2)]
    worker_threads: usize,
}

/// Output format of the agent's own logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub telemetry_path: String,
    pub max_requests: usize,
    pub disable_exporter_metrics: bool,
}

/// The YAML file: everything that is not a node_exporter flag.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub logs: crate::logs::LogsConfig,
    pub sinks: Vec<crate::sinks::SinkConfig>,
    pub handover: crate::handover::HandoverConfig,
    pub syscalls: crate::syscalls::SyscallsConfig,
}

/// Everything the agent needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub web: WebConfig,
    pub paths: HostPaths,
    /// Names of the enabled collectors, from [`COLLECTORS`].
    pub collectors: BTreeSet<&'static str>,
    pub collector_options: CollectorOptions,
    pub log: LogConfig,
    pub identity: NodeIdentity,
    pub file: FileConfig,
    pub worker_threads: usize,
}

impl Config {
    /// Parses process arguments (first item is the program name) and the config file.
    pub fn from_args<I, T>(args: I) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let (args, toggles) = split_collector_toggles(args)?;
        let raw = RawArgs::try_parse_from(args)?;
        Self::from_raw(raw, &toggles)
    }

    fn from_raw(raw: RawArgs, toggles: &[Toggle]) -> anyhow::Result<Self> {
        let mut collectors: BTreeSet<&'static str> = COLLECTORS
            .iter()
            .filter(|c| c.default_enabled && !raw.disable_defaults)
            .map(|c| c.name)
            .collect();
        for (name, on) in toggles {
            let spec = COLLECTORS
                .iter()
                .find(|c| c.name == name)
                .with_context(|| format!("unknown collector {name:?}"))?;
            if *on {
                collectors.insert(spec.name);
            } else {
                collectors.remove(spec.name);
            }
        }

        let mut collector_options = CollectorOptions {
            textfile_directory: raw.textfile_directory,
            fs_mount_points_exclude: regex_flag(
                "collector.filesystem.mount-points-exclude",
                &raw.fs_mount_points_exclude,
            )?,
            fs_types_exclude: regex_flag(
                "collector.filesystem.fs-types-exclude",
                &raw.fs_types_exclude,
            )?,
            fs_mount_timeout: parse_duration(&raw.fs_mount_timeout)
                .context("--collector.filesystem.mount-timeout")?,
            diskstats_device_exclude: regex_flag(
                "collector.diskstats.device-exclude",
                &raw.diskstats_device_exclude,
            )?,
            netdev_devices: crate::metrics::DeviceFilter {
                exclude: optional_regex(
                    "collector.netdev.device-exclude",
                    &raw.netdev_device_exclude,
                )?,
                include: optional_regex(
                    "collector.netdev.device-include",
                    &raw.netdev_device_include,
                )?,
            },
            // node_exporter documents the two as exclusive but applies both; so do we.
            arp_devices: crate::metrics::DeviceFilter {
                exclude: optional_regex("collector.arp.device-exclude", &raw.arp_device_exclude)?,
                include: optional_regex("collector.arp.device-include", &raw.arp_device_include)?,
            },
            powersupply_ignored: regex_flag(
                "collector.powersupply.ignored-supplies",
                &raw.powersupply_ignored_supplies,
            )?,
            netclass_ignored_devices: regex_flag(
                "collector.netclass.ignored-devices",
                &raw.netclass_ignored_devices,
            )?,
            netclass_ignore_invalid_speed: raw.netclass_ignore_invalid_speed,
            netstat_fields: regex_flag("collector.netstat.fields", &raw.netstat_fields)?,
            vmstat_fields: regex_flag("collector.vmstat.fields", &raw.vmstat_fields)?,
            cpu_guest: raw.cpu_guest,
            // As in node_exporter, asking for flags or bugs turns the info metrics on.
            cpu_info: raw.cpu_info
                || !raw.cpu_flags_include.is_empty()
                || !raw.cpu_bugs_include.is_empty(),
            cpu_flags_include: optional_regex(
                "collector.cpu.info.flags-include",
                &raw.cpu_flags_include,
            )?,
            cpu_bugs_include: optional_regex(
                "collector.cpu.info.bugs-include",
                &raw.cpu_bugs_include,
            )?,
            syscalls: Default::default(),
        };
        let netdev = &collector_options.netdev_devices;
        if netdev.exclude.is_some() && netdev.include.is_some() {
            bail!(
                "--collector.netdev.device-exclude and --collector.netdev.device-include are mutually exclusive"
            );
        }

        let format = match raw.log_format.as_str() {
            "logfmt" | "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => bail!("--log.format must be logfmt or json, not {other:?}"),
        };
        if !raw.telemetry_path.starts_with('/') {
            bail!(
                "--web.telemetry-path must start with '/', got {:?}",
                raw.telemetry_path
            );
        }
        if raw.worker_threads == 0 {
            bail!("--runtime.worker-threads must be at least 1");
        }

        let file = match &raw.config_file {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        file.syscalls.validate()?;
        collector_options.syscalls = crate::syscalls::SyscallsOptions::from_file(&file);

        Ok(Config {
            web: WebConfig {
                listen: parse_listen_address(&raw.listen_address)?,
                telemetry_path: raw.telemetry_path,
                max_requests: raw.max_requests,
                disable_exporter_metrics: raw.disable_exporter_metrics,
            },
            paths: HostPaths {
                proc: raw.procfs,
                sys: raw.sysfs,
                rootfs: raw.rootfs,
                udev_data: raw.udev_data,
            },
            collectors,
            collector_options,
            log: LogConfig {
                level: raw.log_level,
                format,
            },
            identity: NodeIdentity::from_env(),
            file,
            worker_threads: raw.worker_threads,
        })
    }
}

impl FileConfig {
    /// Reads and validates the YAML config file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Parses YAML text; an empty document means all defaults.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let config: Self = serde_yaml_ng::from_str(text).context("invalid YAML")?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every section, so a bad config stops the agent at start-up with a clear
    /// message instead of failing later inside one subsystem.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.logs.validate().context("in section logs")?;
        for (i, sink) in self.sinks.iter().enumerate() {
            sink.validate()
                .with_context(|| format!("in sinks[{i}] ({})", sink.name()))?;
        }
        self.handover.validate().context("in section handover")?;
        self.syscalls.validate().context("in section syscalls")?;
        Ok(())
    }
}

/// `--collector.<name>` (true) or `--no-collector.<name>` (false).
type Toggle = (String, bool);

/// Pulls `--collector.<name>` / `--no-collector.<name>` out of the arguments (clap can't
/// derive flags from a runtime table) and turns `--no-collector.<bool option>` into
/// `--collector.<bool option>=false`.
fn split_collector_toggles(args: Vec<OsString>) -> anyhow::Result<(Vec<OsString>, Vec<Toggle>)> {
    const BOOL_OPTIONS: &[&str] = &["cpu.guest"];
    let mut rest = Vec::with_capacity(args.len());
    let mut toggles = Vec::new();
    for arg in args {
        let Some(text) = arg.to_str() else {
            rest.push(arg);
            continue;
        };
        let (negated, name) = if let Some(name) = text.strip_prefix("--no-collector.") {
            (true, name)
        } else if let Some(name) = text.strip_prefix("--collector.") {
            (false, name)
        } else {
            rest.push(arg);
            continue;
        };
        if COLLECTORS.iter().any(|c| c.name == name) {
            toggles.push((name.to_string(), !negated));
        } else if negated && BOOL_OPTIONS.contains(&name) {
            rest.push(format!("--collector.{name}=false").into());
        } else if negated {
            bail!("unknown flag --no-collector.{name}");
        } else {
            rest.push(arg);
        }
    }
    Ok((rest, toggles))
}

/// Go-style listen address: ":9100" binds every interface.
pub fn parse_listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .with_context(|| format!("invalid port in listen address {text:?}"))?;
        return Ok(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    }
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .with_context(|| format!("invalid port in listen address {text:?}"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    bail!("invalid listen address {text:?} (expected host:port or :port)")
}

/// Durations as "5s", "250ms", "2m", "1h" or a bare number of seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("invalid duration unit in {text:?} (use ms, s, m or h)"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("invalid duration {text:?}");
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn regex_flag(flag: &str, pattern: &str) -> anyhow::Result<regex::Regex> {
    regex::Regex::new(pattern).with_context(|| format!("--{flag}: invalid regular expression"))
}

fn optional_regex(flag: &str, pattern: &str) -> anyhow::Result<Option<regex::Regex>> {
    if pattern.is_empty() {
        Ok(None)
    } else {
        regex_flag(flag, pattern).map(Some)
    }
}

/// Serde helper: durations written as "5s"/"250ms" in the YAML file.
pub mod duration_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        Config::from_args(std::iter::once("node-agent").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_node_exporter() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.web.listen, "[::]:9100".parse().unwrap());
        assert_eq!(c.web.telemetry_path, "/metrics");
        assert_eq!(c.paths, HostPaths::default());
        assert!(c.collectors.contains("cpu"));
        assert!(c.collectors.contains("meminfo"));
        assert!(c.collector_options.cpu_guest);
    }

    #[test]
    fn collector_toggles() {
        let c = parse(&[
            "--no-collector.cpu",
            "--collector.textfile.directory=/tmp/x",
            "--no-collector.cpu.guest",
        ])
        .unwrap();
        assert!(!c.collectors.contains("cpu"));
        assert_eq!(c.collector_options.textfile_directory, "/tmp/x");
        assert!(!c.collector_options.cpu_guest);
        let c = parse(&["--collector.disable-defaults", "--collector.loadavg"]).unwrap();
        assert_eq!(
            c.collectors.iter().copied().collect::<Vec<_>>(),
            vec!["loadavg"]
        );
    }

    #[test]
    fn collector_filter_and_info_flags() {
        let c = parse(&[]).unwrap();
        assert!(!c.collector_options.cpu_info);
        assert!(!c.collector_options.arp_devices.ignored("eth0"));
        assert!(!c.collector_options.powersupply_ignored.is_match("BAT0"));
        let c = parse(&[
            "--collector.arp.device-exclude=^veth",
            "--collector.powersupply.ignored-supplies=^AC$",
            "--collector.cpu.info.flags-include=^avx",
        ])
        .unwrap();
        assert!(c.collector_options.arp_devices.ignored("veth12"));
        assert!(!c.collector_options.arp_devices.ignored("eth0"));
        assert!(c.collector_options.powersupply_ignored.is_match("AC"));
        // A flags/bugs regex turns the info metrics on, as in node_exporter.
        assert!(c.collector_options.cpu_info);
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
    fn config_file_rejects_unknown_keys() {
        assert!(FileConfig::parse("").is_ok());
        let err = FileConfig::parse("nosuchsection: 1").unwrap_err();
        assert!(format!("{err:#}").contains("nosuchsection"), "{err:#}");
    }
}
