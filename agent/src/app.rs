//! Wires the subsystems: the metrics endpoint (always, in leader and standby), and the
//! leader's work (log shipping, syscall monitoring) under the handover lock; drains on
//! SIGTERM. Everything that can fail from configuration (sinks, collectors) is built
//! before the lock is taken, so a broken pod never becomes a leader that ships nothing.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use node_agent_core::health::{self, State};
use node_agent_core::kube::{ContainerLookupSlot, SharedContainerLookup};
use node_agent_core::sink::Sink;
use node_agent_metrics::config::Listen;
use node_agent_metrics::http::{self, MetricsEndpoint, ServeOptions};
use node_agent_metrics::{BuildContext, NodeCollectors};

use tokio::sync::watch;

use crate::config::{Config, FileConfig};
use crate::reload;
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
    // The syscalls collector's `kube_labels` and the security events' `k8s.*` fields
    // read the metadata cache, which runs in the leader only: filled when it leads.
    let containers = Arc::new(ContainerLookupSlot::default());
    let collectors = build_collectors(&config, &containers);
    let web = &config.metrics.web;
    let endpoint = Arc::new(
        MetricsEndpoint::new(
            collectors,
            web.telemetry_path.clone(),
            !web.disable_exporter_metrics,
            web.max_requests,
        )
        .with_node_name(&config.identity.node_name)
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

    // Reload applies to the leader's log pipeline; a standby keeps the latest accepted
    // configuration and starts from it once it leads.
    let reload_stop = CancellationToken::new();
    let reloads = match &config.config_file {
        Some(path) => Some(
            reload::watch(path.clone(), config.file.clone(), reload_stop.clone())
                .map_err(StartupError)?,
        ),
        None => None,
    };

    let state_dirs = [config.file.logs.state_dir.clone()];
    let result = node_agent_handover::run(
        &config.file.handover,
        &config.identity,
        &state_dirs,
        shutdown.clone(),
        |token| {
            lead(
                config.clone(),
                sinks,
                reloads,
                Arc::clone(&containers),
                token,
            )
        },
    )
    .await;
    reload_stop.cancel();

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
fn build_collectors(config: &Config, containers: &Arc<ContainerLookupSlot>) -> NodeCollectors {
    let metrics = &config.metrics;
    let syscalls = node_agent_syscalls::COLLECTOR_NAME;
    let mut extra = Vec::new();
    if config.collector_enabled(syscalls) {
        let mut options = config.syscalls_options();
        options.containers = Arc::clone(containers) as SharedContainerLookup;
        extra.push((
            syscalls,
            node_agent_syscalls::build_collector(&options, &metrics.paths),
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
    reloads: Option<watch::Receiver<Arc<FileConfig>>>,
    containers: Arc<ContainerLookupSlot>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stop = shutdown.child_token();
    let ebpf = config.collector_enabled(node_agent_syscalls::COLLECTOR_NAME);
    let security = &config.file.security;
    if security.enabled && !ebpf {
        tracing::warn!("security.enabled needs --collector.syscalls (the eBPF capture); no alerts");
    }
    // Alerts enter the log pipeline through a bounded queue; capture never waits on sinks.
    let (alerts, alerts_rx) = if security.enabled && ebpf {
        let (tx, rx) = node_agent_syscalls::security::AlertSender::channel(
            ALERT_QUEUE,
            &config.identity.node_name,
        );
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let security_options = alerts.map(|tx| node_agent_syscalls::security::SecurityOptions {
        config: security.clone(),
        alerts: Some(tx),
    });
    // Started before the logs so that files found at start can wait for their pods.
    let kube = &config.file.kubernetes;
    let cache = crate::kube::start(kube, &config.identity.node_name, &stop).await;
    if let Some(cache) = &cache {
        // The backlog found at start would otherwise ship unenriched while the first list
        // is in flight (the stage only holds files while the cache is current). Bounded:
        // with the API server down, logs start after `hold_time` and count misses.
        if !cache.wait_synced(kube.hold_time).await {
            tracing::warn!(
                "Kubernetes metadata cache not synced yet; shipping logs without pod metadata until it is"
            );
        }
    }
    // The same cache for the syscall series and security events, by container id.
    containers.set(
        cache
            .as_ref()
            .map(|c| Arc::new(c.clone()) as SharedContainerLookup),
    );
    let mut syscalls_options = config.syscalls_options();
    syscalls_options.containers = Arc::clone(&containers) as SharedContainerLookup;
    let syscalls = async {
        if ebpf {
            node_agent_syscalls::run_leader(
                syscalls_options,
                config.metrics.paths.clone(),
                security_options,
                stop.clone(),
            )
            .await
        } else {
            stop.cancelled().await;
            Ok(())
        }
    };
    let enrichment = cache.as_ref().map(|c| crate::kube::enrichment(c, kube));
    // Alerts are a live source beside the log sources, on the start-up sinks: a reload
    // restarts the log sources, while the capture keeps its queue.
    let alert_sinks = alerts_rx.as_ref().map(|_| sinks.clone());
    let logs = async {
        let alerts = async {
            match (alerts_rx, alert_sinks) {
                (Some(rx), Some(sinks)) => {
                    node_agent_logs::run_alerts(&config.file.logs, sinks, rx, stop.clone()).await
                }
                _ => Ok(()),
            }
        };
        let (logs, alerts) = tokio::join!(
            ship_logs(&config, sinks, enrichment, reloads, &stop),
            alerts
        );
        alerts?;
        logs
    };
    let (logs, syscalls) = tokio::join!(
        supervised("logs", logs, &stop),
        supervised("syscalls", syscalls, &stop)
    );
    // Its cache stops with the leadership; a standby's series go without it.
    containers.set(None);
    logs.context("log shipping")?;
    syscalls.context("syscall monitoring")
}

/// The log pipeline, restarted with each accepted reload: the running one drains to its
/// checkpoint (as at a handover) and the new one resumes from there, so a reload neither
/// loses nor repeats a record. Sinks of the new configuration are built first; if that
/// fails the running pipeline stays.
async fn ship_logs(
    config: &Config,
    mut sinks: Vec<Arc<dyn Sink>>,
    enrichment: Option<node_agent_logs::Enrichment>,
    mut reloads: Option<watch::Receiver<Arc<FileConfig>>>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut logs = config.file.logs.clone();
    loop {
        let generation = stop.child_token();
        let run = node_agent_logs::run(
            logs.clone(),
            &config.identity,
            sinks,
            enrichment.clone(),
            generation.clone(),
        );
        tokio::pin!(run);
        let next = loop {
            // The next accepted configuration; never, without a watcher or once it stopped
            // (shutdown): then only the pipeline is left.
            let changed = async {
                if let Some(rx) = reloads.as_mut()
                    && rx.changed().await.is_ok()
                {
                    return Arc::clone(&rx.borrow_and_update());
                }
                std::future::pending().await
            };
            let new = tokio::select! {
                result = &mut run => return result,
                new = changed => new,
            };
            let built = node_agent_logs::preflight(&new.logs).and_then(|()| {
                node_agent_sinks::build_all_in(&new.sinks.0, &config.identity, &new.logs.state_dir)
            });
            match built {
                Ok(new_sinks) => break (new, new_sinks),
                Err(err) => tracing::error!(
                    error = format!("{err:#}"),
                    "config reload refused: the new sinks cannot be built; keeping the running pipeline"
                ),
            }
        };
        generation.cancel();
        run.await
            .context("draining the log pipeline for a reload")?;
        if stop.is_cancelled() {
            return Ok(());
        }
        (logs, sinks) = (next.0.logs.clone(), next.1);
        tracing::info!("config reloaded: log pipeline restarted from its checkpoint");
    }
}

/// Alerts waiting for the log pipeline at most (each a few hundred bytes).
const ALERT_QUEUE: usize = 4096;

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
