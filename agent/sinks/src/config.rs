//! The `sinks:` entries of the config file.
//!
//! ```yaml
//! sinks:
//!   - type: loki
//!     url: https://loki.example:3100
//!     tenant: team-a
//!     auth: { bearer: { token_file: /var/run/secrets/loki/token } }
//!     tls: { ca_file: /etc/node-agent/ca.pem }
//!   - type: elasticsearch
//!     url: https://es.example:9200
//!     index: node-agent-%Y.%m.%d
//!     auth: { api_key: { key_env: ES_API_KEY } }
//! ```
//!
//! Every sink takes an optional `match:` ([`RouteMatch`]: source kind, namespace, pod,
//! container, pod labels, parsed fields; globs). A record goes to every sink it matches;
//! a record no sink matches counts as delivered (`node_agent_logs_records_unrouted_total`).
//!
//! HTTP sinks share [`HttpOptions`]. It is `#[serde(flatten)]`ed, which serde cannot combine
//! with `deny_unknown_fields`, so those configs collect leftovers in `unknown` and
//! [`SinkConfig::validate`] rejects them by name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

pub use crate::values::RecordValue;
pub use node_agent_core::route::RouteMatch;

/// One `sinks:` entry of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    /// JSON lines on standard output (the embedded default).
    Stdout(StdoutConfig),
    /// JSON lines appended to a file, fsync'd before a batch is confirmed.
    File(FileConfig),
    /// Grafana Loki push API.
    Loki(LokiConfig),
    /// Elasticsearch (or OpenSearch) `_bulk` API.
    Elasticsearch(ElasticsearchConfig),
    /// OpenTelemetry logs over OTLP/HTTP (protobuf).
    Otlp(OtlpConfig),
}

impl SinkConfig {
    /// The sink's name in metrics and logs: `name`, or the type.
    pub fn name(&self) -> String {
        let (explicit, default) = match self {
            SinkConfig::Stdout(c) => (&c.name, "stdout"),
            SinkConfig::File(c) => (&c.name, "file"),
            SinkConfig::Loki(c) => (&c.http.name, "loki"),
            SinkConfig::Elasticsearch(c) => (&c.http.name, "elasticsearch"),
            SinkConfig::Otlp(c) => (&c.http.name, "otlp"),
        };
        explicit.clone().unwrap_or_else(|| default.to_string())
    }

    /// The sink's `match:`, if any.
    pub fn route(&self) -> Option<&RouteMatch> {
        match self {
            SinkConfig::Stdout(c) => c.route.as_ref(),
            SinkConfig::File(c) => c.route.as_ref(),
            SinkConfig::Loki(c) => c.http.route.as_ref(),
            SinkConfig::Elasticsearch(c) => c.http.route.as_ref(),
            SinkConfig::Otlp(c) => c.http.route.as_ref(),
        }
    }

    /// Checks what serde cannot: leftover keys, required values, consistent options.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self {
            SinkConfig::Stdout(_) => Ok(()),
            SinkConfig::File(c) => {
                if c.path.as_os_str().is_empty() {
                    anyhow::bail!("file sink: `path` is required");
                }
                Ok(())
            }
            SinkConfig::Loki(c) => {
                reject_unknown("loki", &c.unknown)?;
                c.http.validate("loki")?;
                for key in c.labels.keys().chain(c.record_labels.keys()) {
                    if !is_label_name(key) {
                        anyhow::bail!(
                            "loki sink: label name {key:?} is not a valid Prometheus label name"
                        );
                    }
                }
                if let Some(key) = c.labels.keys().find(|k| c.record_labels.contains_key(*k)) {
                    anyhow::bail!(
                        "loki sink: label {key:?} is both in `labels` (static) and `record_labels`"
                    );
                }
                if let Some(key) = c.structured_metadata.keys().find(|k| !is_label_name(k)) {
                    anyhow::bail!(
                        "loki sink: structured metadata name {key:?} is not a valid label name"
                    );
                }
                Ok(())
            }
            SinkConfig::Otlp(c) => {
                reject_unknown("otlp", &c.unknown)?;
                c.http.validate("otlp")
            }
            SinkConfig::Elasticsearch(c) => {
                reject_unknown("elasticsearch", &c.unknown)?;
                c.http.validate("elasticsearch")?;
                if c.index.is_empty() && c.data_stream.is_none() {
                    anyhow::bail!("elasticsearch sink: set `index` or `data_stream`");
                }
                if c.fields_key.is_empty() {
                    anyhow::bail!("elasticsearch sink: `fields_key` must not be empty");
                }
                if c.pipeline.as_deref().is_some_and(str::is_empty) {
                    anyhow::bail!("elasticsearch sink: `pipeline` must not be empty");
                }
                Ok(())
            }
        }
    }
}

fn reject_unknown(kind: &str, unknown: &BTreeMap<String, IgnoredAny>) -> anyhow::Result<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = unknown.keys().map(String::as_str).collect();
    anyhow::bail!("{kind} sink: unknown field(s) {}", keys.join(", "))
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutConfig {
    pub name: Option<String>,
    /// Which records this sink takes (see [`RouteMatch`]); absent: all.
    #[serde(rename = "match")]
    pub route: Option<RouteMatch>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub path: PathBuf,
    #[serde(default, rename = "match")]
    pub route: Option<RouteMatch>,
}

/// Options every HTTP sink has.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpOptions {
    /// Name in metrics and logs (defaults to the sink type).
    pub name: Option<String>,
    /// Base URL of the receiver (`http(s)://host:port`, optionally with a path prefix).
    #[serde(alias = "endpoint")]
    pub url: String,
    pub tls: TlsOptions,
    pub auth: Option<AuthOptions>,
    /// Compress request bodies with gzip (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Per-request timeout, seconds.
    pub timeout_secs: u64,
    pub retry: RetryOptions,
    /// Batches whose encoding would exceed this are split into several requests.
    pub max_request_bytes: usize,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// NDJSON file for records the receiver refused for good
    /// (default: `<state dir>/deadletter/<name>.ndjson`).
    pub dead_letter_path: Option<PathBuf>,
    /// Size at which the dead-letter file is renamed to `<path>.1` (replacing an older
    /// one) and started afresh: at most about twice this on disk per sink.
    pub dead_letter_max_bytes: u64,
    /// Which records this sink takes (see [`RouteMatch`]); absent: all.
    #[serde(rename = "match")]
    pub route: Option<RouteMatch>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            name: None,
            url: String::new(),
            tls: TlsOptions::default(),
            auth: None,
            gzip: false,
            timeout_secs: 30,
            retry: RetryOptions::default(),
            max_request_bytes: 4 << 20,
            headers: BTreeMap::new(),
            dead_letter_path: None,
            dead_letter_max_bytes: super::deadletter::DEFAULT_MAX_BYTES,
            route: None,
        }
    }
}

impl HttpOptions {
    fn validate(&self, kind: &str) -> anyhow::Result<()> {
        if self.url.is_empty() {
            anyhow::bail!("{kind} sink: `url` is required");
        }
        if self.timeout_secs == 0 {
            anyhow::bail!("{kind} sink: `timeout_secs` must be positive");
        }
        if self.max_request_bytes < 1024 {
            anyhow::bail!("{kind} sink: `max_request_bytes` must be at least 1024");
        }
        if self.dead_letter_max_bytes < 4096 {
            anyhow::bail!("{kind} sink: `dead_letter_max_bytes` must be at least 4096");
        }
        if self.retry.initial_backoff_ms == 0
            || self.retry.max_backoff_ms < self.retry.initial_backoff_ms
        {
            anyhow::bail!("{kind} sink: retry needs 0 < initial_backoff_ms <= max_backoff_ms");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            anyhow::bail!("{kind} sink: tls `cert_file` and `key_file` go together");
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsOptions {
    /// PEM bundle of CAs to trust in addition to the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only; never in production.
    pub insecure_skip_verify: bool,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// How the sink authenticates. Secrets come from files (mounted Secrets, re-read on each
/// request so rotations apply) or environment variables, never from the config itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthOptions {
    Basic {
        user: String,
        #[serde(default)]
        password_file: Option<PathBuf>,
        #[serde(default)]
        password_env: Option<String>,
    },
    Bearer {
        #[serde(default)]
        token_file: Option<PathBuf>,
        #[serde(default)]
        token_env: Option<String>,
    },
    /// Elasticsearch API key (the base64 `id:key` form), sent as `Authorization: ApiKey`.
    ApiKey {
        #[serde(default)]
        key_file: Option<PathBuf>,
        #[serde(default)]
        key_env: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryOptions {
    /// First backoff ceiling; each retry doubles it (full jitter picks 0..ceiling).
    pub initial_backoff_ms: u64,
    /// Cap on the backoff ceiling.
    pub max_backoff_ms: u64,
}

impl RetryOptions {
    /// The backoff for one delivery under these options.
    pub fn backoff(&self) -> node_agent_core::backoff::Backoff {
        node_agent_core::backoff::Backoff::new(
            Duration::from_millis(self.initial_backoff_ms),
            Duration::from_millis(self.max_backoff_ms),
        )
    }
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            initial_backoff_ms: 250,
            max_backoff_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LokiEncoding {
    /// snappy-compressed protobuf `logproto.PushRequest` (what Promtail sends).
    #[default]
    Protobuf,
    /// JSON push body (optionally gzip'd).
    Json,
}

/// The Loki sink.
///
/// ```yaml
/// - type: loki
///   url: http://loki:3100
///   labels: { cluster: prod }                # static, on every stream
///   record_labels:                           # label name → record value (see `values`)
///     namespace: namespace
///     workload: workload
///     container: container
///     stream: stream
///     app: label:app.kubernetes.io/name
///   structured_metadata: { pod: pod, pod_uid: pod_uid, node: node,
///                          image: metadata:container.image.name }   # any ECS name
///   structured_metadata_fields: true         # top-level scalar parsed fields too
///   tenant: platform                         # X-Scope-OrgID when `tenant_from` gives none
///   tenant_from: annotation:loki.grafana.com/tenant   # or namespace, label:<name>, …
/// ```
///
/// Default labels follow Loki's cardinality guidance (a stream per label value
/// combination; few, bounded, long-lived values index well, and Loki 3 dropped
/// `k8s.pod.name` from its default OTLP index labels for this reason): `namespace`,
/// `workload` (the owning Deployment/StatefulSet/DaemonSet/CronJob, once the metadata
/// cache resolved it), `container` and `stream`. What is per pod or per node — `pod`,
/// `pod_uid`, `node` — goes into structured metadata by default: still filterable in
/// LogQL (`| pod="web-1"`) without a new stream for every pod restart. Pods of one
/// workload then share a stream; a Loki with `unordered_writes` (the default since 2.4)
/// accepts their interleaved timestamps, and refusals are dead-lettered one by one.
/// Requests carry one tenant each.
#[derive(Debug, Clone, Deserialize)]
pub struct LokiConfig {
    #[serde(flatten)]
    pub http: HttpOptions,
    /// `X-Scope-OrgID` for multi-tenant Loki (and the fallback of `tenant_from`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Tenant per record, from a record value (`namespace`, `label:<name>`,
    /// `annotation:<name>`, …); records without it get `tenant`.
    #[serde(default)]
    pub tenant_from: Option<RecordValue>,
    #[serde(default)]
    pub encoding: LokiEncoding,
    /// Static labels added to every stream (keep them few: each value is a stream).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Labels taken from each record: label name → record value.
    #[serde(default = "default_record_labels")]
    pub record_labels: BTreeMap<String, RecordValue>,
    /// Structured metadata of each entry: name → record value.
    #[serde(default = "default_structured_metadata")]
    pub structured_metadata: BTreeMap<String, RecordValue>,
    /// Also send the top-level scalar parsed fields as structured metadata.
    #[serde(default)]
    pub structured_metadata_fields: bool,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ElasticsearchConfig {
    #[serde(flatten)]
    pub http: HttpOptions,
    /// Index name; `%Y`, `%m`, `%d` … (chrono) are filled from each record's UTC timestamp.
    #[serde(default = "default_index")]
    pub index: String,
    /// Write to this data stream instead of `index`. `{namespace}` in it is the record's
    /// Kubernetes namespace (`-` → `_`, empty → `default`), for the data stream naming
    /// scheme: `logs-kubernetes-{namespace}`.
    #[serde(default)]
    pub data_stream: Option<String>,
    /// Key under which parsed JSON fields go.
    #[serde(default = "default_fields_key")]
    pub fields_key: String,
    /// Ingest pipeline run on every document (`_bulk?pipeline=<name>`).
    #[serde(default)]
    pub pipeline: Option<String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, IgnoredAny>,
}

fn default_record_labels() -> BTreeMap<String, RecordValue> {
    [
        ("namespace", RecordValue::Namespace),
        ("workload", RecordValue::Workload),
        ("container", RecordValue::Container),
        ("stream", RecordValue::Stream),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn default_structured_metadata() -> BTreeMap<String, RecordValue> {
    [
        ("pod", RecordValue::Pod),
        ("pod_uid", RecordValue::PodUid),
        ("node", RecordValue::Node),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The OTLP/HTTP logs sink (`url`: the collector's base URL, e.g. `http://otel:4318`, or
/// the full `/v1/logs` endpoint).
#[derive(Debug, Clone, Deserialize)]
pub struct OtlpConfig {
    #[serde(flatten)]
    pub http: HttpOptions,
    /// Added to every resource (e.g. `k8s.cluster.name: prod`).
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, IgnoredAny>,
}

fn default_index() -> String {
    "node-agent-%Y.%m.%d".to_string()
}

fn default_fields_key() -> String {
    "fields".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> anyhow::Result<Vec<SinkConfig>> {
        let configs: Vec<SinkConfig> = serde_yaml_ng::from_str(yaml)?;
        for c in &configs {
            c.validate()?;
        }
        Ok(configs)
    }

    #[test]
    fn parses_every_sink_type() {
        let configs = parse(
            r#"
- type: stdout
- type: file
  path: /tmp/out.ndjson
- type: loki
  url: http://loki:3100
  tenant: team-a
  encoding: json
  gzip: true
  labels: { cluster: prod }
  auth: { bearer: { token_file: /run/token } }
  retry: { initial_backoff_ms: 10, max_backoff_ms: 100 }
- type: elasticsearch
  name: es-main
  url: https://es:9200
  data_stream: logs-node-default
  tls: { ca_file: /ca.pem }
  auth: { api_key: { key_env: ES_KEY } }
  headers: { X-Extra: yes }
"#,
        )
        .unwrap();
        assert_eq!(configs.len(), 4);
        let SinkConfig::Loki(loki) = &configs[2] else {
            panic!()
        };
        assert_eq!(loki.tenant.as_deref(), Some("team-a"));
        assert_eq!(loki.encoding, LokiEncoding::Json);
        assert!(loki.http.gzip);
        assert_eq!(loki.http.retry.max_backoff_ms, 100);
        assert_eq!(configs[3].name(), "es-main");
        assert_eq!(configs[2].name(), "loki");
        let SinkConfig::Elasticsearch(es) = &configs[3] else {
            panic!()
        };
        assert_eq!(es.index, "node-agent-%Y.%m.%d");
        assert_eq!(es.http.headers["X-Extra"], "yes");
    }

    #[test]
    fn endpoint_is_an_alias_of_url() {
        let configs = parse("- type: elasticsearch\n  endpoint: http://es:9200\n").unwrap();
        let SinkConfig::Elasticsearch(es) = &configs[0] else {
            panic!()
        };
        assert_eq!(es.http.url, "http://es:9200");
    }

    #[test]
    fn rejects_unknown_fields_by_name() {
        let err = parse("- type: loki\n  url: http://x\n  tennant: a\n").unwrap_err();
        assert!(err.to_string().contains("tennant"), "{err}");
        let err = parse("- type: file\n  path: /x\n  fsync: no\n").unwrap_err();
        assert!(err.to_string().contains("fsync"), "{err}");
        let err = parse("- type: kafka\n").unwrap_err();
        assert!(err.to_string().contains("kafka"), "{err}");
        let err = parse("- type: loki\n  url: http://x\n  tls: { ca: /x }\n").unwrap_err();
        assert!(err.to_string().contains("ca"), "{err}");
    }

    #[test]
    fn rejects_incomplete_settings() {
        assert!(
            parse("- type: loki\n")
                .unwrap_err()
                .to_string()
                .contains("url")
        );
        assert!(parse("- type: file\n").is_err());
        let err = parse("- type: loki\n  url: http://x\n  labels: { namespace: x }\n").unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
        let err = parse("- type: loki\n  url: http://x\n  record_labels: { app: labels:app }\n")
            .unwrap_err();
        assert!(err.to_string().contains("labels:app"), "{err}");
        let err =
            parse("- type: loki\n  url: http://x\n  structured_metadata: { pod.name: pod }\n")
                .unwrap_err();
        assert!(err.to_string().contains("pod.name"), "{err}");
        let err = parse("- type: elasticsearch\n  url: http://x\n  tls: { cert_file: /c }\n")
            .unwrap_err();
        assert!(err.to_string().contains("key_file"), "{err}");
    }
}
