//! `tcpstat` (off by default): node_tcp_connection_states{state} from /proc/net/tcp and
//! /proc/net/tcp6 of the host's network namespace (`HostPaths::proc_net_path`).
//!
//! node_exporter 1.5.0 asks the kernel over NETLINK_SOCK_DIAG, which sees the namespace of
//! the exporter's own socket: in a pod without hostNetwork that is the pod's. The proc
//! tables give the same counts and queue bytes for established sockets; one difference:
//! for listening sockets sock_diag reports the backlog *limit* as the write queue, which
//! node_exporter adds to `tx_queued_bytes`, and /proc/net/tcp does not show it, so
//! `tx_queued_bytes` here counts only bytes actually queued.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// node_exporter's names of the kernel TCP states (1-based).
const STATES: &[&str] = &[
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];

pub struct TcpstatCollector {
    tcp: PathBuf,
    tcp6: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(TcpstatCollector {
        tcp: ctx.paths.proc_net_path("tcp"),
        tcp6: ctx.paths.proc_net_path("tcp6"),
    }))
}

/// Adds one /proc/net/tcp{,6} table to `stats` (state name → count, plus
/// `tx_queued_bytes`/`rx_queued_bytes`).
pub fn parse_tcp_table(
    what: &str,
    text: &str,
    stats: &mut BTreeMap<&'static str, f64>,
) -> Result<(), CollectorError> {
    let err = |d: String| CollectorError::parse(what, d);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let (Some(st), Some(queues)) = (f.get(3), f.get(4)) else {
            return Err(err(format!("short line {line:?}")));
        };
        let st = u8::from_str_radix(st, 16).map_err(|e| err(format!("state {st:?}: {e}")))?;
        let (tx, rx) = queues
            .split_once(':')
            .ok_or_else(|| err(format!("queues {queues:?}")))?;
        let tx = u64::from_str_radix(tx, 16).map_err(|e| err(format!("tx_queue {tx:?}: {e}")))?;
        let rx = u64::from_str_radix(rx, 16).map_err(|e| err(format!("rx_queue {rx:?}: {e}")))?;
        let name = STATES
            .get(usize::from(st).wrapping_sub(1))
            .copied()
            .unwrap_or("unknown");
        *stats.entry(name).or_default() += 1.0;
        *stats.entry("tx_queued_bytes").or_default() += tx as f64;
        *stats.entry("rx_queued_bytes").or_default() += rx as f64;
    }
    Ok(())
}

impl Collector for TcpstatCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let mut stats = BTreeMap::new();
        let tcp = read_proc(&self.tcp)?;
        parse_tcp_table(&self.tcp.display().to_string(), &tcp, &mut stats)?;
        match read_proc(&self.tcp6) {
            // IPv6 disabled.
            Err(e) if e.is_not_found() => {}
            other => parse_tcp_table(&self.tcp6.display().to_string(), &other?, &mut stats)?,
        }
        for (state, v) in stats {
            out.gauge(
                "node_tcp_connection_states",
                "Number of connection states.",
                &[("state", state)],
                v,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, paths, scrape, value};

    #[test]
    fn counts_states_and_queues_over_both_tables() {
        let set = scrape(build, &paths("tcpstat"), &CollectorOptions::default()).unwrap();
        let state = |s: &str| value(&set, "node_tcp_connection_states", &[("state", s)]);
        assert_eq!(state("listen"), 2.0);
        assert_eq!(state("established"), 2.0);
        assert_eq!(state("time_wait"), 1.0);
        assert_eq!(state("close_wait"), 1.0);
        assert_eq!(state("tx_queued_bytes"), 0x15 as f64);
        assert_eq!(state("rx_queued_bytes"), (2 + 1 + 0x10) as f64);
        assert_eq!(
            help(&set, "node_tcp_connection_states"),
            "Number of connection states."
        );
    }

    #[test]
    fn odd_tables() {
        let mut m = BTreeMap::new();
        parse_tcp_table("t", "header\n 0: a b 0C 0:0\n", &mut m).unwrap();
        assert_eq!(m["unknown"], 1.0);
        assert!(parse_tcp_table("t", "header\n 0: a b\n", &mut m).is_err());
        assert!(parse_tcp_table("t", "header\n 0: a b ZZ 0:0\n", &mut m).is_err());
        assert!(parse_tcp_table("t", "header\n 0: a b 01 00\n", &mut m).is_err());
        let mut p = paths("tcpstat");
        p.proc = p.proc.join("missing");
        assert!(scrape(build, &p, &CollectorOptions::default()).is_err());
    }
}
