//! Renders every kustomize overlay under `deploy/` with `kubectl kustomize`, and the Helm
//! chart with `helm template` (defaults and each value set under its `ci/`), and checks
//! the manifests against each other and against the agent itself (flags, config,
//! endpoints). Skips (with a message) when kubectl or helm is not installed; fails then
//! under `NODE_AGENT_REQUIRE_ALL=1`.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use node_agent_tests::{manifests, require};
use serde_yaml_ng::Value;

/// The optional parts a rendering turns on.
#[derive(Clone, Copy)]
struct Features {
    /// The eBPF syscall monitor (deploy/components/ebpf, `ebpf.enabled`).
    ebpf: bool,
    /// The systemd collector over the host's bus (deploy/components/systemd,
    /// `systemd.enabled`).
    systemd: bool,
}

const NONE: Features = Features {
    ebpf: false,
    systemd: false,
};
const EBPF: Features = Features {
    ebpf: true,
    systemd: false,
};
const SYSTEMD: Features = Features {
    ebpf: false,
    systemd: true,
};
const ALL: Features = Features {
    ebpf: true,
    systemd: true,
};

/// Every directory `kubectl apply -k` is documented for, and what it turns on.
const OVERLAYS: &[(&str, Features)] = &[
    ("deploy/base", NONE),
    ("deploy/overlays/loki", NONE),
    ("deploy/overlays/elasticsearch", NONE),
    ("deploy/overlays/ebpf", EBPF),
    ("deploy/overlays/systemd", SYSTEMD),
];

/// The chart's value sets (files under deploy/helm/node-agent/, none = the defaults), and
/// what they turn on.
const HELM_VALUES: &[(&[&str], Features)] = &[
    (&[], NONE),
    (&["ci/loki-values.yaml"], NONE),
    (&["ci/elasticsearch-values.yaml"], NONE),
    (&["ci/ebpf-values.yaml"], EBPF),
    (&["ci/systemd-values.yaml"], SYSTEMD),
    (&["ci/all-on-values.yaml"], ALL),
];

/// Kubernetes (IANA service name) limit for port names.
const MAX_PORT_NAME_LEN: usize = 15;

struct Rendered {
    /// The overlay directory or the helm command line.
    overlay: String,
    features: Features,
    objects: Vec<Value>,
}

/// All overlays and chart value sets rendered once per test binary; `None` (after a SKIP
/// message) without kubectl. Without helm, only the kustomize overlays (after a SKIP
/// message for the chart).
fn rendered() -> Option<&'static [Rendered]> {
    static RENDERED: OnceLock<Option<Vec<Rendered>>> = OnceLock::new();
    let rendered = RENDERED
        .get_or_init(|| {
            let kubectl = manifests::kubectl()?;
            let mut all: Vec<Rendered> = OVERLAYS
                .iter()
                .map(|&(overlay, features)| Rendered {
                    overlay: overlay.to_string(),
                    features,
                    objects: manifests::kustomize(&kubectl, Path::new(overlay)),
                })
                .collect();
            match manifests::helm() {
                Some(helm) => all.extend(HELM_VALUES.iter().map(|&(values, features)| Rendered {
                    overlay: format!("helm template {}", values.join(" ")),
                    features,
                    objects: manifests::helm_template(&helm, values, &[]),
                })),
                None => require::missing(
                    "helm not found (set HELM, or run .ci/steps/deploy.sh which caches it); \
                     the chart's renderings are not checked",
                ),
            }
            Some(all)
        })
        .as_deref();
    // Every test reports it (and fails under NODE_AGENT_REQUIRE_ALL=1), not only the first.
    if rendered.is_none() {
        require::missing("kubectl not found (set KUBECTL or install it)");
    }
    rendered
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
        // The projected token, for the metadata watches (rbac_grants_read_only_metadata_access).
        assert_eq!(pod["automountServiceAccountToken"], true, "{}", r.overlay);
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
        let ebpf = r.features.ebpf;
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

/// The systemd collector is on exactly where the systemd component (or `systemd.enabled`)
/// is, and there the bus the agent dials is the host's: `DBUS_SYSTEM_BUS_ADDRESS` (which
/// the collector prefers over `<rootfs>/run/dbus/system_bus_socket`) names the socket
/// inside a read-only mount of the host's /run/dbus directory (the directory, so a
/// restarted dbus-daemon's new socket is seen).
#[test]
fn systemd_collector_dials_the_host_bus() {
    let Some(all) = rendered() else { return };
    for r in all {
        let systemd = r.features.systemd;
        assert_eq!(
            r.args().contains(&"--collector.systemd"),
            systemd,
            "{}: --collector.systemd only with the systemd component",
            r.overlay
        );
        let address = seq(&r.container()["env"])
            .iter()
            .find(|e| e["name"] == "DBUS_SYSTEM_BUS_ADDRESS")
            .map(|e| e["value"].as_str().expect("env value is a string"));
        let dbus_volume = seq(&r.pod_spec()["volumes"])
            .iter()
            .find(|v| v["hostPath"]["path"] == "/run/dbus");
        if !systemd {
            assert_eq!(
                address, None,
                "{}: no bus address without systemd",
                r.overlay
            );
            assert!(dbus_volume.is_none(), "{}: /run/dbus mounted", r.overlay);
            continue;
        }
        let socket = address
            .and_then(|a| a.strip_prefix("unix:path="))
            .unwrap_or_else(|| panic!("{}: bus address {address:?}", r.overlay));
        let volume = dbus_volume
            .unwrap_or_else(|| panic!("{}: no hostPath volume for /run/dbus", r.overlay));
        assert_eq!(
            volume["hostPath"]["type"], "DirectoryOrCreate",
            "{}: a node without dbus still runs the pod",
            r.overlay
        );
        let mount = seq(&r.container()["volumeMounts"])
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("{}: the /run/dbus volume is not mounted", r.overlay));
        assert_eq!(mount["readOnly"], true, "{}: the bus mount", r.overlay);
        let mount_path = mount["mountPath"].as_str().expect("mountPath");
        assert_eq!(
            Path::new(socket),
            Path::new(mount_path).join("system_bus_socket"),
            "{}: the address names the host's socket in the mount",
            r.overlay
        );
        assert!(
            mount.get("subPath").is_none(),
            "{}: the directory is mounted, not the socket file",
            r.overlay
        );
    }
}

/// The metadata reads (pods on the node, namespaces, the node) are allowed, read-only,
/// to the DaemonSet's own service account, which gets its token projected into the pod.
#[test]
fn rbac_grants_read_only_metadata_access() {
    let Some(all) = rendered() else { return };
    for r in all {
        let pod = r.pod_spec();
        let account = pod["serviceAccountName"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: serviceAccountName", r.overlay));
        let namespace = &r.daemonset()["metadata"]["namespace"];
        let sa = r.one("ServiceAccount");
        assert_eq!(sa["metadata"]["name"], account, "{}", r.overlay);
        assert_eq!(sa["metadata"]["namespace"], *namespace, "{}", r.overlay);
        // Opt-in per pod: other pods using the account get no token.
        assert_eq!(sa["automountServiceAccountToken"], false, "{}", r.overlay);
        assert_eq!(pod["automountServiceAccountToken"], true, "{}", r.overlay);

        let role = r.one("ClusterRole");
        let mut granted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rule in seq(&role["rules"]) {
            let verbs = strings(&rule["verbs"]);
            for verb in &verbs {
                assert!(
                    ["get", "list", "watch"].contains(&verb.as_str()),
                    "{}: ClusterRole grants {verb:?}; the agent only reads",
                    r.overlay
                );
            }
            for field in ["apiGroups", "resources"] {
                assert!(
                    !strings(&rule[field]).iter().any(|v| v == "*"),
                    "{}: wildcard {field} in the ClusterRole",
                    r.overlay
                );
            }
            for resource in strings(&rule["resources"]) {
                assert_ne!(resource, "secrets", "{}: secrets", r.overlay);
                if strings(&rule["apiGroups"]).iter().any(String::is_empty) {
                    granted.entry(resource).or_default().extend(verbs.clone());
                }
            }
        }
        // agent/kube: list + watch pods (of this node) and namespaces, GET this node.
        for (resource, needed) in [
            ("pods", &["get", "list", "watch"][..]),
            ("namespaces", &["get", "list", "watch"]),
            ("nodes", &["get"]),
        ] {
            let verbs = granted.get(resource).cloned().unwrap_or_default();
            for verb in needed {
                assert!(
                    verbs.iter().any(|v| v == verb),
                    "{}: the agent needs {verb} on {resource} (has {verbs:?})",
                    r.overlay
                );
            }
        }

        let binding = r.one("ClusterRoleBinding");
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole", "{}", r.overlay);
        assert_eq!(
            binding["roleRef"]["name"], role["metadata"]["name"],
            "{}",
            r.overlay
        );
        let subjects = seq(&binding["subjects"]);
        assert_eq!(subjects.len(), 1, "{}: one subject", r.overlay);
        assert_eq!(subjects[0]["kind"], "ServiceAccount", "{}", r.overlay);
        assert_eq!(subjects[0]["name"], account, "{}", r.overlay);
        assert_eq!(subjects[0]["namespace"], *namespace, "{}", r.overlay);

        // The pod watch selects spec.nodeName=$NODE_NAME, the node watch its name.
        let node_name = seq(&r.container()["env"])
            .iter()
            .find(|e| e["name"] == "NODE_NAME")
            .unwrap_or_else(|| panic!("{}: no NODE_NAME env", r.overlay));
        assert_eq!(
            node_name["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName",
            "{}",
            r.overlay
        );
    }
}

/// With egress restricted, the pods can still resolve names, reach the API server and
/// every configured sink.
#[test]
fn network_policy_allows_dns_api_server_and_sinks() {
    let Some(all) = rendered() else { return };
    for r in all {
        let policy = r.one("NetworkPolicy");
        assert!(
            strings(&policy["spec"]["policyTypes"])
                .iter()
                .any(|t| t == "Egress"),
            "{}: egress is restricted",
            r.overlay
        );
        let egress = seq(&policy["spec"]["egress"]);
        let allows = |port: u16, protocol: &str| {
            egress.iter().any(|rule| {
                seq(&rule["ports"]).iter().any(|p| {
                    p["port"].as_u64() == Some(u64::from(port))
                        && p["protocol"].as_str().unwrap_or("TCP") == protocol
                })
            })
        };
        for (port, protocol, what) in [
            (53, "UDP", "DNS"),
            (53, "TCP", "DNS"),
            (443, "TCP", "the API server (Service port)"),
            (6443, "TCP", "the API server (kubeadm endpoint)"),
        ] {
            assert!(
                allows(port, protocol),
                "{}: egress to {what} {port}/{protocol}",
                r.overlay
            );
        }
        let config: Value =
            serde_yaml_ng::from_str(&r.agent_config_text()).expect("config file is YAML");
        for sink in seq(&config["sinks"]) {
            let Some(url) = sink["url"].as_str() else {
                continue;
            };
            let url = reqwest::Url::parse(url).expect("sink url");
            let port = url.port_or_known_default().expect("sink port");
            assert!(
                allows(port, "TCP"),
                "{}: the NetworkPolicy blocks the sink {url} (port {port})",
                r.overlay
            );
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    seq(v)
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
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

/// Every rendering's alert rules pass the promtool unit tests of deploy/tests (each alert
/// fires when it should and stays quiet when it should); .ci/steps/deploy.sh runs the same
/// on the base and the chart, this runs it under `cargo test` too.
#[test]
fn prometheus_rules_pass_the_promtool_unit_tests() {
    let Some(all) = rendered() else { return };
    if Command::new("promtool").arg("--version").output().is_err() {
        return require::missing("promtool (Debian prometheus) not installed");
    }
    let tests = manifests::workspace_root().join("deploy/tests/alerts.test.yaml");
    for r in all {
        let dir = tempfile::tempdir().unwrap();
        let rules = serde_yaml_ng::to_string(&r.one("PrometheusRule")["spec"]).unwrap();
        std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
        std::fs::copy(&tests, dir.path().join("alerts.test.yaml")).unwrap();
        let out = Command::new("promtool")
            .args(["test", "rules", "alerts.test.yaml"])
            .current_dir(dir.path())
            .output()
            .expect("running promtool");
        assert!(
            out.status.success(),
            "{}: promtool test rules failed:\n{}{}",
            r.overlay,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
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
