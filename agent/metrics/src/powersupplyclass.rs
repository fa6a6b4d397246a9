//! `powersupplyclass`: node_power_supply_* from /sys/class/power_supply/<supply>/
//! (node_exporter 1.5.0 collector/powersupplyclass_linux.go over procfs' PowerSupplyClass).

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// (sysfs attribute, metric suffix, divisor): raw counts, µ-units (÷1e6) and deci-°C (÷10).
const NUMERIC: [(&str, &str, f64); 49] = [
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    ("current_boot", "current_boot", 1e6),
    ("current_max", "current_max", 1e6),
    ("current_now", "current_ampere", 1e6),
    ("energy_empty", "energy_empty", 1e6),
    ("energy_empty_design", "energy_empty_design", 1e6),
    ("energy_full", "energy_full", 1e6),
    ("energy_full_design", "energy_full_design", 1e6),
    ("energy_now", "energy_watthour", 1e6),
    ("voltage_boot", "voltage_boot", 1e6),
    ("voltage_max", "voltage_max", 1e6),
    ("voltage_max_design", "voltage_max_design", 1e6),
    ("voltage_min", "voltage_min", 1e6),
    ("voltage_min_design", "voltage_min_design", 1e6),
    ("voltage_now", "voltage_volt", 1e6),
    ("voltage_ocv", "voltage_ocv", 1e6),
    ("charge_control_limit", "charge_control_limit", 1e6),
    ("charge_control_limit_max", "charge_control_limit_max", 1e6),
    ("charge_counter", "charge_counter", 1e6),
    ("charge_empty", "charge_empty", 1e6),
    ("charge_empty_design", "charge_empty_design", 1e6),
    ("charge_full", "charge_full", 1e6),
    ("charge_full_design", "charge_full_design", 1e6),
    ("charge_now", "charge_ampere", 1e6),
    ("charge_term_current", "charge_term_current", 1e6),
    ("constant_charge_current", "constant_charge_current", 1e6),
    (
        "constant_charge_current_max",
        "constant_charge_current_max",
        1e6,
    ),
    ("constant_charge_voltage", "constant_charge_voltage", 1e6),
    (
        "constant_charge_voltage_max",
        "constant_charge_voltage_max",
        1e6,
    ),
    ("precharge_current", "precharge_current", 1e6),
    ("input_current_limit", "input_current_limit", 1e6),
    ("power_now", "power_watt", 1e6),
    ("temp", "temp_celsius", 10.0),
    ("temp_alert_max", "temp_alert_max_celsius", 10.0),
    ("temp_alert_min", "temp_alert_min_celsius", 10.0),
    ("temp_ambient", "temp_ambient_celsius", 10.0),
    ("temp_ambient_max", "temp_ambient_max_celsius", 10.0),
    ("temp_ambient_min", "temp_ambient_min_celsius", 10.0),
    ("temp_max", "temp_max_celsius", 10.0),
    ("temp_min", "temp_min_celsius", 10.0),
];

/// String attributes that become node_power_supply_info labels when non-empty.
const INFO: [&str; 11] = [
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
    "scope",
];

struct Desc {
    attr: &'static str,
    name: String,
    help: String,
    divisor: f64,
}

pub struct PowerSupplyCollector {
    class: PathBuf,
    ignored: regex::Regex,
    descs: Vec<Desc>,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(PowerSupplyCollector {
        class: ctx.paths.sys_path("class/power_supply"),
        ignored: ctx.options.powersupply_ignored.clone(),
        descs: NUMERIC
            .iter()
            .map(|&(attr, suffix, divisor)| Desc {
                attr,
                name: format!("node_power_supply_{suffix}"),
                help: format!("{suffix} value of /sys/class/power_supply/<power_supply>."),
                divisor,
            })
            .collect(),
    }))
}

/// All readable regular files of a supply directory (procfs skips unreadable ones).
fn read_attrs(dir: &Path) -> Result<HashMap<String, String>, CollectorError> {
    let mut attrs = HashMap::new();
    for entry in std::fs::read_dir(dir)
        .map_err(|e| CollectorError::io(dir, e))?
        .flatten()
    {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let (Ok(name), Ok(value)) = (entry.file_name().into_string(), read_proc(entry.path()))
        else {
            continue;
        };
        attrs.insert(name, value.trim().to_string());
    }
    Ok(attrs)
}

impl Collector for PowerSupplyCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let entries = match std::fs::read_dir(&self.class) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(CollectorError::NoData),
            Err(e) => return Err(CollectorError::io(&self.class, e)),
        };
        let mut supplies: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
            .collect();
        supplies.sort();
        for (supply, dir) in supplies {
            if self.ignored.is_match(&supply) {
                continue;
            }
            let attrs = read_attrs(&dir)?;
            let labels = [("power_supply", supply.as_str())];
            for d in &self.descs {
                let Some(raw) = attrs.get(d.attr) else {
                    continue;
                };
                let v: i64 = raw.parse().map_err(|e| {
                    CollectorError::parse(
                        dir.join(d.attr).display().to_string(),
                        format!("{raw:?}: {e}"),
                    )
                })?;
                out.gauge(&d.name, &d.help, &labels, v as f64 / d.divisor);
            }
            let mut info: Vec<(&str, &str)> = vec![("power_supply", supply.as_str())];
            info.extend(INFO.iter().filter_map(|k| {
                attrs
                    .get(*k)
                    .filter(|v| !v.is_empty())
                    .map(|v| (*k, v.as_str()))
            }));
            out.gauge(
                "node_power_supply_info",
                "info of /sys/class/power_supply/<power_supply>.",
                &info,
                1.0,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, names, paths, scrape, testdata, value};

    #[test]
    fn emits_scaled_values_and_info() {
        let set = scrape(
            build,
            &paths("powersupplyclass"),
            &CollectorOptions::default(),
        )
        .unwrap();
        let bat = [("power_supply", "BAT0")];
        assert_eq!(value(&set, "node_power_supply_capacity", &bat), 81.0);
        assert_eq!(
            value(&set, "node_power_supply_energy_watthour", &bat),
            36.58
        );
        assert_eq!(value(&set, "node_power_supply_voltage_volt", &bat), 12.229);
        assert_eq!(value(&set, "node_power_supply_cyclecount", &bat), 42.0);
        assert_eq!(value(&set, "node_power_supply_temp_celsius", &bat), 31.5);
        assert_eq!(value(&set, "node_power_supply_present", &bat), 1.0);
        assert_eq!(
            help(&set, "node_power_supply_energy_watthour"),
            "energy_watthour value of /sys/class/power_supply/<power_supply>."
        );
        assert_eq!(
            value(
                &set,
                "node_power_supply_info",
                &[
                    ("power_supply", "BAT0"),
                    ("capacity_level", "Normal"),
                    ("manufacturer", "SMP"),
                    ("model_name", "5B10W13930"),
                    ("status", "Discharging"),
                    ("technology", "Li-poly"),
                    ("type", "Battery"),
                ]
            ),
            1.0
        );
        // AC: only online; empty serial_number is not a label.
        assert_eq!(
            value(&set, "node_power_supply_online", &[("power_supply", "AC")]),
            0.0
        );
        assert_eq!(
            value(
                &set,
                "node_power_supply_info",
                &[("power_supply", "AC"), ("type", "Mains")]
            ),
            1.0
        );
        assert!(!names(&set).iter().any(|n| n.contains("uevent")));
    }

    #[test]
    fn absent_class_is_no_data_bad_value_is_error() {
        let mut p = paths("powersupplyclass");
        p.sys = testdata("powersupplyclass").join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
        p.sys = testdata("powersupplyclass").join("sys_bad");
        let err = scrape(build, &p, &CollectorOptions::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("capacity"), "{err}");
    }

    #[test]
    fn ignored_supplies_are_left_out() {
        let options = CollectorOptions {
            powersupply_ignored: regex::Regex::new("^BAT").unwrap(),
            ..CollectorOptions::default()
        };
        let set = scrape(build, &paths("powersupplyclass"), &options).unwrap();
        let info = set
            .families()
            .iter()
            .find(|f| f.name() == "node_power_supply_info")
            .unwrap();
        assert_eq!(info.get_metric().len(), 1);
        assert!(
            info.get_metric()[0]
                .get_label()
                .iter()
                .any(|l| l.name() == "power_supply" && l.value() == "AC")
        );
    }

    #[test]
    fn invalid_utf8_is_kept_with_replacement_characters() {
        let mut p = paths("powersupplyclass");
        p.sys = testdata("powersupplyclass").join("sys_utf8");
        let set = scrape(build, &p, &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(
                &set,
                "node_power_supply_info",
                &[
                    ("power_supply", "BAT1"),
                    ("manufacturer", "Sony"),
                    ("model_name", "DELL\u{fffd}\u{fffd}42"),
                    ("type", "Battery"),
                ]
            ),
            1.0
        );
    }
}
