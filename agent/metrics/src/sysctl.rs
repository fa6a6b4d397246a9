//! `sysctl` (off by default): chosen /proc/sys values (node_exporter 1.5.0
//! collector/sysctl_linux.go). `--collector.sysctl.include=<name>[:<key>,...]` exports a
//! numeric sysctl as untyped `node_sysctl_<name>` (one value), `{index}` per value (several)
//! or one family per named key (`net.ipv4.tcp_rmem:min,default,max`);
//! `--collector.sysctl.include-info=<name>` exports the words of any sysctl as
//! `node_sysctl_info{name,value,index}`.

use std::path::PathBuf;

use prometheus::proto::MetricType;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

#[derive(Debug, Clone, PartialEq)]
pub struct Sysctl {
    pub numeric: bool,
    pub name: String,
    pub keys: Vec<String>,
}

impl Sysctl {
    /// `<name>[:<key>,<key>...]`.
    pub fn parse(include: &str, numeric: bool) -> Self {
        match include.split_once(':') {
            Some((name, keys)) => Sysctl {
                numeric,
                name: name.to_string(),
                keys: keys.split(',').map(str::to_string).collect(),
            },
            None => Sysctl {
                numeric,
                name: include.to_string(),
                keys: Vec::new(),
            },
        }
    }
}

pub struct SysctlCollector {
    proc_sys: PathBuf,
    sysctls: Vec<Sysctl>,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    let o = &ctx.options.more;
    let sysctls = o
        .sysctl_include
        .iter()
        .map(|i| Sysctl::parse(i, true))
        .chain(
            o.sysctl_include_info
                .iter()
                .map(|i| Sysctl::parse(i, false)),
        )
        .collect();
    Ok(Box::new(SysctlCollector {
        proc_sys: ctx.paths.proc_path("sys"),
        sysctls,
    }))
}

/// Go's SanitizeMetricName.
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

impl SysctlCollector {
    fn collect_one(&self, s: &Sysctl, out: &mut MetricSet) -> Result<(), CollectorError> {
        let path = self.proc_sys.join(s.name.replace('.', "/"));
        let text = read_proc(&path)?;
        let words: Vec<&str> = text.split_whitespace().collect();
        let err = |d: String| CollectorError::parse(path.display().to_string(), d);
        let name = format!("node_sysctl_{}", sanitize(&s.name));
        let help = format!("sysctl {}", s.name);
        if words.is_empty() {
            return Err(err(format!("sysctl {} has no values", s.name)));
        }
        if !s.numeric {
            if words.len() == 1 && !s.keys.is_empty() {
                return Err(err(format!(
                    "sysctl {} has only one value, but expected {:?}",
                    s.name, s.keys
                )));
            }
            if words.len() > 1 && !s.keys.is_empty() {
                return Err(err("mapped sysctl string values not supported".into()));
            }
            for (i, w) in words.iter().enumerate() {
                out.gauge(
                    "node_sysctl_info",
                    "sysctl info",
                    &[("name", &s.name), ("value", w), ("index", &i.to_string())],
                    1.0,
                );
            }
            return Ok(());
        }
        let values = words
            .iter()
            .map(|w| w.parse::<i64>().map_err(|e| err(format!("{w:?}: {e}"))))
            .collect::<Result<Vec<i64>, _>>()?;
        match (values.len(), s.keys.len()) {
            (1, 0) => out.sample(MetricType::UNTYPED, &name, &help, &[], values[0] as f64),
            (1, _) => {
                return Err(err(format!(
                    "sysctl {} has only one value, but expected {:?}",
                    s.name, s.keys
                )));
            }
            (_, 0) => {
                for (i, v) in values.iter().enumerate() {
                    out.sample(
                        MetricType::UNTYPED,
                        &name,
                        &help,
                        &[("index", &i.to_string())],
                        *v as f64,
                    );
                }
            }
            (n, k) if n != k => {
                return Err(err(format!(
                    "sysctl {} has {n} keys but only {k} defined in flag",
                    s.name
                )));
            }
            _ => {
                for (i, (v, key)) in values.iter().zip(&s.keys).enumerate() {
                    out.sample(
                        MetricType::UNTYPED,
                        &format!("{name}_{key}"),
                        &format!("sysctl {}, field {i}", s.name),
                        &[],
                        *v as f64,
                    );
                }
            }
        }
        Ok(())
    }
}

impl Collector for SysctlCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for s in &self.sysctls {
            self.collect_one(s, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter, paths, scrape};

    fn options() -> CollectorOptions {
        let mut o = CollectorOptions::default();
        o.more.sysctl_include = vec![
            "vm.swappiness".into(),
            "net.ipv4.ip_local_port_range".into(),
            "net.ipv4.tcp_rmem:min,default,max".into(),
            "fs.file-nr".into(),
        ];
        o.more.sysctl_include_info = vec!["kernel.core_pattern".into(), "kernel.ostype".into()];
        o
    }

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "sysctl",
            build,
            &paths("sysctl"),
            &options(),
            &[
                "--collector.sysctl.include=vm.swappiness",
                "--collector.sysctl.include=net.ipv4.ip_local_port_range",
                "--collector.sysctl.include=net.ipv4.tcp_rmem:min,default,max",
                "--collector.sysctl.include=fs.file-nr",
                "--collector.sysctl.include-info=kernel.core_pattern",
                "--collector.sysctl.include-info=kernel.ostype",
            ],
        );
    }

    #[test]
    fn bad_includes_fail_the_scrape() {
        for include in [
            "vm.swappiness:a,b",
            "net.ipv4.tcp_rmem:a,b",
            "kernel.ostype",
            "vm.absent",
        ] {
            let mut o = CollectorOptions::default();
            o.more.sysctl_include = vec![include.into()];
            assert!(scrape(build, &paths("sysctl"), &o).is_err(), "{include}");
        }
        let none = scrape(build, &paths("sysctl"), &CollectorOptions::default()).unwrap();
        assert!(none.families().is_empty());
        assert_eq!(Sysctl::parse("a.b:x,y", true).keys, ["x", "y"]);
    }
}
