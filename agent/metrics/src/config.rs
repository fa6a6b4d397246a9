//! The node_exporter command line this crate owns: `--web.*`, `--path.*` and
//! `--collector.*`, spelled as node_exporter 1.5.0 spells them so existing DaemonSet args
//! carry over. The agent's `config` flattens [`MetricsArgs`] into its own flags, runs
//! [`preprocess_args`] first and calls [`MetricsArgs::into_config`].
//!
//! Every flag of node_exporter 1.5.0 parses. A collector node-agent does not implement is
//! accepted: `--collector.<name>` for it logs a warning at start-up and exposes nothing
//! (exiting would break DaemonSets whose args were copied from node_exporter's; the
//! warning and the missing `node_scrape_collector_success{collector="<name>"}` tell). So
//! are the options of such collectors. The deprecated 1.5.0 spellings work with a warning.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgAction, Args};
use node_agent_core::host::HostPaths;

use crate::webconfig::WebServerSettings;
use crate::{COLLECTORS, CollectorOptions, DeviceFilter};

/// node_exporter 1.5.0's Linux collectors and whether each is on by default (upstream's
/// defaults; Debian's package turns systemd on), plus watchdog (1.8). Names not in
/// [`COLLECTORS`] are accepted but not collected.
pub static NODE_EXPORTER_COLLECTORS: &[(&str, bool)] = &[
    ("arp", true),
    ("bcache", true),
    ("bonding", true),
    ("btrfs", true),
    ("buddyinfo", false),
    ("cgroups", false),
    ("conntrack", true),
    ("cpu", true),
    ("cpufreq", true),
    ("diskstats", true),
    ("dmi", true),
    ("drbd", false),
    ("drm", false),
    ("edac", true),
    ("entropy", true),
    ("ethtool", false),
    ("fibrechannel", true),
    ("filefd", true),
    ("filesystem", true),
    ("hwmon", true),
    ("infiniband", true),
    ("interrupts", false),
    ("ipvs", true),
    ("ksmd", false),
    ("lnstat", false),
    ("loadavg", true),
    ("logind", false),
    ("mdadm", true),
    ("meminfo", true),
    ("meminfo_numa", false),
    ("mountstats", false),
    ("netclass", true),
    ("netdev", true),
    ("netstat", true),
    ("network_route", false),
    ("nfs", true),
    ("nfsd", true),
    ("ntp", false),
    ("nvme", true),
    ("os", true),
    ("perf", false),
    ("powersupplyclass", true),
    ("pressure", true),
    ("processes", false),
    ("qdisc", false),
    ("rapl", true),
    ("runit", false),
    ("schedstat", true),
    ("selinux", true),
    ("slabinfo", false),
    ("sockstat", true),
    ("softirqs", false),
    ("softnet", true),
    ("stat", true),
    ("supervisord", false),
    ("sysctl", false),
    ("systemd", false),
    ("tapestats", true),
    ("tcpstat", false),
    ("textfile", true),
    ("thermal_zone", true),
    ("time", true),
    ("timex", true),
    ("udp_queues", true),
    ("uname", true),
    ("vmstat", true),
    ("watchdog", false),
    ("wifi", false),
    ("xfs", true),
    ("zfs", true),
    ("zoneinfo", false),
];

/// node_exporter's flags.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Addresses on which to expose metrics (":9100" means every interface; repeatable).
    #[arg(
        long = "web.listen-address",
        default_value = ":9100",
        env = "NODE_AGENT_LISTEN_ADDRESS",
        action = ArgAction::Append
    )]
    listen_address: Vec<String>,
    /// Use systemd socket activation listeners (LISTEN_FDS) instead of port listeners.
    #[arg(long = "web.systemd-socket", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    systemd_socket: bool,
    /// Path to an exporter-toolkit web configuration file (TLS, basic auth, headers).
    #[arg(long = "web.config.file", default_value = "")]
    web_config_file: String,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    telemetry_path: String,
    /// Maximum number of parallel scrape requests (0 = no limit).
    #[arg(long = "web.max-requests", default_value_t = 40)]
    max_requests: usize,
    /// Exclude the agent's own process_* and build info metrics.
    #[arg(long = "web.disable-exporter-metrics", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    disable_exporter_metrics: bool,
    /// Maximum number of open HTTP connections; further clients wait in the listen backlog.
    #[arg(long = "web.max-connections", default_value_t = 64)]
    max_connections: usize,
    /// How long a client may take to send a request's headers ("10s", "500ms").
    #[arg(long = "web.header-read-timeout", default_value = "10s")]
    header_read_timeout: String,

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
    #[arg(long = "collector.disable-defaults", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    disable_defaults: bool,
    /// Directory to read text files with metrics from ("" disables).
    #[arg(long = "collector.textfile.directory", default_value = "")]
    textfile_directory: String,
    /// Regexp of mount points to exclude for filesystem collector.
    #[arg(long = "collector.filesystem.mount-points-exclude")]
    fs_mount_points_exclude: Option<String>,
    /// Deprecated name of --collector.filesystem.mount-points-exclude.
    #[arg(long = "collector.filesystem.ignored-mount-points", hide = true)]
    old_fs_mount_points: Option<String>,
    /// Regexp of filesystem types to exclude for filesystem collector.
    #[arg(long = "collector.filesystem.fs-types-exclude")]
    fs_types_exclude: Option<String>,
    /// Deprecated name of --collector.filesystem.fs-types-exclude.
    #[arg(long = "collector.filesystem.ignored-fs-types", hide = true)]
    old_fs_types: Option<String>,
    /// How long to wait for a mount to respond before marking it as stale (seconds or "5s").
    #[arg(long = "collector.filesystem.mount-timeout", default_value = "5s")]
    fs_mount_timeout: String,
    /// Regexp of diskstats devices to exclude (default: partitions, ram, loop, fd).
    #[arg(long = "collector.diskstats.device-exclude")]
    diskstats_device_exclude: Option<String>,
    /// Deprecated name of --collector.diskstats.device-exclude.
    #[arg(long = "collector.diskstats.ignored-devices", hide = true)]
    old_diskstats_devices: Option<String>,
    /// Regexp of diskstats devices to include (mutually exclusive to device-exclude).
    #[arg(long = "collector.diskstats.device-include")]
    diskstats_device_include: Option<String>,
    /// Regexp of net devices to exclude (mutually exclusive to device-include).
    #[arg(long = "collector.netdev.device-exclude")]
    netdev_device_exclude: Option<String>,
    /// Deprecated name of --collector.netdev.device-exclude.
    #[arg(long = "collector.netdev.device-blacklist", hide = true)]
    old_netdev_exclude: Option<String>,
    /// Regexp of net devices to include (mutually exclusive to device-exclude).
    #[arg(long = "collector.netdev.device-include")]
    netdev_device_include: Option<String>,
    /// Deprecated name of --collector.netdev.device-include.
    #[arg(long = "collector.netdev.device-whitelist", hide = true)]
    old_netdev_include: Option<String>,
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
    #[arg(long = "collector.netclass.ignore-invalid-speed", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    netclass_ignore_invalid_speed: bool,
    /// Regexp of fields to return for netstat collector.
    #[arg(long = "collector.netstat.fields", default_value = crate::netstat::DEFAULT_FIELDS)]
    netstat_fields: String,
    /// Regexp of fields to return for vmstat collector.
    #[arg(long = "collector.vmstat.fields", default_value = crate::vmstat::DEFAULT_FIELDS)]
    vmstat_fields: String,
    /// Enables metric node_cpu_guest_seconds_total.
    #[arg(long = "collector.cpu.guest", action = ArgAction::Set, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    cpu_guest: bool,
    /// Enables metric node_cpu_info.
    #[arg(long = "collector.cpu.info", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    cpu_info: bool,
    /// Filter the `flags` field in cpuInfo with a value that must be a regular expression.
    #[arg(long = "collector.cpu.info.flags-include", default_value = "")]
    cpu_flags_include: String,
    /// Filter the `bugs` field in cpuInfo with a value that must be a regular expression.
    #[arg(long = "collector.cpu.info.bugs-include", default_value = "")]
    cpu_bugs_include: String,

    #[command(flatten)]
    more: MoreArgs,
}

/// Options of collectors that are new or not implemented here: parsed (so node_exporter
/// command lines carry over) and handed to the collectors through
/// [`CollectorOptions::more`].
#[derive(Debug, Clone, Args)]
pub struct MoreArgs {
    /// Expose expensive bcache priority stats.
    #[arg(long = "collector.bcache.priorityStats", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    bcache_priority_stats: bool,
    /// Regexp of ethtool devices to include (mutually exclusive to device-exclude).
    #[arg(long = "collector.ethtool.device-include", default_value = "")]
    ethtool_device_include: String,
    /// Regexp of ethtool devices to exclude (mutually exclusive to device-include).
    #[arg(long = "collector.ethtool.device-exclude", default_value = "")]
    ethtool_device_exclude: String,
    /// Regexp of ethtool stats to include.
    #[arg(long = "collector.ethtool.metrics-include", default_value = ".*")]
    ethtool_metrics_include: String,
    /// Comma separated list for IPVS backend stats labels.
    #[arg(
        long = "collector.ipvs.backend-labels",
        default_value = "local_address,local_port,remote_address,remote_port,proto,local_mark"
    )]
    ipvs_backend_labels: String,
    /// Use netlink to gather stats instead of /proc/net/dev (netclass).
    #[arg(long = "collector.netclass.netlink", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    netclass_netlink: bool,
    /// Expose the statistics for each network device, replacing netdev collector.
    #[arg(long = "collector.netclass_rtnl.with-stats", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    netclass_rtnl_with_stats: bool,
    /// Collect address-info for every device.
    #[arg(long = "collector.netdev.address-info", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    netdev_address_info: bool,
    /// Use (incompatible) metric names that provide more detailed stats on Linux.
    #[arg(long = "collector.netdev.enable-detailed-metrics", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    netdev_detailed: bool,
    /// Use netlink to gather stats instead of /proc/net/dev (netdev).
    #[arg(long = "collector.netdev.netlink", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    netdev_netlink: bool,
    /// NTP server to use for ntp collector.
    #[arg(long = "collector.ntp.server", default_value = "127.0.0.1")]
    ntp_server: String,
    /// UDP port number to connect to on NTP server.
    #[arg(long = "collector.ntp.server-port", default_value_t = 123)]
    ntp_server_port: u16,
    /// NTP protocol version.
    #[arg(long = "collector.ntp.protocol-version", default_value_t = 4)]
    ntp_protocol_version: u8,
    /// Certify that collector.ntp.server address is not a public ntp server.
    #[arg(long = "collector.ntp.server-is-local", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    ntp_server_is_local: bool,
    /// IP TTL to use while sending NTP query.
    #[arg(long = "collector.ntp.ip-ttl", default_value_t = 1)]
    ntp_ip_ttl: u8,
    /// Max accumulated distance to the root.
    #[arg(long = "collector.ntp.max-distance", default_value = "3.46608s")]
    ntp_max_distance: String,
    /// Offset between local clock and local ntpd time to tolerate.
    #[arg(long = "collector.ntp.local-offset-tolerance", default_value = "1ms")]
    ntp_local_offset_tolerance: String,
    /// List of CPUs from which perf metrics should be collected.
    #[arg(long = "collector.perf.cpus", default_value = "")]
    perf_cpus: String,
    /// perf tracepoint that should be collected (repeatable).
    #[arg(long = "collector.perf.tracepoint", action = ArgAction::Append)]
    perf_tracepoint: Vec<String>,
    /// Test fixtures to use for qdisc collector end-to-end testing.
    #[arg(long = "collector.qdisc.fixtures", default_value = "")]
    qdisc_fixtures: String,
    /// Regexp of qdisk devices to include (mutually exclusive to device-exclude).
    #[arg(long = "collector.qdisk.device-include", default_value = "")]
    qdisk_device_include: String,
    /// Regexp of qdisk devices to exclude (mutually exclusive to device-include).
    #[arg(long = "collector.qdisk.device-exclude", default_value = "")]
    qdisk_device_exclude: String,
    /// Adds the zone label to the rapl metrics.
    #[arg(long = "collector.rapl.enable-zone-label", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    rapl_enable_zone_label: bool,
    /// Path to runit service directory.
    #[arg(long = "collector.runit.servicedir", default_value = "/etc/service")]
    runit_servicedir: String,
    /// Export softirq calls per vector.
    #[arg(long = "collector.stat.softirq", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    stat_softirq: bool,
    /// XML RPC endpoint.
    #[arg(
        long = "collector.supervisord.url",
        default_value = "http://localhost:9001/RPC2"
    )]
    supervisord_url: String,
    /// Select sysctl metrics to include (repeatable).
    #[arg(long = "collector.sysctl.include", action = ArgAction::Append)]
    sysctl_include: Vec<String>,
    /// Select sysctl metrics to include as info metrics (repeatable).
    #[arg(long = "collector.sysctl.include-info", action = ArgAction::Append)]
    sysctl_include_info: Vec<String>,
    /// Regexp of systemd units to include.
    #[arg(long = "collector.systemd.unit-include")]
    systemd_unit_include: Option<String>,
    /// Deprecated name of --collector.systemd.unit-include.
    #[arg(long = "collector.systemd.unit-whitelist", hide = true)]
    old_systemd_include: Option<String>,
    /// Regexp of systemd units to exclude.
    #[arg(long = "collector.systemd.unit-exclude")]
    systemd_unit_exclude: Option<String>,
    /// Deprecated name of --collector.systemd.unit-exclude.
    #[arg(long = "collector.systemd.unit-blacklist", hide = true)]
    old_systemd_exclude: Option<String>,
    /// Enables service unit tasks metrics unit_tasks_current and unit_tasks_max.
    #[arg(long = "collector.systemd.enable-task-metrics", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    systemd_task_metrics: bool,
    /// Enables service unit metric service_restart_total.
    #[arg(long = "collector.systemd.enable-restarts-metrics", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    systemd_restarts_metrics: bool,
    /// Enables service unit metric unit_start_time_seconds.
    #[arg(long = "collector.systemd.enable-start-time-metrics", action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    systemd_start_time_metrics: bool,
    /// Connect to systemd directly instead of over the system bus (testing only).
    #[arg(long = "collector.systemd.private", hide = true, action = ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    systemd_private: bool,
    /// Regexp of devices to ignore for tapestats.
    #[arg(long = "collector.tapestats.ignored-devices", default_value = "^$")]
    tapestats_ignored_devices: String,
    /// Test fixtures to use for wifi collector metrics.
    #[arg(long = "collector.wifi.fixtures", default_value = "")]
    wifi_fixtures: String,
}

/// Validated options of the collectors in [`MoreArgs`].
#[derive(Debug, Clone)]
pub struct MoreOptions {
    pub bcache_priority_stats: bool,
    pub ethtool_devices: DeviceFilter,
    pub ethtool_metrics_include: regex::Regex,
    pub ipvs_backend_labels: Vec<String>,
    pub netdev_address_info: bool,
    pub netdev_detailed: bool,
    pub rapl_enable_zone_label: bool,
    pub stat_softirq: bool,
    pub sysctl_include: Vec<String>,
    pub sysctl_include_info: Vec<String>,
    pub systemd_unit_include: regex::Regex,
    pub systemd_unit_exclude: regex::Regex,
    pub systemd_task_metrics: bool,
    pub systemd_restarts_metrics: bool,
    pub systemd_start_time_metrics: bool,
    pub systemd_private: bool,
    pub tapestats_ignored_devices: regex::Regex,
    pub diskstats_device_include: Option<regex::Regex>,
}

/// node_exporter's default systemd unit filters (anchored, as node_exporter anchors them).
pub const SYSTEMD_UNIT_INCLUDE: &str = ".+";
pub const SYSTEMD_UNIT_EXCLUDE: &str = ".+\\.(automount|device|mount|scope|slice|target)";

impl Default for MoreOptions {
    fn default() -> Self {
        let re = |p: &str| regex::Regex::new(p).expect("built-in default regex is valid");
        Self {
            bcache_priority_stats: false,
            ethtool_devices: DeviceFilter::default(),
            ethtool_metrics_include: re(".*"),
            ipvs_backend_labels: [
                "local_address",
                "local_port",
                "remote_address",
                "remote_port",
                "proto",
                "local_mark",
            ]
            .map(String::from)
            .to_vec(),
            netdev_address_info: false,
            netdev_detailed: false,
            rapl_enable_zone_label: false,
            stat_softirq: false,
            sysctl_include: Vec::new(),
            sysctl_include_info: Vec::new(),
            systemd_unit_include: re(&format!("^(?:{SYSTEMD_UNIT_INCLUDE})$")),
            systemd_unit_exclude: re(&format!("^(?:{SYSTEMD_UNIT_EXCLUDE})$")),
            systemd_task_metrics: false,
            systemd_restarts_metrics: false,
            systemd_start_time_metrics: false,
            systemd_private: false,
            tapestats_ignored_devices: re("^$"),
            diskstats_device_include: None,
        }
    }
}

/// How the HTTP endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Bind these addresses.
    Addresses(Vec<SocketAddr>),
    /// Take the sockets systemd passes (LISTEN_FDS), as `--web.systemd-socket`.
    SystemdSocket,
}

/// The HTTP endpoint's settings.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: Listen,
    pub telemetry_path: String,
    pub max_requests: usize,
    pub disable_exporter_metrics: bool,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// From `--web.config.file` (TLS, basic auth, headers); default: plain HTTP.
    pub server: WebServerSettings,
}

/// Everything the metrics side needs, validated.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub web: WebConfig,
    pub paths: HostPaths,
    /// Names of the enabled collectors: from [`COLLECTORS`] and the extra ones.
    pub collectors: BTreeSet<&'static str>,
    pub options: CollectorOptions,
    /// Deprecated flags, unimplemented collectors asked for, web config differences:
    /// logged once at start-up (logging is not set up while flags are parsed).
    pub warnings: Vec<String>,
}

/// A collector another subsystem provides (registered by the agent, not in [`COLLECTORS`]):
/// its name and whether it is on without `--collector.<name>`.
#[derive(Debug, Clone, Copy)]
pub struct ExtraCollector {
    pub name: &'static str,
    pub default_enabled: bool,
}

/// A deprecated flag's value moves to its new name with a warning; both given is an error,
/// as in node_exporter 1.5.0.
fn deprecated(
    old: Option<String>,
    old_flag: &str,
    new: Option<String>,
    new_flag: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<String>> {
    match (old, new) {
        (Some(_), Some(_)) => {
            bail!("--{old_flag} and --{new_flag} are mutually exclusive")
        }
        (Some(old), None) => {
            warnings.push(format!(
                "--{old_flag} is DEPRECATED and will be removed in 2.0.0, use --{new_flag}"
            ));
            Ok(Some(old))
        }
        (None, new) => Ok(new),
    }
}

impl MetricsArgs {
    /// Validates the flags and applies the collector toggles (see [`preprocess_args`]).
    pub fn into_config(
        self,
        toggles: &[Toggle],
        extra: &[ExtraCollector],
    ) -> anyhow::Result<MetricsConfig> {
        let args = self;
        let mut warnings = Vec::new();
        let implemented = |name: &str| {
            COLLECTORS.iter().any(|c| c.name == name) || extra.iter().any(|c| c.name == name)
        };
        // Implemented ones first: their default wins over the node_exporter table's.
        let known = || {
            COLLECTORS
                .iter()
                .map(|c| (c.name, c.default_enabled))
                .chain(extra.iter().map(|c| (c.name, c.default_enabled)))
                .chain(NODE_EXPORTER_COLLECTORS.iter().copied())
        };
        let mut enabled: BTreeSet<&'static str> = BTreeSet::new();
        if !args.disable_defaults {
            for (name, default) in known() {
                let first = known().find(|(n, _)| *n == name).map(|(_, d)| d);
                if default && first == Some(true) {
                    enabled.insert(name);
                }
            }
        }
        let mut asked: BTreeSet<&'static str> = BTreeSet::new();
        for (name, on) in toggles {
            let (name, _) = known()
                .find(|(n, _)| n == name)
                .with_context(|| format!("unknown collector {name:?}"))?;
            if *on {
                enabled.insert(name);
                asked.insert(name);
            } else {
                enabled.remove(name);
                asked.remove(name);
            }
        }
        for name in &asked {
            if !implemented(name) {
                warnings.push(format!(
                    "collector {name:?} is not implemented by node-agent: --collector.{name} is accepted and ignored"
                ));
            }
        }
        let collectors: BTreeSet<&'static str> =
            enabled.into_iter().filter(|n| implemented(n)).collect();

        let mount_points = deprecated(
            args.old_fs_mount_points,
            "collector.filesystem.ignored-mount-points",
            args.fs_mount_points_exclude,
            "collector.filesystem.mount-points-exclude",
            &mut warnings,
        )?;
        let fs_types = deprecated(
            args.old_fs_types,
            "collector.filesystem.ignored-fs-types",
            args.fs_types_exclude,
            "collector.filesystem.fs-types-exclude",
            &mut warnings,
        )?;
        let disk_exclude = deprecated(
            args.old_diskstats_devices,
            "collector.diskstats.ignored-devices",
            args.diskstats_device_exclude,
            "collector.diskstats.device-exclude",
            &mut warnings,
        )?;
        let netdev_exclude = deprecated(
            args.old_netdev_exclude,
            "collector.netdev.device-blacklist",
            args.netdev_device_exclude,
            "collector.netdev.device-exclude",
            &mut warnings,
        )?;
        let netdev_include = deprecated(
            args.old_netdev_include,
            "collector.netdev.device-whitelist",
            args.netdev_device_include,
            "collector.netdev.device-include",
            &mut warnings,
        )?;
        let more = args.more;
        let systemd_include = deprecated(
            more.old_systemd_include,
            "collector.systemd.unit-whitelist",
            more.systemd_unit_include,
            "collector.systemd.unit-include",
            &mut warnings,
        )?;
        let systemd_exclude = deprecated(
            more.old_systemd_exclude,
            "collector.systemd.unit-blacklist",
            more.systemd_unit_exclude,
            "collector.systemd.unit-exclude",
            &mut warnings,
        )?;

        // The default exclude applies only without an include (node_exporter 1.5.0 would
        // refuse --collector.diskstats.device-include unless the default was cleared).
        let disk_include = match &args.diskstats_device_include {
            Some(p) if !p.is_empty() => Some(regex_flag("collector.diskstats.device-include", p)?),
            _ => None,
        };
        let disk_exclude = match (disk_exclude, &disk_include) {
            (Some(p), Some(_)) if !p.is_empty() => {
                bail!(
                    "--collector.diskstats.device-exclude and --collector.diskstats.device-include are mutually exclusive"
                )
            }
            (Some(p), _) if !p.is_empty() => p,
            (Some(_), _) | (None, Some(_)) => NEVER.to_string(),
            (None, None) => crate::diskstats::DEFAULT_DEVICE_EXCLUDE.to_string(),
        };

        let ethtool_devices = DeviceFilter {
            exclude: optional_regex(
                "collector.ethtool.device-exclude",
                &more.ethtool_device_exclude,
            )?,
            include: optional_regex(
                "collector.ethtool.device-include",
                &more.ethtool_device_include,
            )?,
        };
        let anchored = |flag: &str, p: &str| regex_flag(flag, &format!("^(?:{p})$"));
        let more_options = MoreOptions {
            bcache_priority_stats: more.bcache_priority_stats,
            ethtool_devices,
            ethtool_metrics_include: regex_flag(
                "collector.ethtool.metrics-include",
                &more.ethtool_metrics_include,
            )?,
            ipvs_backend_labels: more
                .ipvs_backend_labels
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            netdev_address_info: more.netdev_address_info,
            netdev_detailed: more.netdev_detailed,
            rapl_enable_zone_label: more.rapl_enable_zone_label,
            stat_softirq: more.stat_softirq,
            sysctl_include: more.sysctl_include,
            sysctl_include_info: more.sysctl_include_info,
            systemd_unit_include: anchored(
                "collector.systemd.unit-include",
                systemd_include.as_deref().unwrap_or(SYSTEMD_UNIT_INCLUDE),
            )?,
            systemd_unit_exclude: anchored(
                "collector.systemd.unit-exclude",
                systemd_exclude.as_deref().unwrap_or(SYSTEMD_UNIT_EXCLUDE),
            )?,
            systemd_task_metrics: more.systemd_task_metrics,
            systemd_restarts_metrics: more.systemd_restarts_metrics,
            systemd_start_time_metrics: more.systemd_start_time_metrics,
            systemd_private: more.systemd_private,
            tapestats_ignored_devices: regex_flag(
                "collector.tapestats.ignored-devices",
                &more.tapestats_ignored_devices,
            )?,
            diskstats_device_include: disk_include,
        };
        // Durations of the ntp collector, checked so a typo fails here as in node_exporter.
        for (flag, value) in [
            ("collector.ntp.max-distance", &more.ntp_max_distance),
            (
                "collector.ntp.local-offset-tolerance",
                &more.ntp_local_offset_tolerance,
            ),
        ] {
            go_duration(value).with_context(|| format!("--{flag}"))?;
        }

        let options = CollectorOptions {
            textfile_directory: args.textfile_directory,
            fs_mount_points_exclude: regex_flag(
                "collector.filesystem.mount-points-exclude",
                mount_points
                    .as_deref()
                    .unwrap_or(crate::filesystem::DEFAULT_MOUNT_POINTS_EXCLUDE),
            )?,
            fs_types_exclude: regex_flag(
                "collector.filesystem.fs-types-exclude",
                fs_types
                    .as_deref()
                    .unwrap_or(crate::filesystem::DEFAULT_FS_TYPES_EXCLUDE),
            )?,
            fs_mount_timeout: node_agent_core::duration::parse(&args.fs_mount_timeout)
                .context("--collector.filesystem.mount-timeout")?,
            diskstats_device_exclude: regex_flag(
                "collector.diskstats.device-exclude",
                &disk_exclude,
            )?,
            netdev_devices: DeviceFilter {
                exclude: optional_regex(
                    "collector.netdev.device-exclude",
                    netdev_exclude.as_deref().unwrap_or(""),
                )?,
                include: optional_regex(
                    "collector.netdev.device-include",
                    netdev_include.as_deref().unwrap_or(""),
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
            more: more_options,
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
        let listen = if args.systemd_socket {
            Listen::SystemdSocket
        } else {
            let mut addrs = Vec::new();
            for text in &args.listen_address {
                let addr = parse_listen_address(text)?;
                if !addrs.contains(&addr) {
                    addrs.push(addr);
                }
            }
            Listen::Addresses(addrs)
        };
        let server = if args.web_config_file.is_empty() {
            WebServerSettings::default()
        } else {
            crate::webconfig::load(std::path::Path::new(&args.web_config_file))?
        };
        warnings.extend(server.warnings.iter().cloned());
        if args.max_connections == 0 {
            bail!("--web.max-connections must be at least 1");
        }
        Ok(MetricsConfig {
            web: WebConfig {
                listen,
                telemetry_path: args.telemetry_path,
                max_requests: args.max_requests,
                disable_exporter_metrics: args.disable_exporter_metrics,
                max_connections: args.max_connections,
                header_read_timeout: node_agent_core::duration::parse(&args.header_read_timeout)
                    .context("--web.header-read-timeout")?,
                server,
            },
            paths: HostPaths {
                proc: args.procfs,
                sys: args.sysfs,
                rootfs: args.rootfs,
                udev_data: args.udev_data,
            },
            collectors,
            options,
            warnings,
        })
    }
}

/// A regex that matches nothing: the diskstats exclude when an include is given.
const NEVER: &str = r"[^\s\S]";

/// Go's `time.ParseDuration` subset node_exporter's flags use: a sequence of decimal
/// numbers with units ns, us, µs, ms, s, m, h ("3.46608s", "1m30s").
pub fn go_duration(text: &str) -> anyhow::Result<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        bail!("empty duration");
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| format!("missing unit in duration {text:?}"))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num
            .parse()
            .with_context(|| format!("invalid duration {text:?}"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => bail!("unknown unit {other:?} in duration {text:?}"),
        };
        total += value * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(total).with_context(|| format!("invalid duration {text:?}"))
}

/// `--collector.<name>` (true) or `--no-collector.<name>` (false).
pub type Toggle = (String, bool);

/// Whether `name` is a collector a `--collector.<name>` flag toggles.
fn is_collector(name: &str, extra: &[ExtraCollector]) -> bool {
    COLLECTORS.iter().any(|c| c.name == name)
        || extra.iter().any(|c| c.name == name)
        || NODE_EXPORTER_COLLECTORS.iter().any(|(n, _)| *n == name)
}

/// Rewrites node_exporter's (kingpin's) command line into what clap parses:
/// - pulls `--collector.<name>[=bool]` / `--no-collector.<name>` out (clap can't derive
///   flags from a runtime table);
/// - turns `--no-<flag>` into `--<flag>=false` for every boolean flag in `bool_flags`
///   (kingpin gives every boolean flag a negated form);
/// - maps `--help-long` and `--help-man` to `--help`.
pub fn preprocess_args(
    args: Vec<OsString>,
    extra: &[ExtraCollector],
    bool_flags: &[String],
) -> anyhow::Result<(Vec<OsString>, Vec<Toggle>)> {
    let mut rest = Vec::with_capacity(args.len());
    let mut toggles = Vec::new();
    let mut flags_ended = false;
    for (i, arg) in args.into_iter().enumerate() {
        let Some(text) = arg.to_str().filter(|_| i > 0 && !flags_ended) else {
            rest.push(arg);
            continue;
        };
        if text == "--" {
            flags_ended = true;
            rest.push(arg);
            continue;
        }
        if text == "--help-long" || text == "--help-man" {
            rest.push("--help".into());
            continue;
        }
        let (negated, body) = if let Some(body) = text.strip_prefix("--no-") {
            (true, body)
        } else if let Some(body) = text.strip_prefix("--") {
            (false, body)
        } else {
            rest.push(arg);
            continue;
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if let Some(collector) = name
            .strip_prefix("collector.")
            .filter(|c| is_collector(c, extra))
        {
            let on = match (negated, value) {
                (false, None) => true,
                (true, None) => false,
                (false, Some(v)) => parse_bool(v)
                    .with_context(|| format!("--collector.{collector}: invalid value {v:?}"))?,
                (true, Some(_)) => bail!("--no-collector.{collector} takes no value"),
            };
            toggles.push((collector.to_string(), on));
        } else if negated {
            if value.is_some() || !bool_flags.iter().any(|f| f == name) {
                bail!("unknown flag --no-{body}");
            }
            rest.push(format!("--{name}=false").into());
        } else {
            rest.push(arg);
        }
    }
    Ok((rest, toggles))
}

/// kingpin's (strconv.ParseBool's) spellings.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A listen address as Go's `net.Listen("tcp", addr)` takes it: `:9100` and
/// `0.0.0.0:9100` / `[::]:9100` listen on every address (both families), `[10.0.0.1]:9100`
/// (the Helm chart's `[$(HOST_IP)]:9100`), `[fe80::1%eth0]:9100`, and host names (the
/// first IPv4 address they resolve to, else the first address, as Go picks).
pub fn parse_listen_address(text: &str) -> anyhow::Result<SocketAddr> {
    let (host, port) = text.rsplit_once(':').with_context(|| {
        format!("invalid listen address {text:?}: missing port (expected host:port or :port)")
    })?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("invalid port in listen address {text:?}"))?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .with_context(|| format!("invalid listen address {text:?}: missing ']'"))?,
        None if host.contains(':') => {
            bail!("invalid listen address {text:?}: an IPv6 address needs brackets")
        }
        None => host,
    };
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
    }
    if let Some((addr, zone)) = host.split_once('%') {
        let ip: Ipv6Addr = addr
            .parse()
            .with_context(|| format!("invalid IPv6 address in listen address {text:?}"))?;
        let scope = match zone.parse::<u32>() {
            Ok(n) => n,
            Err(_) => nix::net::if_::if_nametoindex(zone).with_context(|| {
                format!("unknown interface {zone:?} in listen address {text:?}")
            })?,
        };
        return Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        // Go listens on both families for a literal unspecified address too.
        if ip.is_unspecified() {
            return Ok(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)));
        }
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve host {host:?} of listen address {text:?}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .with_context(|| format!("host {host:?} of listen address {text:?} has no address"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_forms_of_go() {
        let p = |s: &str| parse_listen_address(s).unwrap();
        assert_eq!(p(":9100"), "[::]:9100".parse().unwrap());
        assert_eq!(p("0.0.0.0:9100"), "[::]:9100".parse().unwrap());
        assert_eq!(p("[::]:9100"), "[::]:9100".parse().unwrap());
        assert_eq!(p("[10.0.0.1]:9100"), "10.0.0.1:9100".parse().unwrap());
        assert_eq!(p("10.0.0.1:9100"), "10.0.0.1:9100".parse().unwrap());
        assert_eq!(p("[::1]:9100"), "[::1]:9100".parse().unwrap());
        assert_eq!(p("localhost:9100"), "127.0.0.1:9100".parse().unwrap());
        assert_eq!(p("[fe80::1%1]:9100"), "[fe80::1%1]:9100".parse().unwrap());
        assert_eq!(
            p("[fe80::1%lo]:9100"),
            "[fe80::1%1]:9100".parse().unwrap(),
            "lo is interface 1"
        );
        for bad in [
            "nonsense",
            "::1:9100",
            "[::1:9100",
            "1.2.3.4:99999",
            "[fe80::1%nosuch0]:1",
        ] {
            assert!(parse_listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1ms").unwrap(), Duration::from_millis(1));
        assert_eq!(
            go_duration("3.46608s").unwrap(),
            Duration::from_secs_f64(3.46608)
        );
        assert_eq!(go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(go_duration("5").is_err());
        assert!(go_duration("5 parsecs").is_err());
    }

    #[test]
    fn kingpin_spellings_are_rewritten() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let bools = vec!["collector.cpu.guest".to_string()];
        let (rest, toggles) = preprocess_args(
            args(&[
                "prog",
                "--no-collector.wifi",
                "--collector.xfs=false",
                "--collector.processes",
                "--no-collector.cpu.guest",
                "--help-long",
                "--collector.textfile.directory=/x",
            ]),
            &[],
            &bools,
        )
        .unwrap();
        assert_eq!(
            toggles,
            vec![
                ("wifi".to_string(), false),
                ("xfs".to_string(), false),
                ("processes".to_string(), true)
            ]
        );
        assert_eq!(
            rest,
            args(&[
                "prog",
                "--collector.cpu.guest=false",
                "--help",
                "--collector.textfile.directory=/x"
            ])
        );
        assert!(preprocess_args(args(&["p", "--no-collector.nosuch"]), &[], &bools).is_err());
        assert!(preprocess_args(args(&["p", "--collector.cpu=maybe"]), &[], &bools).is_err());
    }
}
