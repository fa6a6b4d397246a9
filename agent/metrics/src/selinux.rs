//! `selinux`: node_selinux_{enabled,config_mode,current_mode} (node_exporter 1.5.0
//! collector/selinux_linux.go, which uses opencontainers/selinux).
//!
//! SELinux counts as enabled when selinuxfs is mounted under the sysfs root (its `enforce`
//! file exists). Modes: 1 enforcing, 0 permissive, -1 disabled.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

pub struct SelinuxCollector {
    enforce: PathBuf,
    config: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(SelinuxCollector {
        enforce: ctx.paths.sys_path("fs/selinux/enforce"),
        config: ctx.paths.rootfs_path("/etc/selinux/config"),
    }))
}

impl Collector for SelinuxCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let enforce = match read_proc(&self.enforce) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => {
                out.gauge(
                    "node_selinux_enabled",
                    "SELinux is enabled, 1 is true, 0 is false",
                    &[],
                    0.0,
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let current = match enforce.trim() {
            "1" => 1.0,
            "0" => 0.0,
            other => {
                return Err(CollectorError::parse(
                    self.enforce.display().to_string(),
                    format!("unexpected mode {other:?}"),
                ));
            }
        };
        let config_mode = match read_proc(&self.config) {
            Ok(text) => config_mode(&text),
            // No config file: the library reports "disabled".
            Err(e) if e.is_not_found() => -1.0,
            Err(e) => return Err(e),
        };
        out.gauge(
            "node_selinux_enabled",
            "SELinux is enabled, 1 is true, 0 is false",
            &[],
            1.0,
        );
        out.gauge(
            "node_selinux_config_mode",
            "Configured SELinux enforcement mode",
            &[],
            config_mode,
        );
        out.gauge(
            "node_selinux_current_mode",
            "Current SELinux enforcement mode",
            &[],
            current,
        );
        Ok(())
    }
}

/// `SELINUX=` in /etc/selinux/config → 1 enforcing, 0 permissive, -1 otherwise.
pub fn config_mode(text: &str) -> f64 {
    let value = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SELINUX="))
        .next_back()
        .map(|v| v.trim().trim_matches('"'));
    match value {
        Some("enforcing") => 1.0,
        Some("permissive") => 0.0,
        _ => -1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collector(root: &str) -> SelinuxCollector {
        let base =
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/selinux")).join(root);
        SelinuxCollector {
            enforce: base.join("sys/fs/selinux/enforce"),
            config: base.join("etc/selinux/config"),
        }
    }

    fn values(set: &MetricSet) -> Vec<(&str, f64)> {
        set.families()
            .iter()
            .map(|f| (f.name(), f.get_metric()[0].get_gauge().get_value()))
            .collect()
    }

    #[test]
    fn disabled_emits_only_enabled_zero() {
        let mut set = MetricSet::new();
        collector("disabled").update(&mut set).unwrap();
        assert_eq!(values(&set), [("node_selinux_enabled", 0.0)]);
    }

    #[test]
    fn enabled_emits_modes() {
        let mut set = MetricSet::new();
        collector("permissive").update(&mut set).unwrap();
        assert_eq!(
            values(&set),
            [
                ("node_selinux_enabled", 1.0),
                ("node_selinux_config_mode", 1.0),
                ("node_selinux_current_mode", 0.0)
            ]
        );
        assert!(collector("garbage").update(&mut MetricSet::new()).is_err());
    }

    #[test]
    fn parses_config() {
        assert_eq!(
            config_mode("# c\nSELINUX=permissive\nSELINUXTYPE=targeted\n"),
            0.0
        );
        assert_eq!(config_mode("SELINUX=disabled\n"), -1.0);
        assert_eq!(config_mode(""), -1.0);
    }
}
