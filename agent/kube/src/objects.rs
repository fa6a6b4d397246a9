//! The parts of API objects the cache reads, as the types the watcher decodes into.
//!
//! Why not k8s-openapi's `Pod`, `Namespace`, `Node`: their deserializers cover whole
//! objects (volumes, probes, security contexts, node status, …), and `ObjectMeta`'s
//! decodes `managedFields` into JSON trees of several KiB per pod. Measured: with the
//! benchmark fixture (110 pods with realistic managedFields) the sync's peak heap fell
//! from 7.5 MiB to 2.4 MiB, and the static release agent with the cache linked from
//! 17.19 MB to 15.98 MB. serde skips every field we do not name; the metadata we keep
//! goes into k8s-openapi's `ObjectMeta`, which kube's `Resource` trait hands out.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Deserializer};

/// The metadata fields we read (everything else, `managedFields` first, is skipped).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
}

fn slim_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = SlimMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m.annotations,
        owner_references: m.owner_references,
        ..ObjectMeta::default()
    })
}

/// An object of kind `K` read metadata-only (`Accept: …;as=PartialObjectMetadata`).
#[derive(Debug, Clone, Deserialize)]
#[serde(bound = "")]
pub(crate) struct MetadataOnly<K> {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K: k8s_openapi::Resource> kube::Resource for MetadataOnly<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::KIND)
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::GROUP)
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::VERSION)
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(K::URL_PATH_SEGMENT)
    }

    fn metadata_api() -> bool {
        true
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// A pod, reduced to what enrichment needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PodObject {
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodSpec>,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default)]
    pub containers: Option<Vec<Container>>,
    #[serde(default)]
    pub ephemeral_containers: Option<Vec<Container>>,
}

/// A container of the spec (regular, init or ephemeral: the fields we read are common).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodStatus {
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default)]
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default)]
    pub container_statuses: Option<Vec<ContainerStatus>>,
    #[serde(default)]
    pub ephemeral_container_statuses: Option<Vec<ContainerStatus>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "imageID")]
    pub image_id: Option<String>,
    #[serde(default, rename = "containerID")]
    pub container_id: Option<String>,
}

impl kube::Resource for PodObject {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_we_read_and_skips_the_rest() {
        let pod: PodObject = serde_json::from_value(serde_json::json!({
            "kind": "Pod",
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": {"a": "b"},
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "x", "controller": true}]
            },
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}], "volumes": [{"name": "v"}]},
            "status": {"podIP": "10.0.0.1", "containerStatuses": [{"name": "c", "imageID": "sha", "containerID": "cri://1", "ready": true}]}
        }))
        .unwrap();
        assert_eq!(pod.metadata.uid.as_deref(), Some("u"));
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(
            pod.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n"));
        let status = pod.status.unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
        let c = &status.container_statuses.unwrap()[0];
        assert_eq!(
            (c.image_id.as_deref(), c.container_id.as_deref()),
            (Some("sha"), Some("cri://1"))
        );
        let ns: MetadataOnly<k8s_openapi::api::core::v1::Namespace> = serde_json::from_value(serde_json::json!({
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {"name": "shop"}
        }))
        .unwrap();
        assert_eq!(ns.metadata.name.as_deref(), Some("shop"));
        assert!(<MetadataOnly<k8s_openapi::api::core::v1::Node> as kube::Resource>::metadata_api());
        assert_eq!(
            <MetadataOnly<k8s_openapi::api::core::v1::Node> as kube::Resource>::plural(&()),
            "nodes"
        );
    }
}
