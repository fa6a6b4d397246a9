//! End-to-end tests of the processing stages (`logs.processors`) in the real pipeline, with
//! the file sink: what reaches the sink, and that positions stay exactly-once around stages
//! that hold records (multiline) or drop them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use node_agent::identity::NodeIdentity;
use node_agent::logs::LogsConfig;
use node_agent::sinks::{SinkConfig, build_all_in};
use node_agent_tests::pipeline::Running;
use serde_json::Value;

const T0: i64 = 1_700_000_000_000_000_000;

struct Pod {
    log: PathBuf,
    clock: i64,
}

impl Pod {
    fn create(pods_dir: &Path) -> Self {
        Self::named(pods_dir, "shop-7d9", 1)
    }

    fn named(pods_dir: &Path, pod: &str, n: u32) -> Self {
        let dir = pods_dir
            .join(format!("prod_{pod}_0b7c6a52-0000-4000-8000-{n:012}"))
            .join("app");
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            log: dir.join("0.log"),
            clock: T0,
        }
    }

    /// Appends CRI lines `(stream, tag, text)`; every line gets the next timestamp.
    fn write(&mut self, lines: &[(&str, &str, &str)]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        for (stream, tag, text) in lines {
            self.clock += 1_000;
            let ts = chrono::DateTime::from_timestamp_nanos(self.clock)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            writeln!(f, "{ts} {stream} {tag} {text}").unwrap();
        }
    }
}

fn config(root: &Path, processors: &str) -> LogsConfig {
    LogsConfig {
        pods_dir: root.join("pods"),
        state_dir: root.join("state"),
        rescan_interval: Duration::from_millis(100),
        checkpoint_interval: Duration::from_millis(50),
        batch_timeout: Duration::from_millis(20),
        drain_timeout: Duration::from_secs(5),
        processors: serde_yaml_ng::from_str(processors).unwrap(),
        ..LogsConfig::default()
    }
}

fn start(root: &Path, config: LogsConfig) -> Running {
    let sinks: Vec<SinkConfig> = serde_json::from_value(serde_json::json!([
        {"type": "file", "path": root.join("out.ndjson")}
    ]))
    .unwrap();
    let sinks = build_all_in(&sinks, &NodeIdentity::default(), root).unwrap();
    Running::start(config, sinks)
}

fn shipped(root: &Path) -> Vec<Value> {
    std::fs::read_to_string(root.join("out.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_for_records(root: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = shipped(root);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} records, have {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn messages(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_the_middle_of_a_stack_trace_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut pod = Pod::create(&root.join("pods"));
    pod.write(&[
        ("stdout", "F", "INFO started"),
        ("stderr", "F", "ERROR first failure"),
        ("stderr", "F", "java.lang.IllegalStateException: empty cart"),
        ("stderr", "F", "\tat com.acme.Cart.total(Cart.java:42)"),
        ("stdout", "F", "INFO between"),
        ("stderr", "F", "INFO first handled"),
        // The trace the agent is stopped in: its head, a frame split in CRI partials, and
        // stdout lines interleaved with it.
        ("stderr", "F", "ERROR second failure"),
        ("stdout", "F", "GET /health 200"),
        ("stderr", "P", "\tat com.acme.Pay"),
        ("stderr", "F", "ment.charge(Payment.java:7)"),
        ("stdout", "F", "GET /health 200 again"),
    ]);
    // Groups never time out in the first run: the agent stops with the trace open.
    let first = "[{type: multiline, detector: java, flush_timeout: 1h}]";
    let mut cfg = config(root, first);
    // Lines and traces straddle read chunks.
    cfg.read_chunk_bytes = 37;
    let run = start(root, cfg);
    let before = wait_for_records(root, 4).await;
    // Give the pipeline the chance to (wrongly) ship more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    let before_stop = shipped(root);
    assert_eq!(before_stop.len(), before.len());
    assert_eq!(
        messages(&before_stop),
        [
            "INFO started",
            "ERROR first failure\njava.lang.IllegalStateException: empty cart\n\tat com.acme.Cart.total(Cart.java:42)",
            "INFO between",
            "INFO first handled",
        ],
        "nothing at or after the open trace was shipped"
    );

    // The rest of the trace is written while no agent runs.
    pod.write(&[
        (
            "stderr",
            "F",
            "Caused by: java.io.IOException: gateway down",
        ),
        ("stderr", "F", "\t... 3 more"),
        ("stdout", "F", "GET /health 200 third"),
        ("stderr", "F", "INFO second handled"),
        ("stdout", "F", "INFO done"),
    ]);
    let second = "[{type: multiline, detector: java, flush_timeout: 100ms}]";
    let run = start(root, config(root, second));
    let all = wait_for_records(root, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    let all_final = shipped(root);
    assert_eq!(all_final.len(), all.len());
    let mut got = messages(&all_final);
    // Order across streams is by offset; compare as a multiset plus the exact trace.
    got.sort();
    let mut want = vec![
        "INFO started",
        "ERROR first failure\njava.lang.IllegalStateException: empty cart\n\tat com.acme.Cart.total(Cart.java:42)",
        "INFO between",
        "INFO first handled",
        "ERROR second failure\n\tat com.acme.Payment.charge(Payment.java:7)\nCaused by: java.io.IOException: gateway down\n\t... 3 more",
        "GET /health 200",
        "GET /health 200 again",
        "GET /health 200 third",
        "INFO second handled",
        "INFO done",
    ];
    want.sort();
    assert_eq!(
        got, want,
        "every record exactly once, the trace joined whole"
    );

    let trace = all_final
        .iter()
        .find(|r| r["message"].as_str().unwrap().starts_with("ERROR second"))
        .unwrap();
    let text = std::fs::read_to_string(&pod.log).unwrap();
    let head_offset = text.find("ERROR second failure").unwrap();
    let line_start = text[..head_offset].rfind('\n').map_or(0, |i| i + 1);
    assert_eq!(
        trace["offset"], line_start as u64,
        "the first line's offset"
    );
    assert_eq!(trace["stream"], "stderr");
    let first_line_time = &text[line_start..line_start + 30];
    assert_eq!(
        trace["timestamp"], first_line_time,
        "the first line's timestamp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_records_advance_positions_and_parsed_fields_reach_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut pod = Pod::create(&root.join("pods"));
    pod.write(&[
        (
            "stdout",
            "F",
            r#"{"lvl":"INFO","msg":"order placed","ts":"2024-05-01T12:00:00Z"}"#,
        ),
        (
            "stdout",
            "F",
            r#"{"lvl":"DEBUG","msg":"cache miss","ts":"2024-05-01T12:00:01Z"}"#,
        ),
        ("stdout", "F", "not json at all"),
    ]);
    let processors = r#"[
        {type: json, level: lvl, timestamp: {field: ts}},
        {type: filter, name: e2e-drop-debug, level: [debug]}
    ]"#;
    let run = start(root, config(root, processors));
    let got = wait_for_records(root, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The file ends with records that are all dropped: their position must still move.
    pod.write(&[(
        "stdout",
        "F",
        r#"{"lvl":"debug","msg":"tail chatter","ts":"2024-05-01T12:00:02Z"}"#,
    )]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.stop().await;
    let first = shipped(root);
    assert_eq!(first.len(), got.len());
    assert_eq!(messages(&first)[0], got[0]["message"]);
    assert_eq!(first.len(), 2, "{first:#?}");
    assert_eq!(first[0]["fields"]["level"], "info");
    assert_eq!(first[0]["timestamp"], "2024-05-01T12:00:00.000000000Z");
    assert!(first[0]["fields"]["runtime_time"].is_string());
    assert_eq!(first[1]["message"], "not json at all");
    assert!(
        first[1]["fields"]["parse_error"]
            .as_str()
            .unwrap()
            .starts_with("json: ")
    );

    // Without the filter, a restart must not re-read what was dropped.
    pod.write(&[("stdout", "F", r#"{"lvl":"info","msg":"after restart"}"#)]);
    let run = start(root, config(root, "[]"));
    let all = wait_for_records(root, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    assert_eq!(shipped(root).len(), all.len());
    assert_eq!(
        messages(&all)[2..],
        [r#"{"lvl":"info","msg":"after restart"}"#],
        "dropped records were not shipped after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_and_throttling_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut pod = Pod::create(&root.join("pods"));
    let mut lines = vec![(
        "stdout",
        "F",
        r#"{"user":"jane@example.com","msg":"paid with 4111 1111 1111 1111","auth":"Bearer s3cr3t.t0ken"}"#.to_string(),
    )];
    for i in 0..50 {
        lines.push(("stdout", "F", format!("chatter {i}")));
    }
    let lines: Vec<(&str, &str, &str)> =
        lines.iter().map(|(a, b, c)| (*a, *b, c.as_str())).collect();
    pod.write(&lines);
    // A rate so low that only the burst passes while the test runs.
    let processors = r#"[
        {type: json, match: {container: app}},
        {type: redact},
        {type: throttle, name: e2e-throttle, records_per_second: 0.001, burst_seconds: 10000}
    ]"#;
    let run = start(root, config(root, processors));
    let got = wait_for_records(root, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    let all = shipped(root);
    assert_eq!(all.len(), got.len());
    assert_eq!(all.len(), 10, "the burst passes, the rest is dropped");
    let first = &all[0];
    assert!(
        !first["message"].as_str().unwrap().contains("jane@"),
        "{first}"
    );
    assert!(
        !first["message"].as_str().unwrap().contains("4111"),
        "{first}"
    );
    assert_eq!(first["fields"]["user"], "[REDACTED]");
    assert_eq!(first["fields"]["msg"], "paid with [REDACTED]");
    assert_eq!(first["fields"]["auth"], "Bearer [REDACTED]");
    assert_eq!(all[9]["message"], "chatter 8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_throttle_delays_only_the_noisy_container_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut noisy = Pod::named(&root.join("pods"), "noisy", 1);
    let texts: Vec<String> = (0..300).map(|i| format!("noisy line {i:04}")).collect();
    let lines: Vec<(&str, &str, &str)> =
        texts.iter().map(|t| ("stdout", "F", t.as_str())).collect();
    noisy.write(&lines);
    let processors =
        "[{type: throttle, records_per_second: 200, action: slow, match: {pod: noisy}}]";
    let mut cfg = config(root, processors);
    // Small chunks, so reading the noisy file takes many passes.
    cfg.read_chunk_bytes = 1024;
    let run = start(root, cfg);
    wait_for_records(root, 1).await;
    let mut quiet = Pod::named(&root.join("pods"), "quiet", 2);
    quiet.write(&[("stdout", "F", "quiet line")]);
    let all = wait_for_records(root, 301).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    assert_eq!(shipped(root).len(), all.len());
    let msgs = messages(&all);
    let mut noisy_got: Vec<&str> = msgs
        .iter()
        .copied()
        .filter(|m| m.starts_with("noisy"))
        .collect();
    noisy_got.sort();
    assert_eq!(noisy_got, texts, "nothing dropped or duplicated");
    let quiet_at = msgs.iter().position(|m| *m == "quiet line").unwrap();
    assert!(
        quiet_at < 300,
        "the quiet pod is not queued behind the noisy one's backlog (at {quiet_at})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_in_the_middle_of_a_trace_ships_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut pod = Pod::create(&root.join("pods"));
    pod.write(&[
        ("stdout", "F", "INFO before"),
        ("stderr", "F", "Traceback (most recent call last):"),
        (
            "stderr",
            "F",
            "  File \"/app/main.py\", line 3, in <module>",
        ),
    ]);
    let run = start(
        root,
        config(
            root,
            "[{type: multiline, detector: python, flush_timeout: 200ms}]",
        ),
    );
    wait_for_records(root, 1).await;
    // kubelet rotates: the rest of the trace goes to the new file.
    std::fs::rename(&pod.log, pod.log.with_extension("log.20240501-120000")).unwrap();
    pod.write(&[
        ("stderr", "F", "    main()"),
        ("stderr", "F", "ValueError: boom"),
        ("stdout", "F", "INFO after"),
    ]);
    let all = wait_for_records(root, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.stop().await;
    assert_eq!(shipped(root).len(), all.len());
    // Groups never span files: the trace is cut at the rotation, but nothing is lost or
    // shipped twice.
    let mut lines: Vec<&str> = messages(&all).iter().flat_map(|m| m.split('\n')).collect();
    lines.sort();
    let mut want = vec![
        "INFO before",
        "Traceback (most recent call last):",
        "  File \"/app/main.py\", line 3, in <module>",
        "    main()",
        "ValueError: boom",
        "INFO after",
    ];
    want.sort();
    assert_eq!(lines, want);
    assert!(messages(&all).contains(
        &"Traceback (most recent call last):\n  File \"/app/main.py\", line 3, in <module>"
    ));
}
