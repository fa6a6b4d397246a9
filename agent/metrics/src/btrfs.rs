//! `btrfs`: Btrfs filesystems from /sys/fs/btrfs/<uuid> (node_exporter 1.5.0
//! collector/btrfs_linux.go over procfs' `btrfs.Stats`): label, global reserve, and per
//! block group type (data, metadata, system) the reserved bytes and, per RAID layout, the
//! allocated and used bytes and the allocation ratio. As in procfs, absent attributes and
//! values that are not numbers read as 0, and the uuid is `metadata_uuid` when present.
//!
//! Per-device figures come, as in node_exporter, from ioctls on each mounted Btrfs
//! (BTRFS_IOC_FS_INFO, DEV_INFO, GET_DEV_STATS; mounts from `<procfs>/1/mounts`, opened
//! below `--path.rootfs`): size, unused bytes and error counters labelled with the device's
//! btrfs uuid. When a filesystem cannot be queried (not mounted where we can see it), the
//! sysfs device sizes are reported instead, as node_exporter does.

use std::path::{Path, PathBuf};

use node_agent_core::host::HostPaths;

use super::filesystem::parse_mounts;
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
    paths: HostPaths,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(BtrfsCollector {
        dir: ctx.paths.sys_path("fs/btrfs"),
        paths: ctx.paths.clone(),
    }))
}

/// One device of a mounted filesystem, from the ioctls.
#[derive(Debug, Clone, PartialEq)]
pub struct IoctlDevice {
    /// Last component of the device path (`/dev/sda` → `sda`).
    pub device: String,
    pub uuid: String,
    pub bytes_used: u64,
    pub total_bytes: u64,
    /// write, read, flush, corruption, generation.
    pub errors: [u64; 5],
}

/// The kernel's btrfs ioctl ABI (include/uapi/linux/btrfs.h).
mod ioctl {
    use std::os::fd::AsRawFd;

    #[repr(C)]
    pub struct FsInfoArgs {
        pub max_id: u64,
        pub num_devices: u64,
        pub fsid: [u8; 16],
        pub nodesize: u32,
        pub sectorsize: u32,
        pub clone_alignment: u32,
        pub csum_type: u16,
        pub csum_size: u16,
        pub flags: u64,
        pub generation: u64,
        pub metadata_uuid: [u8; 16],
        pub reserved: [u8; 944],
    }

    #[repr(C)]
    pub struct DevInfoArgs {
        pub devid: u64,
        pub uuid: [u8; 16],
        pub bytes_used: u64,
        pub total_bytes: u64,
        pub fsid: [u8; 16],
        pub unused: [u64; 377],
        pub path: [u8; 1024],
    }

    #[repr(C)]
    pub struct DevStatsArgs {
        pub devid: u64,
        pub nr_items: u64,
        pub flags: u64,
        pub values: [u64; 5],
        pub unused: [u64; 121],
    }

    const _: () = assert!(std::mem::size_of::<FsInfoArgs>() == 1024);
    const _: () = assert!(std::mem::size_of::<DevInfoArgs>() == 4096);
    const _: () = assert!(std::mem::size_of::<DevStatsArgs>() == 1032);

    /// _IOC(dir, BTRFS_IOCTL_MAGIC, nr, size).
    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (0x94 << 8) | nr
    }
    const READ: u64 = 2;
    const READ_WRITE: u64 = 3;
    pub const FS_INFO: u64 = ioc(READ, 31, std::mem::size_of::<FsInfoArgs>());
    pub const DEV_INFO: u64 = ioc(READ_WRITE, 30, std::mem::size_of::<DevInfoArgs>());
    pub const GET_DEV_STATS: u64 = ioc(READ_WRITE, 52, std::mem::size_of::<DevStatsArgs>());

    /// Runs one ioctl whose argument is a plain-old-data struct of the kernel ABI.
    pub fn call<T>(dir: &std::fs::File, request: u64, arg: &mut T) -> std::io::Result<()> {
        // SAFETY: `arg` is a live, exclusively borrowed #[repr(C)] struct of exactly the
        // size encoded in `request`, which the kernel reads and writes within.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), request as _, arg as *mut T) };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// An all-zero argument struct.
    pub fn zeroed<T>() -> Box<T> {
        // SAFETY: only instantiated with the structs above, all integers and byte arrays,
        // for which all-zero bytes are a valid value.
        unsafe { Box::new(std::mem::zeroed()) }
    }
}

/// A 16-byte uuid in its canonical 8-4-4-4-12 form.
fn uuid_string(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// (filesystem uuid, devices) of the Btrfs mounted at `mountpoint`.
pub fn query_mounted(mountpoint: &Path) -> std::io::Result<(String, Vec<IoctlDevice>)> {
    let dir = std::fs::File::open(mountpoint)?;
    let mut info = ioctl::zeroed::<ioctl::FsInfoArgs>();
    ioctl::call(&dir, ioctl::FS_INFO, &mut *info)?;
    let mut devices = Vec::new();
    for devid in 0..=info.max_id {
        let mut dev = ioctl::zeroed::<ioctl::DevInfoArgs>();
        dev.devid = devid;
        match ioctl::call(&dir, ioctl::DEV_INFO, &mut *dev) {
            // Device ids need not be contiguous nor start at 0.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => continue,
            other => other?,
        }
        let mut stats = ioctl::zeroed::<ioctl::DevStatsArgs>();
        stats.devid = devid;
        stats.nr_items = 5;
        ioctl::call(&dir, ioctl::GET_DEV_STATS, &mut *stats)?;
        let len = dev
            .path
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(dev.path.len());
        let path = String::from_utf8_lossy(&dev.path[..len]).into_owned();
        devices.push(IoctlDevice {
            device: path.rsplit('/').next().unwrap_or("").to_string(),
            uuid: uuid_string(&dev.uuid),
            bytes_used: dev.bytes_used,
            total_bytes: dev.total_bytes,
            errors: stats.values,
        });
        if devices.len() as u64 == info.num_devices {
            break;
        }
    }
    Ok((uuid_string(&info.fsid), devices))
}

/// Device stats of every Btrfs mounted on the host, by filesystem uuid; filesystems that
/// cannot be queried are left out (logged at debug), as in node_exporter.
fn ioctl_stats(paths: &HostPaths) -> Vec<(String, Vec<IoctlDevice>)> {
    let text =
        read_proc(paths.proc_path("1/mounts")).or_else(|_| read_proc(paths.proc_path("mounts")));
    let Ok(mounts) = text
        .map_err(|e| e.to_string())
        .and_then(|t| parse_mounts(&t, paths))
    else {
        return Vec::new();
    };
    let mut done = std::collections::HashSet::new();
    let mut out: Vec<(String, Vec<IoctlDevice>)> = Vec::new();
    for m in mounts.iter().filter(|m| m.fstype == "btrfs") {
        if done.contains(&m.device) {
            continue;
        }
        let path = paths.rootfs_path(&m.mountpoint);
        match query_mounted(&path) {
            Ok((uuid, devices)) => {
                done.insert(m.device.clone());
                if !out.iter().any(|(u, _)| *u == uuid) {
                    out.push((uuid, devices));
                }
            }
            Err(e) => {
                tracing::debug!(mountpoint = %path.display(), error = %e, "btrfs ioctls failed")
            }
        }
    }
    out
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
        let filesystems = read_btrfs(&self.dir)?;
        let ioctl = if filesystems.is_empty() {
            Vec::new()
        } else {
            ioctl_stats(&self.paths)
        };
        for fs in filesystems {
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
            if let Some((_, devices)) = ioctl.iter().find(|(u, _)| *u == fs.uuid) {
                for d in devices {
                    let labels = [
                        ("uuid", uuid),
                        ("device", d.device.as_str()),
                        ("btrfs_dev_uuid", d.uuid.as_str()),
                    ];
                    out.gauge(
                        "node_btrfs_device_size_bytes",
                        "Size of a device that is part of the filesystem.",
                        &labels,
                        d.total_bytes as f64,
                    );
                    out.gauge(
                        "node_btrfs_device_unused_bytes",
                        "Unused bytes unused on a device that is part of the filesystem.",
                        &labels,
                        d.total_bytes.wrapping_sub(d.bytes_used) as f64,
                    );
                    for (kind, v) in ["write", "read", "flush", "corruption", "generation"]
                        .iter()
                        .zip(d.errors)
                    {
                        out.counter(
                            "node_btrfs_device_errors_total",
                            "Errors reported for the device",
                            &[
                                ("uuid", uuid),
                                ("type", kind),
                                ("device", d.device.as_str()),
                                ("btrfs_dev_uuid", d.uuid.as_str()),
                            ],
                            v as f64,
                        );
                    }
                }
                continue;
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
        assert_eq!(
            uuid_string(&[
                0x3b, 0x36, 0x40, 0xbe, 0x3d, 0x47, 0x44, 0x4b, 0xa8, 0xfd, 0x68, 0xb8, 0xde, 0xbc,
                0x7a, 0x22
            ]),
            "3b3640be-3d47-444b-a8fd-68b8debc7a22"
        );
        assert!(
            query_mounted(dir.path()).is_err(),
            "not a btrfs: the ioctl fails"
        );
    }
}
