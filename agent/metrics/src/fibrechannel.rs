//! `fibrechannel`: FC HBA ports from /sys/class/fc_host/<host> (node_exporter 1.5.0
//! collector/fibrechannel_linux.go over procfs' `FibreChannelClass`): an info series of
//! the port attributes and counters from `statistics/` (hex in sysfs). A counter equal to
//! 2^64-1 is one the HBA firmware does not implement and is left out, as there.
//!
//! Difference: an attribute the driver does not expose gives an empty label here, where
//! 1.5.0 fails the whole collector (fixed upstream later, node_exporter#2919).

use std::path::{Path, PathBuf};

use super::sysattr::{parse_uint_base0, read_string, sorted_entries};
use super::{BuildContext, Collector, CollectorError, MetricSet};

/// Info labels, in node_exporter's order, and whether sysfs prefixes the value with `0x`.
const INFO: &[(&str, bool)] = &[
    ("speed", false),
    ("port_state", false),
    ("port_type", false),
    ("port_id", true),
    ("port_name", true),
    ("fabric_name", true),
    ("symbolic_name", false),
    ("supported_classes", false),
    ("supported_speeds", false),
    ("dev_loss_tmo", false),
];

/// (statistics file, family suffix, HELP).
const COUNTERS: &[(&str, &str, &str)] = &[
    (
        "dumped_frames",
        "dumped_frames_total",
        "Number of dumped frames",
    ),
    (
        "error_frames",
        "error_frames_total",
        "Number of errors in frames",
    ),
    (
        "invalid_crc_count",
        "invalid_crc_total",
        "Invalid Cyclic Redundancy Check count",
    ),
    ("rx_frames", "rx_frames_total", "Number of frames received"),
    (
        "rx_words",
        "rx_words_total",
        "Number of words received by host port",
    ),
    (
        "tx_frames",
        "tx_frames_total",
        "Number of frames transmitted by host port",
    ),
    (
        "tx_words",
        "tx_words_total",
        "Number of words transmitted by host port",
    ),
    (
        "seconds_since_last_reset",
        "seconds_since_last_reset_total",
        "Number of seconds since last host port reset",
    ),
    (
        "invalid_tx_word_count",
        "invalid_tx_words_total",
        "Number of invalid words transmitted by host port",
    ),
    (
        "link_failure_count",
        "link_failure_total",
        "Number of times the host port link has failed",
    ),
    (
        "loss_of_sync_count",
        "loss_of_sync_total",
        "Number of failures on either bit or transmission word boundaries",
    ),
    (
        "loss_of_signal_count",
        "loss_of_signal_total",
        "Number of times signal has been lost",
    ),
    (
        "nos_count",
        "nos_total",
        "Number Not_Operational Primitive Sequence received by host port",
    ),
    (
        "fcp_packet_aborts",
        "fcp_packet_aborts_total",
        "Number of aborted packets",
    ),
];

#[derive(Debug, Clone, PartialEq)]
pub struct FcHost {
    pub name: String,
    /// Values of [`INFO`], in order.
    pub info: Vec<String>,
    /// Values of [`COUNTERS`], in order (0 when the file is absent).
    pub counters: Vec<u64>,
}

pub struct FibreChannelCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(FibreChannelCollector {
        dir: ctx.paths.sys_path("class/fc_host"),
    }))
}

fn read_host(dir: &Path, name: &str) -> Result<FcHost, CollectorError> {
    let path = dir.join(name);
    let mut info = Vec::with_capacity(INFO.len());
    for &(attr, hex) in INFO {
        let value = match read_string(&path.join(attr)) {
            Err(e) if e.is_not_found() => String::new(),
            other => other?,
        };
        let value = match value.get(2..) {
            Some(rest) if hex && value.len() > 2 => rest.to_string(),
            _ => value,
        };
        info.push(value);
    }
    let stats = path.join("statistics");
    let Some(files) = sorted_entries(&stats)? else {
        return Err(CollectorError::NoData);
    };
    let mut counters = vec![0; COUNTERS.len()];
    for file in files {
        let Some(i) = COUNTERS.iter().position(|(f, _, _)| *f == file) else {
            continue;
        };
        let fpath = stats.join(&file);
        if !std::fs::metadata(&fpath).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let text = match read_string(&fpath) {
            // Write-only or unsupported attributes are skipped, as procfs does.
            Err(CollectorError::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL)
                ) =>
            {
                continue;
            }
            other => other?,
        };
        counters[i] = parse_uint_base0(&text)
            .map_err(|e| CollectorError::parse(fpath.display().to_string(), e))?;
    }
    Ok(FcHost {
        name: name.to_string(),
        info,
        counters,
    })
}

/// Every host of the fc_host class, by name; `NoData` when there is none.
pub fn read_fc_hosts(dir: &Path) -> Result<Vec<FcHost>, CollectorError> {
    let Some(names) = sorted_entries(dir)? else {
        return Err(CollectorError::NoData);
    };
    names.iter().map(|n| read_host(dir, n)).collect()
}

impl Collector for FibreChannelCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let mut name = String::with_capacity(64);
        for host in read_fc_hosts(&self.dir)? {
            let mut labels: Vec<(&str, &str)> = vec![("fc_host", &host.name)];
            labels.extend(
                INFO.iter()
                    .map(|(l, _)| *l)
                    .zip(host.info.iter().map(String::as_str)),
            );
            out.gauge(
                "node_fibrechannel_info",
                "Non-numeric data from /sys/class/fc_host/<host>, value is always 1.",
                &labels,
                1.0,
            );
            for (&(_, suffix, help), &v) in COUNTERS.iter().zip(&host.counters) {
                if v == u64::MAX {
                    continue;
                }
                name.clear();
                name.push_str("node_fibrechannel_");
                name.push_str(suffix);
                out.counter(&name, help, &[("fc_host", &host.name)], v as f64);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter, paths, scrape, try_value, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "fibrechannel",
            build,
            &paths("fibrechannel"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn unimplemented_counters_are_left_out() {
        let set = scrape(build, &paths("fibrechannel"), &CollectorOptions::default()).unwrap();
        let host1 = [("fc_host", "host1")];
        assert_eq!(
            try_value(&set, "node_fibrechannel_dumped_frames_total", &host1),
            None
        );
        assert_eq!(
            value(&set, "node_fibrechannel_rx_words_total", &host1),
            (u64::MAX - 1) as f64
        );
        assert_eq!(
            value(&set, "node_fibrechannel_tx_frames_total", &host1),
            42.0,
            "decimal too"
        );
    }

    #[test]
    fn missing_attributes_counters_and_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host7");
        std::fs::create_dir_all(host.join("statistics")).unwrap();
        std::fs::write(host.join("port_name"), "0x10\n").unwrap();
        std::fs::write(host.join("statistics/tx_words"), "0x11\n").unwrap();
        let hosts = read_fc_hosts(dir.path()).unwrap();
        assert_eq!(hosts[0].info[4], "10");
        assert_eq!(hosts[0].info[0], "", "absent speed");
        assert_eq!(hosts[0].counters[6], 17);
        assert_eq!(hosts[0].counters[0], 0, "absent counter");
        std::fs::write(host.join("statistics/rx_words"), "zz\n").unwrap();
        assert!(matches!(
            read_fc_hosts(dir.path()),
            Err(CollectorError::Parse { .. })
        ));
        std::fs::remove_dir_all(host.join("statistics")).unwrap();
        assert!(matches!(
            read_fc_hosts(dir.path()),
            Err(CollectorError::NoData)
        ));
        assert!(matches!(
            read_fc_hosts(&dir.path().join("none")),
            Err(CollectorError::NoData)
        ));
    }

    #[test]
    fn go_base0_integers() {
        assert_eq!(parse_uint_base0("0x1A"), Ok(26));
        assert_eq!(parse_uint_base0("017"), Ok(15));
        assert_eq!(parse_uint_base0("0"), Ok(0));
        assert_eq!(parse_uint_base0("0xffffffffffffffff"), Ok(u64::MAX));
        assert!(parse_uint_base0("0x").is_err());
        assert!(parse_uint_base0("-1").is_err());
        assert!(parse_uint_base0("+1").is_err());
    }
}
