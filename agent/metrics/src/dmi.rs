//! `dmi`: node_dmi_info from /sys/class/dmi/id (node_exporter 1.5.0 collector/dmi.go over
//! procfs' `DMIClass`). Read once when built: DMI data does not change until reboot. A label
//! is present only if its file is (serials and product_uuid are root-only and skipped when
//! unreadable); values are trimmed and invalid UTF-8 becomes U+FFFD.

use std::path::Path;

use super::sysattr::read_lossy;
use super::{BuildContext, Collector, CollectorError, MetricSet};

/// (file under /sys/class/dmi/id, label).
const FIELDS: &[(&str, &str)] = &[
    ("bios_date", "bios_date"),
    ("bios_release", "bios_release"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("board_asset_tag", "board_asset_tag"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("board_vendor", "board_vendor"),
    ("board_version", "board_version"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_version", "chassis_version"),
    ("product_family", "product_family"),
    ("product_name", "product_name"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
    ("product_version", "product_version"),
    ("sys_vendor", "system_vendor"),
];

const HELP: &str = "A metric with a constant '1' value labeled by bios_date, bios_release, bios_vendor, bios_version, board_asset_tag, board_name, board_serial, board_vendor, board_version, chassis_asset_tag, chassis_serial, chassis_vendor, chassis_version, product_family, product_name, product_serial, product_sku, product_uuid, product_version, system_vendor if provided by DMI.";

pub struct DmiCollector {
    labels: Vec<(&'static str, String)>,
}

/// The (label, value) pairs present in `dir`; empty when it does not exist.
pub fn read_dmi(dir: &Path) -> Result<Vec<(&'static str, String)>, CollectorError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CollectorError::io(dir, e)),
    };
    let mut labels = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CollectorError::io(dir, e))?;
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let name = entry.file_name();
        let Some(&(_, label)) = FIELDS
            .iter()
            .find(|(f, _)| name.as_encoded_bytes() == f.as_bytes())
        else {
            continue;
        };
        if !is_file {
            continue;
        }
        match read_lossy(&entry.path()) {
            Ok(v) => labels.push((label, v)),
            // Only root may read the serials and product_uuid.
            Err(CollectorError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(e),
        }
    }
    labels.sort();
    Ok(labels)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(DmiCollector {
        labels: read_dmi(&ctx.paths.sys_path("class/dmi/id"))?,
    }))
}

impl Collector for DmiCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        if self.labels.is_empty() {
            return Err(CollectorError::NoData);
        }
        let labels: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.gauge("node_dmi_info", HELP, &labels, 1.0);
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
            "dmi",
            build,
            &paths("dmi"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn labels_only_for_present_files() {
        let labels = read_dmi(&paths("dmi").sys_path("class/dmi/id")).unwrap();
        let get = |k: &str| {
            labels
                .iter()
                .find(|(l, _)| *l == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("system_vendor"),
            Some("Supermicro"),
            "sys_vendor is renamed"
        );
        assert_eq!(
            get("chassis_asset_tag"),
            Some(""),
            "an empty file keeps its label"
        );
        assert_eq!(get("product_uuid"), None, "absent file, no label");
        assert_eq!(get("chassis_type"), None, "not a label");
        assert!(labels.iter().all(|(l, _)| *l != "modalias"));
    }

    #[test]
    fn invalid_utf8_is_replaced_absent_dmi_is_no_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("board_name"), b"X\xff1 \n").unwrap();
        assert_eq!(
            read_dmi(dir.path()).unwrap(),
            [("board_name", "X\u{fffd}1".to_string())]
        );
        let mut p = paths("dmi");
        p.sys = p.sys.join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
    }
}
