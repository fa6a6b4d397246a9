//! `node_agent_leader*` / `node_agent_handover*` self-metrics.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{Gauge, IntCounter, IntGauge};

use node_agent_core::telemetry::register;

pub(super) struct HandoverMetrics {
    leader: IntGauge,
    changed: Gauge,
    handovers: IntCounter,
    wait_seconds: Gauge,
    drain_seconds: Gauge,
}

pub(super) fn get() -> &'static HandoverMetrics {
    static METRICS: OnceLock<HandoverMetrics> = OnceLock::new();
    METRICS.get_or_init(|| HandoverMetrics {
        leader: register(
            IntGauge::new(
                "node_agent_leader",
                "1 while this process holds the leader lock (ships logs, attaches eBPF), 0 while standby.",
            )
            .expect("static metric definition"),
        ),
        // Initialised at first use, when the process starts as standby.
        changed: {
            let g = register(
                Gauge::new(
                    "node_agent_leader_state_change_timestamp_seconds",
                    "Unix time this process last became leader or standby (start-up counts as becoming standby).",
                )
                .expect("static metric definition"),
            );
            g.set(unix_now());
            g
        },
        handovers: register(
            IntCounter::new(
                "node_agent_handover_total",
                "Times this process became leader.",
            )
            .expect("static metric definition"),
        ),
        wait_seconds: register(
            Gauge::new(
                "node_agent_handover_wait_seconds",
                "Time this process spent as standby before it last became leader.",
            )
            .expect("static metric definition"),
        ),
        drain_seconds: register(
            Gauge::new(
                "node_agent_leader_drain_seconds",
                "Duration of the last drain (shutdown to final checkpoint) before releasing the leader lock.",
            )
            .expect("static metric definition"),
        ),
    })
}

impl HandoverMetrics {
    pub(super) fn became_leader(&self, waited: Duration) {
        self.wait_seconds.set(waited.as_secs_f64());
        self.handovers.inc();
        self.leader.set(1);
        self.changed.set(unix_now());
    }

    pub(super) fn drained(&self, drain: Duration) {
        self.drain_seconds.set(drain.as_secs_f64());
    }

    pub(super) fn stopped_leading(&self) {
        self.leader.set(0);
        self.changed.set(unix_now());
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
