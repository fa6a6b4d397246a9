//! Where records come from, one module per source. File-based sources share
//! [`tail`]; each implements [`crate::source::Source`].

pub mod files;
pub mod journal;
pub mod live;
pub mod pods;
pub mod tail;

use std::sync::OnceLock;

use node_agent_core::record::SourceKind;
use prometheus::{IntCounter, IntCounterVec, Opts};

/// Every kind, in [`kind_index`] order.
const KINDS: [SourceKind; 5] = [
    SourceKind::Pod,
    SourceKind::Journal,
    SourceKind::File,
    SourceKind::Audit,
    SourceKind::Security,
];

fn kind_index(kind: SourceKind) -> usize {
    match kind {
        SourceKind::Pod => 0,
        SourceKind::Journal => 1,
        SourceKind::File => 2,
        SourceKind::Audit => 3,
        SourceKind::Security => 4,
    }
}

/// Per-source counters, labelled by the records' `source` kind (`pod`, `journal`, `file`,
/// `audit`, `security`); the handles are resolved once, so counting costs an atomic add.
pub struct SourceMetrics {
    read: [IntCounter; 5],
    delivered: [IntCounter; 5],
}

impl SourceMetrics {
    /// Records a source produced (before the stages).
    pub fn read(&self, kind: SourceKind) -> &IntCounter {
        &self.read[kind_index(kind)]
    }

    /// Records every sink confirmed.
    pub fn delivered(&self, kind: SourceKind) -> &IntCounter {
        &self.delivered[kind_index(kind)]
    }
}

pub fn source_metrics() -> &'static SourceMetrics {
    static METRICS: OnceLock<SourceMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let vec = |name: &str, help: &str| {
            node_agent_core::telemetry::register(
                IntCounterVec::new(Opts::new(name, help), &["source"])
                    .expect("static metric definition"),
            )
        };
        let read = vec(
            "node_agent_logs_source_records_read_total",
            "Records read, by source kind (pod, journal, file, audit).",
        );
        let delivered = vec(
            "node_agent_logs_source_records_delivered_total",
            "Records every sink confirmed, by source kind (pod, journal, file, audit).",
        );
        SourceMetrics {
            read: KINDS.map(|k| read.with_label_values(&[k.as_str()])),
            delivered: KINDS.map(|k| delivered.with_label_values(&[k.as_str()])),
        }
    })
}

/// Counts confirmed `records` per kind.
pub fn count_delivered(records: &[node_agent_core::record::LogRecord]) {
    let mut n = [0u64; 5];
    for r in records {
        n[kind_index(r.source.kind)] += 1;
    }
    let m = source_metrics();
    for (kind, count) in KINDS.iter().zip(n) {
        if count > 0 {
            m.delivered(*kind).inc_by(count);
        }
    }
}
