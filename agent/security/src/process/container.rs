//! cgroup → container id, and the container metadata rules read (`container.*`, `k8s.*`).
//!
//! A process belongs to a container when one component of its cgroup v2 path names a
//! container id, in the layouts of the CRI runtimes and docker:
//! `…/cri-containerd-<id>.scope`, `…/crio-<id>.scope`, `…/docker-<id>.scope`,
//! `…/libpod-<id>.scope` (systemd driver), `…/kubepods/<qos>/pod<uid>/<id>` and
//! `/docker/<id>` (cgroupfs driver). The deepest such component wins, so a container that
//! makes its own sub-cgroups stays attributed to itself. CRI-O's `crio-conmon-<id>` is the
//! monitor, not the container.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node_agent_core::kube::{ContainerFound, SharedContainerLookup};
use rustc_hash::FxHashMap;

/// The full (64 hex) container id in a cgroup path, if any (the deepest component that
/// names one; the layouts are in `node_agent_core::cgroup`, shared with the syscall
/// counters).
pub fn container_id_from_cgroup_path(path: &str) -> Option<String> {
    node_agent_core::cgroup::container_id_from_path(path)
}

/// What the node knows about a container, from the Kubernetes metadata cache or the
/// runtime. Every field is optional: a missing value reads as `<NA>` in outputs and makes
/// comparisons false, as in Falco.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Container name (in Kubernetes, the pod spec's container name).
    pub name: Option<String>,
    /// Image reference as in the pod spec (`docker.io/library/nginx:1.25`).
    pub image: Option<String>,
    /// Image without tag and digest (`docker.io/library/nginx`).
    pub image_repository: Option<String>,
    pub image_tag: Option<String>,
    pub image_digest: Option<String>,
    pub privileged: Option<bool>,
    pub k8s: Option<PodInfo>,
}

impl ContainerInfo {
    /// Fills `image_repository`/`image_tag`/`image_digest` from `image` where unset.
    pub fn with_image_parts(mut self) -> ContainerInfo {
        if let Some(image) = self.image.clone() {
            let (rest, digest) = match image.split_once('@') {
                Some((rest, digest)) => (rest.to_string(), Some(digest.to_string())),
                None => (image, None),
            };
            // A ':' after the last '/' separates the tag (a registry port comes before).
            let (repo, tag) = match rest.rfind(':') {
                Some(i) if !rest[i..].contains('/') => {
                    (rest[..i].to_string(), Some(rest[i + 1..].to_string()))
                }
                _ => (rest, None),
            };
            self.image_repository.get_or_insert(repo);
            if let Some(tag) = tag {
                self.image_tag.get_or_insert(tag);
            }
            if let Some(digest) = digest {
                self.image_digest.get_or_insert(digest);
            }
        }
        self
    }
}

/// The pod a container belongs to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// The workload owning the pod (`Deployment`, `web`), `None` for a bare pod.
    pub workload: Option<(String, String)>,
}

/// Container id → metadata. The agent implements it over its Kubernetes metadata cache
/// (which must not block: this is called on the event path).
pub trait ContainerMetadata: Send + Sync {
    fn lookup(&self, container_id: &str) -> Option<Arc<ContainerInfo>>;
}

/// No metadata: container ids only.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetadata;

impl ContainerMetadata for NoMetadata {
    fn lookup(&self, _container_id: &str) -> Option<Arc<ContainerInfo>> {
        None
    }
}

/// A fixed map (tests, or a source that knows its containers up front).
#[derive(Debug, Default, Clone)]
pub struct StaticMetadata(pub FxHashMap<String, Arc<ContainerInfo>>);

impl StaticMetadata {
    pub fn insert(&mut self, info: ContainerInfo) {
        self.0.insert(info.id.clone(), Arc::new(info));
    }
}

impl ContainerMetadata for StaticMetadata {
    fn lookup(&self, container_id: &str) -> Option<Arc<ContainerInfo>> {
        self.0.get(container_id).cloned()
    }
}

/// The node's Kubernetes metadata cache by container id (`node_agent_core::kube`), as
/// the rules read it. Converted answers are memoized per container until the cache's
/// generation moves, so an event costs a hash lookup, not a copy of the pod's labels.
pub struct KubeMetadata {
    lookup: SharedContainerLookup,
    memo: Mutex<Memo>,
}

#[derive(Default)]
struct Memo {
    generation: u64,
    found: FxHashMap<Box<str>, Arc<ContainerInfo>>,
}

/// Containers memoized at most (a node runs a few hundred); more clear the memo.
const MEMO_MAX: usize = 4096;

impl KubeMetadata {
    pub fn new(lookup: SharedContainerLookup) -> KubeMetadata {
        KubeMetadata {
            lookup,
            memo: Mutex::new(Memo::default()),
        }
    }
}

impl std::fmt::Debug for KubeMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeMetadata")
    }
}

impl ContainerMetadata for KubeMetadata {
    fn lookup(&self, container_id: &str) -> Option<Arc<ContainerInfo>> {
        let generation = self.lookup.generation();
        // Only this engine's thread takes the lock; a poisoned memo is just a cache.
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if memo.generation != generation {
            memo.generation = generation;
            memo.found.clear();
        }
        if let Some(info) = memo.found.get(container_id) {
            return Some(Arc::clone(info));
        }
        // Unknown containers are not memoized: a pod's watch event may be about to
        // arrive, and a miss costs no more than a hit in the cache.
        let info = Arc::new(container_info(
            container_id,
            &self.lookup.container(container_id)?,
        ));
        if memo.found.len() >= MEMO_MAX {
            memo.found.clear();
        }
        memo.found.insert(container_id.into(), Arc::clone(&info));
        Some(info)
    }
}

/// The rules' view of a container the metadata cache found.
pub fn container_info(id: &str, found: &ContainerFound) -> ContainerInfo {
    let m = &found.metadata;
    let image = m
        .container
        .as_ref()
        .map(|c| c.image.clone())
        .filter(|i| !i.is_empty());
    let digest = m
        .container
        .as_ref()
        .and_then(|c| c.image_digest())
        .map(str::to_string);
    ContainerInfo {
        id: id.to_string(),
        name: Some(found.container.clone()),
        image,
        image_digest: digest,
        k8s: Some(PodInfo {
            namespace: found.namespace.clone(),
            name: found.pod.clone(),
            uid: found.pod_uid.clone(),
            labels: m.labels.clone(),
            workload: m
                .workload
                .as_ref()
                .map(|w| (w.kind.clone(), w.name.clone())),
        }),
        ..Default::default()
    }
    .with_image_parts()
}

/// cgroup v2 id (what eBPF's `bpf_get_current_cgroup_id()` returns: the inode of the
/// cgroup directory) → container id, cached.
///
/// A miss is resolved through `/proc/PID/cgroup` of the event's process (one small read and
/// a stat), and failing that by walking the cgroup tree, at most once per
/// `min_walk_interval`. The cache holds at most `max_entries` ids; when full it is cleared
/// (ids of deleted cgroups are never reused by live ones, so a clear only costs re-reads).
#[derive(Debug)]
pub struct CgroupResolver {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
    cache: FxHashMap<u64, Option<Arc<str>>>,
    max_entries: usize,
    min_walk_interval: Duration,
    last_walk: Option<Instant>,
    /// Misses resolved by a tree walk, or not at all (exposed as a counter).
    pub walks: u64,
}

impl CgroupResolver {
    pub fn new(cgroup_root: PathBuf, proc_root: PathBuf) -> CgroupResolver {
        CgroupResolver {
            cgroup_root,
            proc_root,
            cache: FxHashMap::default(),
            max_entries: 65_536,
            min_walk_interval: Duration::from_secs(1),
            last_walk: None,
            walks: 0,
        }
    }

    /// Records a known mapping (the process table does, while bootstrapping from /proc).
    pub fn remember(&mut self, cgroup_id: u64, container_id: Option<Arc<str>>) {
        if cgroup_id == 0 {
            return;
        }
        if self.cache.len() >= self.max_entries {
            self.cache.clear();
        }
        self.cache.insert(cgroup_id, container_id);
    }

    /// The inode of a cgroup path (relative to the v2 root), i.e. its cgroup id.
    pub fn cgroup_id_of(&self, path: &str) -> Option<u64> {
        let rel = path.trim_start_matches('/');
        std::fs::metadata(self.cgroup_root.join(rel))
            .ok()
            .map(|m| m.ino())
    }

    /// The container of cgroup `cgroup_id`, whose member `pid` made the event.
    pub fn resolve(&mut self, cgroup_id: u64, pid: u32) -> Option<Arc<str>> {
        if cgroup_id == 0 {
            return None;
        }
        if let Some(known) = self.cache.get(&cgroup_id) {
            return known.clone();
        }
        if let Some(path) = read_v2_cgroup_path(&self.proc_root, pid)
            && self.cgroup_id_of(&path) == Some(cgroup_id)
        {
            let container = container_id_from_cgroup_path(&path).map(Arc::from);
            self.remember(cgroup_id, container.clone());
            return container;
        }
        // The process may be gone already (short-lived): ask the kernel for the path of
        // the cgroup by its id, before the (rate-limited) walk of the whole tree.
        if let Some(path) = cgroup_path_by_id(&self.cgroup_root, cgroup_id) {
            let container = container_id_from_cgroup_path(&path).map(Arc::from);
            self.remember(cgroup_id, container.clone());
            return container;
        }
        let now = Instant::now();
        if self
            .last_walk
            .is_some_and(|t| now.duration_since(t) < self.min_walk_interval)
        {
            // A walk was made moments ago (before this cgroup existed, maybe): unknown for
            // now, but not remembered as "no container", so the next walk can name it.
            return None;
        }
        self.last_walk = Some(now);
        self.walks += 1;
        self.walk();
        match self.cache.get(&cgroup_id) {
            Some(known) => known.clone(),
            None => {
                // Unknown even after a walk: the cgroup is gone; it was not a container we
                // can name. Remember that so its remaining events cost nothing.
                self.remember(cgroup_id, None);
                None
            }
        }
    }

    /// Walks the cgroup tree, remembering every cgroup (bounded by `max_entries`).
    fn walk(&mut self) {
        let mut stack = vec![(self.cgroup_root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = format!("{rel}/{name}");
                if let Ok(meta) = entry.metadata() {
                    let container = container_id_from_cgroup_path(&child).map(Arc::from);
                    if self.cache.len() >= self.max_entries {
                        return;
                    }
                    self.cache.insert(meta.ino(), container);
                }
                stack.push((entry.path(), child));
            }
        }
    }
}

/// The path (relative to `cgroup_root`, with a leading `/`) of the cgroup v2 directory whose
/// id (inode) is `cgroup_id`: `open_by_handle_at` with the kernfs file handle (type
/// `FILEID_KERNFS`, the 8-byte id) as `name_to_handle_at` gives it on cgroupfs. Needs
/// CAP_DAC_READ_SEARCH; `None` without it or when the cgroup is gone.
pub fn cgroup_path_by_id(cgroup_root: &Path, cgroup_id: u64) -> Option<String> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    #[repr(C)]
    struct KernfsHandle {
        handle_bytes: u32,
        handle_type: i32,
        id: u64,
    }
    const FILEID_KERNFS: i32 = 0xfe;
    let root = std::fs::File::open(cgroup_root).ok()?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id: cgroup_id,
    };
    // SAFETY: a valid directory fd and a file_handle-shaped buffer with 8 handle bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            root.as_raw_fd(),
            &mut handle as *mut KernfsHandle,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    // The link is relative to our mount namespace's view of the cgroup mount: the part
    // below the root is the cgroup path.
    let root_path = std::fs::canonicalize(cgroup_root).ok()?;
    let rel = target.strip_prefix(&root_path).ok()?;
    Some(format!("/{}", rel.to_string_lossy()))
}

/// The cgroup v2 path (`0::/path` line) of a process.
pub fn read_v2_cgroup_path(proc_root: &Path, pid: u32) -> Option<String> {
    let text = read_bounded(&proc_root.join(pid.to_string()).join("cgroup"), 64 * 1024)?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Reads at most `limit` bytes of a (proc) file as text.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Option<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    file.take(limit).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_by_id_when_the_kernel_allows_it() {
        // The v2 root: /sys/fs/cgroup, or its `unified` on hybrid hosts.
        let Some(root) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .map(Path::new)
            .into_iter()
            .find(|r| {
                r.join("cgroup.procs").is_file() && r.join("cgroup.subtree_control").is_file()
            })
        else {
            return;
        };
        let Ok(meta) = std::fs::metadata(root) else {
            return;
        };
        let Some(path) = cgroup_path_by_id(root, meta.ino()) else {
            eprintln!("SKIPPED: open_by_handle_at on cgroupfs not permitted here");
            return;
        };
        assert_eq!(path, "/");
        assert_eq!(cgroup_path_by_id(root, u64::MAX), None);
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn container_ids_from_runtime_layouts() {
        for path in [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods.slice/crio-{ID}.scope/nested/child"),
        ] {
            assert_eq!(
                container_id_from_cgroup_path(&path).as_deref(),
                Some(ID),
                "{path}"
            );
        }
        for path in [
            "/".to_string(),
            "/system.slice/containerd.service".to_string(),
            "/user.slice/user-0.slice/session-1.scope".to_string(),
            format!("/kubepods.slice/crio-conmon-{ID}.scope"),
            format!("/docker/{}", &ID[..63]),
        ] {
            assert_eq!(container_id_from_cgroup_path(&path), None, "{path}");
        }
    }

    #[derive(Default)]
    struct Fake {
        generation: std::sync::atomic::AtomicU64,
        asked: std::sync::atomic::AtomicU64,
        app: Mutex<String>,
    }

    impl node_agent_core::kube::ContainerLookup for Fake {
        fn generation(&self) -> u64 {
            self.generation.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn container(&self, id: &str) -> Option<ContainerFound> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (id == ID).then(|| ContainerFound {
                namespace: "shop".into(),
                pod: "web-1".into(),
                pod_uid: "u1".into(),
                container: "app".into(),
                metadata: Arc::new(node_agent_core::kube::PodMetadata {
                    labels: [("app".to_string(), self.app.lock().unwrap().clone())].into(),
                    workload: Some(node_agent_core::kube::Workload {
                        kind: "Deployment".into(),
                        name: "web".into(),
                    }),
                    container: Some(node_agent_core::kube::ContainerMetadata {
                        image: "nginx:1.27".into(),
                        image_id: "docker.io/library/nginx@sha256:ab12".into(),
                        container_id: format!("containerd://{ID}"),
                    }),
                    ..Default::default()
                }),
            })
        }
    }

    #[test]
    fn kube_metadata_converts_once_per_generation() {
        let fake = Arc::new(Fake::default());
        *fake.app.lock().unwrap() = "web".into();
        let metadata = KubeMetadata::new(fake.clone());
        let info = metadata.lookup(ID).expect("known");
        assert_eq!(info.name.as_deref(), Some("app"));
        assert_eq!(info.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(info.image_repository.as_deref(), Some("nginx"));
        assert_eq!(info.image_tag.as_deref(), Some("1.27"));
        assert_eq!(info.image_digest.as_deref(), Some("sha256:ab12"));
        let pod = info.k8s.as_ref().unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("shop", "web-1")
        );
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            pod.workload,
            Some(("Deployment".to_string(), "web".to_string()))
        );
        assert!(
            Arc::ptr_eq(&info, &metadata.lookup(ID).unwrap()),
            "memoized"
        );
        assert_eq!(fake.asked.load(std::sync::atomic::Ordering::Relaxed), 1);
        *fake.app.lock().unwrap() = "api".into();
        fake.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let info = metadata.lookup(ID).unwrap();
        assert_eq!(
            info.k8s
                .as_ref()
                .unwrap()
                .labels
                .get("app")
                .map(String::as_str),
            Some("api"),
            "the cache changed: converted again"
        );
        assert!(metadata.lookup("unknown").is_none());
    }

    #[test]
    fn image_parts() {
        let info = ContainerInfo {
            image: Some("registry.local:5000/team/app:1.2@sha256:abc".into()),
            ..Default::default()
        }
        .with_image_parts();
        assert_eq!(
            info.image_repository.as_deref(),
            Some("registry.local:5000/team/app")
        );
        assert_eq!(info.image_tag.as_deref(), Some("1.2"));
        assert_eq!(info.image_digest.as_deref(), Some("sha256:abc"));
        let untagged = ContainerInfo {
            image: Some("registry.local:5000/app".into()),
            ..Default::default()
        }
        .with_image_parts();
        assert_eq!(
            untagged.image_repository.as_deref(),
            Some("registry.local:5000/app")
        );
        assert_eq!(untagged.image_tag, None);
    }

    #[test]
    fn resolves_own_cgroup_through_proc() {
        let Some(path) = read_v2_cgroup_path(Path::new("/proc"), std::process::id()) else {
            return crate::skip_test("no cgroup v2 line in /proc/self/cgroup");
        };
        let mut resolver = CgroupResolver::new("/sys/fs/cgroup".into(), "/proc".into());
        let Some(id) = resolver.cgroup_id_of(&path) else {
            return crate::skip_test("cgroup v2 is not mounted at /sys/fs/cgroup");
        };
        let expected = container_id_from_cgroup_path(&path).map(Arc::<str>::from);
        assert_eq!(resolver.resolve(id, std::process::id()), expected);
        assert_eq!(resolver.walks, 0);
        // An id that exists nowhere: one walk, then cached as "not a container".
        assert_eq!(resolver.resolve(u64::MAX - 1, std::process::id()), None);
        assert_eq!(resolver.resolve(u64::MAX - 1, std::process::id()), None);
        assert_eq!(resolver.walks, 1);
    }
}
