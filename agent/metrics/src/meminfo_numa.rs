//! `meminfo_numa` (off by default): per NUMA node memory from
//! /sys/devices/system/node/node<N>/{meminfo,numastat} (node_exporter 1.5.0
//! collector/meminfo_numa_linux.go): meminfo fields as gauges in bytes
//! (`node_memory_numa_Active_anon`), numastat counters as `<field>_total`.

use std::path::{Path, PathBuf};

use super::sysattr::sorted_entries;
use super::{BuildContext, Collector, CollectorError, MetricSet, parse_number, read_proc};

#[derive(Debug, Clone, PartialEq)]
pub struct NumaField {
    pub name: String,
    pub node: String,
    pub value: f64,
    pub counter: bool,
}

pub struct MeminfoNumaCollector {
    dir: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(MeminfoNumaCollector {
        dir: ctx.paths.sys_path("devices/system/node"),
    }))
}

/// `Active(anon)` → `Active_anon`.
fn field_name(raw: &str) -> String {
    let raw = raw.trim_end_matches(':');
    match (raw.find('('), raw.rfind(')')) {
        (Some(open), Some(close)) if open < close => {
            format!(
                "{}_{}{}",
                &raw[..open],
                &raw[open + 1..close],
                &raw[close + 1..]
            )
        }
        _ => raw.to_string(),
    }
}

/// `Node 0 MemTotal: 33503088 kB` lines.
pub fn parse_numa_meminfo(what: &str, text: &str) -> Result<Vec<NumaField>, CollectorError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let bad = || CollectorError::parse(what, format!("invalid line in meminfo: {line}"));
        let raw = parts.get(3).ok_or_else(bad)?;
        let mut value = parse_number(raw)
            .map_err(|e| CollectorError::parse(what, format!("invalid value in meminfo: {e}")))?;
        match parts.len() {
            4 => {}
            5 if parts[4] == "kB" => value *= 1024.0,
            _ => return Err(bad()),
        }
        out.push(NumaField {
            name: field_name(parts[2]),
            node: parts[1].to_string(),
            value,
            counter: false,
        });
    }
    Ok(out)
}

/// `numa_hit 193460335812` lines.
pub fn parse_numastat(
    what: &str,
    text: &str,
    node: &str,
) -> Result<Vec<NumaField>, CollectorError> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, raw] = parts.as_slice() else {
            return Err(CollectorError::parse(
                what,
                format!("line scan did not return 2 fields: {line}"),
            ));
        };
        let value =
            parse_number(raw).map_err(|e| CollectorError::parse(what, format!("{raw:?}: {e}")))?;
        out.push(NumaField {
            name: format!("{name}_total"),
            node: node.to_string(),
            value,
            counter: true,
        });
    }
    Ok(out)
}

pub fn read_numa(dir: &Path) -> Result<Vec<NumaField>, CollectorError> {
    let mut out = Vec::new();
    for name in sorted_entries(dir)?.unwrap_or_default() {
        let Some(rest) = name.strip_prefix("node") else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let node: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let meminfo = dir.join(&name).join("meminfo");
        out.extend(parse_numa_meminfo(
            &meminfo.display().to_string(),
            &read_proc(&meminfo)?,
        )?);
        let numastat = dir.join(&name).join("numastat");
        out.extend(parse_numastat(
            &numastat.display().to_string(),
            &read_proc(&numastat)?,
            &node,
        )?);
    }
    Ok(out)
}

impl Collector for MeminfoNumaCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let mut name = String::with_capacity(64);
        let mut help = String::with_capacity(64);
        for f in read_numa(&self.dir)? {
            name.clear();
            name.push_str("node_memory_numa_");
            name.push_str(&f.name);
            help.clear();
            help.push_str("Memory information field ");
            help.push_str(&f.name);
            help.push('.');
            let labels = [("node", f.node.as_str())];
            if f.counter {
                out.counter(&name, &help, &labels, f.value);
            } else {
                out.gauge(&name, &help, &labels, f.value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter, paths, scrape, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "meminfo_numa",
            build,
            &paths("meminfo_numa"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn fields_in_bytes_and_counters() {
        let set = scrape(build, &paths("meminfo_numa"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(&set, "node_memory_numa_Active_file", &[("node", "1")]),
            968624.0 * 1024.0
        );
        assert_eq!(
            value(&set, "node_memory_numa_HugePages_Total", &[("node", "1")]),
            4.0,
            "no unit"
        );
        assert_eq!(
            value(&set, "node_memory_numa_numa_miss_total", &[("node", "1")]),
            2.0
        );
    }

    #[test]
    fn bad_lines_and_missing_files() {
        assert!(parse_numa_meminfo("m", "Node 0 MemTotal: x kB\n").is_err());
        assert!(parse_numa_meminfo("m", "Node 0 MemTotal: 1 MB\n").is_err());
        assert!(parse_numa_meminfo("m", "Node 0\n").is_err());
        assert!(parse_numastat("n", "numa_hit 1 2\n", "0").is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("node3")).unwrap();
        std::fs::write(dir.path().join("node3/meminfo"), "Node 3 MemFree: 1 kB\n").unwrap();
        assert!(
            read_numa(dir.path()).unwrap_err().is_not_found(),
            "numastat missing"
        );
        assert!(read_numa(&dir.path().join("none")).unwrap().is_empty());
    }
}
