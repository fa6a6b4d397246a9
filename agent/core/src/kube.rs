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
use std::sync::Arc;

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
}
