//! The leader's runtime security: ring-buffer records (`syscalls_common::wire`) →
//! `node-agent-security` (process table → Falco rules → rate limit) → alerts, to the Falco
//! JSON outputs of `security.outputs` and, as log records of source `security`, to the log
//! pipeline (same sinks and routes as container logs; `rule` and `priority` as fields).
//!
//! The engine is synchronous, so the reader is one OS thread that polls the ring buffer.
//! Handing alerts to the log pipeline never blocks capture: the channel is bounded and an
//! alert that does not fit is counted in `node_agent_security_alerts_dropped_total`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, OnceLock};

use prometheus::{IntCounter, IntCounterVec, Opts};

use node_agent_core::record::{LogRecord, SourceKind, SourceMeta, Stream};
use node_agent_security::alert::{
    ALERTS_SUPPRESSED_TOTAL, ALERTS_SUPPRESSED_TOTAL_HELP, ALERTS_TOTAL, ALERTS_TOTAL_HELP, Alert,
    AlertMetrics, OUTPUT_ERRORS_TOTAL, OUTPUT_ERRORS_TOTAL_HELP, Priority,
};
use node_agent_security::config::SecurityConfig;

/// What the leader's security capture needs.
#[derive(Clone)]
pub struct SecurityOptions {
    pub config: SecurityConfig,
    /// Where alerts enter the log pipeline (`None`: Falco outputs only).
    pub alerts: Option<AlertSender>,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels)
        // The names and labels are constants of this file.
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
    node_agent_core::telemetry::register(counter)
}

fn counter(name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    node_agent_core::telemetry::register(counter)
}

/// The engine's counters on the agent's registry.
pub struct PromMetrics {
    alerts: IntCounterVec,
    suppressed: IntCounterVec,
    output_errors: IntCounterVec,
}

impl PromMetrics {
    /// The process-wide instance (the registry takes each metric once).
    pub fn global() -> Arc<PromMetrics> {
        static METRICS: OnceLock<Arc<PromMetrics>> = OnceLock::new();
        METRICS
            .get_or_init(|| {
                Arc::new(PromMetrics {
                    alerts: counter_vec(ALERTS_TOTAL, ALERTS_TOTAL_HELP, &["rule", "priority"]),
                    suppressed: counter_vec(
                        ALERTS_SUPPRESSED_TOTAL,
                        ALERTS_SUPPRESSED_TOTAL_HELP,
                        &["rule"],
                    ),
                    output_errors: counter_vec(
                        OUTPUT_ERRORS_TOTAL,
                        OUTPUT_ERRORS_TOTAL_HELP,
                        &["output", "reason"],
                    ),
                })
            })
            .clone()
    }
}

impl AlertMetrics for PromMetrics {
    fn alert(&self, rule: &str, priority: Priority) {
        self.alerts
            .with_label_values(&[rule, priority.as_str()])
            .inc();
    }
    fn suppressed(&self, rule: &str) {
        self.suppressed.with_label_values(&[rule]).inc();
    }
    fn output_error(&self, output: &str, reason: &'static str) {
        self.output_errors
            .with_label_values(&[output, reason])
            .inc();
    }
}

/// Counters of the capture itself.
#[cfg_attr(
    not(feature = "ebpf"),
    allow(dead_code, reason = "the reader needs eBPF")
)]
pub(crate) struct CaptureMetrics {
    pub records: IntCounter,
    pub decode_errors: IntCounter,
    pub alerts_dropped: IntCounter,
}

pub(crate) fn capture_metrics() -> &'static CaptureMetrics {
    static METRICS: OnceLock<CaptureMetrics> = OnceLock::new();
    METRICS.get_or_init(|| CaptureMetrics {
        records: counter(
            "node_agent_security_records_total",
            "Kernel security records read from the ring buffer (leader only).",
        ),
        decode_errors: counter(
            "node_agent_security_record_errors_total",
            "Kernel security records that did not decode (wrong size or kind).",
        ),
        alerts_dropped: counter(
            "node_agent_security_alerts_dropped_total",
            "Alerts not handed to the log pipeline because its queue was full.",
        ),
    })
}

/// The log pipeline's end of the alert channel: a live source without positions (an alert
/// is not re-read after a restart; the Falco outputs are the other copy).
#[derive(Clone)]
pub struct AlertSender {
    tx: SyncSender<LogRecord>,
    meta: Arc<SourceMeta>,
    seq: Arc<AtomicU64>,
}

impl AlertSender {
    /// A bounded channel of `capacity` records; the receiver goes to the log pipeline.
    pub fn channel(capacity: usize, node: &str) -> (AlertSender, Receiver<LogRecord>) {
        let (tx, rx) = sync_channel(capacity.max(1));
        // Unique per run, so (file_id, offset) names an alert uniquely across restarts too
        // (the Elasticsearch sink derives `_id` from it).
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let meta = SourceMeta {
            kind: SourceKind::Security,
            namespace: String::new(),
            pod: String::new(),
            pod_uid: String::new(),
            container: String::new(),
            node: node.to_string(),
            path: PathBuf::from("security"),
            file_id: run,
            kubernetes: None,
        };
        (
            AlertSender {
                tx,
                meta: Arc::new(meta),
                seq: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Hands one alert over without blocking; a full queue drops it (counted).
    pub fn send(&self, alert: &Alert) -> bool {
        let offset = self.seq.fetch_add(1, Ordering::Relaxed);
        let record = alert_record(alert, Arc::clone(&self.meta), offset);
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                capture_metrics().alerts_dropped.inc();
                false
            }
        }
    }
}

/// An alert as a log record: the Falco output line as the message; `rule`, `priority`,
/// `tags`, `hostname`, `source` and `output_fields` as fields (what Falcosidekick's Loki
/// and Elasticsearch outputs carry).
pub fn alert_record(alert: &Alert, meta: Arc<SourceMeta>, offset: u64) -> LogRecord {
    let mut fields = serde_json::Map::new();
    fields.insert("rule".into(), alert.rule.as_ref().into());
    fields.insert("priority".into(), alert.priority.as_str().into());
    fields.insert(
        "tags".into(),
        serde_json::Value::Array(alert.tags.iter().map(|t| t.as_str().into()).collect()),
    );
    fields.insert("hostname".into(), alert.hostname.as_ref().into());
    fields.insert("source".into(), alert.source.into());
    let output_fields: serde_json::Map<String, serde_json::Value> = alert
        .output_fields
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    fields.insert("output_fields".into(), output_fields.into());
    let mut record = LogRecord::new(
        meta,
        i64::try_from(alert.time_ns).unwrap_or(i64::MAX),
        Stream::Stdout,
        offset,
        alert.output.clone(),
    );
    record.fields = Some(fields);
    record
}

/// `security.paths.cgroup` as the engine should use it: the configured directory when it
/// is the cgroup v2 root, else the v2 root found on this host (hybrid hosts mount v2 at
/// `/sys/fs/cgroup/unified`, and /sys/fs/cgroup is then a tmpfs of v1 hierarchies, whose
/// inodes are not the cgroup ids the kernel side reports).
pub fn with_v2_cgroup_root(
    mut config: SecurityConfig,
    paths: &node_agent_core::host::HostPaths,
) -> SecurityConfig {
    if !config.paths.cgroup.join("cgroup.controllers").is_file()
        && let Some(root) = crate::cgroups::detect_v2_root(paths)
    {
        tracing::debug!(configured = %config.paths.cgroup.display(), using = %root.display(),
            "security.paths.cgroup is not the cgroup v2 root");
        config.paths.cgroup = root;
    }
    config
}

/// The Falco outputs `security.outputs` enables.
pub fn build_outputs(
    config: &SecurityConfig,
    runtime: &tokio::runtime::Handle,
    metrics: Arc<dyn AlertMetrics>,
) -> anyhow::Result<node_agent_security::alert::Outputs> {
    use anyhow::Context as _;
    use node_agent_security::alert::outputs::{FileOutput, HttpOutput, HttpSettings, WriterOutput};
    let mut outputs = node_agent_security::alert::Outputs::new(Arc::clone(&metrics));
    let o = &config.outputs;
    if o.stdout.enabled {
        outputs.push(Box::new(WriterOutput::stdout()));
    }
    if o.file.enabled {
        outputs.push(Box::new(FileOutput::new(&o.file.path, o.file.keep_alive)));
    }
    if o.http.enabled {
        let url = o
            .http
            .url
            .parse()
            .with_context(|| format!("security.outputs.http.url {:?}", o.http.url))?;
        let settings = HttpSettings {
            url,
            timeout: std::time::Duration::from_millis(o.http.timeout_ms),
            queue_capacity: o.http.queue_capacity,
            max_retries: o.http.max_retries,
            retry_backoff: std::time::Duration::from_millis(o.http.retry_backoff_ms),
            headers: o
                .http
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        outputs.push(Box::new(
            HttpOutput::start(settings, runtime, metrics).context("security.outputs.http")?,
        ));
    }
    Ok(outputs)
}

/// Alerts of one capture run by rule (tests and the bench read them).
pub type AlertCounts = HashMap<String, u64>;

#[cfg(feature = "ebpf")]
pub use capture::{Capture, CaptureHandle};

#[cfg(feature = "ebpf")]
pub mod capture {
    use std::os::fd::AsRawFd as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;

    use anyhow::Context as _;
    use aya::maps::{Map, MapData, RingBuf};
    use node_agent_security::alert::{Alert, AlertMetrics, Outputs};
    use node_agent_security::engine::SecurityEngine;
    use node_agent_security::event::BootClock;
    use node_agent_security::event::wire;
    use node_agent_security::process::{ContainerMetadata, NoMetadata};

    use super::{AlertSender, capture_metrics};

    /// Sees every alert (tests, benchmarks).
    pub type AlertObserver = Box<dyn FnMut(&Alert) + Send>;
    /// Sees every decoded event before the engine (tests).
    pub type EventObserver = Box<dyn FnMut(&node_agent_security::event::Event) + Send>;

    /// Everything between the ring buffer and the alert consumers.
    pub struct Capture {
        pub engine: SecurityEngine,
        pub outputs: Outputs,
        pub alerts: Option<AlertSender>,
        /// Every alert also goes here (tests, benchmarks).
        pub observer: Option<AlertObserver>,
        /// Every decoded event goes here before the engine (tests).
        pub event_observer: Option<EventObserver>,
        clock: BootClock,
    }

    impl Capture {
        /// The engine as `config` says (rules loaded, process table bootstrapped from
        /// /proc) with its outputs.
        pub fn from_config(
            config: &node_agent_security::config::SecurityConfig,
            runtime: &tokio::runtime::Handle,
            alerts: Option<AlertSender>,
        ) -> anyhow::Result<Capture> {
            Self::with_metadata(config, runtime, alerts, Arc::new(NoMetadata))
        }

        /// [`Self::from_config`] with the containers' metadata (`container.image`,
        /// `k8s.*`), from the Kubernetes metadata cache in the agent.
        pub fn with_metadata(
            config: &node_agent_security::config::SecurityConfig,
            runtime: &tokio::runtime::Handle,
            alerts: Option<AlertSender>,
            metadata: Arc<dyn ContainerMetadata>,
        ) -> anyhow::Result<Capture> {
            let metrics: Arc<dyn AlertMetrics> = super::PromMetrics::global();
            let engine = SecurityEngine::from_config(config, metadata, metrics.clone())
                .context("security rules and settings")?;
            let outputs = super::build_outputs(config, runtime, metrics)?;
            Ok(Capture {
                engine,
                outputs,
                alerts,
                observer: None,
                event_observer: None,
                clock: BootClock::now().context("reading the boot clock")?,
            })
        }

        /// One ring-buffer record through the engine; alerts to every consumer.
        pub fn handle_record(&mut self, bytes: &[u8], alerts: &mut Vec<Alert>) {
            let metrics = capture_metrics();
            metrics.records.inc();
            let mut event = match wire::decode(bytes, &self.clock) {
                Ok(event) => event,
                Err(err) => {
                    metrics.decode_errors.inc();
                    tracing::debug!(error = %err, "undecodable security record");
                    return;
                }
            };
            if let Some(observer) = &mut self.event_observer {
                observer(&event);
            }
            alerts.clear();
            self.engine.handle(&mut event, alerts);
            for alert in alerts.iter() {
                self.outputs.emit(alert);
                // The status page lists the latest few.
                node_agent_core::status::record_alert(node_agent_core::status::AlertSummary {
                    time_unix_nanos: i64::try_from(alert.time_ns).unwrap_or(i64::MAX),
                    rule: alert.rule.to_string(),
                    priority: alert.priority.as_str().to_owned(),
                    output: alert.output.clone(),
                });
                if let Some(tx) = &self.alerts {
                    tx.send(alert);
                }
                if let Some(observer) = &mut self.observer {
                    observer(alert);
                }
            }
        }
    }

    /// The reader thread; dropping the handle does not stop it, [`CaptureHandle::stop`] does.
    pub struct CaptureHandle {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<Capture>>,
    }

    impl CaptureHandle {
        /// Stops the reader after it drained what is in the ring buffer; returns the capture.
        pub fn stop(mut self) -> Option<Capture> {
            self.stop.store(true, Ordering::Release);
            self.thread.take().and_then(|t| t.join().ok())
        }
    }

    /// Starts the reader of `map` (the `EVENTS` ring buffer) on its own thread.
    pub fn spawn(map: Map, mut capture: Capture) -> anyhow::Result<CaptureHandle> {
        let mut ring: RingBuf<MapData> =
            RingBuf::try_from(map).context("EVENTS is not a ring buffer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("security".into())
            .spawn(move || {
                let report = capture.engine.bootstrap();
                tracing::info!(?report, "security process table bootstrapped from /proc");
                let mut alerts = Vec::new();
                loop {
                    while let Some(item) = ring.next() {
                        capture.handle_record(&item, &mut alerts);
                    }
                    if stopped.load(Ordering::Acquire) {
                        return capture;
                    }
                    let mut pfd = libc::pollfd {
                        fd: ring.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; the fd is owned by `ring`, alive here.
                    unsafe { libc::poll(&mut pfd, 1, 100) };
                }
            })
            .context("starting the security reader thread")?;
        Ok(CaptureHandle {
            stop,
            thread: Some(thread),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        let mut output_fields = std::collections::BTreeMap::new();
        output_fields.insert("proc.name".to_string(), serde_json::Value::from("bash"));
        Alert {
            rule: Arc::from("Terminal shell in container"),
            priority: Priority::Notice,
            output: "12:00:00.000000000: Notice A shell".into(),
            output_fields,
            tags: Arc::from(vec!["container".to_string(), "shell".to_string()]),
            time_ns: 1_700_000_000_000_000_000,
            hostname: Arc::from("node-1"),
            source: "syscall",
        }
    }

    #[test]
    fn alerts_become_security_records_with_rule_and_priority_fields() {
        let (tx, rx) = AlertSender::channel(1, "node-1");
        assert!(tx.send(&alert()));
        let record = rx.try_recv().expect("one record");
        assert_eq!(record.source.kind, SourceKind::Security);
        assert_eq!(record.source.node, "node-1");
        assert_eq!(record.message, "12:00:00.000000000: Notice A shell");
        assert_eq!(record.timestamp_nanos, 1_700_000_000_000_000_000);
        let fields = record.fields.expect("fields");
        assert_eq!(fields["rule"], "Terminal shell in container");
        assert_eq!(fields["priority"], "Notice");
        assert_eq!(fields["output_fields"]["proc.name"], "bash");
        assert_eq!(fields["tags"], serde_json::json!(["container", "shell"]));
        // Bounded: a second alert while the first is queued is dropped and counted.
        let before = capture_metrics().alerts_dropped.get();
        assert!(tx.send(&alert()));
        assert!(!tx.send(&alert()));
        assert_eq!(capture_metrics().alerts_dropped.get(), before + 1);
        // Offsets are a sequence: unique ids per run.
        assert_eq!(rx.try_recv().expect("second").offset, 1);
    }
}

/// The kernel side's records (`syscalls_common::wire`, what the eBPF program writes) and
/// the security crate's decoder (`node_agent_security::event::wire`) must agree byte for
/// byte: same sizes, same field offsets.
#[cfg(test)]
mod contract {
    use core::mem::{offset_of, size_of};

    use node_agent_security::event::wire as user;
    use syscalls_common::wire as kernel;

    macro_rules! same_layout {
        ($t:ident: $($field:ident),+ $(,)?) => {{
            assert_eq!(size_of::<kernel::$t>(), size_of::<user::$t>(), stringify!($t));
            $(assert_eq!(
                offset_of!(kernel::$t, $field),
                offset_of!(user::$t, $field),
                concat!(stringify!($t), ".", stringify!($field))
            );)+
        }};
    }

    #[test]
    fn kernel_records_match_the_decoder() {
        same_layout!(RecordHeader: kind, flags, size, ts_boot_ns, cgroup_id, pid, tid, ppid, uid,
            gid, loginuid, res, comm);
        same_layout!(ExecRecord: header, tty, argc, args_len, cap_effective, filename, exe_path,
            args);
        same_layout!(OpenRecord: header, dirfd, flags, mode, path);
        same_layout!(SocketRecord: header, fd, family, protocol, local_port, remote_port,
            local_addr, remote_addr, unix_path);
        same_layout!(PtraceRecord: header, request, target_pid);
        same_layout!(ModuleRecord: header, fd, flags, path, params);
        same_layout!(MountRecord: header, flags, source, target, fstype);
        same_layout!(SetIdRecord: header, ids);
        same_layout!(BpfRecord: header, cmd, prog_type, prog_name);
        same_layout!(UnshareRecord: header, flags);
        same_layout!(SetnsRecord: header, fd, nstype);
        same_layout!(ForkRecord: header, child_pid, child_tid, clone_flags);
        same_layout!(ExitRecord: header, status);
        use node_agent_security::event::EventType;
        use syscalls_common::wire::kind;
        for (code, t) in [
            (kind::EXECVE, EventType::Execve),
            (kind::OPENAT, EventType::Openat),
            (kind::CONNECT, EventType::Connect),
            (kind::PTRACE, EventType::Ptrace),
            (kind::FINIT_MODULE, EventType::FinitModule),
            (kind::MOUNT, EventType::Mount),
            (kind::SETRESGID, EventType::Setresgid),
            (kind::BPF, EventType::Bpf),
            (kind::UNSHARE, EventType::Unshare),
            (kind::SETNS, EventType::Setns),
            (kind::CLONE, EventType::Clone),
            (kind::PROCEXIT, EventType::Procexit),
        ] {
            assert_eq!(code, t as u16, "{t:?}");
        }
        // Every kind fits the u8 of the FILTER map.
        assert!(EventType::ALL.iter().all(|t| (*t as u16) < 256));
    }
}
