//! cgroup v2 id → container attribution.
//!
//! The eBPF program keys counts by `bpf_get_current_cgroup_id()`, which is the inode number
//! of the task's cgroup v2 directory. We walk the v2 hierarchy to map inode → path, parse
//! kubelet's cgroup naming (cgroupfs and systemd drivers; containerd, CRI-O and docker) into
//! pod UID + container id, and resolve those through kubelet's log directories:
//!
//! * pod UID → namespace/pod: `/var/log/pods/<namespace>_<pod>_<uid>/` directory names;
//! * container id → container name: `/var/log/containers/<pod>_<namespace>_<container>-<id>.log`
//!   symlinks, which kubelet creates for every container and which carry the full id (the
//!   per-pod directories only carry names). A container without such a link (e.g. the pod
//!   sandbox, or a node without the link directory) is labelled with its 12-character short
//!   id, as `docker ps`/`crictl ps` show it: still bounded by the containers on the node.
//!
//! Everything that is not a container (system services, kubelet, the pod-level cgroups…)
//! is attributed to the host.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_agent_core::host::HostPaths;
use node_agent_core::kubelet;

/// Pseudo cgroup id under which the leader accumulates the counts of host cgroups that no
/// longer exist (see `gc.rs`), so the host series stay monotonic. Real cgroup ids are
/// inode numbers and never 0.
pub const RETIRED_HOST_CGROUP_ID: u64 = 0;

/// Where a cgroup's syscalls are accounted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// Not a container: aggregated as namespace="", pod="", container="".
    Host,
    Container(Arc<ContainerLabels>),
}

/// Labels of a container's series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The runtime id, to look the container up in the Kubernetes metadata.
    pub id: ContainerId,
}

/// A container's runtime id, carried along but not part of a series' identity: a
/// restarted container (new id, same names) continues the same series.
#[derive(Debug, Clone, Default)]
pub struct ContainerId(pub Arc<str>);

impl PartialEq for ContainerId {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ContainerId {}

impl std::hash::Hash for ContainerId {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl PartialOrd for ContainerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ContainerId {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

pub use node_agent_core::cgroup::{ContainerRef, parse_container_path};

/// Finds the cgroup v2 mount below `sysfs`: `fs/cgroup` on unified hosts, `fs/cgroup/unified`
/// on hybrid ones (cgroup v1 controllers at `fs/cgroup/<controller>`).
pub fn detect_v2_root(paths: &HostPaths) -> Option<PathBuf> {
    let unified = paths.sys_path("fs/cgroup");
    if unified.join("cgroup.controllers").is_file() {
        return Some(unified);
    }
    let hybrid = paths.sys_path("fs/cgroup/unified");
    hybrid.join("cgroup.procs").is_file().then_some(hybrid)
}

/// Walks the cgroup v2 tree under `root`: inode (= cgroup id) → path relative to `root`.
/// Unreadable subtrees are skipped (cgroups come and go while we walk).
pub fn walk_cgroups(root: &Path) -> std::io::Result<HashMap<u64, String>> {
    let mut out = HashMap::new();
    out.insert(std::fs::metadata(root)?.ino(), String::new());
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // cgroupfs only has directories for child cgroups; file_type avoids a stat.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = format!("{rel}/{name}");
            if let Ok(meta) = entry.metadata() {
                out.insert(meta.ino(), child_rel.clone());
            }
            stack.push((entry.path(), child_rel));
        }
    }
    Ok(out)
}

/// Where attribution reads from.
#[derive(Debug, Clone)]
pub struct AttributionSources {
    /// cgroup v2 root, `None` when the host has no cgroup v2 (then everything is host).
    pub cgroup_root: Option<PathBuf>,
    /// kubelet's `/var/log/pods`.
    pub pods_dir: PathBuf,
    /// kubelet's `/var/log/containers` (container id → name links).
    pub containers_dir: PathBuf,
}

/// How long the owner of a vanished cgroup is remembered: its map entries stay until the
/// leader's next GC pass, and must keep their attribution until then, or their counts
/// would hop from the container's series to the host's and back.
const DEPARTED_TTL: Duration = Duration::from_secs(600);

/// cgroup id → [`Owner`], cached; rebuilt when an unknown id shows up (rate limited), so a
/// new container is attributed on the next scrape after it starts.
#[derive(Debug)]
pub struct Attribution {
    sources: AttributionSources,
    min_refresh: Duration,
    owners: HashMap<u64, Owner>,
    /// Owners of cgroups that have disappeared, with when they were last seen.
    departed: HashMap<u64, (Owner, Instant)>,
    last_refresh: Option<Instant>,
}

impl Attribution {
    pub fn new(sources: AttributionSources, min_refresh: Duration) -> Self {
        Self {
            sources,
            min_refresh,
            owners: HashMap::new(),
            departed: HashMap::new(),
            last_refresh: None,
        }
    }

    /// Makes sure every id in `ids` is resolved if it can be (one refresh at most).
    pub fn ensure(&mut self, ids: impl IntoIterator<Item = u64>) {
        let missing = ids.into_iter().any(|id| {
            id != RETIRED_HOST_CGROUP_ID
                && !self.owners.contains_key(&id)
                && !self.departed.contains_key(&id)
        });
        let due = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= self.min_refresh);
        if missing && due {
            let _ = self.refresh();
        }
    }

    /// Owner of cgroup `id` (also of a recently vanished one); ids never seen (gone before
    /// we looked) count as host.
    pub fn owner(&self, id: u64) -> Owner {
        self.owners
            .get(&id)
            .or_else(|| self.departed.get(&id).map(|(owner, _)| owner))
            .cloned()
            .unwrap_or(Owner::Host)
    }

    /// Whether cgroup `id` existed at the last refresh.
    pub fn is_known(&self, id: u64) -> bool {
        self.owners.contains_key(&id)
    }

    /// Rebuilds the cache from the cgroup tree and kubelet's log directories; false (and
    /// the old cache kept) when the tree cannot be walked.
    pub fn refresh(&mut self) -> bool {
        self.last_refresh = Some(Instant::now());
        let Some(root) = &self.sources.cgroup_root else {
            return false;
        };
        let cgroups = match walk_cgroups(root) {
            Ok(cgroups) => cgroups,
            Err(err) => {
                tracing::warn!(root = %root.display(), error = %err, "cannot walk the cgroup v2 tree");
                return false;
            }
        };
        let pods = read_pods(&self.sources.pods_dir);
        let names = read_container_names(&self.sources.containers_dir);
        let mut labels_cache: HashMap<String, Arc<ContainerLabels>> = HashMap::new();
        let previous = std::mem::take(&mut self.owners);
        self.owners = cgroups
            .into_iter()
            .map(|(id, path)| {
                let owner = match parse_container_path(&path) {
                    None => Owner::Host,
                    Some(c) => {
                        let labels = labels_cache
                            .entry(c.container_id.clone())
                            .or_insert_with(|| Arc::new(container_labels(&c, &pods, &names)));
                        Owner::Container(Arc::clone(labels))
                    }
                };
                (id, owner)
            })
            .collect();
        let now = Instant::now();
        for (id, owner) in previous {
            if !self.owners.contains_key(&id) {
                self.departed.insert(id, (owner, now));
            }
        }
        self.departed.retain(|id, (_, since)| {
            !self.owners.contains_key(id) && since.elapsed() < DEPARTED_TTL
        });
        true
    }
}

fn container_labels(
    c: &ContainerRef,
    pods: &HashMap<String, (String, String)>,
    names: &HashMap<String, String>,
) -> ContainerLabels {
    let (namespace, pod) = pods
        .get(&c.pod_uid)
        .cloned()
        // No log directory (yet): the pod UID is still a stable, bounded label.
        .unwrap_or_else(|| (String::new(), c.pod_uid.clone()));
    let container = names
        .get(&c.container_id)
        .cloned()
        .unwrap_or_else(|| c.container_id[..12].to_string());
    ContainerLabels {
        namespace,
        pod,
        container,
        id: ContainerId(Arc::from(c.container_id.as_str())),
    }
}

/// pod UID → (namespace, pod) from `/var/log/pods`; a missing directory yields nothing.
fn read_pods(dir: &Path) -> HashMap<String, (String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let (ns, pod, uid) = kubelet::parse_pod_dir(name.to_str()?)?;
            Some((uid.to_string(), (ns.to_string(), pod.to_string())))
        })
        .collect()
}

/// container id → name from `/var/log/containers`.
fn read_container_names(dir: &Path) -> HashMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| kubelet::parse_container_log_link(&e.file_name().to_string_lossy()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
    const ID: &str = "4f9a0e1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

    fn expected() -> Option<ContainerRef> {
        Some(ContainerRef {
            pod_uid: UID.into(),
            container_id: ID.into(),
        })
    }

    #[test]
    fn systemd_driver_paths() {
        let uid_ = UID.replace('-', "_");
        for path in [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
            ),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod{uid_}.slice/docker-{ID}.scope"),
            // kind / nested: a prefix before kubepods.
            format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope"
            ),
        ] {
            assert_eq!(parse_container_path(&path), expected(), "{path}");
        }
    }

    #[test]
    fn cgroupfs_driver_paths() {
        for path in [
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
            format!("/kubepods/besteffort/pod{UID}/crio-{ID}"),
            format!("/docker/abc/kubepods/burstable/pod{UID}/{ID}"),
        ] {
            assert_eq!(parse_container_path(&path), expected(), "{path}");
        }
    }

    #[test]
    fn non_container_paths_are_host() {
        let uid_ = UID.replace('-', "_");
        for path in [
            String::new(),
            "/system.slice/containerd.service".to_string(),
            "/user.slice/user-0.slice/session-1.scope".to_string(),
            "/kubepods.slice/kubepods-burstable.slice".to_string(),
            // Pod-level cgroup, no container.
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice"),
            // CRI-O's monitor process.
            format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-conmon-{ID}.scope"),
            // Too short an id, not a uuid, nested below a container.
            format!("/kubepods/pod{UID}/abc123"),
            format!("/kubepods/podnot-a-uuid/{ID}"),
            format!("/kubepods/pod{UID}/{ID}/child"),
            format!("/system.slice/mypod{UID}.slice/{ID}"),
        ] {
            assert_eq!(parse_container_path(&path), None, "{path}");
        }
    }

    /// Builds a fake cgroup tree and kubelet log directories and checks the attribution.
    #[test]
    fn attribution_from_fixture_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("cgroup");
        let uid_ = UID.replace('-', "_");
        let pod_path =
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice");
        let ctr = root
            .join(&pod_path)
            .join(format!("cri-containerd-{ID}.scope"));
        let other_id = "f".repeat(64);
        let unnamed = root
            .join(&pod_path)
            .join(format!("cri-containerd-{other_id}.scope"));
        let service = root.join("system.slice/kubelet.service");
        for d in [&ctr, &unnamed, &service] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let pods = dir.path().join("pods");
        std::fs::create_dir_all(pods.join(format!("default_web-0_{UID}/app"))).expect("mkdir");
        let containers = dir.path().join("containers");
        std::fs::create_dir_all(&containers).expect("mkdir");
        std::fs::write(containers.join(format!("web-0_default_app-{ID}.log")), "").expect("write");

        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        let mut attribution = Attribution::new(
            AttributionSources {
                cgroup_root: Some(root.clone()),
                pods_dir: pods,
                containers_dir: containers,
            },
            Duration::from_secs(3600),
        );
        attribution.ensure([ino(&ctr)]);
        let labels = |owner: Owner| match owner {
            Owner::Container(l) => (*l).clone(),
            Owner::Host => panic!("expected a container"),
        };
        assert_eq!(
            labels(attribution.owner(ino(&ctr))),
            ContainerLabels {
                namespace: "default".into(),
                pod: "web-0".into(),
                container: "app".into(),
                id: ContainerId::default(),
            }
        );
        assert_eq!(&*labels(attribution.owner(ino(&ctr))).id.0, ID);
        // No /var/log/containers link: short id.
        assert_eq!(
            labels(attribution.owner(ino(&unnamed))).container,
            "ffffffffffff"
        );
        assert_eq!(attribution.owner(ino(&service)), Owner::Host);
        assert_eq!(attribution.owner(ino(&root)), Owner::Host);
        assert!(attribution.is_known(ino(&root)));
        // Unknown ids are host, and don't refresh again within min_refresh.
        assert_eq!(attribution.owner(u64::MAX), Owner::Host);
        assert!(!attribution.is_known(u64::MAX));
    }

    #[test]
    fn vanished_container_keeps_its_owner_until_gc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("cgroup");
        let ctr = root.join(format!("kubepods/pod{UID}/{ID}"));
        std::fs::create_dir_all(&ctr).expect("mkdir");
        let id = std::fs::metadata(&ctr).expect("stat").ino();
        let mut attribution = Attribution::new(
            AttributionSources {
                cgroup_root: Some(root),
                pods_dir: "/nonexistent".into(),
                containers_dir: "/nonexistent".into(),
            },
            Duration::ZERO,
        );
        assert!(attribution.refresh());
        assert!(matches!(attribution.owner(id), Owner::Container(_)));
        std::fs::remove_dir(&ctr).expect("rmdir");
        assert!(attribution.refresh());
        assert!(!attribution.is_known(id), "dead for GC");
        assert!(
            matches!(attribution.owner(id), Owner::Container(_)),
            "still the container's for the collector"
        );
    }

    #[test]
    fn missing_sources_attribute_everything_to_host() {
        let mut attribution = Attribution::new(
            AttributionSources {
                cgroup_root: Some("/nonexistent/cgroup".into()),
                pods_dir: "/nonexistent/pods".into(),
                containers_dir: "/nonexistent/containers".into(),
            },
            Duration::ZERO,
        );
        attribution.ensure([1, 2, 3]);
        assert_eq!(attribution.owner(1), Owner::Host);
    }
}
