//! Host files by glob and the Kubernetes audit log through the real pipeline: rotation,
//! restart exactly once, excludes, symlinks, JSON and audit mapping.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use node_agent::core::record::SourceKind;
use node_agent::logs::LogsConfig;
use node_agent::logs::sources::files::{FileFormat, FilesEntry};
use node_agent::logs::sources::journal::JournalSourceConfig;
use node_agent_tests::pipeline::{self, CollectingSink, Running};

fn config(root: &Path, files: Vec<FilesEntry>) -> LogsConfig {
    LogsConfig {
        pods_dir: root.join("pods"),
        state_dir: root.join("state"),
        rescan_interval: Duration::from_millis(100),
        checkpoint_interval: Duration::from_millis(100),
        batch_max_records: 50,
        batch_timeout: Duration::from_millis(20),
        max_in_flight_batches: 1,
        drain_timeout: Duration::from_secs(5),
        journal: JournalSourceConfig {
            enabled: Some(false),
            ..JournalSourceConfig::default()
        },
        files: Some(files),
        ..LogsConfig::default()
    }
}

fn entry(dir: &Path, globs: &[&str], format: FileFormat) -> FilesEntry {
    FilesEntry {
        paths: globs
            .iter()
            .map(|g| format!("{}/{g}", dir.display()))
            .collect(),
        exclude: Vec::new(),
        format,
    }
}

fn start(config: LogsConfig, sink: &Arc<CollectingSink>) -> Running {
    Running::start(config, vec![sink.clone()])
}

async fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    pipeline::wait_for(what, Duration::from_secs(30), cond).await
}

fn append(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn lines(name: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{name} line {i:05}")).collect()
}

/// Exactly `want`, each once, in any order (with a short account when not).
fn assert_exactly(got: &[String], want: &[String]) {
    let mut g = got.to_vec();
    let mut w = want.to_vec();
    g.sort();
    w.sort();
    if g == w {
        return;
    }
    let dups: Vec<_> = g
        .windows(2)
        .filter(|p| p[0] == p[1])
        .map(|p| &p[0])
        .take(5)
        .collect();
    let missing: Vec<_> = w.iter().filter(|m| !g.contains(m)).take(5).collect();
    let extra: Vec<_> = g.iter().filter(|m| !w.contains(m)).take(5).collect();
    panic!(
        "got {}, want {}; duplicates {dups:?}; missing {missing:?}; unexpected {extra:?}",
        got.len(),
        want.len()
    );
}

/// A counter of the process-wide registry by its `source` label (0 when absent).
fn by_source(name: &str, source: &str) -> u64 {
    node_agent::core::telemetry::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            m.get_label()
                .iter()
                .any(|l| l.name() == "source" && l.value() == source)
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn logdir(root: &Path) -> PathBuf {
    let d = root.join("log");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_rotation_and_restart_ship_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = logdir(dir.path());
    let app = log.join("app.log");
    let other = log.join("other.log");
    append(&app, lines("app", 0..100));
    append(&other, lines("other", 0..20));
    // Not matched, excluded, or nested too deep for `*.log`: never read.
    append(&log.join("notes.txt"), lines("notes", 0..5));
    append(&log.join("secret.log"), lines("secret", 0..5));
    std::fs::create_dir_all(log.join("pods/x")).unwrap();
    append(&log.join("pods/x/0.log"), lines("pod", 0..5));
    // A symlink to a file outside: refused, not followed.
    let outside = dir.path().join("outside.txt");
    append(&outside, lines("outside", 0..5));
    std::os::unix::fs::symlink(&outside, log.join("link.log")).unwrap();

    let mut e = entry(&log, &["*.log"], FileFormat::Plain);
    e.exclude = vec![format!("{}/secret.log", log.display())];
    let cfg = config(dir.path(), vec![e]);
    let sink = Arc::new(CollectingSink::default());
    let run = start(cfg.clone(), &sink);
    wait_for("initial lines", || sink.len() >= 120).await;

    // logrotate's default (rename + create): the rest of the old file is finished
    // through the open handle, the new file read from its start.
    append(&app, lines("app", 100..150));
    std::fs::rename(&app, log.join("app.log.1")).unwrap();
    append(&log.join("app.log.1"), lines("app", 150..160));
    append(&app, lines("app", 160..200));
    wait_for("after rotation", || sink.len() >= 200).await;
    run.stop().await;

    // Written while stopped, then a restart: only the new lines.
    append(&app, lines("app", 200..230));
    append(&other, lines("other", 20..40));
    let run = start(cfg.clone(), &sink);
    wait_for("after restart", || sink.len() >= 250).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;

    let mut want = lines("app", 0..230);
    want.extend(lines("other", 0..40));
    assert_exactly(&sink.messages(), &want);
    let records = sink.records.lock().unwrap();
    for r in records.iter() {
        assert_eq!(r.source.kind, SourceKind::File);
        assert_eq!(r.source.node, "node-1");
        let name = r.source.path.file_name().unwrap().to_string_lossy();
        assert!(
            ["app.log", "app.log.1", "other.log"].contains(&name.as_ref()),
            "{}",
            r.source.path.display()
        );
        assert!(r.fields.is_none(), "plain lines have no fields");
    }
    // Its own checkpoint file, next to (not inside) the pods one.
    let names: Vec<String> = std::fs::read_dir(&cfg.state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("files-") && n.ends_with(".json")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_become_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = logdir(dir.path());
    append(
        &log.join("svc.json"),
        [
            r#"{"level":"warn","msg":"disk almost full","pct":91}"#.to_string(),
            "not json at all".to_string(),
        ],
    );
    let sink = Arc::new(CollectingSink::default());
    let run = start(
        config(dir.path(), vec![entry(&log, &["*.json"], FileFormat::Json)]),
        &sink,
    );
    wait_for("two lines", || sink.len() >= 2).await;
    run.stop().await;
    let records = sink.records.lock().unwrap();
    let f = records[0].fields.as_ref().expect("parsed");
    assert_eq!(f["level"], "warn");
    assert_eq!(f["pct"], 91);
    assert!(records[1].fields.is_none());
    assert_eq!(records[1].message, "not json at all");
    assert!(!records[1].malformed);
}

/// Events as kube-apiserver writes them with `--audit-log-path` and the `Metadata` level.
fn audit_events() -> Vec<String> {
    [
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"0b1c","stage":"RequestReceived","requestURI":"/api/v1/namespaces/prod/pods/web-0/exec?command=sh","verb":"create","user":{"username":"alice@example.com","groups":["devs","system:authenticated"]},"sourceIPs":["203.0.113.9"],"userAgent":"kubectl/v1.30.2 (linux/amd64) kubernetes/3968350","objectRef":{"resource":"pods","namespace":"prod","name":"web-0","apiVersion":"v1","subresource":"exec"},"requestReceivedTimestamp":"2026-12-01T09:59:59.000001Z","stageTimestamp":"2026-12-01T09:59:59.000001Z"}"#,
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"0b1c","stage":"ResponseStarted","requestURI":"/api/v1/namespaces/prod/pods/web-0/exec?command=sh","verb":"create","user":{"username":"alice@example.com","groups":["devs","system:authenticated"]},"sourceIPs":["203.0.113.9"],"userAgent":"kubectl/v1.30.2 (linux/amd64) kubernetes/3968350","objectRef":{"resource":"pods","namespace":"prod","name":"web-0","apiVersion":"v1","subresource":"exec"},"responseStatus":{"metadata":{},"code":101},"requestReceivedTimestamp":"2026-12-01T09:59:59.000001Z","stageTimestamp":"2026-12-01T09:59:59.020000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by ClusterRoleBinding \"devs-exec\""}}"#,
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"77aa","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/kube-system/deployments/coredns","verb":"delete","user":{"username":"system:serviceaccount:ci:deployer","groups":["system:serviceaccounts"]},"sourceIPs":["10.0.0.12","10.0.0.1"],"userAgent":"argocd-application-controller/v0.0.0","objectRef":{"resource":"deployments","namespace":"kube-system","name":"coredns","apiGroup":"apps","apiVersion":"v1"},"responseStatus":{"metadata":{},"status":"Failure","reason":"Forbidden","code":403},"requestReceivedTimestamp":"2026-12-01T10:00:00.100000Z","stageTimestamp":"2026-12-01T10:00:00.101000Z","annotations":{"authorization.k8s.io/decision":"forbid","authorization.k8s.io/reason":""}}"#,
        "garbage that is not an event",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_events_map_to_fields_with_kind_audit() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("kubernetes/audit");
    std::fs::create_dir_all(&audit).unwrap();
    let events = audit_events();
    let read_before = by_source("node_agent_logs_source_records_read_total", "audit");
    let delivered_before = by_source("node_agent_logs_source_records_delivered_total", "audit");
    append(&audit.join("audit.log"), events.clone());
    let sink = Arc::new(CollectingSink::default());
    let run = start(
        config(
            dir.path(),
            vec![entry(&audit, &["*.log"], FileFormat::Audit)],
        ),
        &sink,
    );
    wait_for("events", || sink.len() >= 4).await;
    run.stop().await;
    // Per-source metrics (tests in this binary run in parallel: other kinds move too).
    assert_eq!(
        by_source("node_agent_logs_source_records_read_total", "audit") - read_before,
        4
    );
    assert_eq!(
        by_source("node_agent_logs_source_records_delivered_total", "audit") - delivered_before,
        4
    );
    let records = sink.records.lock().unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| r.message.clone())
            .collect::<Vec<_>>(),
        events,
        "the message is the whole event"
    );
    for r in records.iter() {
        assert_eq!(r.source.kind, SourceKind::Audit);
        assert_eq!(r.source.path, audit.join("audit.log"));
    }
    let f = |i: usize| records[i].fields.as_ref().expect("mapped");
    assert_eq!(f(0)["stage"], "RequestReceived");
    assert_eq!(f(0)["verb"], "create");
    assert_eq!(f(0)["user"], "alice@example.com");
    assert_eq!(f(0)["subresource"], "exec");
    assert!(!f(0).contains_key("code"));
    assert_eq!(f(1)["code"], 101);
    assert_eq!(f(1)["decision"], "allow");
    assert_eq!(f(2)["audit_id"], "77aa");
    assert_eq!(f(2)["verb"], "delete");
    assert_eq!(f(2)["user"], "system:serviceaccount:ci:deployer");
    assert_eq!(
        f(2)["source_ips"],
        serde_json::json!(["10.0.0.12", "10.0.0.1"])
    );
    assert_eq!(f(2)["resource"], "deployments");
    assert_eq!(f(2)["api_group"], "apps");
    assert_eq!(f(2)["object_namespace"], "kube-system");
    assert_eq!(f(2)["object_name"], "coredns");
    assert_eq!(f(2)["code"], 403);
    assert_eq!(f(2)["decision"], "forbid");
    // The event's own time, not when it was read.
    assert_eq!(records[2].timestamp_nanos, 1_796_119_200_101_000_000);
    assert!(records[3].malformed && records[3].fields.is_none());
    assert!(!records[0].malformed);
}
