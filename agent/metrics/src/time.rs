//! `time`: node_time_seconds, node_time_zone_offset_seconds and the clocksources from sysfs
//! (node_exporter 1.5.0 collector/time.go, time_linux.go).

use std::ffi::CStr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

pub struct TimeCollector {
    clocksource_dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(TimeCollector {
        clocksource_dir: ctx.paths.sys_path("devices/system/clocksource"),
    }))
}

/// One `clocksourceN` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockSource {
    pub available: Vec<String>,
    pub current: String,
}

impl Collector for TimeCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| CollectorError::Other(format!("system clock before 1970: {e}")))?;
        out.gauge(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            &[],
            // As Go: float64(UnixNano()) / 1e9, which rounds differently from secs + frac.
            now.as_nanos() as f64 / 1e9,
        );
        let (zone, offset) = local_zone(now.as_secs() as libc::time_t)?;
        out.gauge(
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
            &[("time_zone", &zone)],
            offset as f64,
        );
        for (i, cs) in self.clock_sources()?.iter().enumerate() {
            let device = i.to_string();
            for name in &cs.available {
                out.gauge(
                    "node_time_clocksource_available_info",
                    "Available clocksources read from '/sys/devices/system/clocksource'.",
                    &[("device", &device), ("clocksource", name)],
                    1.0,
                );
            }
            out.gauge(
                "node_time_clocksource_current_info",
                "Current clocksource read from '/sys/devices/system/clocksource'.",
                &[("device", &device), ("clocksource", &cs.current)],
                1.0,
            );
        }
        Ok(())
    }
}

impl TimeCollector {
    /// The `clocksource[0-9]*` directories in name order; the `device` label is the position
    /// in that order, as procfs-go numbers them.
    fn clock_sources(&self) -> Result<Vec<ClockSource>, CollectorError> {
        let dir = &self.clocksource_dir;
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| CollectorError::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                n.strip_prefix("clocksource")
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect();
        names.sort();
        names
            .iter()
            .map(|name| {
                let base = dir.join(name);
                Ok(ClockSource {
                    available: read_proc(base.join("available_clocksource"))?
                        .split_ascii_whitespace()
                        .map(str::to_string)
                        .collect(),
                    current: read_proc(base.join("current_clocksource"))?
                        .trim()
                        .to_string(),
                })
            })
            .collect()
    }
}

/// The local time zone abbreviation and UTC offset at `t`, as Go's `time.Now().Zone()`.
fn local_zone(t: libc::time_t) -> Result<(String, i64), CollectorError> {
    // SAFETY: `tm` is plain data that localtime_r fills in; all-zero is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call; localtime_r is the
    // thread-safe variant and writes only into `tm`.
    let res = unsafe { libc::localtime_r(&t, &mut tm) };
    if res.is_null() {
        return Err(CollectorError::Other(format!(
            "localtime_r: {}",
            std::io::Error::last_os_error()
        )));
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: glibc points tm_zone at a NUL-terminated string that lives as long as
        // the time zone data (the rest of the process unless tzset changes it).
        unsafe { CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    Ok((zone, tm.tm_gmtoff))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(root: &str) -> TimeCollector {
        TimeCollector {
            clocksource_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/time"))
                .join(root)
                .join("devices/system/clocksource"),
        }
    }

    fn labels(m: &prometheus::proto::Metric) -> Vec<(&str, &str)> {
        m.get_label()
            .iter()
            .map(|l| (l.name(), l.value()))
            .collect()
    }

    #[test]
    fn emits_time_zone_and_clocksources() {
        let mut set = MetricSet::new();
        collector("ok").update(&mut set).unwrap();
        let names: Vec<_> = set.families().iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "node_time_seconds",
                "node_time_zone_offset_seconds",
                "node_time_clocksource_available_info",
                "node_time_clocksource_current_info"
            ]
        );
        let now = set.families()[0].get_metric()[0].get_gauge().get_value();
        assert!(now > 1.6e9, "{now}");
        assert_eq!(labels(&set.families()[1].get_metric()[0])[0].0, "time_zone");
        let avail: Vec<_> = set.families()[2].get_metric().iter().map(labels).collect();
        assert_eq!(
            avail,
            [
                vec![("clocksource", "tsc"), ("device", "0")],
                vec![("clocksource", "kvm-clock"), ("device", "0")],
                vec![("clocksource", "hpet"), ("device", "1")],
            ]
        );
        let current: Vec<_> = set.families()[3].get_metric().iter().map(labels).collect();
        assert_eq!(
            current,
            [
                vec![("clocksource", "tsc"), ("device", "0")],
                vec![("clocksource", "hpet"), ("device", "1")],
            ]
        );
    }

    #[test]
    fn missing_sysfs_files_are_errors() {
        let err = collector("absent")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.is_not_found());
        let err = collector("broken")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("current_clocksource"), "{err}");
    }

    #[test]
    fn utc_zone_offset() {
        let (_, offset) = local_zone(0).unwrap();
        // The test host may be in any zone; offsets are within ±14 h.
        assert!(offset.abs() <= 14 * 3600);
    }
}
