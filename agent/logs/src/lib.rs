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
//! - Sources: pod logs ([`sources::pods`], over the shared file tailing in
//!   [`sources::tail`]) and the systemd journal ([`sources::journal`]), each with its own
//!   delivery side and checkpoint file.

pub mod ack;
pub mod batch;
pub mod budget;
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
    /// Confirmed positions are written after acknowledgements (coalesced, one write at a
    /// time) and at shutdown; this is the period of the fallback write.
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub checkpoint_interval: Duration,
    /// The least time between the starts of two checkpoint writes (each is two fsyncs): a
    /// crash may re-ship what was acknowledged within it; a clean shutdown never does.
    /// `0s` writes after every acknowledgement.
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub checkpoint_min_interval: Duration,
    /// Cap on one message (joined partial lines); longer ones are cut and flagged.
    pub max_line_bytes: usize,
    /// Parse messages that are JSON objects into `fields` (a `type: json` processor run
    /// before `processors`).
    pub parse_json: bool,
    /// The processing stages, in order (see [`stages::config`]).
    pub processors: Vec<stages::config::ProcessorConfig>,
    /// A batch is sealed at this many records…
    pub batch_max_records: usize,
    /// …or this many bytes (messages plus their Kubernetes labels and annotations, which
    /// most sinks send with every record)…
    pub batch_max_bytes: usize,
    /// …or when its oldest record is this old.
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub batch_timeout: Duration,
    /// Files held open at once (rotated files still being finished count too).
    pub max_open_files: usize,
    /// Bytes read from one file before moving to the next (fairness, buffer size).
    pub read_chunk_bytes: usize,
    /// Memory for incomplete messages — partial lines being joined, multiline groups and
    /// the records waiting behind them — across all files, sources and lanes; past it the
    /// oldest is shipped as it is, flagged truncated ([`budget`]).
    pub max_pending_bytes: usize,
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
    /// The systemd journal ([`sources::journal`]).
    pub journal: sources::journal::JournalSourceConfig,
    /// Host log files by glob ([`sources::files`]). Unset: `/var/log/*.log` on a host
    /// without `pods_dir` (a laptop or VM), none on a Kubernetes node (decided by [`run`]).
    pub files: Option<Vec<sources::files::FilesEntry>>,
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
            checkpoint_min_interval: Duration::from_millis(200),
            max_line_bytes: 256 * 1024,
            parse_json: false,
            processors: Vec::new(),
            batch_max_records: 1000,
            batch_max_bytes: 1024 * 1024,
            batch_timeout: Duration::from_secs(1),
            max_open_files: 1024,
            read_chunk_bytes: 64 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
            max_in_flight_batches: 4,
            drain_timeout: Duration::from_secs(20),
            namespaces_include: Vec::new(),
            namespaces_exclude: Vec::new(),
            journal: sources::journal::JournalSourceConfig::default(),
            files: None,
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
        // Smaller, and every message longer than the budget would be cut below the cap.
        problems.check(
            self.max_pending_bytes >= self.max_line_bytes,
            &at.key("max_pending_bytes"),
            format!(
                "must be at least logs.max_line_bytes ({}) so one whole message fits",
                self.max_line_bytes
            ),
        );
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
        stages::config::build_all(
            &self.processors,
            &at.key("processors"),
            self.max_line_bytes,
            false,
            problems,
        );
        self.journal.validate(&at.key("journal"), problems);
        if let Some(files) = &self.files {
            sources::files::config::validate(files, &at.key("files"), problems);
            if problems.is_empty()
                && let Err(e) = sources::files::compile_all(files)
            {
                problems.add(&at.key("files"), e.to_string());
            }
        }
    }
}

/// Kubernetes metadata for pod log records: the node's metadata cache and how long a
/// file may wait for its pod (see [`stages::enrich`]).
#[derive(Clone)]
pub struct Enrichment {
    pub lookup: std::sync::Arc<dyn node_agent_core::kube::PodLookup>,
    pub settings: stages::enrich::EnrichSettings,
}

/// Runs the pipeline with `sinks` until `shutdown`, then drains in-flight batches (bounded
/// by `logs.drain_timeout`) and persists the final checkpoint. With `enrichment`, pod
/// records carry Kubernetes metadata.
pub async fn run(
    logs: LogsConfig,
    node: &NodeIdentity,
    sinks: Vec<std::sync::Arc<dyn Sink>>,
    enrichment: Option<Enrichment>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !logs.enabled {
        tracing::info!("container log shipping disabled (logs.enabled=false)");
        shutdown.cancelled().await;
        return Ok(());
    }
    let mut logs = logs;
    logs.resolve_auto();
    run_enriched(logs, node.node_name.clone(), sinks, enrichment, shutdown).await?;
    Ok(())
}

/// Ships the live records from `alerts` (runtime-security alerts) as a source of their own
/// beside [`run`]'s, with the same sinks and routes. Runs even with `logs.enabled` false
/// (that switch is about container logs).
pub async fn run_alerts(
    logs: &LogsConfig,
    sinks: Vec<std::sync::Arc<dyn Sink>>,
    alerts: std::sync::mpsc::Receiver<node_agent_core::record::LogRecord>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let router = std::sync::Arc::new(router::Router::new(sinks)?);
    let live = sources::live::LiveSource::new("security", SECURITY_CHECKPOINT_FILE, alerts);
    delivery::run_source(
        live,
        stages::Chain::new(Vec::new()),
        logs.delivery_settings(),
        router,
        shutdown,
    )
    .await
    .context("security alerts")?;
    Ok(())
}

/// Checkpoint of the security alert source (a count; nothing resumes from it).
pub const SECURITY_CHECKPOINT_FILE: &str = "security-alerts.json";

/// What can be checked before leading: the state dir is usable and every source's
/// checkpoint readable. Changes nothing.
pub fn preflight(config: &LogsConfig) -> anyhow::Result<()> {
    if !config.enabled {
        return Ok(());
    }
    // The same defaults `run` will pick, so their checkpoints are checked too.
    let mut resolved = config.clone();
    resolved.resolve_auto_quietly();
    let config = &resolved;
    checkpoint::CheckpointStore::<sources::tail::file_id::FileEntry>::new(
        &config.state_dir,
        sources::pods::CHECKPOINT_FILE,
    )
    .check()
    .with_context(|| format!("logs.state_dir {}", config.state_dir.display()))?;
    checkpoint::CheckpointStore::<sources::journal::JournalPosition>::new(
        &config.state_dir,
        sources::journal::CHECKPOINT_FILE,
    )
    .check()
    .with_context(|| format!("logs.state_dir {}", config.state_dir.display()))?;
    for group in sources::files::compile_all(config.files.as_deref().unwrap_or_default())? {
        checkpoint::CheckpointStore::<sources::tail::file_id::FileEntry>::new(
            &config.state_dir,
            &sources::files::checkpoint_file(&group),
        )
        .check()
        .with_context(|| format!("logs.state_dir {}", config.state_dir.display()))?;
    }
    Ok(())
}

/// Runs every configured source with `sinks` until `shutdown`, then drains (see [`run`]).
/// Each source has its own delivery side and checkpoint; the first one to fail stops the
/// others. One sink: one lane per source. Several: one lane per source and sink, each with
/// its own reader, queue and checkpoint, so a sink that is down or slow holds back only
/// itself (see [`delivery`]). Unset `enabled` switches count as off here ([`run`]
/// resolves them first).
pub async fn run_with_sinks(
    config: LogsConfig,
    node: String,
    sinks: Vec<std::sync::Arc<dyn Sink>>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    run_enriched(config, node, sinks, None, shutdown).await
}

/// [`run_with_sinks`] with Kubernetes metadata on pod records.
pub async fn run_enriched(
    config: LogsConfig,
    node: String,
    sinks: Vec<std::sync::Arc<dyn Sink>>,
    enrichment: Option<Enrichment>,
    shutdown: CancellationToken,
) -> anyhow::Result<RunSummary> {
    anyhow::ensure!(!sinks.is_empty(), "no sinks to deliver logs to");
    let stop = shutdown.child_token();
    let budget = budget::PendingBudget::new(config.max_pending_bytes);
    let mut runs: Vec<(String, tokio::task::JoinHandle<anyhow::Result<RunSummary>>)> = Vec::new();
    let pods = || {
        sources::pods::PodsSource::new(
            sources::pods::PodsLayout {
                pods_dir: config.pods_dir.clone(),
                filter: sources::pods::discovery::NamespaceFilter {
                    include: config.namespaces_include.clone(),
                    exclude: config.namespaces_exclude.clone(),
                },
                node: node.clone(),
                max_line_bytes: config.max_line_bytes,
            },
            config.tail_settings(&budget),
        )
    };
    config.spawn_lanes(pods, enrichment.as_ref(), &sinks, &stop, &mut runs)?;
    if config.journal.is_enabled() {
        let journal = || {
            sources::journal::JournalSource::new(
                config.journal.clone(),
                node.clone(),
                config.max_line_bytes,
            )
        };
        config.spawn_lanes(journal, None, &sinks, &stop, &mut runs)?;
    }
    for group in sources::files::compile_all(config.files.as_deref().unwrap_or_default())? {
        let files = || {
            sources::files::FilesSource::new(
                sources::files::FilesLayout {
                    compiled: group.clone(),
                    node: node.clone(),
                    max_line_bytes: config.max_line_bytes,
                },
                config.tail_settings(&budget),
            )
        };
        config.spawn_lanes(files, None, &sinks, &stop, &mut runs)?;
    }
    let mut total = RunSummary::default();
    let mut first_error: Option<anyhow::Error> = None;
    // Awaited in order, but a failure anywhere cancels `stop` from inside its task.
    for (name, handle) in runs {
        match handle.await {
            Ok(Ok(s)) => {
                total.batches_delivered += s.batches_delivered;
                total.records_delivered += s.records_delivered;
                total.batches_abandoned += s.batches_abandoned;
            }
            Ok(Err(e)) => {
                stop.cancel();
                first_error.get_or_insert(e.context(format!("log source {name}")));
            }
            Err(e) => {
                stop.cancel();
                first_error.get_or_insert(anyhow::anyhow!("log source {name} task: {e}"));
            }
        }
    }
    total.pending_peak_bytes = budget.peak();
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

impl LogsConfig {
    /// Decides the switches left unset: the journal runs when a journal directory exists;
    /// host files default to `/var/log/*.log` where there is no `pods_dir` (standalone).
    pub fn resolve_auto(&mut self) {
        let journal_unset = self.journal.enabled.is_none();
        let files_unset = self.files.is_none();
        self.resolve_auto_quietly();
        if journal_unset && self.journal.is_enabled() {
            tracing::info!(directories = ?self.journal.directories, "shipping the systemd journal");
        }
        if files_unset && self.files.as_ref().is_some_and(|f| !f.is_empty()) {
            tracing::info!(pods_dir = %self.pods_dir.display(), "no pod logs on this host; shipping /var/log/*.log");
        }
    }

    fn resolve_auto_quietly(&mut self) {
        self.journal.resolve_enabled();
        if self.files.is_none() {
            let standalone = !self.pods_dir.is_dir();
            self.files = Some(if standalone {
                vec![sources::files::FilesEntry {
                    paths: vec!["/var/log/*.log".into()],
                    exclude: Vec::new(),
                    format: sources::files::FileFormat::Plain,
                }]
            } else {
                Vec::new()
            });
        }
    }

    /// Runs the source `make` builds on one lane per sink (one lane in all for a single
    /// sink); a failure cancels `stop` for the others.
    fn spawn_lanes<S: source::Source>(
        &self,
        make: impl Fn() -> S,
        enrichment: Option<&Enrichment>,
        sinks: &[std::sync::Arc<dyn Sink>],
        stop: &CancellationToken,
        runs: &mut Vec<(String, tokio::task::JoinHandle<anyhow::Result<RunSummary>>)>,
    ) -> anyhow::Result<()> {
        let single = sinks.len() == 1;
        for (i, sink) in sinks.iter().enumerate() {
            let routed = if single {
                sinks.to_vec()
            } else {
                vec![std::sync::Arc::clone(sink)]
            };
            let mut router = router::Router::new(routed)?;
            // Records no sink takes are counted once per source, by its first lane.
            if i == 0 {
                router = router.counting_unrouted(sinks.to_vec());
            }
            let settings = delivery::DeliverySettings {
                lane: (!single).then(|| sink.name().to_string()),
                ..self.delivery_settings()
            };
            let source = make();
            let name = match &settings.lane {
                Some(lane) => format!("{} (sink {lane})", source::Source::name(&source)),
                None => source::Source::name(&source).to_string(),
            };
            let run = delivery::run_source(
                source,
                self.stages_for_lane(enrichment.cloned(), i == 0)?,
                settings,
                std::sync::Arc::new(router),
                stop.clone(),
            );
            let stop = stop.clone();
            runs.push((
                name,
                tokio::spawn(async move {
                    let result = run.await;
                    if result.is_err() {
                        stop.cancel();
                    }
                    result
                }),
            ));
            if single {
                break;
            }
        }
        Ok(())
    }

    /// The stage chain these settings ask for (`parse_json` first, then `processors`).
    pub fn stages(&self) -> Result<stages::Chain, node_agent_core::config::InvalidConfig> {
        self.stages_with(None)
    }

    /// The stage chain, with the enrich stage first when `enrichment` is given (so later
    /// stages can read pod metadata and `node-agent.io/*` hints).
    pub fn stages_with(
        &self,
        enrichment: Option<Enrichment>,
    ) -> Result<stages::Chain, node_agent_core::config::InvalidConfig> {
        self.stages_for_lane(enrichment, true)
    }

    /// The chain of one delivery lane; only a `counting` one counts drops, parse failures
    /// and redactions (every lane sees the same records).
    pub fn stages_for_lane(
        &self,
        enrichment: Option<Enrichment>,
        counting: bool,
    ) -> Result<stages::Chain, node_agent_core::config::InvalidConfig> {
        let mut leading: Vec<Box<dyn stages::Stage>> = Vec::new();
        if let Some(e) = enrichment {
            let settings = stages::enrich::EnrichSettings {
                counted: counting,
                ..e.settings
            };
            leading.push(Box::new(stages::enrich::Enrich::new(e.lookup, settings)));
        }
        if self.parse_json {
            leading.push(Box::new(stages::parse::Parser::legacy_json()));
        }
        stages::config::chain(
            leading,
            &self.processors,
            &KeyPath::root().key("logs").key("processors"),
            self.max_line_bytes,
            counting,
        )
    }

    fn tail_settings(
        &self,
        budget: &std::sync::Arc<budget::PendingBudget>,
    ) -> sources::tail::TailSettings {
        sources::tail::TailSettings {
            rescan_interval: self.rescan_interval,
            watched_rescan_interval: self.watched_rescan_interval,
            max_line_bytes: self.max_line_bytes,
            max_open_files: self.max_open_files,
            read_chunk_bytes: self.read_chunk_bytes,
            state_dir: self.state_dir.clone(),
            budget: std::sync::Arc::clone(budget),
        }
    }

    fn delivery_settings(&self) -> delivery::DeliverySettings {
        delivery::DeliverySettings {
            state_dir: self.state_dir.clone(),
            max_in_flight_batches: self.max_in_flight_batches,
            drain_timeout: self.drain_timeout,
            checkpoint_interval: self.checkpoint_interval,
            checkpoint_min_interval: self.checkpoint_min_interval,
            batches: source::BatchLimits {
                max_records: self.batch_max_records,
                max_bytes: self.batch_max_bytes,
                timeout: self.batch_timeout,
            },
            lane: None,
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
        let small_budget = LogsConfig {
            max_pending_bytes: 1000,
            max_line_bytes: 1024,
            ..LogsConfig::default()
        };
        let text = small_budget.validated().unwrap_err().to_string();
        assert!(
            text.contains("max_pending_bytes: must be at least"),
            "{text}"
        );
        let c: LogsConfig = serde_yaml_ng::from_str("max_pending_bytes: 1048576").unwrap();
        assert_eq!(c.max_pending_bytes, 1 << 20);
        assert_eq!(LogsConfig::default().max_pending_bytes, 64 << 20);
    }

    #[test]
    fn unset_sources_follow_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        std::fs::create_dir(&journal).unwrap();
        let standalone = LogsConfig {
            pods_dir: dir.path().join("no-pods"),
            journal: sources::journal::JournalSourceConfig {
                directories: vec![journal.clone()],
                ..Default::default()
            },
            ..LogsConfig::default()
        };
        let mut laptop = standalone.clone();
        laptop.resolve_auto();
        assert!(laptop.journal.is_enabled());
        let files = laptop.files.as_deref().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].paths, ["/var/log/*.log"]);

        let mut node = LogsConfig {
            pods_dir: dir.path().to_path_buf(),
            ..standalone.clone()
        };
        node.journal.directories = vec![dir.path().join("none")];
        node.resolve_auto();
        assert!(!node.journal.is_enabled());
        assert_eq!(node.files.as_deref(), Some(&[][..]));

        // What is set stays as set.
        let mut explicit = LogsConfig {
            files: Some(Vec::new()),
            ..standalone
        };
        explicit.journal.enabled = Some(false);
        explicit.resolve_auto();
        assert!(!explicit.journal.is_enabled());
        assert_eq!(explicit.files.as_deref(), Some(&[][..]));

        let yaml: LogsConfig = serde_yaml_ng::from_str(
            "journal: {include_units: [kubelet], start: tail}\nfiles:\n  - paths: [/var/log/kubernetes/audit/*.log]\n    format: audit\n",
        )
        .unwrap();
        yaml.validated().unwrap();
        let bad: LogsConfig =
            serde_yaml_ng::from_str("journal: {directories: [rel]}\nfiles: [{paths: [x]}]\n")
                .unwrap();
        let text = bad.validated().unwrap_err().to_string();
        assert!(text.contains("journal.directories[0]"), "{text}");
        assert!(text.contains("files[0].paths[0]"), "{text}");
    }

    #[test]
    fn processors_are_an_ordered_list_validated_with_key_paths() {
        let c: LogsConfig = serde_yaml_ng::from_str(
            "parse_json: true\nprocessors:\n  - type: multiline\n    detector: java\n    match: {namespace: prod-*}\n  - type: json\n",
        )
        .unwrap();
        c.validated().unwrap();
        assert_eq!(c.stages().unwrap().names(), ["json", "multiline", "json"]);
        assert_eq!(
            LogsConfig::default().stages().unwrap().names(),
            Vec::<&str>::new()
        );

        let bad: LogsConfig = serde_yaml_ng::from_str(
            "processors:\n  - type: json\n  - type: multiline\n    start: '(x'\n  - type: json\n    match: {pod: '/[/'}\n",
        )
        .unwrap();
        let mut problems = Problems::new();
        bad.validate(&KeyPath::root().key("logs"), &mut problems);
        let text = problems.into_result().unwrap_err().to_string();
        assert!(text.contains("2 problems"), "{text}");
        assert!(
            text.contains("logs.processors[1].start: invalid regex"),
            "{text}"
        );
        assert!(
            text.contains("logs.processors[2].match.pod: invalid regex"),
            "{text}"
        );
        assert!(bad.stages().is_err());

        for unknown in [
            "processors: [{type: sed}]",
            "processors: [{type: json, patern: x}]",
            "processors: [{detector: java}]",
        ] {
            assert!(
                serde_yaml_ng::from_str::<LogsConfig>(unknown).is_err(),
                "{unknown}"
            );
        }
    }

    #[test]
    fn only_the_first_lane_counts() {
        let c: LogsConfig =
            serde_yaml_ng::from_str("processors: [{type: filter, name: t-lane-drop}]").unwrap();
        let counter = metrics::metrics()
            .dropped_records
            .with_label_values(&["t-lane-drop"]);
        let before = counter.get();
        for (counting, want) in [(false, 0), (true, 1)] {
            let mut chain = c.stages_for_lane(None, counting).unwrap();
            let meta = std::sync::Arc::new(node_agent_core::record::SourceMeta {
                kind: node_agent_core::record::SourceKind::Pod,
                namespace: "ns".into(),
                pod: "p".into(),
                pod_uid: "u".into(),
                container: "c".into(),
                node: "n".into(),
                path: PathBuf::from("/x"),
                file_id: 1,
                kubernetes: None,
            });
            let r = node_agent_core::record::LogRecord::new(
                meta,
                0,
                node_agent_core::record::Stream::Stdout,
                0,
                "x".into(),
            );
            let mut shipped = 0;
            chain.process(r, &mut |_| shipped += 1);
            assert_eq!(shipped, 0, "dropped in every lane");
            assert_eq!(counter.get() - before, want);
        }
    }
}
