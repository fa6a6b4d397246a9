//! End-to-end tests of the real log pipeline (discovery → … → checkpoint), in-process, with
//! a temporary pods directory and state directory, and test sinks.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node_agent::core::record::{LogRecord, Stream};
use node_agent::logs::LogsConfig;
use node_agent::sinks::{DeliverFuture, Sink, SinkError};
use node_agent_tests::loggen::{
    ContainerLog, Expected, Format, LineMix, LoadWriter, LogTree, message_id,
};
use node_agent_tests::pipeline::{Running, wait_for};
use tokio_util::sync::CancellationToken;

const BATCH_RECORDS: usize = 50;
const IN_FLIGHT: usize = 2;
const CHUNK: usize = 4096;
/// A batch is sealed after the read chunk that filled it: it may exceed
/// `batch_max_records` by the lines of one chunk (generated lines are > 100 bytes).
const MAX_BATCH: usize = BATCH_RECORDS + CHUNK / 100;

fn config(root: &Path) -> LogsConfig {
    LogsConfig {
        pods_dir: root.join("pods"),
        state_dir: root.join("state"),
        rescan_interval: Duration::from_millis(200),
        checkpoint_interval: Duration::from_millis(100),
        batch_max_records: BATCH_RECORDS,
        batch_timeout: Duration::from_millis(20),
        max_in_flight_batches: IN_FLIGHT,
        drain_timeout: Duration::from_secs(5),
        read_chunk_bytes: CHUNK,
        ..LogsConfig::default()
    }
}

/// Records every delivered record; optionally fails while `failing` is set; tracks how
/// many deliveries run at once.
#[derive(Default)]
struct TestSink {
    records: Mutex<Vec<LogRecord>>,
    failing: AtomicBool,
    failures: AtomicUsize,
    /// Distinct record offsets offered while failing (to bound what was read meanwhile).
    offered_while_failing: Mutex<HashSet<(u64, u64)>>,
    concurrent: AtomicUsize,
    max_concurrent: AtomicUsize,
    /// Once set, deliveries record their records as "received" and never confirm (a
    /// receiver that got the data but whose ack is lost), until cancelled.
    hang: AtomicBool,
}

impl TestSink {
    fn ids(&self) -> Vec<String> {
        self.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| message_id(&r.message).expect("generated id").to_string())
            .collect()
    }
}

struct ConcurrencyGuard<'a>(&'a AtomicUsize);
impl Drop for ConcurrencyGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Sink for TestSink {
    fn name(&self) -> &str {
        "test"
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        Box::pin(async move {
            let now = self.concurrent.fetch_add(1, Ordering::SeqCst) + 1;
            let _guard = ConcurrencyGuard(&self.concurrent);
            self.max_concurrent.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            if self.failing.load(Ordering::SeqCst) {
                self.failures.fetch_add(1, Ordering::SeqCst);
                let mut offered = self.offered_while_failing.lock().unwrap();
                offered.extend(records.iter().map(|r| (r.source.file_id, r.offset)));
                return Err(SinkError::Failed("receiver down".into()));
            }
            self.records.lock().unwrap().extend_from_slice(records);
            if self.hang.load(Ordering::SeqCst) {
                cancel.cancelled().await;
                return Err(SinkError::Cancelled);
            }
            Ok(())
        })
    }
}

fn start(config: LogsConfig, sinks: Vec<Arc<dyn Sink>>) -> Running {
    Running::start(config, sinks)
}

/// Every expected id arrived exactly once with the exact message (P/F joined) and stream.
fn assert_exactly_once(records: &[LogRecord], expected: &HashMap<String, Expected>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in records {
        let id = message_id(&r.message).expect("generated id");
        *seen.entry(id).or_default() += 1;
        let want = expected
            .get(id)
            .unwrap_or_else(|| panic!("unexpected id {id}"));
        assert_eq!(r.message, want.message, "message of {id}");
        assert_eq!(r.stream == Stream::Stderr, want.stderr, "stream of {id}");
        assert!(!r.malformed && !r.truncated, "{id} flagged");
        assert_eq!(r.source.node, "node-1");
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    if let Some((id, _)) = dups.first() {
        for (i, r) in records
            .iter()
            .enumerate()
            .filter(|(_, r)| message_id(&r.message) == Some(id))
        {
            eprintln!(
                "dup {id}: index={i} file_id={} path={} offset={}",
                r.source.file_id,
                r.source.path.display(),
                r.offset
            );
        }
    }
    assert!(
        dups.is_empty(),
        "{} duplicated ids, e.g. {:?}",
        dups.len(),
        dups.first()
    );
    let mut missing: Vec<_> = expected
        .keys()
        .filter(|k| !seen.contains_key(k.as_str()))
        .collect();
    missing.sort_by_key(|id| {
        let (name, seq) = id.rsplit_once('-').unwrap_or((id, "0"));
        (name.to_string(), seq.parse::<u64>().unwrap_or(0))
    });
    assert!(
        missing.is_empty(),
        "{} ids lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(40)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_once_through_rotation_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut tree = LogTree::create(&cfg.pods_dir, "prod", 3, 2).unwrap();
    let sink = Arc::new(TestSink::default());
    let run = start(cfg, vec![sink.clone()]);
    let mix = LineMix::default();
    for round in 0..30 {
        for (i, log) in tree.logs.iter_mut().enumerate() {
            log.write_lines(40, &mix).unwrap();
            if round % 6 == 5 && i % 2 == round % 2 {
                // Every other rotation compresses, like kubelet's older rotations.
                log.rotate(i % 4 == 1).unwrap();
            }
        }
        tree.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected = tree.expected();
    assert_eq!(expected.len(), 30 * 40 * 6);
    wait_for("all records", Duration::from_secs(20), || {
        sink.records.lock().unwrap().len() >= expected.len()
    })
    .await;
    let summary = run.stop().await;
    assert_eq!(summary.batches_abandoned, 0);
    let records = sink.records.lock().unwrap().clone();
    assert_exactly_once(&records, &expected);
    // Records of one file: offsets name them uniquely (the ES `_id`).
    let ids: HashSet<(u64, u64)> = records
        .iter()
        .map(|r| (r.source.file_id, r.offset))
        .collect();
    assert_eq!(ids.len(), records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_outage_then_recovery_loses_nothing_and_bounds_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Cri).unwrap();
    let sink = Arc::new(TestSink::default());
    sink.failing.store(true, Ordering::SeqCst);
    let run = start(cfg, vec![sink.clone()]);
    let mix = LineMix::default();
    log.write_lines(3000, &mix).unwrap();
    log.flush().unwrap();
    wait_for("a few failures", Duration::from_secs(5), || {
        sink.failures.load(Ordering::SeqCst) >= 6
    })
    .await;
    // The outage went on long enough for the reader to have read everything if it were
    // unbounded; it must have stopped at the in-flight bound (+1 queued, +1 building).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let offered = sink.offered_while_failing.lock().unwrap().len();
    assert!(
        offered <= IN_FLIGHT * MAX_BATCH,
        "{offered} records offered during the outage"
    );
    sink.failing.store(false, Ordering::SeqCst);
    wait_for(
        "all records after recovery",
        Duration::from_secs(20),
        || sink.records.lock().unwrap().len() >= 3000,
    )
    .await;
    run.stop().await;
    assert_exactly_once(&sink.records.lock().unwrap(), log.expected());
    assert!(sink.max_concurrent.load(Ordering::SeqCst) <= IN_FLIGHT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_resumes_from_checkpoint_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut log =
        ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Docker).unwrap();
    let mix = LineMix::default();
    log.write_lines(500, &mix).unwrap();
    log.flush().unwrap();

    let first = Arc::new(TestSink::default());
    let run = start(cfg.clone(), vec![first.clone()]);
    wait_for("first run", Duration::from_secs(10), || {
        first.records.lock().unwrap().len() >= 500
    })
    .await;
    run.stop().await;

    // Written while no agent runs, including a rotation.
    log.write_lines(200, &mix).unwrap();
    log.rotate(false).unwrap();
    log.write_lines(300, &mix).unwrap();
    log.flush().unwrap();

    let second = Arc::new(TestSink::default());
    let run = start(cfg, vec![second.clone()]);
    wait_for("second run", Duration::from_secs(10), || {
        second.records.lock().unwrap().len() >= 500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let mut all = first.records.lock().unwrap().clone();
    assert_eq!(all.len(), 500);
    all.extend(second.records.lock().unwrap().iter().cloned());
    assert_exactly_once(&all, log.expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_like_stop_duplicates_only_unacknowledged_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.drain_timeout = Duration::from_millis(50);
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Cri).unwrap();
    let mix = LineMix::default();
    log.write_lines(300, &mix).unwrap();
    log.flush().unwrap();

    let first = Arc::new(TestSink::default());
    let run = start(cfg.clone(), vec![first.clone()]);
    wait_for("first batch", Duration::from_secs(10), || {
        first.records.lock().unwrap().len() >= 300
    })
    .await;
    // From now on the receiver gets data but never confirms; then the agent is stopped
    // without a chance to drain.
    first.hang.store(true, Ordering::SeqCst);
    log.write_lines(300, &mix).unwrap();
    log.flush().unwrap();
    wait_for("unconfirmed deliveries", Duration::from_secs(10), || {
        first.concurrent.load(Ordering::SeqCst) >= 1
    })
    .await;
    let summary = run.stop().await;
    assert!(summary.batches_abandoned >= 1);
    let unconfirmed: HashSet<String> = first.ids().into_iter().skip(300).collect();

    let second = Arc::new(TestSink::default());
    let run = start(cfg, vec![second.clone()]);
    wait_for("rest after restart", Duration::from_secs(10), || {
        second.records.lock().unwrap().len() >= 300
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;

    let second_ids = second.ids();
    let first_ids: HashSet<String> = first.ids().into_iter().collect();
    let dups: Vec<&String> = second_ids
        .iter()
        .filter(|id| first_ids.contains(*id))
        .collect();
    // Only what the receiver had without confirming is sent again: at most the in-flight bound.
    assert!(
        dups.iter().all(|id| unconfirmed.contains(*id)),
        "re-sent a confirmed record"
    );
    assert!(
        dups.len() <= IN_FLIGHT * MAX_BATCH,
        "{} duplicates",
        dups.len()
    );
    let union: HashSet<String> = first_ids.into_iter().chain(second_ids).collect();
    assert_eq!(union.len(), 600, "lost records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pod_is_picked_up_within_one_second() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Rescans are rare here: the file watch must do the job.
    cfg.rescan_interval = Duration::from_secs(30);
    std::fs::create_dir_all(&cfg.pods_dir).unwrap();
    let sink = Arc::new(TestSink::default());
    let run = start(cfg.clone(), vec![sink.clone()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created = Instant::now();
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "new", "app", Format::Cri).unwrap();
    log.write_lines(1, &LineMix::default()).unwrap();
    log.flush().unwrap();
    wait_for("new pod's line", Duration::from_secs(5), || {
        !sink.records.lock().unwrap().is_empty()
    })
    .await;
    let latency = created.elapsed();
    run.stop().await;
    assert!(
        latency < Duration::from_secs(1),
        "picked up after {latency:?}"
    );
    let r = &sink.records.lock().unwrap()[0];
    assert_eq!(
        (r.source.namespace.as_str(), r.source.pod.as_str()),
        ("prod", "new")
    );
    assert_eq!(r.source.container, "app");
    assert_eq!(r.source.path, log.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pods_file_is_read_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "job", "app", Format::Cri).unwrap();
    let mix = LineMix::default();
    log.write_lines(1, &mix).unwrap();
    log.flush().unwrap();
    let sink = Arc::new(TestSink::default());
    let run = start(cfg, vec![sink.clone()]);
    wait_for("file opened", Duration::from_secs(5), || {
        !sink.records.lock().unwrap().is_empty()
    })
    .await;
    log.write_lines(5000, &mix).unwrap();
    log.flush().unwrap();
    std::fs::remove_dir_all(log.pod_dir()).unwrap();
    wait_for(
        "every line of the deleted file",
        Duration::from_secs(20),
        || sink.records.lock().unwrap().len() >= 5001,
    )
    .await;
    run.stop().await;
    assert_exactly_once(&sink.records.lock().unwrap(), log.expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_and_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.parse_json = true;
    let mut log =
        ContainerLog::create(&cfg.pods_dir, "prod", "legacy", "app", Format::Cri).unwrap();
    let mix = LineMix::default();
    log.write_lines(100, &mix).unwrap();
    log.flush().unwrap();
    let sink = Arc::new(TestSink::default());
    let run = start(cfg, vec![sink.clone()]);
    wait_for("first lines", Duration::from_secs(5), || {
        sink.records.lock().unwrap().len() >= 100
    })
    .await;
    log.copytruncate().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    log.write_lines(50, &mix).unwrap();
    log.flush().unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap();
        f.write_all(b"this is not a CRI line \xff\n").unwrap();
    }
    wait_for("lines after truncate", Duration::from_secs(5), || {
        sink.records.lock().unwrap().len() >= 151
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    let mut records = sink.records.lock().unwrap().clone();
    let malformed: Vec<_> = records.iter().filter(|r| r.malformed).cloned().collect();
    assert_eq!(malformed.len(), 1);
    assert_eq!(malformed[0].message, "this is not a CRI line \u{fffd}");
    records.retain(|r| !r.malformed);
    assert_exactly_once(&records, log.expected());
    let json = records
        .iter()
        .find(|r| r.message.starts_with('{'))
        .expect("a JSON line");
    assert_eq!(json.fields.as_ref().unwrap()["level"], "info");
}

/// Writes a checkpoint claiming `offset` in `path`'s inode, guarded by `fingerprint`.
fn forge_checkpoint(
    state_dir: &Path,
    path: &Path,
    offset: u64,
    fingerprint: node_agent::logs::sources::tail::file_id::Fingerprint,
) {
    use node_agent::logs::checkpoint::CheckpointStore;
    use node_agent::logs::sources::pods::CHECKPOINT_FILE;
    use node_agent::logs::sources::tail::file_id::FileEntry as Entry;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    let entry = Entry {
        dev: meta.dev(),
        inode: meta.ino(),
        fingerprint,
        offset,
        path: path.to_path_buf(),
        head: None,
    };
    std::fs::create_dir_all(state_dir).unwrap();
    CheckpointStore::new(state_dir, CHECKPOINT_FILE)
        .save([&entry])
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_fingerprint_guards_against_inode_reuse() {
    use node_agent::logs::sources::tail::file_id::{Fingerprint, fingerprint_before};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Cri).unwrap();
    log.write_lines(300, &LineMix::default()).unwrap();
    log.flush().unwrap();
    let text = std::fs::read(log.path()).unwrap();
    // A line boundary roughly in the middle.
    let offset = text[..text.len() / 2]
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap() as u64
        + 1;

    // Same inode, but the bytes before the saved offset differ: another file → from 0.
    forge_checkpoint(
        &cfg.state_dir,
        log.path(),
        offset,
        Fingerprint { len: 256, hash: 42 },
    );
    let sink = Arc::new(TestSink::default());
    let run = start(cfg.clone(), vec![sink.clone()]);
    wait_for("all lines", Duration::from_secs(10), || {
        sink.records.lock().unwrap().len() >= 300
    })
    .await;
    run.stop().await;
    assert_exactly_once(&sink.records.lock().unwrap(), log.expected());

    // Matching fingerprint: resume exactly at the offset.
    let fp = fingerprint_before(&std::fs::File::open(log.path()).unwrap(), offset).unwrap();
    forge_checkpoint(&cfg.state_dir, log.path(), offset, fp);
    let sink = Arc::new(TestSink::default());
    let run = start(cfg, vec![sink.clone()]);
    wait_for("lines after the offset", Duration::from_secs(10), || {
        !sink.records.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    let records = sink.records.lock().unwrap();
    // Batches may complete out of order (several in flight): look at the smallest.
    assert_eq!(records.iter().map(|r| r.offset).min(), Some(offset));
    let after = text[offset as usize..]
        .iter()
        .filter(|b| **b == b'\n')
        .count();
    assert!(
        records.len() <= after && records.len() > 100,
        "{} records",
        records.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_checkpoint_is_moved_aside_and_everything_is_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    std::fs::create_dir_all(&cfg.state_dir).unwrap();
    std::fs::write(
        cfg.state_dir.join("logs-checkpoint.json"),
        b"{\"version\":1,",
    )
    .unwrap();
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Cri).unwrap();
    log.write_lines(100, &LineMix::default()).unwrap();
    log.flush().unwrap();
    let sink = Arc::new(TestSink::default());
    let run = start(cfg.clone(), vec![sink.clone()]);
    wait_for("all lines", Duration::from_secs(10), || {
        sink.records.lock().unwrap().len() >= 100
    })
    .await;
    run.stop().await;
    assert_exactly_once(&sink.records.lock().unwrap(), log.expected());
    let names: Vec<String> = std::fs::read_dir(&cfg.state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("logs-checkpoint.json.corrupt-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "logs-checkpoint.json"),
        "{names:?}"
    );

    // The pipeline's own metrics are exported.
    let families: Vec<String> = node_agent::core::telemetry::registry()
        .gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    for name in [
        "node_agent_logs_lines_read_total",
        "node_agent_logs_records_shipped_total",
        "node_agent_logs_batch_delivery_seconds",
        "node_agent_logs_checkpoint_writes_total",
        "node_agent_logs_open_files",
    ] {
        assert!(families.iter().any(|f| f == name), "missing {name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_dir_created_after_start_is_watched() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.rescan_interval = Duration::from_millis(100);
    let sink = Arc::new(TestSink::default());
    let run = start(cfg.clone(), vec![sink.clone()]);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "late", "app", Format::Cri).unwrap();
    log.write_lines(10, &LineMix::default()).unwrap();
    log.flush().unwrap();
    wait_for("lines", Duration::from_secs(5), || {
        sink.records.lock().unwrap().len() >= 10
    })
    .await;
    // Once the directory exists the watch takes over: a second pod shows up quickly.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut second =
        ContainerLog::create(&cfg.pods_dir, "prod", "later", "app", Format::Cri).unwrap();
    second.write_lines(10, &LineMix::default()).unwrap();
    second.flush().unwrap();
    wait_for("second pod", Duration::from_secs(5), || {
        sink.records.lock().unwrap().len() >= 20
    })
    .await;
    run.stop().await;
    let mut expected = log.expected().clone();
    expected.extend(second.expected().clone());
    assert_exactly_once(&sink.records.lock().unwrap(), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_load_with_rotation_ship_every_line_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let logs = (0..3)
        .map(|i| {
            let format = if i == 2 { Format::Docker } else { Format::Cri };
            ContainerLog::create(&cfg.pods_dir, "prod", &format!("web{i}"), "app", format).unwrap()
        })
        .collect();
    // ~1000 lines/s per log, rotated every 300 lines (kubelet-style: older rotations get
    // compressed): rotations happen while pipelines run and while none does (at most one
    // per gap; see the logs module docs for two rotations during one outage).
    let writer = LoadWriter::spawn(logs, 3000, Some(300), LineMix::default());
    let sink = Arc::new(TestSink::default());
    for _ in 0..3 {
        let run = start(cfg.clone(), vec![sink.clone()]);
        tokio::time::sleep(Duration::from_millis(400)).await;
        run.stop().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let run = start(cfg.clone(), vec![sink.clone()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = writer.stop().unwrap();
    let expected: HashMap<String, Expected> =
        logs.iter().flat_map(|l| l.expected().clone()).collect();
    // Generous: the loop ends as soon as everything arrived; a loaded CI machine (two
    // cores, parallel test binaries) needed more than 5 s to catch up the backlog.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.records.lock().unwrap().len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    assert_exactly_once(&sink.records.lock().unwrap(), &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_messages_are_cut_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_line_bytes = 100;
    let mut log =
        ContainerLog::create(&cfg.pods_dir, "prod", "chatty", "app", Format::Cri).unwrap();
    // Every line is long: split by the runtime into P parts of 64 bytes (joined length
    // > 100), and one single raw line far beyond the cap.
    let mix = LineMix {
        long_per_mille: 1000,
        ..LineMix::default()
    };
    let ids = log.write_lines(20, &mix).unwrap();
    let huge = LineMix {
        long_per_mille: 0,
        payload_bytes: 10_000,
        split_bytes: usize::MAX,
        json_per_mille: 0,
        ..LineMix::default()
    };
    let huge_id = log.write_line(&huge).unwrap();
    log.write_lines(
        5,
        &LineMix {
            long_per_mille: 0,
            payload_bytes: 20,
            ..LineMix::default()
        },
    )
    .unwrap();
    log.flush().unwrap();
    let sink = Arc::new(TestSink::default());
    let run = start(cfg, vec![sink.clone()]);
    wait_for("all records", Duration::from_secs(10), || {
        sink.records.lock().unwrap().len() >= 26
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.stop().await;
    let records = sink.records.lock().unwrap();
    assert_eq!(records.len(), 26);
    for r in records.iter() {
        let id = message_id(&r.message).map(str::to_string);
        let want = &log.expected()[id.as_deref().unwrap_or("?")].message;
        if want.len() > 100 {
            assert!(r.truncated, "{id:?} not flagged");
            assert_eq!(r.message, want[..100], "{id:?} cut at the cap");
        } else {
            assert!(!r.truncated);
            assert_eq!(&r.message, want);
        }
        assert!(!r.malformed);
    }
    assert!(ids.iter().chain([&huge_id]).all(|id| {
        records
            .iter()
            .any(|r| message_id(&r.message) == Some(id.as_str()))
    }));
}

/// A container can plant `1.log -> /host/etc/shadow` in its own log directory (a hostPath):
/// the pipeline must not follow it, nor read FIFOs or devices, and must count them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_special_files_in_log_dirs_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Cri).unwrap();
    let expected = log.write_lines(20, &LineMix::default()).unwrap();
    log.flush().unwrap();
    let container_dir = log.path().parent().unwrap().to_path_buf();
    let secret = dir.path().join("shadow");
    std::fs::write(
        &secret,
        "2024-01-01T00:00:00.000000000Z stdout F root:$6$SECRET:19000:0:99999:7:::\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, container_dir.join("1.log")).unwrap();
    // A symlinked container directory of another "pod" pointing at the same place.
    let evil_pod = cfg
        .pods_dir
        .join("prod_evil_00000000-0000-4000-8000-00000000e511");
    std::fs::create_dir_all(&evil_pod).unwrap();
    std::os::unix::fs::symlink(dir.path(), evil_pod.join("app")).unwrap();
    nix::unistd::mkfifo(&container_dir.join("2.log"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let skipped = || {
        node_agent::core::telemetry::registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "node_agent_logs_files_skipped_total")
            .flat_map(|f| f.get_metric().to_vec())
            .map(|m| m.get_counter().get_value())
            .sum::<f64>()
    };
    let before = skipped();

    let sink = Arc::new(TestSink::default());
    let running = start(cfg, vec![sink.clone() as Arc<dyn Sink>]);
    wait_for("the real log", Duration::from_secs(10), || {
        sink.records.lock().unwrap().len() >= expected.len()
    })
    .await;
    // Give further scans the chance to (wrongly) pick the links up.
    tokio::time::sleep(Duration::from_millis(700)).await;
    running.stop().await;
    let records = sink.records.lock().unwrap();
    assert_eq!(records.len(), expected.len());
    assert!(
        records.iter().all(|r| !r.message.contains("SECRET")),
        "a symlinked file was shipped"
    );
    assert!(skipped() - before >= 2.0, "symlink and FIFO are counted");
}

fn counter_value(name: &str, label: &str) -> f64 {
    node_agent::core::telemetry::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().to_vec())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label))
        .map(|m| m.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_a_rotated_file_after_the_rotate_wait_are_counted_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    // A write to a file nobody tracks is seen by a rescan, not by the watch.
    let cfg = LogsConfig {
        watched_rescan_interval: Duration::from_millis(200),
        ..config(dir.path())
    };
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "late", "app", Format::Cri).unwrap();
    let mix = LineMix::default();
    log.write_lines(10, &mix).unwrap();
    log.flush().unwrap();
    let lost = || {
        counter_value(
            "node_agent_logs_lost_bytes_total",
            "written_after_rotate_wait",
        )
    };
    let before = lost();
    let sink = Arc::new(TestSink::default());
    let run = start(cfg, vec![sink.clone()]);
    wait_for("the first lines", Duration::from_secs(10), || {
        sink.records.lock().unwrap().len() >= 10
    })
    .await;
    let rotated = log.rotate(false).unwrap();
    // Past the rotate wait and a few rescans: the agent has let the rotated file go.
    tokio::time::sleep(node_agent::logs::sources::tail::ROTATE_WAIT + Duration::from_millis(1500))
        .await;
    let late = b"2024-01-01T00:00:00.000000000Z stdout F written too late\n";
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&rotated)
        .unwrap();
    std::io::Write::write_all(&mut f, late).unwrap();
    drop(f);
    wait_for("the late bytes counted", Duration::from_secs(5), || {
        lost() - before >= late.len() as f64
    })
    .await;
    run.stop().await;
    assert_eq!(lost() - before, late.len() as f64, "counted once");
    assert!(
        sink.records
            .lock()
            .unwrap()
            .iter()
            .all(|r| !r.message.contains("too late"))
    );
}

/// `logs.max_pending_bytes`: many files each hold a long message whose final part has not
/// come. What they hold together stays within the budget (the oldest are shipped as they
/// are, flagged truncated, and counted), and once the final parts come every byte of every
/// file has arrived, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_partials_of_many_files_stay_within_the_pending_budget() {
    const FILES: usize = 40;
    const PARTS: usize = 50;
    const PART: usize = 4000;
    const BUDGET: usize = 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogsConfig {
        max_pending_bytes: BUDGET,
        ..config(dir.path())
    };
    let max_line = cfg.max_line_bytes;
    // 40 × 50 × 4000 bytes = 8 MB of parts without their final one: 8× the budget.
    let mut logs = Vec::new();
    let mut expected = HashMap::new();
    for i in 0..FILES {
        let log = ContainerLog::create(&cfg.pods_dir, "prod", &format!("p{i}"), "app", Format::Cri)
            .unwrap();
        let mut text = String::new();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(log.path())
            .unwrap();
        for j in 0..PARTS {
            let part = format!("{:x<PART$}", format!("f{i}p{j}-"));
            std::io::Write::write_all(
                &mut file,
                format!("2024-01-01T00:00:00.000000000Z stdout P {part}\n").as_bytes(),
            )
            .unwrap();
            text.push_str(&part);
        }
        expected.insert(log.path().to_path_buf(), text);
        logs.push((log, file));
    }
    let forced = || counter_value("node_agent_logs_force_flushed_total", "partial_line");
    let before = forced();
    let sink = Arc::new(TestSink::default());
    let run = start(cfg, vec![sink.clone()]);
    let shipped = |sink: &TestSink| -> usize {
        sink.records
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.message.len())
            .sum()
    };
    // Everything past the budget is shipped before any final part exists.
    let total = FILES * PARTS * PART;
    wait_for(
        "all but the budget shipped",
        Duration::from_secs(30),
        || shipped(&sink) >= total - BUDGET,
    )
    .await;
    for (_, file) in &mut logs {
        std::io::Write::write_all(file, b"2024-01-01T00:00:00.000000000Z stdout F .end\n").unwrap();
    }
    wait_for("every byte", Duration::from_secs(30), || {
        shipped(&sink) >= total + FILES * ".end".len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let summary = run.stop().await;

    eprintln!(
        "pending peak {} bytes (budget {BUDGET}), {} records",
        summary.pending_peak_bytes,
        sink.records.lock().unwrap().len()
    );
    // Within the budget, give or take one read chunk or one buffer's growth.
    assert!(
        summary.pending_peak_bytes <= BUDGET + max_line + CHUNK,
        "peak {} > budget {BUDGET}",
        summary.pending_peak_bytes
    );
    let mut records = sink.records.lock().unwrap().clone();
    records.sort_by_key(|r| (r.source.path.clone(), r.offset));
    let mut got: HashMap<std::path::PathBuf, String> = HashMap::new();
    let mut flagged = 0;
    for r in &records {
        got.entry(r.source.path.clone())
            .or_default()
            .push_str(&r.message);
        flagged += usize::from(r.truncated);
    }
    for (path, text) in &expected {
        let want = format!("{text}.end");
        let have = got.get(path).map(String::as_str).unwrap_or("");
        assert!(
            have == want,
            "{}: {} bytes shipped, {} written",
            path.display(),
            have.len(),
            want.len()
        );
    }
    // Each file's message went out in several pieces, all but the last flagged.
    assert!(flagged >= FILES, "only {flagged} records flagged truncated");
    assert_eq!(flagged + FILES, records.len());
    assert_eq!(forced() - before, flagged as f64);
}

/// A checkpoint points into three rotated files when the agent starts: one was compressed
/// into a corrupt `.gz`, another's name now holds a FIFO; neither can be read, and each is
/// counted under its reason (the rest of those files is lost). The third was compressed
/// intact: it is finished from the checkpoint's offset. Every current file ships too,
/// whole and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rotated_files_are_counted_by_reason_and_the_rest_ships() {
    use node_agent::logs::checkpoint::CheckpointStore;
    use node_agent::logs::sources::pods::CHECKPOINT_FILE;
    use node_agent::logs::sources::tail::file_id::{FileEntry, fingerprint_before, head_hash};
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut entries = Vec::new();
    let mut current = HashMap::new();
    let mut rotated_paths = Vec::new();
    for pod in ["corrupt", "fifo", "gzipped"] {
        let mut log = ContainerLog::create(&cfg.pods_dir, "prod", pod, "app", Format::Cri).unwrap();
        // Shipped before the checkpoint: not expected again.
        log.set_track_expected(false);
        log.write_lines(10, &LineMix::default()).unwrap();
        log.flush().unwrap();
        let offset = std::fs::metadata(log.path()).unwrap().len();
        // After it: lost with the unreadable files, expected from the intact one.
        log.set_track_expected(pod == "gzipped");
        log.write_lines(10, &LineMix::default()).unwrap();
        let rotated = log.rotate(false).unwrap();
        log.set_track_expected(true);
        let meta = std::fs::metadata(&rotated).unwrap();
        entries.push(FileEntry {
            dev: meta.dev(),
            inode: meta.ino(),
            fingerprint: fingerprint_before(&std::fs::File::open(&rotated).unwrap(), offset)
                .unwrap(),
            offset,
            path: rotated.clone(),
            // What identifies a compressed copy as this file.
            head: Some(head_hash(&std::fs::File::open(&rotated).unwrap()).unwrap()),
        });
        rotated_paths.push(rotated);
        current.insert(pod, log);
    }
    std::fs::create_dir_all(&cfg.state_dir).unwrap();
    CheckpointStore::new(&cfg.state_dir, CHECKPOINT_FILE)
        .save(entries.iter())
        .unwrap();
    // kubelet compressed the first while no agent ran, and the result is damaged. (The
    // plain file goes first: the .gz may get its inode, which must not hide it.)
    std::fs::remove_file(&rotated_paths[0]).unwrap();
    let mut gz = rotated_paths[0].clone().into_os_string();
    gz.push(".gz");
    std::fs::write(&gz, b"\x1f\x8b\x08\x00 damaged beyond repair").unwrap();
    // The second's name now holds a FIFO (opening it would block a naive reader).
    std::fs::remove_file(&rotated_paths[1]).unwrap();
    nix::unistd::mkfifo(&rotated_paths[1], nix::sys::stat::Mode::S_IRWXU).unwrap();
    // The third was compressed as kubelet does (the .gz written, then the plain removed).
    let mut gz = rotated_paths[2].clone().into_os_string();
    gz.push(".gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    std::io::Write::write_all(&mut enc, &std::fs::read(&rotated_paths[2]).unwrap()).unwrap();
    enc.finish().unwrap();
    std::fs::remove_file(&rotated_paths[2]).unwrap();

    let mut expected = HashMap::new();
    for log in current.values_mut() {
        log.write_lines(10, &LineMix::default()).unwrap();
        log.flush().unwrap();
        expected.extend(log.expected().clone());
    }
    let skipped = |reason| counter_value("node_agent_logs_files_skipped_total", reason);
    let before = (skipped("rotated_corrupt"), skipped("rotated_not_regular"));
    let sink = Arc::new(TestSink::default());
    let run = start(cfg, vec![sink.clone()]);
    wait_for("both counted", Duration::from_secs(10), || {
        skipped("rotated_corrupt") > before.0 && skipped("rotated_not_regular") > before.1
    })
    .await;
    wait_for(
        "the current files and the intact rotation",
        Duration::from_secs(10),
        || sink.records.lock().unwrap().len() >= expected.len(),
    )
    .await;
    // Further scans must not count them again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    run.stop().await;
    assert_eq!(skipped("rotated_corrupt") - before.0, 1.0);
    assert_eq!(skipped("rotated_not_regular") - before.1, 1.0);
    assert_exactly_once(&sink.records.lock().unwrap(), &expected);
}
