//! The Kubernetes metadata cache in the agent (`kubernetes:` section): started with the
//! leader's work, since only the leader ships logs and runs eBPF (a standby watching too
//! would double the API server's watches for nothing; the new leader lists once when it
//! takes over, and holds files briefly while it syncs). Reported on `/healthz` and in
//! `node_agent_subsystem_up{subsystem="kubernetes"}`, and as `node_agent_k8s_*` metrics.
//!
//! Never fatal: with the cache off, unable to start (no token, no CA) or the API server
//! down, logs ship with the metadata their paths carry and misses are counted.

use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio_util::sync::CancellationToken;

use node_agent_core::health::{self, State};
use node_agent_core::telemetry;
use node_agent_kube::{CacheState, ErrorKind, KubeConfig, MetadataCache, Resource};
use node_agent_logs::Enrichment;
use node_agent_logs::stages::enrich::EnrichSettings;

/// The subsystem name on `/healthz`.
pub const SUBSYSTEM: &str = "kubernetes";
/// How often health and metrics are refreshed from the cache's counters.
const REFRESH: Duration = Duration::from_secs(1);

/// Starts the cache if the config enables it; `None` when it is off or cannot start
/// (then the reason is on `/healthz`). The cache runs until `stop`.
pub async fn start(
    config: &KubeConfig,
    node_name: &str,
    stop: &CancellationToken,
) -> Option<MetadataCache> {
    if !config.is_enabled() {
        tracing::info!(
            "Kubernetes metadata off (not in a cluster and no kubernetes.kubeconfig, or kubernetes.enabled=false)"
        );
        return None;
    }
    let mut config = config.clone();
    config.node_name = node_name.to_string();
    match MetadataCache::start(&config, stop).await {
        Ok(cache) => {
            tracing::info!(node = node_name, "Kubernetes metadata cache started");
            tokio::spawn(report(cache.clone(), stop.clone()));
            Some(cache)
        }
        Err(err) => {
            let error = format!("{err:#}");
            tracing::error!(
                error,
                "cannot start the Kubernetes metadata cache; shipping logs without pod metadata"
            );
            health::set(SUBSYSTEM, State::Degraded(error));
            None
        }
    }
}

/// What the log pipeline's enrich stage needs.
pub fn enrichment(cache: &MetadataCache, config: &KubeConfig) -> Enrichment {
    Enrichment {
        lookup: std::sync::Arc::new(cache.clone()),
        settings: EnrichSettings {
            hold_time: config.hold_time,
            hold_max_bytes: config.hold_max_bytes,
            counted: true,
        },
    }
}

/// The cache's state as a subsystem state.
pub fn state_of(cache: &MetadataCache) -> State {
    let stats = cache.stats();
    let last_error = || {
        Resource::ALL
            .iter()
            .find_map(|r| stats.resource(*r).last_error.clone())
            .unwrap_or_else(|| "no error yet".into())
    };
    match cache.state() {
        CacheState::Synced { .. } => State::Up,
        CacheState::NeverSynced => State::Degraded(format!(
            "not synced with the API server yet (logs ship without pod metadata): {}",
            last_error()
        )),
        CacheState::Stale { .. } => State::Degraded(format!(
            "API server unreachable, serving cached metadata: {}",
            last_error()
        )),
    }
}

struct Metrics {
    synced: IntGaugeVec,
    requests: IntCounterVec,
    relists: IntCounterVec,
    errors: IntCounterVec,
    cached: IntGaugeVec,
    dropped: IntCounterVec,
}

fn metrics() -> &'static Metrics {
    static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            telemetry::register(
                IntCounterVec::new(Opts::new(name, help), labels).expect("static metric"),
            )
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            telemetry::register(
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric"),
            )
        };
        Metrics {
            synced: gauge(
                "node_agent_k8s_cache_synced",
                "Whether the metadata cache of this resource is listed and watching (1) or never synced or stale (0).",
                &["resource"],
            ),
            requests: counter(
                "node_agent_k8s_requests_total",
                "Requests the metadata cache made to the API server.",
                &["resource", "verb"],
            ),
            relists: counter(
                "node_agent_k8s_relists_total",
                "Full re-lists after the first list (410 Gone, or a list that failed midway).",
                &["resource"],
            ),
            errors: counter(
                "node_agent_k8s_errors_total",
                "Failed requests and watches of the metadata cache, by kind.",
                &["resource", "kind"],
            ),
            cached: gauge(
                "node_agent_k8s_cached_objects",
                "Objects in the metadata cache.",
                &["kind"],
            ),
            dropped: counter(
                "node_agent_k8s_dropped_total",
                "Metadata not cached: values over max_value_bytes, objects over max_pods/max_namespaces.",
                &["reason"],
            ),
        }
    })
}

/// Counters only move forward: adds what `total` gained since the last refresh.
fn advance(counter: &prometheus::IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Publishes the cache's counters and state.
pub fn publish(cache: &MetadataCache) {
    let m = metrics();
    let stats = cache.stats();
    for r in Resource::ALL {
        let s = stats.resource(r);
        let name = r.as_str();
        m.synced
            .with_label_values(&[name])
            .set(i64::from(s.state.is_synced()));
        for (verb, n) in [
            ("list", s.list_requests),
            ("watch", s.watch_requests),
            ("get", s.get_requests),
        ] {
            advance(&m.requests.with_label_values(&[name, verb]), n);
        }
        advance(&m.relists.with_label_values(&[name]), s.relists);
        for kind in ErrorKind::ALL {
            advance(
                &m.errors.with_label_values(&[name, kind.as_str()]),
                s.errors_of(kind),
            );
        }
    }
    let c = stats.cached;
    for (kind, n) in [
        ("pods", c.pods),
        ("deleted_pods", c.deleted_pods),
        ("namespaces", c.namespaces),
        ("leased_pods", c.leased_pods),
    ] {
        m.cached.with_label_values(&[kind]).set(n as i64);
    }
    advance(
        &m.dropped.with_label_values(&["value_too_long"]),
        stats.values_dropped,
    );
    advance(
        &m.dropped.with_label_values(&["over_capacity"]),
        stats.over_capacity,
    );
}

async fn report(cache: MetadataCache, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let state = state_of(&cache);
        // Logged when it flips between up and not, not on every new error message.
        if last != Some(state.is_up()) {
            match &state {
                State::Up => tracing::info!("Kubernetes metadata cache synced"),
                State::Degraded(why) | State::Failed(why) => {
                    tracing::warn!(reason = %why, "Kubernetes metadata cache not current")
                }
            }
            last = Some(state.is_up());
        }
        health::set(SUBSYSTEM, state);
        publish(&cache);
    }
    health::clear(SUBSYSTEM);
}
