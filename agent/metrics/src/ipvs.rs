//! `ipvs`: node_ipvs_* from /proc/net/ip_vs_stats and /proc/net/ip_vs (node_exporter 1.5.0
//! collector/ipvs_linux.go over procfs' `IPVSStats` and `IPVSBackendStatus`). kube-proxy in
//! IPVS mode programs one virtual server per Service, so this is how its backends are seen.
//! Backends are summed per label set, so `--collector.ipvs.backend-labels` can aggregate.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// Every backend label, in node_exporter's order (also the flag's default).
pub const BACKEND_LABELS: &[&str] = &[
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "proto",
    "local_mark",
];

/// Parses `--collector.ipvs.backend-labels` (comma separated, empty items ignored) into
/// node_exporter's order; unknown names are an error naming them, sorted.
pub fn parse_backend_labels(list: &str) -> Result<Vec<&'static str>, String> {
    let wanted: Vec<&str> = list.split(',').filter(|l| !l.is_empty()).collect();
    let mut unknown: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|l| !BACKEND_LABELS.contains(l))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        unknown.dedup();
        return Err(format!(
            "unknown IPVS backend labels: {:?}",
            unknown.join(", ")
        ));
    }
    Ok(BACKEND_LABELS
        .iter()
        .copied()
        .filter(|l| wanted.contains(l))
        .collect())
}

/// Totals of /proc/net/ip_vs_stats.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct IpvsStats {
    pub connections: u64,
    pub incoming_packets: u64,
    pub outgoing_packets: u64,
    pub incoming_bytes: u64,
    pub outgoing_bytes: u64,
}

/// One (virtual server, real server) pair of /proc/net/ip_vs.
#[derive(Debug, Clone, PartialEq)]
pub struct IpvsBackend {
    /// `None` for a firewall-mark service.
    pub local_address: Option<IpAddr>,
    pub local_port: u16,
    pub local_mark: String,
    pub remote_address: IpAddr,
    pub remote_port: u16,
    pub proto: String,
    pub weight: u64,
    pub active_conn: u64,
    pub inact_conn: u64,
}

pub struct IpvsCollector {
    stats: PathBuf,
    backends: PathBuf,
    labels: Vec<&'static str>,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    let labels = parse_backend_labels(&ctx.options.more.ipvs_backend_labels.join(","))
        .map_err(CollectorError::Other)?;
    Ok(Box::new(IpvsCollector {
        stats: ctx.paths.proc_net_path("ip_vs_stats"),
        backends: ctx.paths.proc_net_path("ip_vs"),
        labels,
    }))
}

fn err(what: &str, detail: impl std::fmt::Display) -> CollectorError {
    CollectorError::parse(what, detail)
}

fn hex_u64(s: &str) -> Result<u64, CollectorError> {
    u64::from_str_radix(s, 16).map_err(|e| err("ip_vs_stats", format!("{s:?}: {e}")))
}

/// Parses ip_vs_stats: the third line holds the five totals, in hex.
pub fn parse_ipvs_stats(text: &str) -> Result<IpvsStats, CollectorError> {
    let lines: Vec<&str> = text.splitn(4, '\n').collect();
    if lines.len() != 4 {
        return Err(err("ip_vs_stats", "corrupt: too short"));
    }
    let f: Vec<&str> = lines[2].split_whitespace().collect();
    if f.len() != 5 {
        return Err(err("ip_vs_stats", "corrupt: unexpected number of fields"));
    }
    Ok(IpvsStats {
        connections: hex_u64(f[0])?,
        incoming_packets: hex_u64(f[1])?,
        outgoing_packets: hex_u64(f[2])?,
        incoming_bytes: hex_u64(f[3])?,
        outgoing_bytes: hex_u64(f[4])?,
    })
}

/// `C0A80016:0CEA` (IPv4 or 16-byte hex) or `[fd00:0000:…:0001]:0050`.
fn parse_ip_port(s: &str) -> Result<(IpAddr, u16), CollectorError> {
    let bad = || err("ip_vs", format!("invalid IP:Port: {s}"));
    let (ip, port) = if let Some(rest) = s.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:").ok_or_else(bad)?;
        (IpAddr::V6(ip.parse::<Ipv6Addr>().map_err(|_| bad())?), port)
    } else {
        let (ip, port) = s.split_once(':').ok_or_else(bad)?;
        let ip = match ip.len() {
            8 => IpAddr::V4(Ipv4Addr::from(
                u32::from_str_radix(ip, 16).map_err(|_| bad())?,
            )),
            32 => IpAddr::V6(Ipv6Addr::from(
                u128::from_str_radix(ip, 16).map_err(|_| bad())?,
            )),
            _ => return Err(err("ip_vs", format!("invalid IP: {ip}"))),
        };
        (ip, port)
    };
    let port = u16::from_str_radix(port, 16).map_err(|_| bad())?;
    Ok((ip, port))
}

fn dec(s: &str) -> Result<u64, CollectorError> {
    s.parse().map_err(|e| err("ip_vs", format!("{s:?}: {e}")))
}

/// Parses /proc/net/ip_vs: a service line (`TCP`/`UDP <ip:port>` or `FWM <mark>`) followed
/// by its `-> <ip:port> <forward> <weight> <active> <inactive>` real servers.
pub fn parse_ipvs_backends(text: &str) -> Result<Vec<IpvsBackend>, CollectorError> {
    let mut out = Vec::new();
    let mut proto = String::new();
    let mut local_mark = String::new();
    let mut local: Option<(IpAddr, u16)> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [] => {}
            ["IP" | "Prot", ..] | [_, "RemoteAddress:Port", ..] => {}
            [p @ ("TCP" | "UDP"), addr, ..] => {
                proto = p.to_string();
                local_mark.clear();
                local = Some(parse_ip_port(addr)?);
            }
            ["FWM", mark, ..] => {
                proto = "FWM".to_string();
                local_mark = mark.to_string();
                local = None;
            }
            ["->", addr, _forward, weight, active, inact, ..] => {
                let (remote_address, remote_port) = parse_ip_port(addr)?;
                out.push(IpvsBackend {
                    local_address: local.map(|(a, _)| a),
                    local_port: local.map_or(0, |(_, p)| p),
                    local_mark: local_mark.clone(),
                    remote_address,
                    remote_port,
                    proto: proto.clone(),
                    weight: dec(weight)?,
                    active_conn: dec(active)?,
                    inact_conn: dec(inact)?,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// As Go's `net.IP.String`: IPv4-mapped IPv6 addresses print as IPv4.
fn ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

impl Collector for IpvsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let stats = match read_proc(&self.stats) {
            // No ip_vs module: nothing to report.
            Err(e) if e.is_not_found() => return Err(CollectorError::NoData),
            other => parse_ipvs_stats(&other?)?,
        };
        for (name, help, v) in [
            (
                "node_ipvs_connections_total",
                "The total number of connections made.",
                stats.connections,
            ),
            (
                "node_ipvs_incoming_packets_total",
                "The total number of incoming packets.",
                stats.incoming_packets,
            ),
            (
                "node_ipvs_outgoing_packets_total",
                "The total number of outgoing packets.",
                stats.outgoing_packets,
            ),
            (
                "node_ipvs_incoming_bytes_total",
                "The total amount of incoming data.",
                stats.incoming_bytes,
            ),
            (
                "node_ipvs_outgoing_bytes_total",
                "The total amount of outgoing data.",
                stats.outgoing_bytes,
            ),
        ] {
            out.counter(name, help, &[], v as f64);
        }
        let backends = parse_ipvs_backends(&read_proc(&self.backends)?)?;
        let mut sums: BTreeMap<Vec<String>, (u64, u64, u64)> = BTreeMap::new();
        for b in &backends {
            let values = self
                .labels
                .iter()
                .map(|&l| match l {
                    "local_address" => b.local_address.map(ip_string).unwrap_or_default(),
                    "local_port" => b.local_port.to_string(),
                    "remote_address" => ip_string(b.remote_address),
                    "remote_port" => b.remote_port.to_string(),
                    "proto" => b.proto.clone(),
                    _ => b.local_mark.clone(),
                })
                .collect();
            let sum = sums.entry(values).or_default();
            sum.0 += b.active_conn;
            sum.1 += b.inact_conn;
            sum.2 += b.weight;
        }
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(self.labels.len());
        for (values, (active, inact, weight)) in &sums {
            labels.clear();
            labels.extend(
                self.labels
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str)),
            );
            out.gauge(
                "node_ipvs_backend_connections_active",
                "The current active connections by local and remote address.",
                &labels,
                *active as f64,
            );
            out.gauge(
                "node_ipvs_backend_connections_inactive",
                "The current inactive connections by local and remote address.",
                &labels,
                *inact as f64,
            );
            out.gauge(
                "node_ipvs_backend_weight",
                "The current backend weight by local and remote address.",
                &labels,
                *weight as f64,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter, len, paths, scrape, value};

    #[test]
    fn same_as_node_exporter() {
        assert_same_as_node_exporter(
            "ipvs",
            build,
            &paths("ipvs"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn aggregated_labels_same_as_node_exporter() {
        let options = CollectorOptions {
            more: crate::config::MoreOptions {
                ipvs_backend_labels: vec!["proto".into(), "local_port".into()],
                ..Default::default()
            },
            ..CollectorOptions::default()
        };
        assert_same_as_node_exporter(
            "ipvs",
            build,
            &paths("ipvs"),
            &options,
            &["--collector.ipvs.backend-labels=proto,local_port"],
        );
        let set = scrape(build, &paths("ipvs"), &options).unwrap();
        // Both UDP backends of 10.96.0.10:53 summed.
        assert_eq!(
            value(
                &set,
                "node_ipvs_backend_connections_inactive",
                &[("local_port", "53"), ("proto", "UDP")]
            ),
            49.0
        );
    }

    #[test]
    fn backends_of_every_service_kind() {
        let set = scrape(build, &paths("ipvs"), &CollectorOptions::default()).unwrap();
        assert_eq!(value(&set, "node_ipvs_connections_total", &[]), 23765872.0);
        assert_eq!(
            value(&set, "node_ipvs_outgoing_bytes_total", &[]),
            u64::MAX as f64
        );
        assert_eq!(len(&set, "node_ipvs_backend_weight"), 9);
        let fwm = [
            ("local_address", ""),
            ("local_port", "0"),
            ("remote_address", "192.168.50.21"),
            ("remote_port", "3306"),
            ("proto", "FWM"),
            ("local_mark", "00000064"),
        ];
        assert_eq!(
            value(&set, "node_ipvs_backend_connections_active", &fwm),
            20.0
        );
        let v4_mapped = [
            ("local_address", "fd00::1"),
            ("local_port", "80"),
            ("remote_address", "10.0.0.5"),
            ("remote_port", "80"),
            ("proto", "TCP"),
            ("local_mark", ""),
        ];
        assert_eq!(value(&set, "node_ipvs_backend_weight", &v4_mapped), 1.0);
    }

    #[test]
    fn absent_module_is_no_data_absent_backends_an_error() {
        let mut p = paths("ipvs");
        p.proc = p.proc.join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
        let e = scrape(
            build,
            &paths("ipvs-nobackends"),
            &CollectorOptions::default(),
        )
        .err()
        .unwrap();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(parse_ipvs_stats("a\nb\n").is_err());
        assert!(parse_ipvs_stats("h\nh\n 1 2 3 4\n\n").is_err());
        assert!(parse_ipvs_stats("h\nh\n 1 2 3 4 G\n\n").is_err());
        assert!(parse_ipvs_backends("TCP  0A60:01BB rr\n").is_err());
        assert!(
            parse_ipvs_backends("TCP  0A600001:01BB rr\n  -> 0AF40A0B:2710 Masq x 0 0\n").is_err()
        );
        assert!(parse_ipvs_backends("TCP  [fd00::1:0050 rr\n").is_err());
        assert!(
            parse_backend_labels("proto,bogus,zz")
                .unwrap_err()
                .contains("bogus, zz")
        );
        assert_eq!(
            parse_backend_labels("proto,,local_address").unwrap(),
            ["local_address", "proto"]
        );
    }
}
