//! Benchmark of the Kubernetes metadata cache (for `cargo xtask bench logs`): the fake
//! API server loaded with a full node (110 pods × 3 containers, 20 labels and 20
//! annotations each, realistic `managedFields`; 10 namespaces; a node with 20 labels),
//! the cache synced against it, then its memory (RSS delta of the measuring process,
//! live and peak heap when the binary counts allocations, the cache's own estimate of
//! its metadata) and lookup cost (by uid, by namespace/name).
//!
//! Two halves so the server's memory stays out of the measured process:
//! [`serve_fixture`] (a child process: prints one line `url<TAB>ca_file<TAB>token`, serves
//! until its stdin closes) and [`measure`] (this process). [`run_in_process`] does both
//! in one process (handy in tests; its RSS includes the server's transient buffers).
//! `cargo run --release -p node-agent-tests --example kube_metadata_bench` runs the
//! two-process form.

use std::fmt;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use node_agent_kube::{KubeConfig, MetadataCache};
use tokio_util::sync::CancellationToken;

use crate::receivers::apiserver::{self, ApiServer, INITIAL_TOKEN, PodBuilder};

pub const NODE: &str = "bench-node";
pub const PODS: usize = 110;
pub const CONTAINERS: usize = 3;
pub const LABELS: usize = 20;
pub const ANNOTATIONS: usize = 20;
pub const NAMESPACES: usize = 10;
const LOOKUPS: usize = 1_000_000;

/// The uid of bench pod `i`.
pub fn pod_uid(i: usize) -> String {
    format!("5f0c{i:04x}-7b1e-4c2a-9d3f-00000000{i:04x}")
}

/// The namespace of bench pod `i`.
pub fn pod_namespace(i: usize) -> String {
    format!("team-{}", i % NAMESPACES)
}

/// The name of bench pod `i`.
pub fn pod_name(i: usize) -> String {
    format!("service-{:02}-7d4b9c8f6-{:05}", i % 37, i)
}

/// The containers of every bench pod.
pub const CONTAINER_NAMES: [&str; CONTAINERS] = ["app", "istio-proxy", "log-shipper"];

/// Loads the fixture into a running fake.
pub fn load_fixture(server: &ApiServer) {
    load_fixture_with(server, PODS);
}

/// The fixture with only its first `pods` pods (0: the node and namespaces only, what an
/// empty cache holds).
pub fn load_fixture_with(server: &ApiServer, pods: usize) {
    let node_labels: Vec<(String, String)> = [
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/hostname", NODE),
        ("node.kubernetes.io/instance-type", "m6i.2xlarge"),
        ("topology.kubernetes.io/region", "eu-west-1"),
        ("topology.kubernetes.io/zone", "eu-west-1a"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain((0..14).map(|i| {
        (
            format!("feature.node.kubernetes.io/cpu-feature-{i:02}"),
            "true".to_string(),
        )
    }))
    .collect();
    let node_labels: Vec<(&str, &str)> = node_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    server.upsert(apiserver::node(NODE, &node_labels));
    for n in 0..NAMESPACES {
        let name = format!("team-{n}");
        server.upsert(apiserver::namespace(
            &name,
            &[
                ("kubernetes.io/metadata.name", &name),
                ("team", &format!("team-number-{n}")),
                ("cost-center", "cc-1234"),
                ("environment", "production"),
                ("pod-security.kubernetes.io/enforce", "baseline"),
            ],
            &[
                ("owner", "platform@example.com"),
                ("scheduler.alpha.kubernetes.io/node-selector", ""),
            ],
        ));
    }
    for i in 0..pods.min(PODS) {
        let app = format!("service-{:02}", i % 37);
        let mut pod = PodBuilder::new(&pod_namespace(i), &pod_name(i), &pod_uid(i), NODE)
            .owner("ReplicaSet", &format!("{app}-7d4b9c8f6"))
            .label("app", &app)
            .label("pod-template-hash", "7d4b9c8f6")
            .label("app.kubernetes.io/name", &app)
            .label("app.kubernetes.io/instance", &format!("{app}-production"))
            .label("app.kubernetes.io/version", "1.27.3")
            .label("app.kubernetes.io/part-of", "checkout-platform")
            .label("app.kubernetes.io/managed-by", "helm");
        for l in 7..LABELS {
            pod = pod.label(
                &format!("example.com/label-{l:02}"),
                &format!("value-{l:02}-{i:04}"),
            );
        }
        pod = pod
            .annotation("prometheus.io/scrape", "true")
            .annotation("prometheus.io/port", "9090")
            .annotation("checksum/config", &format!("{:064x}", i * 7919))
            .annotation("node-agent.io/multiline", "java");
        for a in 4..ANNOTATIONS {
            pod = pod.annotation(
                &format!("example.com/annotation-{a:02}"),
                &format!("annotation value {a:02} of pod {i:04}, about fifty bytes"),
            );
        }
        pod = pod
            .container(
                CONTAINER_NAMES[0],
                &format!("registry.example.com/{app}:1.27.3"),
            )
            .container(CONTAINER_NAMES[1], "docker.io/istio/proxyv2:1.24.1")
            .container(CONTAINER_NAMES[2], "registry.example.com/fluent-bit:3.2");
        let mut pod = pod.build();
        pod["metadata"]["managedFields"] = managed_fields();
        server.upsert(pod);
    }
}

/// What real pods carry in `metadata.managedFields` (server-side apply bookkeeping by
/// the ReplicaSet controller and kubelet): kilobytes the cache decodes and drops.
fn managed_fields() -> serde_json::Value {
    let fields = |prefix: &str, n: usize| -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| {
                (
                    format!("f:{prefix}-{i:02}"),
                    serde_json::json!({".": {}, "f:name": {}, "f:value": {}}),
                )
            })
            .collect();
        serde_json::Value::Object(map)
    };
    serde_json::json!([
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:00Z",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": fields("label", LABELS), "f:ownerReferences": {}},
                                                "f:spec": {"f:containers": fields("container", CONTAINERS * 8)}}},
        {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": "2026-01-01T00:00:05Z", "subresource": "status",
         "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": fields("condition", 12), "f:containerStatuses": {}, "f:podIP": {}}}},
    ])
}

/// Where the fixture is served.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub ca_file: PathBuf,
    pub token: String,
}

impl Endpoint {
    /// The line [`serve_fixture`] prints ([`Endpoint::parse`] reads it).
    pub fn line(&self) -> String {
        format!("{}\t{}\t{}", self.url, self.ca_file.display(), self.token)
    }

    /// A cache config for this endpoint and [`NODE`] (the token written into `dir`).
    pub fn config(&self, dir: &Path) -> anyhow::Result<KubeConfig> {
        let token_file = dir.join("token");
        std::fs::write(&token_file, &self.token).context("writing the token")?;
        Ok(KubeConfig {
            enabled: Some(true),
            api_server_url: Some(self.url.clone()),
            token_file,
            ca_file: self.ca_file.clone(),
            node_name: NODE.into(),
            ..KubeConfig::default()
        })
    }

    /// Parses [`serve_fixture`]'s line.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let mut parts = line.trim().split('\t');
        let (Some(url), Some(ca), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
            anyhow::bail!("expected url<TAB>ca_file<TAB>token, got {line:?}");
        };
        Ok(Self {
            url: url.into(),
            ca_file: ca.into(),
            token: token.into(),
        })
    }
}

/// Child side: serves the fixture, prints the endpoint line, returns when stdin closes.
pub async fn serve_fixture(dir: &Path) -> anyhow::Result<()> {
    serve_fixture_with(dir, PODS).await
}

/// [`serve_fixture`] with only the first `pods` pods.
pub async fn serve_fixture_with(dir: &Path, pods: usize) -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    load_fixture_with(&server, pods);
    let ca_file = dir.join("bench-ca.crt");
    std::fs::write(&ca_file, server.ca_pem())?;
    let endpoint = Endpoint {
        url: server.url(),
        ca_file,
        token: INITIAL_TOKEN.into(),
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", endpoint.line())?;
    stdout.flush()?;
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut sink)
            .is_ok_and(|n| n > 0)
        {
            sink.clear();
        }
    })
    .await?;
    Ok(())
}

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct Figures {
    pub pods: usize,
    pub namespaces: usize,
    pub sync: Duration,
    /// VmRSS after sync minus before start (client, TLS, tasks and the metadata).
    pub rss_delta_kib: i64,
    /// Of which anonymous memory (heap, stacks) …
    pub rss_anon_delta_kib: i64,
    /// … and file-backed pages (the client's code, run for the first time).
    pub rss_file_delta_kib: i64,
    /// Peak live heap during the sync minus before start (the list being decoded).
    pub heap_peak_delta_bytes: Option<i64>,
    /// Live heap after sync minus before start, when the caller counts allocations.
    pub heap_delta_bytes: Option<i64>,
    /// The cache's own estimate of its metadata's heap bytes.
    pub cache_estimate_bytes: usize,
    pub lookup_uid_ns: f64,
    pub lookup_name_ns: f64,
    /// A lookup and an exclusion + hint check, the per-file-open work of a source.
    pub lookup_and_check_ns: f64,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kube metadata cache: {} pods × {CONTAINERS} containers, {LABELS} labels + {ANNOTATIONS} annotations each, {} namespaces; synced in {:.0} ms",
            self.pods,
            self.namespaces,
            self.sync.as_secs_f64() * 1000.0
        )?;
        writeln!(
            f,
            "  RSS delta (client + cache)      {:>8} KiB  (anon {} KiB, file-backed code {} KiB)",
            self.rss_delta_kib, self.rss_anon_delta_kib, self.rss_file_delta_kib
        )?;
        if let Some(heap) = self.heap_delta_bytes {
            writeln!(
                f,
                "  live heap delta after sync      {:>8} KiB",
                heap / 1024
            )?;
        }
        if let Some(peak) = self.heap_peak_delta_bytes {
            writeln!(
                f,
                "  peak heap delta during sync     {:>8} KiB",
                peak / 1024
            )?;
        }
        writeln!(
            f,
            "  metadata held (estimate)        {:>8} KiB",
            self.cache_estimate_bytes / 1024
        )?;
        writeln!(
            f,
            "  lookup by uid                   {:>8.1} ns",
            self.lookup_uid_ns
        )?;
        writeln!(
            f,
            "  lookup by namespace/name        {:>8.1} ns",
            self.lookup_name_ns
        )?;
        write!(
            f,
            "  lookup + exclude/hint checks    {:>8.1} ns",
            self.lookup_and_check_ns
        )
    }
}

/// (VmRSS, RssAnon, RssFile) in KiB.
fn rss_kib() -> (i64, i64, i64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> i64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// Hooks into a counting allocator: live bytes now, and the peak since the last reset
/// (which the call resets).
#[derive(Debug, Clone, Copy)]
pub struct HeapCounter {
    pub live: fn() -> usize,
    pub take_peak: fn() -> usize,
}

/// Syncs a cache against `endpoint` in this process and measures it. `heap_in_use`
/// reads a counting allocator, if the binary has one.
pub async fn measure(endpoint: &Endpoint, heap: Option<HeapCounter>) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let config = endpoint.config(dir.path())?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let heap_before = heap.map(|h| {
        (h.take_peak)();
        (h.live)()
    });
    let rss_before = rss_kib();
    let started = Instant::now();
    let cache = MetadataCache::start(&config, &shutdown).await?;
    anyhow::ensure!(
        cache.wait_synced(Duration::from_secs(30)).await,
        "cache did not sync: {:?}",
        cache.stats()
    );
    let sync = started.elapsed();
    let heap_peak_delta_bytes = heap
        .zip(heap_before)
        .map(|(h, before)| (h.take_peak)() as i64 - before as i64);
    // Let the watches open and the list buffers go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss_kib();
    let heap_delta_bytes = heap
        .zip(heap_before)
        .map(|(h, before)| (h.live)() as i64 - before as i64);
    let stats = cache.stats();
    anyhow::ensure!(
        stats.cached.pods == PODS,
        "cached {} pods, expected {PODS}",
        stats.cached.pods
    );

    let uids: Vec<String> = (0..PODS).map(pod_uid).collect();
    let names: Vec<(String, String)> = (0..PODS).map(|i| (pod_namespace(i), pod_name(i))).collect();
    let time = |f: &mut dyn FnMut(usize) -> bool| {
        let start = Instant::now();
        let mut found = 0usize;
        for i in 0..LOOKUPS {
            found += usize::from(std::hint::black_box(f(i % PODS)));
        }
        let ns = start.elapsed().as_nanos() as f64 / LOOKUPS as f64;
        (ns, found)
    };
    let (lookup_uid_ns, found) = time(&mut |i| uids.get(i).and_then(|u| cache.pod(u)).is_some());
    anyhow::ensure!(found == LOOKUPS, "uid lookups missed");
    let (lookup_name_ns, found) = time(&mut |i| {
        names
            .get(i)
            .and_then(|(ns, n)| cache.pod_by_name(ns, n))
            .is_some()
    });
    anyhow::ensure!(found == LOOKUPS, "name lookups missed");
    let (lookup_and_check_ns, found) = time(&mut |i| {
        uids.get(i)
            .and_then(|u| cache.pod(u))
            .is_some_and(|p| !p.is_container_excluded("app") && p.hint("multiline").is_some())
    });
    anyhow::ensure!(found == LOOKUPS, "checks failed");
    Ok(Figures {
        pods: stats.cached.pods,
        namespaces: stats.cached.namespaces,
        sync,
        rss_delta_kib: rss_after.0 - rss_before.0,
        rss_anon_delta_kib: rss_after.1 - rss_before.1,
        rss_file_delta_kib: rss_after.2 - rss_before.2,
        heap_delta_bytes,
        heap_peak_delta_bytes,
        cache_estimate_bytes: cache.heap_bytes(),
        lookup_uid_ns,
        lookup_name_ns,
        lookup_and_check_ns,
    })
}

/// Server and cache in this process.
pub async fn run_in_process(heap: Option<HeapCounter>) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let server = ApiServer::start().await?;
    load_fixture(&server);
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, server.ca_pem()).context("writing the CA")?;
    let endpoint = Endpoint {
        url: server.url(),
        ca_file,
        token: INITIAL_TOKEN.into(),
    };
    measure(&endpoint, heap).await
}
