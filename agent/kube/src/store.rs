//! The in-memory index the watch tasks write and lookups read: pods by uid and by
//! namespace/name, namespaces by name, this node; deleted pods kept while leased and
//! for the retention period; re-list bookkeeping (objects missing from a new list
//! were deleted while we were not watching).
//!
//! One `RwLock`: lookups take it shared for a hash lookup and an `Arc` clone; writers
//! (watch events, a few per second at most on a node) take it briefly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use crate::metadata::{NamespaceMetadata, NodeMetadata, PodInfo, PodMetadata};

#[derive(Debug)]
struct PodEntry {
    view: Arc<PodMetadata>,
    deleted_at: Option<Instant>,
    /// When the last lease was dropped (after deletion), restarting the retention clock.
    released_at: Option<Instant>,
}

impl PodEntry {
    /// When a deleted, unleased entry may go.
    fn expires_at(&self, retention: Duration) -> Option<Instant> {
        let deleted = self.deleted_at?;
        let from = self.released_at.map_or(deleted, |r| r.max(deleted));
        Some(from + retention)
    }
}

#[derive(Debug, Default)]
struct Inner {
    pods: FxHashMap<Box<str>, PodEntry>,
    /// namespace → name → uid of the newest pod of that name.
    by_name: FxHashMap<Box<str>, FxHashMap<Box<str>, Box<str>>>,
    /// Runtime container id (without `containerd://`) → uid of the pod running it, for
    /// the syscall counters and security events (which know only a cgroup's container).
    by_container: FxHashMap<Box<str>, Box<str>>,
    namespaces: FxHashMap<Box<str>, Arc<NamespaceMetadata>>,
    node: Option<Arc<NodeMetadata>>,
    /// uid → live leases (a lease may precede the pod).
    leases: FxHashMap<Box<str>, usize>,
    /// uids seen since the current pod list began.
    pod_list: Option<FxHashSet<Box<str>>>,
    namespace_list: Option<FxHashSet<Box<str>>>,
}

impl Inner {
    fn view(&self, pod: Arc<PodInfo>) -> Arc<PodMetadata> {
        Arc::new(PodMetadata {
            namespace: self.namespaces.get(&*pod.namespace).cloned(),
            node: self.node.clone(),
            pod,
        })
    }

    fn leased(&self, uid: &str) -> bool {
        self.leases.contains_key(uid)
    }

    fn index_containers(&mut self, pod: &PodInfo) {
        for id in container_ids(pod) {
            self.by_container.insert(id.into(), pod.uid.clone());
        }
    }

    /// Removes `pod`'s ids, unless another pod claims one since (never in practice).
    fn unindex_containers(&mut self, pod: &PodInfo) {
        for id in container_ids(pod) {
            if self.by_container.get(id).is_some_and(|u| *u == pod.uid) {
                self.by_container.remove(id);
            }
        }
    }

    fn remove_pod(&mut self, uid: &str) {
        let Some(entry) = self.pods.remove(uid) else {
            return;
        };
        let pod = &entry.view.pod;
        self.unindex_containers(pod);
        if let Some(names) = self.by_name.get_mut(&*pod.namespace) {
            if names.get(&*pod.name).is_some_and(|u| **u == *uid) {
                names.remove(&*pod.name);
            }
            if names.is_empty() {
                self.by_name.remove(&*pod.namespace);
            }
        }
    }

    /// Drops the deleted, unleased pod deleted longest ago; false if there is none.
    fn evict_one_deleted(&mut self) -> bool {
        let oldest = self
            .pods
            .iter()
            .filter(|(uid, e)| e.deleted_at.is_some() && !self.leased(uid))
            .min_by_key(|(_, e)| e.deleted_at)
            .map(|(uid, _)| uid.clone());
        match oldest {
            Some(uid) => {
                self.remove_pod(&uid);
                true
            }
            None => false,
        }
    }
}

/// The runtime ids of a pod's containers that ran (`containerd://<id>` → `<id>`).
fn container_ids(pod: &PodInfo) -> impl Iterator<Item = &str> {
    pod.containers
        .iter()
        .filter_map(|c| c.runtime_id())
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

/// Figures of what the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Live pods.
    pub pods: usize,
    /// Deleted pods kept for their files (leased or within retention).
    pub deleted_pods: usize,
    pub namespaces: usize,
    pub node_known: bool,
    /// uids with at least one live lease.
    pub leased_pods: usize,
}

#[derive(Debug)]
pub(crate) struct Store {
    inner: RwLock<Inner>,
    /// Bumped when a pod uid appears (wakes `wait_for_pod`).
    pods_added: tokio::sync::watch::Sender<u64>,
    retention: Duration,
    max_pods: usize,
    max_namespaces: usize,
    over_capacity: AtomicU64,
    /// Bumped whenever a lookup's answer may change (a pod added or changed, a
    /// namespace's or the node's metadata changed): lets callers that memoize lookups
    /// re-check only then (see `core::kube::PodLookup::generation`).
    generation: AtomicU64,
}

impl Store {
    pub fn new(retention: Duration, max_pods: usize, max_namespaces: usize) -> Self {
        Self {
            inner: RwLock::default(),
            pods_added: tokio::sync::watch::Sender::new(0),
            retention,
            max_pods,
            max_namespaces,
            over_capacity: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    // A writer that panicked cannot leave the maps half-updated in a way lookups could
    // trip on (each update is a few map operations), so a poisoned lock is still usable.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn subscribe_pods(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pods_added.subscribe()
    }

    pub fn over_capacity(&self) -> u64 {
        self.over_capacity.load(Ordering::Relaxed)
    }

    // ---- lookups ----

    pub fn pod(&self, uid: &str) -> Option<Arc<PodMetadata>> {
        self.read().pods.get(uid).map(|e| Arc::clone(&e.view))
    }

    pub fn pod_by_name(&self, namespace: &str, name: &str) -> Option<Arc<PodMetadata>> {
        let inner = self.read();
        let uid = inner.by_name.get(namespace)?.get(name)?;
        inner.pods.get(uid).map(|e| Arc::clone(&e.view))
    }

    /// The pod running the container with this runtime id.
    pub fn pod_by_container(&self, id: &str) -> Option<Arc<PodMetadata>> {
        let inner = self.read();
        let uid = inner.by_container.get(id)?;
        inner.pods.get(uid).map(|e| Arc::clone(&e.view))
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<NamespaceMetadata>> {
        self.read().namespaces.get(name).cloned()
    }

    pub fn node(&self) -> Option<Arc<NodeMetadata>> {
        self.read().node.clone()
    }

    pub fn is_deleted(&self, uid: &str) -> Option<bool> {
        self.read().pods.get(uid).map(|e| e.deleted_at.is_some())
    }

    pub fn counts(&self) -> StoreCounts {
        let inner = self.read();
        let deleted = inner
            .pods
            .values()
            .filter(|e| e.deleted_at.is_some())
            .count();
        StoreCounts {
            pods: inner.pods.len() - deleted,
            deleted_pods: deleted,
            namespaces: inner.namespaces.len(),
            node_known: inner.node.is_some(),
            leased_pods: inner.leases.len(),
        }
    }

    /// Heap bytes of the cached metadata, approximately (keys, values, structs).
    pub fn heap_bytes(&self) -> usize {
        let inner = self.read();
        let pods: usize = inner
            .pods
            .values()
            .map(|e| {
                let p = &e.view.pod;
                std::mem::size_of::<PodInfo>()
                    + std::mem::size_of::<PodMetadata>()
                    + p.uid.len()
                    + p.name.len()
                    + p.namespace.len()
                    + p.labels.heap_bytes()
                    + p.annotations.heap_bytes()
                    + p.containers
                        .iter()
                        .map(|c| {
                            std::mem::size_of_val(c)
                                + c.name.len()
                                + c.image.as_deref().map_or(0, str::len)
                                + c.image_id.as_deref().map_or(0, str::len)
                                + c.container_id.as_deref().map_or(0, str::len)
                        })
                        .sum::<usize>()
            })
            .sum();
        let namespaces: usize = inner
            .namespaces
            .values()
            .map(|n| {
                std::mem::size_of::<NamespaceMetadata>()
                    + n.name.len()
                    + n.labels.heap_bytes()
                    + n.annotations.heap_bytes()
            })
            .sum();
        pods + namespaces
    }

    // ---- pods ----

    pub fn begin_pod_list(&self) {
        self.write().pod_list = Some(FxHashSet::default());
    }

    /// Pods cached but not in the completed list were deleted meanwhile.
    pub fn end_pod_list(&self, now: Instant) {
        let mut inner = self.write();
        let Some(seen) = inner.pod_list.take() else {
            return;
        };
        for (uid, entry) in &mut inner.pods {
            if entry.deleted_at.is_none() && !seen.contains(uid) {
                entry.deleted_at = Some(now);
            }
        }
    }

    /// Adds or replaces a pod; `deleted` for a watch DELETED event (whose object is the
    /// pod's final state).
    pub fn apply_pod(&self, info: PodInfo, deleted: bool, now: Instant) {
        let added = self.apply_pod_locked(&mut self.write(), info, deleted, now);
        if added {
            self.pods_added.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    /// True when a new uid was cached.
    fn apply_pod_locked(
        &self,
        inner: &mut Inner,
        info: PodInfo,
        deleted: bool,
        now: Instant,
    ) -> bool {
        if let Some(seen) = inner.pod_list.as_mut() {
            seen.insert(info.uid.clone());
        }
        if let Some(entry) = inner.pods.get(&*info.uid) {
            let unchanged = *entry.view.pod == info;
            let deleted_at = match (deleted, entry.deleted_at) {
                (true, at) => at.or(Some(now)),
                (false, _) => None,
            };
            if unchanged && deleted_at == entry.deleted_at {
                return false;
            }
            let view = if unchanged {
                Arc::clone(&entry.view)
            } else {
                // A restarted container has a new id: the old one leaves the index.
                let old = Arc::clone(&entry.view.pod);
                inner.unindex_containers(&old);
                inner.index_containers(&info);
                inner.view(Arc::new(info))
            };
            if let Some(entry) = inner.pods.get_mut(&*view.pod.uid) {
                entry.view = view;
                entry.deleted_at = deleted_at;
            }
            if !unchanged {
                self.changed();
            }
            return false;
        }
        if deleted {
            // Deleted before we knew it: nothing to keep.
            return false;
        }
        if inner.pods.len() >= self.max_pods && !inner.evict_one_deleted() {
            self.over_capacity.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let uid = info.uid.clone();
        inner
            .by_name
            .entry(info.namespace.clone())
            .or_default()
            .insert(info.name.clone(), uid.clone());
        inner.index_containers(&info);
        let view = inner.view(Arc::new(info));
        inner.pods.insert(
            uid,
            PodEntry {
                view,
                deleted_at: None,
                released_at: None,
            },
        );
        self.changed();
        true
    }

    /// A pod was deleted (the watch's DELETED event carries its final state: prefer
    /// [`Self::apply_pod`] with `deleted`); this marks it by uid.
    pub fn delete_pod(&self, uid: &str, now: Instant) {
        if let Some(entry) = self.write().pods.get_mut(uid) {
            entry.deleted_at.get_or_insert(now);
        }
    }

    // ---- leases ----

    pub fn lease(&self, uid: &str) {
        *self.write().leases.entry(uid.into()).or_insert(0) += 1;
    }

    pub fn release(&self, uid: &str, now: Instant) {
        let mut inner = self.write();
        let last = match inner.leases.get_mut(uid) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if last {
            inner.leases.remove(uid);
            if let Some(entry) = inner.pods.get_mut(uid)
                && entry.deleted_at.is_some()
            {
                entry.released_at = Some(now);
            }
        }
    }

    /// Drops deleted pods whose retention ran out and that nobody leases.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut inner = self.write();
        let expired: Vec<Box<str>> = inner
            .pods
            .iter()
            .filter(|(uid, e)| {
                !inner.leased(uid) && e.expires_at(self.retention).is_some_and(|t| t <= now)
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in &expired {
            inner.remove_pod(uid);
        }
        expired.len()
    }

    // ---- namespaces ----

    pub fn begin_namespace_list(&self) {
        self.write().namespace_list = Some(FxHashSet::default());
    }

    pub fn end_namespace_list(&self) {
        let mut inner = self.write();
        let Some(seen) = inner.namespace_list.take() else {
            return;
        };
        inner.namespaces.retain(|name, _| seen.contains(name));
    }

    pub fn apply_namespace(&self, ns: NamespaceMetadata) {
        let mut inner = self.write();
        let inner = &mut *inner;
        if let Some(seen) = inner.namespace_list.as_mut() {
            seen.insert(ns.name.clone());
        }
        if inner
            .namespaces
            .get(&*ns.name)
            .is_some_and(|old| **old == ns)
        {
            return;
        }
        if !inner.namespaces.contains_key(&*ns.name)
            && inner.namespaces.len() >= self.max_namespaces
        {
            self.over_capacity.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let ns = Arc::new(ns);
        inner.namespaces.insert(ns.name.clone(), Arc::clone(&ns));
        self.changed();
        for entry in inner.pods.values_mut() {
            if entry.view.pod.namespace == ns.name {
                entry.view = Arc::new(PodMetadata {
                    pod: Arc::clone(&entry.view.pod),
                    namespace: Some(Arc::clone(&ns)),
                    node: entry.view.node.clone(),
                });
            }
        }
    }

    /// A deleted namespace leaves the lookup table; its pods' views keep their copy.
    pub fn delete_namespace(&self, name: &str) {
        self.write().namespaces.remove(name);
    }

    // ---- node ----

    pub fn set_node(&self, node: NodeMetadata) {
        let mut inner = self.write();
        if inner.node.as_deref() == Some(&node) {
            return;
        }
        let node = Arc::new(node);
        inner.node = Some(Arc::clone(&node));
        self.changed();
        for entry in inner.pods.values_mut() {
            entry.view = Arc::new(PodMetadata {
                pod: Arc::clone(&entry.view.pod),
                namespace: entry.view.namespace.clone(),
                node: Some(Arc::clone(&node)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::Hints;
    use crate::metadata::KeyValues;

    fn pod(uid: &str, ns: &str, name: &str, label: &str) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            name: name.into(),
            namespace: ns.into(),
            node_name: Some("n".into()),
            pod_ip: None,
            labels: KeyValues::from_sorted(vec![("app".into(), label.into())]),
            annotations: KeyValues::default(),
            owner: None,
            workload: None,
            containers: Box::new([]),
            hints: Hints::default(),
        }
    }

    fn ns(name: &str, team: &str) -> NamespaceMetadata {
        NamespaceMetadata {
            name: name.into(),
            uid: None,
            labels: KeyValues::from_sorted(vec![("team".into(), team.into())]),
            annotations: KeyValues::default(),
            hints: Hints::default(),
        }
    }

    const RETAIN: Duration = Duration::from_secs(60);

    #[test]
    fn generation_moves_only_when_an_answer_changes() {
        let s = Store::new(RETAIN, 10, 10);
        let now = Instant::now();
        let g0 = s.generation();
        s.apply_pod(pod("u1", "a", "p", "web"), false, now);
        let g1 = s.generation();
        assert_ne!(g0, g1, "a new pod");
        s.apply_pod(pod("u1", "a", "p", "web"), false, now);
        s.lease("u1");
        s.release("u1", now);
        assert_eq!(s.generation(), g1, "nothing a lookup returns changed");
        s.apply_pod(pod("u1", "a", "p", "api"), false, now);
        let g2 = s.generation();
        assert_ne!(g1, g2, "a label changed");
        s.apply_namespace(ns("a", "t"));
        assert_ne!(s.generation(), g2, "its namespace arrived");
    }

    #[test]
    fn lookups_by_uid_and_name_and_unchanged_updates_keep_the_arc() {
        let s = Store::new(RETAIN, 10, 10);
        let now = Instant::now();
        s.apply_pod(pod("u1", "a", "p1", "web"), false, now);
        let first = s.pod("u1").unwrap();
        assert!(Arc::ptr_eq(&first, &s.pod_by_name("a", "p1").unwrap()));
        s.apply_pod(pod("u1", "a", "p1", "web"), false, now);
        assert!(
            Arc::ptr_eq(&first, &s.pod("u1").unwrap()),
            "no change, same Arc"
        );
        s.apply_pod(pod("u1", "a", "p1", "api"), false, now);
        assert_eq!(s.pod("u1").unwrap().pod.labels.get("app"), Some("api"));
        assert_eq!(
            first.pod.labels.get("app"),
            Some("web"),
            "old snapshots are immutable"
        );
        assert!(s.pod("nope").is_none());
        assert!(s.pod_by_name("a", "nope").is_none());
    }

    #[test]
    fn namespace_and_node_changes_reach_pod_views() {
        let s = Store::new(RETAIN, 10, 10);
        let now = Instant::now();
        s.apply_pod(pod("u1", "a", "p1", "web"), false, now);
        assert!(s.pod("u1").unwrap().namespace.is_none());
        s.apply_namespace(ns("a", "t1"));
        assert_eq!(
            s.pod("u1")
                .unwrap()
                .namespace
                .as_ref()
                .unwrap()
                .labels
                .get("team"),
            Some("t1")
        );
        s.apply_namespace(ns("a", "t2"));
        assert_eq!(
            s.pod("u1")
                .unwrap()
                .namespace
                .as_ref()
                .unwrap()
                .labels
                .get("team"),
            Some("t2")
        );
        s.set_node(NodeMetadata {
            name: "n".into(),
            labels: KeyValues::from_sorted(vec![("zone".into(), "z1".into())]),
        });
        assert_eq!(
            s.pod("u1")
                .unwrap()
                .node
                .as_ref()
                .unwrap()
                .labels
                .get("zone"),
            Some("z1")
        );
        s.delete_namespace("a");
        assert!(s.namespace("a").is_none());
        assert!(
            s.pod("u1").unwrap().namespace.is_some(),
            "the pod keeps its copy"
        );
    }

    #[test]
    fn deleted_pods_stay_for_retention_and_while_leased() {
        let s = Store::new(RETAIN, 10, 10);
        let t0 = Instant::now();
        s.apply_pod(pod("u1", "a", "p1", "web"), false, t0);
        s.apply_pod(pod("u2", "a", "p2", "web"), false, t0);
        s.lease("u2");
        s.apply_pod(pod("u1", "a", "p1", "web"), true, t0);
        s.apply_pod(pod("u2", "a", "p2", "web"), true, t0);
        assert_eq!(s.is_deleted("u1"), Some(true));
        assert_eq!(s.sweep(t0 + RETAIN / 2), 0);
        assert!(s.pod("u1").is_some());
        assert_eq!(s.sweep(t0 + RETAIN), 1, "u1 expired, u2 is leased");
        assert!(s.pod("u1").is_none());
        assert!(s.pod_by_name("a", "p1").is_none());
        assert!(s.pod("u2").is_some());
        let released = t0 + RETAIN * 3;
        s.release("u2", released);
        assert_eq!(
            s.sweep(released + RETAIN / 2),
            0,
            "retention restarts at release"
        );
        assert_eq!(s.sweep(released + RETAIN), 1);
        assert_eq!(s.counts(), StoreCounts::default());
    }

    #[test]
    fn a_completed_relist_marks_missing_pods_deleted_and_drops_missing_namespaces() {
        let s = Store::new(RETAIN, 10, 10);
        let t0 = Instant::now();
        s.apply_pod(pod("u1", "a", "p1", "web"), false, t0);
        s.apply_pod(pod("u2", "a", "p2", "web"), false, t0);
        s.apply_namespace(ns("a", "t"));
        s.apply_namespace(ns("gone", "t"));
        s.begin_pod_list();
        s.apply_pod(pod("u2", "a", "p2", "web"), false, t0);
        s.apply_pod(pod("u3", "a", "p3", "web"), false, t0);
        s.end_pod_list(t0);
        assert_eq!(s.is_deleted("u1"), Some(true));
        assert_eq!(s.is_deleted("u2"), Some(false));
        assert_eq!(s.is_deleted("u3"), Some(false));
        s.begin_namespace_list();
        s.apply_namespace(ns("a", "t"));
        s.end_namespace_list();
        assert!(s.namespace("gone").is_none());
        assert!(s.namespace("a").is_some());
    }

    #[test]
    fn a_recreated_name_points_at_the_new_uid_and_survives_the_old_ones_sweep() {
        let s = Store::new(RETAIN, 10, 10);
        let t0 = Instant::now();
        s.apply_pod(pod("old", "a", "db-0", "v1"), false, t0);
        s.apply_pod(pod("old", "a", "db-0", "v1"), true, t0);
        s.apply_pod(pod("new", "a", "db-0", "v2"), false, t0);
        assert_eq!(&*s.pod_by_name("a", "db-0").unwrap().pod.uid, "new");
        s.sweep(t0 + RETAIN);
        assert!(s.pod("old").is_none());
        assert_eq!(&*s.pod_by_name("a", "db-0").unwrap().pod.uid, "new");
    }

    #[test]
    fn capacity_evicts_deleted_pods_first_then_refuses() {
        let s = Store::new(RETAIN, 2, 1);
        let t0 = Instant::now();
        s.apply_pod(pod("u1", "a", "p1", "x"), false, t0);
        s.apply_pod(pod("u2", "a", "p2", "x"), false, t0);
        s.apply_pod(pod("u1", "a", "p1", "x"), true, t0);
        s.apply_pod(pod("u3", "a", "p3", "x"), false, t0);
        assert!(s.pod("u1").is_none(), "the deleted pod made room");
        assert!(s.pod("u3").is_some());
        s.apply_pod(pod("u4", "a", "p4", "x"), false, t0);
        assert!(s.pod("u4").is_none());
        assert_eq!(s.over_capacity(), 1);
        s.apply_namespace(ns("a", "t"));
        s.apply_namespace(ns("b", "t"));
        assert!(s.namespace("b").is_none());
        assert_eq!(s.over_capacity(), 2);
        // A pod deleted before we ever saw it is not kept.
        s.apply_pod(pod("u5", "a", "p5", "x"), true, t0);
        assert!(s.pod("u5").is_none());
    }

    #[tokio::test]
    async fn new_pods_wake_subscribers() {
        let s = Store::new(RETAIN, 10, 10);
        let mut rx = s.subscribe_pods();
        s.apply_pod(pod("u1", "a", "p1", "x"), false, Instant::now());
        rx.changed().await.unwrap();
    }

    fn with_container(mut p: PodInfo, name: &str, id: Option<&str>) -> PodInfo {
        p.containers = Box::new([crate::metadata::ContainerMetadata {
            name: name.into(),
            kind: crate::metadata::ContainerKind::Regular,
            image: Some("nginx:1.27".into()),
            image_id: None,
            container_id: id.map(Into::into),
        }]);
        p
    }

    #[test]
    fn containers_are_found_by_their_current_runtime_id() {
        let s = Store::new(RETAIN, 10, 10);
        let t0 = Instant::now();
        s.apply_pod(
            with_container(pod("u1", "a", "p1", "web"), "app", None),
            false,
            t0,
        );
        assert!(s.pod_by_container("c1").is_none(), "not started yet");
        s.apply_pod(
            with_container(pod("u1", "a", "p1", "web"), "app", Some("containerd://c1")),
            false,
            t0,
        );
        assert_eq!(&*s.pod_by_container("c1").unwrap().pod.uid, "u1");
        assert!(
            s.pod_by_container("containerd://c1").is_none(),
            "keyed by the bare id"
        );
        // Restarted: the new instance's id replaces the old one.
        s.apply_pod(
            with_container(pod("u1", "a", "p1", "web"), "app", Some("containerd://c2")),
            false,
            t0,
        );
        assert!(s.pod_by_container("c1").is_none());
        assert_eq!(&*s.pod_by_container("c2").unwrap().pod.uid, "u1");
        // Deleted: still found while retained, gone with the pod.
        s.apply_pod(
            with_container(pod("u1", "a", "p1", "web"), "app", Some("containerd://c2")),
            true,
            t0,
        );
        assert!(s.pod_by_container("c2").is_some());
        s.sweep(t0 + RETAIN);
        assert!(s.pod_by_container("c2").is_none());
    }
}
