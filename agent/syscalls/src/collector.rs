//! The `syscalls` collector: reads the pinned maps (whichever pod is leader) and exports
//! `node_agent_syscalls_*`.

use std::path::PathBuf;
use std::sync::Mutex;

use super::cgroups::Attribution;
use super::loader::PinnedMaps;
use super::series::{self, Admission, KubeLabels};
use super::support;
use node_agent_core::host::HostPaths;
use node_agent_metrics::{Collector, CollectorError, MetricSet};

pub struct SyscallsCollector {
    pin_path: PathBuf,
    state: Mutex<State>,
}

struct State {
    attribution: Attribution,
    kube: KubeLabels,
    admission: Admission,
}

pub fn build(
    options: &super::SyscallsOptions,
    paths: &HostPaths,
) -> Result<Box<dyn Collector>, CollectorError> {
    support::check(paths).map_err(|reason| {
        CollectorError::Other(format!("syscalls collector unavailable: {reason}"))
    })?;
    Ok(Box::new(SyscallsCollector::new(
        options.config.pin_path.clone(),
        Attribution::new(
            options.attribution_sources(paths),
            options.config.attribution_refresh,
        ),
        KubeLabels::new(
            &options.config.kube_labels,
            std::sync::Arc::clone(&options.containers),
        ),
        options.config.max_series,
    )))
}

impl SyscallsCollector {
    pub fn new(
        pin_path: PathBuf,
        attribution: Attribution,
        kube: KubeLabels,
        max_series: usize,
    ) -> Self {
        Self {
            pin_path,
            state: Mutex::new(State {
                attribution,
                kube,
                admission: Admission::new(max_series),
            }),
        }
    }
}

impl Collector for SyscallsCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let other = |e: anyhow::Error| CollectorError::Other(format!("{e:#}"));
        // No pins yet: no leader has loaded the program (a standby starting first, or an
        // unsupported kernel the leader logged about). Expected, so not an error.
        if !self.pin_path.join(syscalls_common::MAP_COUNTS).exists() {
            return Err(CollectorError::NoData);
        }
        let maps = PinnedMaps::open(&self.pin_path).map_err(other)?;
        let rows = maps.counts().map_err(other)?;
        let entries = rows.len();
        let (series, names) = {
            let mut state = self
                .state
                .lock()
                .map_err(|_| CollectorError::Other("syscalls collector state poisoned".into()))?;
            let State {
                attribution,
                kube,
                admission,
            } = &mut *state;
            attribution.ensure(rows.iter().map(|r| r.0));
            (
                series::aggregate(rows, attribution, kube, admission),
                kube.names().to_vec(),
            )
        };
        series::emit(&series, &names, out);
        out.counter(
            "node_agent_syscalls_map_overflow_total",
            "Syscalls not counted because the (cgroup, syscall) map was full (or the cgroup id was beyond 2^52).",
            &[],
            maps.counts_lost().map_err(other)? as f64,
        );
        out.counter(
            "node_agent_security_events_dropped_total",
            "Kernel security records dropped because the ring buffer was full (the capture fell behind).",
            &[],
            maps.events_dropped().map_err(other)? as f64,
        );
        out.gauge(
            "node_agent_syscalls_map_entries",
            "Entries in the (cgroup, syscall) counter map.",
            &[],
            entries as f64,
        );
        out.gauge(
            "node_agent_syscalls_map_max_entries",
            "Capacity of the (cgroup, syscall) counter map.",
            &[],
            f64::from(maps.capacity()),
        );
        Ok(())
    }
}
