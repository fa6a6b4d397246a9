//! JSON lines appended to a file; a batch is confirmed only after `fsync`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::config::RetryOptions;
use super::metrics::SinkMetrics;
use super::{DeliverFuture, Sink, SinkError, jsonl};
use node_agent_core::record::LogRecord;

pub struct FileSink {
    name: String,
    path: PathBuf,
    file: Arc<Mutex<File>>,
    metrics: SinkMetrics,
}

impl FileSink {
    /// Opens (creating it and its directory if needed) `path` for appending.
    pub fn open(name: String, path: &Path) -> anyhow::Result<Self> {
        let file = open_append(path)?;
        let metrics = SinkMetrics::new(&name);
        Ok(Self {
            name,
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
            metrics,
        })
    }
}

/// Opens `path` for appending, creating parent directories.
pub(crate) fn open_append(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating directory {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {} for appending", path.display()))
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(());
            }
            let mut buf = Vec::with_capacity(records.iter().map(|r| r.message.len() + 256).sum());
            jsonl::encode(records, &mut buf);
            let buf = Arc::new(buf);
            let mut backoff = RetryOptions::default().backoff();
            loop {
                let file = Arc::clone(&self.file);
                let bytes = Arc::clone(&buf);
                let write = tokio::task::spawn_blocking(move || append_synced(&file, &bytes));
                let result = tokio::select! {
                    // The write may still land; redelivery after a restart then duplicates
                    // lines, which at-least-once allows.
                    _ = cancel.cancelled() => return Err(SinkError::Cancelled),
                    result = write => result,
                };
                match result {
                    Ok(Ok(())) => {
                        self.metrics.sent(records.len(), buf.len());
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        // Disk full and friends are usually transient: stall, don't drop.
                        self.metrics.failure("io");
                        tracing::warn!(sink = %self.name, path = %self.path.display(), error = %e,
                            "appending to the file sink failed; retrying");
                    }
                    Err(e) => return Err(SinkError::Failed(format!("file writer task: {e}"))),
                }
                backoff.wait(cancel).await?;
                self.metrics.retry(1);
            }
        })
    }
}

/// Appends `bytes` and syncs; on failure cuts the file back so a retry does not leave a
/// torn line in front of the repeated batch.
fn append_synced(file: &Mutex<File>, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = file.lock().unwrap_or_else(|poison| poison.into_inner());
    let start = file.metadata()?.len();
    let result = file.write_all(bytes).and_then(|()| file.sync_data());
    if result.is_err() {
        let _ = file.set_len(start);
    }
    result
}
