//! The `kubernetes` (and ECS `container`) objects of a pod record, shared by the
//! Elasticsearch documents and the JSON lines of the file/stdout sinks, named as Filebeat
//! and ECS name them: `kubernetes.namespace`, `.pod.{name,uid,ip}`, `.container.name`,
//! `.node.{name,labels}`, `.labels`, `.annotations`, `.namespace_labels`,
//! `.namespace_annotations`, `.<workload kind>.name` (`deployment`, `replicaset`,
//! `statefulset`, `daemonset`, `job`, `cronjob`); `container.{id,runtime,image.name,
//! image.hash.all}`.
//!
//! Elasticsearch expands dots in field names into objects, so a label `app` and a label
//! `app.kubernetes.io/name` would map `kubernetes.labels.app` both as a keyword and as an
//! object, and the document would be rejected. Keys are therefore de-dotted there
//! (`app_kubernetes_io/name`), as Filebeat does by default (`labels.dedot`); the JSON
//! lines keep the keys as they are.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde::ser::SerializeMap;

use node_agent_core::kube::{ContainerMetadata, PodMetadata};
use node_agent_core::record::SourceMeta;

/// Labels or annotations, de-dotted or not.
pub struct KeyValues<'a> {
    map: &'a BTreeMap<String, String>,
    dedot: bool,
}

impl Serialize for KeyValues<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.map.len()))?;
        for (k, v) in self.map {
            let key: Cow<'_, str> = if self.dedot && k.contains('.') {
                Cow::Owned(k.replace('.', "_"))
            } else {
                Cow::Borrowed(k)
            };
            m.serialize_entry(&key, v)?;
        }
        m.end()
    }
}

/// How a sink wants the objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Replace `.` in label and annotation keys with `_` (Elasticsearch).
    pub dedot: bool,
    /// Put the container's image and ids under `kubernetes.container` (the JSON lines,
    /// whose top-level `container` is the container's name) rather than leaving them to
    /// the ECS `container` object.
    pub container_details: bool,
}

#[derive(Serialize)]
pub struct Kubernetes<'a> {
    namespace: &'a str,
    pod: Pod<'a>,
    container: Container<'a>,
    node: Node<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<KeyValues<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<KeyValues<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_labels: Option<KeyValues<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace_annotations: Option<KeyValues<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicaset: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    statefulset: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    daemonset: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<Name<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cronjob: Option<Name<'a>>,
}

#[derive(Serialize)]
struct Pod<'a> {
    name: &'a str,
    uid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
}

#[derive(Serialize)]
struct Container<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'a str>,
}

#[derive(Serialize)]
struct Node<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<KeyValues<'a>>,
}

#[derive(Serialize)]
pub struct Name<'a> {
    name: &'a str,
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

impl<'a> Kubernetes<'a> {
    /// The object for a record of `source`; only the path's fields without metadata.
    pub fn new(source: &'a SourceMeta, style: Style) -> Self {
        let meta: Option<&'a PodMetadata> = source.kubernetes.as_deref();
        let kv = |map: &'a BTreeMap<String, String>| {
            (!map.is_empty()).then_some(KeyValues {
                map,
                dedot: style.dedot,
            })
        };
        let c = meta
            .and_then(|m| m.container.as_ref())
            .filter(|_| style.container_details);
        let runtime_id = c.and_then(ContainerMetadata::runtime_id);
        let mut k = Kubernetes {
            namespace: &source.namespace,
            pod: Pod {
                name: &source.pod,
                uid: &source.pod_uid,
                ip: meta.and_then(|m| m.pod_ip.as_deref()),
            },
            container: Container {
                name: &source.container,
                image: meta
                    .and_then(|m| m.container.as_ref())
                    .and_then(|c| non_empty(&c.image)),
                image_id: c.and_then(|c| non_empty(&c.image_id)),
                id: runtime_id.map(|(_, id)| id),
                runtime: runtime_id.map(|(r, _)| r),
            },
            node: Node {
                name: &source.node,
                labels: meta.and_then(|m| kv(&m.node_labels)),
            },
            labels: meta.and_then(|m| kv(&m.labels)),
            annotations: meta.and_then(|m| kv(&m.annotations)),
            namespace_labels: meta.and_then(|m| kv(&m.namespace_labels)),
            namespace_annotations: meta.and_then(|m| kv(&m.namespace_annotations)),
            deployment: None,
            replicaset: None,
            statefulset: None,
            daemonset: None,
            job: None,
            cronjob: None,
        };
        // The workload first, then the direct owner if it is another kind (a Deployment's
        // ReplicaSet, a CronJob's Job), as Filebeat reports both.
        for w in meta
            .into_iter()
            .flat_map(|m| [m.workload.as_ref(), m.owner.as_ref()])
            .flatten()
        {
            let slot = match w.ecs_key() {
                Some("deployment") => &mut k.deployment,
                Some("replicaset") => &mut k.replicaset,
                Some("statefulset") => &mut k.statefulset,
                Some("daemonset") => &mut k.daemonset,
                Some("job") => &mut k.job,
                Some("cronjob") => &mut k.cronjob,
                _ => continue,
            };
            slot.get_or_insert(Name { name: &w.name });
        }
        k
    }
}

/// ECS `container`: the runtime's id and the image, when the pod's metadata is known.
#[derive(Serialize)]
pub struct EcsContainer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<Image<'a>>,
}

#[derive(Serialize)]
struct Image<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<Hash<'a>>,
}

#[derive(Serialize)]
struct Hash<'a> {
    all: [&'a str; 1],
}

impl<'a> EcsContainer<'a> {
    pub fn new(source: &'a SourceMeta) -> Option<Self> {
        let c = source.kubernetes.as_ref()?.container.as_ref()?;
        let runtime_id = c.runtime_id();
        let image = non_empty(&c.image).map(|name| Image {
            name,
            hash: c.image_digest().map(|d| Hash { all: [d] }),
        });
        if runtime_id.is_none() && image.is_none() {
            return None;
        }
        Some(Self {
            id: runtime_id.map(|(_, id)| id),
            runtime: runtime_id.map(|(r, _)| r),
            image,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Arc;

    use node_agent_core::kube::Workload;
    use node_agent_core::record::SourceKind;

    pub fn enriched_source() -> SourceMeta {
        let meta = PodMetadata {
            pod_ip: Some("10.0.0.7".into()),
            labels: [
                ("app".to_string(), "web".to_string()),
                ("app.kubernetes.io/name".to_string(), "web".to_string()),
            ]
            .into(),
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
            node_labels: [(
                "topology.kubernetes.io/zone".to_string(),
                "eu-1a".to_string(),
            )]
            .into(),
            ..PodMetadata::default()
        };
        SourceMeta {
            kind: SourceKind::Pod,
            namespace: "shop".into(),
            pod: "web-7d4b9c8f6-x2k4p".into(),
            pod_uid: "uid-1".into(),
            container: "app".into(),
            node: "node-1".into(),
            path: "/var/log/pods/x/app/0.log".into(),
            file_id: 1,
            kubernetes: Some(Arc::new(meta)),
        }
    }

    #[test]
    fn ecs_objects_dedotted_for_elasticsearch() {
        let s = enriched_source();
        let k = serde_json::to_value(Kubernetes::new(
            &s,
            Style {
                dedot: true,
                container_details: false,
            },
        ))
        .unwrap();
        assert_eq!(
            k,
            serde_json::json!({
                "namespace": "shop",
                "pod": {"name": "web-7d4b9c8f6-x2k4p", "uid": "uid-1", "ip": "10.0.0.7"},
                "container": {"name": "app", "image": "nginx:1.27"},
                "node": {"name": "node-1", "labels": {"topology_kubernetes_io/zone": "eu-1a"}},
                "labels": {"app": "web", "app_kubernetes_io/name": "web"},
                "annotations": {"team": "payments"},
                "namespace_labels": {"env": "prod"},
                "deployment": {"name": "web"},
                "replicaset": {"name": "web-7d4b9c8f6"},
            })
        );
        let c = serde_json::to_value(EcsContainer::new(&s)).unwrap();
        assert_eq!(
            c,
            serde_json::json!({"id": "c0ffee", "runtime": "containerd",
                "image": {"name": "nginx:1.27", "hash": {"all": ["sha256:ab12"]}}})
        );
    }

    #[test]
    fn json_lines_keep_keys_and_container_details() {
        let s = enriched_source();
        let k = serde_json::to_value(Kubernetes::new(
            &s,
            Style {
                dedot: false,
                container_details: true,
            },
        ))
        .unwrap();
        assert_eq!(k["labels"]["app.kubernetes.io/name"], "web");
        assert_eq!(
            k["container"],
            serde_json::json!({"name": "app", "image": "nginx:1.27",
                "image_id": "docker.io/library/nginx@sha256:ab12", "id": "c0ffee", "runtime": "containerd"})
        );
        let bare = SourceMeta {
            kubernetes: None,
            ..s
        };
        let k = serde_json::to_value(Kubernetes::new(
            &bare,
            Style {
                dedot: false,
                container_details: true,
            },
        ))
        .unwrap();
        assert_eq!(
            k,
            serde_json::json!({"namespace": "shop", "pod": {"name": "web-7d4b9c8f6-x2k4p", "uid": "uid-1"},
                "container": {"name": "app"}, "node": {"name": "node-1"}})
        );
        assert!(EcsContainer::new(&bare).is_none());
    }
}
