//! `arp`: node_arp_entries{device} from /proc/net/arp (node_exporter 1.5.0
//! collector/arp_linux.go), devices filtered by `--collector.arp.device-include` /
//! `-exclude`.
//!
//! Parsed here rather than with procfs-core's `ArpEntries`: that one slices the HW type
//! and flags fields at `[2..]` and panics on a field shorter than two bytes (found by the
//! `procfs` fuzz target), and only the device column is needed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::net::Ipv4Addr;

use super::{BuildContext, Collector, CollectorError, DeviceFilter, MetricSet, read_proc};

pub struct ArpCollector {
    path: PathBuf,
    filter: DeviceFilter,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(ArpCollector {
        path: ctx.paths.proc_net_path("arp"),
        filter: ctx.options.arp_devices.clone(),
    }))
}

impl Collector for ArpCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for (device, count) in count_by_device(&read_proc(&self.path)?)? {
            if self.filter.ignored(&device) {
                continue;
            }
            out.gauge(
                "node_arp_entries",
                "ARP entries by device",
                &[("device", &device)],
                count as f64,
            );
        }
        Ok(())
    }
}

/// Number of ARP table entries (complete or not, as upstream) per device. Like
/// prometheus/procfs (which node_exporter 1.5.0 uses), a row must have six columns.
pub fn count_by_device(text: &str) -> Result<BTreeMap<String, u64>, CollectorError> {
    let bad = |n: usize, why: String| {
        CollectorError::parse("/proc/net/arp", format!("line {}: {why}", n + 1))
    };
    let mut counts = BTreeMap::new();
    // The first line is the header.
    for (n, line) in text.lines().enumerate().skip(1) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        match columns.as_slice() {
            [] => continue,
            [ip, _hw_type, _flags, _hw_address, _mask, device] => {
                ip.parse::<Ipv4Addr>()
                    .map_err(|e| bad(n, format!("IP address {ip:?}: {e}")))?;
                *counts.entry((*device).to_string()).or_insert(0) += 1;
            }
            other => return Err(bad(n, format!("{} columns, expected 6", other.len()))),
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, len, paths, scrape, testdata, value};

    #[test]
    fn counts_entries_per_device() {
        let set = scrape(build, &paths("arp"), &CollectorOptions::default()).unwrap();
        assert_eq!(value(&set, "node_arp_entries", &[("device", "eth0")]), 2.0);
        assert_eq!(value(&set, "node_arp_entries", &[("device", "eth1")]), 1.0);
        assert_eq!(len(&set, "node_arp_entries"), 2);
        assert_eq!(help(&set, "node_arp_entries"), "ARP entries by device");
    }

    #[test]
    fn empty_table_and_bad_input() {
        let header =
            "IP address       HW type     Flags       HW address            Mask     Device\n";
        assert!(count_by_device(header).unwrap().is_empty());
        let err = count_by_device(&format!("{header}192.0.2.1 0x1 0x2\n")).unwrap_err();
        assert!(err.to_string().contains("/proc/net/arp"), "{err}");
        assert!(
            count_by_device(&format!(
                "{header}not-an-ip 0x1 0x2 00:00:00:00:00:00 * eth0\n"
            ))
            .is_err()
        );
        // The fuzzer's input: procfs-core panicked on a one-byte HW type field.
        let short = format!("{header}10.0.0.1 = 0x1 $ A0x eth0\n");
        assert_eq!(count_by_device(&short).unwrap()["eth0"], 1);
        let seven = format!("{header}10.0.0.1 0x1 0x2 00:00:00:00:00:00 * eth0 x\n");
        assert!(count_by_device(&seven).is_err());
        let mut p = paths("arp");
        p.proc = testdata("arp").join("missing");
        assert!(scrape(build, &p, &CollectorOptions::default()).is_err());
    }

    #[test]
    fn device_filters_apply() {
        let only_eth1 = CollectorOptions {
            arp_devices: crate::DeviceFilter {
                exclude: None,
                include: Some(regex::Regex::new("^eth1$").unwrap()),
            },
            ..CollectorOptions::default()
        };
        let set = scrape(build, &paths("arp"), &only_eth1).unwrap();
        assert_eq!(len(&set, "node_arp_entries"), 1);
        assert_eq!(value(&set, "node_arp_entries", &[("device", "eth1")]), 1.0);
        let not_eth1 = CollectorOptions {
            arp_devices: crate::DeviceFilter {
                exclude: Some(regex::Regex::new("^eth1$").unwrap()),
                include: None,
            },
            ..CollectorOptions::default()
        };
        let set = scrape(build, &paths("arp"), &not_eth1).unwrap();
        assert_eq!(len(&set, "node_arp_entries"), 1);
        assert_eq!(value(&set, "node_arp_entries", &[("device", "eth0")]), 2.0);
    }
}
