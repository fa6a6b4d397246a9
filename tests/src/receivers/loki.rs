//! A Loki push receiver: `POST /loki/api/v1/push` with snappy'd protobuf
//! (`logproto.PushRequest`, decoded with its own hand-written structs so a field-number
//! mistake in the agent shows up) or JSON; records the `X-Scope-OrgID` tenant; validates
//! label sets; and, like Loki without unordered writes, refuses entries older than the
//! newest accepted one of their stream ("entry out of order", HTTP 400, the rest of the
//! push is kept) and drops exact duplicates silently. Refusals are worded as Loki words
//! them: the ingester's per-stream block (at most 10 entries listed, then
//! `user '…', total ignored: N out of M for stream: {…}`) and the distributor's
//! `entry for stream '{…}' has timestamp too old: …` lines (with [`LokiReceiver::set_reject_older_than`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};

use super::server::{Handler, HttpRequest, Reply, Server};

/// Loki's wire structs (pkg/push/push.proto), written independently of the agent's.
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// One accepted entry.
#[derive(Debug, Clone, PartialEq)]
pub struct LokiEntry {
    pub tenant: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub timestamp_nanos: i64,
    pub line: String,
    /// Structured metadata (protobuf field 3, or the JSON value's third element).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Default)]
struct Store {
    entries: Vec<LokiEntry>,
    /// Newest timestamp and the lines at it, per (tenant, stream).
    #[allow(clippy::type_complexity)]
    newest: HashMap<(Option<String>, BTreeMap<String, String>), (i64, Vec<String>)>,
    pushes_by_encoding: HashMap<&'static str, usize>,
}

struct Loki {
    store: Mutex<Store>,
    enforce_order: AtomicBool,
    /// Entries older than this (nanoseconds) are refused as too old (`i64::MIN`: none).
    reject_older_than: std::sync::atomic::AtomicI64,
}

/// Loki's `max_returned_stream_errors` default.
const MAX_RETURNED_STREAM_ERRORS: usize = 10;

/// A running Loki receiver.
pub struct LokiReceiver {
    server: Server,
    loki: Arc<Loki>,
}

impl LokiReceiver {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_tls(None).await
    }

    pub async fn start_with_tls(tls: Option<Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        let loki = Arc::new(Loki {
            store: Mutex::default(),
            enforce_order: AtomicBool::new(true),
            reject_older_than: std::sync::atomic::AtomicI64::new(i64::MIN),
        });
        let server = Server::start(Arc::clone(&loki) as Arc<dyn Handler>, tls).await?;
        Ok(Self { server, loki })
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Off: accept out-of-order entries, as Loki does with `unordered_writes`.
    pub fn set_enforce_order(&self, on: bool) {
        self.loki.enforce_order.store(on, Ordering::SeqCst);
    }

    /// Refuse entries older than `nanos` as "too old" (Loki's `reject_old_samples`).
    pub fn set_reject_older_than(&self, nanos: i64) {
        self.loki.reject_older_than.store(nanos, Ordering::SeqCst);
    }

    /// Every accepted entry, in acceptance order.
    pub fn entries(&self) -> Vec<LokiEntry> {
        self.loki.store.lock().unwrap().entries.clone()
    }

    /// How many entries were accepted (duplicates included), without copying them.
    pub fn entry_count(&self) -> usize {
        self.loki.store.lock().unwrap().entries.len()
    }

    /// Accepted lines.
    pub fn lines(&self) -> Vec<String> {
        self.entries().into_iter().map(|e| e.line).collect()
    }

    /// Accepted pushes by encoding (`protobuf`, `json`).
    pub fn pushes(&self, encoding: &str) -> usize {
        self.loki
            .store
            .lock()
            .unwrap()
            .pushes_by_encoding
            .get(encoding)
            .copied()
            .unwrap_or(0)
    }
}

/// Parses a Prometheus label set `{a="x", b="y"}` (with `\\`, `\"`, `\n` escapes).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let inner = s
        .trim()
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("labels {s:?}: not in braces"))?;
    let mut labels = BTreeMap::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("labels {s:?}: missing '='"))?;
        let name = rest[..eq].trim();
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!("labels {s:?}: invalid label name {name:?}"));
        }
        let after = rest[eq + 1..].trim_start();
        let mut chars = after.char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("labels {s:?}: value of {name} not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false
                }
                (true, c) => {
                    value.push(c);
                    escaped = false
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        let end = end.ok_or_else(|| format!("labels {s:?}: unterminated value"))?;
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("labels {s:?}: duplicate label {name}"));
        }
        rest = after[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("labels {s:?}: expected ','"));
        }
    }
    if labels.is_empty() {
        return Err("error at least one label pair is required per stream".to_string());
    }
    Ok(labels)
}

/// One stream of a push, decoded from either encoding.
struct PushStream {
    labels: BTreeMap<String, String>,
    entries: Vec<(i64, String, BTreeMap<String, String>)>,
}

fn decode_protobuf(body: &[u8]) -> Result<Vec<PushStream>, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| format!("snappy decode: {e}"))?;
    let push: wire::PushRequest =
        prost::Message::decode(&raw[..]).map_err(|e| format!("protobuf decode: {e}"))?;
    push.streams
        .into_iter()
        .map(|s| {
            Ok(PushStream {
                labels: parse_labels(&s.labels)?,
                entries: s
                    .entries
                    .into_iter()
                    .map(|e| {
                        let ts = e.timestamp.unwrap_or_default();
                        let metadata = e
                            .structured_metadata
                            .into_iter()
                            .map(|p| (p.name, p.value))
                            .collect();
                        (
                            ts.seconds * 1_000_000_000 + i64::from(ts.nanos),
                            e.line,
                            metadata,
                        )
                    })
                    .collect(),
            })
        })
        .collect()
}

fn decode_json(body: &[u8]) -> Result<Vec<PushStream>, String> {
    #[derive(serde::Deserialize)]
    struct Push {
        streams: Vec<JsonStream>,
    }
    #[derive(serde::Deserialize)]
    struct JsonStream {
        stream: BTreeMap<String, String>,
        values: Vec<Vec<serde_json::Value>>,
    }
    let push: Push = serde_json::from_slice(body).map_err(|e| format!("json decode: {e}"))?;
    push.streams
        .into_iter()
        .map(|s| {
            if s.stream.is_empty() {
                return Err("error at least one label pair is required per stream".to_string());
            }
            let entries = s
                .values
                .into_iter()
                .map(|v| {
                    let (ts, line, meta) = match v.as_slice() {
                        [
                            serde_json::Value::String(ts),
                            serde_json::Value::String(line),
                        ] => (ts, line, None),
                        [
                            serde_json::Value::String(ts),
                            serde_json::Value::String(line),
                            serde_json::Value::Object(meta),
                        ] => (ts, line, Some(meta)),
                        _ => {
                            return Err(format!(
                                "value {v:?} is not [\"<nanos>\", \"<line>\", {{metadata}}?]"
                            ));
                        }
                    };
                    let mut metadata = BTreeMap::new();
                    for (k, v) in meta.into_iter().flatten() {
                        let serde_json::Value::String(v) = v else {
                            return Err(format!("structured metadata {k:?} is not a string"));
                        };
                        metadata.insert(k.clone(), v.clone());
                    }
                    ts.parse::<i64>()
                        .map(|ts| (ts, line.clone(), metadata))
                        .map_err(|_| format!("timestamp {ts:?} is not nanoseconds"))
                })
                .collect::<Result<_, _>>()?;
            Ok(PushStream {
                labels: s.stream,
                entries,
            })
        })
        .collect()
}

impl Handler for Loki {
    fn handle(&self, req: &HttpRequest) -> Reply {
        if req.path != "/loki/api/v1/push" || req.method != Method::POST {
            return Reply::text(StatusCode::NOT_FOUND, "404 page not found");
        }
        let content_type = req
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (encoding, decoded) = if content_type.starts_with("application/json") {
            ("json", decode_json(&req.body))
        } else {
            ("protobuf", decode_protobuf(&req.body))
        };
        let streams = match decoded {
            Ok(s) => s,
            Err(e) => return Reply::text(StatusCode::BAD_REQUEST, e),
        };
        let tenant = req
            .headers
            .get("X-Scope-OrgID")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let enforce = self.enforce_order.load(Ordering::SeqCst);
        let oldest = self.reject_older_than.load(Ordering::SeqCst);
        let mut store = self.store.lock().unwrap();
        *store.pushes_by_encoding.entry(encoding).or_default() += 1;
        let tenant_name = tenant.clone().unwrap_or_else(|| "fake".to_string());
        let mut validation = Vec::new();
        let mut blocks = Vec::new();
        for stream in streams {
            let key = (tenant.clone(), stream.labels.clone());
            let label_string = format_labels(&stream.labels);
            let mut ignored = Vec::new();
            let total = stream.entries.len();
            for (ts, line, metadata) in stream.entries {
                if ts < oldest {
                    validation.push(format!(
                        "entry for stream '{label_string}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
                        format_go_time(ts),
                        format_go_time(oldest)
                    ));
                    continue;
                }
                let newest = store
                    .newest
                    .entry(key.clone())
                    .or_insert((i64::MIN, Vec::new()));
                if ts == newest.0 && newest.1.contains(&line) {
                    continue; // Loki drops exact duplicates silently.
                }
                if enforce && ts < newest.0 {
                    ignored.push(ts);
                    continue;
                }
                if ts > newest.0 {
                    *newest = (ts, Vec::new());
                }
                newest.1.push(line.clone());
                store.entries.push(LokiEntry {
                    tenant: tenant.clone(),
                    labels: stream.labels.clone(),
                    timestamp_nanos: ts,
                    line,
                    metadata,
                });
            }
            if !ignored.is_empty() {
                let mut block = String::new();
                for ts in ignored.iter().take(MAX_RETURNED_STREAM_ERRORS) {
                    block.push_str(&format!(
                        "entry with timestamp {} ignored, reason: 'entry out of order',\n",
                        format_go_time(*ts)
                    ));
                }
                block.push_str(&format!(
                    "user '{tenant_name}', total ignored: {} out of {total} for stream: {label_string}",
                    ignored.len()
                ));
                blocks.push(block);
            }
        }
        if validation.is_empty() && blocks.is_empty() {
            Reply::empty(StatusCode::NO_CONTENT)
        } else {
            validation.extend(blocks);
            Reply::text(StatusCode::BAD_REQUEST, validation.join("\n"))
        }
    }
}

/// Go's `time.Time.String()` in UTC, as Loki prints timestamps in its answers.
pub fn format_go_time(nanos: i64) -> String {
    let dt = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(nanos);
    let frac = nanos.rem_euclid(1_000_000_000);
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    if frac != 0 {
        let digits = format!("{frac:09}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

/// Prometheus' `labels.String()`: `{a="x", b="y"}`, sorted, Go-quoted values.
fn format_labels(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_label_sets() {
        let l = parse_labels(r#"{a="x", b_2="q\"\\\n", c=""}"#).unwrap();
        assert_eq!(l["a"], "x");
        assert_eq!(l["b_2"], "q\"\\\n");
        assert!(parse_labels("{}").is_err());
        assert!(parse_labels(r#"{a="x""#).is_err());
        assert!(parse_labels(r#"{1a="x"}"#).is_err());
        assert!(parse_labels(r#"{a="x" b="y"}"#).is_err());
    }
}
