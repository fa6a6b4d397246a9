//! `bcache`: bcache cache sets from /sys/fs/bcache/<uuid> (node_exporter 1.5.0
//! collector/bcache_linux.go over procfs' `bcache.Stats`): the set, its backing devices
//! (`bdev<N>`, with `writeback_rate_debug`) and cache devices (`cache<N>`; their
//! `priority_stats` only with `--collector.bcache.priorityStats`, as reading it is costly).
//! Values use bcache's `bch_hprint` format (`1.2k`, `17.9M`: the fraction is in 1/1024ths
//! printed as hundredths), converted back as procfs does, quirks included.

use std::path::{Path, PathBuf};

use super::sysattr::sorted_entries;
use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
}

const SET: &[Family] = &[
    Family {
        name: "node_bcache_average_key_size_sectors",
        help: "Average data per key in the btree (sectors).",
        counter: false,
    },
    Family {
        name: "node_bcache_btree_cache_size_bytes",
        help: "Amount of memory currently used by the btree cache.",
        counter: false,
    },
    Family {
        name: "node_bcache_cache_available_percent",
        help: "Percentage of cache device without dirty data, usable for writeback (may contain clean cached data).",
        counter: false,
    },
    Family {
        name: "node_bcache_congested",
        help: "Congestion.",
        counter: false,
    },
    Family {
        name: "node_bcache_root_usage_percent",
        help: "Percentage of the root btree node in use (tree depth increases if too high).",
        counter: false,
    },
    Family {
        name: "node_bcache_tree_depth",
        help: "Depth of the btree.",
        counter: false,
    },
    Family {
        name: "node_bcache_active_journal_entries",
        help: "Number of journal entries that are newer than the index.",
        counter: false,
    },
    Family {
        name: "node_bcache_btree_nodes",
        help: "Total nodes in the btree.",
        counter: false,
    },
    Family {
        name: "node_bcache_btree_read_average_duration_seconds",
        help: "Average btree read duration.",
        counter: false,
    },
    Family {
        name: "node_bcache_cache_read_races_total",
        help: "Counts instances where while data was being read from the cache, the bucket was reused and invalidated - i.e. where the pointer was stale after the read completed.",
        counter: true,
    },
];
const PERIOD: &[Family] = &[
    Family {
        name: "node_bcache_bypassed_bytes_total",
        help: "Amount of IO (both reads and writes) that has bypassed the cache.",
        counter: true,
    },
    Family {
        name: "node_bcache_cache_hits_total",
        help: "Hits counted per individual IO as bcache sees them.",
        counter: true,
    },
    Family {
        name: "node_bcache_cache_misses_total",
        help: "Misses counted per individual IO as bcache sees them.",
        counter: true,
    },
    Family {
        name: "node_bcache_cache_bypass_hits_total",
        help: "Hits for IO intended to skip the cache.",
        counter: true,
    },
    Family {
        name: "node_bcache_cache_bypass_misses_total",
        help: "Misses for IO intended to skip the cache.",
        counter: true,
    },
    Family {
        name: "node_bcache_cache_miss_collisions_total",
        help: "Instances where data insertion from cache miss raced with write (data already present).",
        counter: true,
    },
    Family {
        name: "node_bcache_cache_readaheads_total",
        help: "Count of times readahead occurred.",
        counter: true,
    },
];
const BDEV: &[Family] = &[
    Family {
        name: "node_bcache_dirty_data_bytes",
        help: "Amount of dirty data for this backing device in the cache.",
        counter: false,
    },
    Family {
        name: "node_bcache_dirty_target_bytes",
        help: "Current dirty data target threshold for this backing device in bytes.",
        counter: false,
    },
    Family {
        name: "node_bcache_writeback_rate",
        help: "Current writeback rate for this backing device in bytes.",
        counter: false,
    },
    Family {
        name: "node_bcache_writeback_rate_proportional_term",
        help: "Current result of proportional controller, part of writeback rate",
        counter: false,
    },
    Family {
        name: "node_bcache_writeback_rate_integral_term",
        help: "Current result of integral controller, part of writeback rate",
        counter: false,
    },
    Family {
        name: "node_bcache_writeback_change",
        help: "Last writeback rate change step for this backing device.",
        counter: false,
    },
];
const CACHE: &[Family] = &[
    Family {
        name: "node_bcache_io_errors",
        help: "Number of errors that have occurred, decayed by io_error_halflife.",
        counter: false,
    },
    Family {
        name: "node_bcache_metadata_written_bytes_total",
        help: "Sum of all non data writes (btree writes and all other metadata).",
        counter: true,
    },
    Family {
        name: "node_bcache_written_bytes_total",
        help: "Sum of all data that has been written to the cache.",
        counter: true,
    },
    Family {
        name: "node_bcache_priority_stats_unused_percent",
        help: "The percentage of the cache that doesn't contain any data.",
        counter: false,
    },
    Family {
        name: "node_bcache_priority_stats_metadata_percent",
        help: "Bcache's metadata overhead.",
        counter: false,
    },
];

/// Files of a period stats directory, in [`PERIOD`]'s order.
const PERIOD_FILES: &[&str] = &[
    "bypassed",
    "cache_hits",
    "cache_misses",
    "cache_bypass_hits",
    "cache_bypass_misses",
    "cache_miss_collisions",
    "cache_readaheads",
];

#[derive(Debug, Clone, PartialEq)]
pub struct BcacheSet {
    pub uuid: String,
    /// Values of [`SET`], in order.
    pub set: Vec<f64>,
    /// (name, values of [`BDEV`] then [`PERIOD`]).
    pub bdevs: Vec<(String, Vec<f64>)>,
    /// (name, values of [`CACHE`]; the last two only with priority stats).
    pub caches: Vec<(String, Vec<f64>)>,
}

pub struct BcacheCollector {
    dir: PathBuf,
    priority_stats: bool,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(BcacheCollector {
        dir: ctx.paths.sys_path("fs/bcache"),
        priority_stats: ctx.options.more.bcache_priority_stats,
    }))
}

fn perr(path: &Path, detail: impl std::fmt::Display) -> CollectorError {
    CollectorError::parse(path.display().to_string(), detail)
}

/// Go's ParseFloat for the plain numbers bcache prints.
fn float(s: &str) -> Result<f64, String> {
    s.parse::<f64>().map_err(|e| format!("{s:?}: {e}"))
}

/// bch_hprint's `<int>.<hundredths of 1024ths>`, as procfs' parsePseudoFloat reads it.
fn pseudo_float(s: &str) -> Result<f64, String> {
    let mut parts = s.split('.');
    let int = float(parts.next().unwrap_or(""))?;
    match parts.next() {
        None => Ok(int),
        Some(frac) => Ok(int + float(frac)? / 10.24),
    }
}

/// procfs' dehumanize: `17.9M` → 18747392. An unknown suffix multiplies by 0.
pub fn dehumanize(s: &str) -> Result<u64, String> {
    let Some(&last) = s.as_bytes().last() else {
        return Err("zero-length reply".into());
    };
    let v = if last > b'9' {
        let mul = match last {
            b'k' => 1u64 << 10,
            b'M' => 1 << 20,
            b'G' => 1 << 30,
            b'T' => 1 << 40,
            b'P' => 1 << 50,
            b'E' => 1 << 60,
            // Z and Y overflow u64; as f64 they are still exact powers of two.
            b'Z' => return Ok((pseudo_float(&s[..s.len() - 1])? * 2f64.powi(70)) as u64),
            b'Y' => return Ok((pseudo_float(&s[..s.len() - 1])? * 2f64.powi(80)) as u64),
            _ => 0,
        };
        pseudo_float(&s[..s.len() - 1])? * mul as f64
    } else {
        float(s)?
    };
    Ok(v as u64)
}

/// A signed writeback_rate_debug value: `-920.7M/sec` → -965406720.
fn dehumanize_signed(s: &str) -> Result<i64, String> {
    let s = s.strip_suffix("/sec").unwrap_or(s);
    match s.strip_prefix('-') {
        Some(abs) => Ok(-(dehumanize(abs)? as i64)),
        None => Ok(dehumanize(s)? as i64),
    }
}

/// Reads a single-value attribute; procfs drops its last byte (the newline).
fn value(path: &Path) -> Result<u64, CollectorError> {
    let text = read_proc(path)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    dehumanize(text).map_err(|e| perr(path, e))
}

fn period(dir: &Path) -> Result<Vec<f64>, CollectorError> {
    PERIOD_FILES
        .iter()
        .map(|f| value(&dir.join(f)).map(|v| v as f64))
        .collect()
}

/// (target, rate, proportional, integral, change) of writeback_rate_debug.
pub fn parse_writeback_rate_debug(path: &Path, text: &str) -> Result<[f64; 5], CollectorError> {
    let mut out = [0.0; 5];
    for line in text.lines() {
        let Some((key, v)) = line.split_once(':') else {
            continue;
        };
        let slot = match key.trim() {
            "target" => 0,
            "rate" => 1,
            "proportional" => 2,
            "integral" => 3,
            "change" => 4,
            _ => continue,
        };
        out[slot] = dehumanize_signed(v.trim()).map_err(|e| perr(path, e))? as f64;
    }
    Ok(out)
}

/// (unused %, metadata %) of priority_stats.
pub fn parse_priority_stats(path: &Path, text: &str) -> Result<(f64, f64), CollectorError> {
    let (mut unused, mut metadata) = (0.0, 0.0);
    for line in text.lines() {
        let slot = if line.starts_with("Unused:") {
            &mut unused
        } else if line.starts_with("Metadata:") {
            &mut metadata
        } else {
            continue;
        };
        let raw = line.split_whitespace().last().unwrap_or("");
        let v: u64 = raw
            .trim_end_matches('%')
            .parse()
            .map_err(|e| perr(path, format!("{raw:?}: {e}")))?;
        *slot = v as f64;
    }
    Ok((unused, metadata))
}

/// Entries `<prefix>[0-9]*` of `dir`, sorted.
fn numbered(names: &[String], prefix: &str) -> Vec<String> {
    names
        .iter()
        .filter(|n| {
            n.strip_prefix(prefix)
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .cloned()
        .collect()
}

fn read_set(path: &Path, uuid: &str, priority_stats: bool) -> Result<BcacheSet, CollectorError> {
    let mut set = Vec::with_capacity(SET.len());
    for f in [
        "average_key_size",
        "btree_cache_size",
        "cache_available_percent",
        "congested",
        "root_usage_percent",
        "tree_depth",
    ] {
        set.push(value(&path.join(f))? as f64);
    }
    let internal = path.join("internal");
    set.push(value(&internal.join("active_journal_entries"))? as f64);
    set.push(value(&internal.join("btree_nodes"))? as f64);
    // node_exporter scales this microsecond value by 1e-9; kept for identical output.
    set.push(value(&internal.join("btree_read_average_duration_us"))? as f64 * 1e-9);
    set.push(value(&internal.join("cache_read_races"))? as f64);
    // Read (and so checked) as procfs does, though not exported.
    period(&path.join("stats_five_minute"))?;
    period(&path.join("stats_total"))?;

    let names = sorted_entries(path)?.unwrap_or_default();
    let mut bdevs = Vec::new();
    for name in numbered(&names, "bdev") {
        let dir = path.join(&name);
        let debug_path = dir.join("writeback_rate_debug");
        let [target, rate, prop, integral, change] =
            parse_writeback_rate_debug(&debug_path, &read_proc(&debug_path)?)?;
        let mut v = vec![
            value(&dir.join("dirty_data"))? as f64,
            target,
            rate,
            prop,
            integral,
            change,
        ];
        period(&dir.join("stats_five_minute"))?;
        v.extend(period(&dir.join("stats_total"))?);
        bdevs.push((name, v));
    }
    let mut caches = Vec::new();
    for name in numbered(&names, "cache") {
        let dir = path.join(&name);
        let mut v = vec![
            value(&dir.join("io_errors"))? as f64,
            value(&dir.join("metadata_written"))? as f64,
            value(&dir.join("written"))? as f64,
        ];
        if priority_stats {
            let p = dir.join("priority_stats");
            let (unused, metadata) = parse_priority_stats(&p, &read_proc(&p)?)?;
            v.extend([unused, metadata]);
        }
        caches.push((name, v));
    }
    Ok(BcacheSet {
        uuid: uuid.to_string(),
        set,
        bdevs,
        caches,
    })
}

/// Every cache set (`/sys/fs/bcache/*-*`), by uuid.
pub fn read_bcache(dir: &Path, priority_stats: bool) -> Result<Vec<BcacheSet>, CollectorError> {
    let names = sorted_entries(dir)?.unwrap_or_default();
    names
        .iter()
        .filter(|n| n.contains('-'))
        .map(|uuid| read_set(&dir.join(uuid), uuid, priority_stats))
        .collect()
}

fn emit(out: &mut MetricSet, f: &Family, labels: &[(&str, &str)], v: f64) {
    if f.counter {
        out.counter(f.name, f.help, labels, v);
    } else {
        out.gauge(f.name, f.help, labels, v);
    }
}

impl Collector for BcacheCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for s in read_bcache(&self.dir, self.priority_stats)? {
            let uuid = [("uuid", s.uuid.as_str())];
            for (f, v) in SET.iter().zip(&s.set) {
                emit(out, f, &uuid, *v);
            }
            for (name, values) in &s.bdevs {
                let l = [("uuid", s.uuid.as_str()), ("backing_device", name.as_str())];
                for (f, v) in BDEV.iter().chain(PERIOD).zip(values) {
                    emit(out, f, &l, *v);
                }
            }
            for (name, values) in &s.caches {
                let l = [("uuid", s.uuid.as_str()), ("cache_device", name.as_str())];
                for (f, v) in CACHE.iter().zip(values) {
                    emit(out, f, &l, *v);
                }
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
        assert_same_as_node_exporter, paths, scrape, try_value, value as sample,
    };

    const UUID: &str = "deaddd54-c735-46d5-868e-f331c5fd7c74";

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "bcache",
            build,
            &paths("bcache"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn priority_stats_same_as_node_exporter() {
        let mut options = CollectorOptions::default();
        options.more.bcache_priority_stats = true;
        assert_same_as_node_exporter(
            "bcache",
            build,
            &paths("bcache"),
            &options,
            &["--collector.bcache.priorityStats"],
        );
        let set = scrape(build, &paths("bcache"), &options).unwrap();
        let l = [("uuid", UUID), ("cache_device", "cache0")];
        assert_eq!(
            sample(&set, "node_bcache_priority_stats_unused_percent", &l),
            99.0
        );
    }

    #[test]
    fn humanized_values() {
        let set = scrape(build, &paths("bcache"), &CollectorOptions::default()).unwrap();
        let b = [("uuid", UUID), ("backing_device", "bdev0")];
        assert_eq!(sample(&set, "node_bcache_dirty_data_bytes", &b), 18747392.0);
        assert_eq!(
            sample(&set, "node_bcache_bypassed_bytes_total", &b),
            2148.0,
            "the device's own stats_total"
        );
        assert_eq!(sample(&set, "node_bcache_writeback_rate", &b), 1150976.0);
        let c = [("uuid", UUID), ("cache_device", "cache0")];
        assert_eq!(
            try_value(&set, "node_bcache_priority_stats_unused_percent", &c),
            None,
            "off by default"
        );
        assert_eq!(dehumanize("0"), Ok(0));
        assert_eq!(dehumanize("1.5x"), Ok(0), "unknown multiplier");
        assert!(dehumanize("").is_err());
        assert!(dehumanize("ab").is_err());
        assert_eq!(dehumanize_signed("-1.5k/sec"), Ok(-1524));
        assert_eq!(dehumanize_signed("-920.7M"), Ok(-965406720));
        let wb = parse_writeback_rate_debug(Path::new("x"), "rate:\t1.0k/sec\nnext io:\t-7969ms\n")
            .unwrap();
        assert_eq!(wb, [0.0, 1024.0, 0.0, 0.0, 0.0]);
        assert!(parse_priority_stats(Path::new("x"), "Unused:\tx%\n").is_err());
    }

    #[test]
    fn missing_files_fail_no_bcache_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("1-2")).unwrap();
        std::fs::create_dir_all(dir.path().join("register")).unwrap();
        assert!(read_bcache(dir.path(), false).unwrap_err().is_not_found());
        assert!(
            read_bcache(&dir.path().join("none"), false)
                .unwrap()
                .is_empty()
        );
    }
}
