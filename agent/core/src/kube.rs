//! Kubernetes metadata as records carry it: what the enrich stage found for a record's pod
//! and container in the node's metadata cache. Stages match on it, sinks label with it.
//!
//! Kept here, with the [`PodLookup`] trait the enrich stage asks, so that the log pipeline,
//! the sinks and their tests depend only on the core: the cache (agent/kube) brings
//! kube-rs, k8s-openapi, hyper and rustls, which the pipeline must not need to compile or
//! to be tested (an in-memory lookup stands in), and which a build without the cache
//! would not link.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The workload that owns a pod, resolved the way users name it (a Deployment rather than
/// its ReplicaSet, a CronJob rather than its Job).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `ReplicaSet`, or
    /// another controller kind as written in the owner reference.
    pub kind: String,
    pub name: String,
}

impl Workload {
    /// The ECS/Filebeat field prefix of this kind (`deployment` for
    /// `kubernetes.deployment.name`); `None` for kinds without one (custom controllers,
    /// `Node` for static pods), which only `kubernetes.owner` names.
    pub fn ecs_key(&self) -> Option<&'static str> {
        Some(match self.kind.as_str() {
            "Deployment" => "deployment",
            "ReplicaSet" => "replicaset",
            "StatefulSet" => "statefulset",
            "DaemonSet" => "daemonset",
            "Job" => "job",
            "CronJob" => "cronjob",
            _ => return None,
        })
    }
}

/// The record's own container, from the pod's spec and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContainerMetadata {
    /// The image as the spec names it (`nginx:1.27`); empty if unknown.
    pub image: String,
    /// `status.imageID`, the resolved image (`docker.io/library/nginx@sha256:…`); empty
    /// before the container ran.
    pub image_id: String,
    /// `status.containerID` as the kubelet reports it (`containerd://<id>`); empty before
    /// the container ran.
    pub container_id: String,
}

impl ContainerMetadata {
    /// `containerd://abc` → `Some(("containerd", "abc"))`.
    pub fn runtime_id(&self) -> Option<(&str, &str)> {
        self.container_id
            .split_once("://")
            .filter(|(_, id)| !id.is_empty())
    }

    /// The digest of [`Self::image_id`] (`sha256:…`), ECS `container.image.hash.all`.
    pub fn image_digest(&self) -> Option<&str> {
        let id = self
            .image_id
            .strip_prefix("docker-pullable://")
            .unwrap_or(&self.image_id);
        let digest = id.rsplit_once('@').map_or(id, |(_, d)| d);
        let (algorithm, hex) = digest.split_once(':')?;
        (matches!(algorithm, "sha256" | "sha384" | "sha512") && !hex.is_empty()).then_some(digest)
    }
}

/// Metadata of a record's pod (labels and annotations already filtered by the config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PodMetadata {
    /// `status.podIP`, if assigned.
    pub pod_ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The controller as the owner reference names it (`ReplicaSet web-7d4b9c8f6`).
    pub owner: Option<Workload>,
    /// The top-level workload it resolves to (`Deployment web`); `None` for a bare pod.
    pub workload: Option<Workload>,
    /// The record's own container, when it came from one the pod spec lists.
    pub container: Option<ContainerMetadata>,
    pub namespace_labels: BTreeMap<String, String>,
    pub namespace_annotations: BTreeMap<String, String>,
    /// The node labels the config selects.
    pub node_labels: BTreeMap<String, String>,
    /// `node-agent.io/<name>` annotations of the pod (over its namespace's), keyed by
    /// `<name>`: hints for later stages (`multiline: java`).
    pub hints: BTreeMap<String, String>,
}

impl PodMetadata {
    /// Every metadata field as `(ECS name, value)`, the names as Elasticsearch documents
    /// carry them (before de-dotting): `kubernetes.labels.<key>`,
    /// `kubernetes.annotations.<key>`, `kubernetes.<kind>.name`, `kubernetes.owner.kind`/
    /// `.name`, `kubernetes.pod.ip`, `kubernetes.namespace_labels.<key>`,
    /// `kubernetes.namespace_annotations.<key>`, `kubernetes.node.labels.<key>`,
    /// `container.image.name`, `container.image.hash.all`, `container.id`,
    /// `container.runtime`. The path's fields (namespace, pod name and uid, container
    /// name, node) are not repeated here. For sinks that label with a chosen few
    /// (Loki stream labels, structured metadata); most of these are high-cardinality.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut map = |prefix: &str, m: &BTreeMap<String, String>| {
            for (k, v) in m {
                out.push((format!("{prefix}.{k}"), v.clone()));
            }
        };
        map("kubernetes.labels", &self.labels);
        map("kubernetes.annotations", &self.annotations);
        map("kubernetes.namespace_labels", &self.namespace_labels);
        map(
            "kubernetes.namespace_annotations",
            &self.namespace_annotations,
        );
        map("kubernetes.node.labels", &self.node_labels);
        for w in [&self.workload, &self.owner].into_iter().flatten() {
            if let Some(key) = w.ecs_key() {
                let name = format!("kubernetes.{key}.name");
                if !out.iter().any(|(k, _)| *k == name) {
                    out.push((name, w.name.clone()));
                }
            }
        }
        if let Some(o) = &self.owner {
            out.push(("kubernetes.owner.kind".into(), o.kind.clone()));
            out.push(("kubernetes.owner.name".into(), o.name.clone()));
        }
        if let Some(ip) = &self.pod_ip {
            out.push(("kubernetes.pod.ip".into(), ip.clone()));
        }
        if let Some(c) = &self.container {
            if !c.image.is_empty() {
                out.push(("container.image.name".into(), c.image.clone()));
            }
            if let Some(d) = c.image_digest() {
                out.push(("container.image.hash.all".into(), d.to_string()));
            }
            if let Some((runtime, id)) = c.runtime_id() {
                out.push(("container.id".into(), id.to_string()));
                out.push(("container.runtime".into(), runtime.to_string()));
            }
        }
        out
    }

    /// One field of [`Self::fields`] by its name (`kubernetes.labels.app`,
    /// `kubernetes.deployment.name`), without building the rest: for label mappings
    /// evaluated per record.
    pub fn field(&self, name: &str) -> Option<&str> {
        let map_fields = [
            ("kubernetes.labels.", &self.labels),
            ("kubernetes.annotations.", &self.annotations),
            ("kubernetes.namespace_labels.", &self.namespace_labels),
            (
                "kubernetes.namespace_annotations.",
                &self.namespace_annotations,
            ),
            ("kubernetes.node.labels.", &self.node_labels),
        ];
        for (prefix, m) in map_fields {
            if let Some(key) = name.strip_prefix(prefix) {
                return m.get(key).map(String::as_str);
            }
        }
        let container = self.container.as_ref();
        match name {
            "kubernetes.pod.ip" => self.pod_ip.as_deref(),
            "kubernetes.owner.kind" => self.owner.as_ref().map(|o| o.kind.as_str()),
            "kubernetes.owner.name" => self.owner.as_ref().map(|o| o.name.as_str()),
            "container.image.name" => container
                .map(|c| c.image.as_str())
                .filter(|s| !s.is_empty()),
            "container.image.hash.all" => container.and_then(ContainerMetadata::image_digest),
            "container.id" => container.and_then(|c| c.runtime_id()).map(|(_, id)| id),
            "container.runtime" => container.and_then(|c| c.runtime_id()).map(|(r, _)| r),
            _ => {
                let kind = name.strip_prefix("kubernetes.")?.strip_suffix(".name")?;
                [&self.workload, &self.owner]
                    .into_iter()
                    .flatten()
                    .find(|w| w.ecs_key() == Some(kind))
                    .map(|w| w.name.as_str())
            }
        }
    }
}

/// Which pod and container a record names (from its log file's path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    /// Empty when the path has none; the lookup falls back to namespace and name.
    pub uid: &'a str,
    pub container: &'a str,
}

/// What [`PodLookup::find`] found.
#[derive(Debug, Clone)]
pub struct Found {
    pub metadata: Arc<PodMetadata>,
    /// `node-agent.io/exclude` on the pod or its namespace, or the container named in
    /// `node-agent.io/exclude-containers`: its logs are not shipped.
    pub excluded: bool,
}

/// Keeps a pod's metadata in the cache after the pod is deleted, until dropped (one per
/// file being read, so a deleted pod's backlog is still enriched).
pub struct Lease(Option<Box<dyn Any + Send>>);

impl Lease {
    pub fn new(inner: impl Any + Send) -> Self {
        Self(Some(Box::new(inner)))
    }

    /// A lease that keeps nothing (a lookup without deletion retention).
    pub fn none() -> Self {
        Self(None)
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Lease"
        } else {
            "Lease(none)"
        })
    }
}

/// The node's metadata cache as the enrich stage sees it. Every method answers from
/// memory, never the network, and is cheap (a lock, a hash lookup and the conversion of
/// one pod's metadata); the stage still calls [`Self::find`] once per file and again
/// only when [`Self::generation`] moved, never per line.
pub trait PodLookup: Send + Sync {
    /// Changes whenever an answer of [`Self::find`] may have changed (a pod added or
    /// updated, a namespace's or the node's labels changed). One atomic load.
    fn generation(&self) -> u64;

    /// Whether the cache is listed and watching: then a pod it does not know is most
    /// likely one whose watch event is about to arrive (worth holding its records
    /// briefly); otherwise (API server down, never synced) waiting would not help.
    fn is_current(&self) -> bool;

    /// The pod and container, if the cache knows the pod.
    fn find(&self, pod: &PodRef<'_>) -> Option<Found>;

    /// Pins `uid`'s metadata (see [`Lease`]); may be taken before the pod is known.
    fn lease(&self, uid: &str) -> Lease;
}

/// A container the node runs, as the metadata cache knows it by its runtime id: for the
/// syscall counters and security events, which know a process's cgroup (hence its
/// container id) but no log path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFound {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The container's name in the pod spec.
    pub container: String,
    /// The pod's metadata, [`PodMetadata::container`] set to this container.
    pub metadata: Arc<PodMetadata>,
}

/// The node's metadata cache by container id (the 64-hex id of
/// `status.containerStatuses[].containerID`, without its `containerd://` prefix).
/// Answers from memory: a lock and a hash lookup, plus the conversion of the one pod's
/// metadata; callers on a hot path memoize answers and ask again only when
/// [`Self::generation`] moved.
pub trait ContainerLookup: Send + Sync {
    /// Changes whenever an answer of [`Self::container`] may have changed.
    fn generation(&self) -> u64;

    /// The container's pod and metadata, if a cached pod runs it (or ran it, for a pod
    /// deleted and still retained).
    fn container(&self, id: &str) -> Option<ContainerFound>;
}

pub type SharedContainerLookup = Arc<dyn ContainerLookup>;

/// No metadata (Kubernetes enrichment off): every container is unknown.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoContainers;

impl ContainerLookup for NoContainers {
    fn generation(&self) -> u64 {
        0
    }

    fn container(&self, _id: &str) -> Option<ContainerFound> {
        None
    }
}

/// A lookup filled in later: the syscalls collector exists from start-up in every pod,
/// while the cache runs only in the handover leader, from when it takes over. Until
/// [`Self::set`], every container is unknown.
#[derive(Default)]
pub struct ContainerLookupSlot {
    inner: RwLock<Option<SharedContainerLookup>>,
    /// Bumped by every `set`, so that memoized answers of the previous lookup expire.
    epoch: AtomicU64,
}

impl ContainerLookupSlot {
    pub fn set(&self, lookup: Option<SharedContainerLookup>) {
        // A panicked writer cannot leave an `Option` half-written.
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = lookup;
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn current(&self) -> Option<SharedContainerLookup> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl std::fmt::Debug for ContainerLookupSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerLookupSlot")
            .field("set", &self.current().is_some())
            .finish()
    }
}

impl ContainerLookup for ContainerLookupSlot {
    fn generation(&self) -> u64 {
        let inner = self.current().map_or(0, |l| l.generation());
        // The epoch in the top bits: a new lookup starting at generation 0 still moves it.
        inner.wrapping_add(self.epoch.load(Ordering::Acquire) << 48)
    }

    fn container(&self, id: &str) -> Option<ContainerFound> {
        self.current()?.container(id)
    }
}

/// One metadata value by name, for label sets chosen in the config (the syscall
/// counters' `kube_labels`), spelled as the sinks' record values are: `workload`,
/// `workload_kind`, `label:<pod label>`, `annotation:<pod annotation>`,
/// `namespace_label:<label>`, `metadata:<ECS name>` (any [`PodMetadata::field`], e.g.
/// `metadata:container.image.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataValue {
    Workload,
    WorkloadKind,
    Label(String),
    Annotation(String),
    NamespaceLabel(String),
    Metadata(String),
}

impl std::str::FromStr for MetadataValue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        type Make = fn(String) -> MetadataValue;
        let prefixed: [(&str, Make); 4] = [
            ("label:", MetadataValue::Label),
            ("annotation:", MetadataValue::Annotation),
            ("namespace_label:", MetadataValue::NamespaceLabel),
            ("metadata:", MetadataValue::Metadata),
        ];
        for (prefix, make) in prefixed {
            if let Some(rest) = s.strip_prefix(prefix) {
                if rest.is_empty() {
                    return Err(format!("{s:?}: a name must follow {prefix:?}"));
                }
                return Ok(make(rest.to_string()));
            }
        }
        match s {
            "workload" => Ok(Self::Workload),
            "workload_kind" => Ok(Self::WorkloadKind),
            other => Err(format!(
                "unknown metadata value {other:?} (workload, workload_kind, label:<name>, \
                 annotation:<name>, namespace_label:<name>, metadata:<ECS name>)"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for MetadataValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl MetadataValue {
    /// The value in `m`; `None` when absent.
    pub fn get<'a>(&self, m: &'a PodMetadata) -> Option<&'a str> {
        match self {
            Self::Workload => m.workload.as_ref().map(|w| w.name.as_str()),
            Self::WorkloadKind => m.workload.as_ref().map(|w| w.kind.as_str()),
            Self::Label(k) => m.labels.get(k).map(String::as_str),
            Self::Annotation(k) => m.annotations.get(k).map(String::as_str),
            Self::NamespaceLabel(k) => m.namespace_labels.get(k).map(String::as_str),
            Self::Metadata(name) => m.field(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> PodMetadata {
        PodMetadata {
            pod_ip: Some("10.0.0.7".into()),
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: [("team".to_string(), "payments".to_string())].into(),
            owner: Some(Workload {
                kind: "ReplicaSet".into(),
                name: "web-7d4b9c8f6".into(),
            }),
            workload: Some(Workload {
                kind: "Deployment".into(),
                name: "web".into(),
            }),
            container: Some(ContainerMetadata {
                image: "nginx:1.27".into(),
                image_id: "docker.io/library/nginx@sha256:ab12".into(),
                container_id: "containerd://c0ffee".into(),
            }),
            namespace_labels: [("env".to_string(), "prod".to_string())].into(),
            namespace_annotations: BTreeMap::new(),
            node_labels: [(
                "topology.kubernetes.io/zone".to_string(),
                "eu-1a".to_string(),
            )]
            .into(),
            hints: [("multiline".to_string(), "java".to_string())].into(),
        }
    }

    #[test]
    fn fields_use_ecs_names_and_field_finds_each() {
        let m = metadata();
        let fields = m.fields();
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "kubernetes.labels.app",
                "kubernetes.annotations.team",
                "kubernetes.namespace_labels.env",
                "kubernetes.node.labels.topology.kubernetes.io/zone",
                "kubernetes.deployment.name",
                "kubernetes.replicaset.name",
                "kubernetes.owner.kind",
                "kubernetes.owner.name",
                "kubernetes.pod.ip",
                "container.image.name",
                "container.image.hash.all",
                "container.id",
                "container.runtime",
            ]
        );
        for (k, v) in &fields {
            assert_eq!(m.field(k), Some(v.as_str()), "{k}");
        }
        assert_eq!(m.field("kubernetes.deployment.name"), Some("web"));
        assert_eq!(m.field("container.image.hash.all"), Some("sha256:ab12"));
        assert_eq!(m.field("kubernetes.labels.nope"), None);
        assert_eq!(m.field("kubernetes.statefulset.name"), None);
        assert_eq!(m.field("bogus"), None);
    }

    #[test]
    fn container_ids_and_digests() {
        let mut c = ContainerMetadata::default();
        assert_eq!(c.runtime_id(), None);
        assert_eq!(c.image_digest(), None);
        c.container_id = "containerd://".into();
        assert_eq!(c.runtime_id(), None);
        c.container_id = "docker://abc".into();
        assert_eq!(c.runtime_id(), Some(("docker", "abc")));
        c.image_id = "sha256:ff".into();
        assert_eq!(c.image_digest(), Some("sha256:ff"));
        c.image_id = "nginx:1.27".into();
        assert_eq!(c.image_digest(), None);
        c.image_id = "docker-pullable://nginx@sha256:ff".into();
        assert_eq!(c.image_digest(), Some("sha256:ff"));
    }

    #[test]
    fn metadata_values_parse_and_read() {
        let m = metadata();
        let get = |s: &str| {
            s.parse::<MetadataValue>()
                .unwrap()
                .get(&m)
                .map(str::to_string)
        };
        assert_eq!(get("workload").as_deref(), Some("web"));
        assert_eq!(get("workload_kind").as_deref(), Some("Deployment"));
        assert_eq!(get("label:app").as_deref(), Some("web"));
        assert_eq!(get("label:nope"), None);
        assert_eq!(get("annotation:team").as_deref(), Some("payments"));
        assert_eq!(get("namespace_label:env").as_deref(), Some("prod"));
        assert_eq!(
            get("metadata:container.image.name").as_deref(),
            Some("nginx:1.27")
        );
        assert!("label:".parse::<MetadataValue>().is_err());
        assert!("pod".parse::<MetadataValue>().is_err());
        let v: MetadataValue = serde_json::from_str("\"label:app\"").unwrap();
        assert_eq!(v, MetadataValue::Label("app".into()));
    }

    struct One(u64);

    impl ContainerLookup for One {
        fn generation(&self) -> u64 {
            self.0
        }

        fn container(&self, id: &str) -> Option<ContainerFound> {
            (id == "c0ffee").then(|| ContainerFound {
                namespace: "shop".into(),
                pod: "web-1".into(),
                pod_uid: "u1".into(),
                container: "app".into(),
                metadata: Arc::new(metadata()),
            })
        }
    }

    #[test]
    fn a_slot_answers_once_set_and_its_generation_moves_with_each_set() {
        let slot = ContainerLookupSlot::default();
        let g0 = slot.generation();
        assert!(slot.container("c0ffee").is_none());
        slot.set(Some(Arc::new(One(0))));
        let g1 = slot.generation();
        assert_ne!(g0, g1, "a lookup starting at generation 0 still moves it");
        assert_eq!(slot.container("c0ffee").unwrap().pod, "web-1");
        assert!(slot.container("other").is_none());
        slot.set(None);
        assert_ne!(slot.generation(), g1);
        assert!(slot.container("c0ffee").is_none());
        assert!(NoContainers.container("c0ffee").is_none());
    }
}
