//! The record that flows from parser to sinks.

use std::path::PathBuf;
use std::sync::Arc;

/// Which container stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Which kind of source a record came from; sinks label and route by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SourceKind {
    /// A container's log file under `/var/log/pods`.
    #[default]
    Pod,
    /// The systemd journal.
    Journal,
    /// A host log file matched by a glob.
    File,
    /// The Kubernetes API server's audit log.
    Audit,
    /// A runtime-security alert.
    Security,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Pod => "pod",
            SourceKind::Journal => "journal",
            SourceKind::File => "file",
            SourceKind::Audit => "audit",
            SourceKind::Security => "security",
        }
    }
}

/// Where records came from: one stream of a source (a container's log file, a journal,
/// a host file), plus the node (Downward API). Shared by every record of that stream.
/// The pod fields are empty for records that do not come from a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceMeta {
    pub kind: SourceKind,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub node: String,
    pub path: PathBuf,
    /// Stable identity of the file across renames: a hash of (dev, inode, fingerprint).
    /// With `LogRecord::offset` it names a record uniquely (e.g. the ES `_id`).
    pub file_id: u64,
    /// Kubernetes metadata, once the enrich stage found the pod (`None` before or without).
    pub kubernetes: Option<Arc<crate::kube::PodMetadata>>,
}

/// One log entry, after P/F partials were joined.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRecord {
    pub source: Arc<SourceMeta>,
    /// Container runtime timestamp, nanoseconds since the Unix epoch.
    pub timestamp_nanos: i64,
    pub stream: Stream,
    /// Byte offset in the file where this record's first line starts.
    pub offset: u64,
    /// The message, without the trailing newline; invalid UTF-8 replaced lossily.
    pub message: String,
    /// The joined partial lines exceeded the cap and the message was cut.
    pub truncated: bool,
    /// The line was not valid CRI/docker format and is shipped raw.
    pub malformed: bool,
    /// The message parsed as a JSON object (only when `logs.parse_json` is on).
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

impl LogRecord {
    /// A record with no flags and no parsed fields.
    pub fn new(
        source: Arc<SourceMeta>,
        timestamp_nanos: i64,
        stream: Stream,
        offset: u64,
        message: String,
    ) -> Self {
        Self {
            source,
            timestamp_nanos,
            stream,
            offset,
            message,
            truncated: false,
            malformed: false,
            fields: None,
        }
    }
}
