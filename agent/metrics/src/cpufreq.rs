//! `cpufreq`: per-CPU frequencies from sysfs cpufreq (node_exporter 1.5.0
//! collector/cpufreq_linux.go). Values are kHz in sysfs, exported in hertz.

use std::path::{Path, PathBuf};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

pub struct CpufreqCollector {
    cpu_dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(CpufreqCollector {
        cpu_dir: ctx.paths.sys_path("devices/system/cpu"),
    }))
}

/// sysfs file → (family, help), in node_exporter's emit order.
const FILES: [(&str, &str, &str); 6] = [
    (
        "cpuinfo_cur_freq",
        "node_cpu_frequency_hertz",
        "Current cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_min_freq",
        "node_cpu_frequency_min_hertz",
        "Minimum cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_max_freq",
        "node_cpu_frequency_max_hertz",
        "Maximum cpu thread frequency in hertz.",
    ),
    (
        "scaling_cur_freq",
        "node_cpu_scaling_frequency_hertz",
        "Current scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_min_freq",
        "node_cpu_scaling_frequency_min_hertz",
        "Minimum scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_max_freq",
        "node_cpu_scaling_frequency_max_hertz",
        "Maximum scaled CPU thread frequency in hertz.",
    ),
];

impl Collector for CpufreqCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let entries = std::fs::read_dir(&self.cpu_dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CollectorError::NoData
            } else {
                CollectorError::io(&self.cpu_dir, e)
            }
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| CollectorError::io(&self.cpu_dir, e))?;
            let name = entry.file_name();
            let Some(cpu) = name.to_str().and_then(|n| n.strip_prefix("cpu")) else {
                continue;
            };
            if !cpu.starts_with(|c: char| c.is_ascii_digit()) {
                continue; // cpufreq, cpuidle, ...
            }
            let freq_dir = entry.path().join("cpufreq");
            if !freq_dir.is_dir() {
                continue; // this CPU has no cpufreq driver
            }
            for (file, family, help) in FILES {
                // Unreadable files (cpuinfo_cur_freq is root-only) are skipped, as procfs does.
                if let Some(khz) = read_khz(&freq_dir.join(file))? {
                    out.gauge(family, help, &[("cpu", cpu)], khz * 1000.0);
                }
            }
        }
        // CPUs without cpufreq (e.g. most VMs) give no series but success=1, as in
        // node_exporter.
        Ok(())
    }
}

/// A kHz value, `None` if the file is absent or not readable by us.
fn read_khz(path: &Path) -> Result<Option<f64>, CollectorError> {
    let text = match read_proc(path) {
        Ok(t) => t,
        Err(CollectorError::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let text = text.trim();
    text.parse::<u64>()
        .map(|v| Some(v as f64))
        .map_err(|e| CollectorError::parse(path.display().to_string(), format!("{text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::try_value;

    fn collector(root: &str) -> CpufreqCollector {
        CpufreqCollector {
            cpu_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cpufreq"))
                .join(root)
                .join("devices/system/cpu"),
        }
    }

    fn value(set: &MetricSet, name: &str, cpu: &str) -> Option<f64> {
        try_value(set, name, &[("cpu", cpu)])
    }

    #[test]
    fn emits_hertz_for_cpus_with_cpufreq() {
        let mut set = MetricSet::new();
        collector("ok").update(&mut set).unwrap();
        assert_eq!(
            value(&set, "node_cpu_scaling_frequency_hertz", "0"),
            Some(1_800_000_000.0)
        );
        assert_eq!(
            value(&set, "node_cpu_frequency_max_hertz", "0"),
            Some(3_000_000_000.0)
        );
        assert_eq!(
            value(&set, "node_cpu_scaling_frequency_min_hertz", "0"),
            Some(800_000_000.0)
        );
        // cpuinfo_cur_freq absent: family omitted; cpu1 has no cpufreq directory.
        assert!(!set.contains("node_cpu_frequency_hertz"));
        assert_eq!(value(&set, "node_cpu_scaling_frequency_hertz", "1"), None);
        let f = set
            .families()
            .iter()
            .find(|f| f.name() == "node_cpu_scaling_frequency_hertz")
            .unwrap();
        assert_eq!(f.help(), "Current scaled CPU thread frequency in hertz.");
    }

    #[test]
    fn absent_cpufreq_is_empty_or_no_data_and_garbage_is_an_error() {
        let mut set = MetricSet::new();
        collector("none").update(&mut set).unwrap();
        assert!(set.families().is_empty());
        assert!(matches!(
            collector("absent").update(&mut MetricSet::new()),
            Err(CollectorError::NoData)
        ));
        let err = collector("garbage")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("scaling_cur_freq"), "{err}");
    }
}
