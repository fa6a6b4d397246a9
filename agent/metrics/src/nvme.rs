//! `nvme`: node_nvme_info from /sys/class/nvme/<controller>/{serial,model,state,
//! firmware_rev} (node_exporter 1.5.0 collector/nvme_linux.go over procfs' `NVMeClass`).
//! As there, a missing class directory or attribute means no data (success 0), and the
//! values are trimmed (models are space-padded).

use std::path::PathBuf;

use super::sysattr::{read_string, sorted_entries};
use super::{BuildContext, Collector, CollectorError, MetricSet};

#[derive(Debug, Clone, PartialEq)]
pub struct NvmeController {
    pub device: String,
    pub serial: String,
    pub model: String,
    pub state: String,
    pub firmware_revision: String,
}

pub struct NvmeCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(NvmeCollector {
        dir: ctx.paths.sys_path("class/nvme"),
    }))
}

/// Every controller of the class directory, sorted by name.
pub fn read_nvme(dir: &std::path::Path) -> Result<Vec<NvmeController>, CollectorError> {
    let Some(names) = sorted_entries(dir)? else {
        return Err(CollectorError::NoData);
    };
    names
        .into_iter()
        .map(|device| {
            let d = dir.join(&device);
            Ok(NvmeController {
                serial: read_string(&d.join("serial"))?,
                model: read_string(&d.join("model"))?,
                state: read_string(&d.join("state"))?,
                firmware_revision: read_string(&d.join("firmware_rev"))?,
                device,
            })
        })
        .collect()
}

impl Collector for NvmeCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let controllers = match read_nvme(&self.dir) {
            Err(e) if e.is_not_found() => return Err(CollectorError::NoData),
            other => other?,
        };
        for c in &controllers {
            out.gauge(
                "node_nvme_info",
                "Non-numeric data from /sys/class/nvme/<device>, value is always 1.",
                &[
                    ("device", &c.device),
                    ("firmware_revision", &c.firmware_revision),
                    ("model", &c.model),
                    ("serial", &c.serial),
                    ("state", &c.state),
                ],
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
    use crate::fixtures::{assert_same_as_node_exporter, len, paths, scrape, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "nvme",
            build,
            &paths("nvme"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn one_series_per_controller() {
        let set = scrape(build, &paths("nvme"), &CollectorOptions::default()).unwrap();
        assert_eq!(len(&set, "node_nvme_info"), 2);
        let labels = [
            ("device", "nvme0"),
            ("firmware_revision", "1B2QEXP7"),
            ("model", "Samsung SSD 970 PRO 512GB"),
            ("serial", "S680HF8N190894I"),
            ("state", "live"),
        ];
        assert_eq!(value(&set, "node_nvme_info", &labels), 1.0);
    }

    #[test]
    fn missing_attribute_or_class_is_no_data() {
        let o = CollectorOptions::default();
        assert!(matches!(
            scrape(build, &paths("nvme-partial"), &o),
            Err(CollectorError::NoData)
        ));
        let mut p = paths("nvme");
        p.sys = p.sys.join("missing");
        assert!(matches!(scrape(build, &p, &o), Err(CollectorError::NoData)));
    }
}
