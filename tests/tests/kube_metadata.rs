//! The Kubernetes metadata cache (agent/kube) against the fake API server
//! (tests/src/receivers/apiserver.rs): enriched lookups, late and deleted pods, the API
//! server down at start and mid-run, 410 re-lists, token rotation, hung watches and
//! lists, chunked lists, exclusion annotations, kubeconfig with its own CA.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_agent_kube::{
    CacheState, ContainerKind, ErrorKind, KubeConfig, MetadataCache, PodMetadata, Resource,
    StartError, WaitError, WorkloadKind,
};
use node_agent_tests::receivers::apiserver::{
    self, ApiServer, INITIAL_TOKEN, Kind, PodBuilder, Verb,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NODE: &str = "node-1";
const SYNC: Duration = Duration::from_secs(10);

/// A fake server, the in-cluster files pointing at it, and a running cache.
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
        server.upsert(apiserver::node(
            NODE,
            &[
                ("kubernetes.io/arch", "amd64"),
                ("topology.kubernetes.io/zone", "eu-1a"),
                ("feature.node.kubernetes.io/cpu-avx", "true"),
            ],
        ));
        server.upsert(apiserver::namespace(
            "shop",
            &[("team", "payments")],
            &[("owner", "alice")],
        ));
        Self {
            server,
            dir,
            shutdown: CancellationToken::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// In-cluster config at the fake, with test-sized timeouts.
    fn config(&self) -> KubeConfig {
        KubeConfig {
            enabled: Some(true),
            api_server_url: Some(self.server.url()),
            token_file: self.path("token"),
            ca_file: self.path("ca.crt"),
            node_name: NODE.into(),
            watch_timeout: Duration::from_secs(2),
            node_refresh_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(400),
            connect_timeout: Duration::from_secs(2),
            ..KubeConfig::default()
        }
    }

    async fn start(&self, config: &KubeConfig) -> MetadataCache {
        MetadataCache::start(config, &self.shutdown).await.unwrap()
    }

    async fn start_synced(&self, config: &KubeConfig) -> MetadataCache {
        let cache = self.start(config).await;
        assert!(
            cache.wait_synced(SYNC).await,
            "not synced: {:?}",
            cache.stats()
        );
        cache
    }

    /// Replaces the token file the way kubelet does (a new file renamed over it).
    fn write_token(&self, token: &str) {
        let next = self.path("token.next");
        std::fs::write(&next, token).unwrap();
        std::fs::rename(&next, self.path("token")).unwrap();
    }
}

fn web_pod(uid: &str) -> PodBuilder {
    PodBuilder::new("shop", &format!("web-7d4b9c8f6-{uid}"), uid, NODE)
        .label("app", "web")
        .label("pod-template-hash", "7d4b9c8f6")
        .owner("ReplicaSet", "web-7d4b9c8f6")
        .container("app", "nginx:1.27")
}

/// Polls `check` until it is true or `timeout` passes.
async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn label<'a>(pod: &'a PodMetadata, key: &str) -> Option<&'a str> {
    pod.pod.labels.get(key)
}

#[tokio::test]
async fn lookups_return_enriched_metadata() {
    let f = Fixture::new().await;
    f.server.upsert(
        web_pod("u-web")
            .annotation("team", "checkout")
            .annotation(
                "kubectl.kubernetes.io/last-applied-configuration",
                "{\"big\":true}",
            )
            .init_container("migrate", "migrate:3")
            .waiting_container("sidecar", "envoy:1.30")
            .ephemeral_container("debugger", "busybox:1.36")
            .build(),
    );
    f.server.upsert(
        PodBuilder::new("shop", "db-0", "u-db", NODE)
            .owner("StatefulSet", "db")
            .container("postgres", "postgres:17")
            .build(),
    );
    f.server.upsert(
        PodBuilder::new("shop", "backup-29012345-x7k2p", "u-cron", NODE)
            .owner("Job", "backup-29012345")
            .container("backup", "backup:1")
            .build(),
    );
    f.server.upsert(
        PodBuilder::new("shop", "agent-abcde", "u-ds", NODE)
            .owner("DaemonSet", "agent")
            .container("agent", "agent:1")
            .build(),
    );
    f.server.upsert(
        PodBuilder::new("shop", "bare", "u-bare", NODE)
            .container("c", "alpine:3")
            .build(),
    );
    f.server.upsert(
        PodBuilder::new("shop", "elsewhere", "u-other", "node-2")
            .container("c", "alpine:3")
            .build(),
    );

    let cache = f.start_synced(&f.config()).await;
    let pod = cache.pod("u-web").expect("the web pod");
    assert_eq!(&*pod.pod.name, "web-7d4b9c8f6-u-web");
    assert_eq!(&*pod.pod.namespace, "shop");
    assert_eq!(label(&pod, "app"), Some("web"));
    assert_eq!(pod.pod.annotations.get("team"), Some("checkout"));
    assert_eq!(
        pod.pod
            .annotations
            .get("kubectl.kubernetes.io/last-applied-configuration"),
        None,
        "excluded by default"
    );
    let workload = pod.pod.workload.as_ref().unwrap();
    assert_eq!(
        (&workload.kind, &*workload.name),
        (&WorkloadKind::Deployment, "web")
    );
    assert_eq!(
        pod.pod.owner.as_ref().map(|o| &*o.name),
        Some("web-7d4b9c8f6")
    );
    let app = pod.container("app").unwrap();
    assert_eq!(app.kind, ContainerKind::Regular);
    assert_eq!(app.image.as_deref(), Some("nginx:1.27"));
    assert!(
        app.image_id
            .as_deref()
            .is_some_and(|id| id.starts_with("nginx:1.27@sha256:"))
    );
    assert!(
        app.runtime_id()
            .is_some_and(|(runtime, _)| runtime == "containerd")
    );
    assert_eq!(pod.container("migrate").unwrap().kind, ContainerKind::Init);
    assert_eq!(
        pod.container("debugger").unwrap().kind,
        ContainerKind::Ephemeral
    );
    let sidecar = pod.container("sidecar").unwrap();
    assert_eq!(
        (sidecar.image.as_deref(), sidecar.container_id.as_deref()),
        (Some("envoy:1.30"), None)
    );
    let ns = pod.namespace.as_ref().expect("namespace metadata");
    assert_eq!(ns.labels.get("team"), Some("payments"));
    assert!(
        ns.annotations.is_empty(),
        "namespace annotations are off by default"
    );
    let node = pod.node.as_ref().expect("node metadata");
    assert_eq!(
        node.labels.get("topology.kubernetes.io/zone"),
        Some("eu-1a")
    );
    assert_eq!(
        node.labels.get("feature.node.kubernetes.io/cpu-avx"),
        None,
        "not a selected node label"
    );

    let kind = |uid: &str| {
        cache.pod(uid).and_then(|p| {
            p.pod
                .workload
                .as_ref()
                .map(|w| (w.kind.as_str().to_string(), w.name.to_string()))
        })
    };
    assert_eq!(kind("u-db"), Some(("StatefulSet".into(), "db".into())));
    assert_eq!(kind("u-cron"), Some(("CronJob".into(), "backup".into())));
    assert_eq!(kind("u-ds"), Some(("DaemonSet".into(), "agent".into())));
    assert_eq!(kind("u-bare"), None);
    assert!(cache.pod("u-other").is_none(), "another node's pod");
    let by_name = cache.pod_by_name("shop", "db-0").unwrap();
    assert!(Arc::ptr_eq(&by_name, &cache.pod("u-db").unwrap()));

    // What went over the wire: node-scoped list and watch with bookmarks, a metadata GET.
    eventually(SYNC, "the pod watch", || {
        f.server.count(Kind::Pod, Verb::Watch) >= 1
    })
    .await;
    let requests = f.server.requests();
    let pod_list = requests
        .iter()
        .find(|r| r.kind == Some(Kind::Pod) && r.verb == Verb::List)
        .unwrap();
    assert_eq!(
        pod_list.param("fieldSelector").as_deref(),
        Some("spec.nodeName=node-1")
    );
    assert_eq!(
        pod_list.param("resourceVersion").as_deref(),
        Some("0"),
        "served from the watch cache"
    );
    let pod_watch = requests
        .iter()
        .find(|r| r.kind == Some(Kind::Pod) && r.verb == Verb::Watch)
        .unwrap();
    assert_eq!(
        pod_watch.param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(
        pod_watch.param("fieldSelector").as_deref(),
        Some("spec.nodeName=node-1")
    );
    assert_eq!(pod_watch.param("timeoutSeconds").as_deref(), Some("2"));
    assert!(
        pod_watch
            .param("resourceVersion")
            .is_some_and(|rv| rv != "0")
    );
    let node_get = requests
        .iter()
        .find(|r| r.kind == Some(Kind::Node) && r.verb == Verb::Get)
        .unwrap();
    assert!(node_get.metadata_only);
    let namespace_requests = || requests.iter().filter(|r| r.kind == Some(Kind::Namespace));
    assert!(namespace_requests().count() >= 1);
    assert!(
        namespace_requests().all(|r| r.metadata_only),
        "namespaces are read metadata-only"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.kind == Some(Kind::Pod))
            .all(|r| !r.metadata_only)
    );
    assert_eq!(node_get.path, "/api/v1/nodes/node-1");
    assert!(
        requests
            .iter()
            .all(|r| r.token.as_deref() == Some(INITIAL_TOKEN))
    );

    let stats = cache.stats();
    assert_eq!(stats.cached.pods, 5);
    assert_eq!(stats.cached.namespaces, 1);
    assert!(stats.cached.node_known);
    assert!(cache.state().is_synced());
}

#[tokio::test]
async fn changes_to_pods_namespaces_and_the_node_are_followed() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod("u1").build());
    let cache = f.start_synced(&f.config()).await;
    let before = cache.pod("u1").unwrap();
    f.server
        .upsert(web_pod("u1").label("app", "web-v2").build());
    eventually(SYNC, "new label", || {
        cache
            .pod("u1")
            .is_some_and(|p| label(&p, "app") == Some("web-v2"))
    })
    .await;
    assert_eq!(
        label(&before, "app"),
        Some("web"),
        "a held snapshot does not change"
    );
    f.server
        .upsert(apiserver::namespace("shop", &[("team", "logistics")], &[]));
    eventually(SYNC, "namespace label", || {
        cache.pod("u1").is_some_and(|p| {
            p.namespace
                .as_ref()
                .is_some_and(|n| n.labels.get("team") == Some("logistics"))
        })
    })
    .await;
    f.server.upsert(apiserver::node(
        NODE,
        &[("topology.kubernetes.io/zone", "eu-1b")],
    ));
    eventually(SYNC, "node label", || {
        cache.pod("u1").is_some_and(|p| {
            p.node
                .as_ref()
                .is_some_and(|n| n.labels.get("topology.kubernetes.io/zone") == Some("eu-1b"))
        })
    })
    .await;
    // A pod scheduled later appears once bound to this node; one bound elsewhere never.
    f.server
        .upsert(PodBuilder::new("shop", "late", "u-late", "").build());
    f.server
        .upsert(PodBuilder::new("shop", "other", "u-other", "node-2").build());
    f.server.upsert(
        PodBuilder::new("shop", "late", "u-late", NODE)
            .container("c", "alpine:3")
            .build(),
    );
    eventually(SYNC, "bound pod", || cache.pod("u-late").is_some()).await;
    assert!(cache.pod("u-other").is_none());
}

#[tokio::test]
async fn a_pod_created_after_its_first_lookup_wakes_the_waiter() {
    let f = Fixture::new().await;
    let config = KubeConfig {
        max_waiters: 2,
        ..f.config()
    };
    let cache = f.start_synced(&config).await;
    assert!(cache.pod("u-late").is_none());
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (
                cache.wait_for_pod("u-late", Duration::from_secs(20)).await,
                started.elapsed(),
            )
        })
    };
    eventually(SYNC, "one waiter", || cache.stats().waiting == 1).await;
    // Waiters are bounded: one more fits, the third is refused at once.
    let second = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .wait_for_pod("u-never", Duration::from_millis(300))
                .await
        })
    };
    eventually(SYNC, "two waiters", || cache.stats().waiting == 2).await;
    assert_eq!(
        cache
            .wait_for_pod("u-third", Duration::from_secs(5))
            .await
            .unwrap_err(),
        WaitError::TooManyWaiters
    );
    assert_eq!(second.await.unwrap().unwrap_err(), WaitError::Timeout);

    f.server.upsert(web_pod("u-late").build());
    let (found, waited) = waiter.await.unwrap();
    assert_eq!(&*found.unwrap().pod.uid, "u-late");
    assert!(
        waited < Duration::from_secs(15),
        "woke on arrival, not at the timeout: {waited:?}"
    );
    // Known pods answer at once.
    assert!(cache.wait_for_pod("u-late", Duration::ZERO).await.is_ok());
    let stats = cache.stats();
    assert_eq!(
        (
            stats.waits_found,
            stats.waits_timed_out,
            stats.waits_refused
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.waiting, 0);
}

#[tokio::test]
async fn a_deleted_pod_is_kept_while_leased_and_for_the_retention() {
    let f = Fixture::new().await;
    let config = KubeConfig {
        deleted_pod_retention: Duration::from_secs(1),
        ..f.config()
    };
    f.server.upsert(web_pod("u-leased").build());
    f.server.upsert(web_pod("u-free").build());
    let cache = f.start_synced(&config).await;
    let lease = cache.lease("u-leased");
    f.server.delete(Kind::Pod, "shop", "web-7d4b9c8f6-u-leased");
    f.server.delete(Kind::Pod, "shop", "web-7d4b9c8f6-u-free");
    eventually(SYNC, "both marked deleted", || {
        cache.is_deleted("u-leased") == Some(true) && cache.is_deleted("u-free") == Some(true)
    })
    .await;
    assert!(
        cache.pod("u-free").is_some(),
        "kept for the retention after deletion"
    );
    assert_eq!(cache.stats().cached.deleted_pods, 2);
    eventually(SYNC, "the unleased pod swept", || {
        cache.pod("u-free").is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        lease.metadata().map(|p| p.pod.uid.to_string()).as_deref(),
        Some("u-leased")
    );
    drop(lease);
    assert!(
        cache.pod("u-leased").is_some(),
        "retention restarts at release"
    );
    eventually(SYNC, "the released pod swept", || {
        cache.pod("u-leased").is_none()
    })
    .await;
    assert_eq!(cache.stats().cached.deleted_pods, 0);
}

#[tokio::test]
async fn api_server_down_at_start_then_up() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod("u1").build());
    f.server.set_down(true).await.unwrap();
    let cache = f.start(&f.config()).await;
    eventually(SYNC, "connection errors counted", || {
        cache.stats().pods.errors_of(ErrorKind::Transport) >= 2
    })
    .await;
    assert_eq!(cache.state(), CacheState::NeverSynced);
    assert!(cache.pod("u1").is_none());
    // Retries back off (50 ms doubling to 400 ms, with jitter): a handful per second,
    // not a busy loop.
    let before = cache.stats().pods.errors_total();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let retries = cache.stats().pods.errors_total() - before;
    assert!((2..=12).contains(&retries), "{retries} retries in 2 s");
    assert!(
        cache
            .wait_for_pod("u1", Duration::from_millis(200))
            .await
            .is_err(),
        "nothing blocks past the timeout"
    );
    f.server.set_down(false).await.unwrap();
    assert!(cache.wait_synced(SYNC).await);
    assert!(cache.pod("u1").is_some());
}

#[tokio::test]
async fn api_server_down_mid_run_serves_the_cache_then_resyncs() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod("u1").build());
    let cache = f.start_synced(&f.config()).await;
    let lists_before = f.server.count(Kind::Pod, Verb::List);
    f.server.set_down(true).await.unwrap();
    eventually(SYNC, "stale", || {
        matches!(
            cache.resource_state(Resource::Pods),
            CacheState::Stale { .. }
        )
    })
    .await;
    let CacheState::Stale { since } = cache.state() else {
        panic!("overall state should be stale: {:?}", cache.state());
    };
    assert!(since.elapsed().unwrap_or_default() < SYNC);
    assert!(cache.pod("u1").is_some(), "lookups answer from the cache");
    // The cluster moves on while we cannot see it.
    f.server
        .upsert(web_pod("u1").label("app", "changed").build());
    f.server.upsert(web_pod("u2").build());
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.server.set_down(false).await.unwrap();
    eventually(SYNC, "resumed", || {
        cache.pod("u2").is_some()
            && cache
                .pod("u1")
                .is_some_and(|p| label(&p, "app") == Some("changed"))
    })
    .await;
    eventually(SYNC, "synced again", || cache.state().is_synced()).await;
    let stats = cache.stats();
    assert!(stats.pods.errors_of(ErrorKind::Transport) >= 1, "{stats:?}");
    assert_eq!(
        stats.pods.relists, 0,
        "resumed from its resourceVersion, no re-list"
    );
    assert_eq!(f.server.count(Kind::Pod, Verb::List), lists_before);
}

#[tokio::test]
async fn bookmarks_move_the_resume_point() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod("u1").build());
    let cache = f.start_synced(&f.config()).await;
    // Changes that this node's watch filters out still advance the resourceVersion;
    // only bookmarks tell the watcher about them.
    for i in 0..5 {
        f.server.upsert(
            PodBuilder::new(
                "shop",
                &format!("elsewhere-{i}"),
                &format!("x{i}"),
                "node-2",
            )
            .build(),
        );
    }
    let latest = f.server.resource_version();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let watches_before = f.server.count(Kind::Pod, Verb::Watch);
    f.server.close_watches();
    eventually(SYNC, "a new watch", || {
        f.server.count(Kind::Pod, Verb::Watch) > watches_before
    })
    .await;
    let resumed = f
        .server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.kind == Some(Kind::Pod) && r.verb == Verb::Watch)
        .unwrap();
    let from: u64 = resumed.param("resourceVersion").unwrap().parse().unwrap();
    assert!(
        from >= latest,
        "resumed from {from}, the bookmarked version is {latest}"
    );
    assert_eq!(cache.stats().pods.relists, 0);
}

#[tokio::test]
async fn a_too_old_resource_version_relists() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod("u1").build());
    f.server.upsert(web_pod("u2").build());
    let cache = f.start_synced(&f.config()).await;
    let lists_before = f.server.count(Kind::Pod, Verb::List);
    f.server.set_down(true).await.unwrap();
    f.server.delete(Kind::Pod, "shop", "web-7d4b9c8f6-u1");
    f.server.upsert(web_pod("u3").build());
    f.server.compact();
    f.server.set_down(false).await.unwrap();
    eventually(SYNC, "re-listed", || {
        cache.pod("u3").is_some() && cache.is_deleted("u1") == Some(true)
    })
    .await;
    assert_eq!(cache.is_deleted("u2"), Some(false));
    eventually(SYNC, "synced again", || cache.state().is_synced()).await;
    let stats = cache.stats();
    assert!(stats.pods.errors_of(ErrorKind::Gone) >= 1, "{stats:?}");
    assert!(stats.pods.relists >= 1);
    assert!(f.server.count(Kind::Pod, Verb::List) > lists_before);
}

#[tokio::test]
async fn a_rotated_token_is_used_without_a_restart() {
    let f = Fixture::new().await;
    let cache = f.start_synced(&f.config()).await;
    f.server.rotate_token("token-2");
    f.server.close_watches();
    eventually(SYNC, "401 with the stale token", || {
        cache.stats().pods.errors_of(ErrorKind::Unauthorized) >= 1
    })
    .await;
    f.write_token("token-2\n");
    f.server.upsert(web_pod("u-after").build());
    eventually(SYNC, "pod seen with the new token", || {
        cache.pod("u-after").is_some()
    })
    .await;
    eventually(SYNC, "synced again", || cache.state().is_synced()).await;
    let last = f
        .server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.kind == Some(Kind::Pod))
        .unwrap();
    assert_eq!(last.token.as_deref(), Some("token-2"));
    assert_eq!(last.status, 200);
}

#[tokio::test]
async fn a_hung_watch_is_detected_and_restarted() {
    let f = Fixture::new().await;
    let config = KubeConfig {
        watch_timeout: Duration::from_secs(1),
        ..f.config()
    };
    let cache = f.start_synced(&config).await;
    // Silence every open watch: they stop at their next bookmark tick and never close.
    f.server.hang_watches(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let watches_before = f.server.count(Kind::Pod, Verb::Watch);
    f.server.hang_watches(false);
    f.server.upsert(web_pod("u-late").build());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        cache.pod("u-late").is_none(),
        "the hung stream cannot deliver it"
    );
    eventually(
        Duration::from_secs(15),
        "pod after the watch restart",
        || cache.pod("u-late").is_some(),
    )
    .await;
    assert!(f.server.count(Kind::Pod, Verb::Watch) > watches_before);
    assert!(cache.stats().pods.watch_requests as usize > watches_before - 1);
}

#[tokio::test]
async fn a_hung_list_is_abandoned_and_retried() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod("u1").build());
    f.server.hang_lists(true);
    let config = KubeConfig {
        watch_timeout: Duration::from_secs(1),
        ..f.config()
    };
    let cache = f.start(&config).await;
    eventually(Duration::from_secs(5), "a hung list", || {
        f.server.count(Kind::Pod, Verb::List) >= 1
    })
    .await;
    f.server.hang_lists(false);
    // The read timeout (watch_timeout + 10 s) abandons it; the retry succeeds.
    eventually(Duration::from_secs(25), "listed after the timeout", || {
        cache.pod("u1").is_some()
    })
    .await;
    assert!(cache.stats().pods.errors_of(ErrorKind::Transport) >= 1);
    assert!(f.server.count(Kind::Pod, Verb::List) >= 2);
}

#[tokio::test]
async fn lists_are_read_in_chunks() {
    let f = Fixture::new().await;
    for i in 0..7 {
        f.server.upsert(web_pod(&format!("u{i}")).build());
    }
    let config = KubeConfig {
        use_apiserver_cache: false,
        list_page_size: 3,
        ..f.config()
    };
    let cache = f.start_synced(&config).await;
    assert_eq!(cache.stats().cached.pods, 7);
    let lists: Vec<_> = f
        .server
        .requests()
        .into_iter()
        .filter(|r| r.kind == Some(Kind::Pod) && r.verb == Verb::List)
        .collect();
    assert_eq!(lists.len(), 3, "7 pods in pages of 3");
    assert!(
        lists
            .iter()
            .all(|r| r.param("limit").as_deref() == Some("3"))
    );
    assert_eq!(
        lists
            .iter()
            .filter(|r| r.param("continue").is_some())
            .count(),
        2
    );
    assert!(
        lists.iter().all(|r| r.param("resourceVersion").is_none()),
        "a consistent read"
    );
}

#[tokio::test]
async fn exclusion_and_hint_annotations() {
    let f = Fixture::new().await;
    f.server.upsert(apiserver::namespace(
        "quiet",
        &[],
        &[("node-agent.io/exclude", "true")],
    ));
    f.server.upsert(
        web_pod("u-excluded")
            .annotation("node-agent.io/exclude", "true")
            .build(),
    );
    f.server.upsert(
        web_pod("u-partial")
            .container("istio-proxy", "proxy:1")
            .annotation("node-agent.io/exclude-containers", "istio-proxy, linkerd")
            .annotation("node-agent.io/multiline", "java")
            .build(),
    );
    f.server.upsert(
        PodBuilder::new("quiet", "q", "u-quiet", NODE)
            .container("c", "alpine:3")
            .build(),
    );
    let config = KubeConfig {
        // The hints are read before the annotation filter.
        pod_annotations: node_agent_kube::KeyFilterConfig::none(),
        ..f.config()
    };
    let cache = f.start_synced(&config).await;
    let excluded = cache.pod("u-excluded").unwrap();
    assert!(excluded.is_excluded());
    assert!(excluded.is_container_excluded("app"));
    let partial = cache.pod("u-partial").unwrap();
    assert!(!partial.is_excluded());
    assert!(partial.is_container_excluded("istio-proxy"));
    assert!(!partial.is_container_excluded("app"));
    assert_eq!(partial.hint("multiline"), Some("java"));
    assert!(partial.pod.annotations.is_empty());
    eventually(SYNC, "namespace known", || {
        cache.pod("u-quiet").is_some_and(|p| p.namespace.is_some())
    })
    .await;
    assert!(
        cache.pod("u-quiet").unwrap().is_excluded(),
        "excluded by its namespace"
    );
}

#[tokio::test]
async fn a_kubeconfig_with_its_own_ca() {
    let f = Fixture::new().await;
    f.server.upsert(web_pod("u1").build());
    let kubeconfig = f.path("kubeconfig");
    f.server
        .write_kubeconfig(&kubeconfig, INITIAL_TOKEN)
        .unwrap();
    let config = KubeConfig {
        kubeconfig: Some(kubeconfig.clone()),
        api_server_url: None,
        token_file: f.path("absent"),
        ca_file: f.path("absent"),
        ..f.config()
    };
    let cache = f.start_synced(&config).await;
    assert!(cache.pod("u1").is_some());

    // The same server behind a CA we do not trust: TLS errors, never synced.
    let other = ApiServer::start().await.unwrap();
    let wrong = f.path("wrong-kubeconfig");
    f.server.write_kubeconfig(&wrong, INITIAL_TOKEN).unwrap();
    let text = std::fs::read_to_string(&wrong)
        .unwrap()
        .replace(&f.server.url(), &other.url());
    std::fs::write(&wrong, text).unwrap();
    let untrusted = f
        .start(&KubeConfig {
            kubeconfig: Some(wrong),
            ..config.clone()
        })
        .await;
    eventually(SYNC, "TLS failures", || {
        untrusted.stats().pods.errors_of(ErrorKind::Transport) >= 1
    })
    .await;
    assert_eq!(untrusted.state(), CacheState::NeverSynced);
    assert_eq!(
        other.count(Kind::Pod, Verb::List),
        0,
        "no request gets past the handshake"
    );

    let err = MetadataCache::start(
        &KubeConfig {
            kubeconfig: Some(f.path("missing-kubeconfig")),
            ..config
        },
        &f.shutdown,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StartError::Kubeconfig { .. }), "{err}");
}

#[tokio::test]
async fn broken_in_cluster_mounts_fail_at_start() {
    let f = Fixture::new().await;
    let missing_token = KubeConfig {
        token_file: f.path("missing"),
        ..f.config()
    };
    let err = MetadataCache::start(&missing_token, &f.shutdown)
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::TokenFile { .. }), "{err}");
    std::fs::write(f.path("empty.crt"), "not a certificate\n").unwrap();
    let bad_ca = KubeConfig {
        ca_file: f.path("empty.crt"),
        ..f.config()
    };
    let err = MetadataCache::start(&bad_ca, &f.shutdown)
        .await
        .unwrap_err();
    assert!(matches!(err, StartError::CaEmpty { .. }), "{err}");
    let no_node = KubeConfig {
        node_name: String::new(),
        ..f.config()
    };
    let err = MetadataCache::start(&no_node, &f.shutdown)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node_name"), "{err}");
}

/// The fake itself, spoken to directly: chunked lists, 410 on an expired continue
/// token and on a too-old watch, 401, 400 on an unknown field selector.
#[tokio::test]
async fn the_fake_speaks_the_api_protocol() {
    let f = Fixture::new().await;
    for i in 0..5 {
        f.server.upsert(web_pod(&format!("u{i}")).build());
    }
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(f.server.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let get = |path: String, token: &str| {
        client
            .get(format!("{}{path}", f.server.url()))
            .bearer_auth(token.to_string())
            .send()
    };

    let r = get("/api/v1/pods".into(), "stale").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(json_of(r).await["reason"], "Unauthorized");

    let r = get(
        "/api/v1/pods?fieldSelector=spec.bogus%3Dx".into(),
        INITIAL_TOKEN,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);

    let page = json_of(
        get("/api/v1/pods?limit=2".into(), INITIAL_TOKEN)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["kind"], "PodList");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(
        page["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );
    assert_eq!(page["metadata"]["remainingItemCount"], 3);
    let token = page["metadata"]["continue"].as_str().unwrap().to_string();
    let list_rv = page["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // A write between pages does not show: the pages are one snapshot.
    f.server.upsert(web_pod("u9").build());
    let next = json_of(
        get(
            format!("/api/v1/pods?limit=10&continue={token}"),
            INITIAL_TOKEN,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(next["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        next["metadata"]["resourceVersion"].as_str().unwrap(),
        list_rv
    );
    assert!(next["metadata"].get("continue").is_none());
    f.server.compact();
    let r = get(
        format!("/api/v1/pods?limit=2&continue={token}"),
        INITIAL_TOKEN,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 410);
    assert_eq!(json_of(r).await["reason"], "Expired");

    // A watch from before the compaction: one ERROR event with a 410 Status, then the end.
    let r = get(
        format!("/api/v1/pods?watch=true&resourceVersion={list_rv}"),
        INITIAL_TOKEN,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), r.text())
        .await
        .unwrap()
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);

    // A live watch: history replay, then events and bookmarks, ended by timeoutSeconds.
    let rv = f.server.resource_version();
    f.server
        .set_bookmark_interval(Some(Duration::from_millis(200)));
    let watch = get(
        format!("/api/v1/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1&fieldSelector=spec.nodeName%3Dnode-1"),
        INITIAL_TOKEN,
    )
    .await
    .unwrap();
    f.server.upsert(web_pod("u1").label("app", "v2").build());
    f.server.delete(Kind::Pod, "shop", "web-7d4b9c8f6-u2");
    f.server
        .upsert(PodBuilder::new("shop", "elsewhere", "ux", "node-2").build());
    let body = tokio::time::timeout(Duration::from_secs(5), watch.text())
        .await
        .unwrap()
        .unwrap();
    let types: Vec<String> = body
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let events: Vec<&String> = types.iter().filter(|t| *t != "BOOKMARK").collect();
    assert_eq!(events, ["MODIFIED", "DELETED"], "{body}");
    assert!(types.iter().any(|t| t == "BOOKMARK"), "{body}");
    let deleted: serde_json::Value =
        serde_json::from_str(body.lines().find(|l| l.contains("DELETED")).unwrap()).unwrap();
    assert_eq!(
        deleted["object"]["metadata"]["name"],
        json!("web-7d4b9c8f6-u2")
    );
}

async fn json_of(response: reqwest::Response) -> serde_json::Value {
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// The benchmark helper works (its figures are printed by the example, not asserted).
#[tokio::test]
async fn the_benchmark_helper_syncs_a_full_node() {
    let figures = node_agent_tests::kube_bench::run_in_process(None)
        .await
        .unwrap();
    assert_eq!(figures.pods, node_agent_tests::kube_bench::PODS);
    assert_eq!(figures.namespaces, 10);
    println!("{figures}");
}
