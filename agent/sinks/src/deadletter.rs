//! Records a receiver refused for good (e.g. Loki 400 "entry too old", an ES mapping
//! conflict): appended as NDJSON with the reason and fsync'd, so acknowledging them loses
//! nothing an operator cannot replay.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::jsonl::JsonRecord;
use super::metrics::SinkMetrics;
use node_agent_core::record::LogRecord;

/// One dead-letter line.
#[derive(Serialize)]
struct Letter<'a> {
    sink: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    record: JsonRecord<'a>,
}

/// One refused record and why.
pub struct Refusal<'a> {
    pub record: &'a LogRecord,
    pub status: Option<u16>,
    pub reason: String,
}

#[derive(Clone)]
pub struct DeadLetter {
    sink: String,
    path: PathBuf,
    file: Arc<Mutex<Option<File>>>,
    metrics: SinkMetrics,
}

impl DeadLetter {
    /// The file is opened on first use, so an unused dead-letter path costs nothing.
    pub fn new(sink: &str, path: PathBuf, metrics: SinkMetrics) -> Self {
        Self {
            sink: sink.to_string(),
            path,
            file: Arc::new(Mutex::new(None)),
            metrics,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and syncs `refusals`; counts them. An error means nothing may be acknowledged.
    pub async fn write(&self, refusals: &[Refusal<'_>]) -> std::io::Result<()> {
        if refusals.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in refusals {
            let letter = Letter {
                sink: &self.sink,
                reason: &r.reason,
                status: r.status,
                record: JsonRecord::from(r.record),
            };
            serde_json::to_writer(&mut buf, &letter).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut slot = file.lock().unwrap_or_else(|poison| poison.into_inner());
            if slot.is_none() {
                *slot = Some(super::file::open_append(&path).map_err(std::io::Error::other)?);
            }
            let Some(f) = slot.as_mut() else {
                unreachable!("opened above")
            };
            f.write_all(&buf)?;
            f.sync_data()
        })
        .await
        .map_err(std::io::Error::other)??;
        tracing::warn!(sink = %self.sink, records = refusals.len(), path = %self.path.display(),
            reason = %refusals[0].reason, "records dead-lettered");
        self.metrics.dead_lettered(refusals.len());
        Ok(())
    }
}

impl DeadLetter {
    /// [`Self::write`], retried with backoff until it lands or `cancel` fires: records are
    /// acknowledged only once their dead letter is on disk.
    pub async fn write_retrying(
        &self,
        refusals: &[Refusal<'_>],
        backoff: &mut node_agent_core::backoff::Backoff,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<(), super::SinkError> {
        loop {
            match self.write(refusals).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.metrics.failure("io");
                    tracing::error!(sink = %self.sink, path = %self.path.display(), error = %e,
                        "writing dead letters failed; retrying");
                }
            }
            backoff.wait(cancel).await?;
        }
    }
}
