//! `udp_queues`: node_udp_queues{ip,queue} — bytes queued in UDP sockets, summed over
//! /proc/net/udp and /proc/net/udp6 (node_exporter 1.5.0 collector/udp_queues_linux.go).
//!
//! Hand-parsed: procfs' `UdpNetEntries` decodes every column (addresses, uid, inode) and
//! allocates per socket; only the `tx_queue:rx_queue` column is needed here.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

const HELP: &str = "Number of allocated memory in the kernel for UDP datagrams in bytes.";

pub struct UdpQueuesCollector {
    v4: PathBuf,
    v6: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(UdpQueuesCollector {
        v4: ctx.paths.proc_net_path("udp"),
        v6: ctx.paths.proc_net_path("udp6"),
    }))
}

impl Collector for UdpQueuesCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let mut missing = 0;
        for (path, ip) in [(&self.v4, "v4"), (&self.v6, "v6")] {
            let text = match read_proc(path) {
                Ok(t) => t,
                Err(e) if e.is_not_found() => {
                    tracing::debug!(path = %path.display(), "not collecting {ip} UDP queues");
                    missing += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (tx, rx) = sum_queues(&text, &path.display().to_string())?;
            out.gauge(
                "node_udp_queues",
                HELP,
                &[("queue", "tx"), ("ip", ip)],
                tx as f64,
            );
            out.gauge(
                "node_udp_queues",
                HELP,
                &[("queue", "rx"), ("ip", ip)],
                rx as f64,
            );
        }
        if missing == 2 {
            return Err(CollectorError::NoData);
        }
        Ok(())
    }
}

/// Sums the hex `tx_queue:rx_queue` column (the 5th) over all sockets.
pub fn sum_queues(text: &str, file: &str) -> Result<(u64, u64), CollectorError> {
    let (mut tx, mut rx) = (0u64, 0u64);
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let queues = line
            .split_whitespace()
            .nth(4)
            .ok_or_else(|| CollectorError::parse(file, format!("too few columns: {line:?}")))?;
        let (t, r) = queues
            .split_once(':')
            .ok_or_else(|| CollectorError::parse(file, format!("bad queue column {queues:?}")))?;
        let hex = |s: &str| {
            u64::from_str_radix(s, 16)
                .map_err(|e| CollectorError::parse(file, format!("{queues:?}: {e}")))
        };
        tx += hex(t)?;
        rx += hex(r)?;
    }
    Ok((tx, rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, len, paths, scrape, testdata, value};

    #[test]
    fn sums_queues_per_ip_version() {
        let set = scrape(build, &paths("udp_queues"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(&set, "node_udp_queues", &[("ip", "v4"), ("queue", "tx")]),
            0x10 as f64
        );
        assert_eq!(
            value(&set, "node_udp_queues", &[("ip", "v4"), ("queue", "rx")]),
            (0x300 + 0x2) as f64
        );
        assert_eq!(
            value(&set, "node_udp_queues", &[("ip", "v6"), ("queue", "rx")]),
            0.0
        );
        assert_eq!(len(&set, "node_udp_queues"), 4);
        assert_eq!(help(&set, "node_udp_queues"), HELP);
    }

    #[test]
    fn missing_files_and_bad_lines() {
        let mut p = paths("udp_queues");
        p.proc = testdata("udp_queues").join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
        let err = sum_queues(
            "header\n 0: 00000000:0044 00000000:0000 07\n",
            "/proc/net/udp",
        )
        .unwrap_err();
        assert!(err.to_string().contains("/proc/net/udp"), "{err}");
        assert!(sum_queues("header\n 0: a b 07 zz:00000000 x\n", "f").is_err());
        assert!(sum_queues("header\n 0: a b 07 00000000 x\n", "f").is_err());
    }
}
