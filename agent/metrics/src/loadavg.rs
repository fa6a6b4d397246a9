//! `loadavg`: node_load1/5/15 from /proc/loadavg (node_exporter collector/loadavg_linux.go).

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

pub struct LoadavgCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(LoadavgCollector {
        path: ctx.paths.proc_path("loadavg"),
    }))
}

impl Collector for LoadavgCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let loads = parse_loadavg(&read_proc(&self.path)?)?;
        for (name, value) in ["node_load1", "node_load5", "node_load15"]
            .into_iter()
            .zip(loads)
        {
            let period = &name["node_load".len()..];
            out.gauge(name, &format!("{period}m load average."), &[], value);
        }
        Ok(())
    }
}

/// The first three fields of /proc/loadavg.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], CollectorError> {
    let mut fields = text.split_whitespace();
    let mut loads = [0.0; 3];
    for slot in &mut loads {
        let field = fields
            .next()
            .ok_or_else(|| CollectorError::parse("/proc/loadavg", "fewer than 3 fields"))?;
        *slot = field
            .parse()
            .map_err(|e| CollectorError::parse("/proc/loadavg", format!("{field:?}: {e}")))?;
    }
    Ok(loads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadavg() {
        assert_eq!(
            parse_loadavg("0.21 0.37 0.39 1/719 19737\n").unwrap(),
            [0.21, 0.37, 0.39]
        );
        assert!(parse_loadavg("0.21 x").is_err());
        assert!(parse_loadavg("").is_err());
    }

    #[test]
    fn emits_node_exporter_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loadavg"), "1.5 2.5 3.5 1/1 1\n").unwrap();
        let c = LoadavgCollector {
            path: dir.path().join("loadavg"),
        };
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        let names: Vec<_> = set
            .families()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(names, ["node_load1", "node_load5", "node_load15"]);
        assert_eq!(
            set.families()[0].get_metric()[0].get_gauge().get_value(),
            1.5
        );
        assert_eq!(set.families()[0].help(), "1m load average.");
    }
}
