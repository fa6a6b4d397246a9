//! Test helpers for collector unit tests: fixture trees under `agent/testdata/<collector>/`
//! and sample lookup by name and labels.

use std::path::PathBuf;

use prometheus::proto::{MetricFamily, MetricType};

use super::{BuildContext, Collector, CollectorError, CollectorOptions, MetricSet};
use node_agent_core::host::HostPaths;

/// `agent/testdata/<collector>`.
pub fn testdata(collector: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(collector)
}

/// Host paths rooted in a fixture tree: `proc/`, `sys/`, `rootfs/`, `udev/`.
pub fn paths(collector: &str) -> HostPaths {
    let root = testdata(collector);
    HostPaths {
        proc: root.join("proc"),
        sys: root.join("sys"),
        rootfs: root.join("rootfs"),
        udev_data: root.join("udev"),
    }
}

/// Builds a collector with `build` on the fixture tree and runs one scrape.
pub fn scrape(
    build: fn(&BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError>,
    paths: &HostPaths,
    options: &CollectorOptions,
) -> Result<MetricSet, CollectorError> {
    let collector = build(&BuildContext { paths, options })?;
    let mut set = MetricSet::new();
    collector.update(&mut set)?;
    Ok(set)
}

pub fn family<'a>(set: &'a MetricSet, name: &str) -> &'a MetricFamily {
    set.families()
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("family {name} missing"))
}

/// Sorted family names.
pub fn names(set: &MetricSet) -> Vec<String> {
    let mut names: Vec<String> = set
        .families()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    names.sort();
    names
}

pub fn kind(set: &MetricSet, name: &str) -> MetricType {
    family(set, name).get_field_type()
}

pub fn help<'a>(set: &'a MetricSet, name: &str) -> &'a str {
    family(set, name).help()
}

/// Number of samples in a family.
pub fn len(set: &MetricSet, name: &str) -> usize {
    family(set, name).get_metric().len()
}

/// The value of the sample with exactly these labels (in any order); panics if absent.
pub fn value(set: &MetricSet, name: &str, labels: &[(&str, &str)]) -> f64 {
    try_value(set, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} missing"))
}

/// The value of the sample with exactly these labels (in any order), if there is one.
#[allow(deprecated)]
pub fn try_value(set: &MetricSet, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let f = set.families().iter().find(|f| f.name() == name)?;
    let m = f.get_metric().iter().find(|m| {
        m.get_label().len() == labels.len()
            && labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
    })?;
    Some(match f.get_field_type() {
        MetricType::COUNTER => m.get_counter().get_value(),
        MetricType::GAUGE => m.get_gauge().get_value(),
        _ => m.get_untyped().get_value(),
    })
}
