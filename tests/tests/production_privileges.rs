//! The agent as the DaemonSet runs it: in a container (runc, the OCI runtime under
//! containerd and CRI-O) with exactly the manifest's privileges — UID 0 with every
//! capability dropped but `DAC_READ_SEARCH`, no new privileges, a read-only root file
//! system, the host's `/proc`, `/sys` and `/` and `/var/log/pods` bind-mounted read-only,
//! only the state and lock directories and `/tmp` writable — and the Localhost seccomp
//! profile from `deploy/seccomp/`. Metrics, log shipping and the eBPF refusal must behave
//! as outside, and the profile must refuse the file-handle calls that DAC_READ_SEARCH
//! would otherwise open up (the "shocker" container escape).
//!
//! The binary is the test build (dynamically linked), so the host's `/usr/lib` is mounted
//! read-only into the otherwise empty root; `.ci/steps/image.sh` checks the static binary
//! on scratch.

use std::collections::BTreeSet;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use node_agent_tests::agent_proc::agent_binary;
use node_agent_tests::http::free_port;
use node_agent_tests::loggen::{ContainerLog, Format, LineMix};
use node_agent_tests::require;

/// The DaemonSet's capability set (deploy/base/daemonset.yaml).
const CAPS: &[&str] = &["CAP_DAC_READ_SEARCH"];
const WAIT: Duration = Duration::from_secs(30);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn runc() -> Option<PathBuf> {
    let ok = Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        require::missing("runc is not installed (apt-get install runc)");
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        require::missing("running containers with runc needs root");
        return None;
    }
    Some(PathBuf::from("runc"))
}

fn profile(name: &str) -> Value {
    let text = std::fs::read_to_string(workspace().join("deploy/seccomp").join(name))
        .expect("seccomp profile");
    serde_json::from_str(&text).expect("profile is JSON")
}

/// An OCI runtime bundle in `dir`: an empty read-only root with `mounts` on top.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
}

impl Bundle {
    fn new(args: Vec<String>, mounts: Vec<Value>, seccomp: Option<Value>) -> Self {
        let dir = tempfile::tempdir().expect("bundle dir");
        let rootfs = dir.path().join("rootfs");
        for d in ["proc", "dev", "tmp", "usr/lib", "usr/lib64", "bin"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/lib", rootfs.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", rootfs.join("lib64")).unwrap();
        let mut all = vec![
            json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]}),
            bind("/usr/lib", "/usr/lib", true),
        ];
        if Path::new("/usr/lib64").is_dir() {
            all.push(bind("/usr/lib64", "/usr/lib64", true));
        }
        // Mount points in the read-only root: a directory, or an empty file for a file.
        for m in &mounts {
            let (Some(d), Some(src)) = (m["destination"].as_str(), m["source"].as_str()) else {
                continue;
            };
            let target = rootfs.join(d.trim_start_matches('/'));
            if Path::new(src).is_file() {
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::write(&target, b"").unwrap();
            } else {
                std::fs::create_dir_all(&target).unwrap();
            }
        }
        all.extend(mounts);
        let caps: Vec<&str> = CAPS.to_vec();
        // The DaemonSet's runtime gives 65536 files; this shell may allow fewer, and runc
        // cannot raise a hard limit.
        let nofile = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map_or(1024, |(_, hard)| hard.min(65536));
        let mut linux = json!({
            // No network namespace: the test scrapes it on loopback, as Prometheus
            // scrapes the pod IP.
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        });
        if let Some(profile) = seccomp {
            linux["seccomp"] = profile;
        }
        let config = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "NODE_NAME=prod-node", "POD_NAME=node-agent-x",
                        "POD_NAMESPACE=node-agent"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps,
                                 "inheritable": [], "ambient": []},
                "noNewPrivileges": true,
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "node-agent",
            "mounts": all,
            "linux": linux,
        });
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let id = format!(
            "node-agent-test-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
                .trim_start_matches('.')
        );
        Self { dir, id }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("runc-state")
    }

    fn spawn(&self, runc: &Path) -> tokio::process::Child {
        tokio::process::Command::new(runc)
            .arg("--root")
            .arg(self.state())
            .args(["run", "--bundle"])
            .arg(self.dir.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("runc run")
    }

    fn kill(&self, runc: &Path, signal: &str) {
        let _ = Command::new(runc)
            .arg("--root")
            .arg(self.state())
            .args(["kill", &self.id, signal])
            .output();
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.state())
            .args(["delete", "--force", &self.id])
            .output();
    }
}

fn bind(source: impl AsRef<Path>, destination: &str, readonly: bool) -> Value {
    let mut options = vec!["rbind", "nosuid", "nodev"];
    if readonly {
        options.push("ro");
    }
    json!({"destination": destination, "type": "bind",
           "source": source.as_ref().to_string_lossy(), "options": options})
}

/// The node's host paths, laid out like the DaemonSet's hostPath volumes.
struct Node {
    root: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        for d in ["pods", "state", "run", "config"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        std::fs::write(
            root.path().join("config/config.yaml"),
            "logs:\n  pods_dir: /var/log/pods\n  state_dir: /var/lib/node-agent\n\
             sinks:\n  - type: file\n    path: /var/lib/node-agent/shipped.jsonl\n\
             handover:\n  lock_file: /var/run/node-agent/leader.lock\n\
             kubernetes:\n  enabled: false\n",
        )
        .unwrap();
        Self { root }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root.path().join(p)
    }

    fn mounts(&self, binary: &Path) -> Vec<Value> {
        vec![
            bind(binary, "/bin/node-agent", true),
            bind("/proc", "/host/proc", true),
            bind("/sys", "/host/sys", true),
            bind("/", "/host/root", true),
            bind(self.path("pods"), "/var/log/pods", true),
            bind(self.path("state"), "/var/lib/node-agent", false),
            bind(self.path("run"), "/var/run/node-agent", false),
            bind(self.path("config"), "/etc/node-agent", true),
        ]
    }
}

fn agent_args(port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "/bin/node-agent",
        "--path.procfs=/host/proc",
        "--path.sysfs=/host/sys",
        "--path.rootfs=/host/root",
        "--config.file=/etc/node-agent/config.yaml",
        "--log.format=json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("--web.listen-address=127.0.0.1:{port}"));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn get(port: u16, path: &str) -> Option<String> {
    let client = reqwest::Client::builder().no_proxy().build().ok()?;
    let resp = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    resp.status().is_success().then_some(())?;
    resp.text().await.ok()
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Collectors that report `node_scrape_collector_success 0`.
fn failing_collectors(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with("node_scrape_collector_success{") && l.ends_with(" 0"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_works_with_exactly_the_daemonsets_privileges() {
    let Some(runc) = runc() else { return };
    let binary = agent_binary().unwrap();
    let node = Node::new();

    // A CRI-O style log: 0600 in a 0700 directory of another user, readable only through
    // DAC_READ_SEARCH.
    let mut log =
        ContainerLog::create(&node.path("pods"), "shop", "web-1", "app", Format::Cri).unwrap();
    let lines = log.write_lines(100, &LineMix::plain(80)).unwrap();
    log.flush().unwrap();
    for p in [log.path(), log.dir(), log.pod_dir()] {
        chown(p, Some(4242), Some(4242)).unwrap();
        let mode = if p.is_dir() { 0o700 } else { 0o600 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    let port = free_port();
    let bundle = Bundle::new(
        agent_args(port, &["--collector.syscalls"]),
        node.mounts(binary),
        Some(profile("node-agent.json")),
    );
    let child = bundle.spawn(&runc);
    let mut output = tokio::spawn(child.wait_with_output());

    // Metrics: the same collectors succeed as for the same binary run as full root.
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        if let Some(m) = get(port, "/metrics").await {
            break m;
        }
        if output.is_finished() || tokio::time::Instant::now() >= deadline {
            bundle.kill(&runc, "KILL");
            let out = (&mut output).await.unwrap().unwrap();
            panic!(
                "no /metrics from the container: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for name in [
        "node_load1 ",
        "node_cpu_seconds_total{",
        "node_memory_MemTotal_bytes ",
        "node_filesystem_size_bytes{",
        "node_network_receive_bytes_total{",
        "node_agent_leader 1",
    ] {
        assert!(
            metrics.contains(name),
            "missing {name} in the container's metrics"
        );
    }
    let inside = failing_collectors(&metrics);
    let reference = reference_failures(binary).await;
    let inside_node: BTreeSet<String> = inside
        .iter()
        .filter(|c| *c != "syscalls")
        .cloned()
        .collect();
    assert_eq!(
        inside_node, reference,
        "collectors failing with the DaemonSet's privileges but not as root (or the reverse)"
    );

    // Log shipping: every line of the 0600 file reaches the sink once.
    let shipped = node.path("state/shipped.jsonl");
    wait_for("all 100 lines shipped", || {
        std::fs::read_to_string(&shipped).is_ok_and(|t| t.lines().count() >= lines.len())
    })
    .await;
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert_eq!(text.lines().count(), lines.len(), "duplicates shipped");
    for line in &lines {
        assert!(text.contains(line.as_str()), "not shipped: {line}");
    }

    // SIGTERM as the kubelet sends it: drained, checkpointed, stopped.
    bundle.kill(&runc, "TERM");
    let out = tokio::time::timeout(WAIT, output)
        .await
        .expect("stops on SIGTERM")
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("node-agent stopped"), "{stderr}");
    assert!(node.path("state/logs-checkpoint.json").exists(), "{stderr}");
    // eBPF without CAP_BPF/PERFMON: refused with the reason, everything else kept serving.
    #[cfg(feature = "ebpf")]
    assert!(
        stderr.contains("syscall monitoring disabled")
            && stderr.to_lowercase().contains("capabilit"),
        "{stderr}"
    );
    #[cfg(not(feature = "ebpf"))]
    assert!(
        stderr.contains("syscalls collector unavailable"),
        "{stderr}"
    );
}

/// The same binary and collectors outside any container, as full root.
async fn reference_failures(binary: &Path) -> BTreeSet<String> {
    let port = free_port();
    // Metrics only: no log shipping from this host, its own lock.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "logs:\n  enabled: false\n  state_dir: {:?}\nhandover:\n  lock_file: {:?}\nkubernetes:\n  enabled: false\n",
            dir.path().join("state"),
            dir.path().join("leader.lock")
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(binary)
        .args([
            format!("--web.listen-address=127.0.0.1:{port}"),
            format!("--config.file={}", config.display()),
            "--log.level=error".into(),
        ])
        .env("NODE_NAME", "prod-node")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let metrics = loop {
        if let Some(m) = get(port, "/metrics").await {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reference agent silent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill().await;
    failing_collectors(&metrics)
}

/// The Localhost profile refuses name_to_handle_at / open_by_handle_at even though the
/// container holds DAC_READ_SEARCH; without it the same calls go through.
#[test]
fn the_seccomp_profile_refuses_file_handles() {
    let Some(runc) = runc() else { return };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("probe.c");
    std::fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    struct file_handle *h = malloc(sizeof(*h) + MAX_HANDLE_SZ);
    h->handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    int r = name_to_handle_at(AT_FDCWD, "/probe", h, &mount_id, 0);
    printf("name_to_handle_at=%d errno=%d\n", r, r ? errno : 0);
    int fd = open_by_handle_at(AT_FDCWD, h, O_RDONLY);
    printf("open_by_handle_at=%d errno=%d\n", fd < 0 ? -1 : 0, fd < 0 ? errno : 0);
    return 0;
}
"#,
    )
    .unwrap();
    let probe = dir.path().join("probe");
    let cc = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&probe)
        .arg(&src)
        .output();
    match cc {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("gcc -static: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            require::missing(&format!("gcc is needed for the probe: {e}"));
            return;
        }
    }
    let run = |seccomp: Option<Value>| -> String {
        let bundle = Bundle::new(
            vec!["/probe".into()],
            vec![bind(&probe, "/probe", true)],
            seccomp,
        );
        let out = Command::new(&runc)
            .arg("--root")
            .arg(bundle.state())
            .args(["run", "--bundle"])
            .arg(bundle.dir.path())
            .arg(&bundle.id)
            .stdin(Stdio::null())
            .output()
            .expect("runc run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let without = run(None);
    assert!(without.contains("name_to_handle_at=0 errno=0"), "{without}");
    assert!(without.contains("open_by_handle_at=0 errno=0"), "{without}");
    for name in ["node-agent.json", "node-agent-ebpf.json"] {
        let with = run(Some(profile(name)));
        assert!(
            with.contains("name_to_handle_at=-1 errno=1"),
            "{name}: {with}"
        );
        assert!(
            with.contains("open_by_handle_at=-1 errno=1"),
            "{name}: {with}"
        );
    }
}

/// The seccomp components name profiles that exist, and render into the DaemonSet.
#[test]
fn seccomp_components_use_the_shipped_profiles() {
    let root = workspace();
    for (component, file) in [
        ("seccomp", "node-agent.json"),
        ("seccomp-ebpf", "node-agent-ebpf.json"),
    ] {
        let text = std::fs::read_to_string(
            root.join("deploy/components")
                .join(component)
                .join("kustomization.yaml"),
        )
        .unwrap();
        assert!(
            text.contains(&format!("localhostProfile: node-agent/{file}")),
            "{component}"
        );
        assert!(root.join("deploy/seccomp").join(file).is_file(), "{file}");
        let Some(kubectl) = node_agent_tests::manifests::kubectl() else {
            require::missing("kubectl is needed to render the kustomize component");
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let base = root.join("deploy/base").canonicalize().unwrap();
        let comp = root
            .join("deploy/components")
            .join(component)
            .canonicalize()
            .unwrap();
        // kustomize refuses resources outside the kustomization root: link them in.
        std::os::unix::fs::symlink(&base, dir.path().join("base")).unwrap();
        std::os::unix::fs::symlink(&comp, dir.path().join("component")).unwrap();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            "resources: [base]\ncomponents: [component]\n",
        )
        .unwrap();
        let out = Command::new(kubectl)
            .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8_lossy(&out.stdout);
        assert!(rendered.contains("type: Localhost"), "{rendered}");
        assert!(rendered.contains(&format!("localhostProfile: node-agent/{file}")));
    }
}

/// The audit component mounts the audit log directory read-only into the DaemonSet.
#[test]
fn audit_component_mounts_the_audit_log_read_only() {
    let Some(kubectl) = node_agent_tests::manifests::kubectl() else {
        require::missing("kubectl is needed to render the kustomize component");
        return;
    };
    let root = workspace();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        root.join("deploy/base").canonicalize().unwrap(),
        dir.path().join("base"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        root.join("deploy/components/audit").canonicalize().unwrap(),
        dir.path().join("component"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "resources: [base]\ncomponents: [component]\n",
    )
    .unwrap();
    let out = Command::new(kubectl)
        .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<serde_yaml_ng::Value> = rendered
        .split("\n---\n")
        .filter_map(|d| serde_yaml_ng::from_str(d).ok())
        .collect();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet rendered");
    let mounts = ds["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_sequence()
        .unwrap();
    let audit = mounts
        .iter()
        .find(|m| m["name"] == "audit-log")
        .expect("audit-log mount");
    assert_eq!(audit["mountPath"], "/var/log/kubernetes/audit");
    assert_eq!(audit["readOnly"], true);
}
