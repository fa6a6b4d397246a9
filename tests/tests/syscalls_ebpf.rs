//! Real eBPF tests: load the `sys_enter` program into this kernel, run a child process in a
//! fresh cgroup v2 that looks like a Kubernetes container, and check the pinned counters and
//! the collector's series. Need root (CAP_BPF+CAP_PERFMON) and BTF; skip with a printed
//! reason otherwise. Run with `cargo test -p node-agent-tests --features ebpf`.
#![cfg(feature = "ebpf")]

use std::ffi::CString;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use node_agent::host::HostPaths;
use node_agent::metrics::MetricSet;
use node_agent::syscalls::loader::{LoadedProgram, PinnedMaps};
use node_agent::syscalls::{
    SysKey, SyscallsConfig, SyscallsOptions, build_collector, cgroups, names,
};

const GETPPID_CALLS: u64 = 10_000;

/// Returns why this host can't run the tests, if it can't.
fn skip_reason() -> Option<String> {
    if let Err(reason) = node_agent::syscalls::support::check(&HostPaths::default()) {
        return Some(reason.to_string());
    }
    if cgroups::detect_v2_root(&HostPaths::default()).is_none() {
        return Some("no cgroup v2 hierarchy".into());
    }
    None
}

macro_rules! require_ebpf {
    () => {
        if let Some(reason) = skip_reason() {
            node_agent_tests::require::missing(&reason);
            return;
        }
    };
}

/// A scratch area: a pin directory in bpffs, a fake container cgroup and kubelet log dirs.
struct Fixture {
    pin_path: PathBuf,
    cgroup_root: PathBuf,
    /// Created cgroup directories, outermost first.
    cgroups: Vec<PathBuf>,
    container_cgroup: PathBuf,
    /// A sibling cgroup that is not a container (attributed to the host).
    host_cgroup: PathBuf,
    logs: tempfile::TempDir,
}

const POD_UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";

impl Fixture {
    fn new(name: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let (pid, seq) = (std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let unique = format!("node-agent-test-{pid}-{seq}-{name}");
        let cgroup_root = cgroups::detect_v2_root(&HostPaths::default()).expect("cgroup v2");
        // cgroupfs-driver layout: <root>/<unique>/kubepods/besteffort/pod<uid>/<container id>.
        let container_id = format!("{:064x}", (u128::from(pid) << 32) | u128::from(seq));
        let mut cgroups = Vec::new();
        let mut dir = cgroup_root.join(&unique);
        for part in [
            "",
            "kubepods",
            "besteffort",
            &format!("pod{POD_UID}"),
            &container_id,
        ] {
            if !part.is_empty() {
                dir = dir.join(part);
            }
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            cgroups.push(dir.clone());
        }
        let host_cgroup = cgroup_root.join(format!("{unique}-host"));
        std::fs::create_dir(&host_cgroup).expect("mkdir host cgroup");
        cgroups.push(host_cgroup.clone());
        let logs = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(
            logs.path()
                .join(format!("pods/testns_testpod_{POD_UID}/app")),
        )
        .expect("pods dir");
        std::fs::create_dir_all(logs.path().join("containers")).expect("containers dir");
        std::fs::write(
            logs.path()
                .join(format!("containers/testpod_testns_app-{container_id}.log")),
            "",
        )
        .expect("container link");
        Self {
            pin_path: PathBuf::from("/sys/fs/bpf").join(&unique),
            cgroup_root,
            container_cgroup: dir,
            host_cgroup,
            cgroups,
            logs,
        }
    }

    fn config(&self) -> SyscallsConfig {
        SyscallsConfig {
            pin_path: self.pin_path.clone(),
            cgroup_root: Some(self.cgroup_root.clone()),
            map_entries: 4096,
            ..SyscallsConfig::default()
        }
    }

    fn cgroup_id(&self) -> u64 {
        std::fs::metadata(&self.container_cgroup)
            .expect("stat")
            .ino()
    }

    fn count(&self, nr: u64) -> u64 {
        let maps = PinnedMaps::open(&self.pin_path).expect("open pinned maps");
        let id = self.cgroup_id();
        maps.counts()
            .expect("read counts")
            .into_iter()
            .filter(|(cgroup, n, _)| *cgroup == id && *n == nr)
            .map(|(_, _, c)| c)
            .sum()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Children before parents; the host cgroup (last) has none.
        for dir in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        for map in ["COUNTS", "STATS"] {
            let _ = std::fs::remove_file(self.pin_path.join(map));
        }
        let _ = std::fs::remove_dir(&self.pin_path);
    }
}

/// Forks a child that joins `cgroup`, calls getppid `n` times and exits; waits for it.
fn run_getppid_in(cgroup: &Path, n: u64) {
    run_syscall_in(cgroup, libc::SYS_getppid, n);
}

/// Held from fork to reap. A child inherits every fd of this process, including the link of a
/// program another test is detaching, and keeps that program attached until it exits; the lock
/// makes "detached" mean detached once the detaching test's next child can run.
static CHILDREN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Forks a child that joins `cgroup`, makes syscall `nr` (argument 0) `n` times and exits.
fn run_syscall_in(cgroup: &Path, nr: libc::c_long, n: u64) {
    let _only_child = CHILDREN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let procs =
        CString::new(cgroup.join("cgroup.procs").to_str().expect("utf-8 path")).expect("no NUL");
    // SAFETY: the child only makes raw syscalls (open/write/getppid/_exit) on data prepared
    // before the fork: no allocation or locking, so forking a threaded test process is fine.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            // "0" means "the writing process".
            if fd < 0 || libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(2);
            }
            libc::close(fd);
            for _ in 0..n {
                libc::syscall(nr, 0);
            }
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed to join {} (status {status})",
            cgroup.display()
        );
    }
}

fn getppid_nr() -> u64 {
    names::syscall_nr("getppid").expect("getppid in the table")
}

#[test]
fn counts_syscalls_of_a_container_cgroup_and_exports_them() {
    require_ebpf!();
    let fixture = Fixture::new("count");
    let program = LoadedProgram::load(&fixture.config()).expect("load + attach");
    run_getppid_in(&fixture.container_cgroup, GETPPID_CALLS);

    let counted = fixture.count(getppid_nr());
    assert!(
        counted >= GETPPID_CALLS,
        "counted {counted} < {GETPPID_CALLS}"
    );
    // Numbers that are no syscall (ENOSYS) share one slot of the packed key, counted
    // exactly all the same.
    run_syscall_in(&fixture.container_cgroup, 4000, 7);
    run_syscall_in(&fixture.container_cgroup, 100_000, 5);
    assert_eq!(fixture.count(SysKey::NR_INVALID), 12);
    // x32 numbers (bit 30; they reach sys_enter whether or not x32 is enabled) keep their
    // own slots.
    #[cfg(target_arch = "x86_64")]
    {
        let x32 = SysKey::X32_SYSCALL_BIT;
        run_syscall_in(
            &fixture.container_cgroup,
            (x32 + getppid_nr()) as libc::c_long,
            9,
        );
        assert_eq!(fixture.count(x32 + getppid_nr()), 9);
    }

    // The collector reads the pinned map and attributes the cgroup to the fake container.
    let paths = HostPaths::default();
    let options = SyscallsOptions {
        config: fixture.config(),
        pods_dir: fixture.logs.path().join("pods"),
        ..Default::default()
    };
    let collector = build_collector(&options, &paths).expect("collector builds");
    let mut set = MetricSet::new();
    collector.update(&mut set).expect("collector update");
    let families = set.into_families();
    let total = families
        .iter()
        .find(|f| f.name() == "node_agent_syscalls_total")
        .expect("node_agent_syscalls_total");
    let exported = |syscall: &str| {
        total
            .get_metric()
            .iter()
            .find(|m| {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                };
                label("syscall").as_deref() == Some(syscall)
                    && label("namespace").as_deref() == Some("testns")
                    && label("pod").as_deref() == Some("testpod")
                    && label("container").as_deref() == Some("app")
            })
            .map(|m| m.get_counter().get_value())
    };
    let value = exported("getppid").expect("series for the test container");
    assert!(value >= GETPPID_CALLS as f64, "exported {value}");
    assert_eq!(exported("invalid"), Some(12.0));
    for name in [
        "node_agent_syscalls_map_overflow_total",
        "node_agent_syscalls_map_entries",
        "node_agent_syscalls_map_max_entries",
    ] {
        assert!(families.iter().any(|f| f.name() == name), "{name} missing");
    }
    drop(program);
}

#[test]
fn pinned_counters_continue_across_a_reload() {
    require_ebpf!();
    let fixture = Fixture::new("handover");
    let nr = getppid_nr();

    let first = LoadedProgram::load(&fixture.config()).expect("first load");
    run_getppid_in(&fixture.container_cgroup, GETPPID_CALLS);
    let before = fixture.count(nr);
    assert!(before >= GETPPID_CALLS, "first leader counted {before}");
    drop(first); // the old leader exits: program detached, pins stay

    assert!(
        fixture.pin_path.join("COUNTS").exists(),
        "pin removed on drop"
    );
    assert_eq!(
        fixture.count(nr),
        before,
        "detached program still counting?"
    );

    let second = LoadedProgram::load(&fixture.config()).expect("second load reuses the pins");
    assert!(
        fixture.count(nr) >= before,
        "counter went backwards after reload"
    );
    run_getppid_in(&fixture.container_cgroup, GETPPID_CALLS);
    let after = fixture.count(nr);
    assert!(
        after >= before + GETPPID_CALLS,
        "second leader did not continue the count: {before} then {after}"
    );
    drop(second);
}

// The security capture (process context, rules, alerts) is tested in security_ebpf.rs.

#[test]
fn gc_drops_dead_cgroups_and_keeps_host_totals() {
    require_ebpf!();
    use node_agent::syscalls::cgroups::{Attribution, RETIRED_HOST_CGROUP_ID};

    let fixture = Fixture::new("gc");
    let nr = getppid_nr();
    let program = LoadedProgram::load(&fixture.config()).expect("load + attach");
    run_getppid_in(&fixture.container_cgroup, GETPPID_CALLS);
    run_getppid_in(&fixture.host_cgroup, GETPPID_CALLS);

    let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
    let (container_id, host_id) = (ino(&fixture.container_cgroup), ino(&fixture.host_cgroup));
    let options = SyscallsOptions {
        config: fixture.config(),
        pods_dir: fixture.logs.path().join("pods"),
        ..Default::default()
    };
    let mut attribution = Attribution::new(
        options.attribution_sources(&HostPaths::default()),
        std::time::Duration::ZERO,
    );
    assert!(attribution.refresh());
    let mut maps = PinnedMaps::open(&fixture.pin_path).expect("open pins");
    let count_of = |maps: &PinnedMaps, id: u64| -> u64 {
        maps.counts()
            .expect("counts")
            .into_iter()
            .filter(|(c, n, _)| *c == id && *n == nr)
            .map(|(_, _, v)| v)
            .sum()
    };
    let retired_before = count_of(&maps, RETIRED_HOST_CGROUP_ID);
    let host_count = count_of(&maps, host_id);
    assert!(host_count >= GETPPID_CALLS);

    // Both cgroups die (their processes have exited).
    std::fs::remove_dir(&fixture.container_cgroup).expect("rmdir container cgroup");
    std::fs::remove_dir(&fixture.host_cgroup).expect("rmdir host cgroup");
    let stats = maps.collect_garbage(&mut attribution).expect("gc pass");
    assert!(stats.container_entries >= 1, "{stats:?}");
    assert!(stats.host_entries >= 1, "{stats:?}");

    let rows = maps.counts().expect("counts");
    assert!(
        !rows
            .iter()
            .any(|(c, _, _)| *c == container_id || *c == host_id),
        "entries of dead cgroups left in the map"
    );
    let retired_after = count_of(&maps, RETIRED_HOST_CGROUP_ID);
    assert!(
        retired_after >= retired_before + host_count,
        "host counts lost: retired {retired_before} -> {retired_after}, dead host cgroup had {host_count}"
    );
    drop(program);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_leader_attaches_until_shutdown_and_keeps_the_pins() {
    require_ebpf!();
    let fixture = Fixture::new("leader");
    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("config.yaml");
    std::fs::write(
        &config_file,
        format!(
            "logs:\n  pods_dir: {}\nsyscalls:\n  pin_path: {}\n  cgroup_root: {}\n",
            fixture.logs.path().join("pods").display(),
            fixture.pin_path.display(),
            fixture.cgroup_root.display()
        ),
    )
    .expect("write config");
    let config = node_agent::config::Config::from_args([
        "node-agent",
        "--collector.syscalls",
        "--config.file",
        config_file.to_str().expect("utf-8"),
    ])
    .expect("valid config");

    let stop = tokio_util::sync::CancellationToken::new();
    let leader = tokio::spawn(node_agent::syscalls::run_leader(
        config.syscalls_options(),
        config.metrics.paths.clone(),
        None,
        stop.clone(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The pins appear when the maps are created, slightly before the program is attached;
    // attached means something (e.g. this loop's own sleeps) has been counted.
    let attached = || {
        PinnedMaps::open(&fixture.pin_path)
            .and_then(|maps| maps.counts())
            .is_ok_and(|rows| !rows.is_empty())
    };
    while !attached() {
        assert!(
            std::time::Instant::now() < deadline,
            "leader did not attach"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let cgroup = fixture.container_cgroup.clone();
    tokio::task::spawn_blocking(move || run_getppid_in(&cgroup, GETPPID_CALLS))
        .await
        .expect("child");
    let counted = fixture.count(getppid_nr());
    assert!(
        counted >= GETPPID_CALLS,
        "leader's program counted {counted}"
    );

    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), leader)
        .await
        .expect("leader stops promptly")
        .expect("leader task")
        .expect("leader result");
    // Detached: new syscalls are not counted, but the pinned counts remain. (A child of a
    // concurrent test forked before the detach held the link until it exited: see CHILDREN.)
    let cgroup = fixture.container_cgroup.clone();
    tokio::task::spawn_blocking(move || run_getppid_in(&cgroup, 100))
        .await
        .expect("child");
    assert_eq!(fixture.count(getppid_nr()), counted);
}

#[test]
fn collector_reports_no_data_before_any_leader_pinned_the_maps() {
    require_ebpf!();
    let paths = HostPaths::default();
    let options = SyscallsOptions {
        config: SyscallsConfig {
            pin_path: format!("/sys/fs/bpf/node-agent-test-{}-absent", std::process::id()).into(),
            ..SyscallsConfig::default()
        },
        pods_dir: "/nonexistent".into(),
        ..Default::default()
    };
    let collector =
        build_collector(&options, &paths).expect("collector builds on a supported kernel");
    let mut set = MetricSet::new();
    assert!(matches!(
        collector.update(&mut set),
        Err(node_agent::metrics::CollectorError::NoData)
    ));
}

/// Creates a per-CPU hash map with 16-byte keys (the former (cgroup id, nr) layout, not
/// the packed `SysKey`) and pins it at `path`.
fn pin_foreign_map(path: &Path) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
    let mut create = [0u8; 128];
    for (i, v) in [BPF_MAP_TYPE_PERCPU_HASH, 16, 8, 16]
        .into_iter()
        .enumerate()
    {
        create[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    // SAFETY: bpf(2) with a zero-padded bpf_attr of the documented layout.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, create.as_ptr(), 128) };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c_path = CString::new(path.to_str().expect("utf-8")).expect("no NUL");
    let mut pin = [0u8; 128];
    pin[..8].copy_from_slice(&(c_path.as_ptr() as u64).to_ne_bytes());
    pin[8..12].copy_from_slice(&(fd as u32).to_ne_bytes());
    // SAFETY: as above; c_path outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, pin.as_ptr(), 128) };
    assert_eq!(rc, 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: fd is ours; the pin keeps the map alive.
    unsafe { libc::close(fd as i32) };
}

#[test]
fn a_pinned_map_of_another_layout_is_replaced() {
    require_ebpf!();
    let fixture = Fixture::new("layout");
    node_agent::syscalls::loader::ensure_bpffs(&fixture.pin_path).expect("bpffs");
    pin_foreign_map(&fixture.pin_path.join("COUNTS"));
    let program = LoadedProgram::load(&fixture.config()).expect("load replaces the stale pin");
    run_getppid_in(&fixture.container_cgroup, 100);
    assert!(fixture.count(getppid_nr()) >= 100);
    drop(program);
}

/// `syscalls.kube_labels` end to end: the real counters of a fake container, attributed
/// through its cgroup, labelled from the Kubernetes metadata cache synced from the fake
/// API server, which runs a pod with that container id.
#[test]
fn kube_labels_come_from_the_metadata_cache() {
    use node_agent_tests::receivers::apiserver::{self, ApiServer, INITIAL_TOKEN, PodBuilder};
    require_ebpf!();
    let fixture = Fixture::new("kube");
    let container_id = fixture
        .container_cgroup
        .file_name()
        .and_then(|n| n.to_str())
        .expect("container id")
        .to_string();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (_server, cache) = runtime.block_on(async {
        let server = ApiServer::start().await.expect("fake API server");
        let dir = fixture.logs.path();
        std::fs::write(dir.join("ca.crt"), server.ca_pem()).expect("ca");
        std::fs::write(dir.join("token"), INITIAL_TOKEN).expect("token");
        server.upsert(apiserver::node("node-1", &[]));
        server.upsert(apiserver::namespace("testns", &[], &[]));
        server.upsert(
            PodBuilder::new("testns", "testpod", POD_UID, "node-1")
                .label("app", "web")
                // The hash names the ReplicaSet's Deployment (`web`).
                .label("pod-template-hash", "7d4b9c8f6")
                .owner("ReplicaSet", "web-7d4b9c8f6")
                .container("app", "nginx:1.27")
                .container_id("app", &container_id)
                .build(),
        );
        let config = node_agent::kube_cache::KubeConfig {
            enabled: Some(true),
            api_server_url: Some(server.url()),
            token_file: dir.join("token"),
            ca_file: dir.join("ca.crt"),
            node_name: "node-1".into(),
            ..Default::default()
        };
        let cache = node_agent::kube_cache::MetadataCache::start(&config, &shutdown)
            .await
            .expect("cache");
        assert!(cache.wait_synced(std::time::Duration::from_secs(10)).await);
        (server, cache)
    });

    let program = LoadedProgram::load(&fixture.config()).expect("load + attach");
    run_getppid_in(&fixture.container_cgroup, GETPPID_CALLS);
    let mut config = fixture.config();
    config.kube_labels =
        serde_yaml_ng::from_str("{app: \"label:app\", workload: workload}").expect("kube_labels");
    let options = SyscallsOptions {
        config,
        pods_dir: fixture.logs.path().join("pods"),
        containers: std::sync::Arc::new(cache),
    };
    let collector = build_collector(&options, &HostPaths::default()).expect("collector builds");
    let mut set = MetricSet::new();
    collector.update(&mut set).expect("collector update");
    let families = set.into_families();
    let total = families
        .iter()
        .find(|f| f.name() == "node_agent_syscalls_total")
        .expect("node_agent_syscalls_total");
    let rows: Vec<(std::collections::BTreeMap<String, String>, f64)> = total
        .get_metric()
        .iter()
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect();
            (labels, m.get_counter().get_value())
        })
        .collect();
    let get = |l: &std::collections::BTreeMap<String, String>, k: &str| {
        l.get(k).cloned().unwrap_or_else(|| "<none>".into())
    };
    let (labels, value) = rows
        .iter()
        // Other tests' fixtures (run in parallel) share the pod uid, not the container.
        .find(|(l, _)| {
            get(l, "syscall") == "getppid"
                && get(l, "pod") == "testpod"
                && get(l, "container") == "app"
        })
        .expect("series for the test container");
    assert_eq!(get(labels, "app"), "web", "{labels:?}");
    assert_eq!(get(labels, "workload"), "web", "{labels:?}");
    assert!(*value >= GETPPID_CALLS as f64, "exported {value}");
    // Host series carry the labels, empty.
    assert!(
        rows.iter()
            .any(|(l, _)| get(l, "pod").is_empty() && get(l, "app").is_empty()),
        "{rows:?}"
    );
    drop(program);
    shutdown.cancel();
}
