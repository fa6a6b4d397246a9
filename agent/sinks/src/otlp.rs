//! OpenTelemetry logs over OTLP/HTTP (`POST /v1/logs`, binary protobuf
//! `ExportLogsServiceRequest`, gzip when `gzip: true`).
//!
//! Each record stream (a container's file) becomes one `ResourceLogs` whose resource
//! attributes follow the Kubernetes semantic conventions: `k8s.namespace.name`,
//! `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name`, `k8s.node.name`, the owning
//! workload (`k8s.deployment.name`, `k8s.statefulset.name`, …), `k8s.pod.label.<key>`,
//! `container.id`, `container.image.name`, and `service.name` (the
//! `app.kubernetes.io/name` label, else the workload, else the container), plus the static
//! `resource_attributes`. Each log record has the runtime timestamp, the observed time,
//! the message as a string body, `log.iostream` and `log.file.path`, the top-level parsed
//! fields as attributes, and a severity read from the parsed `level` / `severity` /
//! `lvl` field (the OTLP severity numbers: TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17,
//! FATAL 21).
//!
//! Answers: 2xx done; a 2xx with `partial_success.rejected_log_records > 0` is counted
//! (`failures{class="partial_success"}`) and logged with the receiver's message, but the
//! spec forbids retrying it and it does not say which records were rejected, so nothing
//! is dead-lettered. 429/502/503/504 and network errors: retried (honouring
//! `Retry-After`). Other 4xx: the request's records are dead-lettered.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use super::config::OtlpConfig;
use super::deadletter::{DeadLetter, Refusal};
use super::http::{HttpClient, Settled};
use super::metrics::SinkMetrics;
use super::{DeliverFuture, Sink, SinkError};
use node_agent_core::node::NodeIdentity;
use node_agent_core::record::{LogRecord, SourceMeta};

/// The OTLP messages we send and read (opentelemetry-proto, `logs/v1`, `common/v1`,
/// `resource/v1`, `collector/logs/v1`), the fields we use.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceResponse {
        #[prost(message, optional, tag = "1")]
        pub partial_success: Option<ExportLogsPartialSuccess>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsPartialSuccess {
        #[prost(int64, tag = "1")]
        pub rejected_log_records: i64,
        #[prost(string, tag = "2")]
        pub error_message: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(int32, tag = "2")]
        pub severity_number: i32,
        #[prost(string, tag = "3")]
        pub severity_text: String,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "11")]
        pub observed_time_unix_nano: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "any_value::Value", tags = "1, 2, 3, 4")]
        pub value: Option<any_value::Value>,
    }
    pub mod any_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(string, tag = "1")]
            StringValue(String),
            #[prost(bool, tag = "2")]
            BoolValue(bool),
            #[prost(int64, tag = "3")]
            IntValue(i64),
            #[prost(double, tag = "4")]
            DoubleValue(f64),
        }
    }
}

use proto::any_value::Value;

fn string(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_string(),
        value: Some(proto::AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
    }
}

/// A parsed field as an attribute value: scalars as themselves, the rest as JSON text.
fn any(v: &serde_json::Value) -> Option<proto::AnyValue> {
    let value = match v {
        serde_json::Value::Null => return None,
        serde_json::Value::String(s) => Value::StringValue(s.clone()),
        serde_json::Value::Bool(b) => Value::BoolValue(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        other => Value::StringValue(other.to_string()),
    };
    Some(proto::AnyValue { value: Some(value) })
}

/// OTLP severity from a level word (case-insensitive); `None`: not a level we know.
pub fn severity(level: &str) -> Option<(i32, &'static str)> {
    Some(match level.to_ascii_lowercase().as_str() {
        "trace" | "trc" => (1, "TRACE"),
        "debug" | "dbg" => (5, "DEBUG"),
        "info" | "information" | "inf" | "notice" => (9, "INFO"),
        "warn" | "warning" | "wrn" => (13, "WARN"),
        "error" | "err" | "eror" => (17, "ERROR"),
        "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => (21, "FATAL"),
        _ => return None,
    })
}

/// `registry:5000/app:1.2@sha256:…` → `registry:5000/app`.
fn image_name(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => image,
    }
}

/// Builds export requests. Separate from the sink so benchmarks can drive it.
pub struct OtlpEncoder {
    static_attributes: Vec<(String, String)>,
    node_fallback: String,
    max_request_bytes: usize,
}

/// One request: its encoded body and the batch indices it carries.
pub struct EncodedExport {
    pub body: Vec<u8>,
    pub records: Vec<usize>,
}

impl OtlpEncoder {
    pub fn new(config: &OtlpConfig, identity: &NodeIdentity) -> Self {
        Self {
            static_attributes: config
                .resource_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node_fallback: identity.node_name.clone(),
            max_request_bytes: config.http.max_request_bytes,
        }
    }

    fn resource(&self, s: &SourceMeta) -> proto::Resource {
        let mut attributes = Vec::with_capacity(8 + self.static_attributes.len());
        let node = if s.node.is_empty() {
            &self.node_fallback
        } else {
            &s.node
        };
        for (key, value) in [
            ("k8s.namespace.name", s.namespace.as_str()),
            ("k8s.pod.name", s.pod.as_str()),
            ("k8s.pod.uid", s.pod_uid.as_str()),
            ("k8s.container.name", s.container.as_str()),
            ("k8s.node.name", node.as_str()),
        ] {
            if !value.is_empty() {
                attributes.push(string(key, value));
            }
        }
        let meta = s.kubernetes.as_deref();
        let app = meta.and_then(|m| m.labels.get("app.kubernetes.io/name"));
        let workload = meta.and_then(|m| m.owner.as_ref());
        if let Some(w) = workload {
            let key = match w.kind.as_str() {
                "Deployment" => Some("k8s.deployment.name"),
                "StatefulSet" => Some("k8s.statefulset.name"),
                "DaemonSet" => Some("k8s.daemonset.name"),
                "ReplicaSet" => Some("k8s.replicaset.name"),
                "Job" => Some("k8s.job.name"),
                "CronJob" => Some("k8s.cronjob.name"),
                _ => None,
            };
            if let Some(key) = key {
                attributes.push(string(key, &w.name));
            }
        }
        let service = app
            .map(String::as_str)
            .or(workload.map(|w| w.name.as_str()))
            .unwrap_or(s.container.as_str());
        if !service.is_empty() {
            attributes.push(string("service.name", service));
        }
        if let Some(m) = meta {
            if let Some(c) = &m.container {
                if let Some((_, id)) = c.container_id.split_once("://") {
                    attributes.push(string("container.id", id));
                }
                let name = image_name(&c.image);
                if !name.is_empty() {
                    attributes.push(string("container.image.name", name));
                }
            }
            for (k, v) in &m.labels {
                attributes.push(string(&format!("k8s.pod.label.{k}"), v));
            }
        }
        for (k, v) in &self.static_attributes {
            attributes.push(string(k, v));
        }
        proto::Resource { attributes }
    }

    fn log_record(r: &LogRecord, observed: u64) -> proto::LogRecord {
        let mut attributes = vec![
            string("log.iostream", r.stream.as_str()),
            string("log.file.path", &r.source.path.to_string_lossy()),
        ];
        let mut severity_number = 0;
        let mut severity_text = String::new();
        if let Some(fields) = &r.fields {
            for key in ["level", "severity", "lvl", "loglevel"] {
                if let Some(serde_json::Value::String(level)) = fields.get(key) {
                    if let Some((n, _)) = severity(level) {
                        severity_number = n;
                    }
                    severity_text = level.clone();
                    break;
                }
            }
            for (k, v) in fields {
                if let Some(value) = any(v) {
                    attributes.push(proto::KeyValue {
                        key: k.clone(),
                        value: Some(value),
                    });
                }
            }
        }
        proto::LogRecord {
            time_unix_nano: u64::try_from(r.timestamp_nanos).unwrap_or(0),
            severity_number,
            severity_text,
            body: Some(proto::AnyValue {
                value: Some(Value::StringValue(r.message.clone())),
            }),
            attributes,
            observed_time_unix_nano: observed,
        }
    }

    /// Encodes `records` into requests of at most about `max_request_bytes`.
    pub fn encode(&self, records: &[LogRecord]) -> Vec<EncodedExport> {
        let observed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let scope = proto::InstrumentationScope {
            name: "node-agent".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let mut out = Vec::new();
        let mut request = proto::ExportLogsServiceRequest::default();
        let mut carried = Vec::new();
        let mut size = 0;
        let mut last: Option<*const SourceMeta> = None;
        for (i, r) in records.iter().enumerate() {
            let cost = r.message.len() + 160;
            if size > 0 && size + cost > self.max_request_bytes {
                out.push(EncodedExport {
                    body: std::mem::take(&mut request).encode_to_vec(),
                    records: std::mem::take(&mut carried),
                });
                size = 0;
                last = None;
            }
            // Records of one stream arrive together: one ResourceLogs per run of them.
            if last != Some(Arc::as_ptr(&r.source)) {
                request.resource_logs.push(proto::ResourceLogs {
                    resource: Some(self.resource(&r.source)),
                    scope_logs: vec![proto::ScopeLogs {
                        scope: Some(scope.clone()),
                        log_records: Vec::new(),
                    }],
                });
                last = Some(Arc::as_ptr(&r.source));
                size += 400;
            }
            if let Some(scope_logs) = request
                .resource_logs
                .last_mut()
                .and_then(|rl| rl.scope_logs.last_mut())
            {
                scope_logs.log_records.push(Self::log_record(r, observed));
            }
            carried.push(i);
            size += cost;
        }
        if !carried.is_empty() {
            out.push(EncodedExport {
                body: request.encode_to_vec(),
                records: carried,
            });
        }
        out
    }
}

pub struct OtlpSink {
    name: String,
    url: reqwest::Url,
    encoder: OtlpEncoder,
    client: HttpClient,
    dead_letter: DeadLetter,
    retry: super::config::RetryOptions,
}

/// `url` as given if it names the logs endpoint, else with `/v1/logs` appended.
fn logs_url(url: &str) -> anyhow::Result<reqwest::Url> {
    let trimmed = url.trim_end_matches('/');
    let full = if trimmed.ends_with("/v1/logs") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v1/logs")
    };
    let parsed = reqwest::Url::parse(&full).with_context(|| format!("otlp url {url:?}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("otlp url {url:?}: scheme must be http or https");
    }
    Ok(parsed)
}

impl OtlpSink {
    pub fn with_state_dir(
        name: String,
        config: &OtlpConfig,
        identity: &NodeIdentity,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let url = logs_url(&config.http.url)?;
        let metrics = SinkMetrics::new(&name);
        let client = HttpClient::new(&name, &config.http, metrics.clone())?;
        Ok(Self {
            dead_letter: DeadLetter::for_http_sink(&name, &config.http, state_dir, metrics),
            encoder: OtlpEncoder::new(config, identity),
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
        let mut backoff = self.retry.backoff();
        for export in self.encoder.encode(records) {
            let raw_len = export.body.len();
            let (body, gzipped) = if self.client.gzip() {
                (Bytes::from(super::http::gzip(&export.body)), true)
            } else {
                (Bytes::from(export.body), false)
            };
            let settled = self
                .client
                .send_until_settled(
                    &self.url,
                    "application/x-protobuf",
                    body,
                    gzipped,
                    &[],
                    &mut backoff,
                    cancel,
                )
                .await?;
            match settled {
                Settled::Accepted { body, .. } => {
                    let rejected = proto::ExportLogsServiceResponse::decode(&body[..])
                        .ok()
                        .and_then(|r| r.partial_success)
                        .filter(|p| p.rejected_log_records > 0);
                    if let Some(partial) = &rejected {
                        self.client.metrics.failure("partial_success");
                        tracing::warn!(sink = %self.name, rejected = partial.rejected_log_records,
                            message = %partial.error_message,
                            "the receiver rejected part of an export (not retried, per the OTLP spec)");
                    }
                    let rejected = rejected.map_or(0, |p| p.rejected_log_records);
                    let kept = export
                        .records
                        .len()
                        .saturating_sub(usize::try_from(rejected).unwrap_or(usize::MAX));
                    self.client.metrics.sent(kept, raw_len);
                }
                Settled::Refused { status, detail, .. } => {
                    let refusals: Vec<Refusal<'_>> = export
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

impl Sink for OtlpSink {
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
    fn maps_severities_and_urls() {
        assert_eq!(severity("WARNING"), Some((13, "WARN")));
        assert_eq!(severity("err"), Some((17, "ERROR")));
        assert_eq!(severity("chatty"), None);
        assert_eq!(
            logs_url("http://c:4318").unwrap().as_str(),
            "http://c:4318/v1/logs"
        );
        assert_eq!(
            logs_url("http://c:4318/v1/logs/").unwrap().as_str(),
            "http://c:4318/v1/logs"
        );
        assert!(logs_url("grpc://c").is_err());
        assert_eq!(
            image_name("registry:5000/app:1.2@sha256:ab"),
            "registry:5000/app"
        );
        assert_eq!(image_name("registry:5000/app"), "registry:5000/app");
        assert_eq!(image_name("nginx"), "nginx");
    }
}
