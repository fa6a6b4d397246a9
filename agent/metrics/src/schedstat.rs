//! `schedstat`: per-CPU scheduler time from /proc/schedstat (node_exporter 1.5.0
//! collector/schedstat_linux.go).
//!
//! Hand-parsed: procfs-core only parses the per-process `schedstat`, not the system-wide
//! file.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

const NS_PER_SEC: f64 = 1e9;

pub struct SchedstatCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(SchedstatCollector {
        path: ctx.paths.proc_path("schedstat"),
    }))
}

/// One `cpuN` line: fields 7–9 after the name.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuSchedstat<'a> {
    pub cpu: &'a str,
    pub running_ns: u64,
    pub waiting_ns: u64,
    pub timeslices: u64,
}

impl Collector for SchedstatCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = match read_proc(&self.path) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => {
                tracing::debug!("schedstat file does not exist");
                return Err(CollectorError::NoData);
            }
            Err(e) => return Err(e),
        };
        for cpu in parse_schedstat(&text, &self.path.display().to_string())? {
            let labels = [("cpu", cpu.cpu)];
            out.counter(
                "node_schedstat_running_seconds_total",
                "Number of seconds CPU spent running a process.",
                &labels,
                cpu.running_ns as f64 / NS_PER_SEC,
            );
            out.counter(
                "node_schedstat_waiting_seconds_total",
                "Number of seconds spent by processing waiting for this CPU.",
                &labels,
                cpu.waiting_ns as f64 / NS_PER_SEC,
            );
            out.counter(
                "node_schedstat_timeslices_total",
                "Number of timeslices executed by CPU.",
                &labels,
                cpu.timeslices as f64,
            );
        }
        Ok(())
    }
}

/// The `cpuN` lines; `version`, `timestamp` and `domainN` lines are skipped.
pub fn parse_schedstat<'a>(
    text: &'a str,
    what: &str,
) -> Result<Vec<CpuSchedstat<'a>>, CollectorError> {
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(cpu) = fields.next().and_then(|n| n.strip_prefix("cpu")) else {
            continue;
        };
        if cpu.is_empty() || !cpu.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CollectorError::parse(what, format!("bad cpu in {line:?}")));
        }
        let mut nums = [0u64; 9];
        for slot in &mut nums {
            let f = fields.next().ok_or_else(|| {
                CollectorError::parse(what, format!("too few fields in {line:?}"))
            })?;
            *slot = f
                .parse()
                .map_err(|e| CollectorError::parse(what, format!("{f:?} in {line:?}: {e}")))?;
        }
        cpus.push(CpuSchedstat {
            cpu,
            running_ns: nums[6],
            waiting_ns: nums[7],
            timeslices: nums[8],
        });
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(file: &str) -> SchedstatCollector {
        SchedstatCollector {
            path: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/schedstat"))
                .join(file),
        }
    }

    #[test]
    fn emits_per_cpu_counters() {
        let mut set = MetricSet::new();
        collector("schedstat").update(&mut set).unwrap();
        let f = &set.families()[0];
        assert_eq!(f.name(), "node_schedstat_running_seconds_total");
        assert_eq!(f.get_metric().len(), 2);
        assert_eq!(f.get_metric()[1].get_label()[0].value(), "1");
        assert_eq!(f.get_metric()[1].get_counter().get_value(), 2.5);
        let w = &set.families()[1];
        assert_eq!(w.name(), "node_schedstat_waiting_seconds_total");
        assert_eq!(w.get_metric()[0].get_counter().get_value(), 0.000001);
        let t = &set.families()[2];
        assert_eq!(t.name(), "node_schedstat_timeslices_total");
        assert_eq!(t.get_metric()[0].get_counter().get_value(), 42.0);
    }

    #[test]
    fn missing_file_is_no_data_and_garbage_is_an_error() {
        assert!(matches!(
            collector("absent").update(&mut MetricSet::new()),
            Err(CollectorError::NoData)
        ));
        let err = collector("truncated")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
