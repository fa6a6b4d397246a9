//! The Elasticsearch sink against the protocol-faithful `_bulk` receiver.

use std::time::Duration;

use node_agent::core::record::LogRecord;
use node_agent::sinks::config::ElasticsearchConfig;
use node_agent::sinks::elasticsearch::{ElasticsearchSink, document_id};
use node_agent::sinks::{Sink, SinkError};
use node_agent_tests::receivers::EsReceiver;
use node_agent_tests::receivers::records::{batch, record, source};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// 2023-11-14T22:13:20Z
const T0: i64 = 1_700_000_000_000_000_000;

fn sink(name: &str, state: &tempfile::TempDir, config: serde_json::Value) -> ElasticsearchSink {
    let mut config = config;
    config["name"] = json!(name);
    config["retry"] = json!({"initial_backoff_ms": 1, "max_backoff_ms": 20});
    let config: ElasticsearchConfig = serde_json::from_value(config).unwrap();
    ElasticsearchSink::with_state_dir(name.to_string(), &config, state.path()).unwrap()
}

async fn deliver(sink: &ElasticsearchSink, records: &[LogRecord]) -> Result<(), SinkError> {
    let cancel = CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(20), sink.deliver(records, &cancel))
        .await
        .expect("delivery finished in time")
}

#[tokio::test]
async fn bulk_round_trips_ecs_documents_with_deterministic_ids() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "es-rt",
        &state,
        json!({"url": es.url(), "fields_key": "app"}),
    );
    let src = source("shop", "web-1", "nginx");
    let mut parsed = record(
        &src,
        T0 + 123_456_789,
        0,
        r#"{"level":"info","user":{"id":7}}"#,
    );
    parsed.fields = Some(serde_json::from_str(&parsed.message).unwrap());
    let mut bad = record(&src, T0 + 86_400_000_000_000, 100, "not a CRI line");
    bad.malformed = true;
    bad.truncated = true;
    deliver(&sink, &[parsed.clone(), bad.clone()])
        .await
        .unwrap();

    let docs = es.docs();
    assert_eq!(docs.len(), 2);
    let (index, id, doc) = docs
        .iter()
        .find(|(_, id, _)| *id == document_id(&parsed))
        .unwrap()
        .clone();
    assert_eq!(index, "node-agent-2023.11.14");
    assert_eq!(id, format!("{:016x}-0", src.file_id));
    assert_eq!(doc["@timestamp"], "2023-11-14T22:13:20.123456789Z");
    assert_eq!(doc["message"], parsed.message);
    assert_eq!(doc["stream"], "stdout");
    assert_eq!(doc["log"]["file"]["path"], src.path.to_str().unwrap());
    assert_eq!(doc["kubernetes"]["namespace"], "shop");
    assert_eq!(doc["kubernetes"]["pod"]["name"], "web-1");
    assert_eq!(doc["kubernetes"]["pod"]["uid"], "uid-web-1");
    assert_eq!(doc["kubernetes"]["container"]["name"], "nginx");
    assert_eq!(doc["kubernetes"]["node"]["name"], "node-1");
    assert_eq!(doc["app"]["user"]["id"], 7);
    assert!(doc.get("event").is_none());
    assert!(doc["log"].get("malformed").is_none());

    let (index, _, doc) = docs
        .iter()
        .find(|(_, id, _)| *id == document_id(&bad))
        .unwrap()
        .clone();
    assert_eq!(index, "node-agent-2023.11.15");
    assert_eq!(doc["event"]["original"], "not a CRI line");
    assert_eq!(doc["log"]["malformed"], true);
    assert_eq!(doc["log"]["truncated"], true);
    assert_eq!(sink.metrics().records_sent(), 2);
    assert_eq!(
        es.server().requests()[0].headers["content-type"],
        "application/x-ndjson"
    );
}

#[tokio::test]
async fn per_item_failures_retry_only_those_items_and_dead_letter_refusals() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "es-items",
        &state,
        json!({"url": es.url(), "data_stream": "logs-node-default"}),
    );
    let records = batch(&source("ns", "p", "c"), T0, 6, "item");
    es.fail_item(&document_id(&records[1]), 429, 2);
    es.fail_item(&document_id(&records[2]), 503, 1);
    es.fail_item(&document_id(&records[4]), 400, 1);
    deliver(&sink, &records).await.unwrap();

    let writes = es.writes();
    for (i, r) in records.iter().enumerate() {
        let expected = if i == 4 { 0 } else { 1 };
        assert_eq!(
            writes.get(&document_id(r)).copied().unwrap_or(0),
            expected,
            "record {i}"
        );
    }
    assert!(
        es.docs()
            .iter()
            .all(|(index, _, _)| index == "logs-node-default")
    );
    // 1st: all six; 2nd: items 1 and 2; 3rd: item 1.
    assert_eq!(es.bulk_requests(), 3);
    assert_eq!(sink.metrics().retries(), 3);
    assert_eq!(sink.metrics().records_sent(), 5);
    assert_eq!(sink.metrics().dead_lettered_records(), 1);
    let dead = std::fs::read_to_string(sink.dead_letter_path()).unwrap();
    let letter: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(letter["status"], 400);
    assert_eq!(letter["records"][0]["message"], "item-4");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("mapper_parsing_exception")
    );
}

#[tokio::test]
async fn redelivery_is_idempotent_thanks_to_create_conflicts() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("es-redeliver", &state, json!({"url": es.url()}));
    let records = batch(&source("ns", "p", "c"), T0, 20, "once");
    deliver(&sink, &records).await.unwrap();
    // The pipeline redelivers after a crash before its checkpoint: every item answers 409.
    deliver(&sink, &records).await.unwrap();
    assert_eq!(es.docs().len(), 20);
    assert!(es.writes().values().all(|&n| n == 1));
    assert_eq!(sink.metrics().dead_lettered_records(), 0);
    assert_eq!(sink.metrics().records_sent(), 40);
}

#[tokio::test]
async fn whole_request_failures_retry_and_gzip_bodies_decode() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    // SAFETY: set before the sink reads it; the name is unique to this test.
    unsafe { std::env::set_var("NODE_AGENT_TEST_ES_KEY", "aWQ6a2V5") };
    let sink = sink(
        "es-gzip",
        &state,
        json!({"url": es.url(), "gzip": true, "auth": {"api_key": {"key_env": "NODE_AGENT_TEST_ES_KEY"}}}),
    );
    es.server().fail_next(1, 503);
    es.server().fail_next(1, 429);
    let records = batch(&source("ns", "p", "c"), T0, 100, "gz");
    deliver(&sink, &records).await.unwrap();
    assert_eq!(es.docs().len(), 100);
    let requests = es.server().requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.gzipped));
    assert!(
        requests
            .iter()
            .all(|r| r.headers["authorization"] == "ApiKey aWQ6a2V5")
    );
    assert_eq!(sink.metrics().failures("http_5xx"), 1);
    assert_eq!(sink.metrics().failures("http_429"), 1);
}

#[tokio::test]
async fn batches_split_under_max_request_bytes() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "es-split",
        &state,
        json!({"url": es.url(), "max_request_bytes": 8192}),
    );
    let src = source("ns", "p", "c");
    let long = "y".repeat(1000);
    let records: Vec<_> = (0..30)
        .map(|i| record(&src, T0 + i, i as u64 * 2000, &format!("{i}-{long}")))
        .collect();
    deliver(&sink, &records).await.unwrap();
    assert_eq!(es.docs().len(), 30);
    assert!(es.bulk_requests() >= 5, "{} requests", es.bulk_requests());
    assert!(es.server().requests().iter().all(|r| r.wire_len <= 8192));
}

#[tokio::test]
async fn cancel_while_down_returns_cancelled() {
    let es = EsReceiver::start().await.unwrap();
    es.server().set_down(true);
    let state = tempfile::tempdir().unwrap();
    let sink = sink("es-cancel", &state, json!({"url": es.url()}));
    let records = batch(&source("ns", "p", "c"), T0, 3, "c");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        trigger.cancel();
    });
    let result = tokio::time::timeout(Duration::from_secs(10), sink.deliver(&records, &cancel))
        .await
        .unwrap();
    assert!(matches!(result, Err(SinkError::Cancelled)), "{result:?}");
    assert!(es.docs().is_empty());
}

#[tokio::test]
async fn count_and_search_answer_like_elasticsearch() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("es-query", &state, json!({"url": es.url()}));
    let mut records = batch(&source("ns", "a", "c"), T0, 3, "a");
    records.extend(batch(&source("ns", "b", "c"), T0, 2, "b"));
    deliver(&sink, &records).await.unwrap();
    let client = reqwest::Client::new();
    let count = client
        .get(format!("{}/node-agent-*/_count", es.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let count: serde_json::Value = serde_json::from_slice(&count).unwrap();
    assert_eq!(count["count"], 5);
    let count = client
        .post(format!("{}/node-agent-*/_count", es.url()))
        .header("content-type", "application/json")
        .body(json!({"query": {"term": {"kubernetes.pod.name": "b"}}}).to_string())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let count: serde_json::Value = serde_json::from_slice(&count).unwrap();
    assert_eq!(count["count"], 2);
    let search = client
        .get(format!("{}/node-agent-*/_search?size=2", es.url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let search: serde_json::Value = serde_json::from_slice(&search).unwrap();
    assert_eq!(search["hits"]["total"]["value"], 5);
    assert_eq!(search["hits"]["hits"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_configs_fail_with_clear_errors() {
    let state = tempfile::tempdir().unwrap();
    let build = |config: serde_json::Value| {
        let config: ElasticsearchConfig = serde_json::from_value(config).unwrap();
        ElasticsearchSink::with_state_dir("x".into(), &config, state.path())
            .err()
            .map(|e| format!("{e:#}"))
    };
    assert!(
        build(json!({"url": "http://h", "index": "Logs-%Y"}))
            .unwrap()
            .contains("lowercase")
    );
    assert!(
        build(json!({"url": "http://h", "index": "x-%Q"}))
            .unwrap()
            .contains("strftime")
    );
    assert!(build(json!({"url": "ftp://h"})).unwrap().contains("scheme"));
    assert!(
        build(json!({"url": "http://h", "tls": {"ca_file": "/nonexistent/ca.pem"}}))
            .unwrap()
            .contains("/nonexistent/ca.pem")
    );
    assert!(
        build(json!({"url": "http://h", "auth": {"api_key": {"key_file": "/a", "key_env": "B"}}}))
            .unwrap()
            .contains("exactly one")
    );
}

#[tokio::test]
async fn a_2xx_answer_without_one_item_per_record_is_retried() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("es-noitems", &state, json!({"url": es.url()}));
    // Neither is a bulk answer for 4 records: no `items`, then too few.
    es.answer_next_bulk(1, r#"{"took":1,"errors":false}"#);
    es.answer_next_bulk(
        1,
        r#"{"took":1,"errors":false,"items":[{"create":{"status":201}}]}"#,
    );
    let records = batch(&source("ns", "p", "c"), T0, 4, "items");
    deliver(&sink, &records).await.unwrap();
    assert_eq!(es.docs().len(), 4);
    assert!(es.writes().values().all(|&n| n == 1));
    assert_eq!(sink.metrics().failures("bad_response"), 2);
    assert_eq!(sink.metrics().records_sent(), 4);
    assert_eq!(sink.metrics().dead_lettered_records(), 0);
}

#[tokio::test]
async fn a_line_the_server_chokes_on_is_dead_lettered_alone_and_the_rest_delivered() {
    // VictoriaLogs' `_bulk` with a 262,000-byte line between two short ones: it stores the
    // first, drops the rest and answers 200 with an empty body.
    let es = EsReceiver::start().await.unwrap();
    es.set_max_doc_bytes(Some(100_000));
    let state = tempfile::tempdir().unwrap();
    let sink = sink("es-choke", &state, json!({"url": es.url()}));
    let src = source("ns", "p", "c");
    let records = vec![
        record(&src, T0, 0, "short one"),
        record(&src, T0 + 1, 100, &"x".repeat(262_000)),
        record(&src, T0 + 2, 262_200, "short two"),
    ];
    deliver(&sink, &records).await.unwrap();
    let mut messages = es.messages();
    messages.sort();
    assert_eq!(messages, ["short one", "short two"]);
    assert_eq!(sink.metrics().dead_lettered_records(), 1);
    let dead = std::fs::read_to_string(sink.dead_letter_path()).unwrap();
    let letter: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(letter["records"][0]["offset"], 100);
    assert!(letter["reason"].as_str().unwrap().contains("empty body"));
    // Bounded: the whole request twice, then [a] once, [b, c] twice, [b] alone three
    // times (then dead-lettered), [c] once.
    assert_eq!(es.bulk_requests(), 2 + 1 + 2 + 3 + 1);
}

#[tokio::test]
async fn http_413_splits_the_request_and_a_single_record_is_dead_lettered() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink("es-413", &state, json!({"url": es.url()}));
    let records = batch(&source("ns", "p", "c"), T0, 4, "big");
    // The whole request, then its first half, then the first record alone.
    es.server().fail_next(3, 413);
    deliver(&sink, &records).await.unwrap();
    let mut messages = es.messages();
    messages.sort();
    assert_eq!(messages, ["big-1", "big-2", "big-3"]);
    assert_eq!(sink.metrics().dead_lettered_records(), 1);
    let dead = std::fs::read_to_string(sink.dead_letter_path()).unwrap();
    let letter: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(letter["status"], 413);
    assert_eq!(letter["records"][0]["message"], "big-0");
}

#[tokio::test]
async fn ingest_pipeline_is_named_in_the_bulk_url() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "es-pipeline",
        &state,
        json!({"url": es.url(), "pipeline": "parse-k8s"}),
    );
    deliver(&sink, &batch(&source("ns", "p", "c"), T0, 2, "p"))
        .await
        .unwrap();
    let requests = es.server().requests();
    assert_eq!(requests[0].path, "/_bulk");
    assert_eq!(requests[0].query.as_deref(), Some("pipeline=parse-k8s"));
    assert_eq!(es.docs().len(), 2);
}

#[tokio::test]
async fn data_streams_per_namespace() {
    let es = EsReceiver::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let sink = sink(
        "es-ds-ns",
        &state,
        json!({"url": es.url(), "data_stream": "logs-kubernetes-{namespace}"}),
    );
    let mut records = batch(&source("team-a", "p", "c"), T0, 2, "a");
    records.extend(batch(&source("kube-system", "q", "c"), T0, 1, "k"));
    deliver(&sink, &records).await.unwrap();
    let mut indices: Vec<(String, String)> = es
        .docs()
        .into_iter()
        .map(|(i, _, d)| (i, d["message"].as_str().unwrap().to_string()))
        .collect();
    indices.sort();
    assert_eq!(
        indices,
        [
            ("logs-kubernetes-kube_system".to_string(), "k-0".to_string()),
            ("logs-kubernetes-team_a".to_string(), "a-0".to_string()),
            ("logs-kubernetes-team_a".to_string(), "a-1".to_string()),
        ]
    );
}
