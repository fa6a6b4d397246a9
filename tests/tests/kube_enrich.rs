//! Kubernetes metadata on log records, end to end: the real `node-agent` binary with a
//! `kubernetes:` section (a kubeconfig naming the fake API server of
//! tests/src/receivers/apiserver.rs), a pod log directory and the file sink. Records
//! carry pod labels, the workload, the image and namespace/node labels; with the API
//! server down they still ship with the path's metadata and count as misses, and
//! enrichment resumes when it is back; a file that appears before its pod waits for it;
//! exclusion annotations drop records.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use node_agent_tests::agent_proc::{AgentDirs, AgentProc};
use node_agent_tests::receivers::apiserver::{self, ApiServer, INITIAL_TOKEN, PodBuilder};
use serde_json::Value;

/// The agents' NODE_NAME (tests/src/agent_proc.rs).
const NODE: &str = "test-node";
const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    server: ApiServer,
    dirs: AgentDirs,
}

impl Fixture {
    async fn new() -> Self {
        let server = ApiServer::start().await.unwrap();
        server.upsert(apiserver::node(
            NODE,
            &[
                ("topology.kubernetes.io/zone", "eu-1a"),
                ("feature.node.kubernetes.io/cpu-avx", "true"),
            ],
        ));
        server.upsert(apiserver::namespace("shop", &[("team", "payments")], &[]));
        Self {
            server,
            dirs: AgentDirs::new().unwrap(),
        }
    }

    /// The agent's config: pod logs into the file sink, metadata from the fake server.
    fn config(&self, kubernetes_extra: &[&str]) -> PathBuf {
        let root = self.dirs.root.path();
        let kubeconfig = root.join("kubeconfig");
        self.server
            .write_kubeconfig(&kubeconfig, INITIAL_TOKEN)
            .unwrap();
        let mut yaml = format!(
            "logs:\n  pods_dir: {:?}\n  state_dir: {:?}\n  rescan_interval: 200ms\n  batch_timeout: 50ms\n\
             sinks:\n  - type: file\n    path: {:?}\nhandover:\n  lock_file: {:?}\n\
             kubernetes:\n  kubeconfig: {:?}\n  watch_timeout: 2s\n  node_refresh_interval: 1s\n  \
             backoff_initial: 50ms\n  backoff_max: 400ms\n  connect_timeout: 2s\n  \
             node_labels: {{include: ['topology.kubernetes.io/*']}}\n",
            self.dirs.pods_dir,
            self.dirs.state_dir,
            self.dirs.sink_path,
            self.dirs.lock_file,
            kubeconfig,
        );
        for line in kubernetes_extra {
            yaml.push_str(&format!("  {line}\n"));
        }
        let path = root.join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Appends CRI lines to `<pods_dir>/shop_<pod>_<uid>/<container>/0.log`.
    fn write(&self, pod: &str, uid: &str, container: &str, messages: &[&str]) {
        let dir = self
            .dirs
            .pods_dir
            .join(format!("shop_{pod}_{uid}"))
            .join(container);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        for m in messages {
            text.push_str(&format!("2026-01-01T00:00:00.000000000Z stdout F {m}\n"));
        }
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("0.log"))
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
}

/// A pod uid as kubelet's directory names need it (a UUID), from a short test name.
fn uid(n: u8) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn web_pod(uid: &str) -> PodBuilder {
    PodBuilder::new("shop", &format!("web-7d4b9c8f6-{uid}"), uid, NODE)
        .label("app", "web")
        .label("app.kubernetes.io/part-of", "shop")
        .label("pod-template-hash", "7d4b9c8f6")
        .owner("ReplicaSet", "web-7d4b9c8f6")
        .container("app", "nginx:1.27")
        .container("sidecar", "envoy:1.30")
}

/// The file sink's records so far.
fn shipped(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits for the record whose message is `message` in the file sink.
async fn record(path: &Path, message: &str, agent: &AgentProc) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(r) = shipped(path).into_iter().find(|r| r["message"] == message) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{message:?} not shipped\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `/metrics` has `sample` at `value` or more.
async fn metric_at_least(agent: &AgentProc, sample: &str, value: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = agent.metric(sample).await.unwrap();
        if now.is_some_and(|v| v >= value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} is {now:?}, wanted ≥ {value}\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const UP: &str = "node_agent_subsystem_up{subsystem=\"kubernetes\"}";
const MISSES: &str = "node_agent_k8s_metadata_misses_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_carry_labels_workload_image_and_namespace_and_node_labels() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod(&uid(1)).build());
    let agent = AgentProc::start("enrich", &f.config(&[])).await.unwrap();
    metric_at_least(&agent, UP, 1.0).await;
    f.write(
        &format!("web-7d4b9c8f6-{}", uid(1)),
        &uid(1),
        "app",
        &["hello"],
    );
    let r = record(&f.dirs.sink_path, "hello", &agent).await;
    // The path's flat fields stay; the nested object adds the metadata.
    assert_eq!(r["pod"], format!("web-7d4b9c8f6-{}", uid(1)));
    let k = &r["kubernetes"];
    assert_eq!(k["namespace"], "shop");
    assert_eq!(k["pod"]["uid"], uid(1).as_str());
    assert_eq!(k["labels"]["app"], "web");
    assert_eq!(k["labels"]["app.kubernetes.io/part-of"], "shop");
    assert_eq!(k["deployment"]["name"], "web");
    assert_eq!(k["replicaset"]["name"], "web-7d4b9c8f6");
    assert_eq!(k["container"]["name"], "app");
    assert_eq!(k["container"]["image"], "nginx:1.27");
    assert_eq!(k["container"]["runtime"], "containerd");
    assert!(
        k["container"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("app-")),
        "{k}"
    );
    assert_eq!(k["namespace_labels"]["team"], "payments");
    assert_eq!(k["node"]["name"], NODE);
    assert_eq!(
        k["node"]["labels"],
        serde_json::json!({"topology.kubernetes.io/zone": "eu-1a"}),
        "only the selected node labels"
    );
    let (status, body) = agent.get("/healthz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(
        agent
            .metric("node_agent_k8s_cached_objects{kind=\"pods\"}")
            .await
            .unwrap()
            .is_some_and(|n| n >= 1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_records_still_ship_and_enrichment_resumes() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod(&uid(2)).build());
    f.server.set_down(true).await.unwrap();
    let agent = AgentProc::start("enrich", &f.config(&[])).await.unwrap();
    f.write(
        &format!("web-7d4b9c8f6-{}", uid(2)),
        &uid(2),
        "app",
        &["while down"],
    );
    let r = record(&f.dirs.sink_path, "while down", &agent).await;
    assert_eq!(r["namespace"], "shop");
    assert_eq!(r["pod"], format!("web-7d4b9c8f6-{}", uid(2)));
    assert_eq!(
        r["kubernetes"],
        Value::Null,
        "no metadata yet: the flat path fields only"
    );
    metric_at_least(&agent, MISSES, 1.0).await;
    let (status, body) = agent.get("/healthz").await.unwrap();
    assert_eq!(status, 200, "a cache that is down is not fatal");
    assert!(body.contains("kubernetes: degraded"), "{body}");
    assert_eq!(agent.metric(UP).await.unwrap(), Some(0.0));

    f.server.set_down(false).await.unwrap();
    metric_at_least(&agent, UP, 1.0).await;
    f.write(
        &format!("web-7d4b9c8f6-{}", uid(2)),
        &uid(2),
        "app",
        &["after"],
    );
    let r = record(&f.dirs.sink_path, "after", &agent).await;
    assert_eq!(
        r["kubernetes"]["labels"]["app"], "web",
        "the same file is enriched once the cache is back"
    );
    assert_eq!(r["kubernetes"]["deployment"]["name"], "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_before_its_pod_waits_for_it() {
    let f = Fixture::new().await;
    // Long enough that the record can only ship enriched if it waited for the pod.
    let agent = AgentProc::start("enrich", &f.config(&["hold_time: 60s"]))
        .await
        .unwrap();
    metric_at_least(&agent, UP, 1.0).await;
    f.write(
        &format!("web-7d4b9c8f6-{}", uid(3)),
        &uid(3),
        "app",
        &["early"],
    );
    metric_at_least(&agent, "node_agent_k8s_held_records", 1.0).await;
    assert!(shipped(&f.dirs.sink_path).is_empty(), "held, not shipped");
    f.server.upsert(web_pod(&uid(3)).build());
    let r = record(&f.dirs.sink_path, "early", &agent).await;
    assert_eq!(r["kubernetes"]["labels"]["app"], "web");
    assert_eq!(agent.metric(MISSES).await.unwrap(), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_annotations_drop_records() {
    let f = Fixture::new().await;
    f.server.upsert(
        web_pod(&uid(4))
            .annotation("node-agent.io/exclude-containers", "sidecar")
            .build(),
    );
    f.server.upsert(
        PodBuilder::new("shop", "noisy", &uid(5), NODE)
            .annotation("node-agent.io/exclude", "true")
            .container("app", "noisy:1")
            .build(),
    );
    let agent = AgentProc::start("enrich", &f.config(&[])).await.unwrap();
    metric_at_least(&agent, UP, 1.0).await;
    f.write(
        &format!("web-7d4b9c8f6-{}", uid(4)),
        &uid(4),
        "sidecar",
        &["envoy says"],
    );
    f.write("noisy", &uid(5), "app", &["noise"]);
    metric_at_least(&agent, "node_agent_k8s_excluded_records_total", 2.0).await;
    f.write(
        &format!("web-7d4b9c8f6-{}", uid(4)),
        &uid(4),
        "app",
        &["kept"],
    );
    record(&f.dirs.sink_path, "kept", &agent).await;
    let messages: Vec<Value> = shipped(&f.dirs.sink_path)
        .into_iter()
        .map(|r| r["message"].clone())
        .collect();
    assert_eq!(messages, ["kept"]);
}
