//! `netstat`: node_netstat_<Proto>_<Field> from /proc/net/netstat, /proc/net/snmp and
//! /proc/net/snmp6 (node_exporter 1.5.0 collector/netstat_linux.go). All UNTYPED.
//!
//! Hand-parsed: procfs' `Snmp`/`Snmp6` are fixed structs, but node_exporter exports any
//! field the kernel prints (filtered by the `--collector.netstat.fields` regex), keeping
//! the kernel's CamelCase names.

use std::path::PathBuf;
use std::sync::Mutex;

use regex::Regex;

use super::{BuildContext, Collector, CollectorError, MetricSet, parse_number, read_proc};

/// node_exporter 1.5.0 upstream default.
pub const DEFAULT_FIELDS: &str = r"^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

/// (protocol, field, value) as read from the files.
pub type Stat<'a> = (&'a str, &'a str, f64);

pub struct NetstatCollector {
    netstat: PathBuf,
    snmp: PathBuf,
    snmp6: PathBuf,
    fields: Regex,
    /// Per field position: `Proto_Field` and, if the field regex matches, (metric name,
    /// help). The kernel prints the same fields in the same order every time, so after the
    /// first scrape each field costs one string compare: no regex, hashing or formatting.
    names: Mutex<Vec<CachedField>>,
}

/// A field position's `Proto_Field` key and, if exported, its (metric name, help).
struct CachedField {
    key: String,
    desc: Option<(String, String)>,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(NetstatCollector {
        netstat: ctx.paths.proc_net_path("netstat"),
        snmp: ctx.paths.proc_net_path("snmp"),
        snmp6: ctx.paths.proc_net_path("snmp6"),
        fields: ctx.options.netstat_fields.clone(),
        names: Mutex::default(),
    }))
}

impl Collector for NetstatCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let netstat = read_proc(&self.netstat)?;
        let snmp = read_proc(&self.snmp)?;
        // Absent when IPv6 is disabled.
        let snmp6 = match read_proc(&self.snmp6) {
            Ok(t) => t,
            Err(e) if e.is_not_found() => String::new(),
            Err(e) => return Err(e),
        };
        let mut stats = parse_net_stats(&netstat, "/proc/net/netstat")?;
        stats.extend(parse_net_stats(&snmp, "/proc/net/snmp")?);
        stats.extend(parse_snmp6(&snmp6)?);

        let mut cache = self.names.lock().unwrap_or_else(|p| p.into_inner());
        for (i, &(proto, field, value)) in stats.iter().enumerate() {
            if !cache.get(i).is_some_and(|c| key_is(&c.key, proto, field)) {
                let key = format!("{proto}_{field}");
                let desc = self.fields.is_match(&key).then(|| {
                    (
                        format!("node_netstat_{key}"),
                        format!("Statistic {proto}{field}."),
                    )
                });
                let entry = CachedField { key, desc };
                if i < cache.len() {
                    cache[i] = entry;
                } else {
                    cache.push(entry);
                }
            }
            if let Some((name, help)) = &cache[i].desc {
                out.untyped(name, help, &[], value);
            }
        }
        cache.truncate(stats.len());
        Ok(())
    }
}

/// `key == format!("{proto}_{field}")` without allocating.
fn key_is(key: &str, proto: &str, field: &str) -> bool {
    key.len() == proto.len() + 1 + field.len()
        && key.starts_with(proto)
        && key.ends_with(field)
        && key.as_bytes()[proto.len()] == b'_'
}

/// Parses the header/value line pairs of /proc/net/netstat and /proc/net/snmp:
/// `TcpExt: SyncookiesSent ...` followed by `TcpExt: 0 ...`.
pub fn parse_net_stats<'a>(text: &'a str, file: &str) -> Result<Vec<Stat<'a>>, CollectorError> {
    let mut stats = Vec::new();
    let mut lines = super::lines(text).filter(|l| !l.trim_ascii().is_empty());
    while let Some(header) = lines.next() {
        let values = lines.next().ok_or_else(|| {
            CollectorError::parse(file, format!("header without values: {header:?}"))
        })?;
        let mut names = header.split_ascii_whitespace();
        let mut vals = values.split_ascii_whitespace();
        let (Some(proto), Some(proto2)) = (names.next(), vals.next()) else {
            continue;
        };
        if proto != proto2 {
            return Err(CollectorError::parse(
                file,
                format!("value line {proto2:?} does not follow header {proto:?}"),
            ));
        }
        let proto = proto.trim_end_matches(':');
        loop {
            match (names.next(), vals.next()) {
                (Some(name), Some(v)) => {
                    let v = parse_number(v).map_err(|e| {
                        CollectorError::parse(file, format!("{proto} {name}={v:?}: {e}"))
                    })?;
                    stats.push((proto, name, v));
                }
                (None, None) => break,
                _ => {
                    return Err(CollectorError::parse(
                        file,
                        format!("field count mismatch for {proto}"),
                    ));
                }
            }
        }
    }
    Ok(stats)
}

/// Parses /proc/net/snmp6 lines `Ip6InReceives 1`: the protocol is the name up to and
/// including the first '6'; lines without a '6' are skipped, as upstream does.
pub fn parse_snmp6(text: &str) -> Result<Vec<Stat<'_>>, CollectorError> {
    let mut stats = Vec::new();
    for line in super::lines(text) {
        let mut f = line.split_ascii_whitespace();
        let (Some(key), Some(v)) = (f.next(), f.next()) else {
            continue;
        };
        let Some(six) = key.bytes().position(|b| b == b'6') else {
            continue;
        };
        let v = parse_number(v)
            .map_err(|e| CollectorError::parse("/proc/net/snmp6", format!("{key}={v:?}: {e}")))?;
        stats.push((&key[..=six], &key[six + 1..], v));
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use prometheus::proto::MetricType;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, kind, names, paths, scrape, testdata, value};

    #[test]
    fn default_fields_untyped_camel_case() {
        let set = scrape(build, &paths("netstat"), &CollectorOptions::default()).unwrap();
        assert_eq!(value(&set, "node_netstat_Tcp_CurrEstab", &[]), 3.0);
        assert_eq!(value(&set, "node_netstat_TcpExt_ListenDrops", &[]), 7.0);
        assert_eq!(value(&set, "node_netstat_IpExt_InOctets", &[]), 12345.0);
        assert_eq!(value(&set, "node_netstat_Ip6_InOctets", &[]), 96.0);
        assert_eq!(value(&set, "node_netstat_Udp6_InDatagrams", &[]), 5.0);
        assert_eq!(value(&set, "node_netstat_UdpLite6_InErrors", &[]), 0.0);
        assert_eq!(
            kind(&set, "node_netstat_Tcp_CurrEstab"),
            MetricType::UNTYPED
        );
        assert_eq!(
            help(&set, "node_netstat_Tcp_CurrEstab"),
            "Statistic TcpCurrEstab."
        );
        // Not in the default regex.
        assert!(!set.contains("node_netstat_Tcp_MaxConn"));
        assert!(!set.contains("node_netstat_TcpExt_SomeFutureField"));
        // Second scrape goes through the name cache and gives the same set.
        let c = build(&BuildContext {
            paths: &paths("netstat"),
            options: &CollectorOptions::default(),
        })
        .unwrap();
        let (mut a, mut b) = (MetricSet::new(), MetricSet::new());
        c.update(&mut a).unwrap();
        c.update(&mut b).unwrap();
        assert_eq!(names(&a), names(&b));
        assert_eq!(names(&a), names(&set));
    }

    #[test]
    fn custom_fields_regex_and_missing_snmp6() {
        let options = CollectorOptions {
            netstat_fields: Regex::new("^Tcp_.*").unwrap(),
            ..CollectorOptions::default()
        };
        let mut p = paths("netstat");
        p.proc = testdata("netstat").join("proc_nosnmp6");
        let set = scrape(build, &p, &options).unwrap();
        assert_eq!(value(&set, "node_netstat_Tcp_MaxConn", &[]), -1.0);
        assert!(
            names(&set)
                .iter()
                .all(|n| n.starts_with("node_netstat_Tcp_"))
        );
    }

    #[test]
    fn name_cache_follows_changed_field_sets() {
        assert!(key_is("Tcp_InErrs", "Tcp", "InErrs"));
        assert!(!key_is("Tcp_InErrs", "Tc", "pInErrs"));
        assert!(!key_is("TcpXInErrs", "Tcp", "InErrs"));
        let dir = tempfile::tempdir().unwrap();
        let write = |netstat: &str| {
            std::fs::write(dir.path().join("netstat"), netstat).unwrap();
            std::fs::write(dir.path().join("snmp"), "Tcp: CurrEstab InErrs\nTcp: 4 1\n").unwrap();
        };
        let c = NetstatCollector {
            netstat: dir.path().join("netstat"),
            snmp: dir.path().join("snmp"),
            snmp6: dir.path().join("snmp6"),
            fields: Regex::new(DEFAULT_FIELDS).unwrap(),
            names: Mutex::default(),
        };
        write("TcpExt: ListenDrops TCPTimeouts\nTcpExt: 1 2\n");
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        assert_eq!(value(&set, "node_netstat_TcpExt_TCPTimeouts", &[]), 2.0);
        // A new kernel field shifts every position after it.
        write("TcpExt: ListenDrops NewField TCPTimeouts\nTcpExt: 1 9 3\n");
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        assert_eq!(value(&set, "node_netstat_TcpExt_TCPTimeouts", &[]), 3.0);
        assert_eq!(value(&set, "node_netstat_Tcp_CurrEstab", &[]), 4.0);
        assert_eq!(value(&set, "node_netstat_Tcp_InErrs", &[]), 1.0);
        assert!(!set.contains("node_netstat_TcpExt_NewField"));
        assert_eq!(names(&set).len(), 4);
    }

    #[test]
    fn bad_input_is_an_error() {
        let err = parse_net_stats("Tcp: A B\nTcp: 1\n", "/proc/net/snmp").unwrap_err();
        assert!(err.to_string().contains("/proc/net/snmp"), "{err}");
        assert!(parse_net_stats("Tcp: A B\n", "f").is_err());
        assert!(parse_net_stats("Tcp: A\nTcp: x\n", "f").is_err());
        assert!(parse_net_stats("Tcp: A\nUdp: 1\n", "f").is_err());
        assert!(parse_snmp6("Ip6InReceives x\n").is_err());
        assert_eq!(
            parse_snmp6("Ip6InReceives 1\nnosix 2\n").unwrap(),
            [("Ip6", "InReceives", 1.0)]
        );
        let mut p = paths("netstat");
        p.proc = testdata("netstat").join("missing");
        assert!(scrape(build, &p, &CollectorOptions::default()).is_err());
    }
}
