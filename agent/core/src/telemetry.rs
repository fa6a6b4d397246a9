//! The registry of the agent's functional self-metrics (`node_agent_*`). Every subsystem
//! registers its handles here once (typically through a `OnceLock`ed struct); the metrics
//! endpoint serves it.

use std::sync::OnceLock;

use prometheus::Registry;

/// Version baked in at build time.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Registry of the agent's functional metrics (`node_agent_*`).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}

/// Registers a metric in [`registry`], tolerating a second registration of the same
/// metric (tests build several pipelines in one process).
pub fn register<C: prometheus::core::Collector + Clone + 'static>(metric: C) -> C {
    if let Err(err) = registry().register(Box::new(metric.clone())) {
        tracing::debug!(error = %err, "metric already registered");
    }
    metric
}
