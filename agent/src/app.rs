//! Wires the subsystems: the metrics endpoint (always, in leader and standby), and the
//! leader's work (log shipping, syscall monitoring) under the handover lock; drains on
//! SIGTERM. Everything that can fail from configuration (sinks, collectors) is built
//! before the lock is taken, so a broken pod never becomes a leader that ships nothing.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use node_agent_core::sink::Sink;
use node_agent_metrics::http::{self, MetricsEndpoint};
use node_agent_metrics::{BuildContext, NodeCollectors};

use crate::config::Config;
use crate::shutdown;

/// Runs the agent until SIGTERM/SIGINT, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    run_until(config, shutdown).await
}

/// Same as [`run`] with an externally controlled shutdown token (tests).
pub async fn run_until(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    tracing::info!(
        version = node_agent_core::telemetry::VERSION,
        node = %config.identity.node_name,
        instance = %config.identity.instance(),
        "starting node-agent"
    );
    let collectors = build_collectors(&config);
    let web = &config.metrics.web;
    let endpoint = Arc::new(MetricsEndpoint::new(
        collectors,
        web.telemetry_path.clone(),
        !web.disable_exporter_metrics,
        web.max_requests,
    ));
    let sinks = node_agent_sinks::build_all_in(
        &config.file.sinks.0,
        &config.identity,
        &config.file.logs.state_dir,
    )
    .context("building the log sinks")?;
    let listener = http::bind(web.listen)
        .with_context(|| format!("binding --web.listen-address {}", web.listen))?;
    // The server outlives the drain so metrics stay scrapeable until the very end.
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        Arc::clone(&endpoint),
        server_stop.clone(),
    ));

    let result = node_agent_handover::run(
        &config.file.handover,
        &config.identity,
        shutdown.clone(),
        |token| lead(config.clone(), sinks, token),
    )
    .await;

    endpoint.set_ready(false);
    server_stop.cancel();
    let _ = server.await;
    tracing::info!("node-agent stopped");
    result
}

/// The node_exporter collectors plus the ones other subsystems register (the eBPF
/// syscalls collector), each only if enabled.
fn build_collectors(config: &Config) -> NodeCollectors {
    let metrics = &config.metrics;
    let syscalls = node_agent_syscalls::COLLECTOR_NAME;
    let mut extra = Vec::new();
    if config.collector_enabled(syscalls) {
        extra.push((
            syscalls,
            node_agent_syscalls::build_collector(&config.syscalls_options(), &metrics.paths),
        ));
    }
    NodeCollectors::build_with(
        metrics
            .collectors
            .iter()
            .copied()
            .filter(|n| *n != syscalls),
        &BuildContext {
            paths: &metrics.paths,
            options: &metrics.options,
        },
        extra,
    )
}

/// The leader's work: log shipping and syscall monitoring side by side until `shutdown`.
/// One failing is logged at once and does not stop the other; the first error is
/// returned once both have finished.
async fn lead(
    config: Config,
    sinks: Vec<Arc<dyn Sink>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let syscalls = async {
        if config.collector_enabled(node_agent_syscalls::COLLECTOR_NAME) {
            node_agent_syscalls::run_leader(
                config.syscalls_options(),
                config.metrics.paths.clone(),
                shutdown.clone(),
            )
            .await
        } else {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    let logs = node_agent_logs::run(
        config.file.logs.clone(),
        &config.identity,
        sinks,
        shutdown.clone(),
    );
    let (logs, syscalls) = tokio::join!(logged("logs", logs), logged("syscalls", syscalls));
    logs.context("log shipping")?;
    syscalls.context("syscall monitoring")
}

async fn logged(
    subsystem: &'static str,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let result = work.await;
    if let Err(err) = &result {
        tracing::error!(
            subsystem,
            error = format!("{err:#}"),
            "leader subsystem failed"
        );
    }
    result
}
