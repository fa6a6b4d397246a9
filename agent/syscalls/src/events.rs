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
        node_agent_core::telemetry::register(counter)
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

/// A security event with its syscall name and container attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedEvent {
    pub syscall: String,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub owner: Owner,
}

impl ResolvedEvent {
    fn new(event: &SecurityEvent, attribution: &Attribution) -> Self {
        let comm_len = event
            .comm
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(event.comm.len());
        Self {
            syscall: syscall_name(event.nr)
                .map(str::to_string)
                .unwrap_or_else(|| event.nr.to_string()),
            pid: event.tgid,
            tid: event.pid,
            uid: event.uid,
            gid: event.gid,
            comm: String::from_utf8_lossy(&event.comm[..comm_len]).into_owned(),
            cgroup_id: event.cgroup_id,
            owner: attribution.owner(event.cgroup_id),
        }
    }
}

/// Runs until `shutdown`, handing every event to `sink` ([`log_event`] in the agent).
pub async fn run(
    map: Map,
    sources: AttributionSources,
    refresh: Duration,
    shutdown: CancellationToken,
    mut sink: impl FnMut(ResolvedEvent),
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
            sink(ResolvedEvent::new(event, &attribution));
        }
    }
}

/// The leader's sink: one structured log line and a counter per event.
pub fn log_event(event: ResolvedEvent) {
    events_total().with_label_values(&[&event.syscall]).inc();
    let (namespace, pod, container) = match &event.owner {
        Owner::Host => ("", "", ""),
        Owner::Container(l) => (l.namespace.as_str(), l.pod.as_str(), l.container.as_str()),
    };
    tracing::info!(
        target: "node_agent::syscalls::event",
        syscall = event.syscall,
        pid = event.pid,
        tid = event.tid,
        uid = event.uid,
        gid = event.gid,
        comm = event.comm,
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
