//! `xfs`: node_xfs_* from /sys/fs/xfs/<device>/stats/stats (node_exporter 1.5.0
//! collector/xfs_linux.go over procfs' `xfs.SysStats`). Every family is a counter labelled by
//! `device`, the name of the sysfs directory (e.g. `sda1`). Lines absent from an older
//! kernel's file give zeros, as procfs' zero-valued structs do; a line with the wrong number
//! of values, or a value that is not a u32 (u64 for `xpc`), fails the whole scrape.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// (stats line, position on it, family name without `node_xfs_`, HELP).
const METRICS: &[(&str, usize, &str, &str)] = &[
    (
        "extent_alloc",
        0,
        "extent_allocation_extents_allocated_total",
        "Number of extents allocated for a filesystem.",
    ),
    (
        "extent_alloc",
        1,
        "extent_allocation_blocks_allocated_total",
        "Number of blocks allocated for a filesystem.",
    ),
    (
        "extent_alloc",
        2,
        "extent_allocation_extents_freed_total",
        "Number of extents freed for a filesystem.",
    ),
    (
        "extent_alloc",
        3,
        "extent_allocation_blocks_freed_total",
        "Number of blocks freed for a filesystem.",
    ),
    (
        "abt",
        0,
        "allocation_btree_lookups_total",
        "Number of allocation B-tree lookups for a filesystem.",
    ),
    (
        "abt",
        1,
        "allocation_btree_compares_total",
        "Number of allocation B-tree compares for a filesystem.",
    ),
    (
        "abt",
        2,
        "allocation_btree_records_inserted_total",
        "Number of allocation B-tree records inserted for a filesystem.",
    ),
    (
        "abt",
        3,
        "allocation_btree_records_deleted_total",
        "Number of allocation B-tree records deleted for a filesystem.",
    ),
    (
        "blk_map",
        0,
        "block_mapping_reads_total",
        "Number of block map for read operations for a filesystem.",
    ),
    (
        "blk_map",
        1,
        "block_mapping_writes_total",
        "Number of block map for write operations for a filesystem.",
    ),
    (
        "blk_map",
        2,
        "block_mapping_unmaps_total",
        "Number of block unmaps (deletes) for a filesystem.",
    ),
    (
        "blk_map",
        3,
        "block_mapping_extent_list_insertions_total",
        "Number of extent list insertions for a filesystem.",
    ),
    (
        "blk_map",
        4,
        "block_mapping_extent_list_deletions_total",
        "Number of extent list deletions for a filesystem.",
    ),
    (
        "blk_map",
        5,
        "block_mapping_extent_list_lookups_total",
        "Number of extent list lookups for a filesystem.",
    ),
    (
        "blk_map",
        6,
        "block_mapping_extent_list_compares_total",
        "Number of extent list compares for a filesystem.",
    ),
    (
        "bmbt",
        0,
        "block_map_btree_lookups_total",
        "Number of block map B-tree lookups for a filesystem.",
    ),
    (
        "bmbt",
        1,
        "block_map_btree_compares_total",
        "Number of block map B-tree compares for a filesystem.",
    ),
    (
        "bmbt",
        2,
        "block_map_btree_records_inserted_total",
        "Number of block map B-tree records inserted for a filesystem.",
    ),
    (
        "bmbt",
        3,
        "block_map_btree_records_deleted_total",
        "Number of block map B-tree records deleted for a filesystem.",
    ),
    (
        "dir",
        0,
        "directory_operation_lookup_total",
        "Number of file name directory lookups which miss the operating systems directory name lookup cache.",
    ),
    (
        "dir",
        1,
        "directory_operation_create_total",
        "Number of times a new directory entry was created for a filesystem.",
    ),
    (
        "dir",
        2,
        "directory_operation_remove_total",
        "Number of times an existing directory entry was created for a filesystem.",
    ),
    (
        "dir",
        3,
        "directory_operation_getdents_total",
        "Number of times the directory getdents operation was performed for a filesystem.",
    ),
    (
        "ig",
        0,
        "inode_operation_attempts_total",
        "Number of times the OS looked for an XFS inode in the inode cache.",
    ),
    (
        "ig",
        1,
        "inode_operation_found_total",
        "Number of times the OS looked for and found an XFS inode in the inode cache.",
    ),
    (
        "ig",
        2,
        "inode_operation_recycled_total",
        "Number of times the OS found an XFS inode in the cache, but could not use it as it was being recycled.",
    ),
    (
        "ig",
        3,
        "inode_operation_missed_total",
        "Number of times the OS looked for an XFS inode in the cache, but did not find it.",
    ),
    (
        "ig",
        4,
        "inode_operation_duplicates_total",
        "Number of times the OS tried to add a missing XFS inode to the inode cache, but found it had already been added by another process.",
    ),
    (
        "ig",
        5,
        "inode_operation_reclaims_total",
        "Number of times the OS reclaimed an XFS inode from the inode cache to free memory for another purpose.",
    ),
    (
        "ig",
        6,
        "inode_operation_attribute_changes_total",
        "Number of times the OS explicitly changed the attributes of an XFS inode.",
    ),
    // The kernel writes `rw <write calls> <read calls>`.
    (
        "rw",
        1,
        "read_calls_total",
        "Number of read(2) system calls made to files in a filesystem.",
    ),
    (
        "rw",
        0,
        "write_calls_total",
        "Number of write(2) system calls made to files in a filesystem.",
    ),
    (
        "vnodes",
        0,
        "vnode_active_total",
        "Number of vnodes not on free lists for a filesystem.",
    ),
    (
        "vnodes",
        1,
        "vnode_allocate_total",
        "Number of times vn_alloc called for a filesystem.",
    ),
    (
        "vnodes",
        2,
        "vnode_get_total",
        "Number of times vn_get called for a filesystem.",
    ),
    (
        "vnodes",
        3,
        "vnode_hold_total",
        "Number of times vn_hold called for a filesystem.",
    ),
    (
        "vnodes",
        4,
        "vnode_release_total",
        "Number of times vn_rele called for a filesystem.",
    ),
    (
        "vnodes",
        5,
        "vnode_reclaim_total",
        "Number of times vn_reclaim called for a filesystem.",
    ),
    (
        "vnodes",
        6,
        "vnode_remove_total",
        "Number of times vn_remove called for a filesystem.",
    ),
];

/// Lines procfs parses, with the value counts it accepts.
const COUNTS: &[(&str, &[usize])] = &[
    ("extent_alloc", &[4]),
    ("abt", &[4]),
    ("blk_map", &[7]),
    ("bmbt", &[4]),
    ("dir", &[4]),
    ("trans", &[3]),
    ("ig", &[7]),
    ("log", &[5]),
    ("rw", &[2]),
    ("attr", &[4]),
    ("icluster", &[3]),
    // "free" is missing on older kernels.
    ("vnodes", &[7, 8]),
    ("buf", &[9]),
    ("xpc", &[3]),
];

/// One filesystem's stats: the parsed lines, by label.
#[derive(Debug, Default, PartialEq)]
pub struct XfsStats {
    pub lines: Vec<(String, Vec<u64>)>,
}

impl XfsStats {
    /// The value at `pos` of line `label`, 0 when the line is absent.
    pub fn get(&self, label: &str, pos: usize) -> u64 {
        self.lines
            .iter()
            .find(|(l, _)| l == label)
            .and_then(|(_, v)| v.get(pos).copied())
            .unwrap_or(0)
    }
}

pub struct XfsCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(XfsCollector {
        dir: ctx.paths.sys_path("fs/xfs"),
    }))
}

/// (device, stats) of every `/sys/fs/xfs/*/stats/stats`, sorted by device.
pub fn read_xfs(dir: &std::path::Path) -> Result<Vec<(String, XfsStats)>, CollectorError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // No XFS module loaded, or a kernel before 4.4: nothing to report.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CollectorError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CollectorError::io(dir, e))?;
        let path = entry.path().join("stats/stats");
        // /sys/fs/xfs/stats/stats (the global totals) is one level up and not matched.
        let text = match read_proc(&path) {
            // Not a glob match: no such file, or the entry is a file (ENOTDIR).
            Err(CollectorError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                continue;
            }
            other => other?,
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let stats = parse_xfs_stats(&text)
            .map_err(|d| CollectorError::parse(path.display().to_string(), d))?;
        out.push((name, stats));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Parses one stats file as procfs' `xfs.ParseStats` does: every line of at least two
/// fields must hold u32 values (u64 for `xpc`), and known lines must have their count.
pub fn parse_xfs_stats(text: &str) -> Result<XfsStats, String> {
    let mut stats = XfsStats::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(label), Some(_)) = (fields.next(), fields.clone().next()) else {
            continue;
        };
        let values = fields
            .map(|f| {
                let v: u64 = f.parse().map_err(|e| format!("{label}: {f:?}: {e}"))?;
                if label != "xpc" && v > u64::from(u32::MAX) {
                    return Err(format!("{label}: {f:?} is out of range for a u32 counter"));
                }
                Ok(v)
            })
            .collect::<Result<Vec<u64>, String>>()?;
        if let Some((_, counts)) = COUNTS.iter().find(|(l, _)| *l == label) {
            if !counts.contains(&values.len()) {
                return Err(format!(
                    "incorrect number of values for XFS {label} stats: {}",
                    values.len()
                ));
            }
            stats.lines.push((label.to_string(), values));
        }
    }
    Ok(stats)
}

impl Collector for XfsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for (device, stats) in read_xfs(&self.dir)? {
            let labels = [("device", device.as_str())];
            let mut name = String::with_capacity(64);
            for &(line, pos, suffix, help) in METRICS {
                name.clear();
                name.push_str("node_xfs_");
                name.push_str(suffix);
                out.counter(&name, help, &labels, stats.get(line, pos) as f64);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{
        assert_same_as_node_exporter, kind, len, paths, scrape, testdata, value,
    };
    use prometheus::proto::MetricType;

    #[test]
    fn emits_every_filesystem() {
        let set = scrape(build, &paths("xfs"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            len(&set, "node_xfs_read_calls_total"),
            2,
            "the global stats dir is not a device"
        );
        assert_eq!(
            value(&set, "node_xfs_read_calls_total", &[("device", "sda1")]),
            94045.0
        );
        assert_eq!(
            value(&set, "node_xfs_write_calls_total", &[("device", "sda1")]),
            107739.0
        );
        assert_eq!(
            value(
                &set,
                "node_xfs_extent_allocation_extents_allocated_total",
                &[("device", "nvme0n1p2")]
            ),
            4294967295.0,
            "a counter at the u32 wrap"
        );
        // An older kernel without the 8th vnodes value still parses.
        assert_eq!(
            value(
                &set,
                "node_xfs_vnode_remove_total",
                &[("device", "nvme0n1p2")]
            ),
            70.0
        );
        assert_eq!(
            kind(&set, "node_xfs_vnode_active_total"),
            MetricType::COUNTER
        );
    }

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "xfs",
            build,
            &paths("xfs"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn absent_lines_are_zero_bad_lines_fail() {
        let s = parse_xfs_stats("rw 5 6\nfoo\n").unwrap();
        assert_eq!((s.get("rw", 0), s.get("dir", 2)), (5, 0));
        assert!(parse_xfs_stats("rw 1 2 3\n").unwrap_err().contains("rw"));
        assert!(
            parse_xfs_stats("abtb2 4294967296\n").is_err(),
            "u32 overflow"
        );
        assert!(
            parse_xfs_stats("xpc 4294967296 1 2\n").is_ok(),
            "xpc is u64"
        );
        assert!(parse_xfs_stats("dir 1 x 2 3\n").is_err());
        assert!(parse_xfs_stats("").unwrap().lines.is_empty());
    }

    #[test]
    fn no_xfs_is_an_empty_success() {
        let mut p = paths("xfs");
        p.sys = testdata("xfs").join("missing");
        let set = scrape(build, &p, &CollectorOptions::default()).unwrap();
        assert!(set.families().is_empty());
    }
}
