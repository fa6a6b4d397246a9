//! The pipeline for one event: process table → rules → rate limiter → alerts.
//!
//! ```text
//! Event ─► ProcessTable::observe ─► RuleSet::evaluate (rules indexed by evt.type)
//!            (fork/exec/exit,         │
//!             /proc on a miss)        ▼
//!                                  RateLimiter ─► Alert (Falco fields) ─► caller
//! ```
//!
//! The engine is synchronous and single-threaded: the caller (the agent's security
//! source) feeds it decoded ring-buffer records and routes the alerts (to the log
//! pipeline and to [`Outputs`](crate::alert::Outputs)).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::alert::ratelimit::Decision;
use crate::alert::{Alert, AlertMetrics, RateLimit, RateLimiter};
use crate::config::SecurityConfig;
use crate::event::{Event, EventArgs, EventType, EventTypeSet};
use crate::process::{
    BootstrapReport, CgroupResolver, ContainerMetadata, ProcSource, ProcessTable, TableConfig,
    UserDb,
};
use crate::rules::{EvalCtx, LoadErrors, RuleMatching, RuleSelection, RuleSet, RuleSetBuilder};

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("{0}")]
    Rules(#[from] LoadErrors),
    #[error("{}", .0.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("\n"))]
    Selection(Vec<(String, String)>),
}

/// Counters of the engine itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub events: u64,
    pub matches: u64,
    pub alerts: u64,
    pub suppressed: u64,
}

/// How times are printed at the start of an output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// `13:44:05.478445995` (Falco's default; UTC here).
    #[default]
    Clock,
    /// `2023-05-25T13:44:05.478445995+0000`.
    Iso8601,
}

pub struct SecurityEngine {
    rules: RuleSet,
    table: ProcessTable,
    users: UserDb,
    metadata: Arc<dyn ContainerMetadata>,
    metrics: Arc<dyn AlertMetrics>,
    limiter: RateLimiter,
    hostname: Arc<str>,
    matching: RuleMatching,
    time_format: TimeFormat,
    /// /proc for resolving relative open paths (`None`: left relative).
    proc_root: Option<PathBuf>,
    stats: EngineStats,
}

impl SecurityEngine {
    /// An engine from its parts (tests, benchmarks, other sources).
    pub fn new(
        rules: RuleSet,
        table: ProcessTable,
        users: UserDb,
        metadata: Arc<dyn ContainerMetadata>,
        metrics: Arc<dyn AlertMetrics>,
    ) -> SecurityEngine {
        SecurityEngine {
            rules,
            table,
            users,
            metadata,
            metrics,
            limiter: RateLimiter::new(None),
            hostname: Arc::from(default_hostname()),
            matching: RuleMatching::First,
            time_format: TimeFormat::Clock,
            proc_root: None,
            stats: EngineStats::default(),
        }
    }

    /// An engine as configured: rules loaded and selected, table on the host's /proc
    /// (not bootstrapped yet: call [`Self::bootstrap`]), limits set.
    pub fn from_config(
        config: &SecurityConfig,
        metadata: Arc<dyn ContainerMetadata>,
        metrics: Arc<dyn AlertMetrics>,
    ) -> Result<SecurityEngine, EngineError> {
        config.validate()?;
        let rules = load_rules(config)?;
        let source = ProcSource::new(&config.paths.proc);
        let table = ProcessTable::new(TableConfig {
            max_processes: config.process_table.max_processes,
            exited_linger: Duration::from_secs(config.process_table.exited_linger_secs),
        })
        .with_proc(source)
        .with_cgroups(CgroupResolver::new(
            config.paths.cgroup.clone(),
            config.paths.proc.clone(),
        ));
        let users = UserDb::load(&config.paths.rootfs);
        let mut engine = SecurityEngine::new(rules, table, users, metadata, metrics)
            .with_matching(config.rule_matching.into())
            .with_proc_root(&config.paths.proc);
        if let Some(h) = &config.hostname {
            engine.hostname = Arc::from(h.as_str());
        }
        if config.time_format_iso_8601 {
            engine.time_format = TimeFormat::Iso8601;
        }
        let limit = |rate: f64, burst: u32| RateLimit { rate, burst };
        let mut limiter = RateLimiter::new(
            config
                .rate_limit
                .enabled
                .then(|| limit(config.rate_limit.rate, config.rate_limit.burst)),
        );
        let mut unknown = Vec::new();
        for (rule, l) in &config.rate_limit.rules {
            if engine.rules.rule(rule).is_none() {
                unknown.push((
                    format!("security.rate_limit.rules.{rule}"),
                    format!("no rule is named '{rule}'"),
                ));
            }
            limiter.set_rule_limit(rule, Some(limit(l.rate, l.burst)));
        }
        if !unknown.is_empty() {
            return Err(EngineError::Selection(unknown));
        }
        engine.limiter = limiter;
        Ok(engine)
    }

    pub fn with_matching(mut self, matching: RuleMatching) -> SecurityEngine {
        self.matching = matching;
        self
    }

    pub fn with_hostname(mut self, hostname: &str) -> SecurityEngine {
        self.hostname = Arc::from(hostname);
        self
    }

    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> SecurityEngine {
        self.limiter = limiter;
        self
    }

    /// Relative open paths are resolved against `/proc/PID/cwd` (or the dirfd) here.
    pub fn with_proc_root(mut self, proc_root: &Path) -> SecurityEngine {
        self.proc_root = Some(proc_root.to_path_buf());
        self
    }

    pub fn bootstrap(&mut self) -> BootstrapReport {
        self.table.bootstrap()
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn table(&self) -> &ProcessTable {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut ProcessTable {
        &mut self.table
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Event types the kernel side must send: those the active rules can match, and
    /// those that keep the process table current.
    pub fn required_event_types(&self) -> EventTypeSet {
        let mut set = self
            .rules
            .active()
            .fold(EventTypeSet::EMPTY, |s, r| s.union(r.event_types));
        for t in [
            EventType::Execve,
            EventType::Execveat,
            EventType::Fork,
            EventType::Vfork,
            EventType::Clone,
            EventType::Clone3,
            EventType::Procexit,
        ] {
            set = set.with(t);
        }
        set
    }

    /// Runs one event through the pipeline; its alerts are appended to `alerts`.
    pub fn handle(&mut self, event: &mut Event, alerts: &mut Vec<Alert>) {
        self.stats.events += 1;
        if let (Some(root), EventArgs::Open(open)) = (&self.proc_root, &mut event.args)
            && !open.path.starts_with('/')
            && let Some(base) = relative_base(root, event.pid, open.dirfd)
        {
            open.path = format!("{}/{}", base.trim_end_matches('/'), open.path);
        }
        // proc.exe is the resolved executable (symlinks and relative names followed). The
        // kernel record leaves it empty: bpf_d_path is not allowed on tracepoints and a
        // dentry walk in eBPF costs more than one readlink here. The record arrives within
        // milliseconds of the exec, so /proc/PID/exe is that image unless the process
        // already exited or exec'd again; then the process table falls back to the filename.
        if let (Some(root), EventArgs::Exec(exec)) = (&self.proc_root, &mut event.args)
            && exec.exe_path.is_empty()
            && let Some(exe) = resolved_exe(root, event.pid)
        {
            exec.exe_path = exe;
        }
        self.table.observe(event);
        let ctx = EvalCtx::new(
            event,
            &self.table,
            &self.users,
            self.metadata.as_ref(),
            &self.hostname,
            self.stats.events,
        );
        let mut matched = Vec::new();
        self.rules.evaluate(&ctx, self.matching, &mut matched);
        for rule in matched {
            self.stats.matches += 1;
            match self.limiter.allow(&rule.name, event.ts_ns) {
                Decision::Suppress => {
                    self.stats.suppressed += 1;
                    self.metrics.suppressed(&rule.name);
                    continue;
                }
                Decision::Allow { .. } => {}
            }
            let mut output = String::with_capacity(256);
            output.push_str(&format_time(event.ts_ns, self.time_format));
            output.push_str(": ");
            output.push_str(rule.priority.as_str());
            output.push(' ');
            let mut fields = BTreeMap::new();
            rule.output().render(&ctx, &mut output, Some(&mut fields));
            crate::rules::output::add_container_fields(&ctx, &mut fields);
            // Falco's output starts with %evt.time, so its fields always include it.
            fields.insert("evt.time".to_string(), serde_json::Value::from(event.ts_ns));
            self.stats.alerts += 1;
            self.metrics.alert(&rule.name, rule.priority);
            alerts.push(Alert {
                rule: rule.name.clone(),
                priority: rule.priority,
                output,
                output_fields: fields,
                tags: rule.tags.clone(),
                time_ns: event.ts_ns,
                hostname: self.hostname.clone(),
                source: "syscall",
            });
        }
    }
}

/// Loads the rules a config names, with its lists and selection.
pub fn load_rules(config: &SecurityConfig) -> Result<RuleSet, EngineError> {
    let mut builder = RuleSetBuilder::new();
    if config.default_rules {
        builder = builder.defaults();
    }
    for path in &config.rules_files {
        builder = builder.path(path);
    }
    if config.default_rules {
        builder = builder
            .list(
                "k8s_api_server_addresses",
                config.kubernetes_api.resolved_addresses(),
            )
            .list(
                "k8s_api_server_ports",
                config
                    .kubernetes_api
                    .ports
                    .iter()
                    .map(u16::to_string)
                    .collect(),
            );
    }
    for (name, items) in &config.lists {
        builder = builder.list(name, items.clone());
    }
    let mut rules = builder.build()?;
    let selection = RuleSelection {
        enable: config.rules.enabled.clone(),
        disable: config.rules.disabled.clone(),
        enable_tags: config.rules.enabled_tags.clone(),
        disable_tags: config.rules.disabled_tags.clone(),
    };
    let errors = rules.select(&selection);
    if !errors.is_empty() {
        return Err(EngineError::Selection(
            errors
                .into_iter()
                .map(|e| {
                    let key = e
                        .key
                        .replacen("enable_tags", "enabled_tags", 1)
                        .replacen("disable_tags", "disabled_tags", 1)
                        .replacen("enable[", "enabled[", 1)
                        .replacen("disable[", "disabled[", 1);
                    (format!("security.rules.{key}"), e.message)
                })
                .collect(),
        ));
    }
    rules.set_min_priority(config.min_priority);
    Ok(rules)
}

/// The directory a relative path of `pid` is relative to.
fn relative_base(proc_root: &Path, pid: u32, dirfd: i32) -> Option<String> {
    let dir = proc_root.join(pid.to_string());
    let link = if dirfd == libc::AT_FDCWD || dirfd < 0 {
        dir.join("cwd")
    } else {
        dir.join("fd").join(dirfd.to_string())
    };
    std::fs::read_link(link)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with('/'))
}

/// `/proc/PID/exe` of `pid`, when it is still there and a path.
fn resolved_exe(proc_root: &Path, pid: u32) -> Option<String> {
    std::fs::read_link(proc_root.join(pid.to_string()).join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with('/'))
}

fn format_time(ts_ns: u64, format: TimeFormat) -> String {
    let secs = (ts_ns / 1_000_000_000) as i64;
    let nanos = (ts_ns % 1_000_000_000) as u32;
    let Some(t) = chrono::DateTime::from_timestamp(secs, nanos) else {
        return String::new();
    };
    match format {
        TimeFormat::Clock => t.format("%H:%M:%S%.9f").to_string(),
        TimeFormat::Iso8601 => t.format("%Y-%m-%dT%H:%M:%S%.9f+0000").to_string(),
    }
}

/// `$NODE_NAME` (the Downward API in a DaemonSet), else the host name.
pub fn default_hostname() -> String {
    if let Ok(node) = std::env::var("NODE_NAME")
        && !node.is_empty()
    {
        return node;
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        assert_eq!(
            format_time(1_685_022_245_478_445_995, TimeFormat::Clock),
            "13:44:05.478445995"
        );
        assert_eq!(
            format_time(1_685_022_245_478_445_995, TimeFormat::Iso8601),
            "2023-05-25T13:44:05.478445995+0000"
        );
    }

    #[test]
    fn relative_paths_resolve_through_proc() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            relative_base(Path::new("/proc"), std::process::id(), libc::AT_FDCWD),
            Some(cwd.to_string_lossy().into_owned())
        );
        assert_eq!(
            relative_base(Path::new("/proc"), u32::MAX - 3, libc::AT_FDCWD),
            None
        );
    }
}
