//! `sockstat`: node_sockstat_* from /proc/net/sockstat and /proc/net/sockstat6
//! (node_exporter 1.5.0 collector/sockstat_linux.go).
//!
//! Hand-parsed: procfs-core has no sockstat parser. Only the keys procfs (Go) knows are
//! exported; `mem` is in pages and also exported as `mem_bytes` = pages × page size.

use std::path::{Path, PathBuf};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

const KNOWN_KEYS: [&str; 6] = ["inuse", "orphan", "tw", "alloc", "mem", "memory"];

pub struct SockstatCollector {
    v4: PathBuf,
    v6: PathBuf,
    page_size: f64,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    // *_mem values are pages; 4 KiB if sysconf cannot tell.
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096);
    Ok(Box::new(SockstatCollector {
        v4: ctx.paths.proc_net_path("sockstat"),
        v6: ctx.paths.proc_net_path("sockstat6"),
        page_size: page_size as f64,
    }))
}

/// One sample: (protocol, state, value), `sockets`/`used` becoming `sockets_used`.
pub type Sample<'a> = (&'a str, &'a str, f64);

/// Reads a sockstat file; `None` if it does not exist (e.g. IPv6 disabled).
fn read_optional(path: &Path) -> Result<Option<String>, CollectorError> {
    match read_proc(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_not_found() => {
            tracing::debug!(path = %path.display(), "sockstat statistics not found, skipping");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Collector for SockstatCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        for path in [&self.v4, &self.v6] {
            let Some(text) = read_optional(path)? else {
                continue;
            };
            for (proto, key, value) in parse_sockstat(&text, path)? {
                if proto == "sockets" {
                    out.gauge(
                        "node_sockstat_sockets_used",
                        "Number of IPv4 sockets in use.",
                        &[],
                        value,
                    );
                    continue;
                }
                let mut emit = |state: &str, v: f64| {
                    out.gauge(
                        &format!("node_sockstat_{proto}_{state}"),
                        &format!("Number of {proto} sockets in state {state}."),
                        &[],
                        v,
                    );
                };
                emit(key, value);
                if key == "mem" {
                    emit("mem_bytes", value * self.page_size);
                }
            }
        }
        Ok(())
    }
}

/// Parses `PROTO: key value key value ...` lines.
pub fn parse_sockstat<'a>(text: &'a str, path: &Path) -> Result<Vec<Sample<'a>>, CollectorError> {
    let file = || path.display().to_string();
    let mut samples = Vec::new();
    for line in super::lines(text).filter(|l| !l.trim().is_empty()) {
        let (proto, rest) = line
            .split_once(':')
            .ok_or_else(|| CollectorError::parse(file(), format!("no ':' in {line:?}")))?;
        let mut f = rest.split_whitespace();
        while let Some(key) = f.next() {
            let v = f.next().ok_or_else(|| {
                CollectorError::parse(file(), format!("{proto} {key} has no value"))
            })?;
            let v: f64 = v
                .parse::<i64>()
                .map_err(|e| CollectorError::parse(file(), format!("{proto} {key}={v:?}: {e}")))?
                as f64;
            if proto == "sockets" {
                if key == "used" {
                    samples.push((proto, key, v));
                }
            } else if KNOWN_KEYS.contains(&key) {
                samples.push((proto, key, v));
            }
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, kind, names, paths, scrape, testdata, value};

    #[test]
    fn emits_ipv4_and_ipv6_with_mem_bytes() {
        let set = scrape(build, &paths("sockstat"), &CollectorOptions::default()).unwrap();
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .unwrap()
            .unwrap() as f64;
        assert_eq!(value(&set, "node_sockstat_sockets_used", &[]), 37.0);
        assert_eq!(
            help(&set, "node_sockstat_sockets_used"),
            "Number of IPv4 sockets in use."
        );
        assert_eq!(value(&set, "node_sockstat_TCP_inuse", &[]), 2.0);
        assert_eq!(value(&set, "node_sockstat_TCP_mem", &[]), 198.0);
        assert_eq!(
            value(&set, "node_sockstat_TCP_mem_bytes", &[]),
            198.0 * page
        );
        assert_eq!(value(&set, "node_sockstat_FRAG_memory", &[]), 0.0);
        assert_eq!(value(&set, "node_sockstat_TCP6_inuse", &[]), 1.0);
        assert_eq!(value(&set, "node_sockstat_FRAG6_memory", &[]), 0.0);
        assert_eq!(kind(&set, "node_sockstat_TCP_mem_bytes"), MetricType::GAUGE);
        assert_eq!(
            help(&set, "node_sockstat_TCP_mem_bytes"),
            "Number of TCP sockets in state mem_bytes."
        );
        // Unknown keys are ignored like procfs does.
        assert!(!set.contains("node_sockstat_TCP_future"));
        assert_eq!(names(&set).len(), 20);
    }

    #[test]
    fn missing_ipv6_is_fine_bad_lines_are_errors() {
        let mut p = paths("sockstat");
        p.proc = testdata("sockstat").join("proc_v4only");
        let set = scrape(build, &p, &CollectorOptions::default()).unwrap();
        assert_eq!(value(&set, "node_sockstat_UDP_inuse", &[]), 1.0);
        assert!(!set.contains("node_sockstat_TCP6_inuse"));

        let path = Path::new("/proc/net/sockstat");
        let err = parse_sockstat("TCP: inuse\n", path).unwrap_err();
        assert!(err.to_string().contains("/proc/net/sockstat"), "{err}");
        assert!(parse_sockstat("TCP: inuse x\n", path).is_err());
        assert!(parse_sockstat("garbage\n", path).is_err());
    }
}
