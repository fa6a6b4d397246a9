//! The Elasticsearch sink against an external ES-compatible server (see
//! `.ci/steps/es-emulator.sh`, which starts one and sets `ES_EMULATOR_URL`).
//! Ignored by default: it needs that server.

use std::collections::HashSet;
use std::time::Duration;

use node_agent::core::record::LogRecord;
use node_agent::sinks::Sink;
use node_agent::sinks::config::ElasticsearchConfig;
use node_agent::sinks::elasticsearch::{ElasticsearchSink, document_id};
use node_agent_tests::receivers::records::{batch, source};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000_000_000_000;

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Value {
    let mut request = client.request(method, &url);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    assert!(
        status.is_success(),
        "{url}: {status} {}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
#[ignore = "needs an ES-compatible server at ES_EMULATOR_URL (.ci/steps/es-emulator.sh)"]
async fn every_record_arrives_exactly_once() {
    let url = std::env::var("ES_EMULATOR_URL").expect("ES_EMULATOR_URL");
    let state = tempfile::tempdir().unwrap();
    let prefix = format!("node-agent-emu-{}", std::process::id());
    let config: ElasticsearchConfig = serde_json::from_value(json!({
        "url": url,
        "index": format!("{prefix}-%Y.%m.%d"),
        "gzip": true,
        "max_request_bytes": 64 * 1024,
        "retry": {"initial_backoff_ms": 10, "max_backoff_ms": 500},
    }))
    .unwrap();
    let sink =
        ElasticsearchSink::with_state_dir("es-emulator".into(), &config, state.path()).unwrap();

    // Three pods, two days, several batches.
    let mut records: Vec<LogRecord> = Vec::new();
    for (i, pod) in ["web-1", "web-2", "db-0"].iter().enumerate() {
        let src = source("emu", pod, "app");
        records.extend(batch(
            &src,
            T0 + i as i64 * 43_200_000_000_000,
            1000,
            &format!("{pod} line with some text"),
        ));
    }
    let cancel = CancellationToken::new();
    for chunk in records.chunks(700) {
        tokio::time::timeout(Duration::from_secs(60), sink.deliver(chunk, &cancel))
            .await
            .unwrap()
            .unwrap();
    }
    // A redelivery (as after a crash before the checkpoint) must not duplicate anything.
    tokio::time::timeout(
        Duration::from_secs(60),
        sink.deliver(&records[..500], &cancel),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(sink.metrics().dead_lettered_records(), 0);

    let client = reqwest::Client::new();
    let pattern = format!("{prefix}-*");
    call(
        &client,
        reqwest::Method::POST,
        format!("{url}/{pattern}/_refresh"),
        None,
    )
    .await;
    let count = call(
        &client,
        reqwest::Method::GET,
        format!("{url}/{pattern}/_count"),
        None,
    )
    .await;
    assert_eq!(count["count"], records.len(), "{count}");

    let search = call(
        &client,
        reqwest::Method::POST,
        format!("{url}/{pattern}/_search"),
        Some(json!({"size": records.len(), "query": {"match_all": {}}})),
    )
    .await;
    let hits = search["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), records.len());
    let ids: HashSet<&str> = hits.iter().map(|h| h["_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), records.len(), "duplicate ids in the index");
    for r in &records {
        assert!(
            ids.contains(document_id(r).as_str()),
            "missing {}",
            document_id(r)
        );
    }
    let indices: HashSet<&str> = hits.iter().map(|h| h["_index"].as_str().unwrap()).collect();
    assert_eq!(indices.len(), 2, "{indices:?}");
    let hit = hits
        .iter()
        .find(|h| h["_source"]["message"] == "db-0 line with some text-7")
        .unwrap();
    assert_eq!(hit["_source"]["kubernetes"]["pod"]["name"], "db-0");
    assert_eq!(
        hit["_source"]["@timestamp"],
        "2023-11-15T22:13:20.007000000Z"
    );
}
