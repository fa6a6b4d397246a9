//! Kubernetes metadata as records carry it: what the enrich stage found for a record's pod
//! and container in the node's metadata cache. Stages match on it, sinks label with it.
//! Kept here (not in the cache crate) so stages and sinks depend only on the core.

use std::collections::BTreeMap;

/// The workload that owns a pod, resolved the way users name it (a Deployment rather than
/// its ReplicaSet, a CronJob rather than its Job).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `ReplicaSet`, …
    pub kind: String,
    pub name: String,
}

/// One container of the pod, from the pod's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContainerMetadata {
    pub image: String,
    pub image_id: String,
    /// `containerd://<id>` as the kubelet reports it.
    pub container_id: String,
}

/// Metadata of a record's pod (labels and annotations already filtered by the config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PodMetadata {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner: Option<Workload>,
    /// The record's own container, when it came from one.
    pub container: Option<ContainerMetadata>,
    pub namespace_labels: BTreeMap<String, String>,
    /// The node labels the config selects.
    pub node_labels: BTreeMap<String, String>,
}
