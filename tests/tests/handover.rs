//! Leader handover between real `node-agent` processes sharing a lock file and a state
//! directory, as the old and new pod of a `maxSurge: 1` rollout do on one node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use node_agent::handover::{HolderInfo, LeaderLock};
use node_agent_tests::agent_proc::{AgentDirs, AgentProc, LogEvent};
use tokio_util::sync::CancellationToken;

const ACQUIRED: &str = "acquired leader lock: now leader";
const RELEASED: &str = "released leader lock";
const STANDBY: &str = "leader lock is held: waiting as standby";
const EXIT: Duration = Duration::from_secs(15);

fn holder(lock_file: &Path) -> HolderInfo {
    let text = std::fs::read_to_string(lock_file).unwrap();
    serde_json::from_str(text.trim()).unwrap()
}

/// Time between the old leader's release and the new one's acquisition, from their logs.
fn leaderless_gap(old: &AgentProc, new: &AgentProc) -> chrono::TimeDelta {
    let find = |agent: &AgentProc, message: &str| -> LogEvent {
        agent
            .events()
            .into_iter()
            .find(|e| e.message == message)
            .unwrap_or_else(|| panic!("{} never logged {message:?}", agent.name))
    };
    find(new, ACQUIRED).timestamp - find(old, RELEASED).timestamp
}

async fn leader_gauge(agent: &AgentProc) -> f64 {
    agent
        .metric("node_agent_leader")
        .await
        .unwrap()
        .expect("node_agent_leader exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_is_ready_and_takes_over_when_the_leader_terminates() {
    let dirs = AgentDirs::new().unwrap();
    let config = dirs.write_config(&[]).unwrap();
    let mut old = AgentProc::start("old", &config).await.unwrap();
    old.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    assert_eq!(leader_gauge(&old).await, 1.0);
    assert_eq!(holder(&dirs.lock_file).pod, "old");

    let mut new = AgentProc::start("new", &config).await.unwrap();
    let standby = new.wait_for_event(STANDBY, EXIT).await.unwrap();
    assert_eq!(
        standby.fields["holder_pod"], "old",
        "standby names the holder"
    );
    // Ready while standby (start() waited for /readyz 200), metrics served by both.
    assert_eq!(leader_gauge(&new).await, 0.0);
    assert_eq!(
        new.metric("node_agent_handover_total").await.unwrap(),
        Some(0.0)
    );

    old.terminate().unwrap();
    assert!(
        old.wait(EXIT).await.unwrap().success(),
        "{}",
        old.log_text()
    );
    new.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    let gap = leaderless_gap(&old, &new);
    println!(
        "leaderless gap after SIGTERM: {} µs",
        gap.num_microseconds().unwrap()
    );
    assert!(gap < chrono::TimeDelta::milliseconds(100), "gap {gap}");
    assert_eq!(leader_gauge(&new).await, 1.0);
    assert_eq!(
        new.metric("node_agent_handover_total").await.unwrap(),
        Some(1.0)
    );
    let waited = new
        .metric("node_agent_handover_wait_seconds")
        .await
        .unwrap()
        .unwrap();
    assert!(waited > 0.0, "waited {waited}");
    let info = holder(&dirs.lock_file);
    assert_eq!(
        (info.pod.as_str(), info.namespace.as_str()),
        ("new", "node-agent-test")
    );
    assert_eq!(info.pid as i32, new.pid().as_raw());

    new.terminate().unwrap();
    assert!(new.wait(EXIT).await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_that_is_terminated_just_exits() {
    let dirs = AgentDirs::new().unwrap();
    let config = dirs.write_config(&[]).unwrap();
    let mut leader = AgentProc::start("leader", &config).await.unwrap();
    leader.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    let mut standby = AgentProc::start("standby", &config).await.unwrap();
    standby.wait_for_event(STANDBY, EXIT).await.unwrap();

    standby.terminate().unwrap();
    let status = standby.wait(Duration::from_secs(5)).await.unwrap();
    assert!(status.success(), "{}", standby.log_text());
    assert!(standby.events().iter().all(|e| e.message != ACQUIRED));
    // The leader is untouched.
    assert_eq!(leader_gauge(&leader).await, 1.0);
    assert_eq!(holder(&dirs.lock_file).pod, "leader");
    leader.terminate().unwrap();
    assert!(leader.wait(EXIT).await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_leader_frees_the_lock() {
    let dirs = AgentDirs::new().unwrap();
    let config = dirs.write_config(&[]).unwrap();
    let mut leader = AgentProc::start("doomed", &config).await.unwrap();
    leader.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    assert!(LeaderLock::try_acquire(&dirs.lock_file).unwrap().is_none());

    let cancel = CancellationToken::new();
    let lock_file = dirs.lock_file.clone();
    let waiter = tokio::spawn(async move {
        let lock = LeaderLock::acquire(&lock_file, &cancel).await;
        (lock, std::time::Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let killed = std::time::Instant::now();
    leader.kill().unwrap();
    let (lock, acquired) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("lock freed by the kernel")
        .unwrap();
    assert!(lock.unwrap().is_some());
    println!(
        "lock acquired {:?} after SIGKILL of the holder",
        acquired - killed
    );
    assert!(!leader.wait(EXIT).await.unwrap().success());
}

// --- under log load: nothing lost, nothing duplicated -----------------------------------

/// Appends CRI lines `... stdout F handover seq=NNNNNNNN ...` to one container log until
/// stopped; returns how many it wrote.
struct LogWriter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u32>,
}

impl LogWriter {
    fn start(pods_dir: &Path, lines_per_ms: u32) -> Self {
        use std::io::Write as _;
        let dir = pods_dir.join("node-agent-test_app-0_0000-1111/app");
        std::fs::create_dir_all(&dir).unwrap();
        let path: PathBuf = dir.join("0.log");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let mut seq = 0u32;
            while !flag.load(Ordering::SeqCst) {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                let mut chunk = String::new();
                for _ in 0..lines_per_ms {
                    chunk.push_str(&format!("{now} stdout F handover seq={seq:08} payload\n"));
                    seq += 1;
                }
                file.write_all(chunk.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            seq
        });
        Self { stop, thread }
    }

    fn stop(self) -> u32 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// How often each sequence number reached the file sink.
fn delivered(sink: &Path, written: u32) -> Vec<u32> {
    let mut counts = vec![0u32; written as usize];
    let Ok(text) = std::fs::read_to_string(sink) else {
        return counts;
    };
    for line in text.lines() {
        let Some(at) = line.find("seq=") else {
            continue;
        };
        let Some(seq) = line
            .get(at + 4..at + 12)
            .and_then(|d| d.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(count) = counts.get_mut(seq) {
            *count += 1;
        }
    }
    counts
}

struct Tally {
    lost: usize,
    duplicated: usize,
}

fn tally(counts: &[u32]) -> Tally {
    Tally {
        lost: counts.iter().filter(|&&c| c == 0).count(),
        duplicated: counts.iter().map(|&c| c.saturating_sub(1) as usize).sum(),
    }
}

/// Waits until every written line reached the sink (or the timeout passes).
async fn settle(sink: &Path, written: u32, timeout: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let counts = delivered(sink, written);
        if tally(&counts).lost == 0 || tokio::time::Instant::now() >= deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Settings that keep each batch small and quick, so drains are short.
const LOAD_LOGS: &[&str] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the log pipeline and the file sink (branches logs, sinks)"]
async fn twenty_rolling_sigterm_handovers_lose_and_duplicate_nothing() {
    const HANDOVERS: usize = 20;
    let dirs = AgentDirs::new().unwrap();
    let config = dirs.write_config(LOAD_LOGS).unwrap();
    let writer = LogWriter::start(&dirs.pods_dir, 1);
    let mut old = AgentProc::start("agent-0", &config).await.unwrap();
    old.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    let mut gaps = Vec::new();
    for i in 1..=HANDOVERS {
        // maxSurge: the new pod starts (and is Ready) before the old one is terminated.
        let new = AgentProc::start(&format!("agent-{i}"), &config)
            .await
            .unwrap();
        new.wait_for_event(STANDBY, EXIT).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await; // let the leader ship a little
        old.terminate().unwrap();
        let status = old.wait(EXIT).await.unwrap();
        assert!(status.success(), "{} failed:\n{}", old.name, old.log_text());
        new.wait_for_event(ACQUIRED, EXIT).await.unwrap();
        let gap = leaderless_gap(&old, &new);
        println!(
            "handover {i:2}: leaderless gap {:>6} µs",
            gap.num_microseconds().unwrap_or(-1)
        );
        gaps.push(gap);
        old = new;
    }
    let written = writer.stop();
    let counts = settle(&dirs.sink_path, written, Duration::from_secs(20)).await;
    old.terminate().unwrap();
    assert!(
        old.wait(EXIT).await.unwrap().success(),
        "{}",
        old.log_text()
    );
    let counts_after = delivered(&dirs.sink_path, written);
    let Tally { lost, duplicated } = tally(&counts_after);
    let max_gap = gaps.iter().max().unwrap();
    println!(
        "{HANDOVERS} SIGTERM handovers, {written} lines: {lost} lost, {duplicated} duplicated; max leaderless gap {} µs",
        max_gap.num_microseconds().unwrap_or(-1)
    );
    assert_eq!(
        tally(&counts).lost,
        0,
        "lines missing before the last drain"
    );
    assert_eq!(lost, 0, "lost lines");
    assert_eq!(duplicated, 0, "duplicated lines");
    assert!(
        *max_gap < chrono::TimeDelta::milliseconds(100),
        "max gap {max_gap}"
    );
}

/// Upper bound on records re-sent after a crash: the batches in flight (not yet
/// acknowledged) when the leader died.
const MAX_UNACKED_RECORDS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the log pipeline and the file sink (branches logs, sinks)"]
async fn killed_leader_under_load_loses_nothing() {
    let dirs = AgentDirs::new().unwrap();
    let config = dirs.write_config(LOAD_LOGS).unwrap();
    let writer = LogWriter::start(&dirs.pods_dir, 1);
    let mut old = AgentProc::start("victim", &config).await.unwrap();
    old.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    let new = AgentProc::start("survivor", &config).await.unwrap();
    new.wait_for_event(STANDBY, EXIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = chrono::Utc::now();
    old.kill().unwrap();
    assert!(!old.wait(EXIT).await.unwrap().success());
    let acquired = new.wait_for_event(ACQUIRED, EXIT).await.unwrap();
    println!(
        "leaderless gap after SIGKILL: {} µs",
        (acquired.timestamp - killed)
            .num_microseconds()
            .unwrap_or(-1)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = writer.stop();
    let counts = settle(&dirs.sink_path, written, Duration::from_secs(20)).await;
    let Tally { lost, duplicated } = tally(&counts);
    println!(
        "SIGKILL handover, {written} lines: {lost} lost, {duplicated} duplicated (re-sent unacknowledged batch)"
    );
    let mut new = new;
    new.terminate().unwrap();
    assert!(
        new.wait(EXIT).await.unwrap().success(),
        "{}",
        new.log_text()
    );
    assert_eq!(lost, 0, "lost lines");
    assert!(duplicated <= MAX_UNACKED_RECORDS, "{duplicated} duplicates");
}
