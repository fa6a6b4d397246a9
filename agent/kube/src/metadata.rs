//! The immutable metadata a lookup returns, and its extraction from API objects.
//!
//! Field names map onto ECS `kubernetes.*` as: `pod.name`/`pod.uid`/`pod.ip`,
//! `namespace`, `node.name`, `labels.*`, `annotations.*`, `namespace_labels.*`,
//! `namespace_annotations.*`, `node.labels.*`, `<workload kind>.name` (e.g.
//! `deployment.name`), `replicaset.name` from the direct owner, `container.name`,
//! `container.image`; ECS `container.id` is [`ContainerMetadata::runtime_id`]'s id.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::annotations::Hints;
use crate::config::KubeConfig;
use crate::filter::KeyFilter;
use crate::objects::{Container, ContainerStatus, PodObject};
use crate::owner::{self, OwnerRef, Workload};

/// Immutable key/value pairs sorted by key (filtered labels or annotations).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValues(Box<[(Box<str>, Box<str>)]>);

impl KeyValues {
    /// From pairs already sorted by key, without duplicates.
    pub(crate) fn from_sorted(pairs: Vec<(Box<str>, Box<str>)>) -> Self {
        Self(pairs.into_boxed_slice())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .and_then(|i| self.0.get(i))
            .map(|(_, v)| &**v)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Heap bytes held (for the memory figures).
    pub fn heap_bytes(&self) -> usize {
        self.0.len() * std::mem::size_of::<(Box<str>, Box<str>)>()
            + self.0.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

/// Which list of the pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Init,
    Regular,
    Ephemeral,
}

/// One container of a pod: spec image and, once it ran, the runtime's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMetadata {
    pub name: Box<str>,
    pub kind: ContainerKind,
    /// The image as the spec names it (`nginx:1.27`).
    pub image: Option<Box<str>>,
    /// `status.imageID`: the resolved digest (`docker.io/library/nginx@sha256:…`).
    pub image_id: Option<Box<str>>,
    /// `status.containerID` of the current instance (`containerd://<id>`); a log file
    /// of an earlier restart belongs to an earlier id.
    pub container_id: Option<Box<str>>,
}

impl ContainerMetadata {
    /// `containerd://abc` → `("containerd", "abc")`.
    pub fn runtime_id(&self) -> Option<(&str, &str)> {
        self.container_id.as_deref()?.split_once("://")
    }
}

/// A pod's own metadata, filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub uid: Box<str>,
    pub name: Box<str>,
    pub namespace: Box<str>,
    pub node_name: Option<Box<str>>,
    pub pod_ip: Option<Box<str>>,
    pub labels: KeyValues,
    pub annotations: KeyValues,
    /// The controller owner reference as written (`ReplicaSet web-7d4b9c8f6`).
    pub owner: Option<OwnerRef>,
    /// The top-level workload it resolves to (`Deployment web`); `None` for a bare pod.
    pub workload: Option<Workload>,
    /// Init, regular and ephemeral containers, in spec order.
    pub containers: Box<[ContainerMetadata]>,
    /// `node-agent.io/*` annotations, read before the annotation filter.
    pub hints: Hints,
}

impl PodInfo {
    pub fn container(&self, name: &str) -> Option<&ContainerMetadata> {
        self.containers.iter().find(|c| &*c.name == name)
    }
}

/// A namespace's metadata, filtered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceMetadata {
    pub name: Box<str>,
    pub uid: Option<Box<str>>,
    pub labels: KeyValues,
    pub annotations: KeyValues,
    /// `node-agent.io/exclude: "true"` on a namespace excludes all its pods.
    pub hints: Hints,
}

/// This node's selected labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetadata {
    pub name: Box<str>,
    pub labels: KeyValues,
}

/// What a pod lookup returns: the pod with its namespace's and node's metadata as they
/// were when the pod (or they) last changed. Immutable; hold the `Arc` as long as needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMetadata {
    pub pod: Arc<PodInfo>,
    /// `None` while the namespace is not (yet) known.
    pub namespace: Option<Arc<NamespaceMetadata>>,
    /// `None` while this node's labels are not (yet) known.
    pub node: Option<Arc<NodeMetadata>>,
}

impl PodMetadata {
    /// Skip this pod's logs: `node-agent.io/exclude: "true"` on the pod or its namespace.
    pub fn is_excluded(&self) -> bool {
        self.pod.hints.exclude() || self.namespace.as_ref().is_some_and(|n| n.hints.exclude())
    }

    /// Skip this container's logs (the pod is excluded, or names it in
    /// `node-agent.io/exclude-containers`).
    pub fn is_container_excluded(&self, container: &str) -> bool {
        self.is_excluded() || self.pod.hints.excludes_container(container)
    }

    /// `node-agent.io/<name>` from the pod, else from its namespace (a default for
    /// every pod there), e.g. `hint("multiline")` → `Some("java")`.
    pub fn hint(&self, name: &str) -> Option<&str> {
        self.pod
            .hints
            .get(name)
            .or_else(|| self.namespace.as_ref().and_then(|n| n.hints.get(name)))
    }

    pub fn container(&self, name: &str) -> Option<&ContainerMetadata> {
        self.pod.container(name)
    }
}

/// Turns API objects into metadata: the configured filters and value cap.
#[derive(Debug, Clone)]
pub(crate) struct Extractor {
    pod_labels: KeyFilter,
    pod_annotations: KeyFilter,
    namespace_labels: KeyFilter,
    namespace_annotations: KeyFilter,
    node_labels: KeyFilter,
    max_value_bytes: usize,
}

/// What one extraction dropped (values over `max_value_bytes`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Dropped(pub u64);

impl Extractor {
    pub fn new(config: &KubeConfig) -> Result<Self, globset::Error> {
        Ok(Self {
            pod_labels: KeyFilter::new(&config.pod_labels)?,
            pod_annotations: KeyFilter::new(&config.pod_annotations)?,
            namespace_labels: KeyFilter::new(&config.namespace_labels)?,
            namespace_annotations: KeyFilter::new(&config.namespace_annotations)?,
            node_labels: KeyFilter::new(&config.node_labels)?,
            max_value_bytes: config.max_value_bytes,
        })
    }

    fn keep(
        &self,
        map: Option<&BTreeMap<String, String>>,
        filter: &KeyFilter,
        dropped: &mut Dropped,
    ) -> KeyValues {
        let Some(map) = map else {
            return KeyValues::default();
        };
        // BTreeMap iterates in key order, which KeyValues needs.
        let pairs = map
            .iter()
            .filter(|(k, _)| filter.matches(k))
            .filter(|(_, v)| {
                let fits = v.len() <= self.max_value_bytes;
                if !fits {
                    dropped.0 += 1;
                }
                fits
            })
            .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
            .collect();
        KeyValues::from_sorted(pairs)
    }

    /// `None` for an object without uid, name or namespace (never from a real server).
    pub fn pod(&self, pod: &PodObject, dropped: &mut Dropped) -> Option<PodInfo> {
        let meta = &pod.metadata;
        let uid = meta.uid.as_deref().filter(|s| !s.is_empty())?;
        let name = meta.name.as_deref().filter(|s| !s.is_empty())?;
        let namespace = meta.namespace.as_deref().filter(|s| !s.is_empty())?;
        let (owner, workload) =
            match owner::resolve(meta.owner_references.as_deref(), meta.labels.as_ref()) {
                Some((owner, workload)) => (Some(owner), Some(workload)),
                None => (None, None),
            };
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let init_status = statuses(status.and_then(|s| s.init_container_statuses.as_ref()));
        let main_status = statuses(status.and_then(|s| s.container_statuses.as_ref()));
        let ephemeral_status =
            statuses(status.and_then(|s| s.ephemeral_container_statuses.as_ref()));
        let mut containers = Vec::new();
        if let Some(spec) = spec {
            let lists = [
                (&spec.init_containers, ContainerKind::Init, init_status),
                (&spec.containers, ContainerKind::Regular, main_status),
                (
                    &spec.ephemeral_containers,
                    ContainerKind::Ephemeral,
                    ephemeral_status,
                ),
            ];
            for (list, kind, status) in lists {
                for c in list.iter().flatten() {
                    containers.push(container(c, kind, status));
                }
            }
        }
        Some(PodInfo {
            uid: uid.into(),
            name: name.into(),
            namespace: namespace.into(),
            node_name: spec.and_then(|s| s.node_name.as_deref()).map(Box::from),
            pod_ip: status
                .and_then(|s| s.pod_ip.as_deref())
                .filter(|ip| !ip.is_empty())
                .map(Box::from),
            labels: self.keep(meta.labels.as_ref(), &self.pod_labels, dropped),
            annotations: self.keep(meta.annotations.as_ref(), &self.pod_annotations, dropped),
            owner,
            workload,
            containers: containers.into_boxed_slice(),
            hints: Hints::from_annotations(meta.annotations.as_ref(), self.max_value_bytes),
        })
    }

    pub fn namespace(&self, meta: &ObjectMeta, dropped: &mut Dropped) -> Option<NamespaceMetadata> {
        let name = meta.name.as_deref().filter(|s| !s.is_empty())?;
        Some(NamespaceMetadata {
            name: name.into(),
            uid: meta.uid.as_deref().map(Box::from),
            labels: self.keep(meta.labels.as_ref(), &self.namespace_labels, dropped),
            annotations: self.keep(
                meta.annotations.as_ref(),
                &self.namespace_annotations,
                dropped,
            ),
            hints: Hints::from_annotations(meta.annotations.as_ref(), self.max_value_bytes),
        })
    }

    pub fn node(&self, name: &str, meta: &ObjectMeta, dropped: &mut Dropped) -> NodeMetadata {
        NodeMetadata {
            name: meta.name.as_deref().unwrap_or(name).into(),
            labels: self.keep(meta.labels.as_ref(), &self.node_labels, dropped),
        }
    }
}

fn statuses(list: Option<&Vec<ContainerStatus>>) -> &[ContainerStatus] {
    list.map(Vec::as_slice).unwrap_or_default()
}

fn container(
    spec: &Container,
    kind: ContainerKind,
    statuses: &[ContainerStatus],
) -> ContainerMetadata {
    let status = statuses.iter().find(|s| s.name == spec.name);
    let non_empty = |s: &str| (!s.is_empty()).then(|| Box::from(s));
    ContainerMetadata {
        name: spec.name.as_str().into(),
        kind,
        image: spec.image.as_deref().and_then(non_empty),
        image_id: status
            .and_then(|s| s.image_id.as_deref())
            .and_then(non_empty),
        container_id: status
            .and_then(|s| s.container_id.as_deref())
            .and_then(non_empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::WorkloadKind;

    fn pod_json() -> serde_json::Value {
        serde_json::json!({
            "metadata": {
                "name": "web-7d4b9c8f6-x2k4p", "namespace": "shop", "uid": "uid-1",
                "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6", "big": "x".repeat(50)},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "team": "payments",
                    "node-agent.io/exclude-containers": "istio-proxy",
                    "node-agent.io/multiline": "java"
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6", "uid": "rs", "controller": true}]
            },
            "spec": {
                "nodeName": "node-1",
                "initContainers": [{"name": "init", "image": "busybox:1"}],
                "containers": [{"name": "app", "image": "nginx:1.27"}, {"name": "istio-proxy", "image": "proxy:1"}],
                "ephemeralContainers": [{"name": "debugger", "image": "debug:1"}]
            },
            "status": {
                "podIP": "10.0.0.7",
                "initContainerStatuses": [{"name": "init", "image": "busybox:1", "imageID": "sha-init", "containerID": "containerd://i1", "ready": false, "restartCount": 0}],
                "containerStatuses": [{"name": "app", "image": "nginx:1.27", "imageID": "docker.io/library/nginx@sha256:ab", "containerID": "containerd://c1", "ready": true, "restartCount": 0}]
            }
        })
    }

    #[test]
    fn extracts_filtered_pod_metadata() {
        let config = KubeConfig {
            max_value_bytes: 20,
            ..KubeConfig::default()
        };
        let x = Extractor::new(&config).unwrap();
        let pod: PodObject = serde_json::from_value(pod_json()).unwrap();
        let mut dropped = Dropped::default();
        let info = x.pod(&pod, &mut dropped).unwrap();
        assert_eq!(dropped.0, 1, "the 50-byte label value");
        assert_eq!(&*info.uid, "uid-1");
        assert_eq!(info.labels.get("app"), Some("web"));
        assert_eq!(info.labels.get("big"), None);
        assert_eq!(info.annotations.get("team"), Some("payments"));
        assert_eq!(
            info.annotations
                .get("kubectl.kubernetes.io/last-applied-configuration"),
            None
        );
        assert_eq!(
            info.workload.as_ref().map(|w| (&w.kind, &*w.name)),
            Some((&WorkloadKind::Deployment, "web"))
        );
        assert_eq!(info.owner.as_ref().map(|o| &*o.name), Some("web-7d4b9c8f6"));
        assert_eq!(info.pod_ip.as_deref(), Some("10.0.0.7"));
        let names: Vec<_> = info.containers.iter().map(|c| (&*c.name, c.kind)).collect();
        assert_eq!(
            names,
            [
                ("init", ContainerKind::Init),
                ("app", ContainerKind::Regular),
                ("istio-proxy", ContainerKind::Regular),
                ("debugger", ContainerKind::Ephemeral)
            ]
        );
        let app = info.container("app").unwrap();
        assert_eq!(app.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(
            app.image_id.as_deref(),
            Some("docker.io/library/nginx@sha256:ab")
        );
        assert_eq!(app.runtime_id(), Some(("containerd", "c1")));
        let proxy = info.container("istio-proxy").unwrap();
        assert_eq!(proxy.container_id, None, "not started yet");
        let view = PodMetadata {
            pod: Arc::new(info),
            namespace: None,
            node: None,
        };
        assert!(!view.is_excluded());
        assert!(view.is_container_excluded("istio-proxy"));
        assert!(!view.is_container_excluded("app"));
        assert_eq!(view.hint("multiline"), Some("java"));
    }

    #[test]
    fn objects_without_identity_are_refused() {
        let x = Extractor::new(&KubeConfig::default()).unwrap();
        let mut pod: PodObject = serde_json::from_value(pod_json()).unwrap();
        pod.metadata.uid = None;
        assert!(x.pod(&pod, &mut Dropped::default()).is_none());
        assert!(
            x.namespace(&ObjectMeta::default(), &mut Dropped::default())
                .is_none()
        );
    }

    #[test]
    fn namespace_exclusion_and_hints_apply_to_its_pods() {
        let x = Extractor::new(&KubeConfig::default()).unwrap();
        let ns: ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "shop", "labels": {"team": "t"}, "annotations": {"node-agent.io/exclude": "true", "node-agent.io/parser": "json"}
        }))
        .unwrap();
        let ns = x.namespace(&ns, &mut Dropped::default()).unwrap();
        assert_eq!(ns.labels.get("team"), Some("t"));
        assert!(
            ns.annotations.is_empty(),
            "namespace annotations are off by default"
        );
        let pod: PodObject = serde_json::from_value(pod_json()).unwrap();
        let view = PodMetadata {
            pod: Arc::new(x.pod(&pod, &mut Dropped::default()).unwrap()),
            namespace: Some(Arc::new(ns)),
            node: None,
        };
        assert!(view.is_excluded());
        assert!(view.is_container_excluded("app"));
        assert_eq!(view.hint("parser"), Some("json"));
        assert_eq!(view.hint("multiline"), Some("java"));
    }
}
