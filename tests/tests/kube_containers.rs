//! Kubernetes metadata by container id, for the eBPF side, against the fake API server
//! (tests/src/receivers/apiserver.rs): the cache's container-id index as
//! `node_agent_core::kube::ContainerLookup`, the `kube_labels` of
//! `node_agent_syscalls_total` computed from it over a fixture cgroup tree (the series
//! code the collector runs on the pinned map's rows; the eBPF map itself is in
//! syscalls_ebpf.rs), and the security rules' view of the same container.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_agent::core::kube::{ContainerLookup, ContainerLookupSlot, SharedContainerLookup};
use node_agent::kube_cache::{KubeConfig, MetadataCache};
use node_agent::metrics::MetricSet;
use node_agent::security::process::{ContainerMetadata, KubeMetadata};
use node_agent::syscalls::SyscallsConfig;
use node_agent::syscalls::cgroups::{Attribution, AttributionSources};
use node_agent::syscalls::series::{self, Admission, KubeLabels, OTHER};
use node_agent_tests::receivers::apiserver::{self, ApiServer, INITIAL_TOKEN, PodBuilder};
use tokio_util::sync::CancellationToken;

const NODE: &str = "node-1";
const SYNC: Duration = Duration::from_secs(10);
const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
const POD: &str = "web-7d4b9c8f6-x2k4p";
const ID: &str = "4f9a0e1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";
const RESTARTED: &str = "5e0b1f2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

fn web_pod(app: &str, id: &str) -> serde_json::Value {
    PodBuilder::new("shop", POD, UID, NODE)
        .label("app", app)
        .label("pod-template-hash", "7d4b9c8f6")
        .owner("ReplicaSet", "web-7d4b9c8f6")
        .container("app", "nginx:1.27")
        .container_id("app", id)
        .container("sidecar", "envoy:1.30")
        .build()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SYNC;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Fixture {
    server: ApiServer,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Fixture {
    async fn new() -> Self {
        let server = ApiServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), server.ca_pem()).unwrap();
        std::fs::write(dir.path().join("token"), format!("{INITIAL_TOKEN}\n")).unwrap();
        server.upsert(apiserver::node(NODE, &[]));
        server.upsert(apiserver::namespace("shop", &[("team", "payments")], &[]));
        Self {
            server,
            dir,
            shutdown: CancellationToken::new(),
        }
    }

    async fn cache(&self) -> MetadataCache {
        let config = KubeConfig {
            enabled: Some(true),
            api_server_url: Some(self.server.url()),
            token_file: self.dir.path().join("token"),
            ca_file: self.dir.path().join("ca.crt"),
            node_name: NODE.into(),
            watch_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            ..KubeConfig::default()
        };
        let cache = MetadataCache::start(&config, &self.shutdown).await.unwrap();
        assert!(cache.wait_synced(SYNC).await, "{:?}", cache.stats());
        cache
    }

    /// A cgroup v2 tree with the pod's container (as containerd's systemd layout names
    /// it) and a host service, plus kubelet's pod log directory; their cgroup ids.
    fn cgroups(&self, id: &str) -> (Attribution, u64, u64) {
        let root = self.dir.path().join("cgroup");
        let pod = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        );
        let ctr = root.join(&pod).join(format!("cri-containerd-{id}.scope"));
        let host = root.join("system.slice/kubelet.service");
        for d in [&ctr, &host] {
            std::fs::create_dir_all(d).unwrap();
        }
        let pods = self.dir.path().join("pods");
        std::fs::create_dir_all(pods.join(format!("shop_{POD}_{UID}/app"))).unwrap();
        let containers = self.dir.path().join("containers");
        std::fs::create_dir_all(&containers).unwrap();
        std::fs::write(containers.join(format!("{POD}_shop_app-{id}.log")), "").unwrap();
        let mut attribution = Attribution::new(
            AttributionSources {
                cgroup_root: Some(root),
                pods_dir: pods,
                containers_dir: containers,
            },
            Duration::ZERO,
        );
        assert!(attribution.refresh());
        let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        (attribution, ino(&ctr), ino(&host))
    }
}

#[tokio::test]
async fn containers_are_found_by_runtime_id_and_follow_restarts() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod("web", ID));
    let cache = f.cache().await;
    let found = ContainerLookup::container(&cache, ID).expect("by its containerd id");
    assert_eq!(
        (
            found.namespace.as_str(),
            found.pod.as_str(),
            found.pod_uid.as_str(),
            found.container.as_str()
        ),
        ("shop", POD, UID, "app")
    );
    let m = &found.metadata;
    assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
    let workload = m.workload.as_ref().expect("resolved workload");
    assert_eq!(
        (workload.kind.as_str(), workload.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(m.field("container.image.name"), Some("nginx:1.27"));
    assert_eq!(m.field("container.id"), Some(ID));
    assert_eq!(
        m.namespace_labels.get("team").map(String::as_str),
        Some("payments")
    );
    // The sidecar has the fake's own id; its lookup names it, not `app`.
    let sidecar = cache.pod("0a1b2c3d-4e5f-6789-abcd-ef0123456789").unwrap();
    let sidecar_id = sidecar.pod.containers[1]
        .runtime_id()
        .unwrap()
        .1
        .to_string();
    assert_eq!(
        ContainerLookup::container(&cache, &sidecar_id)
            .unwrap()
            .container,
        "sidecar"
    );
    assert!(ContainerLookup::container(&cache, RESTARTED).is_none());
    assert!(ContainerLookup::container(&cache, &format!("containerd://{ID}")).is_none());

    // The container restarts: the new id is found, the old one is not.
    let generation = ContainerLookup::generation(&cache);
    f.server.upsert(web_pod("web", RESTARTED));
    eventually("the restarted container", || {
        ContainerLookup::container(&cache, RESTARTED).is_some()
    })
    .await;
    assert!(ContainerLookup::container(&cache, ID).is_none());
    assert_ne!(ContainerLookup::generation(&cache), generation);

    // The pod goes: still found while retained (its processes may still be exiting).
    f.server.delete(apiserver::Kind::Pod, "shop", POD);
    eventually("deletion seen", || cache.is_deleted(UID) == Some(true)).await;
    assert!(ContainerLookup::container(&cache, RESTARTED).is_some());
}

fn labels_of(set: MetricSet) -> Vec<(BTreeMap<String, String>, f64)> {
    set.into_families()
        .into_iter()
        .filter(|f| f.name() == "node_agent_syscalls_total")
        .flat_map(|f| f.get_metric().to_vec())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            (labels, m.get_counter().get_value())
        })
        .collect()
}

fn value(all: &[(BTreeMap<String, String>, f64)], want: &[(&str, &str)]) -> Option<f64> {
    all.iter()
        .find(|(l, _)| {
            l.len() == want.len()
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
}

#[tokio::test]
async fn syscall_series_get_the_configured_kube_labels_from_the_cache() {
    let f = Fixture::new().await;
    let (attribution, ctr, host) = f.cgroups(ID);
    let config: SyscallsConfig = serde_yaml_ng::from_str(
        "kube_labels:\n  app: \"label:app\"\n  workload: workload\n  image: \"metadata:container.image.name\"\n",
    )
    .unwrap();
    // As the agent wires it: the collector's slot, filled when this pod leads.
    let slot = Arc::new(ContainerLookupSlot::default());
    let mut kube = KubeLabels::new(&config.kube_labels, slot.clone() as SharedContainerLookup);
    let names = kube.names().to_vec();
    let mut admission = Admission::new(config.max_series);
    let mut scrape = |kube: &mut KubeLabels, n: u64| {
        let series = series::aggregate(
            [(ctr, 39, n), (host, 39, 1)],
            &attribution,
            kube,
            &mut admission,
        );
        let mut set = MetricSet::new();
        series::emit(&series, &names, &mut set);
        labels_of(set)
    };
    let syscall = node_agent::syscalls::names::syscall_name(39).unwrap_or("39");

    // No cache yet (a standby, or before the first list): the labels are empty.
    let all = scrape(&mut kube, 5);
    let container = |app: &str, workload: &str, image: &str| {
        [
            ("syscall", syscall),
            ("namespace", "shop"),
            ("pod", POD),
            ("container", "app"),
            ("app", app),
            ("workload", workload),
            ("image", image),
        ]
        .map(|(k, v)| (k, v.to_string()))
    };
    let find = |all: &[(BTreeMap<String, String>, f64)], want: &[(&str, String)]| {
        let want: Vec<(&str, &str)> = want.iter().map(|(k, v)| (*k, v.as_str())).collect();
        value(all, &want)
    };
    assert_eq!(find(&all, &container("", "", "")), Some(5.0), "{all:?}");

    f.server.upsert(web_pod("web", ID));
    let cache = f.cache().await;
    slot.set(Some(Arc::new(cache.clone())));
    let all = scrape(&mut kube, 6);
    assert_eq!(
        find(&all, &container("web", "web", "nginx:1.27")),
        Some(6.0),
        "{all:?}"
    );
    assert_eq!(
        value(
            &all,
            &[
                ("syscall", syscall),
                ("namespace", ""),
                ("pod", ""),
                ("container", ""),
                ("app", ""),
                ("workload", ""),
                ("image", "")
            ]
        ),
        Some(1.0),
        "host series: the labels empty"
    );

    // A label change in the API server reaches the series (a new series, as in
    // Prometheus a changed label always is).
    f.server.upsert(web_pod("web-v2", ID));
    eventually("the new label", || {
        cache
            .pod(UID)
            .is_some_and(|p| p.pod.labels.get("app") == Some("web-v2"))
    })
    .await;
    let all = scrape(&mut kube, 7);
    assert_eq!(
        find(&all, &container("web-v2", "web", "nginx:1.27")),
        Some(7.0)
    );
    assert_eq!(find(&all, &container("web", "web", "nginx:1.27")), None);

    // Under the cap: one series admitted, the rest in `other` with `other` labels.
    let mut kube = KubeLabels::new(&config.kube_labels, Arc::new(cache.clone()));
    let mut small = Admission::new(1);
    let series = series::aggregate(
        [(host, 0, 1), (ctr, 0, 2), (ctr, 1, 3)],
        &attribution,
        &mut kube,
        &mut small,
    );
    let mut set = MetricSet::new();
    series::emit(&series, &names, &mut set);
    let all = labels_of(set);
    assert_eq!(
        value(
            &all,
            &[
                ("syscall", OTHER),
                ("namespace", OTHER),
                ("pod", OTHER),
                ("container", OTHER),
                ("app", OTHER),
                ("workload", OTHER),
                ("image", OTHER)
            ]
        ),
        Some(5.0),
        "{all:?}"
    );
}

#[tokio::test]
async fn security_rules_see_the_containers_image_pod_and_workload() {
    let f = Fixture::new().await;
    let cache = f.cache().await;
    let metadata = KubeMetadata::new(Arc::new(cache.clone()));
    assert!(
        metadata.lookup(ID).is_none(),
        "not known yet: empty, not waiting"
    );
    f.server.upsert(web_pod("web", ID));
    eventually("the pod", || metadata.lookup(ID).is_some()).await;
    let info = metadata.lookup(ID).unwrap();
    assert_eq!(info.name.as_deref(), Some("app"));
    assert_eq!(info.image.as_deref(), Some("nginx:1.27"));
    assert_eq!(info.image_repository.as_deref(), Some("nginx"));
    assert_eq!(info.image_tag.as_deref(), Some("1.27"));
    assert!(
        info.image_digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let pod = info.k8s.as_ref().unwrap();
    assert_eq!(
        (pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str()),
        ("shop", POD, UID)
    );
    assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(
        pod.workload,
        Some(("Deployment".to_string(), "web".to_string()))
    );
}
