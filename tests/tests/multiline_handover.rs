//! Exactly-once with multiline joining on, across real `node-agent` processes: a Java stack
//! trace whose first lines are written, then the agent stops (SIGTERM with a standby taking
//! over, or SIGKILL and a restart), then the rest is written. The Elasticsearch receiver
//! must hold the trace once, as one record with its first line's timestamp and offset, and
//! every other line once; the checkpoint must sit at the start of the open trace.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use node_agent_tests::agent_proc::{AgentDirs, AgentProc};
use node_agent_tests::receivers::EsReceiver;
use serde_json::Value;

const ACQUIRED: &str = "acquired leader lock: now leader";
const STANDBY: &str = "leader lock is held: waiting as standby";
const EXIT: Duration = Duration::from_secs(15);
/// Long enough that the open trace never times out while the test drives the stop (a
/// timeout would ship it cut in two), short enough that the last line's group (a plain
/// line is a group head too) closes quickly at the end.
const FLUSH_TIMEOUT: &str = "8s";
const T0: i64 = 1_700_000_000_000_000_000;

/// One CRI container log, written the way the runtime does.
struct Pod {
    log: PathBuf,
    clock: i64,
}

impl Pod {
    fn create(pods_dir: &Path) -> Self {
        let dir = pods_dir
            .join("shop_checkout-5f7c9_0b7c6a52-0000-4000-8000-000000000001")
            .join("app");
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            log: dir.join("0.log"),
            clock: T0,
        }
    }

    /// Appends CRI lines `(stream, tag, text)` in one write(2), so the agent reads them
    /// together; every line gets the next timestamp.
    fn write(&mut self, lines: &[(&str, &str, &str)]) {
        let mut text = String::new();
        for (stream, tag, line) in lines {
            self.clock += 1_000_000;
            let ts = chrono::DateTime::from_timestamp_nanos(self.clock)
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            text.push_str(&format!("{ts} {stream} {tag} {line}\n"));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Byte offset and CRI timestamp of the line that contains `needle`.
    fn line_of(&self, needle: &str) -> (u64, String) {
        let text = self.text();
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not written"));
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let ts = text[start..].split(' ').next().unwrap().to_string();
        (start as u64, ts)
    }
}

/// The trace's head as the first agent sees it: the log line saying what failed, the
/// exception, a frame split in CRI partials, with stdout lines interleaved.
const HEAD: &[(&str, &str, &str)] = &[
    ("stdout", "F", "INFO order 17 placed"),
    ("stderr", "F", "ERROR payment for order 18 failed"),
    (
        "stderr",
        "F",
        "java.lang.IllegalStateException: card declined",
    ),
    ("stdout", "F", "GET /healthz 200"),
    ("stderr", "P", "\tat com.acme.shop.Pay"),
    ("stderr", "F", "ment.charge(Payment.java:88)"),
    (
        "stderr",
        "F",
        "\tat com.acme.shop.Checkout.run(Checkout.java:31)",
    ),
];
/// The rest, written while the first agent is gone.
const TAIL: &[(&str, &str, &str)] = &[
    (
        "stderr",
        "F",
        "Caused by: java.net.SocketTimeoutException: gateway timed out",
    ),
    (
        "stderr",
        "F",
        "\tat com.acme.shop.Gateway.call(Gateway.java:12)",
    ),
    ("stderr", "F", "\t... 4 more"),
    ("stdout", "F", "GET /healthz 200 again"),
    ("stderr", "F", "INFO order 19 placed"),
];
const TRACE: &str = "ERROR payment for order 18 failed\n\
    java.lang.IllegalStateException: card declined\n\
    \tat com.acme.shop.Payment.charge(Payment.java:88)\n\
    \tat com.acme.shop.Checkout.run(Checkout.java:31)\n\
    Caused by: java.net.SocketTimeoutException: gateway timed out\n\
    \tat com.acme.shop.Gateway.call(Gateway.java:12)\n\
    \t... 4 more";

fn config(dirs: &AgentDirs, es: &EsReceiver) -> PathBuf {
    let yaml = format!(
        "logs:
  pods_dir: {pods:?}
  state_dir: {state:?}
  checkpoint_interval: 100ms
  batch_timeout: 50ms
  rescan_interval: 300ms
  drain_timeout: 10s
  processors:
    - {{type: multiline, detector: java, flush_timeout: {FLUSH_TIMEOUT}}}
sinks:
  - {{type: elasticsearch, name: es, url: '{url}', retry: {{initial_backoff_ms: 5, max_backoff_ms: 50}}}}
handover:
  lock_file: {lock:?}
",
        pods = dirs.pods_dir,
        state = dirs.state_dir,
        url = es.url(),
        lock = dirs.lock_file,
    );
    let path = dirs.root.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The confirmed offsets of `log` in every checkpoint file of the state dir.
fn checkpointed(state_dir: &Path, log: &Path) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut offsets = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("logs-checkpoint") && name.ends_with(".json")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(doc) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for e in doc["entries"].as_array().into_iter().flatten() {
            if e["path"].as_str() == log.to_str() {
                offsets.extend(e["offset"].as_u64());
            }
        }
    }
    offsets
}

async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks what the receiver holds against everything written: each message exactly once
/// (by content and by successful writes per `_id`), the trace whole, with its first line's
/// timestamp and offset.
fn assert_exactly_once(es: &EsReceiver, pod: &Pod) {
    let mut got = es.messages();
    got.sort();
    let mut want: Vec<String> = [
        "INFO order 17 placed",
        "GET /healthz 200",
        TRACE,
        "GET /healthz 200 again",
        "INFO order 19 placed",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.sort();
    assert_eq!(
        got, want,
        "every record exactly once, the trace joined whole"
    );
    let writes = es.writes();
    assert!(
        writes.values().all(|&n| n == 1),
        "a document was written twice: {writes:?}"
    );
    let docs = es.docs();
    let trace = docs
        .iter()
        .map(|(_, _, doc)| doc)
        .find(|doc| doc["message"] == TRACE)
        .expect("the trace");
    let (offset, ts) = pod.line_of("ERROR payment for order 18 failed");
    assert_eq!(
        trace["@timestamp"], ts,
        "the first line's timestamp: {trace}"
    );
    assert_eq!(
        trace["log"]["offset"], offset,
        "the first line's offset: {trace}"
    );
    assert_eq!(trace["stream"], "stderr", "{trace}");
}

/// Waits for the records before the open trace, and checks nothing from it (or after it)
/// was shipped and the checkpoint stops at its first line.
async fn head_shipped_and_trace_held(es: &EsReceiver, dirs: &AgentDirs, pod: &Pod) {
    wait_until("the line before the trace", EXIT, || {
        es.messages().iter().any(|m| m == "INFO order 17 placed")
    })
    .await;
    let (trace_offset, _) = pod.line_of("ERROR payment for order 18 failed");
    wait_until("the checkpoint to reach the trace", EXIT, || {
        checkpointed(&dirs.state_dir, &pod.log).contains(&trace_offset)
    })
    .await;
    // Give the agent the chance to (wrongly) ship or checkpoint more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        es.messages(),
        ["INFO order 17 placed"],
        "nothing at or after the open trace was shipped"
    );
    let offsets = checkpointed(&dirs.state_dir, &pod.log);
    assert!(
        !offsets.is_empty() && offsets.iter().all(|&o| o == trace_offset),
        "checkpoint {offsets:?} is not at the trace's first line ({trace_offset})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_handover_in_the_middle_of_a_stack_trace_ships_it_once_and_whole() {
    let dirs = AgentDirs::new().unwrap();
    let es = EsReceiver::start().await.unwrap();
    let config = config(&dirs, &es);
    let mut old = AgentProc::start("old", &config).await.unwrap();
    old.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    let mut new = AgentProc::start("new", &config).await.unwrap();
    new.wait_for_event(STANDBY, EXIT).await.unwrap();

    let mut pod = Pod::create(&dirs.pods_dir);
    pod.write(HEAD);
    head_shipped_and_trace_held(&es, &dirs, &pod).await;

    // maxSurge rollout: the old pod is terminated, the standby takes over.
    old.terminate().unwrap();
    let status = old.wait(EXIT).await.unwrap();
    assert!(status.success(), "{}", old.log_text());
    new.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    // The old leader's drain shipped nothing of the open trace either.
    assert_eq!(es.messages(), ["INFO order 17 placed"]);
    let (trace_offset, _) = pod.line_of("ERROR payment for order 18 failed");
    assert_eq!(
        checkpointed(&dirs.state_dir, &pod.log),
        [trace_offset],
        "the drained leader's last checkpoint"
    );

    pod.write(TAIL);
    wait_until("every record", Duration::from_secs(30), || {
        es.messages().len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    new.terminate().unwrap();
    assert!(
        new.wait(EXIT).await.unwrap().success(),
        "{}",
        new.log_text()
    );
    assert_exactly_once(&es, &pod);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_in_the_middle_of_a_stack_trace_ships_it_once_and_whole() {
    let dirs = AgentDirs::new().unwrap();
    let es = EsReceiver::start().await.unwrap();
    let config = config(&dirs, &es);
    let mut victim = AgentProc::start("victim", &config).await.unwrap();
    victim.wait_for_event(ACQUIRED, EXIT).await.unwrap();

    let mut pod = Pod::create(&dirs.pods_dir);
    pod.write(HEAD);
    head_shipped_and_trace_held(&es, &dirs, &pod).await;

    // A crash or OOM kill: no drain, no last checkpoint.
    victim.kill().unwrap();
    assert!(!victim.wait(EXIT).await.unwrap().success());
    pod.write(TAIL);
    // The pod is restarted.
    let mut restarted = AgentProc::start("restarted", &config).await.unwrap();
    restarted.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    wait_until("every record", Duration::from_secs(30), || {
        es.messages().len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    restarted.terminate().unwrap();
    assert!(
        restarted.wait(EXIT).await.unwrap().success(),
        "{}",
        restarted.log_text()
    );
    assert_exactly_once(&es, &pod);
}
