//! `thermal_zone`: node_thermal_zone_temp and node_cooling_device_{cur,max}_state from
//! /sys/class/thermal (node_exporter 1.5.0 collector/thermal_zone_linux.go over procfs'
//! ClassThermalZoneStats / ClassCoolingDeviceStats).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

pub struct ThermalZoneCollector {
    class_thermal: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(ThermalZoneCollector {
        class_thermal: ctx.paths.sys_path("class/thermal"),
    }))
}

/// Directories `<prefix><digits...>` under `dir`, as (suffix, path), sorted. A missing
/// class directory is simply empty (Go's filepath.Glob).
fn numbered(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>, CollectorError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CollectorError::io(dir, e)),
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let suffix = name.strip_prefix(prefix)?;
            suffix
                .starts_with(|c: char| c.is_ascii_digit())
                .then(|| (suffix.to_string(), e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn read_trimmed(path: PathBuf) -> Result<String, CollectorError> {
    Ok(read_proc(path)?.trim().to_string())
}

fn read_int(path: PathBuf) -> Result<i64, CollectorError> {
    let s = read_trimmed(path.clone())?;
    s.parse()
        .map_err(|e| CollectorError::parse(path.display().to_string(), format!("{s:?}: {e}")))
}

/// procfs skips a device whose attributes cannot be read (e.g. ENODATA from a sensor
/// that is powered down) rather than failing the whole class; parse errors still fail.
fn skip_unreadable<T>(r: Result<T, CollectorError>) -> Result<Option<T>, CollectorError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ CollectorError::Io { .. }) => {
            tracing::debug!(error = %e, "skipping unreadable thermal device");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Collector for ThermalZoneCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for (zone, dir) in numbered(&self.class_thermal, "thermal_zone")? {
            let read = || -> Result<(String, i64), CollectorError> {
                Ok((read_trimmed(dir.join("type"))?, read_int(dir.join("temp"))?))
            };
            if let Some((kind, temp)) = skip_unreadable(read())? {
                out.gauge(
                    "node_thermal_zone_temp",
                    "Zone temperature in Celsius",
                    &[("zone", &zone), ("type", &kind)],
                    temp as f64 / 1000.0,
                );
            }
        }
        for (name, dir) in numbered(&self.class_thermal, "cooling_device")? {
            let read = || -> Result<(String, i64, i64), CollectorError> {
                Ok((
                    read_trimmed(dir.join("type"))?,
                    read_int(dir.join("cur_state"))?,
                    read_int(dir.join("max_state"))?,
                ))
            };
            if let Some((kind, cur, max)) = skip_unreadable(read())? {
                let labels = [("name", name.as_str()), ("type", kind.as_str())];
                out.gauge(
                    "node_cooling_device_cur_state",
                    "Current throttle state of the cooling device",
                    &labels,
                    cur as f64,
                );
                out.gauge(
                    "node_cooling_device_max_state",
                    "Maximum throttle state of the cooling device",
                    &labels,
                    max as f64,
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
    use crate::fixtures::{help, len, names, paths, scrape, testdata, value};

    #[test]
    fn emits_zones_and_cooling_devices() {
        let set = scrape(build, &paths("thermal_zone"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(
                &set,
                "node_thermal_zone_temp",
                &[("zone", "0"), ("type", "acpitz")]
            ),
            27.8
        );
        assert_eq!(
            value(
                &set,
                "node_thermal_zone_temp",
                &[("zone", "1"), ("type", "x86_pkg_temp")]
            ),
            -1.5
        );
        // thermal_zone2 has no temp file (unreadable sensor): skipped.
        assert_eq!(len(&set, "node_thermal_zone_temp"), 2);
        assert_eq!(
            help(&set, "node_thermal_zone_temp"),
            "Zone temperature in Celsius"
        );
        let fan = [("name", "0"), ("type", "Fan")];
        assert_eq!(value(&set, "node_cooling_device_cur_state", &fan), 1.0);
        assert_eq!(value(&set, "node_cooling_device_max_state", &fan), 3.0);
    }

    #[test]
    fn empty_class_is_success_bad_value_is_error() {
        let mut p = paths("thermal_zone");
        p.sys = testdata("thermal_zone").join("missing");
        let set = scrape(build, &p, &CollectorOptions::default()).unwrap();
        assert!(names(&set).is_empty());
        p.sys = testdata("thermal_zone").join("sys_bad");
        let err = scrape(build, &p, &CollectorOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("temp"), "{err}");
    }
}
