//! `btrfs`: Btrfs filesystems from /sys/fs/btrfs/<uuid> (node_exporter 1.5.0
//! collector/btrfs_linux.go over procfs' `btrfs.Stats`): label, global reserve, and per
//! block group type (data, metadata, system) the reserved bytes and, per RAID layout, the
//! allocated and used bytes and the allocation ratio. As in procfs, absent attributes and
//! values that are not numbers read as 0, and the uuid is `metadata_uuid` when present.
//!
//! Gap: node_exporter also queries each mounted Btrfs with ioctls (BTRFS_IOC_DEV_INFO,
//! GET_DEV_STATS) for `node_btrfs_device_errors_total` and `device_unused_bytes`; here
//! device sizes come from sysfs only, which is what node_exporter itself reports when
//! those ioctls fail (an unprivileged container).

use std::path::{Path, PathBuf};

use super::sysattr::sorted_entries;
use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// procfs' btrfs.SectorSize: device sizes in sysfs are in 512-byte sectors.
const SECTOR_SIZE: u64 = 512;

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub mode: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub ratio: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BtrfsFs {
    pub uuid: String,
    pub label: String,
    pub global_rsv_size: u64,
    /// (devices name, size in bytes), by name.
    pub devices: Vec<(String, u64)>,
    /// (block group type, reserved bytes, layouts by mode).
    pub allocation: Vec<(&'static str, u64, Vec<Layout>)>,
}

pub struct BtrfsCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(BtrfsCollector {
        dir: ctx.paths.sys_path("fs/btrfs"),
    }))
}

/// A trimmed attribute; absent is empty.
fn text(path: &Path) -> Result<String, CollectorError> {
    match read_proc(path) {
        Ok(t) => Ok(t.trim().to_string()),
        Err(e) if e.is_not_found() => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// A decimal attribute; absent or not a number is 0, as procfs reads it.
fn number(path: &Path) -> Result<u64, CollectorError> {
    Ok(text(path)?.parse().unwrap_or(0))
}

/// procfs' calcRatio: raw bytes per stored byte for a RAID profile.
fn ratio(mode: &str, devices: usize) -> f64 {
    let n = devices as f64;
    match mode {
        "single" | "raid0" => 1.0,
        "dup" | "raid1" | "raid10" => 2.0,
        "raid5" => n / (n - 1.0),
        "raid6" => n / (n - 2.0),
        _ => 0.0,
    }
}

pub fn read_fs(path: &Path, dir_name: &str) -> Result<BtrfsFs, CollectorError> {
    let mut devices = Vec::new();
    for name in sorted_entries(&path.join("devices"))?.unwrap_or_default() {
        let size = number(&path.join("devices").join(&name).join("size"))?;
        devices.push((name, size.wrapping_mul(SECTOR_SIZE)));
    }
    let mut allocation = Vec::new();
    for kind in ["data", "metadata", "system"] {
        let dir = path.join("allocation").join(kind);
        let reserved = number(&dir.join("bytes_reserved"))?;
        let mut layouts = Vec::new();
        for mode in sorted_entries(&dir)?.unwrap_or_default() {
            let ldir = dir.join(&mode);
            if !ldir.is_dir() {
                continue;
            }
            layouts.push(Layout {
                total_bytes: number(&ldir.join("total_bytes"))?,
                used_bytes: number(&ldir.join("used_bytes"))?,
                ratio: ratio(&mode, devices.len()),
                mode,
            });
        }
        allocation.push((kind, reserved, layouts));
    }
    let uuid = match text(&path.join("metadata_uuid"))? {
        u if u.is_empty() => dir_name.to_string(),
        u => u,
    };
    Ok(BtrfsFs {
        uuid,
        label: text(&path.join("label"))?,
        global_rsv_size: number(&path.join("allocation/global_rsv_size"))?,
        devices,
        allocation,
    })
}

/// Every filesystem (`/sys/fs/btrfs/*-*`; `features` is the module's, not one).
pub fn read_btrfs(dir: &Path) -> Result<Vec<BtrfsFs>, CollectorError> {
    sorted_entries(dir)?
        .unwrap_or_default()
        .iter()
        .filter(|n| n.contains('-'))
        .map(|n| read_fs(&dir.join(n), n))
        .collect()
}

impl Collector for BtrfsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for fs in read_btrfs(&self.dir)? {
            let uuid = fs.uuid.as_str();
            out.gauge(
                "node_btrfs_info",
                "Filesystem information",
                &[("uuid", uuid), ("label", &fs.label)],
                1.0,
            );
            out.gauge(
                "node_btrfs_global_rsv_size_bytes",
                "Size of global reserve.",
                &[("uuid", uuid)],
                fs.global_rsv_size as f64,
            );
            for (kind, reserved, layouts) in &fs.allocation {
                out.gauge(
                    "node_btrfs_reserved_bytes",
                    "Amount of space reserved for a data type",
                    &[("uuid", uuid), ("block_group_type", kind)],
                    *reserved as f64,
                );
                for l in layouts {
                    let labels = [
                        ("uuid", uuid),
                        ("block_group_type", kind),
                        ("mode", l.mode.as_str()),
                    ];
                    out.gauge(
                        "node_btrfs_used_bytes",
                        "Amount of used space by a layout/data type",
                        &labels,
                        l.used_bytes as f64,
                    );
                    out.gauge(
                        "node_btrfs_size_bytes",
                        "Amount of space allocated for a layout/data type",
                        &labels,
                        l.total_bytes as f64,
                    );
                    out.gauge(
                        "node_btrfs_allocation_ratio",
                        "Data allocation ratio for a layout/data type",
                        &labels,
                        l.ratio,
                    );
                }
            }
            for (device, size) in &fs.devices {
                out.gauge(
                    "node_btrfs_device_size_bytes",
                    "Size of a device that is part of the filesystem.",
                    &[("uuid", uuid), ("device", device)],
                    *size as f64,
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter, len, paths, scrape, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "btrfs",
            build,
            &paths("btrfs"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn layouts_ratios_and_devices() {
        let set = scrape(build, &paths("btrfs"), &CollectorOptions::default()).unwrap();
        let raid5 = [
            ("uuid", "7f07c59f-6136-449c-ab87-e1cf2328731b"),
            ("block_group_type", "data"),
            ("mode", "raid5"),
        ];
        assert_eq!(
            value(&set, "node_btrfs_allocation_ratio", &raid5),
            4.0 / 3.0,
            "4 devices"
        );
        assert_eq!(len(&set, "node_btrfs_device_size_bytes"), 6);
        assert_eq!(
            len(&set, "node_btrfs_info"),
            2,
            "fs/btrfs/features is not a filesystem"
        );
    }

    #[test]
    fn absent_and_odd_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let fs = dir.path().join("a-b");
        std::fs::create_dir_all(fs.join("allocation/data/weird")).unwrap();
        std::fs::write(fs.join("metadata_uuid"), "1-2\n").unwrap();
        std::fs::write(fs.join("allocation/global_rsv_size"), "x\n").unwrap();
        let got = read_btrfs(dir.path()).unwrap();
        assert_eq!(got[0].uuid, "1-2");
        assert_eq!(got[0].global_rsv_size, 0, "not a number reads as 0");
        assert!(got[0].devices.is_empty());
        assert_eq!(got[0].allocation[0].2[0].ratio, 0.0, "unknown profile");
        assert!(read_btrfs(&dir.path().join("none")).unwrap().is_empty());
    }
}
