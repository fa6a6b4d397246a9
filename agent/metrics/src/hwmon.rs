//! `hwmon`: node_hwmon_* from /sys/class/hwmon/hwmon*/ (node_exporter 1.5.0
//! collector/hwmon_linux.go). Sensor files are named `<type><n>_<property>`; values are
//! scaled to base units (m°C → °C, mV → V, µW → W, ...).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

const SENSOR_TYPES: [&str; 13] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

pub struct HwmonCollector {
    class_hwmon: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(HwmonCollector {
        class_hwmon: ctx.paths.sys_path("class/hwmon"),
    }))
}

/// Lower-cases and replaces everything outside `[a-z0-9:_]` with `_`, trimming `_`.
pub fn clean_name(name: &str) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_').to_string()
}

/// Splits `temp1_crit_alarm` into ("temp", 1, "crit_alarm") like node_exporter's
/// `^(?P<type>[^0-9]+)(?P<id>[0-9]*)?(_(?P<property>.+))?$`.
pub fn explode_sensor_filename(name: &str) -> Option<(&str, u64, &str)> {
    let type_end = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    if type_end == 0 {
        return None;
    }
    let (kind, rest) = name.split_at(type_end);
    let id_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (id, rest) = rest.split_at(id_end);
    let property = match rest {
        "" => "",
        r => r.strip_prefix('_').filter(|p| !p.is_empty())?,
    };
    let num = if id.is_empty() { 0 } else { id.parse().ok()? };
    Some((kind, num, property))
}

/// sensor (e.g. `temp1`) → property (`input`, `crit`, `label`, "" ...) → raw value.
type SensorData = BTreeMap<String, BTreeMap<String, String>>;

fn collect_sensor_data(dir: &Path, data: &mut SensorData) -> Result<(), CollectorError> {
    let entries = std::fs::read_dir(dir).map_err(|e| CollectorError::io(dir, e))?;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some((kind, num, property)) = explode_sensor_filename(file) else {
            continue;
        };
        if !SENSOR_TYPES.contains(&kind) {
            continue;
        }
        // Unreadable files (write-only, EIO from a sleeping device, directories) are skipped.
        let Ok(raw) = read_proc(entry.path()) else {
            continue;
        };
        data.entry(format!("{kind}{num}"))
            .or_default()
            .insert(property.to_string(), raw.trim_end_matches('\n').to_string());
    }
    Ok(())
}

/// A stable chip name: `<bus>_<device>` of the device link, else the `name` file, else
/// the hwmonN directory name.
fn chip_name(dir: &Path) -> Result<String, CollectorError> {
    if let Ok(dev) = std::fs::canonicalize(dir.join("device")) {
        let dev_name = dev.file_name().map(|n| clean_name(&n.to_string_lossy()));
        let dev_type = dev
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean_name(&n.to_string_lossy()));
        match (dev_type, dev_name) {
            (Some(t), Some(n)) if !t.is_empty() && !n.is_empty() => return Ok(format!("{t}_{n}")),
            (_, Some(n)) if !n.is_empty() => return Ok(n),
            _ => {}
        }
    }
    if let Some(name) = human_chip_name(dir) {
        return Ok(name);
    }
    let real = std::fs::canonicalize(dir).map_err(|e| CollectorError::io(dir, e))?;
    let name = real
        .file_name()
        .map(|n| clean_name(&n.to_string_lossy()))
        .unwrap_or_default();
    if name.is_empty() {
        return Err(CollectorError::Other(format!(
            "could not derive a monitoring name for {}",
            dir.display()
        )));
    }
    Ok(name)
}

/// The cleaned `name` file, if any.
fn human_chip_name(dir: &Path) -> Option<String> {
    let raw = read_proc(dir.join("name")).ok()?;
    let name = clean_name(&raw);
    (!name.is_empty()).then_some(name)
}

fn emit_chip(out: &mut MetricSet, dir: &Path) -> Result<(), CollectorError> {
    let chip = chip_name(dir)?;
    let mut data = SensorData::new();
    collect_sensor_data(dir, &mut data)?;
    let device = dir.join("device");
    if device.exists() {
        collect_sensor_data(&device, &mut data)?;
    }
    if let Some(human) = human_chip_name(dir) {
        out.gauge(
            "node_hwmon_chip_names",
            "Annotation metric for human-readable chip names",
            &[("chip", &chip), ("chip_name", &human)],
            1.0,
        );
    }
    for (sensor, props) in &data {
        let Some((kind, _, _)) = explode_sensor_filename(sensor) else {
            continue;
        };
        let labels = [("chip", chip.as_str()), ("sensor", sensor.as_str())];
        if let Some(label) = props.get("label") {
            out.gauge(
                "node_hwmon_sensor_label",
                "Label for given chip and sensor",
                &[("chip", &chip), ("sensor", sensor), ("label", label)],
                1.0,
            );
        }
        let bare = props.get("").map(String::as_str);
        match kind {
            "beep_enable" => {
                let v = if bare == Some("1") { 1.0 } else { 0.0 };
                out.gauge(
                    "node_hwmon_beep_enabled",
                    "Hardware beep enabled",
                    &labels,
                    v,
                );
                continue;
            }
            "vrm" => {
                if let Some(v) = bare.and_then(|v| v.trim().parse::<f64>().ok()) {
                    out.gauge(
                        "node_hwmon_voltage_regulator_version",
                        "Hardware voltage regulator",
                        &labels,
                        v,
                    );
                }
                continue;
            }
            "update_interval" => {
                if let Some(v) = bare.and_then(|v| v.trim().parse::<f64>().ok()) {
                    out.gauge(
                        "node_hwmon_update_interval_seconds",
                        "Hardware monitor update interval",
                        &labels,
                        v * 0.001,
                    );
                }
                continue;
            }
            _ => {}
        }
        for (element, raw) in props {
            if element == "label" {
                continue;
            }
            let mut name = format!("node_hwmon_{kind}");
            if element == "input" {
                // `input` is the value itself, unless a bare file holds that.
                if bare.is_some() {
                    name.push_str("_input");
                }
            } else if !element.is_empty() {
                name.push('_');
                name.push_str(&clean_name(element));
            }
            // Non-numeric values are skipped, as upstream does.
            let Ok(v) = raw.trim().parse::<f64>() else {
                continue;
            };
            let e = element.as_str();
            let (name, help, value, counter) = if e == "fault" || e == "alarm" {
                (
                    name,
                    format!("Hardware sensor {e} status ({kind})"),
                    v,
                    false,
                )
            } else if e == "beep" {
                (
                    format!("{name}_enabled"),
                    "Hardware monitor sensor has beeping enabled".into(),
                    v,
                    false,
                )
            } else if kind == "in" || kind == "cpu" {
                (
                    format!("{name}_volts"),
                    format!("Hardware monitor for voltage ({e})"),
                    v * 0.001,
                    false,
                )
            } else if kind == "temp" && e != "type" {
                let shown = if e.is_empty() { "input" } else { e };
                (
                    format!("{name}_celsius"),
                    format!("Hardware monitor for temperature ({shown})"),
                    v * 0.001,
                    false,
                )
            } else if kind == "curr" {
                (
                    format!("{name}_amps"),
                    format!("Hardware monitor for current ({e})"),
                    v * 0.001,
                    false,
                )
            } else if kind == "energy" {
                (
                    format!("{name}_joule_total"),
                    format!("Hardware monitor for joules used so far ({e})"),
                    v / 1e6,
                    true,
                )
            } else if kind == "power" && e == "accuracy" {
                (
                    name,
                    "Hardware monitor power meter accuracy, as a ratio".into(),
                    v / 1e6,
                    false,
                )
            } else if kind == "power"
                && matches!(
                    e,
                    "average_interval" | "average_interval_min" | "average_interval_max"
                )
            {
                (
                    format!("{name}_seconds"),
                    format!("Hardware monitor power usage update interval ({e})"),
                    v * 0.001,
                    false,
                )
            } else if kind == "power" {
                (
                    format!("{name}_watt"),
                    format!("Hardware monitor for power usage in watts ({e})"),
                    v / 1e6,
                    false,
                )
            } else if kind == "humidity" {
                (
                    name,
                    format!(
                        "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({e})"
                    ),
                    v / 1e6,
                    false,
                )
            } else if kind == "fan" && matches!(e, "input" | "min" | "max" | "target") {
                (
                    format!("{name}_rpm"),
                    format!("Hardware monitor for fan revolutions per minute ({e})"),
                    v,
                    false,
                )
            } else {
                (
                    name,
                    format!("Hardware monitor {kind} element {e}"),
                    v,
                    false,
                )
            };
            if counter {
                out.counter(&name, &help, &labels, value);
            } else {
                out.gauge(&name, &help, &labels, value);
            }
        }
    }
    Ok(())
}

impl Collector for HwmonCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let entries = match std::fs::read_dir(&self.class_hwmon) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(CollectorError::NoData),
            Err(e) => return Err(CollectorError::io(&self.class_hwmon, e)),
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        // One broken chip does not hide the others; the last error is reported.
        let mut result = Ok(());
        for dir in dirs {
            if let Err(e) = emit_chip(out, &dir) {
                result = Err(e);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, kind, paths, scrape, testdata, value};

    #[test]
    fn explodes_sensor_filenames() {
        assert_eq!(
            explode_sensor_filename("temp1_crit_alarm"),
            Some(("temp", 1, "crit_alarm"))
        );
        assert_eq!(
            explode_sensor_filename("in0_input"),
            Some(("in", 0, "input"))
        );
        assert_eq!(
            explode_sensor_filename("beep_enable"),
            Some(("beep_enable", 0, ""))
        );
        assert_eq!(explode_sensor_filename("fan2"), Some(("fan", 2, "")));
        assert_eq!(explode_sensor_filename("temp1x"), None);
        assert_eq!(explode_sensor_filename("1abc"), None);
        assert_eq!(clean_name("Package id 0\n"), "package_id_0");
        assert_eq!(clean_name("coretemp.0"), "coretemp_0");
    }

    #[test]
    fn emits_scaled_sensor_values() {
        let set = scrape(build, &paths("hwmon"), &CollectorOptions::default()).unwrap();
        let core = |s| [("chip", "platform_coretemp_0"), ("sensor", s)];
        assert_eq!(value(&set, "node_hwmon_temp_celsius", &core("temp1")), 42.0);
        assert_eq!(
            help(&set, "node_hwmon_temp_celsius"),
            "Hardware monitor for temperature (input)"
        );
        assert_eq!(
            value(&set, "node_hwmon_temp_crit_celsius", &core("temp1")),
            100.0
        );
        assert_eq!(
            value(&set, "node_hwmon_temp_crit_alarm_celsius", &core("temp1")),
            0.0
        );
        assert_eq!(
            value(
                &set,
                "node_hwmon_sensor_label",
                &[
                    ("chip", "platform_coretemp_0"),
                    ("sensor", "temp1"),
                    ("label", "Package id 0")
                ]
            ),
            1.0
        );
        assert_eq!(
            value(
                &set,
                "node_hwmon_chip_names",
                &[("chip", "platform_coretemp_0"), ("chip_name", "coretemp")]
            ),
            1.0
        );
        // Chip without device link: named by its name file.
        let nct = |s| [("chip", "nct6775"), ("sensor", s)];
        assert_eq!(value(&set, "node_hwmon_in_volts", &nct("in0")), 1.2);
        assert_eq!(value(&set, "node_hwmon_fan_rpm", &nct("fan1")), 1200.0);
        assert_eq!(value(&set, "node_hwmon_fan_min_rpm", &nct("fan1")), 300.0);
        assert_eq!(value(&set, "node_hwmon_fan_alarm", &nct("fan1")), 1.0);
        assert_eq!(
            help(&set, "node_hwmon_fan_alarm"),
            "Hardware sensor alarm status (fan)"
        );
        assert_eq!(
            value(&set, "node_hwmon_fan_beep_enabled", &nct("fan1")),
            1.0
        );
        assert_eq!(value(&set, "node_hwmon_power_watt", &nct("power1")), 12.5);
        assert_eq!(
            value(
                &set,
                "node_hwmon_power_average_interval_seconds",
                &nct("power1")
            ),
            1.0
        );
        assert_eq!(
            value(&set, "node_hwmon_energy_joule_total", &nct("energy1")),
            3.0
        );
        assert_eq!(
            kind(&set, "node_hwmon_energy_joule_total"),
            MetricType::COUNTER
        );
        assert_eq!(value(&set, "node_hwmon_curr_amps", &nct("curr1")), 0.5);
        assert_eq!(value(&set, "node_hwmon_pwm", &nct("pwm1")), 128.0);
        assert_eq!(
            help(&set, "node_hwmon_pwm"),
            "Hardware monitor pwm element "
        );
        assert_eq!(
            value(&set, "node_hwmon_beep_enabled", &nct("beep_enable0")),
            1.0
        );
        assert_eq!(
            value(
                &set,
                "node_hwmon_update_interval_seconds",
                &nct("update_interval0")
            ),
            2.0
        );
        assert_eq!(value(&set, "node_hwmon_humidity", &nct("humidity1")), 0.45);
        // Non-numeric values are skipped, unknown files ignored.
        assert!(!set.contains("node_hwmon_temp_type_celsius"));
        assert!(!set.contains("node_hwmon_in_weird_volts"));
        // No name, no device: hwmonN.
        assert_eq!(
            value(
                &set,
                "node_hwmon_temp_celsius",
                &[("chip", "hwmon2"), ("sensor", "temp1")]
            ),
            30.0
        );
    }

    #[test]
    fn absent_class_is_no_data() {
        let mut p = paths("hwmon");
        p.sys = testdata("hwmon").join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
    }
}
