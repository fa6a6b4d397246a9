//! Wires the subsystems: metrics endpoint (always), and the leader's work (log shipping,
//! syscall monitoring) under the handover lock; drains on SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::http::{self, MetricsEndpoint};
use crate::metrics::{BuildContext, NodeCollectors};
use crate::{handover, logs, shutdown, syscalls};

/// Runs the agent until SIGTERM/SIGINT, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signal().context("installing signal handlers")?;
    run_until(config, shutdown).await
}

/// Same as [`run`] with an externally controlled shutdown token (tests).
pub async fn run_until(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    tracing::info!(
        version = crate::telemetry::VERSION,
        node = %config.identity.node_name,
        instance = %config.identity.instance(),
        "starting node-agent"
    );
    let collectors = NodeCollectors::build(
        config.collectors.iter().copied(),
        &BuildContext {
            paths: &config.paths,
            options: &config.collector_options,
        },
    );
    let endpoint = Arc::new(MetricsEndpoint::new(
        collectors,
        config.web.telemetry_path.clone(),
        !config.web.disable_exporter_metrics,
        config.web.max_requests,
    ));
    let listener = http::bind(config.web.listen)
        .with_context(|| format!("binding --web.listen-address {}", config.web.listen))?;
    // The server outlives the drain so metrics stay scrapeable until the very end.
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listener,
        Arc::clone(&endpoint),
        server_stop.clone(),
    ));

    let result = handover::run(&config, shutdown.clone(), |token| {
        lead(config.clone(), token)
    })
    .await;

    endpoint.set_ready(false);
    server_stop.cancel();
    let _ = server.await;
    tracing::info!("node-agent stopped");
    result
}

/// The leader's work: log shipping and syscall monitoring side by side until `shutdown`.
/// One failing is logged at once and does not stop the other; the first error is
/// returned once both have finished.
async fn lead(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let (logs, syscalls) = tokio::join!(
        logged("logs", logs::run(config.clone(), shutdown.clone())),
        logged("syscalls", syscalls::run_leader(config, shutdown)),
    );
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
