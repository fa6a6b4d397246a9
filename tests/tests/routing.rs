//! Routes and per-sink progress, end to end: the real pod log pipeline with real Loki and
//! Elasticsearch sinks against the protocol-faithful receivers.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use node_agent::identity::NodeIdentity;
use node_agent::logs::LogsConfig;
use node_agent::sinks::metrics::SinkMetrics;
use node_agent::sinks::{Sink, SinkConfig};
use node_agent_tests::loggen::{ContainerLog, Format, LineMix, message_id};
use node_agent_tests::pipeline::{Running, wait_for};
use node_agent_tests::receivers::{EsReceiver, LokiReceiver};

fn config(root: &Path) -> LogsConfig {
    LogsConfig {
        pods_dir: root.join("pods"),
        state_dir: root.join("state"),
        rescan_interval: Duration::from_millis(200),
        checkpoint_interval: Duration::from_millis(100),
        batch_max_records: 50,
        batch_timeout: Duration::from_millis(20),
        max_in_flight_batches: 4,
        drain_timeout: Duration::from_secs(1),
        read_chunk_bytes: 4096,
        ..LogsConfig::default()
    }
}

fn sinks(yaml: &str, state: &Path) -> Vec<Arc<dyn Sink>> {
    let configs: Vec<SinkConfig> = serde_yaml_ng::from_str(yaml).unwrap();
    node_agent::sinks::build_all_in(&configs, &NodeIdentity::default(), state).unwrap()
}

fn start(config: LogsConfig, sinks: Vec<Arc<dyn Sink>>) -> Running {
    Running::start(config, sinks)
}

fn ids<'a>(messages: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    messages
        .into_iter()
        .map(|m| message_id(m).expect("generated id").to_string())
        .collect()
}

/// A Loki lane and an Elasticsearch lane with fast retries.
fn two_lanes(loki: &LokiReceiver, es: &EsReceiver) -> String {
    format!(
        "- {{type: loki, name: loki-lane, url: '{}', retry: {{initial_backoff_ms: 5, max_backoff_ms: 50}}}}\n\
         - {{type: elasticsearch, name: es-lane, url: '{}', retry: {{initial_backoff_ms: 5, max_backoff_ms: 50}}}}\n",
        loki.url(),
        es.url()
    )
}

/// Two container logs, one CRI and one docker.
fn api_and_web(cfg: &LogsConfig) -> Vec<ContainerLog> {
    vec![
        ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Cri).unwrap(),
        ContainerLog::create(&cfg.pods_dir, "prod", "web", "nginx", Format::Docker).unwrap(),
    ]
}

/// Writes `n` lines to each log (flushed) and adds their ids to `expected`.
fn write_each(logs: &mut [ContainerLog], n: usize, mix: &LineMix, expected: &mut HashSet<String>) {
    for log in logs {
        expected.extend(log.write_lines(n, mix).unwrap());
        log.flush().unwrap();
    }
}

/// Runs the pipeline again until Loki holds every expected id (at most 20 s), then stops.
async fn rerun_until_loki_has(
    cfg: &LogsConfig,
    yaml: &str,
    loki: &LokiReceiver,
    expected: &HashSet<String>,
) {
    let run = start(cfg.clone(), sinks(yaml, &cfg.state_dir));
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while distinct_ids(&loki.lines()) < expected.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
}

fn assert_once(got: &[String], expected: &HashSet<String>, what: &str) {
    let mut seen = HashMap::new();
    for id in got {
        *seen.entry(id.clone()).or_insert(0) += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "{what}: duplicates {dups:?}");
    let got: HashSet<String> = seen.into_keys().collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    assert!(missing.is_empty(), "{what}: missing e.g. {missing:?}");
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(extra.is_empty(), "{what}: unexpected e.g. {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sink_down_does_not_stop_another_and_restart_delivers_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let loki = LokiReceiver::start().await.unwrap();
    let es = EsReceiver::start().await.unwrap();
    loki.server().set_down(true);
    let yaml = two_lanes(&loki, &es);
    let mix = LineMix::plain(120);
    let mut logs = api_and_web(&cfg);
    let mut expected = HashSet::new();
    for log in &mut logs {
        expected.extend(log.write_lines(1500, &mix).unwrap());
        log.flush().unwrap();
    }

    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    // Elasticsearch gets everything while Loki is down.
    wait_for(
        "every record in Elasticsearch",
        Duration::from_secs(30),
        || es.docs().len() >= expected.len(),
    )
    .await;
    assert!(loki.entries().is_empty());
    let summary = run.stop().await;
    assert!(
        summary.batches_abandoned > 0,
        "the Loki lane had batches in flight"
    );
    assert_once(&ids(&es.messages()), &expected, "elasticsearch, first run");
    let state = &cfg.state_dir;
    assert!(state.join("logs-checkpoint.es-lane.json").exists());
    // Loki confirmed nothing: its lane has no checkpoint of its own yet.
    assert!(!state.join("logs-checkpoint.loki-lane.json").exists());
    let es_sent_before = SinkMetrics::new("es-lane").records_sent();

    // Loki is back; more lines came meanwhile.
    loki.server().set_down(false);
    write_each(&mut logs, 300, &mix, &mut expected);
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    wait_for("every record in both", Duration::from_secs(30), || {
        loki.entries().len() >= expected.len() && es.docs().len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    let lines = loki.lines();
    assert_once(&ids(&lines), &expected, "loki");
    assert_once(&ids(&es.messages()), &expected, "elasticsearch");
    // Elasticsearch resumed from its own checkpoint: only the new lines were sent again.
    assert_eq!(
        SinkMetrics::new("es-lane").records_sent() - es_sent_before,
        600,
        "Elasticsearch got records it had confirmed already"
    );
    assert!(es.writes().values().all(|&n| n == 1));
    assert!(!state.join("deadletter").join("loki-lane.ndjson").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_each_record_to_every_sink_it_matches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let loki = LokiReceiver::start().await.unwrap();
    let es = EsReceiver::start().await.unwrap();
    let out = dir.path().join("errors.ndjson");
    // team-a → Loki; team-* → Elasticsearch; stderr-free json with level=error → file;
    // namespace "other" → nobody.
    let yaml = format!(
        "- {{type: loki, name: loki-routes, url: '{}', match: {{namespace: team-a}}}}\n\
         - {{type: elasticsearch, name: es-routes, url: '{}', match: {{namespace: 'team-*', source: pod}}}}\n\
         - {{type: file, name: file-routes, path: '{}', match: {{pod: 'api-?', container: [app, sidecar]}}}}\n",
        loki.url(),
        es.url(),
        out.display()
    );
    let mix = LineMix::plain(100);
    let mut written: HashMap<&str, HashSet<String>> = HashMap::new();
    for (ns, pod, container) in [
        ("team-a", "api-1", "app"),
        ("team-b", "web-1", "nginx"),
        ("other", "api-2", "sidecar"),
        ("other", "job-1", "app"),
    ] {
        let mut log = ContainerLog::create(&cfg.pods_dir, ns, pod, container, Format::Cri).unwrap();
        let ids = log.write_lines(200, &mix).unwrap();
        log.flush().unwrap();
        written
            .entry(match (ns, pod) {
                ("team-a", _) => "team-a",
                ("team-b", _) => "team-b",
                ("other", "api-2") => "other-api",
                _ => "nobody",
            })
            .or_default()
            .extend(ids);
    }
    let union = |keys: &[&str]| -> HashSet<String> {
        keys.iter()
            .flat_map(|k| written[k].iter().cloned())
            .collect()
    };
    let unrouted_before = node_agent::logs::metrics::metrics().records_unrouted.get();
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    let file_lines = || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["message"].as_str().unwrap().to_string()
            })
            .collect::<Vec<_>>()
    };
    wait_for("routed records", Duration::from_secs(30), || {
        loki.entries().len() >= 200 && es.docs().len() >= 400 && file_lines().len() >= 400
    })
    .await;
    // The unrouted records are confirmed (counted) too.
    wait_for("unrouted records counted", Duration::from_secs(10), || {
        node_agent::logs::metrics::metrics().records_unrouted.get() - unrouted_before >= 200
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    assert_once(&ids(&loki.lines()), &union(&["team-a"]), "loki");
    assert_once(
        &ids(&es.messages()),
        &union(&["team-a", "team-b"]),
        "elasticsearch",
    );
    assert_once(
        &ids(&file_lines()),
        &union(&["team-a", "other-api"]),
        "file",
    );
    assert_eq!(
        node_agent::logs::metrics::metrics().records_unrouted.get() - unrouted_before,
        200
    );

    // Every lane's checkpoint covers what it skipped: a restart sends nothing again.
    let es_requests = es.bulk_requests();
    let loki_requests = loki.server().requests().len();
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.stop().await;
    assert_eq!(es.bulk_requests(), es_requests);
    assert_eq!(loki.server().requests().len(), loki_requests);
    assert_eq!(file_lines().len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_streams_stay_in_order_across_retries_with_many_batches() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogsConfig {
        batch_max_records: 10,
        max_in_flight_batches: 8,
        ..config(dir.path())
    };
    let loki = LokiReceiver::start().await.unwrap();
    loki.set_enforce_order(true);
    let yaml = format!(
        "- {{type: loki, name: loki-order, url: '{}', retry: {{initial_backoff_ms: 1, max_backoff_ms: 30}}}}\n",
        loki.url()
    );
    let mix = LineMix::plain(100);
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Cri).unwrap();
    let mut expected = Vec::new();
    // Failures scattered over the run: every retried batch must still land in order.
    loki.server().fail_next(3, 503);
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    for round in 0..10 {
        expected.extend(log.write_lines(100, &mix).unwrap());
        log.flush().unwrap();
        if round % 3 == 0 {
            loki.server().fail_next(2, 500);
            loki.server().fail_next_retry_after(1, 429, 0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = cfg.state_dir.join("deadletter").join("loki-order.ndjson");
    let dead_letters = || {
        std::fs::read_to_string(&dead)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    wait_for(
        "every entry stored or dead-lettered",
        Duration::from_secs(30),
        || loki.entries().len() + dead_letters() >= expected.len(),
    )
    .await;
    assert_eq!(dead_letters(), 0, "entries refused as out of order");
    run.stop().await;
    // In file order (one stream), nothing refused, nothing dead-lettered.
    assert_eq!(ids(&loki.lines()), expected);
    assert!(
        loki.server().requests().iter().all(|r| r.status != 400),
        "Loki refused entries as out of order"
    );
    assert!(
        !cfg.state_dir
            .join("deadletter")
            .join("loki-order.ndjson")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_end_to_end_with_a_route_on_parsed_fields() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogsConfig {
        parse_json: true,
        ..config(dir.path())
    };
    let otlp = node_agent_tests::receivers::OtlpReceiver::start()
        .await
        .unwrap();
    let es = EsReceiver::start().await.unwrap();
    let yaml = format!(
        "- {{type: otlp, name: otlp-e2e, url: '{}', gzip: true, match: {{fields: {{level: info}}}}}}\n\
         - {{type: elasticsearch, name: es-e2e, url: '{}'}}\n",
        otlp.url(),
        es.url()
    );
    let mix = LineMix {
        stderr_per_mille: 0,
        json_per_mille: 400,
        long_per_mille: 0,
        payload_bytes: 80,
        split_bytes: usize::MAX,
    };
    let mut log = ContainerLog::create(&cfg.pods_dir, "shop", "api", "app", Format::Cri).unwrap();
    let all: HashSet<String> = log.write_lines(500, &mix).unwrap().into_iter().collect();
    log.flush().unwrap();
    let json: HashSet<String> = log
        .expected()
        .iter()
        .filter(|(_, e)| e.message.starts_with('{'))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!json.is_empty() && json.len() < all.len());
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    wait_for("both sinks", Duration::from_secs(30), || {
        otlp.logs().len() >= json.len() && es.docs().len() >= all.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    let bodies: Vec<String> = otlp.logs().into_iter().map(|l| l.body).collect();
    assert_once(&ids(&bodies), &json, "otlp");
    assert_once(&ids(&es.messages()), &all, "elasticsearch");
    let first = &otlp.logs()[0];
    assert_eq!(first.resource["k8s.namespace.name"], "shop");
    assert_eq!(first.resource["k8s.pod.name"], "api");
    assert_eq!(first.severity_number, 9);
    assert_eq!(first.attributes["level"], "info");
}

/// The soak's loss: one lane behind while its files rotate (and older rotations are
/// compressed), then a restart. The lagging lane must finish every rotated file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_lane_finishes_files_rotated_and_compressed_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let loki = LokiReceiver::start().await.unwrap();
    // Loki accepts out-of-order writes by default since 2.4; a lane catching up reads
    // rotated files and the current one side by side.
    loki.set_enforce_order(false);
    let es = EsReceiver::start().await.unwrap();
    let yaml = two_lanes(&loki, &es);
    let mix = LineMix::plain(120);
    let mut logs = api_and_web(&cfg);
    let mut expected = HashSet::new();
    write_each(&mut logs, 300, &mix, &mut expected);
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    wait_for("both caught up", Duration::from_secs(30), || {
        loki.entries().len() >= expected.len() && es.docs().len() >= expected.len()
    })
    .await;
    // Loki goes down; the files rotate three times, older rotations compressed.
    loki.server().set_down(true);
    for round in 0..3 {
        write_each(&mut logs, 300, &mix, &mut expected);
        wait_for("Elasticsearch caught up", Duration::from_secs(30), || {
            es.docs().len() >= expected.len()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        for log in &mut logs {
            log.rotate(round > 0).unwrap();
        }
    }
    write_each(&mut logs, 300, &mix, &mut expected);
    wait_for("Elasticsearch caught up", Duration::from_secs(30), || {
        es.docs().len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.stop().await;

    loki.server().set_down(false);
    rerun_until_loki_has(&cfg, &yaml, &loki, &expected).await;
    assert_once(&ids(&loki.lines()), &expected, "loki");
    assert_once(&ids(&es.messages()), &expected, "elasticsearch");
}

/// Found by the 10-minute soak: a lane behind its sink (down, then catching up) keeps
/// confirming old batches, so its checkpoint is written after files it has not reached
/// were created, written and rotated. After a restart those files have no position and
/// are older than the checkpoint file, and were skipped as "finished before". The
/// checkpoint must say itself up to when its positions cover every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_files_a_lagging_lane_had_not_reached() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let loki = LokiReceiver::start().await.unwrap();
    // Loki accepts out-of-order writes by default since 2.4; a lane catching up reads a
    // rotated file and the current one side by side.
    loki.set_enforce_order(false);
    let es = EsReceiver::start().await.unwrap();
    let yaml = two_lanes(&loki, &es);
    let mix = LineMix::plain(120);
    let mut logs = api_and_web(&cfg);
    let mut expected = HashSet::new();
    write_each(&mut logs, 100, &mix, &mut expected);
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    wait_for("both caught up", Duration::from_secs(30), || {
        loki.entries().len() >= expected.len() && es.docs().len() >= expected.len()
    })
    .await;
    // Loki down: a backlog beyond what its lane reads ahead, then a file created, written
    // and rotated while the lane is stalled, then the current one.
    loki.server().set_down(true);
    for log in &mut logs {
        expected.extend(log.write_lines(1000, &mix).unwrap());
        log.flush().unwrap();
        log.rotate(false).unwrap();
        expected.extend(log.write_lines(200, &mix).unwrap());
        log.flush().unwrap();
        log.rotate(false).unwrap();
        expected.extend(log.write_lines(50, &mix).unwrap());
        log.flush().unwrap();
    }
    wait_for("Elasticsearch caught up", Duration::from_secs(30), || {
        es.docs().len() >= expected.len()
    })
    .await;
    run.stop().await;
    // What the soak saw: the lane confirmed one more old batch just before the stop, so
    // its checkpoint file is newer than the files it never reached.
    let checkpoint = cfg.state_dir.join("logs-checkpoint.loki-lane.json");
    std::fs::File::options()
        .write(true)
        .open(&checkpoint)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();

    loki.server().set_down(false);
    rerun_until_loki_has(&cfg, &yaml, &loki, &expected).await;
    let got: HashSet<String> = ids(&loki.lines()).into_iter().collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    assert!(
        missing.is_empty(),
        "loki: {} lines missing, e.g. {missing:?}",
        expected.difference(&got).count()
    );
    assert_once(&ids(&es.messages()), &expected, "elasticsearch");
}

fn distinct_ids(lines: &[String]) -> usize {
    ids(lines).into_iter().collect::<HashSet<_>>().len()
}

/// The other side of reading compressed rotations no lane covered: a file shipped to its
/// end and forgotten, compressed afterwards (kubelet does so at the next rotation), is
/// known by its first line after a restart and not shipped again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_file_compressed_later_is_not_shipped_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let es = EsReceiver::start().await.unwrap();
    let yaml = format!(
        "- {{type: elasticsearch, name: es, url: '{}', retry: {{initial_backoff_ms: 5, max_backoff_ms: 50}}}}\n",
        es.url()
    );
    let mix = LineMix::plain(120);
    let mut log = ContainerLog::create(&cfg.pods_dir, "prod", "api", "app", Format::Cri).unwrap();
    let mut expected: HashSet<String> = log.write_lines(100, &mix).unwrap().into_iter().collect();
    log.flush().unwrap();
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    wait_for("first lines", Duration::from_secs(30), || {
        es.docs().len() >= expected.len()
    })
    .await;
    let rotated = log.rotate(false).unwrap();
    expected.extend(log.write_lines(10, &mix).unwrap());
    log.flush().unwrap();
    // Finished and forgotten: the checkpoint no longer names the rotated file.
    let checkpoint = cfg.state_dir.join("logs-checkpoint.json");
    let rotated_name = rotated.display().to_string();
    let entries = || -> usize {
        std::fs::read(&checkpoint)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["entries"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    wait_for(
        "the rotated file forgotten",
        Duration::from_secs(30),
        || entries() == 1 && es.docs().len() >= expected.len(),
    )
    .await;
    run.stop().await;
    // The next rotation compresses it: a new inode, newer than the checkpoint.
    log.rotate(true).unwrap();
    assert!(std::path::PathBuf::from(format!("{rotated_name}.gz")).exists());
    expected.extend(log.write_lines(10, &mix).unwrap());
    log.flush().unwrap();
    let run = start(cfg.clone(), sinks(&yaml, &cfg.state_dir));
    wait_for("the new lines", Duration::from_secs(30), || {
        es.docs().len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.stop().await;
    assert_once(&ids(&es.messages()), &expected, "elasticsearch");
    assert!(
        es.writes().values().all(|&n| n == 1),
        "a document was written twice"
    );
}
