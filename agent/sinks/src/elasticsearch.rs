//! Elasticsearch `_bulk` (NDJSON `create` actions, ECS-shaped documents).
//!
//! Every document gets a deterministic `_id` from the record's file identity and offset,
//! so a retried or redelivered record answers 409 (already there) instead of being indexed
//! twice; `create` is also what data streams require. The bulk answer is read per item:
//! 200/201/409 done, 429/5xx retried (only those items), other 4xx dead-lettered.
//! A whole-request 429/5xx/network failure retries the request.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::ops::Range;

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::config::ElasticsearchConfig;
use super::deadletter::{DeadLetter, Refusal};
use super::http::{HttpClient, Settled};
use super::jsonl::Rfc3339Nanos;
use super::kubernetes::{EcsContainer, Kubernetes, Style};
use super::metrics::SinkMetrics;
use super::{CountedFuture, DeliverFuture, Sink, SinkError};
use node_agent_core::backoff::Backoff;
use node_agent_core::record::{LogRecord, SourceMeta};

/// The deterministic document id of a record: file identity and byte offset.
pub fn document_id(record: &LogRecord) -> String {
    let mut id = String::with_capacity(DOCUMENT_ID_MAX);
    write_document_id(record, &mut id);
    id
}

/// `{:016x}-{:x}` of (file id, offset) is at most 16 + 1 + 16 bytes.
const DOCUMENT_ID_MAX: usize = 33;

/// Appends [`document_id`] to `out`: the digits written directly, since `format!`'s
/// machinery per record was ~5% of the encoder's instructions.
fn write_document_id(record: &LogRecord, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; DOCUMENT_ID_MAX];
    let file_id = record.source.file_id;
    for (k, b) in buf[..16].iter_mut().enumerate() {
        *b = HEX[((file_id >> (60 - 4 * k)) & 0xf) as usize];
    }
    buf[16] = b'-';
    // The offset without leading zeros (at least one digit).
    let digits = (64 - record.offset.leading_zeros()).div_ceil(4).max(1) as usize;
    for (k, b) in buf[17..17 + digits].iter_mut().enumerate() {
        *b = HEX[((record.offset >> (4 * (digits - 1 - k))) & 0xf) as usize];
    }
    out.extend(buf[..17 + digits].iter().map(|&b| char::from(b)));
}

/// Where documents go.
#[derive(Debug, Clone)]
enum Target {
    DataStream(String),
    /// A data stream name with `{namespace}` in it, filled per record.
    DataStreamPerNamespace(String),
    /// A chrono pattern; `per_day` when it only has date-level fields (cacheable per day).
    Pattern {
        items: Vec<Item<'static>>,
        per_day: bool,
    },
}

/// Builds bulk bodies. Separate from the sink so benchmarks can drive it.
pub struct EsEncoder {
    target: Target,
    fields_key: String,
    buffers: std::sync::Arc<BufferPool>,
    sources: SourceFieldsCache,
}

/// Each source's serialised fields, kept across batches: a batch holds runs of a few
/// dozen records per file, and serialising tens of labels and annotations once per run
/// was still a tenth of the pipeline's CPU.
///
/// Keyed by the source's address, with a `Weak` that keeps the allocation (not the
/// metadata) alive, so no other source can take that address while the entry exists;
/// a source is immutable behind its `Arc` (`get_mut` refuses while a `Weak` exists), so
/// the bytes stay right. New metadata for a file comes as a new `Arc`, a new entry.
#[derive(Default)]
struct SourceFieldsCache {
    entries: std::sync::Mutex<std::collections::HashMap<usize, CachedFields>>,
}

/// A source (held weakly) and its serialised fields.
type CachedFields = (std::sync::Weak<SourceMeta>, std::sync::Arc<[u8]>);

/// Entries before the ones of dropped sources are pruned (a node's containers, rotated
/// files and a margin; a few KiB each).
const CACHED_SOURCES: usize = 1024;

impl SourceFieldsCache {
    fn get(&self, source: &std::sync::Arc<SourceMeta>) -> std::sync::Arc<[u8]> {
        let key = std::sync::Arc::as_ptr(source) as usize;
        let lock = || {
            self.entries
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
        };
        if let Some((_, fields)) = lock().get(&key) {
            return std::sync::Arc::clone(fields);
        }
        let fields: std::sync::Arc<[u8]> = source_fields(source).into();
        let mut entries = lock();
        if entries.len() >= CACHED_SOURCES {
            entries.retain(|_, (weak, _)| weak.strong_count() > 0);
            if entries.len() >= CACHED_SOURCES {
                entries.clear();
            }
        }
        entries.insert(
            key,
            (
                std::sync::Arc::downgrade(source),
                std::sync::Arc::clone(&fields),
            ),
        );
        fields
    }
}

/// Bodies' buffers, reused once a batch's last copy of its body is dropped. A fresh
/// buffer per batch is memory the kernel maps and zeroes page by page on first write and
/// unmaps after: with enriched documents (several KiB each, a batch a few MiB) those page
/// faults cost more CPU than writing the bytes.
#[derive(Default)]
struct BufferPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept: as many as batches are usually in flight at once (the default
/// `max_in_flight_batches`), so each finds one when it is encoded.
const POOLED_BUFFERS: usize = 4;

impl BufferPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.free
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// An empty buffer for at least `capacity` bytes.
    fn take(&self, capacity: usize) -> Vec<u8> {
        let Some(mut buf) = self.lock().pop() else {
            return Vec::with_capacity(capacity);
        };
        // A buffer far larger than needed (a backlog's batches, now a trickle) goes back
        // to the allocator rather than staying resident.
        if buf.capacity() / 4 > capacity.max(64 << 10) {
            return Vec::with_capacity(capacity);
        }
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        let mut free = self.lock();
        if free.len() < POOLED_BUFFERS {
            buf.clear();
            free.push(buf);
        }
    }
}

/// An encoded body's bytes: back to the pool when the last `Bytes` of it is dropped.
struct PooledBuffer {
    buf: Vec<u8>,
    pool: std::sync::Weak<BufferPool>,
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give_back(std::mem::take(&mut self.buf));
        }
    }
}

/// A batch encoded once: `bytes[spans[i]]` is record `i`'s action and document lines.
pub struct EncodedBatch {
    pub bytes: Bytes,
    pub spans: Vec<Range<usize>>,
}

impl EncodedBatch {
    /// The body for the records `indices` (zero-copy when they are contiguous).
    pub fn body(&self, indices: &[usize]) -> Bytes {
        let (Some(&first), Some(&last)) = (indices.first(), indices.last()) else {
            return Bytes::new();
        };
        if last - first + 1 == indices.len() {
            return self
                .bytes
                .slice(self.spans[first].start..self.spans[last].end);
        }
        let len = indices.iter().map(|&i| self.spans[i].len()).sum();
        let mut body = BytesMut::with_capacity(len);
        for &i in indices {
            body.extend_from_slice(&self.bytes[self.spans[i].clone()]);
        }
        body.freeze()
    }
}

#[derive(Serialize)]
struct Action<'a> {
    create: ActionMeta<'a>,
}

#[derive(Serialize)]
struct ActionMeta<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
}

/// The ECS-shaped document's fields of the record itself; the source's part
/// ([`SourceFields`]) is spliced in after them.
#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    message: &'a str,
    stream: &'static str,
    log: Log<'a>,
}

/// The document's fields that only depend on the record's source (its file): the same
/// bytes for every record of a file, serialised once per run of records from one source
/// in a batch. With Kubernetes metadata that is most of a document (tens of labels and
/// annotations), and serialising it per record cost more than the rest of the pipeline.
#[derive(Serialize)]
struct SourceFields<'a> {
    kubernetes: Kubernetes<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<EcsContainer<'a>>,
}

/// Bytes of a document besides its message, path and source fields (action line,
/// timestamp, stream, offset, flags), for the buffer's size.
const DOCUMENT_OVERHEAD: usize = 256;

/// `,"kubernetes":{…},"container":{…}` for records of `source`.
fn source_fields(source: &SourceMeta) -> Vec<u8> {
    let mut out = serde_json::to_vec(&SourceFields {
        kubernetes: Kubernetes::new(
            source,
            Style {
                dedot: true,
                container_details: false,
            },
        ),
        container: EcsContainer::new(source),
    })
    .expect("JSON into Vec");
    // `{…}` → `,…`: spliced into the document before its own closing brace.
    out.pop();
    if let Some(open) = out.first_mut() {
        *open = b',';
    }
    out
}

#[derive(Serialize)]
struct Log<'a> {
    file: LogFile<'a>,
    offset: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    malformed: bool,
}

#[derive(Serialize)]
struct LogFile<'a> {
    path: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct Event<'a> {
    original: &'a str,
}

impl EsEncoder {
    pub fn new(config: &ElasticsearchConfig) -> anyhow::Result<Self> {
        let target = match &config.data_stream {
            Some(name) if name.contains(NAMESPACE_PLACEHOLDER) => {
                let sample = data_stream_for(name, "kube-system");
                check_index_name(&sample)
                    .with_context(|| format!("data_stream {name:?} (e.g. {sample:?})"))?;
                Target::DataStreamPerNamespace(name.clone())
            }
            Some(name) => {
                check_index_name(name).with_context(|| format!("data_stream {name:?}"))?;
                Target::DataStream(name.clone())
            }
            None => {
                let items: Vec<Item<'static>> = StrftimeItems::new(&config.index)
                    .map(|item| item.to_owned())
                    .collect();
                if items.iter().any(|i| matches!(i, Item::Error)) {
                    anyhow::bail!("index {:?}: invalid strftime pattern", config.index);
                }
                let per_day = items.iter().all(|i| match i {
                    Item::Numeric(n, _) => {
                        use chrono::format::Numeric::*;
                        matches!(
                            n,
                            Year | YearDiv100
                                | YearMod100
                                | IsoYear
                                | IsoYearDiv100
                                | IsoYearMod100
                                | Month
                                | Day
                                | WeekFromSun
                                | WeekFromMon
                                | IsoWeek
                                | NumDaysFromSun
                                | WeekdayFromMon
                                | Ordinal
                        )
                    }
                    Item::Fixed(f) => {
                        use chrono::format::Fixed::*;
                        matches!(
                            f,
                            ShortMonthName | LongMonthName | ShortWeekdayName | LongWeekdayName
                        )
                    }
                    _ => true,
                });
                let target = Target::Pattern { items, per_day };
                let sample = index_for(&target, 1_700_000_000_000_000_000)?;
                check_index_name(&sample)
                    .with_context(|| format!("index {:?} (e.g. {sample:?})", config.index))?;
                target
            }
        };
        Ok(Self {
            target,
            fields_key: config.fields_key.clone(),
            buffers: std::sync::Arc::default(),
            sources: SourceFieldsCache::default(),
        })
    }

    /// Encodes every record as an action line and a document line.
    pub fn encode(&self, records: &[LogRecord]) -> Result<EncodedBatch, SinkError> {
        // First the source fields of each run of records from one source, so that the
        // buffer is allocated once at its size: enriched documents are several KiB, and
        // growing a batch's buffer copied it over and over.
        let mut runs: Vec<(*const SourceMeta, std::sync::Arc<[u8]>)> = Vec::new();
        let mut capacity = 0;
        for r in records {
            let key = std::sync::Arc::as_ptr(&r.source);
            if runs.last().is_none_or(|(k, _)| *k != key) {
                runs.push((key, self.sources.get(&r.source)));
            }
            capacity += r.message.len()
                + DOCUMENT_OVERHEAD
                + r.source.path.as_os_str().len()
                + runs.last().map_or(0, |(_, f)| f.len());
        }
        let mut out = self.buffers.take(capacity);
        let mut spans = Vec::with_capacity(records.len());
        let mut cached_index: Option<(i64, String)> = None;
        let mut cached_stream: Option<(*const SourceMeta, String)> = None;
        // The source's path as text, converted (a UTF-8 check) once per run of its records.
        let mut cached_path: Option<(*const SourceMeta, std::borrow::Cow<'_, str>)> = None;
        let mut timestamps = Rfc3339Nanos::default();
        let mut id = String::with_capacity(DOCUMENT_ID_MAX);
        // The records hold their sources for the whole call, so a pointer cannot be
        // reused for another source meanwhile; the records come in the same order again.
        let mut run = 0;
        for r in records {
            let start = out.len();
            let index = match &self.target {
                Target::DataStream(name) => name.as_str(),
                Target::DataStreamPerNamespace(template) => {
                    let key = std::sync::Arc::as_ptr(&r.source);
                    if cached_stream.as_ref().is_none_or(|(k, _)| *k != key) {
                        cached_stream = Some((key, data_stream_for(template, &r.source.namespace)));
                    }
                    cached_stream
                        .as_ref()
                        .map(|(_, s)| s.as_str())
                        .unwrap_or_default()
                }
                Target::Pattern { per_day, .. } => {
                    let day = r.timestamp_nanos.div_euclid(86_400_000_000_000);
                    let key = if *per_day { day } else { r.timestamp_nanos };
                    if cached_index.as_ref().is_none_or(|(k, _)| *k != key) {
                        let index = index_for(&self.target, r.timestamp_nanos)
                            .map_err(|e| SinkError::Failed(format!("index name: {e}")))?;
                        cached_index = Some((key, index));
                    }
                    cached_index
                        .as_ref()
                        .map(|(_, s)| s.as_str())
                        .unwrap_or_default()
                }
            };
            id.clear();
            write_document_id(r, &mut id);
            serde_json::to_writer(
                &mut out,
                &Action {
                    create: ActionMeta { index, id: &id },
                },
            )
            .expect("JSON into Vec");
            out.push(b'\n');
            let key = std::sync::Arc::as_ptr(&r.source);
            while runs.get(run).is_some_and(|(k, _)| *k != key) {
                run += 1;
            }
            let fields = runs.get(run).map(|(_, f)| &f[..]).unwrap_or_default();
            let path = match &mut cached_path {
                Some((k, p)) if *k == key => p.clone(),
                slot => slot
                    .insert((key, r.source.path.to_string_lossy()))
                    .1
                    .clone(),
            };
            let timestamp = timestamps.format(r.timestamp_nanos);
            self.write_document(r, fields, timestamp, path, &mut out);
            out.push(b'\n');
            spans.push(start..out.len());
        }
        Ok(EncodedBatch {
            bytes: Bytes::from_owner(PooledBuffer {
                buf: out,
                pool: std::sync::Arc::downgrade(&self.buffers),
            }),
            spans,
        })
    }

    /// Writes `r`'s document with its source's pre-serialised `source_fields`, its
    /// formatted `timestamp` and its source's `path` as text.
    fn write_document(
        &self,
        r: &LogRecord,
        source_fields: &[u8],
        timestamp: String,
        path: std::borrow::Cow<'_, str>,
        out: &mut Vec<u8>,
    ) {
        let doc = Document {
            timestamp,
            message: &r.message,
            stream: r.stream.as_str(),
            log: Log {
                file: LogFile { path },
                offset: r.offset,
                truncated: r.truncated,
                malformed: r.malformed,
            },
        };
        serde_json::to_writer(&mut *out, &doc).expect("JSON into Vec");
        out.pop();
        out.extend_from_slice(source_fields);
        if r.malformed {
            out.extend_from_slice(b",\"event\":");
            serde_json::to_writer(
                &mut *out,
                &Event {
                    original: &r.message,
                },
            )
            .expect("JSON into Vec");
        }
        out.push(b'}');
        if let Some(fields) = &r.fields {
            // Splice `"<key>": {...}` before the closing brace rather than copying the map
            // into a serde_json::Value.
            out.pop();
            out.push(b',');
            serde_json::to_writer(&mut *out, &self.fields_key).expect("JSON into Vec");
            out.push(b':');
            serde_json::to_writer(&mut *out, fields).expect("JSON into Vec");
            out.push(b'}');
        }
    }
}

fn index_for(target: &Target, timestamp_nanos: i64) -> anyhow::Result<String> {
    match target {
        Target::DataStream(name) => Ok(name.clone()),
        Target::DataStreamPerNamespace(template) => Ok(data_stream_for(template, "default")),
        Target::Pattern { items, .. } => {
            let dt = DateTime::<Utc>::from_timestamp_nanos(timestamp_nanos);
            let mut s = String::new();
            write!(s, "{}", dt.format_with_items(items.iter()))
                .map_err(|_| anyhow::anyhow!("formatting the index pattern"))?;
            Ok(s)
        }
    }
}

/// What `data_stream` names the record's Kubernetes namespace with.
const NAMESPACE_PLACEHOLDER: &str = "{namespace}";

/// `logs-kubernetes-{namespace}` for namespace `team-a` → `logs-kubernetes-team_a`: the
/// data stream naming scheme (`<type>-<dataset>-<namespace>`) splits on `-`, so the
/// namespace part gets `_` instead; records without a namespace (host sources) go to
/// `default`, the scheme's default namespace.
fn data_stream_for(template: &str, namespace: &str) -> String {
    let ns = if namespace.is_empty() {
        "default".to_string()
    } else {
        namespace.to_ascii_lowercase().replace('-', "_")
    };
    template.replace(NAMESPACE_PLACEHOLDER, &ns)
}

/// The rules Elasticsearch enforces on index names, checked up front so a typo does not
/// dead-letter every record.
fn check_index_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 255 {
        anyhow::bail!("index names must have 1..=255 bytes");
    }
    if name.starts_with(['-', '_', '+']) || name == "." || name == ".." {
        anyhow::bail!("index names must not start with '-', '_' or '+'");
    }
    if name
        .chars()
        .any(|c| c.is_uppercase() || "\\/*?\"<>| ,#:".contains(c))
    {
        anyhow::bail!("index names must be lowercase without \\ / * ? \" < > | space , # :");
    }
    Ok(())
}

/// The parts of a bulk response we read.
#[derive(Deserialize)]
struct BulkResponse {
    /// Absent means the answer is not a bulk answer (e.g. an empty or HTML body).
    items: Option<Vec<ActionItem>>,
}

/// One entry of `items`: `{"<action>": {…}}`; the first action's answer, if any. Read
/// without building a map per item (a map per record was ~9% of an enriched run).
struct ActionItem(Option<BulkItem>);

impl<'de> Deserialize<'de> for ActionItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ActionItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a bulk item {\"<action>\": {...}}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ActionItem, A::Error> {
                let mut first = None;
                while let Some(serde::de::IgnoredAny) = map.next_key()? {
                    if first.is_none() {
                        first = Some(map.next_value::<BulkItem>()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(ActionItem(first))
            }
        }
        d.deserialize_map(Visitor)
    }
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// What happened to the items of one bulk request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ItemResults {
    pub(crate) done: Vec<usize>,
    pub(crate) retry: Vec<usize>,
    pub(crate) refused: Vec<(usize, u16, String)>,
}

/// Reads the per-item answers for `sent` (positions into the batch, in request order).
///
/// Every item is checked, whatever `errors` says: ES-compatible servers (OpenSearch,
/// VictoriaLogs, proxies) do not all set it, and a 2xx answer whose `items` does not have
/// one entry per sent record tells nothing about what landed.
pub(crate) fn read_items(body: &[u8], sent: &[usize]) -> Result<ItemResults, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("unreadable bulk response: empty body".to_string());
    }
    let response: BulkResponse =
        serde_json::from_slice(body).map_err(|e| format!("unreadable bulk response: {e}"))?;
    let Some(items) = response.items else {
        return Err("bulk response without `items`".to_string());
    };
    if items.len() != sent.len() {
        return Err(format!(
            "bulk response has {} items for {} sent",
            items.len(),
            sent.len()
        ));
    }
    let mut results = ItemResults::default();
    for (item, &index) in items.into_iter().zip(sent) {
        let Some(item) = item.0 else {
            return Err("bulk response item without an action".to_string());
        };
        match item.status {
            // 409 on `create` with our deterministic id: an earlier attempt already landed.
            200..=299 | 409 => results.done.push(index),
            429 | 500..=599 => results.retry.push(index),
            status => {
                let reason = item
                    .error
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| format!("item status {status}"));
                results.refused.push((index, status, reason));
            }
        }
    }
    Ok(results)
}

/// Bad answers (unreadable, or not one item per record) in a row a request gets before it
/// is split in two; a single record that keeps getting them is dead-lettered after
/// [`MAX_BAD_ANSWERS_ALONE`]. Without a bound one record a server chokes on (a 262 kB line
/// answered with an empty 200) would be resent forever and stall the pipeline.
const BAD_ANSWERS_BEFORE_SPLIT: u32 = 2;
const MAX_BAD_ANSWERS_ALONE: u32 = 3;

pub struct ElasticsearchSink {
    name: String,
    url: reqwest::Url,
    encoder: EsEncoder,
    client: HttpClient,
    dead_letter: DeadLetter,
    retry: super::config::RetryOptions,
    max_request_bytes: usize,
}

impl ElasticsearchSink {
    pub fn new(name: String, config: &ElasticsearchConfig) -> anyhow::Result<Self> {
        Self::with_state_dir(
            name,
            config,
            std::path::Path::new(node_agent_core::state::DEFAULT_STATE_DIR),
        )
    }

    pub fn with_state_dir(
        name: String,
        config: &ElasticsearchConfig,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let base = config.http.url.trim_end_matches('/');
        let mut url = reqwest::Url::parse(&format!("{base}/_bulk"))
            .with_context(|| format!("elasticsearch url {:?}", config.http.url))?;
        if let Some(pipeline) = &config.pipeline {
            url.query_pairs_mut().append_pair("pipeline", pipeline);
        }
        if !matches!(url.scheme(), "http" | "https") {
            anyhow::bail!(
                "elasticsearch url {:?}: scheme must be http or https",
                config.http.url
            );
        }
        let metrics = SinkMetrics::new(&name);
        let client = HttpClient::new(&name, &config.http, metrics.clone())?;
        Ok(Self {
            dead_letter: DeadLetter::for_http_sink(&name, &config.http, state_dir, metrics),
            encoder: EsEncoder::new(config)?,
            retry: config.http.retry,
            max_request_bytes: config.http.max_request_bytes,
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
        let batch = self.encoder.encode(records)?;
        let mut dead_lettered = 0;
        let mut backoff = self.retry.backoff();
        // Requests still to send, in order; a request split after a 413 or repeated bad
        // answers puts its halves at the front.
        let mut queue: VecDeque<Vec<usize>> = VecDeque::new();
        let mut start = 0;
        while start < records.len() {
            // Split at record boundaries so no request exceeds the limit (one oversized
            // record still goes alone).
            let mut end = start + 1;
            let mut size = batch.spans[start].len();
            while end < records.len() && size + batch.spans[end].len() <= self.max_request_bytes {
                size += batch.spans[end].len();
                end += 1;
            }
            queue.push_back((start..end).collect());
            start = end;
        }
        while let Some(chunk) = queue.pop_front() {
            if let Some((first, second)) = self
                .deliver_chunk(
                    records,
                    &batch,
                    chunk,
                    &mut backoff,
                    &mut dead_lettered,
                    cancel,
                )
                .await?
            {
                queue.push_front(second);
                queue.push_front(first);
            }
        }
        Ok(dead_lettered)
    }

    /// Sends `pending` until every item is indexed, already present, or dead-lettered, or
    /// returns the request cut in two halves to send instead.
    async fn deliver_chunk(
        &self,
        records: &[LogRecord],
        batch: &EncodedBatch,
        mut pending: Vec<usize>,
        backoff: &mut Backoff,
        dead_lettered: &mut usize,
        cancel: &CancellationToken,
    ) -> Result<Option<(Vec<usize>, Vec<usize>)>, SinkError> {
        let mut bad_answers = 0u32;
        while !pending.is_empty() {
            let raw = batch.body(&pending);
            let (body, gzipped) = if self.client.gzip() {
                (Bytes::from(super::http::gzip(&raw)), true)
            } else {
                (raw, false)
            };
            let settled = self
                .client
                .send_until_settled(
                    &self.url,
                    "application/x-ndjson",
                    body,
                    gzipped,
                    &[],
                    backoff,
                    cancel,
                )
                .await?;
            let results = match settled {
                // Too large, or one malformed document failing the whole request: halve
                // it until the culprit goes alone.
                Settled::Refused {
                    status: 413 | 400, ..
                } if pending.len() > 1 => return Ok(Some(halves(pending))),
                Settled::Refused { status, detail, .. } => ItemResults {
                    refused: pending
                        .iter()
                        .map(|&i| (i, status, detail.clone()))
                        .collect(),
                    ..Default::default()
                },
                Settled::Accepted { body, .. } => match read_items(&body, &pending) {
                    Ok(results) => results,
                    Err(detail) => {
                        // We cannot tell what landed; resending is safe thanks to the ids
                        // (a server that ignores them stores a bounded number of copies).
                        self.client.metrics.failure("bad_response");
                        bad_answers += 1;
                        if pending.len() > 1 && bad_answers >= BAD_ANSWERS_BEFORE_SPLIT {
                            tracing::warn!(sink = %self.name, %detail, records = pending.len(),
                                "bad bulk answers; splitting the request");
                            return Ok(Some(halves(pending)));
                        }
                        if pending.len() == 1 && bad_answers >= MAX_BAD_ANSWERS_ALONE {
                            ItemResults {
                                refused: vec![(
                                    pending[0],
                                    200,
                                    format!("{detail} ({bad_answers} times for this record alone)"),
                                )],
                                ..Default::default()
                            }
                        } else {
                            tracing::warn!(sink = %self.name, %detail, "resending the bulk request");
                            backoff.wait(cancel).await?;
                            self.client.metrics.retry(1);
                            continue;
                        }
                    }
                },
            };
            let done_bytes: usize = results.done.iter().map(|&i| batch.spans[i].len()).sum();
            self.client.metrics.sent(results.done.len(), done_bytes);
            if !results.refused.is_empty() {
                self.client.metrics.failure("item_4xx");
                let refusals: Vec<Refusal<'_>> = results
                    .refused
                    .iter()
                    .map(|(i, status, reason)| Refusal {
                        record: &records[*i],
                        status: Some(*status),
                        reason: reason.clone(),
                    })
                    .collect();
                self.dead_letter
                    .write_retrying(&refusals, backoff, cancel)
                    .await?;
                *dead_lettered += refusals.len();
            }
            pending = results.retry;
            if !pending.is_empty() {
                self.client.metrics.failure("item_retry");
                backoff.wait(cancel).await?;
                self.client.metrics.retry(pending.len());
            }
        }
        Ok(None)
    }
}

/// `pending` cut in two halves, each non-empty (`pending` has at least two entries).
fn halves(mut pending: Vec<usize>) -> (Vec<usize>, Vec<usize>) {
    let second = pending.split_off(pending.len() / 2);
    (pending, second)
}

impl Sink for ElasticsearchSink {
    fn name(&self) -> &str {
        &self.name
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

    /// Ids are what `{:016x}-{:x}` of (file id, offset) gives.
    #[test]
    fn document_ids_are_hex_file_id_and_offset() {
        let source = std::sync::Arc::new(crate::kubernetes::tests::enriched_source());
        for (file_id, offset) in [
            (0, 0),
            (1, 1),
            (0xabc, 0xf),
            (0x10, 0x10),
            (u64::MAX, u64::MAX),
            (0x0123_4567_89ab_cdef, 1 << 63),
            (7, 12_345_678),
        ] {
            let r = LogRecord::new(
                std::sync::Arc::new(SourceMeta {
                    file_id,
                    ..(*source).clone()
                }),
                0,
                node_agent_core::record::Stream::Stdout,
                offset,
                String::new(),
            );
            assert_eq!(document_id(&r), format!("{file_id:016x}-{offset:x}"));
        }
    }

    /// An encoder with the default configuration (only a URL).
    fn default_encoder() -> EsEncoder {
        let config: ElasticsearchConfig =
            serde_json::from_value(serde_json::json!({"url": "http://es:9200"})).unwrap();
        EsEncoder::new(&config).unwrap()
    }

    /// The source fields are serialised once per run of records from one source: a
    /// batch mixing sources (and with malformed records and parsed fields) encodes every
    /// document exactly as it encodes alone.
    #[test]
    fn a_batch_of_mixed_sources_encodes_each_document_as_alone() {
        use node_agent_core::record::Stream;
        let encoder = default_encoder();
        let enriched = std::sync::Arc::new(crate::kubernetes::tests::enriched_source());
        let bare = std::sync::Arc::new(SourceMeta {
            kubernetes: None,
            pod: "other".into(),
            file_id: 2,
            ..crate::kubernetes::tests::enriched_source()
        });
        let mut records = Vec::new();
        for (i, source) in [&enriched, &enriched, &bare, &enriched, &bare]
            .into_iter()
            .enumerate()
        {
            let mut r = LogRecord::new(
                std::sync::Arc::clone(source),
                1_700_000_000_000_000_000 + i as i64,
                Stream::Stdout,
                i as u64 * 10,
                format!("line \"{i}\""),
            );
            r.malformed = i == 1;
            if i == 3 {
                r.fields = Some(serde_json::from_str(r#"{"level":"warn"}"#).unwrap());
            }
            records.push(r);
        }
        let batch = encoder.encode(&records).unwrap();
        for (i, r) in records.iter().enumerate() {
            let alone = encoder.encode(std::slice::from_ref(r)).unwrap();
            assert_eq!(batch.body(&[i]), alone.bytes, "record {i}");
        }
        let text = std::str::from_utf8(&batch.bytes).unwrap();
        let docs: Vec<serde_json::Value> = text
            .lines()
            .skip(1)
            .step_by(2)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(docs.len(), 5);
        assert_eq!(docs[1]["event"]["original"], "line \"1\"");
        assert_eq!(docs[1]["kubernetes"]["labels"]["app"], "web");
        assert_eq!(docs[2]["kubernetes"]["pod"]["name"], "other");
        assert!(docs[2].get("container").is_none());
        assert_eq!(docs[3]["fields"]["level"], "warn");
        assert_eq!(docs[3]["container"]["id"], "c0ffee");
        assert_eq!(docs[4]["log"]["offset"], 40);
    }

    /// A batch's buffer is reused once its body is dropped, and a reused buffer holds
    /// only the new batch.
    #[test]
    fn bodies_reuse_the_buffers_of_delivered_batches() {
        use node_agent_core::record::Stream;
        let encoder = default_encoder();
        let source = std::sync::Arc::new(crate::kubernetes::tests::enriched_source());
        let record = |i: u64, message: &str| {
            LogRecord::new(
                std::sync::Arc::clone(&source),
                0,
                Stream::Stdout,
                i,
                message.into(),
            )
        };
        let long: Vec<LogRecord> = (0..50).map(|i| record(i, &"x".repeat(200))).collect();
        let first = encoder.encode(&long).unwrap();
        let first_at = first.bytes.as_ptr();
        let body = first.body(&[0, 1, 2]);
        drop(first);
        let short = [record(7, "short")];
        let fresh = encoder.encode(&short).unwrap();
        assert_ne!(
            fresh.bytes.as_ptr(),
            first_at,
            "a body still being sent keeps its buffer"
        );
        drop(fresh);
        drop(body);
        let second = encoder.encode(&short).unwrap();
        assert_eq!(
            second.bytes.as_ptr(),
            first_at,
            "the delivered batch's buffer"
        );
        let alone = default_encoder().encode(&short).unwrap();
        assert_eq!(second.bytes, alone.bytes);
    }

    /// The cached source fields follow the source: a file's new metadata (a new `Arc`)
    /// gets its own fields, and many sources coming and going keep the cache bounded.
    #[test]
    fn cached_source_fields_follow_the_source() {
        use node_agent_core::record::Stream;
        let encoder = default_encoder();
        let doc = |source: &std::sync::Arc<SourceMeta>| {
            let r = LogRecord::new(
                std::sync::Arc::clone(source),
                0,
                Stream::Stdout,
                0,
                "m".into(),
            );
            let batch = encoder.encode(std::slice::from_ref(&r)).unwrap();
            let text = std::str::from_utf8(&batch.bytes).unwrap().to_string();
            serde_json::from_str::<serde_json::Value>(text.lines().nth(1).unwrap()).unwrap()
        };
        let enriched = std::sync::Arc::new(crate::kubernetes::tests::enriched_source());
        assert_eq!(doc(&enriched)["kubernetes"]["labels"]["app"], "web");
        for i in 0..CACHED_SOURCES + 10 {
            let other = std::sync::Arc::new(SourceMeta {
                pod: format!("pod-{i}"),
                kubernetes: None,
                ..crate::kubernetes::tests::enriched_source()
            });
            assert_eq!(doc(&other)["kubernetes"]["pod"]["name"], format!("pod-{i}"));
            assert!(doc(&other)["kubernetes"].get("labels").is_none());
        }
        assert!(encoder.sources.entries.lock().unwrap().len() <= CACHED_SOURCES);
        assert_eq!(doc(&enriched)["kubernetes"]["labels"]["app"], "web");
    }

    #[test]
    fn documents_carry_ecs_kubernetes_and_container_fields() {
        let encoder = default_encoder();
        let source = std::sync::Arc::new(crate::kubernetes::tests::enriched_source());
        let r = LogRecord::new(
            source,
            0,
            node_agent_core::record::Stream::Stdout,
            7,
            "hi".into(),
        );
        let batch = encoder.encode(std::slice::from_ref(&r)).unwrap();
        let text = std::str::from_utf8(&batch.bytes).unwrap();
        let doc: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        let k = &doc["kubernetes"];
        assert_eq!(k["labels"]["app"], "web");
        assert_eq!(k["labels"]["app_kubernetes_io/name"], "web", "de-dotted");
        assert_eq!(k["deployment"]["name"], "web");
        assert_eq!(k["replicaset"]["name"], "web-7d4b9c8f6");
        assert_eq!(k["namespace_labels"]["env"], "prod");
        assert_eq!(k["node"]["labels"]["topology_kubernetes_io/zone"], "eu-1a");
        assert_eq!(k["pod"]["name"], "web-7d4b9c8f6-x2k4p");
        assert_eq!(doc["container"]["image"]["name"], "nginx:1.27");
        assert_eq!(doc["container"]["id"], "c0ffee");
    }

    #[test]
    fn reads_per_item_results() {
        let body = br#"{"took":3,"errors":true,"items":[
            {"create":{"_index":"i","_id":"a","status":201}},
            {"create":{"_index":"i","_id":"b","status":409,"error":{"type":"version_conflict_engine_exception"}}},
            {"create":{"_index":"i","_id":"c","status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"create":{"_index":"i","_id":"d","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad"}}}
        ]}"#;
        let r = read_items(body, &[10, 11, 12, 13]).unwrap();
        assert_eq!(r.done, [10, 11]);
        assert_eq!(r.retry, [12]);
        assert_eq!(r.refused.len(), 1);
        assert_eq!(r.refused[0].0, 13);
        assert!(r.refused[0].2.contains("mapper_parsing_exception"));
        assert!(read_items(br#"{"errors":true,"items":[]}"#, &[1]).is_err());
        assert!(read_items(b"<html>", &[1]).is_err());
        // `errors: false` is not taken on trust: items are still read and counted.
        assert!(read_items(br#"{"errors":false}"#, &[1]).is_err());
        assert!(read_items(b"", &[1]).is_err());
        assert!(read_items(br#"{"errors":false,"items":[]}"#, &[1, 2]).is_err());
        let r = read_items(
            br#"{"errors":false,"items":[{"create":{"status":201}},{"create":{"status":400}}]}"#,
            &[1, 2],
        )
        .unwrap();
        assert_eq!(r.done, [1]);
        assert_eq!(r.refused.len(), 1);
    }

    #[test]
    fn data_stream_names_per_namespace() {
        assert_eq!(
            data_stream_for("logs-kubernetes-{namespace}", "team-a"),
            "logs-kubernetes-team_a"
        );
        assert_eq!(
            data_stream_for("logs-k8s-{namespace}", ""),
            "logs-k8s-default"
        );
        let config: ElasticsearchConfig = serde_json::from_value(
            serde_json::json!({"url": "http://e", "data_stream": "Logs-{namespace}"}),
        )
        .unwrap();
        assert!(EsEncoder::new(&config).is_err());
    }

    #[test]
    fn validates_index_names() {
        assert!(check_index_name("node-agent-2024.01.01").is_ok());
        assert!(check_index_name("Logs").is_err());
        assert!(check_index_name("_x").is_err());
        assert!(check_index_name("a b").is_err());
    }
}
