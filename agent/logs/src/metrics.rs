//! The pipeline's self-metrics (`node_agent_logs_*`), registered once per process.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use node_agent_core::telemetry;

pub struct LogsMetrics {
    pub lines_read: IntCounter,
    pub bytes_read: IntCounter,
    pub records_shipped: IntCounter,
    pub records_delivered: IntCounterVec,
    pub records_unrouted: IntCounter,
    pub records_not_routed: IntCounterVec,
    pub delivery_failures: IntCounterVec,
    pub malformed_lines: IntCounter,
    pub truncated_messages: IntCounter,
    pub dropped_records: IntCounterVec,
    pub parse_failures: IntCounterVec,
    pub redactions: IntCounterVec,
    pub lag_bytes: IntGaugeVec,
    pub delivery_seconds: Histogram,
    pub batches_in_flight: IntGauge,
    pub open_files: IntGauge,
    pub checkpoint_writes: IntCounter,
    pub checkpoint_errors: IntCounter,
    pub read_errors: IntCounter,
    pub files_skipped: IntCounterVec,
    pub lost_bytes: IntCounterVec,
    pub pending_bytes: IntGauge,
    pub force_flushed: IntCounterVec,
}

fn counter(name: &str, help: &str) -> IntCounter {
    telemetry::register(IntCounter::new(name, help).expect("static metric definition"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    telemetry::register(IntGauge::new(name, help).expect("static metric definition"))
}

pub fn metrics() -> &'static LogsMetrics {
    static METRICS: OnceLock<LogsMetrics> = OnceLock::new();
    METRICS.get_or_init(|| LogsMetrics {
        lines_read: counter(
            "node_agent_logs_lines_read_total",
            "Log lines read from container log files.",
        ),
        bytes_read: counter(
            "node_agent_logs_bytes_read_total",
            "Bytes read from container log files.",
        ),
        records_shipped: counter(
            "node_agent_logs_records_shipped_total",
            "Log records confirmed by the sinks they were routed to (counted once per delivery lane), dead-lettered ones left out.",
        ),
        records_delivered: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_records_delivered_total",
                    "Log records the sink confirmed (dead-lettered ones included).",
                ),
                &["sink"],
            )
            .expect("static metric definition"),
        ),
        records_unrouted: counter(
            "node_agent_logs_records_unrouted_total",
            "Log records no sink's `match:` takes; they count as delivered.",
        ),
        records_not_routed: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_records_not_routed_total",
                    "Log records the sink's `match:` does not take.",
                ),
                &["sink"],
            )
            .expect("static metric definition"),
        ),
        delivery_failures: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_delivery_failures_total",
                    "Batch deliveries a sink reported as failed (the batch is retried).",
                ),
                &["sink"],
            )
            .expect("static metric definition"),
        ),
        malformed_lines: counter(
            "node_agent_logs_malformed_lines_total",
            "Lines that were neither CRI nor docker json-file; shipped raw with malformed=true.",
        ),
        truncated_messages: counter(
            "node_agent_logs_truncated_messages_total",
            "Messages cut at logs.max_line_bytes.",
        ),
        dropped_records: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_dropped_records_total",
                    "Records dropped on purpose, by reason (the filter or throttle processor's name); their positions advance.",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        ),
        parse_failures: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_parse_failures_total",
                    "Records a parser processor could not parse (shipped raw with fields.parse_error).",
                ),
                &["processor"],
            )
            .expect("static metric definition"),
        ),
        redactions: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_redactions_total",
                    "Values masked by redact processors, by pattern.",
                ),
                &["pattern"],
            )
            .expect("static metric definition"),
        ),
        lag_bytes: telemetry::register(
            IntGaugeVec::new(
                Opts::new(
                    "node_agent_logs_lag_bytes",
                    "Bytes of a container's log files not yet confirmed by every sink.",
                ),
                &["namespace", "pod", "container"],
            )
            .expect("static metric definition"),
        ),
        delivery_seconds: telemetry::register(
            Histogram::with_opts(
                HistogramOpts::new(
                    "node_agent_logs_batch_delivery_seconds",
                    "Time from handing a batch to the sinks until every sink confirmed it.",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )
            .expect("static metric definition"),
        ),
        batches_in_flight: gauge(
            "node_agent_logs_batches_in_flight",
            "Batches handed to the sinks and not yet confirmed.",
        ),
        open_files: gauge(
            "node_agent_logs_open_files",
            "Container log files held open.",
        ),
        checkpoint_writes: counter(
            "node_agent_logs_checkpoint_writes_total",
            "Checkpoint files written.",
        ),
        checkpoint_errors: counter(
            "node_agent_logs_checkpoint_errors_total",
            "Checkpoint writes that failed.",
        ),
        read_errors: counter(
            "node_agent_logs_read_errors_total",
            "Errors opening or reading log files.",
        ),
        files_skipped: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_files_skipped_total",
                    "Log paths not read, by reason (symlink, not_regular, open_limit; and rotated_corrupt, rotated_too_large, rotated_not_regular, rotated_unreadable for a rotated file a checkpoint points into that cannot be read, whose rest is lost).",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        ),
        lost_bytes: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_lost_bytes_total",
                    "Log bytes nothing will ship, by reason (written_after_rotate_wait: appended to a rotated file after the agent let it go).",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        ),
        pending_bytes: gauge(
            "node_agent_logs_pending_bytes",
            "Bytes held waiting to complete (partial lines being joined, multiline groups), counted against logs.max_pending_bytes.",
        ),
        force_flushed: telemetry::register(
            IntCounterVec::new(
                Opts::new(
                    "node_agent_logs_force_flushed_total",
                    "Incomplete messages shipped as they were (flagged truncated) because logs.max_pending_bytes was reached, by reason (partial_line, multiline).",
                ),
                &["reason"],
            )
            .expect("static metric definition"),
        ),
    })
}
