//! `stat`: boot time, context switches, forks, interrupts and process counts from
//! /proc/stat (node_exporter 1.5.0 collector/stat_linux.go); with `--collector.stat.softirq`
//! also node_softirqs_total{vector} from the `softirq` line.

use std::path::PathBuf;

use procfs::{ExplicitSystemInfo, FromBufReadSI, KernelStats};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// Only `ticks_per_second` matters to `KernelStats`; /proc/stat uses USER_HZ = 100.
const SYSTEM_INFO: ExplicitSystemInfo = ExplicitSystemInfo {
    boot_time_secs: 0,
    ticks_per_second: 100,
    page_size: 4096,
    is_little_endian: cfg!(target_endian = "little"),
};

pub struct StatCollector {
    path: PathBuf,
    softirq: bool,
}

/// The vectors of the `softirq` line after its total, in the kernel's order.
pub const SOFTIRQ_VECTORS: &[&str] = &[
    "hi",
    "timer",
    "net_tx",
    "net_rx",
    "block",
    "block_iopoll",
    "tasklet",
    "sched",
    "hrtimer",
    "rcu",
];

/// Per-vector counts of the `softirq` line; zeros when the line is absent.
pub fn parse_softirq(text: &str, what: &str) -> Result<Vec<u64>, CollectorError> {
    let Some(rest) = super::lines(text).find_map(|l| l.strip_prefix("softirq ")) else {
        return Ok(vec![0; SOFTIRQ_VECTORS.len()]);
    };
    let values = rest
        .split_ascii_whitespace()
        .map(|v| {
            v.parse::<u64>()
                .map_err(|e| CollectorError::parse(what, format!("softirq {v:?}: {e}")))
        })
        .collect::<Result<Vec<u64>, _>>()?;
    if values.len() < SOFTIRQ_VECTORS.len() + 1 {
        return Err(CollectorError::parse(
            what,
            format!("softirq line has {} values", values.len()),
        ));
    }
    Ok(values[1..=SOFTIRQ_VECTORS.len()].to_vec())
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(StatCollector {
        path: ctx.paths.proc_path("stat"),
        softirq: ctx.options.more.stat_softirq,
    }))
}

/// The /proc/stat figures this collector exports.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemStat {
    pub intr: u64,
    pub ctxt: u64,
    pub btime: u64,
    pub processes: u64,
    pub procs_running: u32,
    pub procs_blocked: u32,
}

impl Collector for StatCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = read_proc(&self.path)?;
        let s = parse_stat(&text, &self.path.display().to_string())?;
        out.counter(
            "node_intr_total",
            "Total number of interrupts serviced.",
            &[],
            s.intr as f64,
        );
        out.counter(
            "node_context_switches_total",
            "Total number of context switches.",
            &[],
            s.ctxt as f64,
        );
        out.counter(
            "node_forks_total",
            "Total number of forks.",
            &[],
            s.processes as f64,
        );
        out.gauge(
            "node_boot_time_seconds",
            "Node boot time, in unixtime.",
            &[],
            s.btime as f64,
        );
        out.gauge(
            "node_procs_running",
            "Number of processes in runnable state.",
            &[],
            f64::from(s.procs_running),
        );
        out.gauge(
            "node_procs_blocked",
            "Number of processes blocked waiting for I/O to complete.",
            &[],
            f64::from(s.procs_blocked),
        );
        if self.softirq {
            let values = parse_softirq(&text, &self.path.display().to_string())?;
            for (vector, v) in SOFTIRQ_VECTORS.iter().zip(values) {
                out.counter(
                    "node_softirqs_total",
                    "Number of softirq calls.",
                    &[("vector", vector)],
                    v as f64,
                );
            }
        }
        Ok(())
    }
}

/// Parses /proc/stat with procfs's `KernelStats`; the `intr` total, which procfs-core does
/// not keep, is the first number of the `intr` line.
pub fn parse_stat(text: &str, what: &str) -> Result<SystemStat, CollectorError> {
    let ks = KernelStats::from_buf_read(text.as_bytes(), &SYSTEM_INFO)
        .map_err(|e| CollectorError::parse(what, e))?;
    let intr_field = text
        .lines()
        .find_map(|l| l.strip_prefix("intr "))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .ok_or_else(|| CollectorError::parse(what, "no intr line"))?;
    let intr = intr_field
        .parse()
        .map_err(|e| CollectorError::parse(what, format!("intr {intr_field:?}: {e}")))?;
    Ok(SystemStat {
        intr,
        ctxt: ks.ctxt,
        btime: ks.btime,
        processes: ks.processes,
        procs_running: ks.procs_running.unwrap_or(0),
        procs_blocked: ks.procs_blocked.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::MetricType;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/stat")).join(name)
    }

    #[test]
    fn emits_node_exporter_families() {
        let c = StatCollector {
            path: fixture("stat"),
            softirq: false,
        };
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        let got: Vec<_> = set
            .families()
            .iter()
            .map(|f| {
                let m = &f.get_metric()[0];
                (
                    f.name().to_string(),
                    f.get_field_type(),
                    m.get_counter().get_value() + m.get_gauge().get_value(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("node_intr_total".into(), MetricType::COUNTER, 12345.0),
                (
                    "node_context_switches_total".into(),
                    MetricType::COUNTER,
                    987654.0
                ),
                ("node_forks_total".into(), MetricType::COUNTER, 4242.0),
                (
                    "node_boot_time_seconds".into(),
                    MetricType::GAUGE,
                    1700000000.0
                ),
                ("node_procs_running".into(), MetricType::GAUGE, 3.0),
                ("node_procs_blocked".into(), MetricType::GAUGE, 1.0),
            ]
        );
        assert_eq!(set.families()[3].help(), "Node boot time, in unixtime.");
    }

    #[test]
    fn bad_input_is_an_error_naming_the_file() {
        let text = std::fs::read_to_string(fixture("stat")).unwrap();
        for bad in [
            text.replace("ctxt 987654", "ctxt x"),
            text.replace("btime 1700000000\n", ""),
            text.replace("intr 12345 0 9 0", "intr"),
            text.replace("intr 12345", "intr -1"),
        ] {
            let err = parse_stat(&bad, "/proc/stat").unwrap_err();
            assert!(err.to_string().contains("/proc/stat"), "{err}");
        }
        let c = StatCollector {
            path: fixture("absent"),
            softirq: false,
        };
        assert!(c.update(&mut MetricSet::new()).unwrap_err().is_not_found());
    }

    #[test]
    fn softirq_same_as_node_exporter() {
        use crate::fixtures::{assert_same_as_node_exporter, paths};
        let mut options = crate::CollectorOptions::default();
        options.more.stat_softirq = true;
        assert_same_as_node_exporter(
            "stat",
            build,
            &paths("stat-softirq"),
            &options,
            &["--collector.stat.softirq"],
        );
    }

    #[test]
    fn softirq_line() {
        assert_eq!(
            parse_softirq("softirq 55 1 2 3 4 5 6 7 8 9 10 11\n", "s").unwrap()[9],
            10
        );
        assert_eq!(
            parse_softirq("cpu 1\n", "s").unwrap(),
            vec![0; 10],
            "absent line"
        );
        assert!(parse_softirq("softirq 1 2 3\n", "s").is_err());
        assert!(parse_softirq("softirq 1 2 3 4 5 6 7 8 9 10 x\n", "s").is_err());
    }
}
