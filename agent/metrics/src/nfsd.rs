//! `nfsd`: NFS server statistics, node_nfsd_* from /proc/net/rpc/nfsd (node_exporter 1.5.0
//! collector/nfsd_linux.go over procfs' `ServerRPCStats`).
//!
//! One deliberate difference: for NFSv4 `Verify`, `Write` and `RelLockOwner`, 1.5.0's procfs
//! reads the values two places early (those of SETCLIENTID, SETCLIENTID_CONFIRM and
//! VERIFY); these take the kernel's positions (ops 37, 38, 39), as later node_exporter
//! releases do, so NFSv4 write rates are right.

use std::path::PathBuf;

use super::nfs::{V2_PROCS, V3_PROCS, counted, exactly, rpc_lines};
use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// NFSv4 server operations exported, with their kernel op number (`proc4ops` position).
const V4_OPS: &[(&str, usize)] = &[
    ("Access", 3),
    ("Close", 4),
    ("Commit", 5),
    ("Create", 6),
    ("DelegPurge", 7),
    ("DelegReturn", 8),
    ("GetAttr", 9),
    ("GetFH", 10),
    ("Link", 11),
    ("Lock", 12),
    ("Lockt", 13),
    ("Locku", 14),
    ("Lookup", 15),
    ("LookupRoot", 16),
    ("Nverify", 17),
    ("Open", 18),
    ("OpenAttr", 19),
    ("OpenConfirm", 20),
    ("OpenDgrd", 21),
    ("PutFH", 22),
    ("Read", 25),
    ("ReadDir", 26),
    ("ReadLink", 27),
    ("Remove", 28),
    ("Rename", 29),
    ("Renew", 30),
    ("RestoreFH", 31),
    ("SaveFH", 32),
    ("SecInfo", 33),
    ("SetAttr", 34),
    ("Verify", 37),
    ("Write", 38),
    ("RelLockOwner", 39),
];

/// Fewest `proc4ops` values accepted (kernel 2.6.x has 40, 2.5.x 39).
const MIN_V4_OPS: usize = 39;

/// The parsed server file; absent lines stay zero.
#[derive(Debug, Default, PartialEq)]
pub struct NfsdStats {
    /// rc: hits, misses, nocache.
    pub reply_cache: [u64; 3],
    /// fh: stale (the other four are unused by the kernel).
    pub file_handles_stale: u64,
    /// io: read, write bytes.
    pub io: [u64; 2],
    pub threads: u64,
    /// ra: cache size and not-found count.
    pub ra_size: u64,
    pub ra_not_found: u64,
    /// net: packets, udp, tcp, tcp connections.
    pub network: [u64; 4],
    /// rpc: calls, bad calls, bad format, bad auth, bad client.
    pub rpc: [u64; 5],
    pub v2: Vec<u64>,
    pub v3: Vec<u64>,
    /// proc4ops by op number.
    pub v4_ops: Vec<u64>,
}

const WHAT: &str = "/proc/net/rpc/nfsd";

pub fn parse_nfsd(text: &str) -> Result<NfsdStats, CollectorError> {
    let mut s = NfsdStats {
        v2: vec![0; V2_PROCS.len()],
        v3: vec![0; V3_PROCS.len()],
        ..Default::default()
    };
    let bad = |l: &str| CollectorError::parse(WHAT, format!("invalid {l} line"));
    for l in rpc_lines(WHAT, text)? {
        match l.label {
            "rc" => s.reply_cache.copy_from_slice(exactly(WHAT, &l, 3)?),
            "fh" => s.file_handles_stale = exactly(WHAT, &l, 5)?[0],
            "io" => s.io.copy_from_slice(exactly(WHAT, &l, 2)?),
            "th" => s.threads = exactly(WHAT, &l, 2)?[0],
            "ra" => {
                let v = exactly(WHAT, &l, 12)?;
                (s.ra_size, s.ra_not_found) = (v[0], v[11]);
            }
            "net" => s.network.copy_from_slice(exactly(WHAT, &l, 4)?),
            "rpc" => s.rpc.copy_from_slice(exactly(WHAT, &l, 5)?),
            "proc2" => s.v2 = counted(WHAT, &l, V2_PROCS.len())?[..V2_PROCS.len()].to_vec(),
            "proc3" => s.v3 = counted(WHAT, &l, V3_PROCS.len())?[..V3_PROCS.len()].to_vec(),
            // NULL and COMPOUND, not exported but checked as procfs does.
            "proc4" => {
                if counted(WHAT, &l, 2)?.len() != 2 {
                    return Err(bad("proc4"));
                }
            }
            "proc4ops" => s.v4_ops = counted(WHAT, &l, MIN_V4_OPS)?.to_vec(),
            other => {
                return Err(CollectorError::parse(
                    WHAT,
                    format!("unknown NFSd metric line {other:?}"),
                ));
            }
        }
    }
    Ok(s)
}

pub struct NfsdCollector {
    path: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(NfsdCollector {
        path: ctx.paths.proc_net_path("rpc/nfsd"),
    }))
}

const REQUESTS_HELP: &str = "Total number NFSd Requests by method and protocol.";

impl Collector for NfsdCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let text = match read_proc(&self.path) {
            // No NFS server running.
            Err(e) if e.is_not_found() => return Err(CollectorError::NoData),
            other => other?,
        };
        let s = parse_nfsd(&text)?;
        let c = |out: &mut MetricSet, name: &str, help: &str, v: u64| {
            out.counter(name, help, &[], v as f64)
        };
        c(
            out,
            "node_nfsd_reply_cache_hits_total",
            "Total number of NFSd Reply Cache hits (client lost server response).",
            s.reply_cache[0],
        );
        c(
            out,
            "node_nfsd_reply_cache_misses_total",
            "Total number of NFSd Reply Cache an operation that requires caching (idempotent).",
            s.reply_cache[1],
        );
        c(
            out,
            "node_nfsd_reply_cache_nocache_total",
            "Total number of NFSd Reply Cache non-idempotent operations (rename/delete/…).",
            s.reply_cache[2],
        );
        c(
            out,
            "node_nfsd_file_handles_stale_total",
            "Total number of NFSd stale file handles",
            s.file_handles_stale,
        );
        c(
            out,
            "node_nfsd_disk_bytes_read_total",
            "Total NFSd bytes read.",
            s.io[0],
        );
        c(
            out,
            "node_nfsd_disk_bytes_written_total",
            "Total NFSd bytes written.",
            s.io[1],
        );
        out.gauge(
            "node_nfsd_server_threads",
            "Total number of NFSd kernel threads that are running.",
            &[],
            s.threads as f64,
        );
        out.gauge(
            "node_nfsd_read_ahead_cache_size_blocks",
            "How large the read ahead cache is in blocks.",
            &[],
            s.ra_size as f64,
        );
        c(
            out,
            "node_nfsd_read_ahead_cache_not_found_total",
            "Total number of NFSd read ahead cache not found.",
            s.ra_not_found,
        );
        let packets = "Total NFSd network packets (sent+received) by protocol type.";
        out.counter(
            "node_nfsd_packets_total",
            packets,
            &[("proto", "udp")],
            s.network[1] as f64,
        );
        out.counter(
            "node_nfsd_packets_total",
            packets,
            &[("proto", "tcp")],
            s.network[2] as f64,
        );
        c(
            out,
            "node_nfsd_connections_total",
            "Total number of NFSd TCP connections.",
            s.network[3],
        );
        let errors = "Total number of NFSd RPC errors by error type.";
        for (label, v) in [("fmt", s.rpc[2]), ("auth", s.rpc[3]), ("cInt", s.rpc[4])] {
            out.counter(
                "node_nfsd_rpc_errors_total",
                errors,
                &[("error", label)],
                v as f64,
            );
        }
        c(
            out,
            "node_nfsd_server_rpcs_total",
            "Total number of NFSd RPCs.",
            s.rpc[0],
        );
        // NULL is not exported for v2 and v3.
        for (proto, names, values) in [("2", V2_PROCS, &s.v2), ("3", V3_PROCS, &s.v3)] {
            for (method, v) in names.iter().zip(values).skip(1) {
                out.counter(
                    "node_nfsd_requests_total",
                    REQUESTS_HELP,
                    &[("proto", proto), ("method", method)],
                    *v as f64,
                );
            }
        }
        for &(method, op) in V4_OPS {
            let v = s.v4_ops.get(op).copied().unwrap_or(0);
            out.counter(
                "node_nfsd_requests_total",
                REQUESTS_HELP,
                &[("proto", "4"), ("method", method)],
                v as f64,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{assert_same_as_node_exporter_except, len, paths, scrape, value};

    fn v4(set: &MetricSet, method: &str) -> f64 {
        value(
            set,
            "node_nfsd_requests_total",
            &[("proto", "4"), ("method", method)],
        )
    }

    #[test]
    fn same_as_node_exporter_but_the_three_misread_v4_ops() {
        assert_same_as_node_exporter_except(
            "nfsd",
            build,
            &paths("nfsd"),
            &CollectorOptions::default(),
            &[],
            &[
                "node_nfsd_requests_total{method=\"Verify\",proto=\"4\"}",
                "node_nfsd_requests_total{method=\"Write\",proto=\"4\"}",
                "node_nfsd_requests_total{method=\"RelLockOwner\",proto=\"4\"}",
            ],
        );
    }

    #[test]
    fn emits_server_counters() {
        let set = scrape(build, &paths("nfsd"), &CollectorOptions::default()).unwrap();
        assert_eq!(
            value(&set, "node_nfsd_server_threads", &[]),
            8.0,
            "floats after the thread count are ignored"
        );
        assert_eq!(
            value(&set, "node_nfsd_rpc_errors_total", &[("error", "cInt")]),
            19.0
        );
        // proc4ops values are 300 + op number in the fixture.
        assert_eq!(v4(&set, "Access"), 303.0);
        assert_eq!(v4(&set, "Write"), 338.0);
        assert_eq!(v4(&set, "Verify"), 337.0);
        assert_eq!(v4(&set, "RelLockOwner"), 339.0);
        assert_eq!(len(&set, "node_nfsd_requests_total"), 17 + 21 + 33);
    }

    #[test]
    fn older_kernels_and_bad_lines() {
        // 39 operations (2.5.x): no RELEASE_LOCKOWNER.
        let ops: Vec<String> = (0..39).map(|n| n.to_string()).collect();
        let s = parse_nfsd(&format!("proc4ops 39 {}\n", ops.join(" "))).unwrap();
        assert_eq!((s.v4_ops[38], s.v4_ops.get(39)), (38, None));
        assert!(
            parse_nfsd("proc3 23 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23\n")
                .is_ok()
        );
        for bad in [
            "proc4ops 38 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38\n",
            "proc2 17 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n",
            "proc4 3 1 2 3\n",
            "xx 1\n",
            "rc\n",
            "rc 1 -2 3\n",
            "\n",
            "th 8\n",
        ] {
            assert!(parse_nfsd(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_server_is_no_data() {
        let mut p = paths("nfsd");
        p.proc = p.proc.join("missing");
        assert!(matches!(
            scrape(build, &p, &CollectorOptions::default()),
            Err(CollectorError::NoData)
        ));
    }
}
