//! Groups records into batches by count, bytes and age. A batch carries the checkpoint
//! updates that become true once every sink confirmed it.

use std::time::{Duration, Instant};

use crate::position::{Position, Update};
use node_agent_core::record::LogRecord;

/// Approximate in-memory/wire cost of a record beyond its message (metadata, framing).
const RECORD_OVERHEAD: usize = 64;

/// What a record costs a batch: its message plus fixed overhead.
pub fn record_bytes(record: &LogRecord) -> usize {
    record.message.len() + RECORD_OVERHEAD
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
        }
    }

    pub fn push(&mut self, record: LogRecord) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        self.bytes += record_bytes(&record);
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
    use node_agent_core::record::{SourceMeta, Stream};
    use std::sync::Arc;

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
}
