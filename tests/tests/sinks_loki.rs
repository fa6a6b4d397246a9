//! The Loki sink against the protocol-faithful Loki receiver.

use std::time::Duration;

use node_agent::core::record::Stream;
use node_agent::identity::NodeIdentity;
use node_agent::sinks::config::LokiConfig;
use node_agent::sinks::loki::LokiSink;
use node_agent::sinks::{Sink, SinkError};
use node_agent_tests::receivers::LokiReceiver;
use node_agent_tests::receivers::records::{batch, record, source};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000_000_000_000;

fn sink(name: &str, state: &tempfile::TempDir, config: serde_json::Value) -> LokiSink {
    let mut config = config;
    config["name"] = json!(name);
    // Fast retries keep the tests short.
    config["retry"] = json!({"initial_backoff_ms": 1, "max_backoff_ms": 20});
    let config: LokiConfig = serde_json::from_value(config).unwrap();
    LokiSink::with_state_dir(
        name.to_string(),
        &config,
        &NodeIdentity::default(),
        state.path(),
    )
    .unwrap()
}

async fn deliver(
    sink: &LokiSink,
    records: &[node_agent::core::record::LogRecord],
) -> Result<(), SinkError> {
    let cancel = CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(20), sink.deliver(records, &cancel))
        .await
        .expect("delivery finished in time")
}

#[tokio::test]
async fn protobuf_push_round_trips_with_labels_tenant_and_order() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "loki-pb",
        &state,
        json!({"url": loki.url(), "tenant": "team-a", "labels": {"cluster": "prod"}}),
    );
    let web = source("shop", "web-1", "nginx");
    let db = source("shop", "db-0", "postgres");
    // Interleaved sources and an out-of-order pair inside one stream: the sink sorts.
    let mut records = vec![
        record(&web, T0 + 2, 0, "web second"),
        record(&db, T0 + 1, 0, "db first"),
        record(&web, T0 + 1, 100, "web first"),
    ];
    let mut err = record(&web, T0 + 3, 200, "web stderr \"quoted\"\nline");
    err.stream = Stream::Stderr;
    records.push(err);
    deliver(&sink, &records).await.unwrap();

    let entries = loki.entries();
    assert_eq!(entries.len(), 4);
    assert!(
        entries
            .iter()
            .all(|e| e.tenant.as_deref() == Some("team-a"))
    );
    let web_out: Vec<&str> = entries
        .iter()
        .filter(|e| {
            e.metadata.get("pod").map(String::as_str) == Some("web-1")
                && e.labels["stream"] == "stdout"
        })
        .map(|e| e.line.as_str())
        .collect();
    assert_eq!(web_out, ["web first", "web second"]);
    let stderr = entries
        .iter()
        .find(|e| e.labels["stream"] == "stderr")
        .unwrap();
    assert_eq!(stderr.line, "web stderr \"quoted\"\nline");
    assert_eq!(stderr.timestamp_nanos, T0 + 3);
    // Default labels: bounded ones only (no workload here: no metadata cache); pod,
    // pod_uid and node go into structured metadata.
    let labels = &entries[0].labels;
    let names: Vec<&str> = labels.keys().map(String::as_str).collect();
    assert_eq!(names, ["cluster", "container", "namespace", "stream"]);
    assert_eq!(labels["cluster"], "prod");
    let meta = &entries[0].metadata;
    assert_eq!(meta["node"], "node-1");
    assert!(meta["pod_uid"].starts_with("uid-"));
    assert_eq!(loki.pushes("protobuf"), 1);
    assert_eq!(sink.metrics().records_sent(), 4);
    let request = &loki.server().requests()[0];
    assert_eq!(request.headers["content-type"], "application/x-protobuf");
}

#[tokio::test]
async fn json_push_with_gzip_round_trips() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "loki-json",
        &state,
        json!({"url": loki.url(), "encoding": "json", "gzip": true}),
    );
    let src = source("ns", "p", "c");
    let records = batch(&src, T0, 50, "json");
    deliver(&sink, &records).await.unwrap();
    assert_eq!(loki.pushes("json"), 1);
    assert_eq!(
        loki.lines(),
        (0..50).map(|i| format!("json-{i}")).collect::<Vec<_>>()
    );
    let request = &loki.server().requests()[0];
    assert!(request.gzipped);
    assert!(loki.entries().iter().all(|e| e.tenant.is_none()));
}

#[tokio::test]
async fn retries_429_and_5xx_then_delivers_once() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("loki-retry", &state, json!({"url": loki.url()}));
    loki.server().fail_next(2, 503);
    loki.server().fail_next(1, 429);
    let records = batch(&source("ns", "p", "c"), T0, 10, "r");
    deliver(&sink, &records).await.unwrap();
    assert_eq!(loki.lines().len(), 10);
    assert_eq!(sink.metrics().retries(), 3);
    assert_eq!(sink.metrics().failures("http_5xx"), 2);
    assert_eq!(sink.metrics().failures("http_429"), 1);
    assert_eq!(loki.server().requests().len(), 4);
}

#[tokio::test]
async fn refused_push_is_dead_lettered_and_acknowledged() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("loki-dlq", &state, json!({"url": loki.url()}));
    let src = source("ns", "p", "c");
    deliver(&sink, &batch(&src, T0 + 1_000_000_000, 3, "new"))
        .await
        .unwrap();
    // Older than what the stream already has: Loki answers 400 "entry out of order".
    deliver(&sink, &batch(&src, T0, 2, "old")).await.unwrap();
    assert_eq!(loki.lines(), ["new-0", "new-1", "new-2"]);
    assert_eq!(sink.metrics().dead_lettered_records(), 2);
    assert_eq!(sink.metrics().retries(), 0);
    let dead = std::fs::read_to_string(sink.dead_letter_path()).unwrap();
    assert!(sink.dead_letter_path().starts_with(state.path()));
    let letters: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // One line for the request: the reason once, both records in it.
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["sink"], "loki-dlq");
    assert_eq!(letters[0]["status"], 400);
    assert!(
        letters[0]["reason"]
            .as_str()
            .unwrap()
            .contains("out of order")
    );
    assert_eq!(letters[0]["records"][1]["message"], "old-1");
    // A malformed request (bad snappy) is refused the same way; here via a scripted 400.
    loki.server().fail_next(1, 400);
    deliver(&sink, &batch(&src, T0 + 2_000_000_000, 1, "scripted"))
        .await
        .unwrap();
    assert_eq!(sink.metrics().dead_lettered_records(), 3);
}

#[tokio::test]
async fn out_of_order_is_accepted_when_loki_allows_it() {
    let loki = LokiReceiver::start().await.unwrap();
    loki.set_enforce_order(false);
    let state = tempfile::tempdir().unwrap();
    let sink = sink("loki-unordered", &state, json!({"url": loki.url()}));
    let src = source("ns", "p", "c");
    deliver(&sink, &batch(&src, T0 + 1_000_000_000, 1, "new"))
        .await
        .unwrap();
    deliver(&sink, &batch(&src, T0, 1, "old")).await.unwrap();
    assert_eq!(loki.lines(), ["new-0", "old-0"]);
    assert_eq!(sink.metrics().dead_lettered_records(), 0);
}

#[tokio::test]
async fn cancel_during_retries_returns_cancelled() {
    let loki = LokiReceiver::start().await.unwrap();
    loki.server().set_down(true);
    let state = tempfile::tempdir().unwrap();
    let sink = sink("loki-cancel", &state, json!({"url": loki.url()}));
    let records = batch(&source("ns", "p", "c"), T0, 5, "c");
    let cancel = CancellationToken::new();
    let canceller = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        })
    };
    let result = tokio::time::timeout(Duration::from_secs(10), sink.deliver(&records, &cancel))
        .await
        .unwrap();
    canceller.await.unwrap();
    assert!(matches!(result, Err(SinkError::Cancelled)), "{result:?}");
    assert!(sink.metrics().failures("network") >= 1);
    assert!(loki.entries().is_empty());
}

#[tokio::test]
async fn stalls_while_down_and_delivers_when_back() {
    let loki = LokiReceiver::start().await.unwrap();
    loki.server().set_down(true);
    let state = tempfile::tempdir().unwrap();
    let sink = std::sync::Arc::new(sink("loki-down", &state, json!({"url": loki.url()})));
    let records = batch(&source("ns", "p", "c"), T0, 5, "d");
    let task = {
        let sink = std::sync::Arc::clone(&sink);
        tokio::spawn(async move { sink.deliver(&records, &CancellationToken::new()).await })
    };
    // Wait (bounded) until a few attempts failed, then bring Loki back.
    for _ in 0..200 {
        if sink.metrics().failures("network") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(sink.metrics().failures("network") >= 2);
    loki.server().set_down(false);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(loki.lines().len(), 5);
}

#[tokio::test]
async fn large_batches_are_split_under_max_request_bytes() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "loki-split",
        &state,
        json!({"url": loki.url(), "max_request_bytes": 4096}),
    );
    let src = source("ns", "p", "c");
    let long = "x".repeat(500);
    let records: Vec<_> = (0..40)
        .map(|i| record(&src, T0 + i, i as u64 * 600, &format!("{i}-{long}")))
        .collect();
    deliver(&sink, &records).await.unwrap();
    assert_eq!(loki.lines().len(), 40);
    assert!(
        loki.pushes("protobuf") >= 5,
        "{} pushes",
        loki.pushes("protobuf")
    );
}

#[tokio::test]
async fn bearer_token_file_and_basic_password_env_are_sent() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let token = state.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let bearer = sink(
        "loki-bearer",
        &state,
        json!({"url": loki.url(), "auth": {"bearer": {"token_file": token}}, "headers": {"X-Extra": "1"}}),
    );
    let src = source("ns", "p", "c");
    deliver(&bearer, &batch(&src, T0, 1, "a")).await.unwrap();
    // Rotated token files apply to the next request.
    std::fs::write(&token, "rotated").unwrap();
    deliver(&bearer, &batch(&src, T0 + 10, 1, "b"))
        .await
        .unwrap();
    // SAFETY: set before any thread of this test reads it; the name is unique to this test.
    unsafe { std::env::set_var("NODE_AGENT_TEST_LOKI_PASSWORD", "pa55") };
    let basic = sink(
        "loki-basic",
        &state,
        json!({"url": loki.url(), "auth": {"basic": {"user": "agent", "password_env": "NODE_AGENT_TEST_LOKI_PASSWORD"}}}),
    );
    deliver(&basic, &batch(&src, T0 + 20, 1, "c"))
        .await
        .unwrap();
    let requests = loki.server().requests();
    assert_eq!(requests[0].headers["authorization"], "Bearer s3cret-token");
    assert_eq!(requests[0].headers["x-extra"], "1");
    assert_eq!(requests[1].headers["authorization"], "Bearer rotated");
    // base64("agent:pa55")
    assert_eq!(
        requests[2].headers["authorization"],
        "Basic YWdlbnQ6cGE1NQ=="
    );
    // A missing secret is a start-up error, not a silent stall.
    let config: LokiConfig = serde_json::from_value(
        json!({"url": loki.url(), "auth": {"bearer": {"token_env": "NODE_AGENT_TEST_UNSET_VAR"}}}),
    )
    .unwrap();
    let err = LokiSink::with_state_dir("x".into(), &config, &NodeIdentity::default(), state.path())
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("NODE_AGENT_TEST_UNSET_VAR"),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_stream_split_over_requests_stays_in_timestamp_order() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "loki-split-order",
        &state,
        json!({"url": loki.url(), "max_request_bytes": 2048}),
    );
    let src = source("ns", "p", "c");
    let body = "z".repeat(300);
    // Newest first: a naive split would push the newest entries first and Loki would
    // refuse the older ones as out of order.
    let records: Vec<_> = (0..20)
        .rev()
        .map(|i| record(&src, T0 + i, i as u64 * 400, &format!("{i:02}-{body}")))
        .collect();
    deliver(&sink, &records).await.unwrap();
    assert_eq!(sink.metrics().dead_lettered_records(), 0);
    let lines = loki.lines();
    assert_eq!(lines.len(), 20);
    assert!(
        lines.windows(2).all(|w| w[0] < w[1]),
        "not in timestamp order"
    );
    assert!(loki.pushes("protobuf") >= 3);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    // Our own backoff is at most 20 ms here; the receiver asks for a second.
    let sink = sink("loki-retry-after", &state, json!({"url": loki.url()}));
    loki.server().fail_next_retry_after(1, 429, 1);
    let started = std::time::Instant::now();
    deliver(&sink, &batch(&source("ns", "p", "c"), T0, 3, "ra"))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "resent after {:?}, before Retry-After",
        started.elapsed()
    );
    assert_eq!(loki.lines().len(), 3);
    assert_eq!(loki.server().requests().len(), 2);
}

fn dead_letters(sink: &LokiSink) -> Vec<serde_json::Value> {
    std::fs::read_to_string(sink.dead_letter_path())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn out_of_order_entries_are_dead_lettered_one_by_one() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("loki-ooo", &state, json!({"url": loki.url()}));
    let a = source("ns", "p", "a");
    let b = source("ns", "p", "b");
    deliver(&sink, &[record(&a, T0 + 10, 0, "a-10")])
        .await
        .unwrap();
    // a-5 is behind what Loki holds for stream a; everything else is fine.
    let second = vec![
        record(&a, T0 + 5, 100, "a-5"),
        record(&a, T0 + 11, 200, "a-11"),
        record(&b, T0 + 1, 0, "b-1"),
        record(&b, T0 + 2, 100, "b-2"),
    ];
    deliver(&sink, &second).await.unwrap();
    let mut lines = loki.lines();
    lines.sort();
    assert_eq!(lines, ["a-10", "a-11", "b-1", "b-2"]);
    let letters = dead_letters(&sink);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["records"][0]["message"], "a-5");
    assert_eq!(letters[0]["status"], 400);
    assert_eq!(letters[0]["reason"], "entry out of order");
    assert_eq!(sink.metrics().records_sent(), 4);
}

#[tokio::test]
async fn too_old_entries_are_dead_lettered_one_by_one() {
    let loki = LokiReceiver::start().await.unwrap();
    loki.set_reject_older_than(T0 + 3);
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "loki-too-old",
        &state,
        json!({"url": loki.url(), "encoding": "json"}),
    );
    let mut records = batch(&source("ns", "p", "a"), T0, 3, "a");
    records.extend(batch(&source("ns", "p", "b"), T0 + 2, 3, "b"));
    // a-0 (T0) and b-0 (T0+2) are older than T0+3; a-1/a-2 are at T0+1ms, T0+2ms.
    deliver(&sink, &records).await.unwrap();
    let mut refused: Vec<String> = dead_letters(&sink)
        .iter()
        // One line per reason, its records inside.
        .flat_map(|l| l["records"].as_array().unwrap().clone())
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    refused.sort();
    assert_eq!(refused, ["a-0", "b-0"]);
    assert_eq!(loki.lines().len(), 4);
}

#[tokio::test]
async fn a_cut_list_of_refusals_dead_letters_that_whole_stream_only() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("loki-cut", &state, json!({"url": loki.url()}));
    let a = source("ns", "p", "a");
    let b = source("ns", "p", "b");
    deliver(&sink, &[record(&a, T0 + 1_000_000_000, 0, "a-late")])
        .await
        .unwrap();
    // Twelve entries behind stream a's newest: Loki lists ten of them.
    let mut second = batch(&a, T0, 12, "a-old");
    second.push(record(&a, T0 + 2_000_000_000, 99_999, "a-new"));
    second.extend(batch(&b, T0, 2, "b"));
    deliver(&sink, &second).await.unwrap();
    let refused: Vec<String> = dead_letters(&sink)
        .iter()
        // One line per reason, its records inside.
        .flat_map(|l| l["records"].as_array().unwrap().clone())
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    // Every entry of stream a in that request (a-new too: it may or may not be stored),
    // nothing of stream b.
    assert_eq!(refused.len(), 13, "{refused:?}");
    assert!(refused.iter().all(|m| m.starts_with("a-")));
    assert!(loki.lines().contains(&"b-0".to_string()));
}

fn enriched(
    namespace: &str,
    pod: &str,
    workload: &str,
) -> std::sync::Arc<node_agent::core::record::SourceMeta> {
    let mut meta = (*source(namespace, pod, "app")).clone();
    meta.kubernetes = Some(std::sync::Arc::new(node_agent::core::kube::PodMetadata {
        labels: [("app.kubernetes.io/name".to_string(), workload.to_string())].into(),
        annotations: [(
            "loki.grafana.com/tenant".to_string(),
            format!("t-{namespace}"),
        )]
        .into(),
        workload: Some(node_agent::core::kube::Workload {
            kind: "Deployment".into(),
            name: workload.into(),
        }),
        ..Default::default()
    }));
    std::sync::Arc::new(meta)
}

#[tokio::test]
async fn labels_and_structured_metadata_are_configurable_in_both_encodings() {
    for encoding in ["protobuf", "json"] {
        let loki = LokiReceiver::start().await.unwrap();
        let state = tempfile::tempdir().unwrap();
        let sink = sink(
            &format!("loki-meta-{encoding}"),
            &state,
            json!({"url": loki.url(), "encoding": encoding,
                "record_labels": {"namespace": "namespace", "app": "label:app.kubernetes.io/name",
                    "level": "field:level"},
                "structured_metadata": {"pod": "pod", "kind": "workload_kind"},
                "structured_metadata_fields": true}),
        );
        let src = enriched("shop", "web-7d9f-abcde", "web");
        let mut a = record(&src, T0, 0, r#"{"level":"info","user":"ann","n":3}"#);
        a.fields = serde_json::from_str(&a.message).unwrap();
        let mut b = record(&src, T0 + 1, 100, r#"{"level":"error"}"#);
        b.fields = serde_json::from_str(&b.message).unwrap();
        let plain = record(&src, T0 + 2, 200, "not json");
        deliver(&sink, &[a, b, plain]).await.unwrap();
        let entries = loki.entries();
        assert_eq!(entries.len(), 3, "{encoding}");
        let by_line = |prefix: &str| entries.iter().find(|e| e.line.starts_with(prefix)).unwrap();
        let info = by_line(r#"{"level":"info""#);
        assert_eq!(
            info.labels,
            [("app", "web"), ("level", "info"), ("namespace", "shop")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            "{encoding}"
        );
        assert_eq!(
            info.metadata,
            [
                ("pod", "web-7d9f-abcde"),
                ("kind", "Deployment"),
                ("level", "info"),
                ("user", "ann"),
                ("n", "3")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
            "{encoding}"
        );
        assert_eq!(by_line(r#"{"level":"error""#).labels["level"], "error");
        let plain = by_line("not json");
        assert!(!plain.labels.contains_key("level"));
        assert_eq!(plain.metadata.len(), 2, "{encoding}");
    }
}

#[tokio::test]
async fn tenant_per_record_sends_one_request_per_tenant() {
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "loki-tenants",
        &state,
        json!({"url": loki.url(), "tenant": "fallback",
            "tenant_from": "annotation:loki.grafana.com/tenant"}),
    );
    let a = enriched("team-a", "a-1", "a");
    let b = enriched("team-b", "b-1", "b");
    let bare = source("team-c", "c-1", "app");
    let records = vec![
        record(&a, T0, 0, "a0"),
        record(&b, T0, 0, "b0"),
        record(&bare, T0, 0, "c0"),
        record(&a, T0 + 1, 100, "a1"),
        record(&b, T0 + 1, 100, "b1"),
    ];
    deliver(&sink, &records).await.unwrap();
    let mut requests: Vec<String> = loki
        .server()
        .requests()
        .iter()
        .map(|r| r.headers["x-scope-orgid"].to_str().unwrap().to_string())
        .collect();
    requests.sort();
    assert_eq!(requests, ["fallback", "t-team-a", "t-team-b"]);
    for e in loki.entries() {
        let want = match &e.line[..1] {
            "a" => "t-team-a",
            "b" => "t-team-b",
            _ => "fallback",
        };
        assert_eq!(e.tenant.as_deref(), Some(want), "{}", e.line);
    }
    assert_eq!(loki.entries().len(), 5);
}

#[tokio::test]
async fn refused_credentials_make_the_sink_unhealthy_and_lose_nothing() {
    use node_agent::core::health::{self, State};
    let loki = LokiReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = std::sync::Arc::new(sink("loki-auth", &state, json!({"url": loki.url()})));
    let subsystem = "sink/loki-auth";
    assert_eq!(health::snapshot().get(subsystem), Some(&State::Up));
    // A multi-tenant Loki without a tenant: 401 "no org id", forever.
    loki.server().fail_next(100_000, 401);
    let records = batch(&source("ns", "p", "c"), T0, 5, "auth");
    let delivering = {
        let sink = std::sync::Arc::clone(&sink);
        let records = records.clone();
        tokio::spawn(async move { deliver(&sink, &records).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(health::snapshot().get(subsystem), Some(State::Degraded(_))) {
        assert!(
            std::time::Instant::now() < deadline,
            "never marked unhealthy"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let Some(State::Degraded(why)) = health::snapshot().get(subsystem).cloned() else {
        unreachable!()
    };
    assert!(why.contains("401"), "{why}");
    assert!(loki.entries().is_empty());
    // Credentials fixed: everything arrives, the sink is healthy again.
    loki.server().clear_failures();
    delivering.await.unwrap().unwrap();
    assert_eq!(loki.lines().len(), 5);
    assert_eq!(health::snapshot().get(subsystem), Some(&State::Up));
    assert_eq!(sink.metrics().dead_lettered_records(), 0);
}
