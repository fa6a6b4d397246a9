//! `softnet`: node_softnet_*_total per CPU from /proc/net/softnet_stat (node_exporter 1.5.0
//! collector/softnet_linux.go). The cpu label is the line number, as in 1.5.0.
//!
//! Hand-parsed: procfs-core has no softnet_stat parser.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// Fewest columns any supported kernel prints (procfs' minimum).
const MIN_COLUMNS: usize = 9;

pub struct SoftnetCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(SoftnetCollector {
        path: ctx.paths.proc_net_path("softnet_stat"),
    }))
}

/// processed, dropped, time_squeeze of one CPU.
#[derive(Debug, PartialEq)]
pub struct SoftnetStat {
    pub processed: u64,
    pub dropped: u64,
    pub time_squeezed: u64,
}

impl Collector for SoftnetCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let stats = parse_softnet(&read_proc(&self.path)?)?;
        for (cpu, s) in stats.iter().enumerate() {
            let cpu = cpu.to_string();
            let labels = [("cpu", cpu.as_str())];
            out.counter(
                "node_softnet_processed_total",
                "Number of processed packets",
                &labels,
                s.processed as f64,
            );
            out.counter(
                "node_softnet_dropped_total",
                "Number of dropped packets",
                &labels,
                s.dropped as f64,
            );
            out.counter(
                "node_softnet_times_squeezed_total",
                "Number of times processing packets ran out of quota",
                &labels,
                s.time_squeezed as f64,
            );
        }
        Ok(())
    }
}

/// Parses the hex columns of /proc/net/softnet_stat.
pub fn parse_softnet(text: &str) -> Result<Vec<SoftnetStat>, CollectorError> {
    let mut stats = Vec::new();
    for line in super::lines(text).filter(|l| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < MIN_COLUMNS {
            return Err(CollectorError::parse(
                "/proc/net/softnet_stat",
                format!(
                    "{} columns, want at least {MIN_COLUMNS}: {line:?}",
                    cols.len()
                ),
            ));
        }
        let hex = |i: usize| {
            u64::from_str_radix(cols[i], 16).map_err(|e| {
                CollectorError::parse("/proc/net/softnet_stat", format!("{:?}: {e}", cols[i]))
            })
        };
        stats.push(SoftnetStat {
            processed: hex(0)?,
            dropped: hex(1)?,
            time_squeezed: hex(2)?,
        });
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, kind, len, paths, scrape, value};

    #[test]
    fn emits_per_cpu_counters() {
        let set = scrape(build, &paths("softnet"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(&set, "node_softnet_processed_total", &[("cpu", "0")]),
            285.0
        );
        assert_eq!(
            value(&set, "node_softnet_processed_total", &[("cpu", "1")]),
            15106.0
        );
        assert_eq!(
            value(&set, "node_softnet_dropped_total", &[("cpu", "1")]),
            2.0
        );
        assert_eq!(
            value(&set, "node_softnet_times_squeezed_total", &[("cpu", "1")]),
            10.0
        );
        assert_eq!(
            kind(&set, "node_softnet_dropped_total"),
            MetricType::COUNTER
        );
        assert_eq!(
            help(&set, "node_softnet_dropped_total"),
            "Number of dropped packets"
        );
        assert_eq!(len(&set, "node_softnet_processed_total"), 2);
    }

    #[test]
    fn truncated_or_non_hex_lines_are_errors() {
        let err = parse_softnet("0000011d 00000000\n").unwrap_err();
        assert!(err.to_string().contains("softnet_stat"), "{err}");
        assert!(parse_softnet("zz 0 0 0 0 0 0 0 0 0 0\n").is_err());
        assert!(parse_softnet("").unwrap().is_empty());
    }
}
