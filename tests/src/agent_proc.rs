//! Spawns and drives real `node-agent` processes for end-to-end tests.
//!
//! The binary is built once per test process through cargo itself (`escargot`), so it is
//! never stale and lands in the workspace target directory. Each agent logs JSON to a
//! captured stderr; tests wait on its events (e.g. "acquired leader lock") and read their
//! timestamps, and talk to its metrics endpoint on an ephemeral loopback port.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// Path of the freshly built `node-agent` binary (built on first use).
pub fn agent_binary() -> anyhow::Result<&'static Path> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BINARY.get_or_init(|| {
        let mut build = escargot::CargoBuild::new()
            .package("node-agent")
            .bin("node-agent")
            .manifest_path(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"));
        // The eBPF test run (.ci/steps/ebpf.sh) drives the agent as the image ships it.
        #[cfg(feature = "ebpf")]
        {
            build = build.features("ebpf");
        }
        // cargo sets these for the running test; build scripts that track them (ring
        // tracks CARGO_MANIFEST_DIR) would otherwise see a change and rebuild every time.
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(is_per_crate_cargo_var) {
                build = build.env_remove(key);
            }
        }
        build
            .run()
            .map(|run| run.path().to_path_buf())
            .map_err(|e| format!("building node-agent: {e}"))
    });
    match built {
        Ok(path) => Ok(path.as_path()),
        Err(err) => bail!("{err}"),
    }
}

fn is_per_crate_cargo_var(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        )
}

/// Directories and files shared by the agents of one test (as the hostPaths of a node).
pub struct AgentDirs {
    pub root: tempfile::TempDir,
    pub pods_dir: PathBuf,
    pub state_dir: PathBuf,
    pub lock_file: PathBuf,
    pub sink_path: PathBuf,
}

impl AgentDirs {
    pub fn new() -> anyhow::Result<Self> {
        let root = tempfile::tempdir().context("creating temp dir")?;
        let pods_dir = root.path().join("pods");
        std::fs::create_dir_all(&pods_dir)?;
        Ok(Self {
            pods_dir,
            state_dir: root.path().join("state"),
            lock_file: root.path().join("run/leader.lock"),
            sink_path: root.path().join("sink/out.jsonl"),
            root,
        })
    }

    /// Writes a config file for these directories; `logs_extra` is added (indented) to
    /// the `logs:` section.
    pub fn write_config(&self, logs_extra: &[&str]) -> anyhow::Result<PathBuf> {
        let mut yaml = format!(
            "logs:\n  pods_dir: {:?}\n  state_dir: {:?}\n",
            self.pods_dir, self.state_dir
        );
        for line in logs_extra {
            yaml.push_str(&format!("  {line}\n"));
        }
        yaml.push_str(&format!(
            "sinks:\n  - type: file\n    path: {:?}\nhandover:\n  lock_file: {:?}\n",
            self.sink_path, self.lock_file
        ));
        let path = self.root.path().join("config.yaml");
        std::fs::write(&path, yaml).context("writing config")?;
        Ok(path)
    }
}

/// One structured log line of an agent.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub timestamp: DateTime<Utc>,
    pub message: String,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl LogEvent {
    fn parse(line: &str) -> Option<Self> {
        let serde_json::Value::Object(fields) = serde_json::from_str(line).ok()? else {
            return None;
        };
        let timestamp = DateTime::parse_from_rfc3339(fields.get("timestamp")?.as_str()?)
            .ok()?
            .with_timezone(&Utc);
        let message = fields.get("message")?.as_str()?.to_string();
        Some(Self {
            timestamp,
            message,
            fields,
        })
    }
}

#[derive(Default)]
struct Output {
    lines: Mutex<Vec<String>>,
    changed: Notify,
    closed: std::sync::atomic::AtomicBool,
}

/// A running `node-agent` process. Dropping it SIGKILLs the process if still running.
pub struct AgentProc {
    pub name: String,
    child: Child,
    pid: Pid,
    output: Arc<Output>,
    pub addr: std::net::SocketAddr,
    http: reqwest::Client,
}

impl AgentProc {
    /// Starts an agent with `config` and waits until `/readyz` answers 200.
    pub async fn start(name: &str, config: &Path) -> anyhow::Result<Self> {
        let binary = agent_binary()?;
        let mut child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .args([
                "--web.listen-address=127.0.0.1:0",
                "--collector.disable-defaults",
                "--collector.loadavg",
                "--log.format=json",
                "--log.level=info",
                "--runtime.worker-threads=1",
            ])
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", "node-agent-test")
            .env("NODE_NAME", "test-node")
            .env_remove("NODE_AGENT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let pid = Pid::from_raw(child.id().context("child pid")? as i32);
        let stderr = child.stderr.take().context("child stderr")?;
        let output = Arc::new(Output::default());
        let sink = Arc::clone(&output);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lines.lock().unwrap().push(line);
                sink.changed.notify_waiters();
            }
            sink.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            sink.changed.notify_waiters();
        });
        let mut agent = Self {
            name: name.to_string(),
            child,
            pid,
            output,
            addr: ([127, 0, 0, 1], 0).into(),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        let serving = agent
            .wait_for_event("serving metrics", Duration::from_secs(20))
            .await?;
        let address = serving
            .fields
            .get("address")
            .and_then(|a| a.as_str())
            .context("serving metrics event without address")?;
        let address = address
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .parse()
            .with_context(|| format!("parsing address {address:?}"))?;
        agent.addr = address;
        agent.wait_ready(Duration::from_secs(10)).await?;
        Ok(agent)
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// GET `path` on the metrics endpoint: (status, body).
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let resp = self
            .http
            .get(format!("http://{}{}", self.addr, path))
            .send()
            .await
            .with_context(|| format!("GET {path} on {}", self.name))?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.get("/readyz").await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready after {timeout:?}\n{}",
                    self.name,
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `/metrics` exposition text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let (status, body) = self.get("/metrics").await?;
        if status != 200 {
            bail!("/metrics on {} answered {status}", self.name);
        }
        Ok(body)
    }

    /// Value of an unlabelled sample in `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<Option<f64>> {
        Ok(sample(&self.metrics().await?, name))
    }

    /// Every JSON log event so far.
    pub fn events(&self) -> Vec<LogEvent> {
        let lines = self.output.lines.lock().unwrap();
        lines.iter().filter_map(|l| LogEvent::parse(l)).collect()
    }

    /// The first event whose message is `message`, waiting up to `timeout` for it.
    pub async fn wait_for_event(
        &self,
        message: &str,
        timeout: Duration,
    ) -> anyhow::Result<LogEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.output.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(event) = self.events().into_iter().find(|e| e.message == message) {
                return Ok(event);
            }
            if self.output.closed.load(std::sync::atomic::Ordering::SeqCst) {
                bail!(
                    "{} exited before logging {message:?}\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "{} did not log {message:?} within {timeout:?}\n{}",
                    self.name,
                    self.log_text()
                );
            }
        }
    }

    /// All captured stderr, for failure messages.
    pub fn log_text(&self) -> String {
        self.output.lines.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGKILL (a crash or OOM kill).
    pub fn kill(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGKILL)
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        // The pid stays ours until we reap the child in `wait`.
        kill(self.pid, signal).with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => bail!(
                "{} still running after {timeout:?}\n{}",
                self.name,
                self.log_text()
            ),
        }
    }
}

/// Value of an unlabelled sample `name` in exposition text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (metric, value) = l.split_once(' ')?;
        (metric == name).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_events() {
        let text = "# HELP node_agent_leader x\nnode_agent_leader 1\nnode_agent_leader_drain_seconds 0.25\n";
        assert_eq!(sample(text, "node_agent_leader"), Some(1.0));
        assert_eq!(sample(text, "node_agent_leader_drain_seconds"), Some(0.25));
        assert_eq!(sample(text, "node_agent_handover_total"), None);
        let event = LogEvent::parse(
            r#"{"timestamp":"2026-11-23T01:06:41.123456Z","level":"INFO","message":"released leader lock","drain_seconds":0.1}"#,
        )
        .unwrap();
        assert_eq!(event.message, "released leader lock");
        assert_eq!(event.timestamp.timestamp_subsec_micros(), 123456);
        assert!(LogEvent::parse("not json").is_none());
    }
}
