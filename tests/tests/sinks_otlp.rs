//! The OTLP/HTTP logs sink against a receiver that decodes with opentelemetry-proto.

use std::sync::Arc;
use std::time::Duration;

use node_agent::core::record::{LogRecord, Stream};
use node_agent::identity::NodeIdentity;
use node_agent::sinks::config::OtlpConfig;
use node_agent::sinks::otlp::OtlpSink;
use node_agent::sinks::{Sink, SinkError};
use node_agent_tests::receivers::OtlpReceiver;
use node_agent_tests::receivers::records::{batch, record, source};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000_000_000_000;

fn sink(name: &str, state: &tempfile::TempDir, config: serde_json::Value) -> OtlpSink {
    let mut config = config;
    config["name"] = json!(name);
    config["retry"] = json!({"initial_backoff_ms": 1, "max_backoff_ms": 20});
    let config: OtlpConfig = serde_json::from_value(config).unwrap();
    OtlpSink::with_state_dir(
        name.to_string(),
        &config,
        &NodeIdentity::default(),
        state.path(),
    )
    .unwrap()
}

async fn deliver(sink: &OtlpSink, records: &[LogRecord]) -> Result<(), SinkError> {
    let cancel = CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(20), sink.deliver(records, &cancel))
        .await
        .expect("delivery finished in time")
}

#[tokio::test]
async fn export_carries_k8s_resource_attributes_severity_and_fields() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "otlp-rt",
        &state,
        json!({"url": otlp.url(), "gzip": true, "resource_attributes": {"k8s.cluster.name": "prod"}}),
    );
    let mut meta = (*source("shop", "web-7d9f-x", "nginx")).clone();
    meta.kubernetes = Some(Arc::new(node_agent::core::kube::PodMetadata {
        labels: [("app.kubernetes.io/name".to_string(), "web".to_string())].into(),
        owner: Some(node_agent::core::kube::Workload {
            kind: "Deployment".into(),
            name: "web".into(),
        }),
        container: Some(node_agent::core::kube::ContainerMetadata {
            image: "docker.io/library/nginx:1.27".into(),
            image_id: String::new(),
            container_id: "containerd://abc123".into(),
        }),
        ..Default::default()
    }));
    let src = Arc::new(meta);
    let mut parsed = record(
        &src,
        T0 + 5,
        0,
        r#"{"level":"warning","code":503,"ok":false,"ctx":{"a":1}}"#,
    );
    parsed.fields = serde_json::from_str(&parsed.message).unwrap();
    let mut err = record(&src, T0 + 6, 100, "plain stderr");
    err.stream = Stream::Stderr;
    deliver(&sink, &[parsed, err]).await.unwrap();

    let logs = otlp.logs();
    assert_eq!(logs.len(), 2);
    let r = &logs[0].resource;
    for (k, v) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "web-7d9f-x"),
        ("k8s.pod.uid", "uid-web-7d9f-x"),
        ("k8s.container.name", "nginx"),
        ("k8s.node.name", "node-1"),
        ("k8s.deployment.name", "web"),
        ("k8s.pod.label.app.kubernetes.io/name", "web"),
        ("service.name", "web"),
        ("container.id", "abc123"),
        ("container.image.name", "docker.io/library/nginx"),
        ("k8s.cluster.name", "prod"),
    ] {
        assert_eq!(r.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(logs[0].scope, "node-agent");
    assert_eq!(logs[0].time_unix_nano, (T0 + 5) as u64);
    assert!(logs[0].observed_time_unix_nano > 0);
    assert_eq!(logs[0].severity_number, 13);
    assert_eq!(logs[0].severity_text, "warning");
    assert_eq!(logs[0].attributes["code"], "int:503");
    assert_eq!(logs[0].attributes["ok"], "bool:false");
    assert_eq!(logs[0].attributes["ctx"], r#"{"a":1}"#);
    assert_eq!(logs[0].attributes["log.iostream"], "stdout");
    assert_eq!(logs[1].body, "plain stderr");
    assert_eq!(logs[1].attributes["log.iostream"], "stderr");
    assert_eq!(logs[1].severity_number, 0);
    let request = &otlp.server().requests()[0];
    assert!(request.gzipped);
    assert_eq!(request.headers["content-type"], "application/x-protobuf");
    assert_eq!(sink.metrics().records_sent(), 2);
}

#[tokio::test]
async fn retries_transient_failures_and_dead_letters_refusals() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("otlp-retry", &state, json!({"url": otlp.url()}));
    otlp.server().fail_next(1, 503);
    otlp.server().fail_next_retry_after(1, 429, 0);
    let records = batch(&source("ns", "p", "c"), T0, 10, "r");
    deliver(&sink, &records).await.unwrap();
    assert_eq!(otlp.logs().len(), 10);
    assert_eq!(sink.metrics().retries(), 2);
    otlp.server().fail_next(1, 400);
    deliver(&sink, &batch(&source("ns", "p", "c"), T0 + 100, 3, "bad"))
        .await
        .unwrap();
    assert_eq!(sink.metrics().dead_lettered_records(), 3);
    assert_eq!(otlp.logs().len(), 10);
}

#[tokio::test]
async fn partial_success_is_counted_and_not_retried() {
    let otlp = OtlpReceiver::start().await.unwrap();
    otlp.reject_bodies_containing("-3");
    let state = tempfile::tempdir().unwrap();
    let sink = sink("otlp-partial", &state, json!({"url": otlp.url()}));
    deliver(&sink, &batch(&source("ns", "p", "c"), T0, 5, "ps"))
        .await
        .unwrap();
    assert_eq!(otlp.logs().len(), 4);
    assert_eq!(otlp.server().requests().len(), 1);
    assert_eq!(sink.metrics().failures("partial_success"), 1);
    assert_eq!(sink.metrics().records_sent(), 4);
}

#[tokio::test]
async fn large_batches_are_split_and_records_keep_their_resource() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "otlp-split",
        &state,
        json!({"url": otlp.url(), "max_request_bytes": 4096}),
    );
    let mut records = batch(&source("ns", "a", "c"), T0, 40, &"a".repeat(200));
    records.extend(batch(&source("ns", "b", "c"), T0, 40, &"b".repeat(200)));
    deliver(&sink, &records).await.unwrap();
    let logs = otlp.logs();
    assert_eq!(logs.len(), 80);
    assert!(otlp.server().requests().len() > 4);
    for l in &logs {
        assert_eq!(
            l.resource["k8s.pod.name"].as_str(),
            &l.body[..1],
            "record under the wrong resource"
        );
    }
}
