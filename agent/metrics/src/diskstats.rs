//! `diskstats`: node_disk_* from /proc/diskstats plus udev properties
//! (node_exporter 1.5.0 collector/diskstats_linux.go, diskstats_common.go).

use std::collections::HashMap;
use std::path::PathBuf;

use procfs::DiskStat;
use regex::Regex;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// node_exporter 1.5.0 upstream default.
pub const DEFAULT_DEVICE_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

/// /proc/diskstats counts 512-byte sectors whatever the device's block size.
const SECTOR_SIZE: f64 = 512.0;
/// Times in /proc/diskstats are milliseconds.
const SECONDS_PER_TICK: f64 = 0.001;

pub struct DiskstatsCollector {
    path: PathBuf,
    udev_data: PathBuf,
    exclude: Regex,
    /// `--collector.diskstats.device-include`: only matching devices.
    include: Option<Regex>,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(DiskstatsCollector {
        path: ctx.paths.proc_path("diskstats"),
        udev_data: ctx.paths.udev_data.clone(),
        exclude: ctx.options.diskstats_device_exclude.clone(),
        include: ctx.options.more.diskstats_device_include.clone(),
    }))
}

/// How a /proc/diskstats value becomes a sample.
#[derive(Clone, Copy)]
enum Scale {
    Count,
    Sectors,
    Ticks,
}

/// name, help, scale, counter? — in /proc/diskstats field order (fields 4..14).
const BASE: [(&str, &str, Scale, bool); 11] = [
    (
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        Scale::Count,
        true,
    ),
    (
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        Scale::Count,
        true,
    ),
    (
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        Scale::Sectors,
        true,
    ),
    (
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        Scale::Ticks,
        true,
    ),
    (
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        Scale::Count,
        true,
    ),
    (
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        Scale::Count,
        true,
    ),
    (
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        Scale::Sectors,
        true,
    ),
    (
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        Scale::Ticks,
        true,
    ),
    (
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        Scale::Count,
        false,
    ),
    (
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        Scale::Ticks,
        true,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        Scale::Ticks,
        true,
    ),
];

/// Kernel >= 4.18 fields.
const DISCARD: [(&str, &str, Scale); 4] = [
    (
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        Scale::Count,
    ),
    (
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        Scale::Count,
    ),
    (
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        Scale::Count,
    ),
    (
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        Scale::Ticks,
    ),
];

/// Kernel >= 5.5 fields.
const FLUSH: [(&str, &str, Scale); 2] = [
    (
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        Scale::Count,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        Scale::Ticks,
    ),
];

const ATA: [(&str, &str, &str); 3] = [
    (
        "ID_ATA_WRITE_CACHE",
        "node_disk_ata_write_cache",
        "ATA disk has a write cache.",
    ),
    (
        "ID_ATA_WRITE_CACHE_ENABLED",
        "node_disk_ata_write_cache_enabled",
        "ATA disk has its write cache enabled.",
    ),
    (
        "ID_ATA_ROTATION_RATE_RPM",
        "node_disk_ata_rotation_rate_rpm",
        "ATA disk rotation rate in RPMs (0 for SSDs).",
    ),
];

impl Collector for DiskstatsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = read_proc(&self.path)?;
        for stat in parse_diskstats(&text)? {
            if self.exclude.is_match(&stat.name)
                || self
                    .include
                    .as_ref()
                    .is_some_and(|r| !r.is_match(&stat.name))
            {
                continue;
            }
            let udev = read_udev(&self.udev_data, stat.major, stat.minor);
            emit(out, &stat, &udev);
        }
        Ok(())
    }
}

/// Parses /proc/diskstats with procfs-core's line parser; the discard and flush fields are
/// `None` on kernels that do not print them.
pub fn parse_diskstats(text: &str) -> Result<Vec<DiskStat>, CollectorError> {
    super::lines(text)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            DiskStat::from_line(line)
                .map_err(|e| CollectorError::parse("/proc/diskstats", format!("{line:?}: {e}")))
        })
        .collect()
}

fn scaled(v: u64, scale: Scale) -> f64 {
    match scale {
        Scale::Count => v as f64,
        Scale::Sectors => v as f64 * SECTOR_SIZE,
        Scale::Ticks => v as f64 * SECONDS_PER_TICK,
    }
}

fn emit(out: &mut MetricSet, s: &DiskStat, udev: &HashMap<String, String>) {
    let dev = s.name.as_str();
    let labels = [("device", dev)];
    let get = |k: &str| udev.get(k).map(String::as_str).unwrap_or("");
    // node_exporter prefers the SCSI serial and falls back to ID_SERIAL_SHORT.
    let serial = match get("SCSI_IDENT_SERIAL") {
        "" => get("ID_SERIAL_SHORT"),
        s => s,
    };
    let (major, minor) = (s.major.to_string(), s.minor.to_string());
    out.gauge(
        "node_disk_info",
        "Info of /sys/block/<block_device>.",
        &[
            ("device", dev),
            ("major", &major),
            ("minor", &minor),
            ("path", get("ID_PATH")),
            ("wwn", get("ID_WWN")),
            ("model", get("ID_MODEL")),
            ("serial", serial),
            ("revision", get("ID_REVISION")),
        ],
        1.0,
    );

    let base = [
        s.reads,
        s.merged,
        s.sectors_read,
        s.time_reading,
        s.writes,
        s.writes_merged,
        s.sectors_written,
        s.time_writing,
        s.in_progress,
        s.time_in_progress,
        s.weighted_time_in_progress,
    ];
    for ((name, help, scale, counter), v) in BASE.iter().zip(base) {
        if *counter {
            out.counter(name, help, &labels, scaled(v, *scale));
        } else {
            out.gauge(name, help, &labels, scaled(v, *scale));
        }
    }
    let discard = [
        s.discards,
        s.discards_merged,
        s.sectors_discarded,
        s.time_discarding,
    ];
    if discard.iter().all(Option::is_some) {
        for ((name, help, scale), v) in DISCARD.iter().zip(discard.into_iter().flatten()) {
            out.counter(name, help, &labels, scaled(v, *scale));
        }
    }
    if let (Some(flushes), Some(time)) = (s.flushes, s.time_flushing) {
        for ((name, help, scale), v) in FLUSH.iter().zip([flushes, time]) {
            out.counter(name, help, &labels, scaled(v, *scale));
        }
    }

    if let Some(dm_name) = udev.get("DM_NAME") {
        out.gauge(
            "node_disk_device_mapper_info",
            "Info about disk device mapper.",
            &[
                ("device", dev),
                ("name", dm_name),
                ("uuid", get("DM_UUID")),
                ("vg_name", get("DM_VG_NAME")),
                ("lv_name", get("DM_LV_NAME")),
                ("lv_layer", get("DM_LV_LAYER")),
            ],
            1.0,
        );
    }
    if udev.contains_key("ID_ATA") {
        for (key, name, help) in ATA {
            // node_exporter logs and skips unparsable values.
            if let Some(v) = udev.get(key).and_then(|v| v.parse::<f64>().ok()) {
                out.gauge(name, help, &labels, v);
            }
        }
    }
}

/// Properties (`E:KEY=VALUE` lines) of `<udev_data>/b<major>:<minor>`. A missing or
/// unreadable file gives no properties, so node_disk_info gets empty labels as upstream.
fn read_udev(dir: &std::path::Path, major: i32, minor: i32) -> HashMap<String, String> {
    match read_proc(dir.join(format!("b{major}:{minor}"))) {
        Ok(text) => parse_udev(&text),
        Err(e) => {
            tracing::debug!(major, minor, error = %e, "no udev data for block device");
            HashMap::new()
        }
    }
}

pub fn parse_udev(text: &str) -> HashMap<String, String> {
    super::lines(text)
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, kind, names, paths, scrape, testdata, value};

    #[test]
    fn emits_node_exporter_families_from_fixture() {
        let set = scrape(build, &paths("diskstats"), &CollectorOptions::default()).unwrap();
        // loop0, sda1 and nvme0n1p1 are excluded by default; sda, nvme0n1, dm-0 and
        // the old-kernel "hda" (14 fields only) stay.
        let info = crate::fixtures::family(&set, "node_disk_info");
        let mut devices: Vec<_> = info
            .get_metric()
            .iter()
            .map(|m| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == "device")
                    .unwrap()
                    .value()
                    .to_string()
            })
            .collect();
        devices.sort();
        assert_eq!(devices, ["dm-0", "hda", "nvme0n1", "sda"]);

        let sda = [("device", "sda")];
        assert_eq!(
            value(&set, "node_disk_read_bytes_total", &sda),
            10122818.0 * 512.0
        );
        assert_eq!(
            value(&set, "node_disk_read_time_seconds_total", &sda),
            71.497
        );
        assert_eq!(value(&set, "node_disk_io_now", &sda), 3.0);
        assert_eq!(kind(&set, "node_disk_io_now"), MetricType::GAUGE);
        assert_eq!(
            kind(&set, "node_disk_reads_completed_total"),
            MetricType::COUNTER
        );
        assert_eq!(
            value(&set, "node_disk_discarded_sectors_total", &sda),
            1211352.0
        );
        assert_eq!(
            value(&set, "node_disk_flush_requests_time_seconds_total", &sda),
            0.04
        );
        assert_eq!(
            help(&set, "node_disk_flush_requests_total"),
            "The total number of flush requests completed successfully"
        );
        // nvme0n1 has discard fields (18 columns) but no flush fields.
        let nvme = [("device", "nvme0n1")];
        assert_eq!(
            value(&set, "node_disk_discards_completed_total", &nvme),
            7.0
        );
        let flush = crate::fixtures::family(&set, "node_disk_flush_requests_total");
        assert_eq!(
            flush.get_metric().len(),
            2,
            "only sda and dm-0 have flush fields"
        );
        let discards = crate::fixtures::family(&set, "node_disk_discards_merged_total");
        assert_eq!(discards.get_metric().len(), 3, "hda has no discard fields");

        // udev labels: sda has a udev file, dm-0 is a device mapper, hda has none.
        assert_eq!(
            value(
                &set,
                "node_disk_info",
                &[
                    ("device", "sda"),
                    ("major", "8"),
                    ("minor", "0"),
                    ("path", "pci-0000:00:1f.2-ata-1"),
                    ("wwn", "0x5000c500a1b2c3d4"),
                    ("model", "ST1000DM010"),
                    ("serial", "Z9A1B2C3"),
                    ("revision", "CC43"),
                ]
            ),
            1.0
        );
        assert_eq!(
            value(
                &set,
                "node_disk_info",
                &[
                    ("device", "hda"),
                    ("major", "3"),
                    ("minor", "0"),
                    ("path", ""),
                    ("wwn", ""),
                    ("model", ""),
                    ("serial", ""),
                    ("revision", ""),
                ]
            ),
            1.0
        );
        assert_eq!(value(&set, "node_disk_ata_rotation_rate_rpm", &sda), 7200.0);
        assert_eq!(value(&set, "node_disk_ata_write_cache_enabled", &sda), 1.0);
        assert_eq!(
            value(
                &set,
                "node_disk_device_mapper_info",
                &[
                    ("device", "dm-0"),
                    ("name", "vg0-root"),
                    ("uuid", "LVM-abc"),
                    ("vg_name", "vg0"),
                    ("lv_name", "root"),
                    ("lv_layer", ""),
                ]
            ),
            1.0
        );
        assert!(names(&set).iter().all(|n| n.starts_with("node_disk_")));
    }

    #[test]
    fn device_exclude_option_is_honoured() {
        let options = CollectorOptions {
            diskstats_device_exclude: Regex::new("^(sda|dm-0|hda)$").unwrap(),
            ..CollectorOptions::default()
        };
        let set = scrape(build, &paths("diskstats"), &options).unwrap();
        let info = crate::fixtures::family(&set, "node_disk_info");
        assert!(info.get_metric().iter().all(|m| {
            let dev = m.get_label().iter().find(|l| l.name() == "device").unwrap();
            ["loop0", "sda1", "nvme0n1", "nvme0n1p1"].contains(&dev.value())
        }));
    }

    #[test]
    fn bad_input_is_an_error_naming_the_file() {
        let err = parse_diskstats("   8       0 sda 1 2 x 4 5 6 7 8 9 10 11\n").unwrap_err();
        assert!(err.to_string().contains("/proc/diskstats"), "{err}");
        let err = parse_diskstats("   8       0 sda 1 2 3\n").unwrap_err();
        assert!(err.to_string().contains("sda"), "{err}");
        assert!(parse_diskstats("").unwrap().is_empty());

        let mut p = paths("diskstats");
        p.proc = testdata("diskstats").join("missing");
        let err = scrape(build, &p, &CollectorOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("diskstats"), "{err}");
    }

    #[test]
    fn parses_udev_properties() {
        let udev = parse_udev("S:disk/by-id/x\nE:ID_MODEL=Disk\nE:EMPTY=\nG:systemd\nE:BROKEN\n");
        assert_eq!(udev.get("ID_MODEL").unwrap(), "Disk");
        assert_eq!(udev.get("EMPTY").unwrap(), "");
        assert_eq!(udev.len(), 2);
    }
}
