//! `zfs`: OpenZFS kstats from /proc/spl/kstat/zfs (node_exporter 1.5.0
//! collector/zfs_linux.go): every uint64 (type 4) kstat of the module files as an untyped
//! `node_zfs_<subsystem>_<name>` (HELP = the kstat path), pool I/O (`<pool>/io`), dataset
//! objsets (`<pool>/objset-*`) and pool state (`<pool>/state`). Files that an older ZFS
//! lacks are skipped; no kstat directory means no data.

use std::path::{Path, PathBuf};

use prometheus::proto::MetricType;

use super::sysattr::sorted_entries;
use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// (subsystem, kstat file).
const FILES: &[(&str, &str)] = &[
    ("zfs_abd", "abdstats"),
    ("zfs_arc", "arcstats"),
    ("zfs_dbuf", "dbufstats"),
    ("zfs_dmu_tx", "dmu_tx"),
    ("zfs_dnode", "dnodestats"),
    ("zfs_fm", "fm"),
    ("zfs_vdev_cache", "vdev_cache_stats"),
    ("zfs_vdev_mirror", "vdev_mirror_stats"),
    ("zfs_xuio", "xuio_stats"),
    ("zfs_zfetch", "zfetchstats"),
    ("zfs_zil", "zil"),
];

/// The states node_exporter 1.5.0 reports (SUSPENDED came later).
const POOL_STATES: &[&str] = &[
    "online", "degraded", "faulted", "offline", "removed", "unavail",
];

/// KSTAT_DATA_UINT64.
const UINT64: &str = "4";

pub struct ZfsCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(ZfsCollector {
        dir: ctx.paths.proc_path("spl/kstat/zfs"),
    }))
}

fn perr(path: &Path, detail: impl std::fmt::Display) -> CollectorError {
    CollectorError::parse(path.display().to_string(), detail)
}

/// The `<name> 4 <value>` rows after the `name type data` header of a kstat file.
pub fn parse_kstat(path: &Path, text: &str) -> Result<Vec<(String, u64)>, CollectorError> {
    let mut out = Vec::new();
    let mut started = false;
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if !started {
            started = parts == ["name", "type", "data"];
            continue;
        }
        if parts.len() < 3 || parts[1] != UINT64 {
            continue;
        }
        let v = parts[2].parse::<u64>().map_err(|_| {
            perr(
                path,
                format!("could not parse expected integer value for {:?}", parts[0]),
            )
        })?;
        out.push((parts[0].to_string(), v));
    }
    if !started {
        return Err(perr(path, "no kstat header"));
    }
    Ok(out)
}

/// A pool's `io` kstat: a header row starting with `nread` (at least 12 columns), then
/// rows of values.
pub fn parse_pool_io(path: &Path, text: &str) -> Result<Vec<(String, u64)>, CollectorError> {
    let mut header: Option<Vec<&str>> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let Some(fields) = &header else {
            if parts.len() >= 12 && parts[0] == "nread" {
                header = Some(parts);
            }
            continue;
        };
        for (i, field) in fields.iter().enumerate() {
            let v = parts
                .get(i)
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| {
                    perr(
                        path,
                        format!("could not parse expected integer value for {field:?}"),
                    )
                })?;
            out.push((field.to_string(), v));
        }
    }
    Ok(out)
}

/// An objset kstat: (dataset name, uint64 rows).
pub fn parse_objset(
    path: &Path,
    text: &str,
) -> Result<(String, Vec<(String, u64)>), CollectorError> {
    let mut dataset = String::new();
    let mut rows = Vec::new();
    let mut started = false;
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if !started {
            started = parts == ["name", "type", "data"];
            continue;
        }
        if parts.len() < 3 {
            continue;
        }
        if parts[0] == "dataset_name" {
            dataset = parts[2].to_string();
        } else if parts[1] == UINT64 {
            let v = parts[2].parse::<u64>().map_err(|_| {
                perr(
                    path,
                    format!("could not parse expected integer value for {:?}", parts[0]),
                )
            })?;
            rows.push((parts[0].to_string(), v));
        }
    }
    if !started {
        return Err(perr(path, "no kstat header"));
    }
    Ok((dataset, rows))
}

/// The name part of a metric: `-` becomes `_` (fm's `erpt-dropped`).
fn metric_name(prefix: &str, kstat: &str) -> String {
    format!("node_{prefix}_{}", kstat.replace('-', "_"))
}

/// A file that may vanish (an exporting pool, a feature an older ZFS lacks).
fn read_optional(path: &Path) -> Result<Option<String>, CollectorError> {
    match read_proc(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

impl Collector for ZfsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let Some(entries) = sorted_entries(&self.dir)? else {
            return Err(CollectorError::NoData);
        };
        for &(subsystem, file) in FILES {
            let path = self.dir.join(file);
            let Some(text) = read_optional(&path)? else {
                continue;
            };
            for (name, v) in parse_kstat(&path, &text)? {
                let help = format!("kstat.zfs.misc.{file}.{name}");
                out.sample(
                    MetricType::UNTYPED,
                    &metric_name(subsystem, &name),
                    &help,
                    &[],
                    v as f64,
                );
            }
        }
        let pools: Vec<&String> = entries
            .iter()
            .filter(|e| self.dir.join(e).is_dir())
            .collect();
        for pool in &pools {
            let path = self.dir.join(pool).join("io");
            let Some(text) = read_optional(&path)? else {
                continue;
            };
            for (name, v) in parse_pool_io(&path, &text)? {
                let help = format!("kstat.zfs.misc.io.{name}");
                out.sample(
                    MetricType::UNTYPED,
                    &metric_name("zfs_zpool", &name),
                    &help,
                    &[("zpool", pool)],
                    v as f64,
                );
            }
        }
        for pool in &pools {
            let dir = self.dir.join(pool);
            for objset in sorted_entries(&dir)?
                .unwrap_or_default()
                .iter()
                .filter(|n| n.starts_with("objset-"))
            {
                let path = dir.join(objset);
                let Some(text) = read_optional(&path)? else {
                    continue;
                };
                let (dataset, rows) = parse_objset(&path, &text)?;
                for (name, v) in rows {
                    let help = format!("kstat.zfs.misc.objset.{name}");
                    out.sample(
                        MetricType::UNTYPED,
                        &metric_name("zfs_zpool_dataset", &name),
                        &help,
                        &[("zpool", pool), ("dataset", &dataset)],
                        v as f64,
                    );
                }
            }
        }
        for pool in &pools {
            let Some(text) = read_optional(&self.dir.join(pool).join("state"))? else {
                continue;
            };
            let actual = text.lines().next().unwrap_or("").to_lowercase();
            for state in POOL_STATES {
                let v = if actual == *state { 1.0 } else { 0.0 };
                out.gauge(
                    "node_zfs_zpool_state",
                    "kstat.zfs.misc.state",
                    &[("zpool", pool), ("state", state)],
                    v,
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
    use crate::fixtures::{assert_same_as_node_exporter, len, paths, scrape, try_value, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "zfs",
            build,
            &paths("zfs"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn kstats_pools_datasets_states() {
        let set = scrape(build, &paths("zfs"), &CollectorOptions::default()).unwrap();
        assert_eq!(value(&set, "node_zfs_arc_hits", &[]), 8772612.0);
        assert_eq!(
            try_value(&set, "node_zfs_arc_memory_available_bytes", &[]),
            None,
            "int64 kstats are skipped"
        );
        assert_eq!(value(&set, "node_zfs_fm_erpt_dropped", &[]), 18.0);
        assert_eq!(
            value(&set, "node_zfs_zpool_rcnt", &[("zpool", "pool3")]),
            12.0
        );
        let ds = [("zpool", "pool1"), ("dataset", "pool1/dataset1")];
        assert_eq!(value(&set, "node_zfs_zpool_dataset_nwritten", &ds), 12302.0);
        assert_eq!(
            value(
                &set,
                "node_zfs_zpool_state",
                &[("zpool", "pool1"), ("state", "online")]
            ),
            1.0
        );
        assert_eq!(
            len(&set, "node_zfs_zpool_state"),
            12,
            "pool2 is SUSPENDED: all six 0"
        );
    }

    #[test]
    fn bad_and_absent_files() {
        let p = Path::new("x");
        assert!(parse_kstat(p, "6 1 0x01\nname type data\nhits 4 -1\n").is_err());
        assert!(parse_kstat(p, "hits 4 1\n").is_err(), "no header");
        assert_eq!(
            parse_kstat(p, "name type data\nx 7 str\ny 4 2\n").unwrap(),
            [("y".to_string(), 2)]
        );
        assert!(
            parse_pool_io(
                p,
                "nread a b c d e f g h i j k\nx 1 2 3 4 5 6 7 8 9 10 11\n"
            )
            .is_err()
        );
        assert!(
            parse_pool_io(p, "nread a b c d e f g h i j k\n1 2\n").is_err(),
            "short row"
        );
        let mut paths = paths("zfs");
        paths.proc = paths.proc.join("missing");
        assert!(matches!(
            scrape(build, &paths, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
    }
}
