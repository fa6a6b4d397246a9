//! Grafana Loki push API (`POST /loki/api/v1/push`).
//!
//! Protobuf (snappy block-compressed `logproto.PushRequest`, as Promtail sends) or JSON.
//! Streams are labelled by `record_labels` (default `namespace`, `workload`, `container`,
//! `stream`) plus static labels; `pod`, `pod_uid` and `node` go to each entry's structured
//! metadata by default (`structured_metadata`), file paths nowhere: Loki's cardinality
//! guidance. Entries are sorted by timestamp within each stream of a request, and one
//! request is in flight at a time (see `max_in_flight`).
//! 2xx: done. 429/5xx/network: retry (a 429's `Retry-After` is honoured). A 400 naming
//! entries (out of order, too old): those entries are dead-lettered one by one and the
//! rest of the request counts as delivered ([`refusals`] says how the answer is split).
//! Other 4xx: the request is dead-lettered, then done.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::config::{self, LokiConfig, LokiEncoding};
use super::deadletter::{DeadLetter, Refusal};
use super::http::{HttpClient, Settled};
use super::metrics::SinkMetrics;
use super::values::RecordValue;
use super::{CountedFuture, DeliverFuture, Sink, SinkError};
use node_agent_core::node::NodeIdentity;
use node_agent_core::record::{LogRecord, SourceMeta, Stream};

mod refusals;
pub use refusals::{format_go_time, parse_go_time};

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
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPairAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
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
    /// The request's streams (label string, entries), to tell which entries a 400 named.
    pub streams: Vec<(String, Vec<(i64, usize)>)>,
    /// `X-Scope-OrgID` (every record of a request has the same tenant).
    pub tenant: Option<String>,
}

/// Turns batches into push requests. Separate from the sink so benchmarks can drive it.
pub struct LokiEncoder {
    encoding: LokiEncoding,
    static_labels: BTreeMap<String, String>,
    record_labels: Vec<(String, RecordValue)>,
    /// Some label comes from a parsed field: labels cannot be cached per source.
    labels_per_record: bool,
    structured_metadata: Vec<(String, RecordValue)>,
    /// Some structured metadata comes from parsed fields (differs record by record).
    metadata_per_record: bool,
    structured_metadata_fields: bool,
    /// Entries can have structured metadata at all: without, its per-record bookkeeping
    /// (cost, which metadata an entry has) is skipped.
    any_metadata: bool,
    tenant: Option<String>,
    tenant_from: Option<RecordValue>,
    node_fallback: String,
    max_request_bytes: usize,
}

/// One stream of a request: its tenant, labels and entries (timestamp, index into the
/// batch).
struct Group {
    tenant: Option<String>,
    labels: Vec<(String, String)>,
    label_string: String,
    entries: Vec<(i64, usize)>,
}

/// Structured metadata of one entry.
type Metadata<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

impl LokiEncoder {
    pub fn new(config: &LokiConfig, identity: &NodeIdentity) -> Self {
        let record_labels: Vec<(String, RecordValue)> = config
            .record_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Self {
            encoding: config.encoding,
            static_labels: config.labels.clone(),
            labels_per_record: record_labels.iter().any(|(_, v)| v.per_record())
                || config
                    .tenant_from
                    .as_ref()
                    .is_some_and(RecordValue::per_record),
            record_labels,
            structured_metadata: config
                .structured_metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            metadata_per_record: config
                .structured_metadata
                .iter()
                .any(|(_, v)| v.per_record()),
            structured_metadata_fields: config.structured_metadata_fields,
            any_metadata: !config.structured_metadata.is_empty()
                || config.structured_metadata_fields,
            tenant: config.tenant.clone().filter(|t| !t.is_empty()),
            tenant_from: config.tenant_from.clone(),
            node_fallback: identity.node_name.clone(),
            max_request_bytes: config.http.max_request_bytes,
        }
    }

    /// The record's tenant: `tenant_from`, else the static `tenant`.
    fn tenant(&self, r: &LogRecord) -> Option<String> {
        self.tenant_from
            .as_ref()
            .and_then(|from| from.get(r, &self.node_fallback))
            .map(Cow::into_owned)
            .or_else(|| self.tenant.clone())
    }

    /// The entry's structured metadata: the configured values, then (if asked) the
    /// top-level scalar parsed fields under sanitized names.
    /// Each entry's structured metadata pairs, in order: the configured ones, then (with
    /// `structured_metadata_fields`) the record's scalar parsed fields.
    fn metadata_pairs<'a>(
        &'a self,
        r: &'a LogRecord,
    ) -> impl Iterator<Item = (Cow<'a, str>, Cow<'a, str>)> + 'a {
        let configured = self
            .structured_metadata
            .iter()
            .filter_map(move |(name, from)| {
                let v = from.get(r, &self.node_fallback)?;
                Some((Cow::Borrowed(name.as_str()), v))
            });
        let fields = r
            .fields
            .iter()
            .filter(move |_| self.structured_metadata_fields)
            .flatten()
            .filter_map(|(k, v)| {
                let value = match v {
                    serde_json::Value::String(s) if !s.is_empty() => Cow::Borrowed(s.as_str()),
                    serde_json::Value::Number(n) => Cow::Owned(n.to_string()),
                    serde_json::Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
                    _ => return None,
                };
                Some((sanitize_label_name(k), value))
            });
        configured.chain(fields)
    }

    fn metadata<'a>(&'a self, r: &'a LogRecord) -> Metadata<'a> {
        let fields = match &r.fields {
            Some(f) if self.structured_metadata_fields => f.len(),
            _ => 0,
        };
        // Sized once: growing it pair by pair was a tenth of the sink's instructions.
        let mut out: Metadata<'a> = Vec::with_capacity(self.structured_metadata.len() + fields);
        out.extend(self.metadata_pairs(r));
        out
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
            // One tenant per request (groups are sorted by tenant).
            if g > 0 && groups[g - 1].tenant != group.tenant && !pieces.is_empty() {
                requests.push(self.encode_request(records, &groups, &pieces, gzip));
                pieces.clear();
                size = 0;
            }
            let label_cost = group.label_string.len() + 16;
            let mut start = 0;
            // A run of one source's entries has one metadata (unless it comes from parsed
            // fields): its cost is summed once per run, not per record.
            let mut last_meta: Option<((*const SourceMeta, Stream), usize)> = None;
            for (k, &(_, i)) in group.entries.iter().enumerate() {
                let r = &records[i];
                let key = (Arc::as_ptr(&r.source), r.stream);
                let meta_cost = match last_meta {
                    _ if !self.any_metadata => 0,
                    Some((last, cost)) if last == key => cost,
                    _ => {
                        let cost = self.metadata_cost(r);
                        last_meta = (!self.metadata_differs_per_record(r)).then_some((key, cost));
                        cost
                    }
                };
                // Per-entry overhead: timestamp and framing (protobuf) or quoting (JSON).
                let entry_cost = r.message.len() + 48 + meta_cost;
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
        // Sized up front and filled slice by slice: collecting the flat_map grew the Vec
        // step by step (~80 instructions a record).
        let mut carried: Vec<usize> =
            Vec::with_capacity(pieces.iter().map(|(_, range)| range.len()).sum());
        for (g, range) in pieces {
            carried.extend(groups[*g].entries[range.clone()].iter().map(|&(_, i)| i));
        }
        let tenant = pieces.first().and_then(|(g, _)| groups[*g].tenant.clone());
        let streams = pieces
            .iter()
            .map(|(g, range)| {
                (
                    groups[*g].label_string.clone(),
                    groups[*g].entries[range.clone()].to_vec(),
                )
            })
            .collect();
        match self.encoding {
            LokiEncoding::Protobuf => {
                // Records of one file come in runs: their metadata is built (and encoded)
                // once per run unless it depends on parsed fields.
                // Without any metadata both stay empty (see `encode_protobuf`).
                let mut metas: Vec<Metadata<'_>> = Vec::new();
                let mut meta_of = Vec::new();
                let mut last = None;
                for &i in carried.iter().filter(|_| self.any_metadata) {
                    let r = &records[i];
                    let key = (Arc::as_ptr(&r.source), r.stream);
                    let per_record = self.metadata_differs_per_record(r);
                    if per_record || last != Some(key) {
                        metas.push(self.metadata(r));
                    }
                    meta_of.push(metas.len() - 1);
                    // Only metadata that is the source's alone may serve the next record.
                    last = (!per_record).then_some(key);
                }
                let raw = encode_protobuf(records, groups, pieces, &metas, &meta_of);
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
                    streams,
                    tenant,
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
                    values: Vec<JsonValue<'a>>,
                }
                /// `["<ns>", "<line>"]`, or with structured metadata
                /// `["<ns>", "<line>", {"name": "value"}]`.
                #[derive(Serialize)]
                #[serde(untagged)]
                enum JsonValue<'a> {
                    Plain(String, &'a str),
                    WithMetadata(String, &'a str, BTreeMap<Cow<'a, str>, Cow<'a, str>>),
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
                                .map(|&(ts, i)| {
                                    let line = records[i].message.as_str();
                                    let meta = self.metadata(&records[i]);
                                    if meta.is_empty() {
                                        JsonValue::Plain(ts.to_string(), line)
                                    } else {
                                        JsonValue::WithMetadata(
                                            ts.to_string(),
                                            line,
                                            meta.into_iter().collect(),
                                        )
                                    }
                                })
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
                    streams,
                    tenant,
                }
            }
        }
    }

    /// Groups `records` by label set, entries sorted by timestamp (stable, so equal
    /// timestamps keep file order).
    fn group(&self, records: &[LogRecord]) -> Vec<Group> {
        let mut groups: Vec<Group> = Vec::new();
        let mut by_labels: HashMap<(Option<String>, String), usize> = HashMap::new();
        // Records of one file arrive together: remember the last source to skip rebuilding
        // (unless labels or the tenant come from parsed fields).
        let mut last: Option<(*const SourceMeta, Stream, usize)> = None;
        for (i, r) in records.iter().enumerate() {
            let key = (Arc::as_ptr(&r.source), r.stream);
            let index = match last {
                Some((ptr, stream, index)) if (ptr, stream) == key && !self.labels_per_record => {
                    index
                }
                _ => {
                    let labels = self.labels(r);
                    let label_string = label_string(&labels);
                    let tenant = self.tenant(r);
                    let index = *by_labels
                        .entry((tenant.clone(), label_string.clone()))
                        .or_insert_with(|| {
                            groups.push(Group {
                                tenant,
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
        // Requests carry one tenant each: keep each tenant's streams together.
        groups.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        groups
    }

    fn labels(&self, r: &LogRecord) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> =
            Vec::with_capacity(self.record_labels.len() + self.static_labels.len());
        for (name, from) in &self.record_labels {
            // An absent or empty value means "no such label" in Loki and Prometheus.
            if let Some(value) = from.get(r, &self.node_fallback) {
                labels.push((name.clone(), value.into_owned()));
            }
        }
        for (name, value) in &self.static_labels {
            if !value.is_empty() {
                labels.push((name.clone(), value.clone()));
            }
        }
        if labels.is_empty() {
            // Loki refuses a stream without labels.
            labels.push(("source".to_string(), r.source.kind.as_str().to_string()));
        }
        labels.sort();
        labels
    }

    /// `r`'s structured metadata may differ from that of other records of its source
    /// (it takes parsed fields), so it cannot be shared along a run of the source.
    fn metadata_differs_per_record(&self, r: &LogRecord) -> bool {
        self.metadata_per_record || (self.structured_metadata_fields && r.fields.is_some())
    }

    /// What the entry's structured metadata adds to a request, about.
    fn metadata_cost(&self, r: &LogRecord) -> usize {
        // Summed without building the Vec (this runs once per run of a source's records
        // when requests are cut; `metadata` runs again when they are encoded).
        self.metadata_pairs(r)
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum()
    }
}

/// A field name as a label name: characters outside `[a-zA-Z0-9_]` become `_`, and a
/// leading digit gets a `_` in front.
fn sanitize_label_name(name: &str) -> Cow<'_, str> {
    if config::is_label_name(name) {
        return Cow::Borrowed(name);
    }
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    Cow::Owned(out)
}

/// Writes `logproto.PushRequest` straight from the records: the same bytes
/// `prost::Message::encode_to_vec(&proto::PushRequest { .. })` gives (a test checks),
/// without first copying every line into owned structs.
fn encode_protobuf(
    records: &[LogRecord],
    groups: &[Group],
    pieces: &[(usize, Range<usize>)],
    metas: &[Metadata<'_>],
    meta_of: &[usize],
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
    /// A proto3 string field: left out when empty.
    fn string_len(s: &str) -> usize {
        if s.is_empty() {
            0
        } else {
            delimited_len(s.len())
        }
    }
    fn pair_len(name: &str, value: &str) -> usize {
        string_len(name) + string_len(value)
    }
    fn entry_len(ts: i64, line: &str, meta_len: usize) -> usize {
        // The timestamp is always present (an optional message set to Some).
        delimited_len(timestamp_len(ts)) + string_len(line) + meta_len
    }
    fn put_string(field: u32, s: &str, buf: &mut Vec<u8>) {
        if !s.is_empty() {
            encode_key(field, WireType::LengthDelimited, buf);
            encode_varint(s.len() as u64, buf);
            buf.extend_from_slice(s.as_bytes());
        }
    }
    // Each distinct metadata is encoded once (its `structuredMetadata` fields, field 3).
    let meta_bytes: Vec<Vec<u8>> = metas
        .iter()
        .map(|meta| {
            let mut b = Vec::new();
            for (name, value) in meta {
                encode_key(3, WireType::LengthDelimited, &mut b);
                encode_varint(pair_len(name, value) as u64, &mut b);
                put_string(1, name, &mut b);
                put_string(2, value, &mut b);
            }
            b
        })
        .collect();
    // `meta_of` follows the entries of `pieces` in order (empty: no entry has metadata).
    // Each entry's and stream's length is computed once (the length prefixes come before
    // the bytes they count).
    let meta_of_entry = |n: usize| -> &[u8] {
        match meta_of.get(n) {
            Some(&m) => &meta_bytes[m],
            None => &[],
        }
    };
    let mut entry_lens =
        Vec::with_capacity(pieces.iter().map(|(_, range)| range.len()).sum::<usize>());
    let mut stream_lens = Vec::with_capacity(pieces.len());
    for (g, range) in pieces {
        let group = &groups[*g];
        let mut len = string_len(&group.label_string);
        for &(ts, i) in &group.entries[range.clone()] {
            let entry = entry_len(
                ts,
                &records[i].message,
                meta_of_entry(entry_lens.len()).len(),
            );
            entry_lens.push(entry);
            len += delimited_len(entry);
        }
        stream_lens.push(len);
    }
    let total: usize = stream_lens.iter().map(|&l| delimited_len(l)).sum();
    let mut buf = Vec::with_capacity(total);
    let mut n = 0;
    for ((g, range), &stream_len) in pieces.iter().zip(&stream_lens) {
        let group = &groups[*g];
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(stream_len as u64, &mut buf);
        put_string(1, &group.label_string, &mut buf);
        for &(ts, i) in &group.entries[range.clone()] {
            let line = &records[i].message;
            let meta = meta_of_entry(n);
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(entry_lens[n] as u64, &mut buf);
            n += 1;
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
            put_string(2, line, &mut buf);
            buf.extend_from_slice(meta);
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
        Ok(Self {
            dead_letter: DeadLetter::for_http_sink(&name, &config.http, state_dir, metrics),
            encoder: LokiEncoder::new(config, identity),
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
    ) -> Result<usize, SinkError> {
        let requests = self.encoder.encode(records, self.client.gzip());
        let mut backoff = self.retry.backoff();
        let mut dead_lettered = 0;
        for request in requests {
            let tenant: Vec<(&'static str, &str)> = request
                .tenant
                .iter()
                .map(|t| ("X-Scope-OrgID", t.as_str()))
                .collect();
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
                Settled::Refused {
                    status,
                    detail,
                    body,
                } => {
                    // Loki keeps the valid entries of a push and names the others in its
                    // answer: dead-letter those one by one (see `refusals`).
                    let named = (status == 400)
                        .then(|| {
                            refusals::attribute(&String::from_utf8_lossy(&body), &request.streams)
                        })
                        .flatten();
                    let refused: Vec<Refusal<'_>> = match named {
                        Some(named) => named
                            .into_iter()
                            .map(|(i, reason)| Refusal {
                                record: &records[i],
                                status: Some(status),
                                reason,
                            })
                            .collect(),
                        None => request
                            .records
                            .iter()
                            .map(|&i| Refusal {
                                record: &records[i],
                                status: Some(status),
                                reason: detail.clone(),
                            })
                            .collect(),
                    };
                    let kept = request.records.len() - refused.len();
                    if kept > 0 {
                        self.client.metrics.sent(kept, 0);
                    }
                    self.dead_letter
                        .write_retrying(&refused, &mut backoff, cancel)
                        .await?;
                    dead_lettered += refused.len();
                }
            }
        }
        Ok(dead_lettered)
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

    /// One delivery at a time, each request after the previous one settled: a stream's
    /// entries then reach Loki in order even across retries (a Loki without unordered
    /// writes refuses an entry older than the newest of its stream).
    fn max_in_flight(&self) -> Option<usize> {
        Some(1)
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        Box::pin(async move { self.deliver_all(records, cancel).await.map(|_| ()) })
    }

    fn deliver_counted<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> CountedFuture<'a> {
        Box::pin(self.deliver_all(records, cancel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_protobuf_matches_prost() {
        let config: LokiConfig = serde_json::from_value(
            serde_json::json!({"url": "http://l", "labels": {"env": "x"},
                "record_labels": {"namespace": "namespace", "container": "container", "pod": "pod",
                    "stream": "stream", "node": "node"},
                "structured_metadata_fields": true}),
        )
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
        let mut parsed = rec(&b, 7, r#"{"level":"warn","user.id":7,"ok":false,"o":{}}"#);
        parsed.fields = serde_json::from_str(&parsed.message).unwrap();
        let records = vec![
            parsed,
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
        let metas: Vec<Metadata<'_>> = pieces
            .iter()
            .flat_map(|(g, r)| groups[*g].entries[r.clone()].iter())
            .map(|&(_, i)| encoder.metadata(&records[i]))
            .collect();
        let mut k = 0;
        let expected = proto::PushRequest {
            streams: pieces
                .iter()
                .map(|(g, range)| proto::StreamAdapter {
                    labels: groups[*g].label_string.clone(),
                    entries: groups[*g].entries[range.clone()]
                        .iter()
                        .map(|&(ts, i)| {
                            k += 1;
                            proto::EntryAdapter {
                                timestamp: Some(proto::Timestamp {
                                    seconds: ts.div_euclid(1_000_000_000),
                                    nanos: ts.rem_euclid(1_000_000_000) as i32,
                                }),
                                line: records[i].message.clone(),
                                structured_metadata: metas[k - 1]
                                    .iter()
                                    .map(|(n, v)| proto::LabelPairAdapter {
                                        name: n.to_string(),
                                        value: v.to_string(),
                                    })
                                    .collect(),
                            }
                        })
                        .collect(),
                    hash: 0,
                })
                .collect(),
        };
        assert_eq!(
            encode_protobuf(
                &records,
                &groups,
                &pieces,
                &metas,
                &(0..metas.len()).collect::<Vec<_>>()
            ),
            prost::Message::encode_to_vec(&expected)
        );
        // Default structured metadata (pod, pod_uid; node empty here) then the scalar
        // fields under label-safe names; objects are left out.
        let parsed_meta: Vec<(String, String)> = encoder
            .metadata(&records[0])
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            parsed_meta,
            pairs(&[
                ("pod", "b"),
                ("pod_uid", "u"),
                ("level", "warn"),
                ("ok", "false"),
                ("user_id", "7")
            ])
        );
        // Node falls back to the identity (empty here: the label is left out).
        assert!(groups.iter().any(|g| g.label_string
            == r#"{container="c", env="x", namespace="ns", pod="a", stream="stdout"}"#));
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
