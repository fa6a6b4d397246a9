//! `mountstats` (off by default): NFS client statistics per mount from
//! /proc/<pid>/mountstats (node_exporter 1.5.0 collector/mountstats_linux.go over procfs'
//! `MountStats`), labelled by export, protocol and the server address (`addr` of the
//! matching /proc/<pid>/mountinfo line, which lists the mounts in the same order).
//!
//! node_exporter reads its own process's view (`/proc/self`); in a DaemonSet that is the
//! container's mount namespace, which has no NFS mounts. So init's view (`<procfs>/1`) is
//! read when it is there and readable, falling back to `self`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{BuildContext, Collector, CollectorError, MetricSet, read_proc};

/// Families of the `bytes:` line, in its order.
const BYTES: &[(&str, &str)] = &[
    (
        "node_mountstats_nfs_read_bytes_total",
        "Number of bytes read using the read() syscall.",
    ),
    (
        "node_mountstats_nfs_write_bytes_total",
        "Number of bytes written using the write() syscall.",
    ),
    (
        "node_mountstats_nfs_direct_read_bytes_total",
        "Number of bytes read using the read() syscall in O_DIRECT mode.",
    ),
    (
        "node_mountstats_nfs_direct_write_bytes_total",
        "Number of bytes written using the write() syscall in O_DIRECT mode.",
    ),
    (
        "node_mountstats_nfs_total_read_bytes_total",
        "Number of bytes read from the NFS server, in total.",
    ),
    (
        "node_mountstats_nfs_total_write_bytes_total",
        "Number of bytes written to the NFS server, in total.",
    ),
    (
        "node_mountstats_nfs_read_pages_total",
        "Number of pages read directly via mmap()'d files.",
    ),
    (
        "node_mountstats_nfs_write_pages_total",
        "Number of pages written directly via mmap()'d files.",
    ),
];

/// Families of the `events:` line, in its order (`None`: congestion wait, not exported).
const EVENTS: &[Option<(&str, &str)>] = &[
    Some((
        "node_mountstats_nfs_event_inode_revalidate_total",
        "Number of times cached inode attributes are re-validated from the server.",
    )),
    Some((
        "node_mountstats_nfs_event_dnode_revalidate_total",
        "Number of times cached dentry nodes are re-validated from the server.",
    )),
    Some((
        "node_mountstats_nfs_event_data_invalidate_total",
        "Number of times an inode cache is cleared.",
    )),
    Some((
        "node_mountstats_nfs_event_attribute_invalidate_total",
        "Number of times cached inode attributes are invalidated.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_open_total",
        "Number of times cached inode attributes are invalidated.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_lookup_total",
        "Number of times a directory lookup has occurred.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_access_total",
        "Number of times permissions have been checked.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_update_page_total",
        "Number of updates (and potential writes) to pages.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_read_page_total",
        "Number of pages read directly via mmap()'d files.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_read_pages_total",
        "Number of times a group of pages have been read.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_write_page_total",
        "Number of pages written directly via mmap()'d files.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_write_pages_total",
        "Number of times a group of pages have been written.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_getdents_total",
        "Number of times directory entries have been read with getdents().",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_setattr_total",
        "Number of times directory entries have been read with getdents().",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_flush_total",
        "Number of pending writes that have been forcefully flushed to the server.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_fsync_total",
        "Number of times fsync() has been called on directories and files.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_lock_total",
        "Number of times locking has been attempted on a file.",
    )),
    Some((
        "node_mountstats_nfs_event_vfs_file_release_total",
        "Number of times files have been closed and released.",
    )),
    None,
    Some((
        "node_mountstats_nfs_event_truncation_total",
        "Number of times files have been truncated.",
    )),
    Some((
        "node_mountstats_nfs_event_write_extension_total",
        "Number of times a file has been grown due to writes beyond its existing end.",
    )),
    Some((
        "node_mountstats_nfs_event_silly_rename_total",
        "Number of times a file was removed while still open by another process.",
    )),
    Some((
        "node_mountstats_nfs_event_short_read_total",
        "Number of times the NFS server gave less data than expected while reading.",
    )),
    Some((
        "node_mountstats_nfs_event_short_write_total",
        "Number of times the NFS server wrote less data than expected while writing.",
    )),
    Some((
        "node_mountstats_nfs_event_jukebox_delay_total",
        "Number of times the NFS server indicated EJUKEBOX; retrieving data from offline storage.",
    )),
    Some((
        "node_mountstats_nfs_event_pnfs_read_total",
        "Number of NFS v4.1+ pNFS reads.",
    )),
    Some((
        "node_mountstats_nfs_event_pnfs_write_total",
        "Number of NFS v4.1+ pNFS writes.",
    )),
];

/// (family, HELP, position in the normalised `xprt:` values, gauge).
const TRANSPORT: &[(&str, &str, usize, bool)] = &[
    (
        "node_mountstats_nfs_transport_bind_total",
        "Number of times the client has had to establish a connection from scratch to the NFS server.",
        1,
        false,
    ),
    (
        "node_mountstats_nfs_transport_connect_total",
        "Number of times the client has made a TCP connection to the NFS server.",
        2,
        false,
    ),
    (
        "node_mountstats_nfs_transport_idle_time_seconds",
        "Duration since the NFS mount last saw any RPC traffic, in seconds.",
        4,
        true,
    ),
    (
        "node_mountstats_nfs_transport_sends_total",
        "Number of RPC requests for this mount sent to the NFS server.",
        5,
        false,
    ),
    (
        "node_mountstats_nfs_transport_receives_total",
        "Number of RPC responses for this mount received from the NFS server.",
        6,
        false,
    ),
    (
        "node_mountstats_nfs_transport_bad_transaction_ids_total",
        "Number of times the NFS server sent a response with a transaction ID unknown to this client.",
        7,
        false,
    ),
    (
        "node_mountstats_nfs_transport_backlog_queue_total",
        "Total number of items added to the RPC backlog queue.",
        9,
        false,
    ),
    (
        "node_mountstats_nfs_transport_maximum_rpc_slots",
        "Maximum number of simultaneously active RPC requests ever used.",
        10,
        true,
    ),
    (
        "node_mountstats_nfs_transport_sending_queue_total",
        "Total number of items added to the RPC transmission sending queue.",
        11,
        false,
    ),
    (
        "node_mountstats_nfs_transport_pending_queue_total",
        "Total number of items added to the RPC transmission pending queue.",
        12,
        false,
    ),
];

/// (family, HELP, position in a per-op line, milliseconds to seconds).
const OPS: &[(&str, &str, usize, bool)] = &[
    (
        "node_mountstats_nfs_operations_requests_total",
        "Number of requests performed for a given operation.",
        0,
        false,
    ),
    (
        "node_mountstats_nfs_operations_transmissions_total",
        "Number of times an actual RPC request has been transmitted for a given operation.",
        1,
        false,
    ),
    (
        "node_mountstats_nfs_operations_major_timeouts_total",
        "Number of times a request has had a major timeout for a given operation.",
        2,
        false,
    ),
    (
        "node_mountstats_nfs_operations_sent_bytes_total",
        "Number of bytes sent for a given operation, including RPC headers and payload.",
        3,
        false,
    ),
    (
        "node_mountstats_nfs_operations_received_bytes_total",
        "Number of bytes received for a given operation, including RPC headers and payload.",
        4,
        false,
    ),
    (
        "node_mountstats_nfs_operations_queue_time_seconds_total",
        "Duration all requests spent queued for transmission for a given operation before they were sent, in seconds.",
        5,
        true,
    ),
    (
        "node_mountstats_nfs_operations_response_time_seconds_total",
        "Duration all requests took to get a reply back after a request for a given operation was transmitted, in seconds.",
        6,
        true,
    ),
    (
        "node_mountstats_nfs_operations_request_time_seconds_total",
        "Duration all requests took from when a request was enqueued to when it was completely handled for a given operation, in seconds.",
        7,
        true,
    ),
];

/// Millisecond and idle counters are reduced modulo 2^53 first, as node_exporter does, so
/// they stay exact as floats.
const FLOAT64_MANTISSA: u64 = 1 << 53;

/// Values after the protocol on an `xprt:` line: (statvers, protocol) → count.
fn transport_len(statvers: &str, protocol: &str) -> Option<usize> {
    match (statvers, protocol) {
        ("1.0", "tcp") => Some(10),
        ("1.0", "udp") => Some(7),
        ("1.1", "tcp") => Some(13),
        ("1.1", "udp") => Some(10),
        _ => None,
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NfsMount {
    pub device: String,
    pub age_seconds: f64,
    pub bytes: Vec<u64>,
    pub events: Vec<u64>,
    pub protocol: String,
    /// 13 values, UDP's missing connect fields as 0.
    pub transport: Vec<u64>,
    /// (operation, 8 values).
    pub operations: Vec<(String, Vec<u64>)>,
}

/// Entries of mountstats in file order; `None` for mounts without NFS statistics.
pub fn parse_mountstats(what: &str, text: &str) -> Result<Vec<Option<NfsMount>>, CollectorError> {
    let err = |d: String| CollectorError::parse(what, d);
    let nums = |label: &str, v: &[&str]| -> Result<Vec<u64>, CollectorError> {
        v.iter()
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|e| err(format!("{label} {s:?}: {e}")))
            })
            .collect()
    };
    let mut mounts = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let ss: Vec<&str> = line.split_whitespace().collect();
        if ss.first() != Some(&"device") {
            continue;
        }
        if ss.len() < 8
            || ss[2] != "mounted"
            || ss[3] != "on"
            || ss[5] != "with"
            || ss[6] != "fstype"
        {
            return Err(err(format!("invalid device line {line:?}")));
        }
        if ss.len() == 8 {
            mounts.push(None);
            continue;
        }
        if ss[7] != "nfs" && ss[7] != "nfs4" {
            return Err(err(format!("cannot parse statistics of a {} mount", ss[7])));
        }
        let statvers = ss[8].strip_prefix("statvers=").unwrap_or(ss[8]);
        let mut m = NfsMount {
            device: ss[1].to_string(),
            bytes: vec![0; BYTES.len()],
            events: vec![0; EVENTS.len()],
            transport: vec![0; 13],
            ..NfsMount::default()
        };
        // The header block, up to "per-op statistics" or a blank line.
        let mut per_op = false;
        for line in lines.by_ref() {
            let ss: Vec<&str> = line.split_whitespace().collect();
            let Some(&key) = ss.first() else {
                break;
            };
            match key {
                "age:" => {
                    let v = ss
                        .get(1)
                        .ok_or_else(|| err("age: without a value".into()))?;
                    m.age_seconds = nums("age", &[v])?[0] as f64;
                }
                "bytes:" => {
                    if ss.len() - 1 != BYTES.len() {
                        return Err(err(format!("invalid NFS bytes stats: {line:?}")));
                    }
                    m.bytes = nums("bytes", &ss[1..])?;
                }
                "events:" => {
                    if ss.len() - 1 != EVENTS.len() {
                        return Err(err(format!("invalid NFS events stats: {line:?}")));
                    }
                    m.events = nums("events", &ss[1..])?;
                }
                "xprt:" => {
                    if ss.len() < 3 {
                        return Err(err(format!(
                            "not enough information for NFS transport stats: {line:?}"
                        )));
                    }
                    let protocol = ss[1];
                    let want = transport_len(statvers, protocol).ok_or_else(|| {
                        err(format!(
                            "unsupported NFS transport {protocol:?} (stats {statvers})"
                        ))
                    })?;
                    if ss.len() - 2 != want {
                        return Err(err(format!(
                            "invalid NFS transport stats {statvers} statement: {line:?}"
                        )));
                    }
                    let mut v = nums("xprt", &ss[2..])?;
                    if protocol == "udp" {
                        // No connection count, connect idle time or idle time over UDP.
                        v.splice(2..2, [0, 0, 0]);
                    }
                    v.resize(13, 0);
                    m.protocol = protocol.to_string();
                    m.transport = v;
                }
                "per-op" => {
                    per_op = true;
                    break;
                }
                _ => {}
            }
        }
        if per_op {
            for line in lines.by_ref() {
                let ss: Vec<&str> = line.split_whitespace().collect();
                if ss.is_empty() {
                    break;
                }
                if ss.len() < 9 {
                    return Err(err(format!("invalid NFS per-operations stats: {line:?}")));
                }
                let v = nums("per-op", &ss[1..])?;
                m.operations
                    .push((ss[0].trim_end_matches(':').to_string(), v));
            }
        }
        mounts.push(Some(m));
    }
    Ok(mounts)
}

/// The `addr` super option of each mountinfo line, in file order.
pub fn parse_mountinfo_addrs(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.split_once(" - ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .and_then(|opts| opts.split(',').find_map(|o| o.strip_prefix("addr=")))
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

pub struct MountstatsCollector {
    proc: PathBuf,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(MountstatsCollector {
        proc: ctx.paths.proc.clone(),
    }))
}

/// (mountstats, mountinfo) of init, or of this process when init's are unreadable.
fn read_files(proc: &Path) -> Result<(String, String, PathBuf), CollectorError> {
    let init = proc.join("1");
    if let Ok(stats) = read_proc(init.join("mountstats")) {
        return Ok((
            stats,
            read_proc(init.join("mountinfo"))?,
            init.join("mountstats"),
        ));
    }
    let own = proc.join("self");
    let stats = read_proc(own.join("mountstats"))?;
    Ok((
        stats,
        read_proc(own.join("mountinfo"))?,
        own.join("mountstats"),
    ))
}

impl Collector for MountstatsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let (stats, info, path) = read_files(&self.proc)?;
        let mounts = parse_mountstats(&path.display().to_string(), &stats)?;
        let addrs = parse_mountinfo_addrs(&info);
        let mut seen = HashSet::new();
        for (idx, m) in mounts.iter().enumerate() {
            let Some(m) = m else {
                continue;
            };
            let addr = addrs.get(idx).map(String::as_str).unwrap_or("");
            // The same export mounted twice: counted once.
            if !seen.insert((m.device.clone(), m.protocol.clone(), addr.to_string())) {
                continue;
            }
            let labels = [
                ("export", m.device.as_str()),
                ("protocol", m.protocol.as_str()),
                ("mountaddr", addr),
            ];
            out.counter(
                "node_mountstats_nfs_age_seconds_total",
                "The age of the NFS mount in seconds.",
                &labels,
                m.age_seconds,
            );
            for ((name, help), v) in BYTES.iter().zip(&m.bytes) {
                out.counter(name, help, &labels, *v as f64);
            }
            for &(name, help, i, gauge) in TRANSPORT {
                let v = m.transport[i];
                if gauge {
                    let v = if name.ends_with("idle_time_seconds") {
                        v % FLOAT64_MANTISSA
                    } else {
                        v
                    };
                    out.gauge(name, help, &labels, v as f64);
                } else {
                    out.counter(name, help, &labels, v as f64);
                }
            }
            for (op, values) in &m.operations {
                let l = [
                    ("export", m.device.as_str()),
                    ("protocol", m.protocol.as_str()),
                    ("mountaddr", addr),
                    ("operation", op.as_str()),
                ];
                for &(name, help, i, millis) in OPS {
                    let v = values[i];
                    let v = if millis {
                        (v % FLOAT64_MANTISSA) as f64 / 1000.0
                    } else {
                        v as f64
                    };
                    out.counter(name, help, &l, v);
                }
            }
            for (event, v) in EVENTS.iter().zip(&m.events) {
                if let Some((name, help)) = event {
                    out.counter(name, help, &labels, *v as f64);
                }
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
            "mountstats",
            build,
            &paths("mountstats"),
            &CollectorOptions::default(),
            &[],
        );
    }

    #[test]
    fn tcp_and_udp_mounts() {
        let set = scrape(build, &paths("mountstats"), &CollectorOptions::default()).unwrap();
        let v4 = [
            ("export", "192.168.1.1:/srv/test"),
            ("protocol", "tcp"),
            ("mountaddr", "192.168.1.1"),
        ];
        assert_eq!(
            value(&set, "node_mountstats_nfs_transport_sends_total", &v4),
            6428.0
        );
        let v3 = [
            ("export", "192.168.1.2:/export"),
            ("protocol", "udp"),
            ("mountaddr", "192.168.1.2"),
        ];
        assert_eq!(
            value(&set, "node_mountstats_nfs_transport_connect_total", &v3),
            0.0,
            "UDP has no connects"
        );
        assert_eq!(
            value(&set, "node_mountstats_nfs_transport_sends_total", &v3),
            2.0
        );
        assert_eq!(
            len(&set, "node_mountstats_nfs_operations_requests_total"),
            6
        );
    }

    #[test]
    fn bad_entries_are_errors() {
        let head = "device a:/b mounted on /m with fstype nfs statvers=1.1\n";
        for body in [
            "\tbytes:\t1 2 3\n",
            "\tevents:\t1 2\n",
            "\txprt:\ttcp 1 2\n",
            "\txprt:\trdma 1 2 3\n",
            "\tper-op statistics\n\tNULL: 1 2\n",
            "\tage:\tx\n",
        ] {
            assert!(
                parse_mountstats("m", &format!("{head}{body}")).is_err(),
                "{body:?}"
            );
        }
        assert!(
            parse_mountstats(
                "m",
                "device x mounted on /y with fstype cifs statvers=1.0\n"
            )
            .is_err()
        );
        assert!(parse_mountstats("m", "device x mounted\n").is_err());
        let plain =
            parse_mountstats("m", "device proc mounted on /proc with fstype proc\n").unwrap();
        assert_eq!(plain, [None]);
        assert_eq!(
            parse_mountinfo_addrs("1 0 0:1 / / rw - nfs a:/b rw,addr=1.2.3.4\n"),
            ["1.2.3.4"]
        );
    }
}
