//! `rapl`: energy counters of the powercap RAPL zones, /sys/class/powercap/<zone>/energy_uj
//! in joules (node_exporter 1.5.0 collector/rapl_linux.go over procfs' `GetRaplZones`).
//! One family per zone name (`node_rapl_package_joules_total`), or with
//! `--collector.rapl.enable-zone-label` a single `node_rapl_joules_total{rapl_zone}`. The
//! `path` label is the zone's path under `--path.sysfs`, as node_exporter prints it. Since
//! CVE-2020-8694 energy_uj is root-only: unreadable means no data, not an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::sysattr::{is_absent_or_denied, read_string, read_u64, sorted_entries};
use super::{BuildContext, Collector, CollectorError, MetricSet};

#[derive(Debug, Clone, PartialEq)]
pub struct RaplZone {
    pub name: String,
    pub index: u64,
    pub path: PathBuf,
}

pub struct RaplCollector {
    dir: PathBuf,
    zone_label: bool,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(RaplCollector {
        dir: ctx.paths.sys_path("class/powercap"),
        zone_label: ctx.options.more.rapl_enable_zone_label,
    }))
}

/// `package-1` → (1, "package"); a name without a numeric suffix gets the count of earlier
/// zones with that name (several `dram` zones become 0, 1, …).
fn index_and_name(seen: &HashMap<String, u64>, name: &str) -> (u64, String) {
    let parts: Vec<&str> = name.split('-').collect();
    if let [base, n] = parts.as_slice()
        && let Ok(i) = n.parse::<u64>()
    {
        return (i, base.to_string());
    }
    (seen.get(name).copied().unwrap_or(0), name.to_string())
}

/// The zones of the powercap directory: every entry with a `name` file, in name order;
/// each must have a readable `max_energy_range_uj`.
pub fn read_zones(dir: &Path) -> Result<Vec<RaplZone>, CollectorError> {
    let Some(entries) = sorted_entries(dir)? else {
        return Err(CollectorError::NoData);
    };
    let mut seen = HashMap::new();
    let mut zones = Vec::new();
    for entry in entries {
        let path = dir.join(&entry);
        let Ok(name) = read_string(&path.join("name")) else {
            continue;
        };
        let (index, name) = index_and_name(&seen, &name);
        read_u64(&path.join("max_energy_range_uj"))?;
        seen.insert(name.clone(), index + 1);
        zones.push(RaplZone { name, index, path });
    }
    Ok(zones)
}

/// Go's SanitizeMetricName: anything but `[a-zA-Z0-9_:]` becomes `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Collector for RaplCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let zones = match read_zones(&self.dir) {
            Err(e) if is_absent_or_denied(&e) => return Err(CollectorError::NoData),
            other => other?,
        };
        for z in &zones {
            let uj = match read_u64(&z.path.join("energy_uj")) {
                Err(CollectorError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    return Err(CollectorError::NoData);
                }
                other => other?,
            };
            let joules = uj as f64 / 1_000_000.0;
            let index = z.index.to_string();
            let path = z.path.to_string_lossy();
            if self.zone_label {
                out.counter(
                    "node_rapl_joules_total",
                    "Current RAPL value in joules",
                    &[("index", &index), ("path", &path), ("rapl_zone", &z.name)],
                    joules,
                );
            } else {
                out.counter(
                    &format!(
                        "node_rapl_{}",
                        sanitize(&format!("{}_joules_total", z.name))
                    ),
                    &format!("Current RAPL {} value in joules", z.name),
                    &[("index", &index), ("path", &path)],
                    joules,
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
    use crate::fixtures::{assert_same_as_node_exporter, paths, scrape};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "rapl",
            build,
            &paths("rapl"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn zone_label_same_as_node_exporter() {
        let options = CollectorOptions {
            more: crate::config::MoreOptions {
                rapl_enable_zone_label: true,
                ..Default::default()
            },
            ..CollectorOptions::default()
        };
        assert_same_as_node_exporter(
            "rapl",
            build,
            &paths("rapl"),
            &options,
            &["--collector.rapl.enable-zone-label"],
        );
    }

    #[test]
    fn zones_indexes_and_odd_names() {
        let zones = read_zones(&paths("rapl").sys_path("class/powercap")).unwrap();
        let got: Vec<(&str, u64)> = zones.iter().map(|z| (z.name.as_str(), z.index)).collect();
        // intel-rapl (no name file) is not a zone.
        assert_eq!(
            got,
            [("package", 0), ("core", 0), ("dram", 0), ("package", 1)]
        );
        let seen = HashMap::from([("dram".to_string(), 2)]);
        assert_eq!(index_and_name(&seen, "dram"), (2, "dram".into()));
        assert_eq!(index_and_name(&seen, "psys-x"), (0, "psys-x".into()));
        assert_eq!(sanitize("psys-x_joules_total"), "psys_x_joules_total");
    }

    #[test]
    fn no_powercap_is_no_data_missing_range_is_no_data() {
        let o = CollectorOptions::default();
        let mut p = paths("rapl");
        p.sys = p.sys.join("missing");
        assert!(matches!(scrape(build, &p, &o), Err(CollectorError::NoData)));
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join("class/powercap/intel-rapl:0");
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("name"), "package-0\n").unwrap();
        let p = node_agent_core::host::HostPaths {
            sys: dir.path().to_path_buf(),
            ..node_agent_core::host::HostPaths::default()
        };
        assert!(matches!(scrape(build, &p, &o), Err(CollectorError::NoData)));
        std::fs::write(z.join("max_energy_range_uj"), "10\n").unwrap();
        std::fs::write(z.join("energy_uj"), "x\n").unwrap();
        assert!(matches!(
            scrape(build, &p, &o),
            Err(CollectorError::Parse { .. })
        ));
    }
}
