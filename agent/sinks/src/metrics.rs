//! `node_agent_sink_*` self-metrics, labelled by sink name.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use node_agent_core::telemetry;

struct Families {
    records: IntCounterVec,
    bytes: IntCounterVec,
    latency: HistogramVec,
    retries: IntCounterVec,
    failures: IntCounterVec,
    dead_lettered: IntCounterVec,
    dead_letter_bytes: IntGaugeVec,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            telemetry::register(IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"))
        };
        Families {
            records: counter(
                "node_agent_sink_records_sent_total",
                "Log records the sink's receiver confirmed.",
                &["sink"],
            ),
            bytes: counter(
                "node_agent_sink_bytes_sent_total",
                "Request body bytes (before compression) the receiver confirmed.",
                &["sink"],
            ),
            latency: telemetry::register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "node_agent_sink_request_duration_seconds",
                        "Time from sending a request to the receiver's answer.",
                    )
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                    &["sink"],
                )
                .expect("static metric definition"),
            ),
            retries: counter(
                "node_agent_sink_retries_total",
                "Requests (or bulk items) sent again after a transient failure.",
                &["sink"],
            ),
            failures: counter(
                "node_agent_sink_failures_total",
                "Failed requests or items by class (network, timeout, http_429, http_5xx, http_auth, auth, http_4xx, bad_response, item_4xx, item_retry, io).",
                &["sink", "class"],
            ),
            dead_lettered: counter(
                "node_agent_sink_dead_lettered_records_total",
                "Records the receiver refused for good, written to the dead-letter file.",
                &["sink"],
            ),
            dead_letter_bytes: telemetry::register(
                IntGaugeVec::new(
                    Opts::new(
                        "node_agent_sink_dead_letter_bytes",
                        "Bytes of dead-letter files on disk (current and rotated; capped by dead_letter_max_bytes).",
                    ),
                    &["sink"],
                )
                .expect("static metric definition"),
            ),
        }
    })
}

/// Handles for one sink's series.
#[derive(Clone)]
pub struct SinkMetrics {
    name: String,
    records: IntCounter,
    bytes: IntCounter,
    latency: prometheus::Histogram,
    retries: IntCounter,
    dead_lettered: IntCounter,
    dead_letter_bytes: IntGauge,
}

impl SinkMetrics {
    pub fn new(name: &str) -> Self {
        let f = families();
        Self {
            name: name.to_string(),
            records: f.records.with_label_values(&[name]),
            bytes: f.bytes.with_label_values(&[name]),
            latency: f.latency.with_label_values(&[name]),
            retries: f.retries.with_label_values(&[name]),
            dead_lettered: f.dead_lettered.with_label_values(&[name]),
            dead_letter_bytes: f.dead_letter_bytes.with_label_values(&[name]),
        }
    }

    pub fn sent(&self, records: usize, bytes: usize) {
        self.records.inc_by(records as u64);
        self.bytes.inc_by(bytes as u64);
    }

    pub fn request_took(&self, elapsed: Duration) {
        self.latency.observe(elapsed.as_secs_f64());
    }

    pub fn retry(&self, n: usize) {
        self.retries.inc_by(n as u64);
    }

    pub fn failure(&self, class: &str) {
        families()
            .failures
            .with_label_values(&[&self.name, class])
            .inc();
    }

    pub fn dead_lettered(&self, n: usize) {
        self.dead_lettered.inc_by(n as u64);
    }

    pub fn dead_letter_bytes(&self, bytes: u64) {
        self.dead_letter_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    // Readers for tests and benchmarks.
    pub fn records_sent(&self) -> u64 {
        self.records.get()
    }
    pub fn retries(&self) -> u64 {
        self.retries.get()
    }
    pub fn dead_lettered_records(&self) -> u64 {
        self.dead_lettered.get()
    }
    pub fn dead_letter_bytes_on_disk(&self) -> u64 {
        u64::try_from(self.dead_letter_bytes.get()).unwrap_or(0)
    }
    pub fn failures(&self, class: &str) -> u64 {
        families()
            .failures
            .with_label_values(&[&self.name, class])
            .get()
    }
}
