//! `watchdog` (off by default here: node_exporter enables it from 1.8, and 1.5.0 has no
//! such collector): hardware/software watchdogs from /sys/class/watchdog/<name>
//! (node_exporter 1.8 collector/watchdog.go over procfs' `WatchdogClass`). Each numeric
//! attribute is a gauge when the driver exposes it; `watchdog_info` carries the strings.

use std::path::{Path, PathBuf};

use super::sysattr::{read_string, sorted_entries};
use super::{BuildContext, Collector, CollectorError, MetricSet};

/// (attribute, family, HELP).
const NUMERIC: &[(&str, &str, &str)] = &[
    (
        "bootstatus",
        "node_watchdog_bootstatus",
        "Value of /sys/class/watchdog/<watchdog>/bootstatus",
    ),
    (
        "fw_version",
        "node_watchdog_fw_version",
        "Value of /sys/class/watchdog/<watchdog>/fw_version",
    ),
    (
        "nowayout",
        "node_watchdog_nowayout",
        "Value of /sys/class/watchdog/<watchdog>/nowayout",
    ),
    (
        "timeleft",
        "node_watchdog_timeleft_seconds",
        "Value of /sys/class/watchdog/<watchdog>/timeleft",
    ),
    (
        "timeout",
        "node_watchdog_timeout_seconds",
        "Value of /sys/class/watchdog/<watchdog>/timeout",
    ),
    (
        "pretimeout",
        "node_watchdog_pretimeout_seconds",
        "Value of /sys/class/watchdog/<watchdog>/pretimeout",
    ),
    (
        "access_cs0",
        "node_watchdog_access_cs0",
        "Value of /sys/class/watchdog/<watchdog>/access_cs0",
    ),
];

/// String attributes of the info series, in label order.
const INFO: &[&str] = &[
    "options",
    "identity",
    "state",
    "status",
    "pretimeout_governor",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Watchdog {
    pub name: String,
    pub numeric: Vec<Option<i64>>,
    pub info: Vec<String>,
}

pub struct WatchdogCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(WatchdogCollector {
        dir: ctx.paths.sys_path("class/watchdog"),
    }))
}

/// An attribute the driver may not implement: absent, or refused with EINVAL/EOPNOTSUPP.
fn optional(path: &Path) -> Result<Option<String>, CollectorError> {
    match read_string(path) {
        Ok(v) => Ok(Some(v)),
        Err(CollectorError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound
                || matches!(
                    source.raw_os_error(),
                    Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOTTY)
                ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub fn read_watchdogs(dir: &Path) -> Result<Vec<Watchdog>, CollectorError> {
    let Some(names) = sorted_entries(dir)? else {
        return Err(CollectorError::NoData);
    };
    let mut out = Vec::new();
    for name in names {
        let d = dir.join(&name);
        let mut numeric = Vec::with_capacity(NUMERIC.len());
        for (attr, _, _) in NUMERIC {
            let path = d.join(attr);
            numeric.push(match optional(&path)? {
                Some(v) => Some(v.parse::<i64>().map_err(|e| {
                    CollectorError::parse(path.display().to_string(), format!("{v:?}: {e}"))
                })?),
                None => None,
            });
        }
        let mut info = Vec::with_capacity(INFO.len());
        for attr in INFO {
            info.push(optional(&d.join(attr))?.unwrap_or_default());
        }
        out.push(Watchdog {
            name,
            numeric,
            info,
        });
    }
    Ok(out)
}

impl Collector for WatchdogCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let watchdogs = match read_watchdogs(&self.dir) {
            Err(CollectorError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                return Err(CollectorError::NoData);
            }
            other => other?,
        };
        for wd in &watchdogs {
            let name = [("name", wd.name.as_str())];
            for ((_, family, help), v) in NUMERIC.iter().zip(&wd.numeric) {
                if let Some(v) = v {
                    out.gauge(family, help, &name, *v as f64);
                }
            }
            let mut labels: Vec<(&str, &str)> = vec![("name", &wd.name)];
            labels.extend(INFO.iter().copied().zip(wd.info.iter().map(String::as_str)));
            out.gauge(
                "node_watchdog_info",
                "Info of /sys/class/watchdog/<watchdog>",
                &labels,
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
    use crate::fixtures::{kind, len, paths, scrape, try_value, value};
    use prometheus::proto::MetricType;

    #[test]
    fn watchdogs_with_and_without_attributes() {
        let set = scrape(build, &paths("watchdog"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(
                &set,
                "node_watchdog_timeleft_seconds",
                &[("name", "watchdog0")]
            ),
            300.0
        );
        assert_eq!(
            value(
                &set,
                "node_watchdog_timeout_seconds",
                &[("name", "watchdog1")]
            ),
            30.0
        );
        assert_eq!(
            try_value(&set, "node_watchdog_bootstatus", &[("name", "watchdog1")]),
            None
        );
        assert_eq!(len(&set, "node_watchdog_info"), 2);
        let info = [
            ("name", "watchdog0"),
            ("options", "0x8380"),
            ("identity", "Software Watchdog"),
            ("state", "active"),
            ("status", "0x8000"),
            ("pretimeout_governor", "noop"),
        ];
        assert_eq!(value(&set, "node_watchdog_info", &info), 1.0);
        assert_eq!(kind(&set, "node_watchdog_access_cs0"), MetricType::GAUGE);
    }

    #[test]
    fn no_class_is_no_data_bad_number_an_error() {
        let mut p = paths("watchdog");
        p.sys = p.sys.join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("watchdog0")).unwrap();
        std::fs::write(dir.path().join("watchdog0/timeout"), "x\n").unwrap();
        assert!(matches!(
            read_watchdogs(dir.path()),
            Err(CollectorError::Parse { .. })
        ));
    }
}
