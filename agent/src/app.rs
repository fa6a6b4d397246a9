//! Wires the subsystems: the metrics endpoint (always, in leader and standby), and the
//! leader's work (log shipping, syscall monitoring) under the handover lock; drains on
//! SIGTERM. Everything that can fail from configuration (sinks, collectors) is built
//! before the lock is taken, so a broken pod never becomes a leader that ships nothing.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use node_agent_core::health::{self, State};
use node_agent_core::sink::Sink;
use node_agent_metrics::config::Listen;
use node_agent_metrics::http::{self, MetricsEndpoint, ServeOptions};
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
    log_config_warnings(&config);
    let collectors = build_collectors(&config);
    let web = &config.metrics.web;
    let endpoint = Arc::new(
        MetricsEndpoint::new(
            collectors,
            web.telemetry_path.clone(),
            !web.disable_exporter_metrics,
            web.max_requests,
        )
        .with_web_settings(&web.server),
    );
    // Everything the configuration can break is tried before the lock: a pod that cannot
    // do the leader's work must not take the leadership from one that can.
    let sinks = node_agent_sinks::build_all_in(
        &config.file.sinks.0,
        &config.identity,
        &config.file.logs.state_dir,
    )
    .context("building the log sinks")
    .map_err(StartupError)?;
    node_agent_logs::preflight(&config.file.logs).map_err(StartupError)?;
    let listeners = match &web.listen {
        Listen::Addresses(addrs) => {
            let mut listeners = Vec::with_capacity(addrs.len());
            for addr in addrs {
                listeners.push(
                    http::bind(*addr)
                        .with_context(|| format!("binding --web.listen-address {addr}"))?,
                );
            }
            listeners
        }
        Listen::SystemdSocket => http::systemd_listeners().map_err(StartupError)?,
    };
    // The server outlives the drain so metrics stay scrapeable until the very end.
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        listeners,
        Arc::clone(&endpoint),
        ServeOptions {
            tls: web.server.tls.clone(),
            max_connections: web.max_connections,
            header_read_timeout: web.header_read_timeout,
        },
        server_stop.clone(),
    ));

    let state_dirs = [config.file.logs.state_dir.clone()];
    let result = node_agent_handover::run(
        &config.file.handover,
        &config.identity,
        &state_dirs,
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

/// Deprecated flags, collectors asked for that do not exist here, web config differences:
/// once, at start-up (flags are parsed before logging is set up).
pub fn log_config_warnings(config: &Config) {
    for warning in &config.metrics.warnings {
        tracing::warn!("{warning}");
    }
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
/// The first one to fail stops the other (its state shows on `/healthz` and in
/// `node_agent_subsystem_up`), and the error ends the leadership: the lock is released and
/// the process exits non-zero, so the standby takes over instead of a leader that ships
/// nothing.
async fn lead(
    config: Config,
    sinks: Vec<Arc<dyn Sink>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.child_token();
    let syscalls = async {
        if config.collector_enabled(node_agent_syscalls::COLLECTOR_NAME) {
            node_agent_syscalls::run_leader(
                config.syscalls_options(),
                config.metrics.paths.clone(),
                stop.clone(),
            )
            .await
        } else {
            stop.cancelled().await;
            Ok(())
        }
    };
    let logs = node_agent_logs::run(
        config.file.logs.clone(),
        &config.identity,
        sinks,
        stop.clone(),
    );
    let (logs, syscalls) = tokio::join!(
        supervised("logs", logs, &stop),
        supervised("syscalls", syscalls, &stop)
    );
    logs.context("log shipping")?;
    syscalls.context("syscall monitoring")
}

/// Runs one leader subsystem, keeping its health state; a failure stops its siblings.
async fn supervised(
    subsystem: &'static str,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
    siblings: &CancellationToken,
) -> anyhow::Result<()> {
    health::set(subsystem, State::Up);
    let result = work.await;
    match &result {
        Ok(()) => health::clear(subsystem),
        Err(err) => {
            let error = format!("{err:#}");
            tracing::error!(
                subsystem,
                error,
                "leader subsystem failed; ending leadership so that the standby takes over"
            );
            health::set(subsystem, State::Failed(error));
            siblings.cancel();
        }
    }
    result
}

/// A configuration problem found while starting (a missing CA file, an unusable state
/// dir): `main` exits with status 2, as for a bad flag.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct StartupError(pub anyhow::Error);
