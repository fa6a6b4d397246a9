//! Node-scoped Kubernetes metadata cache, for enriching log records, syscall series and
//! security events with pod labels, workload, images and namespace/node labels.
//!
//! # What it does
//! [`MetadataCache::start`] spawns three feeds and returns at once:
//! - pods of this node: list + watch with `fieldSelector=spec.nodeName=<node>`;
//! - namespaces: list + watch, metadata-only (labels, annotations, `node-agent.io/*` hints);
//! - this node: a metadata-only GET (`resourceVersion=0`, served from the API server's
//!   cache; needs only `get` on nodes), repeated every `node_refresh_interval`.
//!
//! The watches are kube-runtime's watcher: paged lists, watches resumed from the last
//! resourceVersion with bookmarks, a re-list on 410 Gone, a watch that delivers nothing
//! for `watch_timeout` + 5 s restarted as hung; errors back off exponentially with
//! jitter (`backoff_initial` doubling up to `backoff_max`). We keep only the filtered
//! metadata ([`PodInfo`], [`NamespaceMetadata`], [`NodeMetadata`]), not the objects.
//!
//! # Lookups
//! [`MetadataCache::pod`] (by uid) and [`MetadataCache::pod_by_name`] are a shared
//! lock, a hash lookup and an `Arc` clone (25–45 ns measured, see
//! `cargo run --release -p node-agent-tests --example kube_metadata_bench`): cheap per
//! file open or per batch; nothing needs them per line. They return an immutable
//! [`PodMetadata`]: the pod plus its namespace's and node's metadata. Changes build new
//! `Arc`s; a holder's snapshot never changes under it. [`MetadataCache::pod_by_container`]
//! finds the pod by a runtime container id (an index of the current
//! `containerStatuses[].containerID`s), for the syscall counters and security events
//! through `node_agent_core::kube::ContainerLookup`.
//!
//! # A log file before its pod
//! A file can appear before the pod's watch event arrives. The primitive is
//! [`MetadataCache::wait_for_pod`]: wait up to a caller-chosen time, waking as soon as
//! the pod is cached; at most `max_waiters` waiters at once, more are refused at once.
//! The caller decides: hold the file briefly (bounded by the timeout and the waiter
//! count), then ship with the path's metadata and count
//! `node_agent_k8s_metadata_misses_total`.
//!
//! # Deleted pods
//! A deleted pod's metadata stays for as long as a [`PodLease`] on its uid lives, then
//! for `deleted_pod_retention` (default 5 minutes); without a lease, for the retention
//! after deletion. So a source takes a lease per file it reads and drops it when the
//! file is finished. Pods deleted while the watch was down are noticed by the next list
//! and treated the same. Both explicit leases and the grace period, because a backlog
//! can take longer than any fixed grace, and files of a deleted pod can still be found
//! by a rescan after the pod is gone.
//!
//! # When the API server is down or slow
//! Lookups answer from what is cached; [`MetadataCache::state`] says
//! [`CacheState::Stale`] since the first error (a hung watch shows only when its idle
//! timeout restarts it: `watch_timeout` + 5 s); the watches retry with backoff and
//! resume (or re-list) when it is back. Nothing here ever blocks a caller except
//! `wait_for_pod`, up to its timeout. Counters: [`MetadataCache::stats`] (requests,
//! watch restarts, re-lists, errors by [`ErrorKind`], objects cached, waits).
//!
//! # Authentication
//! In-cluster: the service-account token (`token_file`, re-read as soon as the file
//! changes, see `client.rs` for why not kube's 60 s timer), the CA (`ca_file`, which kube
//! re-reads for CA rotation) and `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
//! (or `api_server_url`). Standalone: a kubeconfig file (`kubeconfig`), with whatever auth
//! it names (token, token file, client certificate, exec plugin).
//!
//! # Footprint (measured 12-01, x86_64, static release build)
//! - Binary: the agent grows from 11.08 MB to 15.98 MB with the cache linked (9.12 →
//!   13.25 MB fully stripped). About 1.2 MB of symbols of that is kube's kubeconfig and
//!   exec-plugin machinery (serde-saphyr YAML, jsonpath), which kube's client builder
//!   and TLS connector reference even in-cluster; dropping it would mean our own rustls
//!   connector with a CA-reloading verifier and no exec plugins (not done).
//! - Memory with 110 pods × 3 containers, 20 labels + 20 annotations each: ~0.5 MiB of
//!   metadata, 1.1 MiB live heap with the client, 2.4 MiB peak heap while decoding the
//!   list, 1.5 MiB anonymous RSS delta (plus ~3.7 MiB of the client's code paged in).
//!   Objects are decoded into slim types (`objects.rs`), not k8s-openapi's.
//! - In the log pipeline's process (12-03, `cargo xtask bench logs --enrich`): VmRSS
//!   8.0 MiB without the cache, 11.9 MiB synced against an empty node, 13.3 MiB with the
//!   full node above.
//!
//! # API-server cost at 5,000 nodes
//! Assumptions: 5,000 nodes, 30 pods per node on average (150,000 pods, 110 at most per
//! node), 1,000 namespaces, a pod churn of 10 pod creations + 10 deletions per second
//! cluster-wide, each pod changing about 8 times in its life (scheduled, containers
//! created/started/ready, terminating, deleted): about 100 pod events/s cluster-wide.
//! Pod objects are ~8 KiB as JSON, namespaces ~1 KiB. The API server keeps a watch
//! cache (the default for pods, namespaces, nodes) and indexes pod watchers by
//! `spec.nodeName`, as it does for kubelet's own node-scoped pod watch.
//!
//! This cache, per node: one pod watch and one namespace watch, each re-opened every
//! `watch_timeout` (290 s) from its resourceVersion, plus one node GET every 5 minutes.
//! - Requests: 5,000 × (2 / 290 s + 1 / 300 s) ≈ 51 requests/s cluster-wide, all served
//!   from the watch cache; no list after the first unless a watch falls out of the
//!   cache's window (410), and then one node-scoped list.
//! - Events: each pod event is sent to one agent (the nodeName index), ~100 events/s ×
//!   8 KiB ≈ 0.8 MB/s in total; a namespace change goes to all 5,000 agents, but
//!   namespaces change rarely (say one per minute: 5,000 × 1 KiB / 60 s ≈ 85 KB/s).
//!   Bookmarks: ~1 per minute per watch, 167/s of ~150 bytes.
//! - Memory: ~10,000 long-running watches; at ~40 KiB each in the API server (goroutines
//!   with their stacks and a small event buffer) about 400 MiB across the API server
//!   replicas — the same order as kubelet's own pod watch, and the same design as
//!   Vector, Filebeat and client-go informers in every DaemonSet.
//! - Start of a full rollout: each agent lists its node's ~30 pods (~240 KiB) and the
//!   1,000 namespaces (~1 MiB) from the watch cache (`use_apiserver_cache`, the default,
//!   like client-go's first list): 5,000 × 1.25 MiB ≈ 6 GiB served over the rollout
//!   (a DaemonSet with `maxUnavailable: 10%` → 500 agents at once, ~600 MiB per wave).
//!
//! Kubelet mode (Fluent Bit's `use_kubelet`: GET `https://<node>:10250/pods`): zero
//! API-server requests for pods, but each poll returns every pod of the node in full
//! (30 × 8 KiB ≈ 240 KiB, 110 × 8 KiB ≈ 900 KiB), so a poll every 10 s costs the node
//! ~24–90 KiB/s of kubelet JSON encoding and our decoding, and still misses a pod for up
//! to the poll period (Fluent Bit polls on a miss instead, i.e. per new pod); it needs
//! RBAC on `nodes/proxy` (which also allows exec into every pod of the node through
//! kubelet) unless the cluster has kubelet fine-grained authorization (1.33+ beta), and
//! it gives no namespace labels, so the namespace watch stays. It would save the pod
//! watch: ~17 requests/s and ~0.8 MB/s of events cluster-wide out of an API server that
//! serves kubelet's identical watch already. Not clearly worth it: not added. It becomes
//! worth it only where the API server is the bottleneck and `nodes/proxy` is acceptable.

mod annotations;
mod cache;
mod client;
pub mod config;
mod filter;
mod health;
mod lookup;
mod metadata;
mod objects;
mod owner;
mod store;
mod watch;

pub use annotations::{EXCLUDE, EXCLUDE_CONTAINERS, Hints, PREFIX as HINT_PREFIX};
pub use cache::{MetadataCache, PodLease, Stats, WaitError};
pub use client::{StartError, in_cluster_url};
pub use config::{ConfigError, ConfigErrors, KeyFilterConfig, KubeConfig};
pub use filter::KeyFilter;
pub use health::{CacheState, ErrorKind, Resource, ResourceStats};
pub use lookup::{container_found, to_record};
pub use metadata::{
    ContainerKind, ContainerMetadata, KeyValues, NamespaceMetadata, NodeMetadata, PodInfo,
    PodMetadata,
};
pub use owner::{OwnerRef, POD_TEMPLATE_HASH, Workload, WorkloadKind};
pub use store::StoreCounts;
