//! `vmstat`: selected /proc/vmstat fields as untyped node_vmstat_<field> (node_exporter
//! 1.5.0 collector/vmstat_linux.go).
//!
//! Parsed by hand: procfs's `VmStat` builds a map of all ~180 fields per scrape, but only a
//! handful are exported. The field regex result is cached per line position (the kernel's
//! field order is fixed), so the hot path runs no regex and no hashing after the first
//! scrape; a line whose name differs from the cached one is simply re-evaluated.

use std::path::PathBuf;
use std::sync::Mutex;

use regex::Regex;

use super::{BuildContext, Collector, CollectorError, MetricSet, parse_number, read_proc};

/// node_exporter 1.5.0 upstream default.
pub const DEFAULT_FIELDS: &str = r"^(oom_kill|pgpg|pswp|pg.*fault).*";

pub struct VmstatCollector {
    path: PathBuf,
    fields: Regex,
    /// Per line: field name and whether `fields` matches it.
    layout: Mutex<Vec<(Box<str>, bool)>>,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(VmstatCollector {
        path: ctx.paths.proc_path("vmstat"),
        fields: ctx.options.vmstat_fields.clone(),
        layout: Mutex::new(Vec::new()),
    }))
}

impl Collector for VmstatCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = read_proc(&self.path)?;
        let what = self.path.display().to_string();
        let mut layout = self.layout.lock().unwrap_or_else(|p| p.into_inner());
        let mut name = String::with_capacity(48);
        let mut help = String::with_capacity(64);
        for (i, line) in super::lines(&text).enumerate() {
            let (field, value) = parse_line(line, &what)?;
            let selected = match layout.get(i) {
                Some((cached, m)) if &**cached == field => *m,
                _ => {
                    let m = self.fields.is_match(field);
                    let entry = (Box::from(field), m);
                    match layout.get_mut(i) {
                        Some(slot) => *slot = entry,
                        None => layout.push(entry),
                    }
                    m
                }
            };
            if !selected {
                continue;
            }
            let value = parse_number(value)
                .map_err(|e| CollectorError::parse(&what, format!("{line:?}: {e}")))?;
            name.clear();
            name.push_str("node_vmstat_");
            name.push_str(field);
            help.clear();
            help.push_str("/proc/vmstat information field ");
            help.push_str(field);
            help.push('.');
            out.untyped(&name, &help, &[], value);
        }
        Ok(())
    }
}

fn parse_line<'a>(line: &'a str, what: &str) -> Result<(&'a str, &'a str), CollectorError> {
    let mut parts = line.split_ascii_whitespace();
    match (parts.next(), parts.next()) {
        (Some(field), Some(value)) => Ok((field, value)),
        _ => Err(CollectorError::parse(
            what,
            format!("invalid line {line:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::MetricType;

    fn collector(file: &str) -> VmstatCollector {
        VmstatCollector {
            path: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/vmstat")).join(file),
            fields: Regex::new(DEFAULT_FIELDS).unwrap(),
            layout: Mutex::new(Vec::new()),
        }
    }

    #[test]
    #[allow(deprecated)] // untyped accessors are the only way to read the value
    fn emits_default_fields_untyped() {
        let c = collector("vmstat");
        for _ in 0..2 {
            // second pass uses the cached matches
            let mut set = MetricSet::new();
            c.update(&mut set).unwrap();
            let got: Vec<_> = set
                .families()
                .iter()
                .map(|f| {
                    assert_eq!(f.get_field_type(), MetricType::UNTYPED);
                    (
                        f.name().to_string(),
                        f.get_metric()[0].get_untyped().get_value(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    ("node_vmstat_pgpgin".to_string(), 100.0),
                    ("node_vmstat_pgpgout".to_string(), 200.0),
                    ("node_vmstat_pswpin".to_string(), 0.0),
                    ("node_vmstat_pgfault".to_string(), 123456789.0),
                    ("node_vmstat_pgmajfault".to_string(), 42.0),
                    ("node_vmstat_oom_kill".to_string(), 1.0),
                ]
            );
            assert_eq!(
                set.families()[0].help(),
                "/proc/vmstat information field pgpgin."
            );
        }
    }

    #[test]
    fn cached_layout_survives_a_changed_field_order() {
        let a = collector("vmstat");
        a.update(&mut MetricSet::new()).unwrap();
        let b = VmstatCollector {
            layout: Mutex::new(a.layout.into_inner().unwrap()),
            ..collector("reordered")
        };
        let mut set = MetricSet::new();
        b.update(&mut set).unwrap();
        let names: Vec<_> = set.families().iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "node_vmstat_oom_kill",
                "node_vmstat_pgfault",
                "node_vmstat_pswpout"
            ]
        );
    }

    #[test]
    fn bad_input_is_an_error_naming_the_file() {
        let err = collector("truncated")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(
            err.to_string().contains("testdata/vmstat/truncated"),
            "{err}"
        );
        let err = collector("nonnumeric")
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("pgfault"), "{err}");
        assert!(
            collector("absent")
                .update(&mut MetricSet::new())
                .unwrap_err()
                .is_not_found()
        );
    }
}
