//! Runtime security on the real kernel: the eBPF capture (exec/fork/exit with process
//! context, filtered opens, connect, ptrace, unshare, mount) feeding the default Falco rules
//! in-process. Each test does the real action in a child placed in a cgroup laid out like a
//! Kubernetes container (and in private mount/network namespaces where it changes the
//! system), waits for the alert and checks its fields, and runs a control action first that
//! must not alert (the ring buffer is ordered, so the control's records were handled before
//! the alert that ends the wait). Root, BTF and cgroup v2 needed.
#![cfg(feature = "ebpf")]

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use node_agent::host::HostPaths;
use node_agent::security::alert::Alert;
use node_agent::security::config::SecurityConfig;
use node_agent::syscalls::loader::{CaptureSettings, LoadedProgram};
use node_agent::syscalls::security::{Capture, CaptureHandle};
use node_agent::syscalls::{SyscallsConfig, cgroups};

const POD_UID: &str = "5ec0a1b2-4e5f-6789-abcd-ef0123456789";
/// Longest wait for an alert; only reached when it never comes (the test then fails).
const ALERT_WAIT: Duration = Duration::from_secs(20);

fn skip_reason() -> Option<String> {
    if let Err(reason) = node_agent::syscalls::support::check(&HostPaths::default()) {
        return Some(reason.to_string());
    }
    if cgroups::detect_v2_root(&HostPaths::default()).is_none() {
        return Some("no cgroup v2 hierarchy".into());
    }
    for tool in [
        "script", "unshare", "setpriv", "strace", "ip", "python3", "tee", "cat",
    ] {
        if which(tool).is_none() {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

macro_rules! require_capture {
    () => {
        match shared() {
            Some(shared) => Session {
                shared,
                _not_during_a_storm: not_during_a_storm(),
            },
            None => {
                node_agent_tests::require::missing(
                    &skip_reason().unwrap_or_else(|| "capture unavailable".into()),
                );
                return;
            }
        }
    };
}

/// The exec storms fill the ring buffers (every capture on the machine sees their execs):
/// they hold this for writing, every other test for reading, so that no other test's
/// records are dropped while a storm runs.
static STORM: RwLock<()> = RwLock::new(());

fn not_during_a_storm() -> RwLockReadGuard<'static, ()> {
    STORM.read().unwrap_or_else(PoisonError::into_inner)
}

/// The shared capture, for one test that is not a storm.
struct Session {
    shared: &'static Shared,
    _not_during_a_storm: RwLockReadGuard<'static, ()>,
}

impl std::ops::Deref for Session {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        self.shared
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// One capture for every test of this file (loading the programs once).
struct Shared {
    tools: PathBuf,
    _inner: Mutex<(
        LoadedProgram,
        Option<CaptureHandle>,
        tokio::runtime::Runtime,
    )>,
}

fn shared() -> Option<&'static Shared> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if skip_reason().is_some() {
                return None;
            }
            Some(start())
        })
        .as_ref()
}

fn start() -> Shared {
    let tools = std::env::temp_dir().join(format!("node-agent-sec-tools-{}", std::process::id()));
    // Copies under other names: the rules judge programs by name.
    for (dir, name, from) in [
        ("script", "runc", "script"),
        ("env", "runc", "env"),
        ("bin", "confd", "tee"),
        ("bin", "tracer-evil", "strace"),
        ("bin", "tracer-known", "strace"),
    ] {
        let dir = tools.join(dir);
        std::fs::create_dir_all(&dir).expect("tools dir");
        let to = dir.join(name);
        std::fs::copy(which(from).expect("tool"), &to).expect("copy tool");
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut config: SecurityConfig = serde_yaml_ng::from_str(
        "enabled: true\nlists: { known_ptrace_binaries: [tracer-known] }\nrate_limit: { enabled: false }\n",
    )
    .expect("security config");
    config.outputs.stdout.enabled = false;
    let config = node_agent::syscalls::security::with_v2_cgroup_root(config, &HostPaths::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut capture =
        Capture::from_config(&config, runtime.handle(), None).expect("engine from config");
    let settings = CaptureSettings::from_security(&config, capture.engine.required_event_types());
    let pin_path =
        PathBuf::from("/sys/fs/bpf").join(format!("node-agent-sec-{}", std::process::id()));
    let syscalls = SyscallsConfig {
        pin_path: pin_path.clone(),
        map_entries: 4096,
        ..SyscallsConfig::default()
    };
    let mut program = LoadedProgram::load_with_capture(&syscalls, &settings)
        .unwrap_or_else(|e| panic!("load + attach the capture: {e:#}"));
    let shared_alerts: &'static Mutex<Vec<Alert>> = Box::leak(Box::new(Mutex::new(Vec::new())));
    capture.observer = Some(Box::new(move |a: &Alert| {
        shared_alerts.lock().unwrap().push(a.clone())
    }));
    if std::env::var_os("SECURITY_TEST_DEBUG").is_some() {
        capture.event_observer = Some(Box::new(|e| {
            if !matches!(e.comm.as_str(), "cargo" | "rustc") {
                use std::io::Write as _;
                // Not eprintln: the test harness would capture it into the first test.
                let _ = writeln!(
                    std::io::stderr(),
                    "event: {:?} {} pid={} ppid={} cg={} {:?}",
                    e.event_type,
                    e.comm,
                    e.pid,
                    e.ppid,
                    e.cgroup_id,
                    e.args
                );
            }
        }));
    }
    let debug = capture.event_observer.take();
    capture.event_observer = Some(Box::new({
        let mut debug = debug;
        move |e| {
            if e.event_type == node_agent::security::event::EventType::Execve {
                *EXECS.lock().unwrap().entry(e.cgroup_id).or_default() += 1;
            }
            if let Some(d) = &mut debug {
                d(e);
            }
        }
    }));
    let map = program.take_events().expect("EVENTS map");
    let handle = node_agent::syscalls::security::capture::spawn(map, capture).expect("reader");
    // The pins stay only while the test binary runs.
    for map in ["COUNTS", "STATS"] {
        let _ = std::fs::remove_file(pin_path.join(map));
    }
    let _ = std::fs::remove_dir(&pin_path);
    Shared {
        tools,
        _inner: Mutex::new((program, Some(handle), runtime)),
    }
    .with_alerts(shared_alerts)
}

impl Shared {
    /// Points `alerts` at the list the observer fills.
    fn with_alerts(self, list: &'static Mutex<Vec<Alert>>) -> Shared {
        ALERTS.set(list).ok();
        self
    }

    fn tool(&self, dir: &str, name: &str) -> PathBuf {
        self.tools.join(dir).join(name)
    }
}

static ALERTS: OnceLock<&'static Mutex<Vec<Alert>>> = OnceLock::new();
/// Exec records seen, by cgroup id.
static EXECS: Mutex<std::collections::BTreeMap<u64, u64>> =
    Mutex::new(std::collections::BTreeMap::new());

fn all_alerts() -> Vec<Alert> {
    ALERTS
        .get()
        .map(|a| a.lock().unwrap().clone())
        .unwrap_or_default()
}

/// A cgroup that looks like a Kubernetes container (cgroupfs driver layout).
struct Container {
    root: PathBuf,
    dirs: Vec<PathBuf>,
    leaf: PathBuf,
    id: String,
}

impl Container {
    fn new(name: &str) -> Container {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let (pid, seq) = (std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let root = cgroups::detect_v2_root(&HostPaths::default()).expect("cgroup v2");
        // Distinct in its first 12 characters: the short id rules print.
        let id = format!("{pid:08x}{seq:04x}{:052x}", 0x5ecu32);
        let mut dirs = Vec::new();
        let mut dir = root.join(format!("node-agent-sec-{pid}-{seq}-{name}"));
        for part in ["", "kubepods", "besteffort", &format!("pod{POD_UID}"), &id] {
            if !part.is_empty() {
                dir = dir.join(part);
            }
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            dirs.push(dir.clone());
        }
        if std::env::var_os("SECURITY_TEST_DEBUG").is_some() {
            use std::os::unix::fs::MetadataExt as _;
            eprintln!(
                "container {} cg={}",
                &id[..12],
                std::fs::metadata(&dir).unwrap().ino()
            );
        }
        Container {
            root,
            dirs,
            leaf: dir,
            id,
        }
    }

    /// A command whose process joins this container's cgroup before it execs.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let procs =
            CString::new(self.leaf.join("cgroup.procs").to_str().expect("utf-8")).expect("no NUL");
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls (open, write, close, setsid) in the child.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                // No controlling terminal unless the action makes one.
                libc::setsid();
                Ok(())
            });
        }
        cmd
    }

    fn run(&self, mut cmd: Command) {
        let out = cmd.output().expect("spawn");
        assert!(
            out.status.success(),
            "{cmd:?} failed: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Alerts of `rule` from this container.
    fn alerts(&self, rule: &str) -> Vec<Alert> {
        all_alerts()
            .into_iter()
            .filter(|a| {
                &*a.rule == rule
                    && a.output_fields.get("container.id").and_then(|v| v.as_str())
                        == Some(self.short_id())
            })
            .collect()
    }

    /// Waits until an alert of `rule` from this container satisfies `pred`.
    fn wait_for(&self, rule: &str, pred: impl Fn(&Alert) -> bool) -> Alert {
        let deadline = Instant::now() + ALERT_WAIT;
        loop {
            if let Some(a) = self.alerts(rule).into_iter().find(|a| pred(a)) {
                return a;
            }
            if Instant::now() > deadline {
                if std::env::var_os("SECURITY_TEST_DEBUG").is_some() {
                    for a in all_alerts() {
                        eprintln!("alert: {}", a.output);
                    }
                }
                panic!(
                    "no '{rule}' alert from container {}; alerts from it: {:#?}",
                    self.short_id(),
                    all_alerts()
                        .iter()
                        .filter(
                            |a| a.output_fields.get("container.id").and_then(|v| v.as_str())
                                == Some(self.short_id())
                        )
                        .map(|a| a.output.clone())
                        .collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = &self.root;
    }
}

fn field<'a>(alert: &'a Alert, name: &str) -> &'a str {
    alert
        .output_fields
        .get(name)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("{name} missing from {:?}", alert.output_fields))
}

#[test]
fn terminal_shell_in_container_needs_a_tty() {
    let shared = require_capture!();
    let c = Container::new("tty");
    // Control: the same entrypoint-spawned shell without a terminal.
    let mut control = c.command(shared.tool("env", "runc"));
    control.args(["sh", "-c", "true"]);
    c.run(control);
    // A shell on a pty, as `kubectl exec -it` gives: `script` (named runc) runs $SHELL.
    let mut tty = c.command(shared.tool("script", "runc"));
    tty.env("SHELL", "/bin/sh")
        .args(["-qec", "true", "/dev/null"]);
    c.run(tty);
    let alert = c.wait_for("Terminal shell in container", |a| {
        field(a, "proc.name") == "sh"
    });
    assert_eq!(field(&alert, "proc.pname"), "runc");
    assert_ne!(
        alert.output_fields["proc.tty"],
        serde_json::json!(0),
        "{:?}",
        alert.output_fields
    );
    assert_eq!(
        c.alerts("Terminal shell in container").len(),
        1,
        "the control alerted too"
    );
}

#[test]
fn write_below_etc_and_read_of_a_planted_shadow_file() {
    let shared = require_capture!();
    let c = Container::new("etc");
    let confd = shared.tool("bin", "confd");
    // A private mount namespace with a tmpfs over /etc: the host's /etc is untouched.
    let script = format!(
        "mount -t tmpfs tmpfs /etc && \
         echo control | {confd} /etc/known-writer.conf >/dev/null && \
         echo 'root:*:19000:0:99999:7:::' > /etc/shadow && \
         read line < /etc/shadow && \
         echo evil | tee /etc/node-agent-evil.conf >/dev/null && \
         cat /etc/shadow >/dev/null",
        confd = confd.display()
    );
    let mut cmd = c.command("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    c.run(cmd);

    let write = c.wait_for("Write below etc", |a| {
        field(a, "fd.name") == "/etc/node-agent-evil.conf"
    });
    assert_eq!(field(&write, "proc.name"), "tee");
    let read = c.wait_for("Read sensitive file untrusted", |a| {
        field(a, "proc.name") == "cat"
    });
    assert_eq!(field(&read, "fd.name"), "/etc/shadow");
    // Controls: the known config writer, and the shell's own read of the file.
    let writes = c.alerts("Write below etc");
    assert!(
        !writes.iter().any(|a| field(a, "proc.name") == "confd"),
        "known writer alerted: {writes:#?}"
    );
    let reads = c.alerts("Read sensitive file untrusted");
    assert_eq!(reads.len(), 1, "{reads:#?}");
}

#[test]
fn connect_to_a_miner_pool_port() {
    let _shared = require_capture!();
    let c = Container::new("miner");
    // A network namespace of its own, with a public-looking address on its loopback (the
    // rule ignores loopback and private destinations). 8080 first: not a pool port.
    let py = "import socket\n\
        for port in (8080, 3333):\n\
        \x20   srv = socket.socket(); srv.bind(('198.51.100.7', port)); srv.listen(1)\n\
        \x20   cli = socket.create_connection(('198.51.100.7', port)); cli.close(); srv.close()\n";
    let script =
        format!("ip link set lo up && ip addr add 198.51.100.7/32 dev lo && python3 -c \"{py}\"");
    let mut cmd = c.command("unshare");
    cmd.args(["-n", "sh", "-c", &script]);
    c.run(cmd);
    let rule = "Detect outbound connections to common miner pool ports";
    let alert = c.wait_for(rule, |_| true);
    assert_eq!(field(&alert, "fd.rip"), "198.51.100.7");
    assert_eq!(alert.output_fields["fd.rport"], serde_json::json!(3333));
    assert!(
        field(&alert, "proc.name").starts_with("python"),
        "{alert:?}"
    );
    assert_eq!(c.alerts(rule).len(), 1, "port 8080 alerted too");
}

#[test]
fn unshare_without_cap_sys_admin() {
    let _shared = require_capture!();
    let c = Container::new("unshare");
    // Control: root (CAP_SYS_ADMIN) may make namespaces.
    let mut root = c.command("unshare");
    root.args(["-U", "true"]);
    c.run(root);
    // nobody without capabilities: the user-namespace escalation first step. Whether the
    // kernel allows it does not matter, the attempt is what the rule reports.
    let mut nobody = c.command("setpriv");
    nobody.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "sh",
        "-c",
        "unshare -U true || true",
    ]);
    c.run(nobody);
    let rule = "Change namespace privileges via unshare";
    let alert = c.wait_for(rule, |a| {
        a.output_fields.get("user.uid") == Some(&serde_json::json!(65534))
    });
    assert_eq!(field(&alert, "proc.name"), "unshare");
    assert_eq!(c.alerts(rule).len(), 1, "root's unshare alerted too");
}

#[test]
fn ptrace_attach_by_an_unknown_program() {
    let shared = require_capture!();
    let c = Container::new("ptrace");
    // Control: a tracer listed in known_ptrace_binaries; then an unknown one.
    for tracer in ["tracer-known", "tracer-evil"] {
        let mut cmd = c.command(shared.tool("bin", tracer));
        cmd.args(["-f", "-o", "/dev/null", "true"]);
        c.run(cmd);
    }
    let rule = "PTRACE attached to process";
    let alert = c.wait_for(rule, |a| field(a, "proc.name") == "tracer-evil");
    assert!(alert.output.contains("PTRACE_"), "{}", alert.output);
    assert!(
        !c.alerts(rule)
            .iter()
            .any(|a| field(a, "proc.name") == "tracer-known"),
        "the known tracer alerted"
    );
}

#[test]
fn exec_records_carry_process_context() {
    let _shared = require_capture!();
    let c = Container::new("ctx");
    // Any alert's fields show the context the kernel sent: argv, parent, user.
    let mut cmd = c.command("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /etc && tee /etc/ctx-check /etc/ctx-other </dev/null",
    ]);
    c.run(cmd);
    let alert = c.wait_for("Write below etc", |a| {
        field(a, "fd.name") == "/etc/ctx-check"
    });
    assert_eq!(
        field(&alert, "proc.cmdline"),
        "tee /etc/ctx-check /etc/ctx-other"
    );
    assert_eq!(field(&alert, "proc.pname"), "sh");
    assert_eq!(field(&alert, "user.name"), "root");
}

/// proc.exepath is the executable the kernel ran, not the name the caller gave: a program
/// started through a symlink by a relative path shows the symlink's target, absolute.
#[test]
fn exec_through_a_relative_symlink_shows_the_real_path() {
    let _shared = require_capture!();
    let c = Container::new("exepath");
    let tee = std::fs::canonicalize(which("tee").expect("tee on PATH")).expect("tee's real path");
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(&tee, dir.path().join("linked-tee")).expect("symlink");
    let mut cmd = c.command("unshare");
    cmd.current_dir(dir.path()).args([
        "-m",
        "sh",
        "-c",
        // tee stays alive until sleep ends: the agent resolves proc.exepath from
        // /proc/PID/exe when the record arrives, which a process that already exited
        // no longer has (the test was flaky with `</dev/null`).
        "mount -t tmpfs tmpfs /etc && sleep 1 | ./linked-tee /etc/exepath-check",
    ]);
    c.run(cmd);
    let alert = c.wait_for("Write below etc", |a| {
        field(a, "fd.name") == "/etc/exepath-check"
    });
    assert_eq!(field(&alert, "proc.exepath"), tee.to_string_lossy());
    assert_eq!(
        field(&alert, "proc.cmdline"),
        "linked-tee /etc/exepath-check"
    );
}

/// The leader's path: `run_leader` with `security.enabled` attaches the capture, and an
/// alert reaches both the log pipeline (a `security` record with rule and priority fields)
/// and the Falco JSON file output, both with the container's Kubernetes metadata from the
/// cache (synced from the fake API server, which runs a pod with the container's id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::await_holding_lock,
    reason = "the storm lock is taken by storms on their own test threads, never inside this runtime"
)]
async fn run_leader_sends_alerts_to_the_log_pipeline_and_the_falco_file() {
    use node_agent::core::record::SourceKind;
    use node_agent::syscalls::security::{AlertSender, SecurityOptions};
    if shared().is_none() {
        node_agent_tests::require::missing(
            &skip_reason().unwrap_or_else(|| "capture unavailable".into()),
        );
        return;
    }
    let _not_during_a_storm = not_during_a_storm();
    let dir = tempfile::tempdir().expect("tempdir");
    let alerts_file = dir.path().join("alerts.json");
    let mut config: SecurityConfig = serde_yaml_ng::from_str(&format!(
        "enabled: true\nhostname: node-test\noutputs:\n  stdout: {{ enabled: false }}\n  file: {{ enabled: true, path: {} }}\n",
        alerts_file.display()
    ))
    .expect("security config");
    config.rate_limit.enabled = false;
    let (tx, rx) = AlertSender::channel(256, "node-test");
    let pin_path =
        PathBuf::from("/sys/fs/bpf").join(format!("node-agent-sec-leader-{}", std::process::id()));
    let c = Container::new("leader");
    let cache_stop = tokio_util::sync::CancellationToken::new();
    let (_server, cache) = kube_cache_running(&c.id, dir.path(), &cache_stop).await;
    let options = node_agent::syscalls::SyscallsOptions {
        config: SyscallsConfig {
            pin_path: pin_path.clone(),
            map_entries: 4096,
            ..SyscallsConfig::default()
        },
        pods_dir: dir.path().join("pods"),
        containers: std::sync::Arc::new(cache),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let leader = tokio::spawn(node_agent::syscalls::run_leader(
        options,
        HostPaths::default(),
        Some(SecurityOptions {
            config,
            alerts: Some(tx),
        }),
        stop.clone(),
    ));
    let target = "/etc/leader-check";
    let deadline = Instant::now() + ALERT_WAIT;
    // Repeat the action until the leader (attaching in the background) reports it.
    let record = 'found: loop {
        assert!(
            Instant::now() < deadline,
            "no alert reached the log pipeline"
        );
        let mut cmd = c.command("unshare");
        cmd.args([
            "-m",
            "sh",
            "-c",
            &format!("mount -t tmpfs tmpfs /etc && echo x | tee {target} >/dev/null"),
        ]);
        tokio::task::spawn_blocking({
            let out = cmd;
            move || {
                let mut out = out;
                out.output().expect("spawn")
            }
        })
        .await
        .expect("join");
        while let Ok(record) = rx.recv_timeout(Duration::from_millis(300)) {
            let fields = record.fields.clone().unwrap_or_default();
            if fields.get("rule").and_then(|r| r.as_str()) == Some("Write below etc")
                && fields["output_fields"]["fd.name"] == target
            {
                break 'found record;
            }
        }
    };
    stop.cancel();
    leader.await.expect("join").expect("leader");
    for map in ["COUNTS", "STATS"] {
        let _ = std::fs::remove_file(pin_path.join(map));
    }
    let _ = std::fs::remove_dir(&pin_path);

    cache_stop.cancel();
    assert_eq!(record.source.kind, SourceKind::Security);
    assert_eq!(record.source.node, "node-test");
    let fields = record.fields.expect("fields");
    assert_eq!(fields["priority"], "Error");
    let metadata = |f: &serde_json::Value| {
        [
            "container.name",
            "container.image",
            "k8s.ns.name",
            "k8s.pod.name",
            "k8s.workload.name",
        ]
        .map(|k| f[k].as_str().unwrap_or("<NA>").to_string())
    };
    let expected = ["app", "nginx:1.27", "shop", "web-1", "web"].map(str::to_string);
    assert_eq!(metadata(&fields["output_fields"]), expected);
    assert_eq!(fields["hostname"], "node-test");
    assert!(
        record
            .message
            .contains("File below /etc opened for writing"),
        "{}",
        record.message
    );
    // The same alert as a Falco JSON line in the file output.
    let text = std::fs::read_to_string(&alerts_file).expect("alerts file");
    let line = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
        .find(|v| v["rule"] == "Write below etc" && v["output_fields"]["fd.name"] == target)
        .expect("the alert in the Falco file output");
    for key in [
        "time",
        "rule",
        "priority",
        "output",
        "output_fields",
        "hostname",
        "tags",
        "source",
    ] {
        assert!(line.get(key).is_some(), "{key} missing from {line}");
    }
    assert_eq!(line["hostname"], "node-test");
    assert_eq!(metadata(&line["output_fields"]), expected);
}

/// The fake API server with pod shop/web-1 (Deployment web) running container `id`, and
/// a metadata cache synced from it (in-cluster files under `dir`).
async fn kube_cache_running(
    id: &str,
    dir: &Path,
    stop: &tokio_util::sync::CancellationToken,
) -> (
    node_agent_tests::receivers::apiserver::ApiServer,
    node_agent::kube_cache::MetadataCache,
) {
    use node_agent_tests::receivers::apiserver::{self, ApiServer, INITIAL_TOKEN, PodBuilder};
    let server = ApiServer::start().await.expect("fake API server");
    std::fs::write(dir.join("ca.crt"), server.ca_pem()).expect("ca");
    std::fs::write(dir.join("token"), INITIAL_TOKEN).expect("token");
    server.upsert(apiserver::node("node-test", &[]));
    server.upsert(apiserver::namespace("shop", &[], &[]));
    server.upsert(
        PodBuilder::new("shop", "web-1", POD_UID, "node-test")
            .label("app", "web")
            .label("pod-template-hash", "7d4b9c8f6")
            .owner("ReplicaSet", "web-7d4b9c8f6")
            .container("app", "nginx:1.27")
            .container_id("app", id)
            .build(),
    );
    let config = node_agent::kube_cache::KubeConfig {
        enabled: Some(true),
        api_server_url: Some(server.url()),
        token_file: dir.join("token"),
        ca_file: dir.join("ca.crt"),
        node_name: "node-test".into(),
        ..Default::default()
    };
    let cache = node_agent::kube_cache::MetadataCache::start(&config, stop)
        .await
        .expect("cache");
    assert!(cache.wait_synced(Duration::from_secs(10)).await);
    (server, cache)
}

/// Execs of the storm per chain (one chain per CPU): ~5 s at 10,000 execs/s.
const STORM_PER_CHAIN: u64 = 25_000;

/// The driver built for this test run, or why it cannot be.
fn storm_driver(dir: &std::path::Path) -> Option<PathBuf> {
    if let Some(reason) = node_agent_tests::exec_storm::unavailable() {
        node_agent_tests::require::missing(&reason);
        return None;
    }
    Some(node_agent_tests::exec_storm::build(dir).expect("building the exec_storm driver"))
}

fn cgroup_id(c: &Container) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(&c.leaf).expect("stat the cgroup").ino()
}

/// An exec storm (a static driver exec'ing itself in chains, one per CPU) in one
/// container, through the shared capture and the default rules: every exec is either
/// delivered to the security pipeline or counted in the ring buffer's drop counter, none
/// lost silently. Prints the rate reached.
///
/// The drop counter is the program's, for every kind of record from every process, so
/// "every exec accounted" reads: `seen <= execs <= seen + dropped` (and `seen == execs`
/// when nothing was dropped).
#[test]
fn exec_storm_every_exec_is_delivered_or_counted() {
    let Some(shared) = shared() else {
        node_agent_tests::require::missing(
            &skip_reason().unwrap_or_else(|| "capture unavailable".into()),
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(driver) = storm_driver(dir.path()) else {
        return;
    };
    let _alone = STORM.write().unwrap_or_else(PoisonError::into_inner);
    let dropped = || {
        shared
            ._inner
            .lock()
            .unwrap()
            .0
            .events_dropped()
            .expect("STATS")
    };
    let c = Container::new("storm");
    let cgroup = cgroup_id(&c);
    let dropped_before = dropped();
    let chains = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let storm = node_agent_tests::exec_storm::run(
        &driver,
        &c.leaf.join("cgroup.procs"),
        chains,
        STORM_PER_CHAIN,
    )
    .expect("exec storm");
    // Until the reader has caught up: everything seen, or what it saw stops growing.
    let seen = || EXECS.lock().unwrap().get(&cgroup).copied().unwrap_or(0);
    let deadline = Instant::now() + ALERT_WAIT;
    let mut last = seen();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = seen();
        if now >= storm.execs || now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let (seen, dropped) = (seen(), dropped() - dropped_before);
    println!(
        "exec storm: {} execs in {:.2} s = {:.0} execs/s ({chains} chains); exec records delivered {seen}, ring-buffer drops (all kinds) {dropped}",
        storm.execs,
        storm.elapsed.as_secs_f64(),
        storm.per_second()
    );
    assert!(seen <= storm.execs, "more exec records than execs");
    assert!(
        seen + dropped >= storm.execs,
        "{} execs neither delivered nor counted as dropped",
        storm.execs - seen - dropped
    );
}

/// A reader that does not read: the ring buffer fills, and every exec that does not fit is
/// counted in the drop counter, none vanishes. A capture of its own (execs only, its own
/// ring buffer and counters) whose ring buffer is read only after the storm.
#[test]
fn a_stalled_reader_makes_drops_counted_not_silent() {
    use node_agent::security::event::{BootClock, EventType, EventTypeSet, wire};
    if shared().is_none() {
        node_agent_tests::require::missing(
            &skip_reason().unwrap_or_else(|| "capture unavailable".into()),
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(driver) = storm_driver(dir.path()) else {
        return;
    };
    let _alone = STORM.write().unwrap_or_else(PoisonError::into_inner);
    let pin_path =
        PathBuf::from("/sys/fs/bpf").join(format!("node-agent-sec-stall-{}", std::process::id()));
    let syscalls = SyscallsConfig {
        pin_path: pin_path.clone(),
        map_entries: 1024,
        ..SyscallsConfig::default()
    };
    let settings = CaptureSettings {
        kinds: EventTypeSet::only(EventType::Execve),
        open_read_prefixes: Vec::new(),
        open_write_prefixes: Vec::new(),
    };
    let mut program = LoadedProgram::load_with_capture(&syscalls, &settings)
        .unwrap_or_else(|e| panic!("load + attach a second capture: {e:#}"));
    let mut ring = aya::maps::RingBuf::try_from(program.take_events().expect("EVENTS"))
        .expect("EVENTS is a ring buffer");
    for map in ["COUNTS", "STATS"] {
        let _ = std::fs::remove_file(pin_path.join(map));
    }
    let _ = std::fs::remove_dir(&pin_path);

    let c = Container::new("stall");
    let cgroup = cgroup_id(&c);
    // Far more exec records than the 4 MiB ring buffer holds (each is over 1 KiB).
    let storm = node_agent_tests::exec_storm::run(&driver, &c.leaf.join("cgroup.procs"), 1, 20_000)
        .expect("exec storm");
    // The storm's drops all happened by now; then detach (the ring buffer's map stays open,
    // `ring` owns it) so that nothing enters the ring while it is drained.
    let dropped = program.events_dropped().expect("STATS");
    drop(program);
    let clock = BootClock::now().expect("boot clock");
    let (mut seen, mut records) = (0u64, 0u64);
    while let Some(item) = ring.next() {
        records += 1;
        let event = wire::decode(&item, &clock).expect("a record the program wrote");
        if event.event_type == EventType::Execve && event.cgroup_id == cgroup {
            seen += 1;
        }
    }
    println!(
        "stalled reader: {} execs; {seen} exec records of the storm in the ring ({records} in all), {dropped} drops counted",
        storm.execs
    );
    assert!(dropped > 0, "the ring buffer never filled");
    assert!(seen < storm.execs, "every exec fitted: not a stall");
    assert!(seen > 0, "nothing reached the ring");
    assert!(
        seen + dropped >= storm.execs,
        "{} execs neither in the ring nor counted as dropped",
        storm.execs - seen - dropped
    );
}
