//! The agent's own metrics on the endpoint.
//!
//! Two registries, as node_exporter has: the core registry
//! ([`node_agent_core::telemetry::registry`]) holds the agent's functional metrics
//! (`node_agent_*`, always served); the exporter registry here holds `process_*`,
//! `promhttp_metric_handler_*` and build info, which `--web.disable-exporter-metrics` drops.

use std::sync::OnceLock;

use node_agent_core::telemetry::{VERSION, registry};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use crate::{MetricSet, process};

struct ExporterMetrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    in_flight: IntGauge,
}

fn exporter() -> &'static ExporterMetrics {
    static EXPORTER: OnceLock<ExporterMetrics> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("promhttp_metric_handler_requests_total", "Total number of scrapes by HTTP status code."),
            &["code"],
        )
        .expect("static metric definition");
        let errors = IntCounterVec::new(
            Opts::new(
                "promhttp_metric_handler_errors_total",
                "Total number of internal errors encountered by the promhttp metric handler.",
            ),
            &["cause"],
        )
        .expect("static metric definition");
        let in_flight = IntGauge::new(
            "promhttp_metric_handler_requests_in_flight",
            "Current number of scrapes being served.",
        )
        .expect("static metric definition");
        for code in ["200", "500", "503"] {
            requests.with_label_values(&[code]);
        }
        for cause in ["encoding", "gathering"] {
            errors.with_label_values(&[cause]);
        }
        let build_info = |name: &str, help: &str, extra: &[(&str, &str)]| {
            let mut opts = Opts::new(name, help).const_label("version", VERSION);
            for (k, v) in extra {
                opts = opts.const_label(*k, *v);
            }
            let g = IntGauge::with_opts(opts).expect("static metric definition");
            g.set(1);
            g
        };
        let agent_info = build_info(
            "node_agent_build_info",
            "A metric with a constant '1' value labeled by version and target of node-agent.",
            &[("revision", option_env!("NODE_AGENT_REVISION").unwrap_or("unknown")), ("arch", std::env::consts::ARCH)],
        );
        // Dashboards and the node-mixin key on node_exporter_build_info; keep its label set.
        let compat_info = build_info(
            "node_exporter_build_info",
            "A metric with a constant '1' value labeled by version, revision, branch, goversion from which node_exporter was built, and the goos and goarch for the build.",
            &[
                ("revision", option_env!("NODE_AGENT_REVISION").unwrap_or("unknown")),
                ("branch", "node-agent"),
                ("goversion", "rust"),
                ("goos", std::env::consts::OS),
                ("goarch", go_arch()),
            ],
        );
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(requests.clone()),
            Box::new(errors.clone()),
            Box::new(in_flight.clone()),
            Box::new(agent_info),
            Box::new(compat_info),
        ];
        for c in collectors {
            if let Err(err) = registry.register(c) {
                tracing::error!(error = %err, "registering exporter metric");
            }
        }
        ExporterMetrics { registry, requests, errors, in_flight }
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Adds the agent's own metrics for one scrape: the functional registry, and unless
/// `--web.disable-exporter-metrics`, the exporter registry and `process_*`.
pub fn collect(exporter_metrics: bool, out: &mut MetricSet) {
    for family in registry().gather() {
        out.extend_family(family);
    }
    if exporter_metrics {
        for family in exporter().registry.gather() {
            out.extend_family(family);
        }
        process::collect(out);
    }
}

/// Counts a finished scrape by HTTP status code.
pub fn scrape_finished(code: &str) {
    exporter().requests.with_label_values(&[code]).inc();
}

/// Counts an internal scrape error by cause.
pub fn scrape_error(cause: &str) {
    exporter().errors.with_label_values(&[cause]).inc();
}

/// Marks a scrape in flight until the guard drops.
pub fn scrape_in_flight() -> InFlight {
    exporter().in_flight.inc();
    InFlight
}

pub struct InFlight;

impl Drop for InFlight {
    fn drop(&mut self) {
        exporter().in_flight.dec();
    }
}
