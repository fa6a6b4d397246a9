//! Where Falco JSON lines go: a writer (stdout), a file, an HTTP webhook (Falcosidekick's
//! `POST /` takes exactly Falco's JSON).
//!
//! Outputs never block the engine for long: the file output writes one line per alert;
//! the HTTP output hands lines to a bounded queue drained by a task, which retries
//! connection errors, 429 and 5xx with backoff. A full queue drops the alert, counted as
//! `dropped`; an alert that fails after its retries is counted as `error`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Alert, AlertMetrics};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{output}: {source}")]
    Io {
        output: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: queue full, alert dropped")]
    Dropped(String),
    #[error("{output}: {message}")]
    Setup { output: String, message: String },
}

impl OutputError {
    fn reason(&self) -> &'static str {
        match self {
            OutputError::Dropped(_) => "dropped",
            _ => "error",
        }
    }
}

/// One destination of alert lines.
pub trait AlertOutput: Send {
    /// Name in metrics and logs.
    fn name(&self) -> &str;
    /// Delivers (or queues) one JSON line (without its newline).
    fn emit(&mut self, line: &str) -> Result<(), OutputError>;
}

/// Lines to any writer; [`WriterOutput::stdout`] is Falco's `stdout_output`.
pub struct WriterOutput<W: Write + Send> {
    name: String,
    writer: W,
}

impl WriterOutput<std::io::Stdout> {
    pub fn stdout() -> WriterOutput<std::io::Stdout> {
        WriterOutput::new("stdout", std::io::stdout())
    }
}

impl<W: Write + Send> WriterOutput<W> {
    pub fn new(name: &str, writer: W) -> WriterOutput<W> {
        WriterOutput {
            name: name.to_string(),
            writer,
        }
    }

    pub fn into_inner(self) -> W {
        self.writer
    }
}

impl<W: Write + Send> AlertOutput for WriterOutput<W> {
    fn name(&self) -> &str {
        &self.name
    }

    fn emit(&mut self, line: &str) -> Result<(), OutputError> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.writer
            .write_all(&buf)
            .and_then(|()| self.writer.flush())
            .map_err(|source| OutputError::Io {
                output: self.name.clone(),
                source,
            })
    }
}

/// Lines appended to a file (Falco's `file_output`). Without `keep_alive` the file is
/// opened for each alert, so a rotated file is picked up at once; with it, the file stays
/// open until [`FileOutput::reopen`].
pub struct FileOutput {
    path: PathBuf,
    keep_alive: bool,
    file: Option<File>,
}

impl FileOutput {
    pub fn new(path: &Path, keep_alive: bool) -> FileOutput {
        FileOutput {
            path: path.to_path_buf(),
            keep_alive,
            file: None,
        }
    }

    /// Closes the file; the next alert opens it again (after log rotation).
    pub fn reopen(&mut self) {
        self.file = None;
    }
}

impl AlertOutput for FileOutput {
    fn name(&self) -> &str {
        "file"
    }

    fn emit(&mut self, line: &str) -> Result<(), OutputError> {
        let io = |source| OutputError::Io {
            output: format!("file {}", self.path.display()),
            source,
        };
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(io)?,
            );
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        // One write of the whole line: O_APPEND keeps concurrent writers' lines whole.
        let result = match self.file.as_mut() {
            Some(file) => file.write_all(&buf),
            None => Ok(()),
        };
        if result.is_err() || !self.keep_alive {
            self.file = None;
        }
        result.map_err(io)
    }
}

/// Settings of the HTTP output.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub url: reqwest::Url,
    pub timeout: Duration,
    /// Lines waiting for delivery at most.
    pub queue_capacity: usize,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First retry delay (doubles each time, up to 10 s).
    pub retry_backoff: Duration,
    pub headers: Vec<(String, String)>,
}

/// POSTs each line to a webhook (Falco's `http_output`; Falcosidekick's `/`).
pub struct HttpOutput {
    name: String,
    tx: Option<mpsc::Sender<String>>,
    worker: Option<tokio::task::JoinHandle<()>>,
}

impl HttpOutput {
    /// Starts the delivery task on `runtime`.
    pub fn start(
        settings: HttpSettings,
        runtime: &tokio::runtime::Handle,
        metrics: Arc<dyn AlertMetrics>,
    ) -> Result<HttpOutput, OutputError> {
        let name = "http".to_string();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/json"),
        );
        for (k, v) in &settings.headers {
            let key = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                OutputError::Setup {
                    output: name.clone(),
                    message: format!("header name {k:?}: {e}"),
                }
            })?;
            let value =
                reqwest::header::HeaderValue::from_str(v).map_err(|e| OutputError::Setup {
                    output: name.clone(),
                    message: format!("header {k}: {e}"),
                })?;
            headers.insert(key, value);
        }
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("node-agent/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(|e| OutputError::Setup {
                output: name.clone(),
                message: e.to_string(),
            })?;
        let (tx, mut rx) = mpsc::channel::<String>(settings.queue_capacity.max(1));
        let worker_name = name.clone();
        let worker = runtime.spawn(async move {
            while let Some(line) = rx.recv().await {
                if let Err(message) = post(&client, &settings, line).await {
                    metrics.output_error(&worker_name, "error");
                    tracing::warn!(output = %worker_name, error = %message, "alert not delivered");
                }
            }
        });
        Ok(HttpOutput {
            name,
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    /// Stops accepting alerts and waits (at most `timeout`) for the queued ones.
    pub async fn close(mut self, timeout: Duration) {
        self.tx = None;
        if let Some(worker) = self.worker.take() {
            let _ = tokio::time::timeout(timeout, worker).await;
        }
    }
}

async fn post(
    client: &reqwest::Client,
    settings: &HttpSettings,
    line: String,
) -> Result<(), String> {
    let mut delay = settings.retry_backoff;
    let mut attempt = 0;
    loop {
        let outcome = client
            .post(settings.url.clone())
            .body(line.clone())
            .send()
            .await;
        let retryable = match outcome {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                if !(status.is_server_error() || status.as_u16() == 429) {
                    return Err(format!("{} answered {status}", settings.url));
                }
                format!("{} answered {status}", settings.url)
            }
            Err(e) => format!("{}: {e}", settings.url),
        };
        if attempt >= settings.max_retries {
            return Err(format!("{retryable} (after {} attempts)", attempt + 1));
        }
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

impl AlertOutput for HttpOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn emit(&mut self, line: &str) -> Result<(), OutputError> {
        let Some(tx) = &self.tx else {
            return Err(OutputError::Dropped(self.name.clone()));
        };
        tx.try_send(line.to_string())
            .map_err(|_| OutputError::Dropped(self.name.clone()))
    }
}

/// Every configured output; each alert is serialised once.
pub struct Outputs {
    outputs: Vec<Box<dyn AlertOutput>>,
    metrics: Arc<dyn AlertMetrics>,
}

impl Outputs {
    pub fn new(metrics: Arc<dyn AlertMetrics>) -> Outputs {
        Outputs {
            outputs: Vec::new(),
            metrics,
        }
    }

    pub fn push(&mut self, output: Box<dyn AlertOutput>) {
        self.outputs.push(output);
    }

    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Sends an alert to every output; failures are counted and logged, and never stop
    /// the other outputs.
    pub fn emit(&mut self, alert: &Alert) {
        if self.outputs.is_empty() {
            return;
        }
        let line = alert.to_json_line();
        for output in &mut self.outputs {
            if let Err(e) = output.emit(&line) {
                self.metrics.output_error(output.name(), e.reason());
                tracing::warn!(error = %e, rule = %alert.rule, "alert output failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{CountingMetrics, Priority};

    fn alert() -> Alert {
        Alert {
            rule: Arc::from("R"),
            priority: Priority::Notice,
            output: "x".into(),
            output_fields: Default::default(),
            tags: Arc::from(vec!["a".to_string()]),
            time_ns: 0,
            hostname: Arc::from("h"),
            source: "syscall",
        }
    }

    #[test]
    fn writer_and_file_outputs_write_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        let metrics = Arc::new(CountingMetrics::default());
        let mut outputs = Outputs::new(metrics.clone());
        outputs.push(Box::new(FileOutput::new(&path, false)));
        outputs.push(Box::new(FileOutput::new(
            &dir.path().join("no/such/dir/x"),
            true,
        )));
        outputs.emit(&alert());
        outputs.emit(&alert());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let parsed: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(parsed["rule"], "R");
        // The broken output failed twice, counted; the good one was not affected.
        assert_eq!(
            metrics.snapshot().output_errors[&("file".to_string(), "error")],
            2
        );

        let mut w = WriterOutput::new("mem", Vec::new());
        w.emit("{}").unwrap();
        assert_eq!(w.into_inner(), b"{}\n");
    }

    #[test]
    fn file_output_follows_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        let mut keep = FileOutput::new(&path, true);
        keep.emit("1").unwrap();
        std::fs::rename(&path, dir.path().join("alerts.json.1")).unwrap();
        keep.emit("2").unwrap(); // still the old file
        keep.reopen();
        keep.emit("3").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "3\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("alerts.json.1")).unwrap(),
            "1\n2\n"
        );
    }
}
