//! Renders every kustomize overlay under `deploy/` with `kubectl kustomize` and checks the
//! manifests against each other and against the agent itself (flags, config, endpoints).
//! Skips (with a message) when kubectl is not installed.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_yaml_ng::Value;

/// Every directory `kubectl apply -k` is documented for.
const OVERLAYS: &[&str] = &[
    "deploy/base",
    "deploy/overlays/loki",
    "deploy/overlays/elasticsearch",
    "deploy/overlays/ebpf",
];

/// Kubernetes (IANA service name) limit for port names.
const MAX_PORT_NAME_LEN: usize = 15;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `$KUBECTL` or `kubectl` from PATH, if it runs.
fn kubectl() -> Option<PathBuf> {
    let bin = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    let ok = Command::new(&bin)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|out| out.status.success());
    ok.then_some(bin)
}

struct Rendered {
    overlay: &'static str,
    objects: Vec<Value>,
}

/// All overlays rendered once per test binary; `None` (after a SKIP message) without kubectl.
fn rendered() -> Option<&'static [Rendered]> {
    static RENDERED: OnceLock<Option<Vec<Rendered>>> = OnceLock::new();
    let rendered = RENDERED.get_or_init(|| {
        let Some(kubectl) = kubectl() else {
            node_agent_tests::require::missing("kubectl not found (set KUBECTL or install it)");
            return None;
        };
        Some(
            OVERLAYS
                .iter()
                .map(|overlay| Rendered {
                    overlay,
                    objects: render(&kubectl, overlay),
                })
                .collect(),
        )
    });
    if rendered.is_none() {
        node_agent_tests::require::missing("kubectl not found");
    }
    rendered.as_deref()
}

fn render(kubectl: &Path, overlay: &str) -> Vec<Value> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(workspace_root().join(overlay))
        .output()
        .expect("running kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("kustomize output is UTF-8");
    // kustomize separates documents with a bare `---` line.
    let objects: Vec<Value> = text
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str::<Value>(doc).expect("kustomize output is YAML"))
        .filter(|v| !v.is_null())
        .collect();
    assert!(!objects.is_empty(), "{overlay} renders no object");
    objects
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.all(kind);
        assert_eq!(found.len(), 1, "{}: expected one {kind}", self.overlay);
        found[0]
    }

    fn daemonset(&self) -> &Value {
        self.one("DaemonSet")
    }

    fn pod_spec(&self) -> &Value {
        &self.daemonset()["spec"]["template"]["spec"]
    }

    fn container(&self) -> &Value {
        let containers = seq(&self.pod_spec()["containers"]);
        assert_eq!(containers.len(), 1, "{}: one container", self.overlay);
        &containers[0]
    }

    fn args(&self) -> Vec<&str> {
        seq(&self.container()["args"])
            .iter()
            .map(|a| a.as_str().expect("args are strings"))
            .collect()
    }

    /// The agent's config file as the DaemonSet sees it: the ConfigMap behind the volume
    /// mounted at the directory of `--config.file`.
    fn agent_config_text(&self) -> String {
        let path = self
            .args()
            .iter()
            .find_map(|a| a.strip_prefix("--config.file="))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{}: no --config.file", self.overlay));
        let dir = path.parent().expect("config file in a directory");
        let key = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        let mount = seq(&self.container()["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
            .unwrap_or_else(|| panic!("{}: nothing mounted at {}", self.overlay, dir.display()));
        let volume = seq(&self.pod_spec()["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("mounted volume exists");
        let name = &volume["configMap"]["name"];
        let map = self
            .all("ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == *name)
            .unwrap_or_else(|| panic!("{}: ConfigMap {name:?} not rendered", self.overlay));
        map["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{}: ConfigMap has no {key}", self.overlay))
            .to_string()
    }
}

fn seq(v: &Value) -> &[Value] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().expect("string key").to_string(),
                        v.as_str().expect("string value").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// True when every `selector` pair is among `labels` (and the selector is not empty).
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_labels(r: &Rendered) -> BTreeMap<String, String> {
    str_map(&r.daemonset()["spec"]["template"]["metadata"]["labels"])
}

fn container_port_names(r: &Rendered) -> Vec<String> {
    seq(&r.container()["ports"])
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn daemonset_selector_matches_template_labels() {
    let Some(all) = rendered() else { return };
    for r in all {
        let selector = str_map(&r.daemonset()["spec"]["selector"]["matchLabels"]);
        assert!(
            selects(&selector, &pod_labels(r)),
            "{}: selector {selector:?} does not match the pod labels",
            r.overlay
        );
    }
}

#[test]
fn service_servicemonitor_and_networkpolicy_select_the_pods() {
    let Some(all) = rendered() else { return };
    for r in all {
        let labels = pod_labels(r);
        let service = r.one("Service");
        assert_eq!(service["spec"]["clusterIP"], "None", "headless Service");
        assert!(
            selects(&str_map(&service["spec"]["selector"]), &labels),
            "{}: Service selector does not match the pods",
            r.overlay
        );
        let monitor = r.one("ServiceMonitor");
        assert!(
            selects(
                &str_map(&monitor["spec"]["selector"]["matchLabels"]),
                &str_map(&service["metadata"]["labels"])
            ),
            "{}: ServiceMonitor does not select the Service",
            r.overlay
        );
        let namespace = &r.daemonset()["metadata"]["namespace"];
        assert!(
            seq(&monitor["spec"]["namespaceSelector"]["matchNames"]).contains(namespace),
            "{}: ServiceMonitor does not look in the agent's namespace",
            r.overlay
        );
        let policy = r.one("NetworkPolicy");
        assert!(
            selects(
                &str_map(&policy["spec"]["podSelector"]["matchLabels"]),
                &labels
            ),
            "{}: NetworkPolicy does not apply to the pods",
            r.overlay
        );
    }
}

#[test]
fn port_names_fit_and_service_targets_exist() {
    let Some(all) = rendered() else { return };
    for r in all {
        let container_ports = container_port_names(r);
        let service = r.one("Service");
        let service_ports: Vec<&str> = seq(&service["spec"]["ports"])
            .iter()
            .map(|p| p["name"].as_str().expect("Service ports are named"))
            .collect();
        for name in container_ports
            .iter()
            .map(String::as_str)
            .chain(service_ports.iter().copied())
        {
            assert!(
                name.len() <= MAX_PORT_NAME_LEN
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}: port name {name:?} is not a valid IANA service name",
                r.overlay
            );
        }
        for port in seq(&service["spec"]["ports"]) {
            let target = port["targetPort"]
                .as_str()
                .expect("Service targets a named port (survives port changes)");
            assert!(
                container_ports.iter().any(|p| p == target),
                "{}: Service targetPort {target:?} is not a container port {container_ports:?}",
                r.overlay
            );
        }
        for endpoint in seq(&r.one("ServiceMonitor")["spec"]["endpoints"]) {
            let port = endpoint["port"]
                .as_str()
                .expect("ServiceMonitor uses a port name");
            assert!(
                service_ports.contains(&port),
                "{}: ServiceMonitor port {port:?} is not a Service port",
                r.overlay
            );
        }
        for probe in ["livenessProbe", "readinessProbe"] {
            let port = r.container()[probe]["httpGet"]["port"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: {probe} uses a named port", r.overlay));
            assert!(
                container_ports.iter().any(|p| p == port),
                "{}: {probe} port {port:?}",
                r.overlay
            );
        }
    }
}

#[test]
fn surge_rollout_without_host_ports() {
    let Some(all) = rendered() else { return };
    for r in all {
        let strategy = &r.daemonset()["spec"]["updateStrategy"];
        assert_eq!(strategy["type"], "RollingUpdate", "{}", r.overlay);
        assert_eq!(strategy["rollingUpdate"]["maxSurge"], 1, "{}", r.overlay);
        assert_eq!(
            strategy["rollingUpdate"]["maxUnavailable"], 0,
            "{}",
            r.overlay
        );
        for port in seq(&r.container()["ports"]) {
            assert!(
                port.get("hostPort").is_none(),
                "{}: hostPort blocks the surge pod from scheduling",
                r.overlay
            );
        }
        // hostNetwork makes the API server default hostPort = containerPort in the pod,
        // which blocks the surge pod just the same.
        assert_ne!(
            r.pod_spec()["hostNetwork"],
            true,
            "{}: hostNetwork",
            r.overlay
        );
    }
}

#[test]
fn grace_period_outlasts_the_drain_timeout() {
    let Some(all) = rendered() else { return };
    for r in all {
        let config: Value =
            serde_yaml_ng::from_str(&r.agent_config_text()).expect("config file is YAML");
        let drain = config["logs"]["drain_timeout"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: logs.drain_timeout is set explicitly", r.overlay));
        let drain = node_agent::config::parse_duration(drain).expect("valid drain_timeout");
        let grace = r.pod_spec()["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds is set");
        // The final checkpoint write and the lock release come after the drain: keep a
        // margin of at least 5 s before the kubelet's SIGKILL.
        assert!(
            Duration::from_secs(grace) >= drain + Duration::from_secs(5),
            "{}: terminationGracePeriodSeconds {grace}s must exceed logs.drain_timeout {drain:?} by 5s",
            r.overlay
        );
    }
}

#[test]
fn hardened_security_context() {
    let Some(all) = rendered() else { return };
    for r in all {
        let pod = r.pod_spec();
        let ctx = &r.container()["securityContext"];
        assert_eq!(pod["automountServiceAccountToken"], false, "{}", r.overlay);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{}",
            r.overlay
        );
        assert_eq!(ctx["allowPrivilegeEscalation"], false, "{}", r.overlay);
        assert_eq!(ctx["readOnlyRootFilesystem"], true, "{}", r.overlay);
        assert_ne!(ctx["privileged"], true, "{}", r.overlay);
        assert_eq!(
            seq(&ctx["capabilities"]["drop"]),
            [Value::from("ALL")],
            "{}",
            r.overlay
        );
        let added: Vec<&str> = seq(&ctx["capabilities"]["add"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ebpf = r.overlay.ends_with("ebpf");
        let expected: &[&str] = if ebpf {
            &["DAC_READ_SEARCH", "BPF", "PERFMON", "SYS_RESOURCE"]
        } else {
            &["DAC_READ_SEARCH"]
        };
        assert_eq!(added, expected, "{}: capabilities", r.overlay);
        assert_eq!(
            r.args().contains(&"--collector.syscalls"),
            ebpf,
            "{}: only the ebpf overlay enables the syscall monitor",
            r.overlay
        );
        // Host views are read-only; only state and lock dirs (and, for eBPF, bpffs where
        // the syscall counters are pinned across a handover) are writable.
        let mut writable_paths = vec!["/var/lib/node-agent", "/var/run/node-agent", "/tmp"];
        if ebpf {
            writable_paths.push("/sys/fs/bpf");
        }
        for mount in seq(&r.container()["volumeMounts"]) {
            let path = mount["mountPath"].as_str().expect("mountPath");
            let writable = writable_paths.contains(&path);
            assert_eq!(
                mount["readOnly"] != true,
                writable,
                "{}: {path} read-only = {}",
                r.overlay,
                !writable
            );
        }
    }
}

/// The DaemonSet's arguments are flags the agent accepts (minus the config file, which
/// `configs_parse_as_agent_config` covers).
#[test]
fn daemonset_args_are_agent_flags() {
    let Some(all) = rendered() else { return };
    for r in all {
        let args = r
            .args()
            .into_iter()
            .filter(|a| !a.starts_with("--config.file="));
        let parsed =
            node_agent::config::Config::from_args(std::iter::once("node-agent").chain(args));
        if let Err(err) = parsed {
            panic!(
                "{}: the agent rejects the DaemonSet args: {err:#}",
                r.overlay
            );
        }
    }
}

/// Every overlay's config file is one the agent accepts.
#[test]
fn configs_parse_as_agent_config() {
    let Some(all) = rendered() else { return };
    for r in all {
        if let Err(err) = node_agent::config::FileConfig::parse(&r.agent_config_text()) {
            panic!("{}: the agent rejects its config file: {err:#}", r.overlay);
        }
    }
}

#[test]
fn prometheus_rules_are_complete() {
    let Some(all) = rendered() else { return };
    for r in all {
        let mut names = Vec::new();
        for group in seq(&r.one("PrometheusRule")["spec"]["groups"]) {
            for rule in seq(&group["rules"]) {
                let alert = rule["alert"].as_str().expect("alerting rules only");
                let expr = rule["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{alert}: empty expr");
                assert!(
                    ["critical", "warning"]
                        .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                    "{alert}: severity label"
                );
                assert!(
                    rule["annotations"]["summary"].is_string(),
                    "{alert}: summary"
                );
                names.push(alert.to_string());
            }
        }
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "{}: duplicate alert names", r.overlay);
        for required in [
            "NodeAgentDown",
            "NodeAgentCollectorFailing",
            "NodeAgentLogDeliveryFailing",
            "NodeAgentLogShippingLagging",
            "NodeAgentNoLeader",
            "NodeAgentDeadLetterGrowing",
        ] {
            assert!(
                names.iter().any(|n| n == required),
                "{}: missing {required}",
                r.overlay
            );
        }
    }
}

/// The probe and scrape paths of the manifests answer 200 on a real agent.
#[test]
fn probe_and_scrape_paths_are_served_by_the_agent() {
    let Some(all) = rendered() else { return };
    let mut paths: Vec<String> = Vec::new();
    for r in all {
        for probe in ["livenessProbe", "readinessProbe"] {
            let path = r.container()[probe]["httpGet"]["path"]
                .as_str()
                .expect("probe path");
            paths.push(path.to_string());
        }
        for endpoint in seq(&r.one("ServiceMonitor")["spec"]["endpoints"]) {
            paths.push(endpoint["path"].as_str().unwrap_or("/metrics").to_string());
        }
    }
    paths.sort();
    paths.dedup();
    assert_eq!(paths, ["/healthz", "/metrics", "/readyz"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("config.yaml");
    std::fs::write(
        &config_file,
        format!(
            "logs:\n  enabled: false\n  state_dir: {state}\nhandover:\n  lock_file: {lock}\n",
            state = dir.path().join("state").display(),
            lock = dir.path().join("leader.lock").display(),
        ),
    )
    .expect("write config");
    let addr = free_loopback_addr();
    let config = node_agent::config::Config::from_args([
        "node-agent".to_string(),
        format!("--web.listen-address={addr}"),
        "--collector.disable-defaults".to_string(),
        "--collector.loadavg".to_string(),
        format!("--config.file={}", config_file.display()),
    ])
    .expect("agent config");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let agent = runtime.spawn(node_agent::app::run_until(config, shutdown.clone()));

    wait_for_listener(addr);
    for path in &paths {
        let (status, body) = http_get(addr, path);
        assert_eq!(status, 200, "GET {path}: {body}");
        if path == "/metrics" {
            assert!(
                body.contains("node_load1 "),
                "scrape has node metrics: {body}"
            );
        }
    }

    shutdown.cancel();
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), agent).await })
        .expect("agent stops within 10 s")
        .expect("agent task")
        .expect("agent exits cleanly");
}

fn free_loopback_addr() -> SocketAddr {
    let probe = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
    probe.local_addr().expect("local addr")
}

fn wait_for_listener(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "agent did not listen on {addr} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Minimal HTTP/1.1 GET (the agent closes on `Connection: close`): (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, body.to_string())
}
