//! Groups records into batches by count, bytes and age. A batch carries the checkpoint
//! updates that become true once every sink confirmed it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::position::{Position, Update};
use node_agent_core::kube::PodMetadata;
use node_agent_core::record::{LogRecord, SourceMeta};

/// Approximate in-memory/wire cost of a record beyond its message (metadata, framing).
const RECORD_OVERHEAD: usize = 64;

/// What a record costs a batch: its message plus fixed overhead.
pub fn record_bytes(record: &LogRecord) -> usize {
    record.message.len() + RECORD_OVERHEAD
}

/// What a record's Kubernetes metadata adds to it on the wire, roughly: sinks that put it
/// on every record (Elasticsearch documents, JSON lines) send the labels and annotations
/// each time, so an enriched record can be several KiB however short its message.
pub fn metadata_bytes(source: &SourceMeta) -> usize {
    let Some(m) = source.kubernetes.as_deref() else {
        return 0;
    };
    // Quotes, colon and comma per entry; the objects' own names and the workload,
    // container and IP fields as one lump.
    let map = |m: &std::collections::BTreeMap<String, String>| -> usize {
        m.iter().map(|(k, v)| k.len() + v.len() + 6).sum()
    };
    let PodMetadata {
        labels,
        annotations,
        namespace_labels,
        namespace_annotations,
        node_labels,
        ..
    } = m;
    map(labels)
        + map(annotations)
        + map(namespace_labels)
        + map(namespace_annotations)
        + map(node_labels)
        + 256
}

/// Records plus the positions they complete.
#[derive(Debug)]
pub struct Batch<P: Position> {
    pub records: Vec<LogRecord>,
    pub bytes: usize,
    pub updates: Vec<Update<P>>,
    /// Set by sources that know it: once this batch and the earlier ones are confirmed,
    /// every file last written before this time has its position confirmed
    /// ([`crate::checkpoint::Loaded::covered_until`]).
    pub covered_until: Option<std::time::SystemTime>,
}

/// Accumulates records until a limit is reached.
#[derive(Debug)]
pub struct BatchBuilder {
    max_records: usize,
    max_bytes: usize,
    timeout: Duration,
    started: Option<Instant>,
    records: Vec<LogRecord>,
    bytes: usize,
    /// The last record's source and its [`metadata_bytes`]: records come in runs of one
    /// file, so that is computed once per run.
    last_source: Option<(Arc<SourceMeta>, usize)>,
}

impl BatchBuilder {
    pub fn new(max_records: usize, max_bytes: usize, timeout: Duration) -> Self {
        Self {
            max_records,
            max_bytes,
            timeout,
            started: None,
            records: Vec::new(),
            bytes: 0,
            last_source: None,
        }
    }

    pub fn push(&mut self, record: LogRecord) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        let metadata = match &self.last_source {
            Some((source, bytes)) if Arc::ptr_eq(source, &record.source) => *bytes,
            _ => {
                let bytes = metadata_bytes(&record.source);
                self.last_source = Some((Arc::clone(&record.source), bytes));
                bytes
            }
        };
        // The metadata counts too: `batch_max_bytes` then bounds what a batch costs
        // encoded, and with it the memory of the batches in flight.
        self.bytes += record_bytes(&record) + metadata;
        self.records.push(record);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max_records || self.bytes >= self.max_bytes
    }

    /// When the oldest record has waited `timeout`; `None` when empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.timeout)
    }

    pub fn is_due(&self, now: Instant) -> bool {
        self.is_full() || self.deadline().is_some_and(|d| now >= d)
    }

    /// Takes the records so far, with the updates they complete.
    pub fn take<P: Position>(&mut self, updates: Vec<Update<P>>) -> Batch<P> {
        self.started = None;
        let bytes = std::mem::take(&mut self.bytes);
        Batch {
            records: std::mem::take(&mut self.records),
            bytes,
            updates,
            covered_until: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_agent_core::record::Stream;

    fn rec(msg: &str) -> LogRecord {
        let meta = Arc::new(SourceMeta {
            kind: node_agent_core::record::SourceKind::Pod,
            namespace: "ns".into(),
            pod: "p".into(),
            pod_uid: "u".into(),
            container: "c".into(),
            node: "n".into(),
            path: "/x".into(),
            file_id: 1,
            kubernetes: None,
        });
        LogRecord::new(meta, 0, Stream::Stdout, 0, msg.into())
    }

    #[test]
    fn seals_by_count_bytes_and_age() {
        let mut b = BatchBuilder::new(2, 1 << 20, Duration::from_secs(60));
        b.push(rec("a"));
        assert!(!b.is_full());
        b.push(rec("b"));
        assert!(b.is_full());
        let batch = b.take::<crate::sources::tail::file_id::FileEntry>(Vec::new());
        assert_eq!(batch.records.len(), 2);
        assert!(b.is_empty() && b.deadline().is_none());

        let mut b = BatchBuilder::new(100, 100, Duration::from_secs(60));
        b.push(rec(&"x".repeat(50)));
        assert!(b.is_full());

        let mut b = BatchBuilder::new(100, 1 << 20, Duration::ZERO);
        assert!(!b.is_due(Instant::now()));
        b.push(rec("a"));
        assert!(b.is_due(Instant::now()));
    }

    /// An enriched record counts its labels and annotations: sinks send them with every
    /// record, so a batch of short messages from a well-labelled pod fills by bytes.
    #[test]
    fn enriched_records_count_their_metadata() {
        let bare = rec("short");
        let labels: std::collections::BTreeMap<String, String> = (0..20)
            .map(|i| (format!("example.com/label-{i:02}"), format!("value-{i:02}")))
            .collect();
        let enriched_source = Arc::new(SourceMeta {
            kubernetes: Some(Arc::new(PodMetadata {
                annotations: labels.clone(),
                labels,
                ..PodMetadata::default()
            })),
            ..SourceMeta::clone(&bare.source)
        });
        let per_record = metadata_bytes(&enriched_source);
        assert!(per_record > 1000, "{per_record}");
        assert_eq!(metadata_bytes(&bare.source), 0);

        let max = 100 * (per_record + record_bytes(&bare));
        let mut b = BatchBuilder::new(1000, max, Duration::from_secs(60));
        for _ in 0..100 {
            b.push(bare.clone());
        }
        assert!(!b.is_full(), "bare records count only their messages");
        let mut b = BatchBuilder::new(1000, max, Duration::from_secs(60));
        for i in 0..100 {
            assert!(!b.is_full(), "full after {i}");
            b.push(LogRecord::new(
                Arc::clone(&enriched_source),
                0,
                Stream::Stdout,
                i,
                "short".into(),
            ));
        }
        assert!(b.is_full());
    }
}
