//! The log pipeline. Records flow one way, and positions come back the other:
//!
//! ```text
//! source thread                                     delivery task (per source)
//!   discover → read → decode → stages → batch  ──►  router → sinks
//!   (sources/)        (tail/decode)  (stages/)        (router)
//!        ▲                                              │ confirmed
//!        └── positions resume from ◄── checkpoint ◄── acknowledge in order
//!                                     (checkpoint)     (ack)
//! ```
//!
//! - A [`source::Source`] runs on its own OS thread, reads from the positions in its
//!   checkpoint, runs each record through the [`stages::Chain`] and seals batches
//!   ([`batch`]) that carry the position updates ([`position`]) they complete.
//! - The delivery side ([`delivery`]) hands each batch to the [`router::Router`], applies
//!   acknowledgements strictly in batch order ([`ack`]) and writes the source's checkpoint
//!   ([`checkpoint`]) after each one. A position moves only after every sink confirmed
//!   everything before it: at-least-once delivery, and no duplicates across a clean
//!   restart. A record a stage drops counts as delivered.
//! - Sources today: pod logs ([`sources::pods`], over the shared file tailing in
//!   [`sources::tail`]).

pub mod ack;
pub mod batch;
pub mod checkpoint;
pub mod delivery;
pub mod metrics;
pub mod position;
pub mod router;
pub mod source;
pub mod sources;
pub mod stages;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use node_agent_core::config::{KeyPath, Problems, Validate};
use node_agent_core::duration::serde_format as duration_serde;
use node_agent_core::node::NodeIdentity;
use node_agent_core::sink::Sink;

pub use delivery::RunSummary;

/// `logs:` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Ship container logs at all.
    pub enabled: bool,
    /// kubelet's pod log root.
    pub pods_dir: PathBuf,
    /// Where checkpoints are persisted (a hostPath in a DaemonSet).
    pub state_dir: PathBuf,
    /// Period of the full rescan and read of every file while the kernel's file watch is
    /// unavailable (e.g. the directory does not exist yet, or no inotify watches are left).
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub rescan_interval: Duration,
    /// The same while the watch works: files are read when the kernel reports a write and
    /// rescanned when it reports a change, so this pass is only the fallback for lost
    /// events. Every node pays for it while idle, hence the longer default.
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub watched_rescan_interval: Duration,
    /// Confirmed positions are written after every acknowledgement (coalesced, one write
    /// at a time) and at shutdown; this is the period of the fallback write.
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub checkpoint_interval: Duration,
    /// Cap on one message (joined partial lines); longer ones are cut and flagged.
    pub max_line_bytes: usize,
    /// Parse messages that are JSON objects into `fields`.
    pub parse_json: bool,
    /// A batch is sealed at this many records…
    pub batch_max_records: usize,
    /// …or this many bytes…
    pub batch_max_bytes: usize,
    /// …or when its oldest record is this old.
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub batch_timeout: Duration,
    /// Files held open at once (rotated files still being finished count too).
    pub max_open_files: usize,
    /// Bytes read from one file before moving to the next (fairness, buffer size).
    pub read_chunk_bytes: usize,
    /// Batches handed to sinks and not yet confirmed. With `batch_max_bytes` this bounds
    /// memory; when reached, reading pauses and the files are the buffer.
    pub max_in_flight_batches: usize,
    /// How long shutdown waits for in-flight batches; keep it below the pod's
    /// terminationGracePeriodSeconds. Unconfirmed batches are re-read by the next run.
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub drain_timeout: Duration,
    /// Only these namespaces (empty: all).
    pub namespaces_include: Vec<String>,
    /// Never these namespaces.
    pub namespaces_exclude: Vec<String>,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pods_dir: PathBuf::from("/var/log/pods"),
            state_dir: node_agent_core::state::default_state_dir(),
            rescan_interval: Duration::from_secs(5),
            watched_rescan_interval: Duration::from_secs(60),
            checkpoint_interval: Duration::from_secs(5),
            max_line_bytes: 256 * 1024,
            parse_json: false,
            batch_max_records: 1000,
            batch_max_bytes: 1024 * 1024,
            batch_timeout: Duration::from_secs(1),
            max_open_files: 1024,
            read_chunk_bytes: 64 * 1024,
            max_in_flight_batches: 4,
            drain_timeout: Duration::from_secs(20),
            namespaces_include: Vec::new(),
            namespaces_exclude: Vec::new(),
        }
    }
}

impl Validate for LogsConfig {
    /// Rejects settings that would stall or misbehave.
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let positive = [
            ("max_line_bytes", self.max_line_bytes),
            ("batch_max_records", self.batch_max_records),
            ("batch_max_bytes", self.batch_max_bytes),
            ("max_open_files", self.max_open_files),
            ("read_chunk_bytes", self.read_chunk_bytes),
            ("max_in_flight_batches", self.max_in_flight_batches),
        ];
        for (name, value) in positive {
            problems.check(value > 0, &at.key(name), "must be greater than 0");
        }
        for (name, value) in [
            ("rescan_interval", self.rescan_interval),
            ("watched_rescan_interval", self.watched_rescan_interval),
            ("checkpoint_interval", self.checkpoint_interval),
        ] {
            problems.check(!value.is_zero(), &at.key(name), "must be greater than 0");
        }
        for (name, path) in [("pods_dir", &self.pods_dir), ("state_dir", &self.state_dir)] {
            problems.check(
                path.is_absolute(),
                &at.key(name),
                format!("must be an absolute path, got {}", path.display()),
            );
        }
        if let Some(ns) = self
            .namespaces_include
            .iter()
            .find(|n| self.namespaces_exclude.contains(n))
        {
            problems.add(
                &at.key("namespaces_include"),
                format!("namespace {ns:?} is both in namespaces_include and namespaces_exclude"),
            );
        }
    }
}

/// Runs the pipeline with `sinks` until `shutdown`, then drains in-flight batches (bounded
/// by `logs.drain_timeout`) and persists the final checkpoint.
pub async fn run(
    logs: LogsConfig,
    node: &NodeIdentity,
    sinks: Vec<std::sync::Arc<dyn Sink>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !logs.enabled {
        tracing::info!("container log shipping disabled (logs.enabled=false)");
        shutdown.cancelled().await;
        return Ok(());
    }
    run_with_sinks(logs, node.node_name.clone(), sinks, shutdown).await?;
    Ok(())
}

/// [`run`] plus live records from `alerts` (runtime-security alerts): a second source on
/// the same router, so the same sinks and routes apply. Runs even with `logs.enabled`
/// false (that switch is about container logs).
pub async fn run_with_alerts(
    logs: LogsConfig,
    node: &NodeIdentity,
    sinks: Vec<std::sync::Arc<dyn Sink>>,
    alerts: std::sync::mpsc::Receiver<node_agent_core::record::LogRecord>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = std::sync::Arc::new(router::Router::new(sinks.clone())?);
    let live = sources::live::LiveSource::new("security", SECURITY_CHECKPOINT_FILE, alerts);
    let security = delivery::run_source(
        live,
        stages::Chain::new(Vec::new()),
        logs.delivery_settings(),
        router,
        shutdown.clone(),
    );
    let pods = run(logs, node, sinks, shutdown);
    let (security, pods) = tokio::join!(security, pods);
    security.context("security alerts")?;
    pods
}

/// Checkpoint of the security alert source (a count; nothing resumes from it).
pub const SECURITY_CHECKPOINT_FILE: &str = "security-alerts.json";

/// What can be checked before leading: the state dir is usable and every source's
/// checkpoint readable. Changes nothing.
pub fn preflight(config: &LogsConfig) -> anyhow::Result<()> {
    if !config.enabled {
        return Ok(());
    }
    checkpoint::CheckpointStore::<sources::tail::file_id::FileEntry>::new(
        &config.state_dir,
        sources::pods::CHECKPOINT_FILE,
    )
    .check()
    .with_context(|| format!("logs.state_dir {}", config.state_dir.display()))?;
    Ok(())
}

/// Runs the pod log source with `sinks` until `shutdown`, then drains (see [`run`]).
pub async fn run_with_sinks(
    config: LogsConfig,
    node: String,
    sinks: Vec<std::sync::Arc<dyn Sink>>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    let router = std::sync::Arc::new(router::Router::new(sinks)?);
    let source = sources::pods::PodsSource::new(
        sources::pods::PodsLayout {
            pods_dir: config.pods_dir.clone(),
            filter: sources::pods::discovery::NamespaceFilter {
                include: config.namespaces_include.clone(),
                exclude: config.namespaces_exclude.clone(),
            },
            node,
            max_line_bytes: config.max_line_bytes,
        },
        config.tail_settings(),
    );
    delivery::run_source(
        source,
        config.stages(),
        config.delivery_settings(),
        router,
        shutdown,
    )
    .await
}

impl LogsConfig {
    /// The stage chain these settings ask for.
    pub fn stages(&self) -> stages::Chain {
        let mut chain: Vec<Box<dyn stages::Stage>> = Vec::new();
        if self.parse_json {
            chain.push(Box::new(stages::json::ParseJson));
        }
        stages::Chain::new(chain)
    }

    fn tail_settings(&self) -> sources::tail::TailSettings {
        sources::tail::TailSettings {
            rescan_interval: self.rescan_interval,
            watched_rescan_interval: self.watched_rescan_interval,
            max_line_bytes: self.max_line_bytes,
            max_open_files: self.max_open_files,
            read_chunk_bytes: self.read_chunk_bytes,
            state_dir: self.state_dir.clone(),
        }
    }

    fn delivery_settings(&self) -> delivery::DeliverySettings {
        delivery::DeliverySettings {
            state_dir: self.state_dir.clone(),
            max_in_flight_batches: self.max_in_flight_batches,
            drain_timeout: self.drain_timeout,
            checkpoint_interval: self.checkpoint_interval,
            batches: source::BatchLimits {
                max_records: self.batch_max_records,
                max_bytes: self.batch_max_bytes,
                timeout: self.batch_timeout,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_section_and_validates() {
        let c: LogsConfig = serde_yaml_ng::from_str(
            "pods_dir: /tmp/pods\nbatch_timeout: 250ms\ndrain_timeout: 10s\nmax_line_bytes: 1024\nnamespaces_exclude: [kube-system]\n",
        )
        .unwrap();
        assert_eq!(c.batch_timeout, Duration::from_millis(250));
        assert_eq!(c.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.max_line_bytes, 1024);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/node-agent"));
        c.validated().unwrap();

        assert!(serde_yaml_ng::from_str::<LogsConfig>("unknown_key: 1").is_err());
        let zero = LogsConfig {
            batch_max_records: 0,
            ..LogsConfig::default()
        };
        assert!(
            zero.validated()
                .unwrap_err()
                .to_string()
                .contains("batch_max_records")
        );
        let both = LogsConfig {
            namespaces_include: vec!["a".into()],
            namespaces_exclude: vec!["a".into()],
            ..LogsConfig::default()
        };
        assert!(both.validated().is_err());
    }
}
