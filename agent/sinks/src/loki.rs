//! Grafana Loki push API (`POST /loki/api/v1/push`).
//!
//! Protobuf (snappy block-compressed `logproto.PushRequest`, as Promtail sends) or JSON.
//! Streams are labelled `namespace`, `pod`, `container`, `node`, `stream` plus static
//! labels; `pod_uid` and file paths stay out of the labels on purpose (unbounded
//! cardinality). Entries are sorted by timestamp within each stream of a request.
//! 2xx: done. 429/5xx/network: retry. Other 4xx (out of order, too old, rate-limited
//! stream…): dead-letter, then done.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::config::{LokiConfig, LokiEncoding};
use super::deadletter::{DeadLetter, Refusal};
use super::http::{HttpClient, Settled};
use super::metrics::SinkMetrics;
use super::{DeliverFuture, Sink, SinkError};
use node_agent_core::node::NodeIdentity;
use node_agent_core::record::{LogRecord, SourceMeta, Stream};

/// Labels set from each record; they cannot be configured as static labels.
pub const DYNAMIC_LABELS: &[&str] = &["namespace", "pod", "container", "node", "stream"];

/// `logproto.PushRequest` and friends (pkg/push/push.proto), the fields we send.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        /// Prometheus-style label set: `{a="1", b="2"}`.
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// One encoded request and what it carries.
pub struct EncodedRequest {
    pub body: Bytes,
    pub content_type: &'static str,
    /// The body is gzip'd (JSON only; protobuf bodies are snappy'd by the protocol).
    pub gzipped: bool,
    /// Indices (into the batch) of the records this request carries.
    pub records: Vec<usize>,
    /// Encoded size before compression.
    pub raw_len: usize,
}

/// Turns batches into push requests. Separate from the sink so benchmarks can drive it.
pub struct LokiEncoder {
    encoding: LokiEncoding,
    static_labels: BTreeMap<String, String>,
    node_fallback: String,
    max_request_bytes: usize,
}

/// One stream of a request: its labels and entries (timestamp, index into the batch).
struct Group {
    labels: Vec<(String, String)>,
    label_string: String,
    entries: Vec<(i64, usize)>,
}

impl LokiEncoder {
    pub fn new(config: &LokiConfig, identity: &NodeIdentity) -> Self {
        Self {
            encoding: config.encoding,
            static_labels: config.labels.clone(),
            node_fallback: identity.node_name.clone(),
            max_request_bytes: config.http.max_request_bytes,
        }
    }

    /// Encodes `records` into requests of at most ~`max_request_bytes` (before compression).
    pub fn encode(&self, records: &[LogRecord], gzip: bool) -> Vec<EncodedRequest> {
        // Group and sort the whole batch first, then cut requests: a stream split over
        // two requests then still goes out in timestamp order.
        let groups = self.group(records);
        let mut requests = Vec::new();
        let mut pieces: Vec<(usize, Range<usize>)> = Vec::new();
        let mut size = 0;
        for (g, group) in groups.iter().enumerate() {
            let label_cost = group.label_string.len() + 16;
            let mut start = 0;
            for (k, &(_, i)) in group.entries.iter().enumerate() {
                // Per-entry overhead: timestamp and framing (protobuf) or quoting (JSON).
                let entry_cost = records[i].message.len() + 48;
                let mut cost = entry_cost + if k == start { label_cost } else { 0 };
                if size > 0 && size + cost > self.max_request_bytes {
                    if k > start {
                        pieces.push((g, start..k));
                    }
                    requests.push(self.encode_request(records, &groups, &pieces, gzip));
                    pieces.clear();
                    size = 0;
                    start = k;
                    cost = entry_cost + label_cost;
                }
                size += cost;
            }
            pieces.push((g, start..group.entries.len()));
        }
        if !pieces.is_empty() {
            requests.push(self.encode_request(records, &groups, &pieces, gzip));
        }
        requests
    }

    /// One request from `pieces`: (group, range of its sorted entries).
    fn encode_request(
        &self,
        records: &[LogRecord],
        groups: &[Group],
        pieces: &[(usize, Range<usize>)],
        gzip: bool,
    ) -> EncodedRequest {
        let carried: Vec<usize> = pieces
            .iter()
            .flat_map(|(g, range)| groups[*g].entries[range.clone()].iter().map(|&(_, i)| i))
            .collect();
        match self.encoding {
            LokiEncoding::Protobuf => {
                let raw = encode_protobuf(records, groups, pieces);
                let raw_len = raw.len();
                // Loki expects snappy's block format, not the framed stream format.
                let body = snap::raw::Encoder::new()
                    .compress_vec(&raw)
                    .expect("snappy into Vec");
                EncodedRequest {
                    body: Bytes::from(body),
                    content_type: "application/x-protobuf",
                    gzipped: false,
                    records: carried,
                    raw_len,
                }
            }
            LokiEncoding::Json => {
                #[derive(Serialize)]
                struct Push<'a> {
                    streams: Vec<JsonStream<'a>>,
                }
                #[derive(Serialize)]
                struct JsonStream<'a> {
                    stream: BTreeMap<&'a str, &'a str>,
                    values: Vec<(String, &'a str)>,
                }
                let push = Push {
                    streams: pieces
                        .iter()
                        .map(|(g, range)| JsonStream {
                            stream: groups[*g]
                                .labels
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_str()))
                                .collect(),
                            values: groups[*g].entries[range.clone()]
                                .iter()
                                .map(|&(ts, i)| (ts.to_string(), records[i].message.as_str()))
                                .collect(),
                        })
                        .collect(),
                };
                let raw = serde_json::to_vec(&push).expect("JSON into Vec");
                let raw_len = raw.len();
                let body = if gzip { super::http::gzip(&raw) } else { raw };
                EncodedRequest {
                    body: Bytes::from(body),
                    content_type: "application/json",
                    gzipped: gzip,
                    records: carried,
                    raw_len,
                }
            }
        }
    }

    /// Groups `records` by label set, entries sorted by timestamp (stable, so equal
    /// timestamps keep file order).
    fn group(&self, records: &[LogRecord]) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        let mut by_labels: HashMap<String, usize> = HashMap::new();
        // Records of one file arrive together: remember the last source to skip rebuilding.
        let mut last: Option<(*const SourceMeta, Stream, usize)> = None;
        for (i, r) in records.iter().enumerate() {
            let key = (Arc::as_ptr(&r.source), r.stream);
            let index = match last {
                Some((ptr, stream, index)) if (ptr, stream) == key => index,
                _ => {
                    let labels = self.labels(r);
                    let label_string = label_string(&labels);
                    let index = *by_labels.entry(label_string.clone()).or_insert_with(|| {
                        groups.push(Group {
                            labels,
                            label_string,
                            entries: Vec::new(),
                        });
                        groups.len() - 1
                    });
                    last = Some((key.0, key.1, index));
                    index
                }
            };
            groups[index].entries.push((r.timestamp_nanos, i));
        }
        for g in &mut groups {
            g.entries.sort_by_key(|&(ts, _)| ts);
        }
        groups
    }

    fn labels(&self, r: &LogRecord) -> Vec<(String, String)> {
        let node = if r.source.node.is_empty() {
            &self.node_fallback
        } else {
            &r.source.node
        };
        let mut labels: Vec<(String, String)> = Vec::with_capacity(5 + self.static_labels.len());
        for (name, value) in [
            ("container", r.source.container.as_str()),
            ("namespace", r.source.namespace.as_str()),
            ("node", node.as_str()),
            ("pod", r.source.pod.as_str()),
            ("stream", r.stream.as_str()),
        ] {
            // An empty value means "no such label" in Loki and Prometheus.
            if !value.is_empty() {
                labels.push((name.to_string(), value.to_string()));
            }
        }
        for (name, value) in &self.static_labels {
            if !value.is_empty() {
                labels.push((name.clone(), value.clone()));
            }
        }
        labels.sort();
        labels
    }
}

/// Writes `logproto.PushRequest` straight from the records: the same bytes
/// `prost::Message::encode_to_vec(&proto::PushRequest { .. })` gives (a test checks),
/// without first copying every line into owned structs.
fn encode_protobuf(
    records: &[LogRecord],
    groups: &[Group],
    pieces: &[(usize, Range<usize>)],
) -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

    fn split(ts: i64) -> (i64, i32) {
        (
            ts.div_euclid(1_000_000_000),
            ts.rem_euclid(1_000_000_000) as i32,
        )
    }
    fn timestamp_len(ts: i64) -> usize {
        let (s, n) = split(ts);
        let field = |v: u64| if v == 0 { 0 } else { 1 + encoded_len_varint(v) };
        field(s as u64) + field(i64::from(n) as u64)
    }
    fn delimited_len(len: usize) -> usize {
        1 + encoded_len_varint(len as u64) + len
    }
    fn entry_len(ts: i64, line: &str) -> usize {
        // The timestamp is always present (an optional message set to Some).
        delimited_len(timestamp_len(ts))
            + if line.is_empty() {
                0
            } else {
                delimited_len(line.len())
            }
    }
    let stream_len = |g: &Group, range: &Range<usize>| {
        let labels = if g.label_string.is_empty() {
            0
        } else {
            delimited_len(g.label_string.len())
        };
        labels
            + g.entries[range.clone()]
                .iter()
                .map(|&(ts, i)| delimited_len(entry_len(ts, &records[i].message)))
                .sum::<usize>()
    };
    let total: usize = pieces
        .iter()
        .map(|(g, r)| delimited_len(stream_len(&groups[*g], r)))
        .sum();
    let mut buf = Vec::with_capacity(total);
    for (g, range) in pieces {
        let group = &groups[*g];
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(stream_len(group, range) as u64, &mut buf);
        if !group.label_string.is_empty() {
            encode_key(1, WireType::LengthDelimited, &mut buf);
            encode_varint(group.label_string.len() as u64, &mut buf);
            buf.extend_from_slice(group.label_string.as_bytes());
        }
        for &(ts, i) in &group.entries[range.clone()] {
            let line = &records[i].message;
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(entry_len(ts, line) as u64, &mut buf);
            encode_key(1, WireType::LengthDelimited, &mut buf);
            encode_varint(timestamp_len(ts) as u64, &mut buf);
            let (seconds, nanos) = split(ts);
            if seconds != 0 {
                encode_key(1, WireType::Varint, &mut buf);
                encode_varint(seconds as u64, &mut buf);
            }
            if nanos != 0 {
                encode_key(2, WireType::Varint, &mut buf);
                encode_varint(i64::from(nanos) as u64, &mut buf);
            }
            if !line.is_empty() {
                encode_key(2, WireType::LengthDelimited, &mut buf);
                encode_varint(line.len() as u64, &mut buf);
                buf.extend_from_slice(line.as_bytes());
            }
        }
    }
    debug_assert_eq!(buf.len(), total);
    buf
}

/// `{a="x", b="y\"z"}` with Go-style escaping of `\`, `"` and newlines.
pub fn label_string(labels: &[(String, String)]) -> String {
    let mut s = String::with_capacity(64);
    s.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(name);
        s.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

pub struct LokiSink {
    name: String,
    url: reqwest::Url,
    tenant: Option<String>,
    encoder: LokiEncoder,
    client: HttpClient,
    dead_letter: DeadLetter,
    retry: super::config::RetryOptions,
}

impl LokiSink {
    pub fn new(name: String, config: &LokiConfig, identity: &NodeIdentity) -> anyhow::Result<Self> {
        Self::with_state_dir(
            name,
            config,
            identity,
            std::path::Path::new(node_agent_core::state::DEFAULT_STATE_DIR),
        )
    }

    pub fn with_state_dir(
        name: String,
        config: &LokiConfig,
        identity: &NodeIdentity,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let url = push_url(&config.http.url)?;
        let metrics = SinkMetrics::new(&name);
        let client = HttpClient::new(&name, &config.http, metrics.clone())?;
        let dead_letter_path = config
            .http
            .dead_letter_path
            .clone()
            .unwrap_or_else(|| state_dir.join("deadletter").join(format!("{name}.ndjson")));
        Ok(Self {
            dead_letter: DeadLetter::with_max_bytes(
                &name,
                dead_letter_path,
                config.http.dead_letter_max_bytes,
                metrics,
            ),
            encoder: LokiEncoder::new(config, identity),
            tenant: config.tenant.clone().filter(|t| !t.is_empty()),
            retry: config.http.retry,
            name,
            url,
            client,
        })
    }

    pub fn metrics(&self) -> &SinkMetrics {
        &self.client.metrics
    }

    pub fn dead_letter_path(&self) -> &std::path::Path {
        self.dead_letter.path()
    }

    async fn deliver_all(
        &self,
        records: &[LogRecord],
        cancel: &CancellationToken,
    ) -> Result<(), SinkError> {
        let requests = self.encoder.encode(records, self.client.gzip());
        let tenant: Vec<(&'static str, &str)> = self
            .tenant
            .iter()
            .map(|t| ("X-Scope-OrgID", t.as_str()))
            .collect();
        let mut backoff = self.retry.backoff();
        for request in requests {
            let settled = self
                .client
                .send_until_settled(
                    &self.url,
                    request.content_type,
                    request.body,
                    request.gzipped,
                    &tenant,
                    &mut backoff,
                    cancel,
                )
                .await?;
            match settled {
                Settled::Accepted { .. } => self
                    .client
                    .metrics
                    .sent(request.records.len(), request.raw_len),
                Settled::Refused { status, detail } => {
                    // Loki may have kept part of a refused push (it answers 400 for the
                    // rejected entries only); dead-lettering all of it errs on the side
                    // of keeping a copy.
                    let refusals: Vec<Refusal<'_>> = request
                        .records
                        .iter()
                        .map(|&i| Refusal {
                            record: &records[i],
                            status: Some(status),
                            reason: detail.clone(),
                        })
                        .collect();
                    self.dead_letter
                        .write_retrying(&refusals, &mut backoff, cancel)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// `url` as given if it already names the push endpoint, else with it appended.
fn push_url(url: &str) -> anyhow::Result<reqwest::Url> {
    let full = if url.trim_end_matches('/').ends_with("/loki/api/v1/push") {
        url.to_string()
    } else {
        format!("{}/loki/api/v1/push", url.trim_end_matches('/'))
    };
    let parsed = reqwest::Url::parse(&full).with_context(|| format!("loki url {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("loki url {url:?}: scheme must be http or https");
    }
    Ok(parsed)
}

impl Sink for LokiSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        Box::pin(self.deliver_all(records, cancel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_protobuf_matches_prost() {
        let config: LokiConfig =
            serde_json::from_value(serde_json::json!({"url": "http://l", "labels": {"env": "x"}}))
                .unwrap();
        let encoder = LokiEncoder::new(&config, &NodeIdentity::default());
        let meta = |pod: &str| {
            Arc::new(SourceMeta {
                kind: node_agent_core::record::SourceKind::Pod,
                namespace: "ns".into(),
                pod: pod.into(),
                pod_uid: "u".into(),
                container: "c".into(),
                node: String::new(),
                path: "/p".into(),
                file_id: 1,
                kubernetes: None,
            })
        };
        let (a, b) = (meta("a"), meta("b"));
        let rec = |source: &Arc<SourceMeta>, ts: i64, message: &str| LogRecord {
            source: Arc::clone(source),
            timestamp_nanos: ts,
            stream: Stream::Stdout,
            offset: 0,
            message: message.into(),
            truncated: false,
            malformed: false,
            fields: None,
        };
        let long = "é".repeat(300);
        let records = vec![
            rec(&a, 1_700_000_000_123_456_789, "hello"),
            rec(&b, 0, ""),
            rec(&a, 5, &long),
            rec(&b, -1_500_000_000, "before the epoch"),
            rec(&a, 2_000_000_000, "whole second"),
        ];
        let groups = encoder.group(&records);
        let pieces: Vec<(usize, Range<usize>)> = groups
            .iter()
            .enumerate()
            .map(|(g, group)| (g, 0..group.entries.len()))
            .collect();
        let expected = proto::PushRequest {
            streams: pieces
                .iter()
                .map(|(g, range)| proto::StreamAdapter {
                    labels: groups[*g].label_string.clone(),
                    entries: groups[*g].entries[range.clone()]
                        .iter()
                        .map(|&(ts, i)| proto::EntryAdapter {
                            timestamp: Some(proto::Timestamp {
                                seconds: ts.div_euclid(1_000_000_000),
                                nanos: ts.rem_euclid(1_000_000_000) as i32,
                            }),
                            line: records[i].message.clone(),
                        })
                        .collect(),
                    hash: 0,
                })
                .collect(),
        };
        assert_eq!(
            encode_protobuf(&records, &groups, &pieces),
            prost::Message::encode_to_vec(&expected)
        );
        // Node falls back to the identity (empty here: the label is left out).
        assert_eq!(
            groups[0].label_string,
            r#"{container="c", env="x", namespace="ns", pod="a", stream="stdout"}"#
        );
    }

    #[test]
    fn escapes_label_values() {
        let labels = vec![
            ("a".to_string(), "x".to_string()),
            ("b".to_string(), "q\"\\\n".to_string()),
        ];
        assert_eq!(label_string(&labels), r#"{a="x", b="q\"\\\n"}"#);
    }

    #[test]
    fn builds_the_push_url() {
        assert_eq!(
            push_url("http://loki:3100").unwrap().as_str(),
            "http://loki:3100/loki/api/v1/push"
        );
        assert_eq!(
            push_url("http://gw/tenant1/").unwrap().as_str(),
            "http://gw/tenant1/loki/api/v1/push"
        );
        assert_eq!(
            push_url("https://l/loki/api/v1/push").unwrap().as_str(),
            "https://l/loki/api/v1/push"
        );
        assert!(push_url("ftp://x").is_err());
        assert!(push_url("not a url").is_err());
    }
}
