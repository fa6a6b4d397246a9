//! Leader: reads security-relevant syscalls from the ring buffer, attributes them to a
//! container and logs one structured line each (Falco-style audit trail), counting them in
//! `node_agent_syscalls_events_total{syscall}`.

use std::sync::OnceLock;
use std::time::Duration;

use aya::maps::{Map, MapData, RingBuf};
use prometheus::{IntCounterVec, Opts};
use syscalls_common::SecurityEvent;
use tokio::io::unix::AsyncFd;
use tokio_util::sync::CancellationToken;

use super::cgroups::{Attribution, AttributionSources, Owner};
use super::names::syscall_name;

fn events_total() -> &'static IntCounterVec {
    static COUNTER: OnceLock<IntCounterVec> = OnceLock::new();
    COUNTER.get_or_init(|| {
        let counter = IntCounterVec::new(
            Opts::new(
                "node_agent_syscalls_events_total",
                "Security-relevant syscalls reported by the eBPF program (leader only).",
            ),
            &["syscall"],
        )
        .expect("static metric definition is valid");
        crate::telemetry::register(counter)
    })
}

/// Decodes one ring buffer record; `None` for a record of the wrong size.
pub fn decode(bytes: &[u8]) -> Option<SecurityEvent> {
    if bytes.len() < std::mem::size_of::<SecurityEvent>() {
        return None;
    }
    // SAFETY: size checked above; SecurityEvent is plain old data; read_unaligned because
    // ring buffer records are only 8-byte aligned by contract, not by type.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SecurityEvent>()) })
}

/// Runs until `shutdown`, logging every event.
pub async fn run(
    map: Map,
    sources: AttributionSources,
    refresh: Duration,
    shutdown: CancellationToken,
) {
    let ring: RingBuf<MapData> = match RingBuf::try_from(map) {
        Ok(ring) => ring,
        Err(err) => {
            tracing::error!(error = %err, "EVENTS is not a ring buffer; security events disabled");
            return;
        }
    };
    // SAFETY: the RingBuf owns its map fd and lives inside the AsyncFd, so the fd stays
    // open and is not swapped for another while registered.
    let mut fd = match unsafe { AsyncFd::register(ring) } {
        Ok(fd) => fd,
        Err(err) => {
            tracing::error!(error = %err, "cannot poll the events ring buffer; security events disabled");
            return;
        }
    };
    let mut attribution = Attribution::new(sources, refresh);
    loop {
        let mut guard = tokio::select! {
            _ = shutdown.cancelled() => return,
            guard = fd.readable_mut() => match guard {
                Ok(guard) => guard,
                Err(err) => {
                    tracing::error!(error = %err, "polling the events ring buffer failed");
                    return;
                }
            },
        };
        let ring = guard.get_inner_mut();
        let mut batch = Vec::new();
        while let Some(item) = ring.next() {
            if let Some(event) = decode(&item) {
                batch.push(event);
            }
        }
        guard.clear_ready();
        attribution.ensure(batch.iter().map(|e| e.cgroup_id));
        for event in &batch {
            log_event(event, &attribution);
        }
    }
}

fn log_event(event: &SecurityEvent, attribution: &Attribution) {
    let number;
    let syscall = match syscall_name(event.nr) {
        Some(name) => name,
        None => {
            number = event.nr.to_string();
            &number
        }
    };
    events_total().with_label_values(&[syscall]).inc();
    let comm_len = event
        .comm
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(event.comm.len());
    let comm = String::from_utf8_lossy(&event.comm[..comm_len]);
    let (namespace, pod, container) = match attribution.owner(event.cgroup_id) {
        Owner::Host => (String::new(), String::new(), String::new()),
        Owner::Container(l) => (l.namespace.clone(), l.pod.clone(), l.container.clone()),
    };
    tracing::info!(
        target: "node_agent::syscalls::event",
        syscall,
        pid = event.tgid,
        tid = event.pid,
        uid = event.uid,
        gid = event.gid,
        %comm,
        cgroup_id = event.cgroup_id,
        namespace,
        pod,
        container,
        "security-relevant syscall"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_records_and_rejects_short_ones() {
        let event = SecurityEvent {
            cgroup_id: 7,
            nr: 59,
            pid: 1,
            tgid: 2,
            uid: 3,
            gid: 4,
            comm: *b"bash\0\0\0\0\0\0\0\0\0\0\0\0",
        };
        // SAFETY: reading the bytes of a plain-old-data struct.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&event as *const SecurityEvent).cast::<u8>(),
                std::mem::size_of::<SecurityEvent>(),
            )
        };
        assert_eq!(decode(bytes), Some(event));
        assert_eq!(decode(&bytes[1..]), None);
    }
}
