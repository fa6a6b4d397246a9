//! `entropy`: node_entropy_{available,pool_size}_bits from /proc/sys/kernel/random
//! (node_exporter 1.5.0 collector/entropy_linux.go).
//!
//! Hand-read: procfs's `sys::kernel::random` reads the fixed /proc path and would ignore the
//! configurable `--path.procfs` root.

use std::path::{Path, PathBuf};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

pub struct EntropyCollector {
    avail: PathBuf,
    poolsize: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    let dir = ctx.paths.proc_path("sys/kernel/random");
    Ok(Box::new(EntropyCollector {
        avail: dir.join("entropy_avail"),
        poolsize: dir.join("poolsize"),
    }))
}

impl Collector for EntropyCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        out.gauge(
            "node_entropy_available_bits",
            "Bits of available entropy.",
            &[],
            read_uint(&self.avail)?,
        );
        out.gauge(
            "node_entropy_pool_size_bits",
            "Bits of entropy pool.",
            &[],
            read_uint(&self.poolsize)?,
        );
        Ok(())
    }
}

/// A file holding one unsigned integer.
fn read_uint(path: &Path) -> Result<f64, CollectorError> {
    let text = read_proc(path)?;
    let text = text.trim();
    text.parse::<u64>()
        .map(|v| v as f64)
        .map_err(|e| CollectorError::parse(path.display().to_string(), format!("{text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use node_agent_core::host::HostPaths;

    fn collector(root: &str) -> Box<dyn Collector> {
        let paths = HostPaths {
            proc: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/entropy"))
                .join(root),
            ..HostPaths::default()
        };
        build(&BuildContext {
            paths: &paths,
            options: &CollectorOptions::default(),
        })
        .unwrap()
    }

    #[test]
    fn emits_available_and_pool_size() {
        let mut set = MetricSet::new();
        collector("ok").update(&mut set).unwrap();
        let got: Vec<_> = set
            .families()
            .iter()
            .map(|f| {
                (
                    f.name(),
                    f.help(),
                    f.get_metric()[0].get_gauge().get_value(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "node_entropy_available_bits",
                    "Bits of available entropy.",
                    256.0
                ),
                (
                    "node_entropy_pool_size_bits",
                    "Bits of entropy pool.",
                    4096.0
                )
            ]
        );
    }

    #[test]
    fn bad_input_is_an_error_naming_the_file() {
        let err = collector("garbage")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("entropy_avail"), "{err}");
        assert!(
            collector("absent")
                .update(&mut MetricSet::new())
                .unwrap_err()
                .is_not_found()
        );
    }
}
