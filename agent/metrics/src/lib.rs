//! node_exporter-compatible metrics: an explicit table of collectors, each reading the host
//! through [`HostPaths`], wrapped with per-collector success and duration.

pub mod config;
pub mod exposition;
pub mod family;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod http;
pub mod process;
pub mod procfile;
pub mod status;
pub mod telemetry;
pub mod webconfig;

pub mod arp;
pub mod bcache;
pub mod bonding;
pub mod btrfs;
pub mod conntrack;
pub mod cpu;
pub mod cpufreq;
pub mod diskstats;
pub mod dmi;
pub mod edac;
pub mod entropy;
pub mod fibrechannel;
pub mod filefd;
pub mod filesystem;
pub mod hwmon;
pub mod infiniband;
pub mod interrupts;
pub mod ipvs;
pub mod loadavg;
pub mod mdadm;
pub mod meminfo;
pub mod meminfo_numa;
pub mod mountstats;
pub mod netclass;
pub mod netdev;
pub mod netstat;
pub mod nfs;
pub mod nfsd;
pub mod nvme;
pub mod os;
pub mod powersupplyclass;
pub mod pressure;
pub mod processes;
pub mod rapl;
pub mod schedstat;
pub mod selinux;
pub mod sockstat;
pub mod softnet;
pub mod stat;
pub(crate) mod sysattr;
pub mod sysctl;
pub mod systemd;
pub mod tapestats;
pub mod tcpstat;
pub mod textfile;
pub mod thermal_zone;
pub mod time;
pub mod timex;
pub mod udp_queues;
pub mod uname;
pub mod vmstat;
pub mod watchdog;
pub mod xfs;
pub mod zfs;

use std::time::{Duration, Instant};

pub use family::MetricSet;
pub use procfile::read_proc;
use prometheus::proto::MetricFamily;

use node_agent_core::host::HostPaths;

/// Why a collector produced no (or partial) data. `NoData` is expected on hosts that lack
/// a feature (logged at debug), everything else is an error (logged at error), as in
/// node_exporter's `ErrNoData` handling. Either way the scrape goes on.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("no data")]
    NoData,
    #[error("reading {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error("{0}")]
    Other(String),
}

impl CollectorError {
    /// An I/O error with the path that caused it.
    pub fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A parse error: `what` names the file or field, `detail` says what was wrong.
    pub fn parse(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::Parse {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// True when the file simply does not exist (feature absent on this host).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Parses a sample value as Go's `strconv.ParseFloat` would. procfs counters are integers,
/// and an integer parse is several times cheaper than a float parse, so try that first.
pub fn parse_number(text: &str) -> Result<f64, std::num::ParseFloatError> {
    match text.parse::<i64>() {
        Ok(v) => Ok(v as f64),
        Err(_) => text.parse::<f64>(),
    }
}

/// The lines of a procfs file, as `str::lines` splits them (a `\r` before a `\n` is
/// dropped, no empty line after a final newline), with memchr's vectorised newline search:
/// std's char search was 7 % of a scrape's instructions, over ~2,000 short lines.
pub fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let line = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => {
                // `i` is a newline byte, so both slices end on character boundaries.
                let (line, next) = (&rest[..i], &rest[i + 1..]);
                rest = next;
                line.strip_suffix('\r').unwrap_or(line)
            }
            None => std::mem::take(&mut rest),
        };
        Some(line)
    })
}

/// node_exporter's device filter (collector/device_filter.go): a device is ignored when it
/// matches the exclude regex or fails the include regex.
#[derive(Debug, Clone, Default)]
pub struct DeviceFilter {
    pub exclude: Option<regex::Regex>,
    pub include: Option<regex::Regex>,
}

impl DeviceFilter {
    pub fn ignored(&self, device: &str) -> bool {
        self.exclude.as_ref().is_some_and(|r| r.is_match(device))
            || self.include.as_ref().is_some_and(|r| !r.is_match(device))
    }
}

/// Options of individual collectors (node_exporter's `--collector.<name>.<option>` flags).
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    pub textfile_directory: String,
    pub fs_mount_points_exclude: regex::Regex,
    pub fs_types_exclude: regex::Regex,
    pub fs_mount_timeout: Duration,
    pub diskstats_device_exclude: regex::Regex,
    /// `--collector.netdev.device-exclude` / `-include`.
    pub netdev_devices: DeviceFilter,
    /// `--collector.arp.device-exclude` / `-include`.
    pub arp_devices: DeviceFilter,
    /// `--collector.powersupply.ignored-supplies`.
    pub powersupply_ignored: regex::Regex,
    pub netclass_ignored_devices: regex::Regex,
    pub netclass_ignore_invalid_speed: bool,
    pub netstat_fields: regex::Regex,
    pub vmstat_fields: regex::Regex,
    pub cpu_guest: bool,
    /// `--collector.cpu.info` and its flag/bug include regexes.
    pub cpu_info: bool,
    pub cpu_flags_include: Option<regex::Regex>,
    pub cpu_bugs_include: Option<regex::Regex>,
    /// Options of the collectors added after the 1.5.0 core set (see [`config::MoreArgs`]).
    pub more: config::MoreOptions,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        let re = |p: &str| regex::Regex::new(p).expect("built-in default regex is valid");
        Self {
            textfile_directory: String::new(),
            fs_mount_points_exclude: re(filesystem::DEFAULT_MOUNT_POINTS_EXCLUDE),
            fs_types_exclude: re(filesystem::DEFAULT_FS_TYPES_EXCLUDE),
            fs_mount_timeout: Duration::from_secs(5),
            diskstats_device_exclude: re(diskstats::DEFAULT_DEVICE_EXCLUDE),
            netdev_devices: DeviceFilter::default(),
            arp_devices: DeviceFilter::default(),
            powersupply_ignored: re("^$"),
            netclass_ignored_devices: re("^$"),
            netclass_ignore_invalid_speed: false,
            netstat_fields: re(netstat::DEFAULT_FIELDS),
            vmstat_fields: re(vmstat::DEFAULT_FIELDS),
            cpu_guest: true,
            cpu_info: false,
            cpu_flags_include: None,
            cpu_bugs_include: None,
            more: config::MoreOptions::default(),
        }
    }
}

/// What a collector is built from.
pub struct BuildContext<'a> {
    pub paths: &'a HostPaths,
    pub options: &'a CollectorOptions,
}

/// One node_exporter collector. `update` appends its families to `out`; it may keep state
/// between scrapes (e.g. cpu's monotonic counters) behind interior mutability.
pub trait Collector: Send + Sync {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError>;
}

/// What building a collector gives: the collector, or why it cannot run here.
pub type BuiltCollector = Result<Box<dyn Collector>, CollectorError>;

/// A row of the collector table.
pub struct CollectorSpec {
    pub name: &'static str,
    pub default_enabled: bool,
    pub build: fn(&BuildContext<'_>) -> BuiltCollector,
}

/// Every collector, in node_exporter's naming; `--collector.<name>` toggles them.
pub static COLLECTORS: &[CollectorSpec] = &[
    CollectorSpec {
        name: "arp",
        default_enabled: true,
        build: arp::build,
    },
    CollectorSpec {
        name: "bonding",
        default_enabled: true,
        build: bonding::build,
    },
    CollectorSpec {
        name: "conntrack",
        default_enabled: true,
        build: conntrack::build,
    },
    CollectorSpec {
        name: "cpu",
        default_enabled: true,
        build: cpu::build,
    },
    CollectorSpec {
        name: "cpufreq",
        default_enabled: true,
        build: cpufreq::build,
    },
    CollectorSpec {
        name: "diskstats",
        default_enabled: true,
        build: diskstats::build,
    },
    CollectorSpec {
        name: "entropy",
        default_enabled: true,
        build: entropy::build,
    },
    CollectorSpec {
        name: "filefd",
        default_enabled: true,
        build: filefd::build,
    },
    CollectorSpec {
        name: "filesystem",
        default_enabled: true,
        build: filesystem::build,
    },
    CollectorSpec {
        name: "hwmon",
        default_enabled: true,
        build: hwmon::build,
    },
    CollectorSpec {
        name: "loadavg",
        default_enabled: true,
        build: loadavg::build,
    },
    CollectorSpec {
        name: "mdadm",
        default_enabled: true,
        build: mdadm::build,
    },
    CollectorSpec {
        name: "meminfo",
        default_enabled: true,
        build: meminfo::build,
    },
    CollectorSpec {
        name: "netclass",
        default_enabled: true,
        build: netclass::build,
    },
    CollectorSpec {
        name: "netdev",
        default_enabled: true,
        build: netdev::build,
    },
    CollectorSpec {
        name: "netstat",
        default_enabled: true,
        build: netstat::build,
    },
    CollectorSpec {
        name: "os",
        default_enabled: true,
        build: os::build,
    },
    CollectorSpec {
        name: "powersupplyclass",
        default_enabled: true,
        build: powersupplyclass::build,
    },
    CollectorSpec {
        name: "pressure",
        default_enabled: true,
        build: pressure::build,
    },
    CollectorSpec {
        name: "schedstat",
        default_enabled: true,
        build: schedstat::build,
    },
    CollectorSpec {
        name: "selinux",
        default_enabled: true,
        build: selinux::build,
    },
    CollectorSpec {
        name: "sockstat",
        default_enabled: true,
        build: sockstat::build,
    },
    CollectorSpec {
        name: "softnet",
        default_enabled: true,
        build: softnet::build,
    },
    CollectorSpec {
        name: "stat",
        default_enabled: true,
        build: stat::build,
    },
    CollectorSpec {
        name: "textfile",
        default_enabled: true,
        build: textfile::build,
    },
    CollectorSpec {
        name: "thermal_zone",
        default_enabled: true,
        build: thermal_zone::build,
    },
    CollectorSpec {
        name: "time",
        default_enabled: true,
        build: time::build,
    },
    CollectorSpec {
        name: "timex",
        default_enabled: true,
        build: timex::build,
    },
    CollectorSpec {
        name: "udp_queues",
        default_enabled: true,
        build: udp_queues::build,
    },
    CollectorSpec {
        name: "uname",
        default_enabled: true,
        build: uname::build,
    },
    CollectorSpec {
        name: "vmstat",
        default_enabled: true,
        build: vmstat::build,
    },
    CollectorSpec {
        name: "xfs",
        default_enabled: true,
        build: xfs::build,
    },
    CollectorSpec {
        name: "ipvs",
        default_enabled: true,
        build: ipvs::build,
    },
    CollectorSpec {
        name: "nfs",
        default_enabled: true,
        build: nfs::build,
    },
    CollectorSpec {
        name: "nfsd",
        default_enabled: true,
        build: nfsd::build,
    },
    CollectorSpec {
        name: "nvme",
        default_enabled: true,
        build: nvme::build,
    },
    CollectorSpec {
        name: "edac",
        default_enabled: true,
        build: edac::build,
    },
    CollectorSpec {
        name: "dmi",
        default_enabled: true,
        build: dmi::build,
    },
    CollectorSpec {
        name: "rapl",
        default_enabled: true,
        build: rapl::build,
    },
    CollectorSpec {
        name: "fibrechannel",
        default_enabled: true,
        build: fibrechannel::build,
    },
    CollectorSpec {
        name: "infiniband",
        default_enabled: true,
        build: infiniband::build,
    },
    CollectorSpec {
        name: "tapestats",
        default_enabled: true,
        build: tapestats::build,
    },
    CollectorSpec {
        name: "bcache",
        default_enabled: true,
        build: bcache::build,
    },
    CollectorSpec {
        name: "btrfs",
        default_enabled: true,
        build: btrfs::build,
    },
    CollectorSpec {
        name: "zfs",
        default_enabled: true,
        build: zfs::build,
    },
    CollectorSpec {
        name: "interrupts",
        default_enabled: false,
        build: interrupts::build,
    },
    CollectorSpec {
        name: "processes",
        default_enabled: false,
        build: processes::build,
    },
    CollectorSpec {
        name: "tcpstat",
        default_enabled: false,
        build: tcpstat::build,
    },
    CollectorSpec {
        name: "meminfo_numa",
        default_enabled: false,
        build: meminfo_numa::build,
    },
    CollectorSpec {
        name: "sysctl",
        default_enabled: false,
        build: sysctl::build,
    },
    CollectorSpec {
        name: "systemd",
        default_enabled: false,
        build: systemd::build,
    },
    CollectorSpec {
        name: "watchdog",
        default_enabled: false,
        build: watchdog::build,
    },
    CollectorSpec {
        name: "mountstats",
        default_enabled: false,
        build: mountstats::build,
    },
];

/// The enabled collectors, built once at start-up.
pub struct NodeCollectors {
    collectors: Vec<(&'static str, Box<dyn Collector>)>,
}

impl NodeCollectors {
    /// Builds the named collectors of [`COLLECTORS`]; one that fails to build is logged and
    /// left out, so a host quirk never stops the agent.
    pub fn build<'a>(names: impl IntoIterator<Item = &'a str>, ctx: &BuildContext<'_>) -> Self {
        Self::build_with(names, ctx, Vec::new())
    }

    /// [`Self::build`] plus collectors other subsystems built (e.g. the eBPF syscalls
    /// collector, registered by `app`), each with the result of building it.
    pub fn build_with<'a>(
        names: impl IntoIterator<Item = &'a str>,
        ctx: &BuildContext<'_>,
        extra: Vec<(&'static str, BuiltCollector)>,
    ) -> Self {
        let mut collectors = Vec::new();
        let mut add = |name: &'static str, built: BuiltCollector| match built {
            Ok(c) => collectors.push((name, c)),
            Err(err) => {
                tracing::error!(collector = name, error = %err, "collector disabled: cannot build")
            }
        };
        for name in names {
            let Some(spec) = COLLECTORS.iter().find(|c| c.name == name) else {
                tracing::error!(collector = name, "unknown collector");
                continue;
            };
            add(spec.name, (spec.build)(ctx));
        }
        for (name, built) in extra {
            add(name, built);
        }
        collectors.sort_by_key(|(name, _)| *name);
        tracing::info!(collectors = ?collectors.iter().map(|(n, _)| *n).collect::<Vec<_>>(), "enabled collectors");
        Self { collectors }
    }

    /// Names of the collectors that were built.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.collectors.iter().map(|(n, _)| *n)
    }

    /// Runs the collectors (all, or those in `only`), appending their families plus
    /// `node_scrape_collector_{success,duration_seconds}` and, for collectors that found no
    /// data, `node_agent_collector_no_data`.
    pub fn collect(&self, only: Option<&[String]>, out: &mut MetricSet) {
        for (name, collector) in &self.collectors {
            if only.is_some_and(|only| !only.iter().any(|o| o == name)) {
                continue;
            }
            let start = Instant::now();
            let result = collector.update(out);
            let elapsed = start.elapsed().as_secs_f64();
            let (success, no_data) = match result {
                Ok(()) => (1.0, false),
                Err(CollectorError::NoData) => {
                    tracing::debug!(collector = name, "collector returned no data");
                    (0.0, true)
                }
                Err(err) => {
                    tracing::error!(collector = name, duration_seconds = elapsed, error = %err, "collector failed");
                    (0.0, false)
                }
            };
            let labels = [("collector", *name)];
            // success is 0 for NoData as in node_exporter; this tells the two apart so the
            // NodeAgentCollectorFailing alert can skip features this host does not have.
            // Only those collectors get a series (present = 1), keeping the rest quiet.
            if no_data {
                out.gauge(
                    "node_agent_collector_no_data",
                    "Whether a collector's last scrape found nothing to report on this host (feature absent); node_scrape_collector_success is 0 for it too.",
                    &labels,
                    1.0,
                );
            }
            out.gauge(
                "node_scrape_collector_duration_seconds",
                "node_exporter: Duration of a collector scrape.",
                &labels,
                elapsed,
            );
            out.gauge(
                "node_scrape_collector_success",
                "node_exporter: Whether a collector succeeded.",
                &labels,
                success,
            );
        }
        procfile::end_scrape();
    }

    /// Convenience for tests and benchmarks: collect everything into families.
    pub fn gather(&self) -> Vec<MetricFamily> {
        let mut set = MetricSet::new();
        self.collect(None, &mut set);
        set.into_families()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fails(CollectorError);
    impl Collector for Fails {
        fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
            // Partial output before the failure is still served, as in node_exporter.
            out.gauge("node_partial", "Partial.", &[], 1.0);
            Err(match &self.0 {
                CollectorError::NoData => CollectorError::NoData,
                other => CollectorError::Other(other.to_string()),
            })
        }
    }

    fn success(families: &[MetricFamily], collector: &str) -> f64 {
        let f = families
            .iter()
            .find(|f| f.name() == "node_scrape_collector_success")
            .expect("success family");
        f.get_metric()
            .iter()
            .find(|m| m.get_label().iter().any(|l| l.value() == collector))
            .map(|m| m.get_gauge().get_value())
            .expect("series for collector")
    }

    #[test]
    fn a_failing_collector_never_fails_the_scrape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loadavg"), "1 2 3 1/1 1\n").unwrap();
        let paths = HostPaths {
            proc: dir.path().to_path_buf(),
            ..HostPaths::default()
        };
        let options = CollectorOptions::default();
        let mut nc = NodeCollectors::build(
            ["loadavg"],
            &BuildContext {
                paths: &paths,
                options: &options,
            },
        );
        nc.collectors.push((
            "broken",
            Box::new(Fails(CollectorError::Other("boom".into()))),
        ));
        nc.collectors
            .push(("absent", Box::new(Fails(CollectorError::NoData))));
        let families = nc.gather();
        assert_eq!(success(&families, "loadavg"), 1.0);
        assert_eq!(success(&families, "broken"), 0.0);
        assert_eq!(success(&families, "absent"), 0.0);
        // Only the NoData collector is flagged: a real failure must still alert.
        let no_data = families
            .iter()
            .find(|f| f.name() == "node_agent_collector_no_data")
            .expect("no-data family");
        let flagged: Vec<(String, f64)> = no_data
            .get_metric()
            .iter()
            .map(|m| {
                (
                    m.get_label()[0].value().to_string(),
                    m.get_gauge().get_value(),
                )
            })
            .collect();
        assert_eq!(flagged, vec![("absent".to_string(), 1.0)]);
        assert!(families.iter().any(|f| f.name() == "node_load1"));
        assert!(families.iter().any(|f| f.name() == "node_partial"));
        let durations = families
            .iter()
            .find(|f| f.name() == "node_scrape_collector_duration_seconds")
            .unwrap();
        assert_eq!(durations.get_metric().len(), 3);
    }

    #[test]
    fn every_collector_builds_against_an_empty_root() {
        // A host without any of the files must not stop the agent: build never panics and
        // collect only reports failures.
        let dir = tempfile::tempdir().unwrap();
        let paths = HostPaths {
            proc: dir.path().join("proc"),
            sys: dir.path().join("sys"),
            rootfs: dir.path().to_path_buf(),
            udev_data: dir.path().join("udev"),
        };
        let options = CollectorOptions::default();
        let names: Vec<&str> = COLLECTORS.iter().map(|c| c.name).collect();
        let nc = NodeCollectors::build(
            names,
            &BuildContext {
                paths: &paths,
                options: &options,
            },
        );
        let families = nc.gather();
        assert!(
            families
                .iter()
                .any(|f| f.name() == "node_scrape_collector_success")
        );
    }
}

/// The issue-16 collectors on this machine's real /proc and /sys, against node_exporter
/// 1.5.0 with the same collectors: the same families, types and label names (values move
/// between the two scrapes). On a VM most of them find nothing; both must agree on that.
#[cfg(test)]
mod live_host {
    use super::*;
    use crate::fixtures::{node_exporter_raw, node_families, ours, shape, successes};

    /// Issue-16 collectors that read only the host (not tcpstat: node_exporter 1.5.0 uses
    /// sock_diag for it; not mountstats/processes: their series come and go with mounts
    /// and processes).
    const COLLECTORS: &[&str] = &[
        "xfs",
        "ipvs",
        "nfs",
        "nfsd",
        "nvme",
        "edac",
        "dmi",
        "rapl",
        "fibrechannel",
        "infiniband",
        "tapestats",
        "bcache",
        "btrfs",
        "zfs",
        "interrupts",
        "meminfo_numa",
        "watchdog",
    ];

    /// Btrfs's figures (sysfs and the device ioctls) are stable on an idle filesystem, so
    /// on a host with one mounted they must match exactly. Run by hand after mounting a
    /// loop-backed Btrfs (mkfs.btrfs -d raid1 on two loop devices); CI has none, so this
    /// reports SKIPPED there rather than failing.
    #[test]
    fn mounted_btrfs_same_as_node_exporter() {
        let paths = HostPaths::default();
        let mounted = std::fs::read_dir(paths.sys_path("fs/btrfs"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains('-'))
            })
            .unwrap_or(false);
        if !mounted {
            eprintln!("SKIPPED: no Btrfs mounted on this host");
            return;
        }
        crate::fixtures::assert_same_as_node_exporter(
            "btrfs",
            btrfs::build,
            &paths,
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn same_shape_as_node_exporter_on_this_host() {
        let paths = HostPaths::default();
        // watchdog is not in 1.5.0: compared for the rest only.
        let theirs_list: Vec<&str> = COLLECTORS
            .iter()
            .copied()
            .filter(|c| *c != "watchdog")
            .collect();
        let Some(raw) = node_exporter_raw(&paths, &theirs_list, &[]) else {
            return;
        };
        let options = CollectorOptions::default();
        let nc = NodeCollectors::build(
            theirs_list.iter().copied(),
            &BuildContext {
                paths: &paths,
                options: &options,
            },
        );
        let mut set = MetricSet::new();
        nc.collect(None, &mut set);
        let mut text = Vec::new();
        set.encode_text(&mut text);
        let text = String::from_utf8(text).unwrap();
        // Which collectors found data (NoData and errors are 0) must agree too.
        assert_eq!(successes(&text), successes(&raw));
        let ours = ours(&mut set);
        let (ours, theirs) = (shape(&ours), shape(&node_families(&raw)));
        let only_theirs: Vec<_> = theirs.difference(&ours).collect();
        let only_ours: Vec<_> = ours.difference(&theirs).collect();
        assert!(
            only_theirs.is_empty() && only_ours.is_empty(),
            "only node_exporter: {only_theirs:#?}\nonly ours: {only_ours:#?}"
        );
    }
}

#[cfg(test)]
mod lines_tests {
    #[test]
    fn lines_split_as_std_does() {
        for text in [
            "",
            "\n",
            "\n\n",
            "a",
            "a\n",
            "a\nb",
            "a\r\nb\r\n",
            "a\rb\n",
            "a\r",
            "\r\n",
            "x\n\ny\n",
            "é\nü\r\n€",
        ] {
            let ours: Vec<&str> = super::lines(text).collect();
            let std: Vec<&str> = text.lines().collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }
}
