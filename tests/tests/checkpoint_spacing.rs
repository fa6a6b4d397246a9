//! `logs.checkpoint_min_interval`: checkpoint writes (two fsyncs each) are spaced, not one
//! per acknowledgement, and a clean shutdown still saves everything (nothing re-shipped).
//! Its own test binary: it counts the process-wide `checkpoint_writes` counter.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node_agent::core::record::LogRecord;
use node_agent::logs::LogsConfig;
use node_agent::sinks::{DeliverFuture, Sink};
use node_agent_tests::loggen::{ContainerLog, Format, LineMix};
use node_agent_tests::pipeline::{Running, wait_for};
use tokio_util::sync::CancellationToken;

const LINES: usize = 3000;

/// Confirms each batch after a few milliseconds, as a nearby receiver does.
#[derive(Default)]
struct SlowSink {
    records: Mutex<Vec<LogRecord>>,
}

impl Sink for SlowSink {
    fn name(&self) -> &str {
        "slow"
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        _cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            self.records.lock().unwrap().extend_from_slice(records);
            Ok(())
        })
    }
}

fn config(root: &Path, min_interval: Duration) -> LogsConfig {
    LogsConfig {
        pods_dir: root.join("pods"),
        state_dir: root.join("state"),
        checkpoint_interval: Duration::from_secs(30),
        checkpoint_min_interval: min_interval,
        batch_max_records: 10,
        read_chunk_bytes: 1024,
        batch_timeout: Duration::from_millis(20),
        max_in_flight_batches: 1,
        ..LogsConfig::default()
    }
}

fn checkpoint_writes() -> f64 {
    node_agent::core::telemetry::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "node_agent_logs_checkpoint_writes_total")
        .flat_map(|f| f.get_metric().to_vec())
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// Ships a backlog of `LINES` in small batches; returns (writes while shipping, seconds).
async fn ship_backlog(root: &Path, min_interval: Duration) -> (f64, f64, Arc<SlowSink>) {
    let cfg = config(root, min_interval);
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "web", "app", Format::Cri).unwrap();
    log.write_lines(LINES, &LineMix::plain(100)).unwrap();
    log.flush().unwrap();
    let sink = Arc::new(SlowSink::default());
    let before = checkpoint_writes();
    let started = Instant::now();
    let run = Running::start(cfg, vec![sink.clone()]);
    wait_for("the backlog", Duration::from_secs(60), || {
        sink.records.lock().unwrap().len() >= LINES
    })
    .await;
    let writes = checkpoint_writes() - before;
    let secs = started.elapsed().as_secs_f64();
    run.stop().await;
    (writes, secs, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_writes_are_spaced_and_shutdown_saves_all() {
    let every_ack = tempfile::tempdir().unwrap();
    let (unspaced, unspaced_secs, _) = ship_backlog(every_ack.path(), Duration::ZERO).await;

    let dir = tempfile::tempdir().unwrap();
    let min_interval = Duration::from_millis(500);
    let (spaced, secs, sink) = ship_backlog(dir.path(), min_interval).await;
    println!(
        "checkpoint writes while shipping {LINES} lines in batches of 10: \
         0s: {unspaced} in {unspaced_secs:.2} s; 500ms: {spaced} in {secs:.2} s"
    );
    assert!(
        spaced <= (secs / min_interval.as_secs_f64()).ceil() + 1.0,
        "{spaced} writes in {secs:.2} s with a 500 ms spacing"
    );
    assert!(
        unspaced >= 4.0 * spaced.max(1.0),
        "0s writes after acknowledgements: {unspaced} vs {spaced}"
    );
    assert_eq!(sink.records.lock().unwrap().len(), LINES);

    // The final save covered every acknowledged batch: a restart ships nothing again.
    let again = Arc::new(SlowSink::default());
    let run = Running::start(config(dir.path(), min_interval), vec![again.clone()]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    run.stop().await;
    assert_eq!(
        again.records.lock().unwrap().len(),
        0,
        "re-shipped after a clean stop"
    );
}
