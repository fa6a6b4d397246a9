//! The background tasks that feed the store: one kube-runtime watcher per watched
//! resource (pods of this node, namespaces), a GET loop for this node, and the sweeper
//! of deleted pods.
//!
//! kube-runtime's watcher lists (paged by `limit`/`continue`), then watches from the
//! list's resourceVersion with bookmarks, resumes from the last resourceVersion when a
//! watch ends (the server's `timeoutSeconds`, or no event for that plus 5 s: a hung
//! stream), and re-lists on 410 Gone. We add the backoff with jitter between errors
//! (see [`drive`]) and apply its events to our store instead of its reflector (which would keep every
//! full object; we keep only the filtered metadata).

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::GetParams;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event, ExponentialBackoff, ListSemantic};
use tokio_util::sync::CancellationToken;

use crate::config::KubeConfig;
use crate::health::{ErrorKind, Health, Resource};
use crate::metadata::{Dropped, Extractor};
use crate::objects::{MetadataOnly, PodObject};
use crate::store::Store;

/// What the tasks share with the cache handle.
#[derive(Debug)]
pub(crate) struct Feed {
    pub store: Arc<Store>,
    pub health: Arc<Health>,
    pub extractor: Extractor,
    pub values_dropped: AtomicU64,
}

impl Feed {
    fn count_dropped(&self, dropped: Dropped) {
        if dropped.0 > 0 {
            self.values_dropped.fetch_add(dropped.0, Ordering::Relaxed);
        }
    }
}

/// Exponential backoff with jitter (each delay stretched by a random 0–100 %, from a
/// per-process seed, so 5,000 agents do not retry in step).
pub(crate) fn backoff(config: &KubeConfig) -> ExponentialBackoff {
    ExponentialBackoff::from(
        backon::ExponentialBuilder::default()
            .with_min_delay(config.backoff_initial)
            .with_max_delay(config.backoff_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times(),
    )
}

fn watcher_config(config: &KubeConfig) -> watcher::Config {
    let timeout = u32::try_from(config.watch_timeout.as_secs())
        .unwrap_or(u32::MAX)
        .max(1);
    let mut wc = watcher::Config::default()
        .timeout(timeout)
        .page_size(config.list_page_size);
    if config.use_apiserver_cache {
        // resourceVersion=0: the watch cache answers, whole (it ignores `limit`, and kube
        // leaves resourceVersion=0 out when a limit is set).
        wc = wc.list_semantic(ListSemantic::Any);
        wc.page_size = None;
    }
    wc
}

/// Starts every task on the current runtime; they end when `shutdown` is cancelled.
pub(crate) fn spawn(
    client: kube::Client,
    config: &KubeConfig,
    feed: Arc<Feed>,
    shutdown: &CancellationToken,
) {
    let node = config.node_name.clone();

    let pods: Api<PodObject> = Api::all(client.clone());
    let wc = watcher_config(config).fields(&format!("spec.nodeName={node}"));
    tokio::spawn(drive(
        watcher::watcher(pods, wc),
        Resource::Pods,
        backoff(config),
        Arc::clone(&feed),
        shutdown.clone(),
        apply_pod,
    ));

    // Metadata-only: labels and annotations are all we keep of a namespace.
    let namespaces: Api<MetadataOnly<Namespace>> = Api::all(client.clone());
    tokio::spawn(drive(
        watcher::watcher(namespaces, watcher_config(config)),
        Resource::Namespaces,
        backoff(config),
        Arc::clone(&feed),
        shutdown.clone(),
        apply_namespace,
    ));

    let nodes: Api<MetadataOnly<Node>> = Api::all(client);
    tokio::spawn(poll_node(
        nodes,
        node,
        config.node_refresh_interval,
        backoff(config),
        Arc::clone(&feed),
        shutdown.clone(),
    ));

    let every =
        (config.deleted_pod_retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    tokio::spawn(sweep(feed, every, shutdown.clone()));
}

/// Runs one watcher: events into `apply`, errors counted (then backoff), until shutdown.
async fn drive<K>(
    stream: impl Stream<Item = watcher::Result<Event<K>>> + Send,
    resource: Resource,
    mut backoff: ExponentialBackoff,
    feed: Arc<Feed>,
    shutdown: CancellationToken,
    apply: fn(&Feed, Event<K>),
) {
    // Not kube's `StreamBackoff`: it resets on every `Ok` item, and the watcher yields
    // `Ok(Init)` at each list attempt, so while lists fail the delay never grows. We
    // reset only after real progress: a finished list, an event, or a watch the
    // server accepted (the resource was synced when the error came).
    let mut stream = pin!(stream);
    loop {
        let next = tokio::select! {
            () = shutdown.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(event)) => {
                let (started, done, live) = match &event {
                    Event::Init => (true, false, false),
                    Event::InitDone => (false, true, false),
                    Event::InitApply(_) => (false, false, false),
                    Event::Apply(_) | Event::Delete(_) => (false, false, true),
                };
                if started {
                    feed.health.list_started(resource);
                }
                apply(&feed, event);
                if done {
                    feed.health.synced(resource);
                    tracing::debug!(resource = resource.as_str(), "kubernetes metadata listed");
                }
                if live {
                    feed.health.event(resource);
                }
            }
            Some(Err(error)) => {
                let kind = ErrorKind::from_watcher(&error);
                if kind == ErrorKind::Gone {
                    tracing::info!(
                        resource = resource.as_str(),
                        "watch too old (410 Gone): re-listing"
                    );
                } else {
                    tracing::warn!(resource = resource.as_str(), kind = kind.as_str(), %error, "kubernetes watch failed; retrying");
                }
                if feed.health.state(resource).is_synced() {
                    backoff.reset();
                }
                feed.health.error(resource, kind, error.to_string());
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            None => return,
        }
    }
}

fn apply_pod(feed: &Feed, event: Event<PodObject>) {
    let now = Instant::now();
    let mut dropped = Dropped::default();
    match event {
        Event::Init => feed.store.begin_pod_list(),
        Event::InitDone => feed.store.end_pod_list(now),
        Event::InitApply(pod) | Event::Apply(pod) => {
            if let Some(info) = feed.extractor.pod(&pod, &mut dropped) {
                feed.store.apply_pod(info, false, now);
            }
        }
        Event::Delete(pod) => match feed.extractor.pod(&pod, &mut dropped) {
            Some(info) => feed.store.apply_pod(info, true, now),
            None => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    feed.store.delete_pod(uid, now);
                }
            }
        },
    }
    feed.count_dropped(dropped);
}

fn apply_namespace(feed: &Feed, event: Event<MetadataOnly<Namespace>>) {
    let mut dropped = Dropped::default();
    match event {
        Event::Init => feed.store.begin_namespace_list(),
        Event::InitDone => feed.store.end_namespace_list(),
        Event::InitApply(ns) | Event::Apply(ns) => {
            if let Some(meta) = feed.extractor.namespace(&ns.metadata, &mut dropped) {
                feed.store.apply_namespace(meta);
            }
        }
        Event::Delete(ns) => {
            if let Some(name) = ns.metadata.name.as_deref() {
                feed.store.delete_namespace(name);
            }
        }
    }
    feed.count_dropped(dropped);
}

/// This node's labels: a metadata-only GET from the watch cache (`resourceVersion=0`),
/// every `interval`, sooner (with backoff) after an error.
async fn poll_node(
    api: Api<MetadataOnly<Node>>,
    name: String,
    interval: Duration,
    mut backoff: ExponentialBackoff,
    feed: Arc<Feed>,
    shutdown: CancellationToken,
) {
    loop {
        let delay = match api.get_with(&name, &GetParams::any()).await {
            Ok(node) => {
                let mut dropped = Dropped::default();
                let meta = feed.extractor.node(&name, &node.metadata, &mut dropped);
                feed.count_dropped(dropped);
                feed.store.set_node(meta);
                feed.health.synced(Resource::Node);
                backoff.reset();
                interval
            }
            Err(error) => {
                let kind = ErrorKind::from_client(&error);
                tracing::warn!(node = %name, kind = kind.as_str(), %error, "reading this node's labels failed; retrying");
                feed.health.error(Resource::Node, kind, error.to_string());
                backoff.next().unwrap_or(interval)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn sweep(feed: Arc<Feed>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                feed.store.sweep(Instant::now());
            }
        }
    }
}
