//! Records a receiver refused for good (e.g. Loki 400 "entry too old", an ES mapping
//! conflict): appended as NDJSON and fsync'd, so acknowledging them loses nothing an
//! operator cannot replay.
//!
//! One line per refusal reason within a request: `{"sink","reason","status","records":[..]}`,
//! so a 400 for a whole push stores its (up to 512-byte) reason once, not once per record.
//! The file is capped: a write that would take it past `max_bytes` first renames it to
//! `<path>.1` (replacing the previous one), so the dead letters of a sink use at most about
//! twice the cap on disk; `node_agent_sink_dead_letter_bytes{sink}` shows the total.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::jsonl::JsonRecord;
use super::metrics::SinkMetrics;
use node_agent_core::record::LogRecord;

/// Default cap of one dead-letter file (the rotated one comes on top).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// One dead-letter line: every record refused for the same reason in one request.
#[derive(Serialize)]
struct Letter<'a> {
    sink: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    records: Vec<JsonRecord<'a>>,
}

/// One refused record and why.
pub struct Refusal<'a> {
    pub record: &'a LogRecord,
    pub status: Option<u16>,
    pub reason: String,
}

struct OpenFile {
    file: File,
    len: u64,
}

#[derive(Clone)]
pub struct DeadLetter {
    sink: String,
    path: PathBuf,
    max_bytes: u64,
    file: Arc<Mutex<Option<OpenFile>>>,
    metrics: SinkMetrics,
}

/// `<path>.1`: where the previous file goes when the cap is reached.
fn rotated_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(".1");
    PathBuf::from(p)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

impl DeadLetter {
    /// The file is opened on first use, so an unused dead-letter path costs nothing.
    pub fn new(sink: &str, path: PathBuf, metrics: SinkMetrics) -> Self {
        Self::with_max_bytes(sink, path, DEFAULT_MAX_BYTES, metrics)
    }

    /// The dead letters of the HTTP sink `sink`: `http.dead_letter_path`, or
    /// `<state dir>/deadletter/<sink>.ndjson`, capped at `http.dead_letter_max_bytes`.
    pub fn for_http_sink(
        sink: &str,
        http: &super::config::HttpOptions,
        state_dir: &Path,
        metrics: SinkMetrics,
    ) -> Self {
        let path = http
            .dead_letter_path
            .clone()
            .unwrap_or_else(|| state_dir.join("deadletter").join(format!("{sink}.ndjson")));
        Self::with_max_bytes(sink, path, http.dead_letter_max_bytes, metrics)
    }

    /// As [`Self::new`], with the file capped at `max_bytes` before it rotates.
    pub fn with_max_bytes(sink: &str, path: PathBuf, max_bytes: u64, metrics: SinkMetrics) -> Self {
        // What an earlier run left counts from the start.
        metrics.dead_letter_bytes(file_len(&path) + file_len(&rotated_path(&path)));
        Self {
            sink: sink.to_string(),
            path,
            max_bytes,
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
        let buf = self.encode(refusals)?;
        let file = Arc::clone(&self.file);
        let path = self.path.clone();
        let max_bytes = self.max_bytes;
        let sink = self.sink.clone();
        let on_disk = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut slot = file.lock().unwrap_or_else(|poison| poison.into_inner());
            append(&mut slot, &path, max_bytes, &buf, &sink)?;
            let len = slot.as_ref().map_or(0, |f| f.len);
            Ok(len + file_len(&rotated_path(&path)))
        })
        .await
        .map_err(std::io::Error::other)??;
        tracing::warn!(sink = %self.sink, records = refusals.len(), path = %self.path.display(),
            reason = %refusals[0].reason, "records dead-lettered");
        self.metrics.dead_lettered(refusals.len());
        self.metrics.dead_letter_bytes(on_disk);
        Ok(())
    }

    /// One line per (status, reason), in order of first appearance.
    fn encode(&self, refusals: &[Refusal<'_>]) -> std::io::Result<Vec<u8>> {
        let mut letters: Vec<Letter<'_>> = Vec::new();
        for r in refusals {
            let record = JsonRecord::from(r.record);
            match letters
                .iter_mut()
                .find(|l| l.status == r.status && l.reason == r.reason)
            {
                Some(l) => l.records.push(record),
                None => letters.push(Letter {
                    sink: &self.sink,
                    reason: &r.reason,
                    status: r.status,
                    records: vec![record],
                }),
            }
        }
        let mut buf = Vec::new();
        for letter in &letters {
            serde_json::to_writer(&mut buf, letter).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        Ok(buf)
    }
}

/// Appends `buf` (whole lines) to the file in `slot`, rotating first when it would pass
/// `max_bytes`. A single write larger than the cap still lands whole, in a fresh file:
/// those records are acknowledged only once they are on disk.
fn append(
    slot: &mut Option<OpenFile>,
    path: &Path,
    max_bytes: u64,
    buf: &[u8],
    sink: &str,
) -> std::io::Result<()> {
    if slot.is_none() {
        let file = super::file::open_append(path).map_err(std::io::Error::other)?;
        let len = file.metadata()?.len();
        *slot = Some(OpenFile { file, len });
    }
    if let Some(open) = slot.as_ref()
        && open.len > 0
        && open.len.saturating_add(buf.len() as u64) > max_bytes
    {
        let rotated = rotated_path(path);
        tracing::warn!(sink, path = %path.display(), rotated = %rotated.display(), max_bytes,
            "dead-letter file reached its size cap; rotating (the previous rotated file is removed)");
        *slot = None;
        std::fs::rename(path, &rotated)?;
        let file = super::file::open_append(path).map_err(std::io::Error::other)?;
        // The new name must survive a crash before records in it are acknowledged.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        *slot = Some(OpenFile { file, len: 0 });
    }
    let result = match slot.as_mut() {
        Some(open) => open
            .file
            .write_all(buf)
            .and_then(|()| open.file.sync_data())
            .map(|()| open.len += buf.len() as u64),
        None => Err(std::io::Error::other("dead-letter file not open")),
    };
    if result.is_err() {
        // Part of `buf` may be in the file: reopen and re-measure next time.
        *slot = None;
    }
    result
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

#[cfg(test)]
mod tests {
    use super::*;
    use node_agent_core::record::{SourceKind, SourceMeta, Stream};

    fn records(n: usize) -> Vec<LogRecord> {
        let source = Arc::new(SourceMeta {
            kind: SourceKind::Pod,
            namespace: "ns".into(),
            pod: "p".into(),
            pod_uid: "u".into(),
            container: "c".into(),
            node: String::new(),
            path: "/p".into(),
            file_id: 1,
            kubernetes: None,
        });
        (0..n)
            .map(|i| LogRecord::new(Arc::clone(&source), 1, Stream::Stdout, 0, format!("m{i}")))
            .collect()
    }

    fn refusals<'a>(records: &'a [LogRecord], reason: &str) -> Vec<Refusal<'a>> {
        records
            .iter()
            .map(|record| Refusal {
                record,
                status: Some(400),
                reason: reason.to_string(),
            })
            .collect()
    }

    #[tokio::test]
    async fn reason_is_written_once_per_request_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl/loki.ndjson");
        let dl = DeadLetter::new("dl-once", path.clone(), SinkMetrics::new("dl-once"));
        let recs = records(3);
        let long_reason = "x".repeat(500);
        let mut r = refusals(&recs, &long_reason);
        r[2].reason = "other".into();
        dl.write(&r).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(&long_reason).count(), 1, "{text}");
        let letters: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(letters.len(), 2);
        assert_eq!(letters[0]["records"].as_array().unwrap().len(), 2);
        assert_eq!(letters[0]["records"][1]["message"], "m1");
        assert_eq!(letters[1]["reason"], "other");
        assert_eq!(letters[1]["records"][0]["message"], "m2");
        assert_eq!(dl.metrics.dead_lettered_records(), 3);
        assert_eq!(dl.metrics.dead_letter_bytes_on_disk(), text.len() as u64);
    }

    #[tokio::test]
    async fn file_is_capped_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("es.ndjson");
        let metrics = SinkMetrics::new("dl-cap");
        let dl = DeadLetter::with_max_bytes("dl-cap", path.clone(), 4096, metrics.clone());
        let recs = records(1);
        let reason = "r".repeat(1000);
        for _ in 0..20 {
            dl.write(&refusals(&recs, &reason)).await.unwrap();
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let rotated = std::fs::metadata(rotated_path(&path)).unwrap().len();
        assert!(current <= 4096, "{current}");
        assert!(rotated <= 4096 && rotated > 0, "{rotated}");
        assert_eq!(metrics.dead_letter_bytes_on_disk(), current + rotated);
        // Whole lines only, in both files.
        for p in [&path, &rotated_path(&path)] {
            for line in std::fs::read_to_string(p).unwrap().lines() {
                serde_json::from_str::<serde_json::Value>(line).unwrap();
            }
        }
        // A later process picks up the size already on disk.
        let again =
            DeadLetter::with_max_bytes("dl-cap2", path.clone(), 4096, SinkMetrics::new("dl-cap2"));
        assert_eq!(again.metrics.dead_letter_bytes_on_disk(), current + rotated);
    }
}
