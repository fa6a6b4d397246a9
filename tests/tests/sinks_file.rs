//! The file sink, and building sinks from config.

use node_agent::identity::NodeIdentity;
use node_agent::sinks::{SinkConfig, build_all_in};
use node_agent_tests::receivers::records::{batch, source};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000_000_000_000;

fn configs(value: serde_json::Value) -> Vec<SinkConfig> {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn file_sink_appends_json_lines_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/out.ndjson");
    let sinks = build_all_in(
        &configs(json!([{"type": "file", "path": path}])),
        &NodeIdentity::default(),
        dir.path(),
    )
    .unwrap();
    assert_eq!(sinks[0].name(), "file");
    let src = source("ns", "pod", "ctr");
    let mut first = batch(&src, T0, 3, "first");
    first[1].fields = Some(serde_json::from_str(r#"{"k":"v"}"#).unwrap());
    first[2].truncated = true;
    let cancel = CancellationToken::new();
    sinks[0].deliver(&first, &cancel).await.unwrap();
    sinks[0]
        .deliver(&batch(&src, T0 + 10, 2, "second"), &cancel)
        .await
        .unwrap();
    sinks[0].deliver(&[], &cancel).await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["message"], "first-0");
    assert_eq!(lines[0]["timestamp"], "2023-11-14T22:13:20.000000000Z");
    assert_eq!(lines[0]["namespace"], "ns");
    assert_eq!(lines[0]["pod"], "pod");
    assert_eq!(lines[0]["container"], "ctr");
    assert_eq!(lines[0]["stream"], "stdout");
    assert_eq!(lines[0]["node"], "node-1");
    assert!(lines[0].get("truncated").is_none());
    assert_eq!(lines[1]["fields"]["k"], "v");
    assert_eq!(lines[2]["truncated"], true);
    assert_eq!(lines[4]["message"], "second-1");
}

#[test]
fn empty_config_means_stdout_and_names_must_be_unique() {
    let dir = tempfile::tempdir().unwrap();
    let id = NodeIdentity::default();
    let sinks = build_all_in(&[], &id, dir.path()).unwrap();
    assert_eq!(sinks.len(), 1);
    assert_eq!(sinks[0].name(), "stdout");
    let err = build_all_in(
        &configs(json!([{"type": "stdout"}, {"type": "stdout"}])),
        &id,
        dir.path(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("distinct `name`"), "{err}");
    let sinks = build_all_in(
        &configs(json!([{"type": "stdout"}, {"type": "stdout", "name": "second"}])),
        &id,
        dir.path(),
    )
    .unwrap();
    assert_eq!(sinks[1].name(), "second");
}

#[test]
fn unwritable_file_path_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let path = blocker.join("out.ndjson");
    let err = build_all_in(
        &configs(json!([{"type": "file", "path": path}])),
        &NodeIdentity::default(),
        dir.path(),
    )
    .err()
    .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("sinks[0] (file)") && msg.contains("not-a-dir"),
        "{msg}"
    );
}

#[test]
fn loki_config_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let err = build_all_in(
        &configs(json!([{"type": "loki", "url": "http://l", "tenantt": "x"}])),
        &NodeIdentity::default(),
        dir.path(),
    )
    .err()
    .unwrap();
    assert!(format!("{err:#}").contains("tenantt"), "{err:#}");
}
