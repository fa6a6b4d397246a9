//! `conntrack`: node_nf_conntrack_* from /proc/sys/net/netfilter and /proc/net/stat/
//! nf_conntrack (node_exporter 1.5.0 collector/conntrack_linux.go). The stat_* values are
//! cumulative but exported as GAUGES, as upstream does.
//!
//! Hand-parsed: procfs-core has no nf_conntrack stat parser. Columns are looked up by the
//! header names (the kernel has inserted columns over time) and summed over CPUs.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// Header column → (metric name, help).
const STATS: [(&str, &str, &str); 8] = [
    (
        "found",
        "node_nf_conntrack_stat_found",
        "Number of searched entries which were successful.",
    ),
    (
        "invalid",
        "node_nf_conntrack_stat_invalid",
        "Number of packets seen which can not be tracked.",
    ),
    (
        "ignore",
        "node_nf_conntrack_stat_ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    (
        "insert",
        "node_nf_conntrack_stat_insert",
        "Number of entries inserted into the list.",
    ),
    (
        "insert_failed",
        "node_nf_conntrack_stat_insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    (
        "drop",
        "node_nf_conntrack_stat_drop",
        "Number of packets dropped due to conntrack failure.",
    ),
    (
        "early_drop",
        "node_nf_conntrack_stat_early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        "search_restart",
        "node_nf_conntrack_stat_search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

pub struct ConntrackCollector {
    count: PathBuf,
    max: PathBuf,
    stat: PathBuf,
    /// Whether `stat` is the node's namespace seen through a host procfs mount
    /// (`<procfs>/1/net`, see `HostPaths::proc_net_path`).
    host_namespace: bool,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    let stat = ctx.paths.proc_net_path("stat/nf_conntrack");
    Ok(Box::new(ConntrackCollector {
        count: ctx.paths.proc_path("sys/net/netfilter/nf_conntrack_count"),
        max: ctx.paths.proc_path("sys/net/netfilter/nf_conntrack_max"),
        host_namespace: stat != ctx.paths.proc_path("net/stat/nf_conntrack"),
        stat,
    }))
}

/// Missing files mean the conntrack module is not loaded: no data, not an error.
fn no_data_if_missing(e: CollectorError) -> CollectorError {
    if e.is_not_found() {
        tracing::debug!(error = %e, "conntrack probably not loaded");
        CollectorError::NoData
    } else {
        e
    }
}

fn read_uint(path: &PathBuf) -> Result<f64, CollectorError> {
    let text = read_proc(path).map_err(no_data_if_missing)?;
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|e| CollectorError::parse(path.display().to_string(), format!("{text:?}: {e}")))
}

impl Collector for ConntrackCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        // nf_conntrack_count is a per-namespace sysctl, and /proc/sys always shows the
        // reader's: in a pod without hostNetwork, the pod's table, where the mixin's
        // conntrack alert can never fire. The stat file's `entries` column is the same
        // count and exists per process, so the node's comes from <procfs>/1/net. The limit
        // (nf_conntrack_max) is global.
        let stat = read_proc(&self.stat).map_err(no_data_if_missing);
        let host_entries = match (&stat, self.host_namespace) {
            (Ok(text), true) => parse_entries(text),
            _ => None,
        };
        let entries = match host_entries {
            Some(n) => n as f64,
            None => read_uint(&self.count)?,
        };
        out.gauge(
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
            &[],
            entries,
        );
        out.gauge(
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table.",
            &[],
            read_uint(&self.max)?,
        );
        let text = stat?;
        let sums = parse_stat(&text)?;
        for ((_, name, help), v) in STATS.iter().zip(sums) {
            out.gauge(name, help, &[], v as f64);
        }
        Ok(())
    }
}

/// The `entries` column of the first row (the namespace's table size, the same on every
/// CPU's row), if the header has one.
pub fn parse_entries(text: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let col = lines
        .next()?
        .split_whitespace()
        .position(|h| h == "entries")?;
    let field = lines.next()?.split_whitespace().nth(col)?;
    u64::from_str_radix(field, 16).ok()
}

/// Sums the [`STATS`] columns over all per-CPU rows of /proc/net/stat/nf_conntrack.
pub fn parse_stat(text: &str) -> Result<[u64; STATS.len()], CollectorError> {
    const FILE: &str = "/proc/net/stat/nf_conntrack";
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| CollectorError::parse(FILE, "empty file"))?
        .split_whitespace()
        .collect();
    let mut columns = [0usize; STATS.len()];
    for (col, (name, _, _)) in columns.iter_mut().zip(STATS) {
        *col = header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| CollectorError::parse(FILE, format!("no {name:?} column in header")))?;
    }
    let mut sums = [0u64; STATS.len()];
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != header.len() {
            return Err(CollectorError::parse(
                FILE,
                format!(
                    "{} fields, header has {}: {line:?}",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        for (sum, &col) in sums.iter_mut().zip(&columns) {
            *sum += u64::from_str_radix(fields[col], 16)
                .map_err(|e| CollectorError::parse(FILE, format!("{:?}: {e}", fields[col])))?;
        }
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, kind, names, paths, scrape, testdata, value};

    #[test]
    fn emits_entries_and_summed_stats_as_gauges() {
        let set = scrape(build, &paths("conntrack"), &CollectorOptions::default()).unwrap();
        assert_eq!(value(&set, "node_nf_conntrack_entries", &[]), 12.0);
        assert_eq!(
            value(&set, "node_nf_conntrack_entries_limit", &[]),
            262144.0
        );
        assert_eq!(value(&set, "node_nf_conntrack_stat_found", &[]), 3.0);
        assert_eq!(
            value(&set, "node_nf_conntrack_stat_insert", &[]),
            0x10 as f64 + 1.0
        );
        assert_eq!(
            value(&set, "node_nf_conntrack_stat_search_restart", &[]),
            0xff as f64
        );
        assert_eq!(kind(&set, "node_nf_conntrack_stat_drop"), MetricType::GAUGE);
        assert_eq!(
            help(&set, "node_nf_conntrack_stat_early_drop"),
            "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached."
        );
        assert_eq!(names(&set).len(), 10);
    }

    #[test]
    fn missing_module_is_no_data_bad_files_are_errors() {
        let mut p = paths("conntrack");
        p.proc = testdata("conntrack").join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
        assert!(parse_stat("").is_err());
        assert!(
            parse_stat("entries found\n0 1\n").is_err(),
            "missing columns"
        );
        let header =
            "entries found invalid ignore insert insert_failed drop early_drop search_restart";
        assert!(
            parse_stat(&format!("{header}\n0 0\n")).is_err(),
            "truncated row"
        );
        let err = parse_stat(&format!("{header}\n0 0 0 0 0 0 0 0 xyz\n")).unwrap_err();
        assert!(err.to_string().contains("nf_conntrack"), "{err}");
    }

    #[test]
    fn entries_come_from_the_host_namespace_of_a_host_procfs_mount() {
        // The pod's own sysctl says 3; init's (the node's) table has 0x2a entries.
        let p = paths("conntrack_hostns");
        let set = scrape(build, &p, &CollectorOptions::default()).unwrap();
        assert_eq!(value(&set, "node_nf_conntrack_entries", &[]), 42.0);
        assert_eq!(value(&set, "node_nf_conntrack_entries_limit", &[]), 65536.0);
        assert_eq!(value(&set, "node_nf_conntrack_stat_found", &[]), 7.0);
        assert_eq!(parse_entries("entries found\n0000000c 1\n"), Some(12));
        assert_eq!(parse_entries("found\n1\n"), None);
    }
}
