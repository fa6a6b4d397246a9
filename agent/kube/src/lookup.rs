//! The cache as the log pipeline's enrich stage asks it ([`node_agent_core::kube::PodLookup`]):
//! a pod and container by the names in a log file's path, turned into the record-side
//! [`node_agent_core::kube::PodMetadata`]; and as the syscall counters and security
//! events ask it ([`node_agent_core::kube::ContainerLookup`]): by runtime container id.

use std::collections::BTreeMap;
use std::sync::Arc;

use node_agent_core::kube::{
    self as record, ContainerFound, ContainerLookup, Found, Lease, PodLookup, PodRef,
};

use crate::cache::MetadataCache;
use crate::health::Resource;
use crate::metadata::{KeyValues, PodMetadata};
use crate::owner::{OwnerRef, Workload};

impl PodLookup for MetadataCache {
    fn generation(&self) -> u64 {
        self.generation()
    }

    fn is_current(&self) -> bool {
        self.resource_state(Resource::Pods).is_synced()
    }

    fn find(&self, pod: &PodRef<'_>) -> Option<Found> {
        let metadata = if pod.uid.is_empty() {
            self.pod_by_name(pod.namespace, pod.pod)?
        } else {
            self.pod(pod.uid)?
        };
        Some(Found {
            excluded: metadata.is_container_excluded(pod.container),
            metadata: Arc::new(to_record(&metadata, pod.container)),
        })
    }

    fn lease(&self, uid: &str) -> Lease {
        Lease::new(MetadataCache::lease(self, uid))
    }
}

impl ContainerLookup for MetadataCache {
    fn generation(&self) -> u64 {
        MetadataCache::generation(self)
    }

    fn container(&self, id: &str) -> Option<ContainerFound> {
        let metadata = self.pod_by_container(id)?;
        container_found(&metadata, id)
    }
}

/// `id`'s container in this pod, with the pod's record-side metadata.
pub fn container_found(m: &PodMetadata, id: &str) -> Option<ContainerFound> {
    let pod = &m.pod;
    let container = pod
        .containers
        .iter()
        .find(|c| c.runtime_id().is_some_and(|(_, cid)| cid == id))?;
    Some(ContainerFound {
        namespace: pod.namespace.to_string(),
        pod: pod.name.to_string(),
        pod_uid: pod.uid.to_string(),
        container: container.name.to_string(),
        metadata: Arc::new(to_record(m, &container.name)),
    })
}

fn map(kv: &KeyValues) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn workload(w: &Workload) -> record::Workload {
    record::Workload {
        kind: w.kind.as_str().to_string(),
        name: w.name.to_string(),
    }
}

fn owner(o: &OwnerRef) -> record::Workload {
    record::Workload {
        kind: o.kind.to_string(),
        name: o.name.to_string(),
    }
}

/// The record-side metadata of `container` in this pod.
pub fn to_record(m: &PodMetadata, container: &str) -> record::PodMetadata {
    let pod = &m.pod;
    let mut hints: BTreeMap<String, String> = m
        .namespace
        .iter()
        .flat_map(|n| n.hints.iter())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The pod's own hints win over its namespace's defaults.
    hints.extend(
        pod.hints
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let own = |v: &Option<Box<str>>| v.as_deref().unwrap_or_default().to_string();
    record::PodMetadata {
        pod_ip: pod.pod_ip.as_deref().map(str::to_string),
        labels: map(&pod.labels),
        annotations: map(&pod.annotations),
        owner: pod.owner.as_ref().map(owner),
        workload: pod.workload.as_ref().map(workload),
        container: pod.container(container).map(|c| record::ContainerMetadata {
            image: own(&c.image),
            image_id: own(&c.image_id),
            container_id: own(&c.container_id),
        }),
        namespace_labels: m
            .namespace
            .as_ref()
            .map(|n| map(&n.labels))
            .unwrap_or_default(),
        namespace_annotations: m
            .namespace
            .as_ref()
            .map(|n| map(&n.annotations))
            .unwrap_or_default(),
        node_labels: m.node.as_ref().map(|n| map(&n.labels)).unwrap_or_default(),
        hints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KubeConfig;
    use crate::metadata::{Dropped, Extractor};
    use crate::objects::PodObject;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn converts_the_pod_its_namespace_and_node_for_one_container() {
        let x = Extractor::new(&KubeConfig::default()).unwrap();
        let pod: PodObject = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-7d4b9c8f6-x2k4p", "namespace": "shop", "uid": "uid-1",
                "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6"},
                "annotations": {"node-agent.io/multiline": "java"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6", "uid": "rs", "controller": true}]
            },
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx:1.27"}]},
            "status": {"podIP": "10.0.0.7", "containerStatuses": [{"name": "app", "image": "nginx:1.27",
                "imageID": "docker.io/library/nginx@sha256:ab", "containerID": "containerd://c1", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        let ns: ObjectMeta = serde_json::from_value(serde_json::json!({
            "name": "shop", "labels": {"team": "t"},
            "annotations": {"node-agent.io/multiline": "go", "node-agent.io/parser": "json"}
        }))
        .unwrap();
        let view = PodMetadata {
            pod: Arc::new(x.pod(&pod, &mut Dropped::default()).unwrap()),
            namespace: Some(Arc::new(x.namespace(&ns, &mut Dropped::default()).unwrap())),
            node: None,
        };
        let r = to_record(&view, "app");
        assert_eq!(r.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            r.workload
                .as_ref()
                .map(|w| (w.kind.as_str(), w.name.as_str())),
            Some(("Deployment", "web"))
        );
        assert_eq!(
            r.owner.as_ref().map(|w| w.name.as_str()),
            Some("web-7d4b9c8f6")
        );
        assert_eq!(r.field("container.id"), Some("c1"));
        assert_eq!(r.field("container.image.name"), Some("nginx:1.27"));
        assert_eq!(r.field("kubernetes.namespace_labels.team"), Some("t"));
        assert_eq!(r.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(
            r.hints.get("multiline").map(String::as_str),
            Some("java"),
            "the pod's hint wins"
        );
        assert_eq!(r.hints.get("parser").map(String::as_str), Some("json"));
        assert!(to_record(&view, "nope").container.is_none());
        let found = container_found(&view, "c1").unwrap();
        assert_eq!(
            (
                found.namespace.as_str(),
                found.pod.as_str(),
                found.pod_uid.as_str(),
                found.container.as_str()
            ),
            ("shop", "web-7d4b9c8f6-x2k4p", "uid-1", "app")
        );
        assert_eq!(
            found.metadata.field("container.image.name"),
            Some("nginx:1.27")
        );
        assert_eq!(found.metadata.field("kubernetes.labels.app"), Some("web"));
        assert!(container_found(&view, "c2").is_none());
    }
}
