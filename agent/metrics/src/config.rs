//! The node_exporter command line this crate owns: `--web.*`, `--path.*` and
//! `--collector.*`, spelled as node_exporter 1.5.0 spells them so existing DaemonSet args
//! carry over. The agent's `config` flattens [`MetricsArgs`] into its own flags and calls
//! [`MetricsArgs::into_config`].

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{ArgAction, Args};
use node_agent_core::host::HostPaths;

use crate::{COLLECTORS, CollectorOptions, DeviceFilter};

/// node_exporter's flags.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
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
    #[arg(long = "collector.filesystem.mount-points-exclude", default_value = crate::filesystem::DEFAULT_MOUNT_POINTS_EXCLUDE)]
    fs_mount_points_exclude: String,
    /// Regexp of filesystem types to exclude for filesystem collector.
    #[arg(long = "collector.filesystem.fs-types-exclude", default_value = crate::filesystem::DEFAULT_FS_TYPES_EXCLUDE)]
    fs_types_exclude: String,
    /// How long to wait for a mount to respond before marking it as stale (seconds or "5s").
    #[arg(long = "collector.filesystem.mount-timeout", default_value = "5s")]
    fs_mount_timeout: String,
    /// Regexp of diskstats devices to exclude.
    #[arg(long = "collector.diskstats.device-exclude", default_value = crate::diskstats::DEFAULT_DEVICE_EXCLUDE)]
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
    #[arg(long = "collector.netstat.fields", default_value = crate::netstat::DEFAULT_FIELDS)]
    netstat_fields: String,
    /// Regexp of fields to return for vmstat collector.
    #[arg(long = "collector.vmstat.fields", default_value = crate::vmstat::DEFAULT_FIELDS)]
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
}

/// The HTTP endpoint's settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    pub telemetry_path: String,
    pub max_requests: usize,
    pub disable_exporter_metrics: bool,
}

/// Everything the metrics side needs, validated.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub web: WebConfig,
    pub paths: HostPaths,
    /// Names of the enabled collectors: from [`COLLECTORS`] and the extra ones.
    pub collectors: BTreeSet<&'static str>,
    pub options: CollectorOptions,
}

/// A collector another subsystem provides (registered by the agent, not in [`COLLECTORS`]):
/// its name and whether it is on without `--collector.<name>`.
#[derive(Debug, Clone, Copy)]
pub struct ExtraCollector {
    pub name: &'static str,
    pub default_enabled: bool,
}

impl MetricsArgs {
    /// Validates the flags and applies the collector toggles (see [`split_collector_toggles`]).
    pub fn into_config(
        self,
        toggles: &[Toggle],
        extra: &[ExtraCollector],
    ) -> anyhow::Result<MetricsConfig> {
        let args = self;
        let known = || {
            COLLECTORS
                .iter()
                .map(|c| (c.name, c.default_enabled))
                .chain(extra.iter().map(|c| (c.name, c.default_enabled)))
        };
        let mut collectors: BTreeSet<&'static str> = known()
            .filter(|(_, default)| *default && !args.disable_defaults)
            .map(|(name, _)| name)
            .collect();
        for (name, on) in toggles {
            let (name, _) = known()
                .find(|(n, _)| n == name)
                .with_context(|| format!("unknown collector {name:?}"))?;
            if *on {
                collectors.insert(name);
            } else {
                collectors.remove(name);
            }
        }

        let options = CollectorOptions {
            textfile_directory: args.textfile_directory,
            fs_mount_points_exclude: regex_flag(
                "collector.filesystem.mount-points-exclude",
                &args.fs_mount_points_exclude,
            )?,
            fs_types_exclude: regex_flag(
                "collector.filesystem.fs-types-exclude",
                &args.fs_types_exclude,
            )?,
            fs_mount_timeout: node_agent_core::duration::parse(&args.fs_mount_timeout)
                .context("--collector.filesystem.mount-timeout")?,
            diskstats_device_exclude: regex_flag(
                "collector.diskstats.device-exclude",
                &args.diskstats_device_exclude,
            )?,
            netdev_devices: DeviceFilter {
                exclude: optional_regex(
                    "collector.netdev.device-exclude",
                    &args.netdev_device_exclude,
                )?,
                include: optional_regex(
                    "collector.netdev.device-include",
                    &args.netdev_device_include,
                )?,
            },
            // node_exporter documents the two as exclusive but applies both; so do we.
            arp_devices: DeviceFilter {
                exclude: optional_regex("collector.arp.device-exclude", &args.arp_device_exclude)?,
                include: optional_regex("collector.arp.device-include", &args.arp_device_include)?,
            },
            powersupply_ignored: regex_flag(
                "collector.powersupply.ignored-supplies",
                &args.powersupply_ignored_supplies,
            )?,
            netclass_ignored_devices: regex_flag(
                "collector.netclass.ignored-devices",
                &args.netclass_ignored_devices,
            )?,
            netclass_ignore_invalid_speed: args.netclass_ignore_invalid_speed,
            netstat_fields: regex_flag("collector.netstat.fields", &args.netstat_fields)?,
            vmstat_fields: regex_flag("collector.vmstat.fields", &args.vmstat_fields)?,
            cpu_guest: args.cpu_guest,
            // As in node_exporter, asking for flags or bugs turns the info metrics on.
            cpu_info: args.cpu_info
                || !args.cpu_flags_include.is_empty()
                || !args.cpu_bugs_include.is_empty(),
            cpu_flags_include: optional_regex(
                "collector.cpu.info.flags-include",
                &args.cpu_flags_include,
            )?,
            cpu_bugs_include: optional_regex(
                "collector.cpu.info.bugs-include",
                &args.cpu_bugs_include,
            )?,
            // Options of the issue-16 collectors keep node_exporter's defaults until their
            // flags are wired here.
            ..CollectorOptions::default()
        };
        let netdev = &options.netdev_devices;
        if netdev.exclude.is_some() && netdev.include.is_some() {
            bail!(
                "--collector.netdev.device-exclude and --collector.netdev.device-include are mutually exclusive"
            );
        }
        if !args.telemetry_path.starts_with('/') {
            bail!(
                "--web.telemetry-path must start with '/', got {:?}",
                args.telemetry_path
            );
        }
        Ok(MetricsConfig {
            web: WebConfig {
                listen: parse_listen_address(&args.listen_address)?,
                telemetry_path: args.telemetry_path,
                max_requests: args.max_requests,
                disable_exporter_metrics: args.disable_exporter_metrics,
            },
            paths: HostPaths {
                proc: args.procfs,
                sys: args.sysfs,
                rootfs: args.rootfs,
                udev_data: args.udev_data,
            },
            collectors,
            options,
        })
    }
}

/// `--collector.<name>` (true) or `--no-collector.<name>` (false).
pub type Toggle = (String, bool);

/// Pulls `--collector.<name>` / `--no-collector.<name>` out of the arguments (clap can't
/// derive flags from a runtime table) and turns `--no-collector.<bool option>` into
/// `--collector.<bool option>=false`.
pub fn split_collector_toggles(
    args: Vec<OsString>,
    extra: &[ExtraCollector],
) -> anyhow::Result<(Vec<OsString>, Vec<Toggle>)> {
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
        if COLLECTORS.iter().any(|c| c.name == name) || extra.iter().any(|c| c.name == name) {
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

pub fn regex_flag(flag: &str, pattern: &str) -> anyhow::Result<regex::Regex> {
    regex::Regex::new(pattern).with_context(|| format!("--{flag}: invalid regular expression"))
}

pub fn optional_regex(flag: &str, pattern: &str) -> anyhow::Result<Option<regex::Regex>> {
    if pattern.is_empty() {
        Ok(None)
    } else {
        regex_flag(flag, pattern).map(Some)
    }
}
