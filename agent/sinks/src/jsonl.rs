//! The JSON-lines shape of a record (stdout, file and dead-letter sinks).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use node_agent_core::record::{LogRecord, SourceKind};

use crate::kubernetes::{Kubernetes, Style};

/// RFC 3339 with nanoseconds in UTC (`2024-05-01T12:00:00.123456789Z`).
pub fn rfc3339_nanos(timestamp_nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(timestamp_nanos)
        .to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A record as one flat JSON object, borrowing from the record.
#[derive(Serialize)]
pub struct JsonRecord<'a> {
    pub timestamp: String,
    /// The source kind: `pod`, `journal`, `file`, `audit`, `security`.
    pub source: &'static str,
    pub node: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub pod_uid: &'a str,
    pub container: &'a str,
    pub stream: &'static str,
    pub path: std::borrow::Cow<'a, str>,
    pub offset: u64,
    pub message: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub malformed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<&'a serde_json::Map<String, serde_json::Value>>,
    /// Pod records: the same `kubernetes` object as the Elasticsearch documents (keys
    /// not de-dotted; the container's image and ids under `kubernetes.container`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Kubernetes<'a>>,
}

impl<'a> From<&'a LogRecord> for JsonRecord<'a> {
    fn from(r: &'a LogRecord) -> Self {
        Self {
            timestamp: rfc3339_nanos(r.timestamp_nanos),
            source: r.source.kind.as_str(),
            node: &r.source.node,
            namespace: &r.source.namespace,
            pod: &r.source.pod,
            pod_uid: &r.source.pod_uid,
            container: &r.source.container,
            stream: r.stream.as_str(),
            path: r.source.path.to_string_lossy(),
            offset: r.offset,
            message: &r.message,
            truncated: r.truncated,
            malformed: r.malformed,
            fields: r.fields.as_ref(),
            kubernetes: (r.source.kind == SourceKind::Pod).then(|| {
                Kubernetes::new(
                    &r.source,
                    Style {
                        dedot: false,
                        container_details: true,
                    },
                )
            }),
        }
    }
}

/// Appends `records` as JSON lines to `out`.
pub fn encode(records: &[LogRecord], out: &mut Vec<u8>) {
    for r in records {
        // Serializing borrowed strings and a JSON map into a Vec cannot fail.
        serde_json::to_writer(&mut *out, &JsonRecord::from(r)).expect("JSON into Vec");
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_nanosecond_timestamps_in_utc() {
        assert_eq!(
            rfc3339_nanos(1_700_000_000_123_456_789),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn pod_records_carry_the_nested_kubernetes_object() {
        let source = std::sync::Arc::new(crate::kubernetes::tests::enriched_source());
        let r = LogRecord::new(
            source,
            0,
            node_agent_core::record::Stream::Stdout,
            7,
            "hi".into(),
        );
        let mut out = Vec::new();
        encode(std::slice::from_ref(&r), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["pod"], "web-7d4b9c8f6-x2k4p", "the flat fields stay");
        assert_eq!(v["kubernetes"]["labels"]["app"], "web");
        assert_eq!(v["kubernetes"]["deployment"]["name"], "web");
        assert_eq!(v["kubernetes"]["container"]["id"], "c0ffee");
        assert_eq!(
            v["kubernetes"]["node"]["labels"]["topology.kubernetes.io/zone"],
            "eu-1a"
        );
    }
}
