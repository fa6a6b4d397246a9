//! `nfs`: NFS client statistics, node_nfs_* from /proc/net/rpc/nfs (node_exporter 1.5.0
//! collector/nfs_linux.go over procfs' `ClientRPCStats`). The `method` label values are
//! procfs' Go field names (`GetAttr`, `ReadDirPlus`, …), which dashboards match on.
//! The line parser is shared with `nfsd`.

use std::path::PathBuf;

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// NFSv2 procedures, in the kernel's order (both client and server).
pub const V2_PROCS: &[&str] = &[
    "Null", "GetAttr", "SetAttr", "Root", "Lookup", "ReadLink", "Read", "WrCache", "Write",
    "Create", "Remove", "Rename", "Link", "SymLink", "MkDir", "RmDir", "ReadDir", "FsStat",
];

/// NFSv3 procedures, in the kernel's order (both client and server).
pub const V3_PROCS: &[&str] = &[
    "Null",
    "GetAttr",
    "SetAttr",
    "Lookup",
    "Access",
    "ReadLink",
    "Read",
    "Write",
    "Create",
    "MkDir",
    "SymLink",
    "MkNod",
    "Remove",
    "RmDir",
    "Rename",
    "Link",
    "ReadDir",
    "ReadDirPlus",
    "FsStat",
    "FsInfo",
    "PathConf",
    "Commit",
];

/// NFSv4 client operations, in the kernel's order; older kernels report fewer (zeros).
const V4_CLIENT_PROCS: &[&str] = &[
    "Null",
    "Read",
    "Write",
    "Commit",
    "Open",
    "OpenConfirm",
    "OpenNoattr",
    "OpenDowngrade",
    "Close",
    "Setattr",
    "FsInfo",
    "Renew",
    "SetClientID",
    "SetClientIDConfirm",
    "Lock",
    "Lockt",
    "Locku",
    "Access",
    "Getattr",
    "Lookup",
    "LookupRoot",
    "Remove",
    "Rename",
    "Link",
    "Symlink",
    "Create",
    "Pathconf",
    "StatFs",
    "ReadLink",
    "ReadDir",
    "ServerCaps",
    "DelegReturn",
    "GetACL",
    "SetACL",
    "FsLocations",
    "ReleaseLockowner",
    "Secinfo",
    "FsidPresent",
    "ExchangeID",
    "CreateSession",
    "DestroySession",
    "Sequence",
    "GetLeaseTime",
    "ReclaimComplete",
    "LayoutGet",
    "GetDeviceInfo",
    "LayoutCommit",
    "LayoutReturn",
    "SecinfoNoName",
    "TestStateID",
    "FreeStateID",
    "GetDeviceList",
    "BindConnToSession",
    "DestroyClientID",
    "Seek",
    "Allocate",
    "DeAllocate",
    "LayoutStats",
    "Clone",
];

/// One `<label> <u64>...` line of an rpc stats file.
pub(crate) struct RpcLine<'a> {
    pub label: &'a str,
    pub values: Vec<u64>,
}

/// Splits an rpc stats file into lines of u64 values, as procfs does: every line needs a
/// label and a value; `th` (nfsd threads) keeps only its two integers before the floats.
pub(crate) fn rpc_lines<'a>(what: &str, text: &'a str) -> Result<Vec<RpcLine<'a>>, CollectorError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 2 {
            return Err(CollectorError::parse(
                what,
                format!("invalid metric line {line:?}"),
            ));
        }
        let label = parts[0];
        let raw = if label == "th" {
            &parts[1..parts.len().min(3)]
        } else {
            &parts[1..]
        };
        let values = raw
            .iter()
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|e| CollectorError::parse(what, format!("{label}: {v:?}: {e}")))
            })
            .collect::<Result<Vec<u64>, _>>()?;
        out.push(RpcLine { label, values });
    }
    Ok(out)
}

/// Checks a fixed-size line.
pub(crate) fn exactly<'v>(
    what: &str,
    l: &'v RpcLine<'_>,
    n: usize,
) -> Result<&'v [u64], CollectorError> {
    if l.values.len() != n {
        return Err(CollectorError::parse(
            what,
            format!("invalid {} line {:?}: want {n} values", l.label, l.values),
        ));
    }
    Ok(&l.values)
}

/// A `proc*` line, `<count> <v1>...<vcount>`: the values, when the count matches and is at
/// least `min`.
pub(crate) fn counted<'v>(
    what: &str,
    l: &'v RpcLine<'_>,
    min: usize,
) -> Result<&'v [u64], CollectorError> {
    let ok = l
        .values
        .split_first()
        .filter(|(n, rest)| **n as usize == rest.len() && rest.len() >= min);
    match ok {
        Some((_, rest)) => Ok(rest),
        None => Err(CollectorError::parse(
            what,
            format!("invalid {} line {:?}", l.label, l.values),
        )),
    }
}

/// The parsed client file; absent lines stay zero, as procfs' zero-valued structs do.
#[derive(Debug, Default, PartialEq)]
pub struct NfsClientStats {
    /// net: packets, udp, tcp, tcp connections.
    pub network: [u64; 4],
    /// rpc: calls, retransmissions, auth refreshes.
    pub rpc: [u64; 3],
    pub v2: Vec<u64>,
    pub v3: Vec<u64>,
    pub v4: Vec<u64>,
}

const WHAT: &str = "/proc/net/rpc/nfs";

pub fn parse_nfs_client(text: &str) -> Result<NfsClientStats, CollectorError> {
    let mut s = NfsClientStats {
        v2: vec![0; V2_PROCS.len()],
        v3: vec![0; V3_PROCS.len()],
        v4: vec![0; V4_CLIENT_PROCS.len()],
        ..Default::default()
    };
    let fill = |dst: &mut Vec<u64>, src: &[u64]| {
        for (d, v) in dst.iter_mut().zip(src) {
            *d = *v;
        }
    };
    for l in rpc_lines(WHAT, text)? {
        match l.label {
            "net" => s.network.copy_from_slice(exactly(WHAT, &l, 4)?),
            "rpc" => s.rpc.copy_from_slice(exactly(WHAT, &l, 3)?),
            "proc2" => fill(&mut s.v2, counted(WHAT, &l, V2_PROCS.len())?),
            "proc3" => fill(&mut s.v3, counted(WHAT, &l, V3_PROCS.len())?),
            // Older kernels have fewer NFSv4 operations: the rest stay zero.
            "proc4" => fill(&mut s.v4, counted(WHAT, &l, 0)?),
            other => {
                return Err(CollectorError::parse(
                    WHAT,
                    format!("unknown NFS metric line {other:?}"),
                ));
            }
        }
    }
    Ok(s)
}

pub struct NfsCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(NfsCollector {
        path: ctx.paths.proc_net_path("rpc/nfs"),
    }))
}

const REQUESTS_HELP: &str = "Number of NFS procedures invoked.";

impl Collector for NfsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = match read_proc(&self.path) {
            // No NFS client module loaded.
            Err(e) if e.is_not_found() => return Err(CollectorError::NoData),
            other => other?,
        };
        let s = parse_nfs_client(&text)?;
        let packets = "Total NFSd network packets (sent+received) by protocol type.";
        out.counter(
            "node_nfs_packets_total",
            packets,
            &[("protocol", "udp")],
            s.network[1] as f64,
        );
        out.counter(
            "node_nfs_packets_total",
            packets,
            &[("protocol", "tcp")],
            s.network[2] as f64,
        );
        out.counter(
            "node_nfs_connections_total",
            "Total number of NFSd TCP connections.",
            &[],
            s.network[3] as f64,
        );
        out.counter(
            "node_nfs_rpcs_total",
            "Total number of RPCs performed.",
            &[],
            s.rpc[0] as f64,
        );
        out.counter(
            "node_nfs_rpc_retransmissions_total",
            "Number of RPC transmissions performed.",
            &[],
            s.rpc[1] as f64,
        );
        out.counter(
            "node_nfs_rpc_authentication_refreshes_total",
            "Number of RPC authentication refreshes performed.",
            &[],
            s.rpc[2] as f64,
        );
        for (proto, names, values) in [
            ("2", V2_PROCS, &s.v2),
            ("3", V3_PROCS, &s.v3),
            ("4", V4_CLIENT_PROCS, &s.v4),
        ] {
            for (method, v) in names.iter().zip(values) {
                out.counter(
                    "node_nfs_requests_total",
                    REQUESTS_HELP,
                    &[("proto", proto), ("method", method)],
                    *v as f64,
                );
            }
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
            "nfs",
            build,
            &paths("nfs"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn emits_client_counters() {
        let set = scrape(build, &paths("nfs"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(&set, "node_nfs_packets_total", &[("protocol", "tcp")]),
            72.0
        );
        assert_eq!(value(&set, "node_nfs_rpcs_total", &[]), 1218785755.0);
        assert_eq!(
            value(
                &set,
                "node_nfs_requests_total",
                &[("proto", "3"), ("method", "ReadDirPlus")]
            ),
            217.0
        );
        assert_eq!(
            value(
                &set,
                "node_nfs_requests_total",
                &[("proto", "4"), ("method", "Clone")]
            ),
            358.0,
            "operations past the 59 known ones are ignored"
        );
        assert_eq!(len(&set, "node_nfs_requests_total"), 18 + 22 + 59);
    }

    #[test]
    fn older_kernel_lines_and_bad_lines() {
        // A kernel with 2 NFSv4 operations and no proc2/proc3 lines: the rest are zero.
        let s = parse_nfs_client("net 1 2 3 4\nrpc 5 6 7\nproc4 2 9 8\n").unwrap();
        assert_eq!((s.v4[0], s.v4[1], s.v4[2]), (9, 8, 0));
        assert!(s.v3.iter().all(|&v| v == 0));
        for bad in [
            "proc3 3 1 2 3\n",
            "proc2 18 1 2\n",
            "net 1 2 3\n",
            "foo 5 6 7\n",
            "rpc\n",
            "\n",
            "rpc 1 -2 3\n",
            "proc4\u{20}\n",
        ] {
            assert!(parse_nfs_client(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_client_is_no_data() {
        let mut p = paths("nfs");
        p.proc = p.proc.join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
    }
}
