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

/// Debian's node_exporter 1.5.0, the reference these collectors are compared against.
const NODE_EXPORTER: &str = "prometheus-node-exporter";

/// Kills and reaps a child process when dropped (a test's helper process).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// node_* families (minus the per-collector scrape families) that node_exporter 1.5.0
/// serves over `paths` with only `collectors` enabled plus `flags`; `None` when it is not
/// installed (which fails the test under `NODE_AGENT_REQUIRE_ALL=1`, as
/// `node_agent_tests::require::missing` does).
pub fn node_exporter(paths: &HostPaths, collectors: &[&str], flags: &[&str]) -> Option<String> {
    node_exporter_raw(paths, collectors, flags).map(|body| node_families(&body))
}

/// The whole exposition node_exporter serves (see [`node_exporter`]).
pub fn node_exporter_raw(paths: &HostPaths, collectors: &[&str], flags: &[&str]) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let installed = std::process::Command::new(NODE_EXPORTER)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        let reason =
            format!("{NODE_EXPORTER} not installed (apt-get install prometheus-node-exporter)");
        if std::env::var_os("NODE_AGENT_REQUIRE_ALL").is_some_and(|v| v == "1") {
            panic!("required: {reason}");
        }
        eprintln!("SKIPPED: {reason}");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(NODE_EXPORTER);
    cmd.arg(format!("--web.listen-address={addr}"))
        .arg(format!("--path.procfs={}", paths.proc.display()))
        .arg(format!("--path.sysfs={}", paths.sys.display()))
        .arg(format!("--path.rootfs={}", paths.rootfs.display()))
        .arg("--collector.disable-defaults")
        .arg("--web.disable-exporter-metrics")
        .args(collectors.iter().map(|c| format!("--collector.{c}")))
        .args(flags)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _child = KillOnDrop(cmd.spawn().expect("start node_exporter"));
    let mut response = String::new();
    for _ in 0..200 {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .unwrap();
            s.read_to_string(&mut response).unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_else(|| panic!("no response from node_exporter: {response:?}"));
    Some(body.to_string())
}

/// `collector → value` of the node_scrape_collector_success series of an exposition.
pub fn successes(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("node_scrape_collector_success{collector=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .map(|(c, v)| (c.to_string(), v.to_string()))
        .collect()
}

/// Keeps node_* families of an exposition, without node_scrape_*, build info and the
/// agent's own node_agent_*.
pub fn node_families(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let name = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            name.starts_with("node_")
                && !name.starts_with("node_scrape_collector_")
                && !name.starts_with("node_agent_")
                && !name.starts_with("node_exporter_build_info")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Our exposition of `set`, filtered like [`node_exporter`]'s.
pub fn ours(set: &mut MetricSet) -> String {
    let mut out = Vec::new();
    set.encode_text(&mut out);
    node_families(&String::from_utf8(out).expect("UTF-8 exposition"))
}

/// Asserts that the collector `build` serves exactly what node_exporter's `collector`
/// serves over the same fixture tree (names, HELP, types, labels, values, order).
pub fn assert_same_as_node_exporter(
    collector: &str,
    build: fn(&BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError>,
    paths: &HostPaths,
    options: &CollectorOptions,
    flags: &[&str],
) {
    assert_same_as_node_exporter_except(collector, build, paths, options, flags, &[]);
}

/// [`assert_same_as_node_exporter`], but series starting with one of `except` (deliberate
/// differences, each explained where it is passed) are left out on both sides.
pub fn assert_same_as_node_exporter_except(
    collector: &str,
    build: fn(&BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError>,
    paths: &HostPaths,
    options: &CollectorOptions,
    flags: &[&str],
    except: &[&str],
) {
    let Some(theirs) = node_exporter(paths, &[collector], flags) else {
        return;
    };
    let mut set = scrape(build, paths, options).expect("our scrape");
    let keep = |text: &str| -> String {
        text.lines()
            .filter(|l| !except.iter().any(|e| l.starts_with(e)))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let (ours, theirs) = (keep(&ours(&mut set)), keep(&theirs));
    if ours != theirs {
        let theirs_lines: std::collections::HashSet<&str> = theirs.lines().collect();
        let ours_lines: std::collections::HashSet<&str> = ours.lines().collect();
        let only_theirs: Vec<&str> = theirs.lines().filter(|l| !ours_lines.contains(l)).collect();
        let only_ours: Vec<&str> = ours.lines().filter(|l| !theirs_lines.contains(l)).collect();
        panic!(
            "{collector} differs from node_exporter 1.5.0\n--- only node_exporter:\n{}\n--- only ours:\n{}\n",
            only_theirs.join("\n"),
            only_ours.join("\n")
        );
    }
    assert!(!ours.is_empty(), "{collector}: nothing to compare");
}

/// `name type label,label` of every series of an exposition (values dropped): what must
/// match between two exporters on a live host whose counters move between the scrapes.
pub fn shape(text: &str) -> std::collections::BTreeSet<String> {
    let mut types = std::collections::HashMap::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            types.insert(name.to_string(), kind.to_string());
        }
    }
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, labels) = match l.split_once('{') {
                Some((n, rest)) => (n, rest.rsplit_once('}').map_or("", |(ls, _)| ls)),
                None => (l.split_whitespace().next().unwrap_or(""), ""),
            };
            let mut names: Vec<&str> = labels
                .split("\",")
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim_start_matches(',')))
                .filter(|k| !k.is_empty())
                .collect();
            names.sort_unstable();
            let kind = types.get(name).map_or("untyped", String::as_str);
            format!("{name} {kind} {}", names.join(","))
        })
        .collect()
}
