//! Building [`LogRecord`]s for sink tests and benchmarks.

use std::path::PathBuf;
use std::sync::Arc;

use node_agent::core::record::{LogRecord, SourceMeta, Stream};

/// A container log source on node `node-1`.
pub fn source(namespace: &str, pod: &str, container: &str) -> Arc<SourceMeta> {
    let path = PathBuf::from(format!(
        "/var/log/pods/{namespace}_{pod}_uid-{pod}/{container}/0.log"
    ));
    Arc::new(SourceMeta {
        kind: node_agent::core::record::SourceKind::Pod,
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        pod_uid: format!("uid-{pod}"),
        container: container.to_string(),
        node: "node-1".to_string(),
        kubernetes: None,
        file_id: {
            // Distinct per path, stable across runs.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in path.as_os_str().as_encoded_bytes() {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
            h
        },
        path,
    })
}

/// A plain stdout record.
pub fn record(
    source: &Arc<SourceMeta>,
    timestamp_nanos: i64,
    offset: u64,
    message: &str,
) -> LogRecord {
    LogRecord {
        source: Arc::clone(source),
        timestamp_nanos,
        stream: Stream::Stdout,
        offset,
        message: message.to_string(),
        truncated: false,
        malformed: false,
        fields: None,
    }
}

/// `n` records of one source, 1 ms apart from `start_nanos`, offsets 100 bytes apart,
/// messages `"{prefix}-{i}"`.
pub fn batch(source: &Arc<SourceMeta>, start_nanos: i64, n: usize, prefix: &str) -> Vec<LogRecord> {
    (0..n)
        .map(|i| {
            record(
                source,
                start_nanos + i as i64 * 1_000_000,
                i as u64 * 100,
                &format!("{prefix}-{i}"),
            )
        })
        .collect()
}
