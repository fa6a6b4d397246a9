//! `meminfo`: every /proc/meminfo line as node_memory_<Key>[_bytes] (node_exporter 1.5.0
//! collector/meminfo.go, meminfo_linux.go).
//!
//! Parsed by hand rather than with `procfs::Meminfo`: node_exporter 1.5.0 is generic over
//! whatever keys the running kernel prints (e.g. Zswap, SecPageTables on 6.x), while the
//! procfs struct has a fixed field list and would drop or rename keys.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, parse_number, read_proc};

pub struct MeminfoCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(MeminfoCollector {
        path: ctx.paths.proc_path("meminfo"),
    }))
}

impl Collector for MeminfoCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = read_proc(&self.path)?;
        let fields = parse_meminfo(&text, &self.path.display().to_string())?;
        let mut name = String::with_capacity(64);
        let mut help = String::with_capacity(64);
        for (key, value) in fields {
            name.clear();
            name.push_str("node_memory_");
            name.push_str(&key);
            help.clear();
            help.push_str("Memory information field ");
            help.push_str(&key);
            help.push('.');
            // node_exporter: a field is a counter only if its name ends in _total.
            if key.ends_with("_total") {
                out.counter(&name, &help, &[], value);
            } else {
                out.gauge(&name, &help, &[], value);
            }
        }
        Ok(())
    }
}

/// (metric key, value) per line: `Active(anon):  12 kB` → (`Active_anon_bytes`, 12288).
/// Lines without a unit (HugePages_*) keep their plain count and get no suffix.
pub fn parse_meminfo(text: &str, what: &str) -> Result<Vec<(String, f64)>, CollectorError> {
    let mut fields = Vec::with_capacity(64);
    for line in super::lines(text) {
        let mut parts = line.split_ascii_whitespace();
        let Some(raw_key) = parts.next() else {
            continue; // blank lines occur on some old kernels
        };
        let value = parts
            .next()
            .ok_or_else(|| CollectorError::parse(what, format!("no value in {line:?}")))?;
        let unit = parts.next();
        if parts.next().is_some() {
            return Err(CollectorError::parse(
                what,
                format!("invalid line {line:?}"),
            ));
        }
        let mut value = parse_number(value)
            .map_err(|e| CollectorError::parse(what, format!("value in {line:?}: {e}")))?;
        let raw_key = raw_key.strip_suffix(':').unwrap_or(raw_key);
        let mut key = String::with_capacity(raw_key.len() + 6);
        // `Active(anon)` → `Active_anon` (node_exporter's greedy `\((.*)\)` → `_${1}`).
        match (
            memchr::memchr(b'(', raw_key.as_bytes()),
            memchr::memrchr(b')', raw_key.as_bytes()),
        ) {
            (Some(open), Some(close)) if open < close => {
                key.push_str(&raw_key[..open]);
                key.push('_');
                key.push_str(&raw_key[open + 1..close]);
                key.push_str(&raw_key[close + 1..]);
            }
            _ => key.push_str(raw_key),
        }
        if unit.is_some() {
            // The kernel only ever prints kB here.
            value *= 1024.0;
            key.push_str("_bytes");
        }
        fields.push((key, value));
    }
    if fields.is_empty() {
        return Err(CollectorError::parse(what, "empty file"));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::MetricType;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/meminfo")).join(name)
    }

    #[test]
    fn emits_generic_fields_with_units() {
        let c = MeminfoCollector {
            path: fixture("meminfo"),
        };
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        let get = |name: &str| {
            let f = set
                .families()
                .iter()
                .find(|f| f.name() == name)
                .unwrap_or_else(|| panic!("{name} missing"));
            (
                f.get_field_type(),
                f.get_metric()[0].get_gauge().get_value(),
                f.help().to_string(),
            )
        };
        assert_eq!(
            get("node_memory_MemTotal_bytes"),
            (
                MetricType::GAUGE,
                16384000.0 * 1024.0,
                "Memory information field MemTotal_bytes.".into()
            )
        );
        assert_eq!(get("node_memory_Active_anon_bytes").1, 1024.0);
        assert_eq!(get("node_memory_HugePages_Total").1, 2.0);
        // Unknown, future keys pass through generically.
        assert_eq!(get("node_memory_FutureThing_bytes").1, 7.0 * 1024.0);
        assert_eq!(set.families().len(), 7);
    }

    #[test]
    fn bad_input_is_an_error_naming_the_file() {
        for bad in [
            "MemTotal:\n",
            "MemTotal: x kB\n",
            "MemTotal: 1 kB extra\n",
            "",
        ] {
            let err = parse_meminfo(bad, "/proc/meminfo").unwrap_err();
            assert!(err.to_string().contains("/proc/meminfo"), "{err}");
        }
        let c = MeminfoCollector {
            path: fixture("absent"),
        };
        assert!(c.update(&mut MetricSet::new()).unwrap_err().is_not_found());
    }
}
