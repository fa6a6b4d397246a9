//! `netdev`: node_network_{receive,transmit}_*_total per interface (node_exporter 1.5.0
//! collector/netdev_linux.go, netdev_common.go).
//!
//! node_exporter 1.5.0 reads rtnetlink by default and folds the link stats back into the
//! /proc/net/dev names (drop = dropped + missed, frame = frame + length + over + crc,
//! carrier = carrier + aborted + heartbeat + window) — exactly what the kernel already
//! prints in /proc/net/dev. So we read that file and add `receive_nohandler` from
//! /sys/class/net/<dev>/statistics/rx_nohandler, giving the netlink-mode name set.

use std::path::PathBuf;

use super::{
    BuildContext, Collector, CollectorError, DeviceFilter, MetricSet, procfile, read_proc,
};

/// /proc/net/dev columns after the interface name, as node_exporter names them.
const FIELDS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// Metric name and help per field, built once.
struct Desc {
    name: String,
    help: String,
}

fn desc(field: &str) -> Desc {
    Desc {
        name: format!("node_network_{field}_total"),
        help: format!("Network device statistic {field}."),
    }
}

pub struct NetdevCollector {
    path: PathBuf,
    class_net: PathBuf,
    filter: DeviceFilter,
    descs: Vec<Desc>,
    nohandler: Desc,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(NetdevCollector {
        path: ctx.paths.proc_net_path("dev"),
        class_net: ctx.paths.sys_path("class/net"),
        filter: ctx.options.netdev_devices.clone(),
        descs: FIELDS.iter().map(|f| desc(f)).collect(),
        nohandler: desc("receive_nohandler"),
    }))
}

impl Collector for NetdevCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = read_proc(&self.path)?;
        // Listing the class directory lets the kept rx_nohandler files of a renamed
        // interface be forgotten (see procfile); it fails when sysfs is not mounted.
        let _ = procfile::list_dir(&self.class_net);
        for (dev, values) in parse_net_dev(&text)? {
            if self.filter.ignored(dev) {
                continue;
            }
            let labels = [("device", dev)];
            for (d, v) in self.descs.iter().zip(values) {
                out.counter(&d.name, &d.help, &labels, v as f64);
            }
            // Only present when sysfs shows this network namespace's devices.
            let path = self.class_net.join(dev).join("statistics/rx_nohandler");
            if let Ok(s) = read_proc(&path) {
                match s.trim().parse::<u64>() {
                    Ok(v) => out.counter(
                        &self.nohandler.name,
                        &self.nohandler.help,
                        &labels,
                        v as f64,
                    ),
                    Err(e) => {
                        return Err(CollectorError::parse(
                            path.display().to_string(),
                            format!("{s:?}: {e}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Parses /proc/net/dev. Hand-parsed because procfs splits on whitespace, but the kernel
/// prints `eth0:12345678901` with no space once the byte counter is wide enough.
pub fn parse_net_dev(text: &str) -> Result<Vec<(&str, [u64; 16])>, CollectorError> {
    let mut devices = Vec::new();
    // Two header lines.
    for line in super::lines(text).skip(2).filter(|l| !l.trim().is_empty()) {
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| CollectorError::parse("/proc/net/dev", format!("no ':' in {line:?}")))?;
        let mut values = [0u64; 16];
        let mut fields = rest.split_whitespace();
        for v in &mut values {
            let f = fields.next().ok_or_else(|| {
                CollectorError::parse("/proc/net/dev", format!("fewer than 16 values in {line:?}"))
            })?;
            *v = f.parse().map_err(|e| {
                CollectorError::parse("/proc/net/dev", format!("{f:?} in {line:?}: {e}"))
            })?;
        }
        devices.push((name.trim(), values));
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;
    use regex::Regex;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, kind, len, names, paths, scrape, testdata, value};

    #[test]
    fn emits_netlink_mode_names() {
        let set = scrape(build, &paths("netdev"), &CollectorOptions::default()).unwrap();
        let eth0 = [("device", "eth0")];
        assert_eq!(
            value(&set, "node_network_receive_bytes_total", &eth0),
            12345678901.0
        );
        assert_eq!(value(&set, "node_network_receive_drop_total", &eth0), 4.0);
        assert_eq!(
            value(&set, "node_network_transmit_carrier_total", &eth0),
            15.0
        );
        assert_eq!(
            value(&set, "node_network_transmit_compressed_total", &eth0),
            16.0
        );
        assert_eq!(
            value(&set, "node_network_receive_nohandler_total", &eth0),
            42.0
        );
        assert_eq!(
            kind(&set, "node_network_receive_nohandler_total"),
            MetricType::COUNTER
        );
        assert_eq!(
            help(&set, "node_network_receive_frame_total"),
            "Network device statistic receive_frame."
        );
        // lo has no sysfs statistics dir in the fixture: no nohandler sample for it.
        assert_eq!(len(&set, "node_network_receive_nohandler_total"), 1);
        assert_eq!(len(&set, "node_network_receive_bytes_total"), 2);
        assert_eq!(names(&set).len(), 17);
    }

    #[test]
    fn include_and_exclude_filters() {
        let options = CollectorOptions {
            netdev_devices: DeviceFilter {
                exclude: Some(Regex::new("^lo$").unwrap()),
                include: None,
            },
            ..CollectorOptions::default()
        };
        let set = scrape(build, &paths("netdev"), &options).unwrap();
        assert_eq!(len(&set, "node_network_receive_bytes_total"), 1);
        let options = CollectorOptions {
            netdev_devices: DeviceFilter {
                exclude: None,
                include: Some(Regex::new("^lo$").unwrap()),
            },
            ..CollectorOptions::default()
        };
        let set = scrape(build, &paths("netdev"), &options).unwrap();
        assert_eq!(
            value(
                &set,
                "node_network_transmit_bytes_total",
                &[("device", "lo")]
            ),
            74297.0
        );
        assert_eq!(len(&set, "node_network_receive_bytes_total"), 1);
    }

    #[test]
    fn bad_input_is_an_error() {
        let head = "h1\nh2\n";
        assert!(parse_net_dev(&format!("{head}  eth0: 1 2 3\n")).is_err());
        assert!(parse_net_dev(&format!("{head}  eth0 1 2 3\n")).is_err());
        let err = parse_net_dev(&format!(
            "{head}eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 x\n"
        ))
        .unwrap_err();
        assert!(err.to_string().contains("/proc/net/dev"), "{err}");
        let mut p = paths("netdev");
        p.proc = testdata("netdev").join("missing");
        assert!(scrape(build, &p, &CollectorOptions::default()).is_err());
    }
}
