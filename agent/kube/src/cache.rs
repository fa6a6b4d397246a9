//! [`MetadataCache`]: the handle callers use: lookups, leases, waits, health.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{self, StartError};
use crate::config::KubeConfig;
use crate::health::{CacheState, Health, Resource, ResourceStats};
use crate::metadata::{Extractor, NamespaceMetadata, NodeMetadata, PodMetadata};
use crate::store::{Store, StoreCounts};
use crate::watch::{self, Feed};

/// Why [`MetadataCache::wait_for_pod`] returned without the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    #[error("the pod did not appear in the metadata cache in time")]
    Timeout,
    #[error("too many callers are waiting for pods already")]
    TooManyWaiters,
}

/// Everything the cache counts, for the caller's metrics and health endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub pods: ResourceStats,
    pub namespaces: ResourceStats,
    pub node: ResourceStats,
    /// Objects cached now.
    pub cached: StoreCounts,
    /// Label/annotation values dropped for exceeding `max_value_bytes`.
    pub values_dropped: u64,
    /// Pods or namespaces not cached because `max_pods`/`max_namespaces` was reached.
    pub over_capacity: u64,
    /// Callers in `wait_for_pod` now.
    pub waiting: usize,
    /// Waits that ended with the pod / with a timeout / refused (too many waiters).
    pub waits_found: u64,
    pub waits_timed_out: u64,
    pub waits_refused: u64,
}

impl Stats {
    pub fn resource(&self, r: Resource) -> &ResourceStats {
        match r {
            Resource::Pods => &self.pods,
            Resource::Namespaces => &self.namespaces,
            Resource::Node => &self.node,
        }
    }
}

#[derive(Debug)]
struct Shared {
    feed: Arc<Feed>,
    waiters: Semaphore,
    max_waiters: usize,
    waits_found: AtomicU64,
    waits_timed_out: AtomicU64,
    waits_refused: AtomicU64,
}

/// The node-scoped Kubernetes metadata cache. Cheap to clone; every clone sees the same
/// cache. Lookups never touch the network.
#[derive(Debug, Clone)]
pub struct MetadataCache {
    shared: Arc<Shared>,
}

impl MetadataCache {
    /// Validates `config`, builds the client and starts the list/watch tasks on the
    /// current tokio runtime; returns at once (see [`Self::state`] and
    /// [`Self::wait_synced`]). The tasks run until `shutdown` is cancelled. Call it only
    /// when [`KubeConfig::is_enabled`].
    ///
    /// An API server that is down is not an error here: lookups miss until it is back.
    pub async fn start(
        config: &KubeConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartError> {
        config.validate()?;
        if config.node_name.trim().is_empty() {
            return Err(StartError::NoNodeName);
        }
        let extractor = Extractor::new(config).map_err(|e| {
            // validate() compiled every glob already; keep the error typed anyway.
            StartError::Config(crate::config::ConfigErrors(vec![
                crate::config::ConfigError {
                    path: crate::config::SECTION.into(),
                    message: e.to_string(),
                },
            ]))
        })?;
        let health = Arc::new(Health::default());
        let client = client::build(config, Arc::clone(&health)).await?;
        let feed = Arc::new(Feed {
            store: Arc::new(Store::new(
                config.deleted_pod_retention,
                config.max_pods,
                config.max_namespaces,
            )),
            health,
            extractor,
            values_dropped: AtomicU64::new(0),
        });
        watch::spawn(client, config, Arc::clone(&feed), shutdown);
        let max_waiters = config.max_waiters.min(Semaphore::MAX_PERMITS);
        Ok(Self {
            shared: Arc::new(Shared {
                feed,
                waiters: Semaphore::new(max_waiters),
                max_waiters,
                waits_found: AtomicU64::new(0),
                waits_timed_out: AtomicU64::new(0),
                waits_refused: AtomicU64::new(0),
            }),
        })
    }

    fn store(&self) -> &Store {
        &self.shared.feed.store
    }

    fn health(&self) -> &Health {
        &self.shared.feed.health
    }

    /// The pod with this uid (live, or deleted and still retained).
    pub fn pod(&self, uid: &str) -> Option<Arc<PodMetadata>> {
        self.store().pod(uid)
    }

    /// The newest pod of this name in this namespace.
    pub fn pod_by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodMetadata>> {
        self.store().pod_by_name(namespace, name)
    }

    /// The pod running the container with this runtime id (`status.containerStatuses[]
    /// .containerID` without its `containerd://` prefix): an index the store keeps, one
    /// hash lookup.
    pub fn pod_by_container(&self, id: &str) -> Option<Arc<PodMetadata>> {
        self.store().pod_by_container(id)
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<NamespaceMetadata>> {
        self.store().namespace(name)
    }

    pub fn node(&self) -> Option<Arc<NodeMetadata>> {
        self.store().node()
    }

    /// Changes whenever a lookup's answer may have changed (see
    /// [`node_agent_core::kube::PodLookup::generation`]).
    pub fn generation(&self) -> u64 {
        self.store().generation()
    }

    /// Whether the pod is known and was deleted (`None`: not known).
    pub fn is_deleted(&self, uid: &str) -> Option<bool> {
        self.store().is_deleted(uid)
    }

    /// The pod, waiting up to `timeout` for it to arrive (a log file can appear before
    /// the watch event of its pod). Wakes as soon as the pod is cached. At most
    /// `max_waiters` callers wait at once; more get [`WaitError::TooManyWaiters`] at once,
    /// so a burst of unknown pods costs bounded memory and time.
    pub async fn wait_for_pod(
        &self,
        uid: &str,
        timeout: Duration,
    ) -> Result<Arc<PodMetadata>, WaitError> {
        if let Some(pod) = self.pod(uid) {
            return Ok(pod);
        }
        let shared = &self.shared;
        let Ok(_permit) = shared.waiters.try_acquire() else {
            shared.waits_refused.fetch_add(1, Ordering::Relaxed);
            return Err(WaitError::TooManyWaiters);
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut added = self.store().subscribe_pods();
        loop {
            // Subscribed before looking, so an arrival in between is not missed.
            if let Some(pod) = self.pod(uid) {
                shared.waits_found.fetch_add(1, Ordering::Relaxed);
                return Ok(pod);
            }
            match tokio::time::timeout_at(deadline, added.changed()).await {
                Ok(Ok(())) => {}
                // The store lives as long as `self`: its sender cannot be gone.
                Ok(Err(_)) | Err(_) => {
                    shared.waits_timed_out.fetch_add(1, Ordering::Relaxed);
                    return Err(WaitError::Timeout);
                }
            }
        }
    }

    /// Keeps this pod's metadata after the pod is deleted, for as long as the lease
    /// lives (then for `deleted_pod_retention`). Take one per file being read; a lease
    /// may be taken before the pod is known.
    pub fn lease(&self, uid: &str) -> PodLease {
        self.store().lease(uid);
        PodLease {
            cache: self.clone(),
            uid: uid.into(),
        }
    }

    /// The whole cache's state: never synced while any part never was, stale while any
    /// part is.
    pub fn state(&self) -> CacheState {
        self.health().overall()
    }

    pub fn resource_state(&self, resource: Resource) -> CacheState {
        self.health().state(resource)
    }

    /// Waits until every part has synced once; false on timeout.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.health().subscribe();
        loop {
            if self.state().is_synced() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return self.state().is_synced(),
            }
        }
    }

    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        let feed = &shared.feed;
        Stats {
            pods: feed.health.stats(Resource::Pods),
            namespaces: feed.health.stats(Resource::Namespaces),
            node: feed.health.stats(Resource::Node),
            cached: feed.store.counts(),
            values_dropped: feed.values_dropped.load(Ordering::Relaxed),
            over_capacity: feed.store.over_capacity(),
            waiting: shared
                .max_waiters
                .saturating_sub(shared.waiters.available_permits()),
            waits_found: shared.waits_found.load(Ordering::Relaxed),
            waits_timed_out: shared.waits_timed_out.load(Ordering::Relaxed),
            waits_refused: shared.waits_refused.load(Ordering::Relaxed),
        }
    }

    /// Approximate heap bytes of the cached metadata (for the benchmark).
    pub fn heap_bytes(&self) -> usize {
        self.store().heap_bytes()
    }
}

/// Pins a pod's metadata in the cache (see [`MetadataCache::lease`]); released on drop.
#[derive(Debug)]
pub struct PodLease {
    cache: MetadataCache,
    uid: Box<str>,
}

impl PodLease {
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The pod's current metadata (it follows label changes while the file is read).
    pub fn metadata(&self) -> Option<Arc<PodMetadata>> {
        self.cache.pod(&self.uid)
    }
}

impl Drop for PodLease {
    fn drop(&mut self) {
        self.cache.store().release(&self.uid, Instant::now());
    }
}
