//! Our alert lines against Falco's: the same keys with the same JSON types, in the shapes
//! Falcosidekick and the Falco integrations parse. The reference line is the example of
//! Falco's output documentation (falco.org, "Output Channels", JSON output), with a host
//! event's `null` output field as Falco 0.37 prints it.

mod common;

use std::sync::Arc;

use common::*;
use node_agent_security::alert::{CountingMetrics, FileOutput, Outputs};
use node_agent_security::config::SecurityConfig;
use node_agent_security::engine::SecurityEngine;
use node_agent_security::event::wire;
use node_agent_security::event::{BootClock, Event, EventArgs, EventType, ExecArgs};
use node_agent_security::process::Process;
use serde_json::Value;

const FALCO_LINE: &str = r#"{"hostname":"falco-xczjd","output":"13:44:05.478445995: Critical A shell was spawned in a container with an attached terminal (user=root user_loginuid=-1 k8s.ns=default k8s.pod=kubecon container=ee97d9c4186f shell=sh parent=runc cmdline=sh -c clear; (bash || ash || sh) terminal=34816 container_id=ee97d9c4186f image=docker.io/library/alpine)","priority":"Critical","rule":"Terminal shell in container","source":"syscall","tags":["container","mitre_execution","shell"],"time":"2023-05-25T13:44:05.478445995Z", "output_fields": {"container.id":"ee97d9c4186f","container.image.repository":"docker.io/library/alpine","container.image.tag":null,"evt.time":1685022245478445995,"k8s.ns.name":"default","k8s.pod.name":"kubecon","proc.cmdline":"sh -c clear; (bash || ash || sh)","proc.name":"sh","proc.pname":"runc","proc.tty":34816,"user.loginuid":-1,"user.name":"root"}}"#;

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `HH:MM:SS.nnnnnnnnn: Priority text`
fn check_output_prefix(output: &str, priority: &str) {
    let (time, rest) = output.split_once(": ").expect("time prefix");
    assert_eq!(time.len(), 18, "{time}");
    assert!(
        time.chars().enumerate().all(|(i, c)| match i {
            2 | 5 => c == ':',
            8 => c == '.',
            _ => c.is_ascii_digit(),
        }),
        "{time}"
    );
    assert!(rest.starts_with(&format!("{priority} ")), "{rest}");
}

fn check_time(time: &str) {
    // RFC 3339, UTC, nanoseconds.
    assert_eq!(time.len(), 30, "{time}");
    assert!(time.ends_with('Z'), "{time}");
    assert_eq!(&time[19..20], ".");
    chrono::DateTime::parse_from_rfc3339(time).unwrap();
}

#[test]
fn alert_lines_have_falco_keys_and_types() {
    let falco: Value = serde_json::from_str(FALCO_LINE).unwrap();
    let mut w = World::new();
    let init = w.container(WEB);
    let alerts = w.exec(
        init,
        Exec::new("sh", &["sh", "-c", "clear; (bash || ash || sh)"]).tty(PTS0),
    );
    let alert = alerts
        .iter()
        .find(|a| &*a.rule == "Terminal shell in container")
        .unwrap();
    let ours: Value = serde_json::from_str(&alert.to_json_line()).unwrap();

    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&ours), keys(&falco));
    for key in keys(&falco) {
        assert_eq!(kind(&ours[&key]), kind(&falco[&key]), "type of {key}");
    }
    assert_eq!(ours["source"], "syscall");
    assert_eq!(ours["rule"], "Terminal shell in container");
    assert_eq!(ours["priority"], "Notice");
    assert_eq!(ours["hostname"], "node-1");
    check_time(ours["time"].as_str().unwrap());
    check_time(falco["time"].as_str().unwrap());
    check_output_prefix(ours["output"].as_str().unwrap(), "Notice");
    check_output_prefix(falco["output"].as_str().unwrap(), "Critical");
    let tags: Vec<&str> = ours["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let mut sorted = tags.clone();
    sorted.sort();
    assert_eq!(tags, sorted, "Falco prints tags sorted");
    // The output fields Falco's line has, with the same types (null where missing).
    let (ours_f, falco_f) = (&ours["output_fields"], &falco["output_fields"]);
    for (key, value) in falco_f.as_object().unwrap() {
        if key == "container.image.tag" {
            continue; // known to us (1.25), missing in the reference
        }
        assert_eq!(
            kind(&ours_f[key]),
            kind(value),
            "output_fields.{key}: {}",
            ours_f[key]
        );
    }
    assert_eq!(ours_f["proc.name"], "sh");
    assert_eq!(ours_f["proc.pname"], "runc");
    assert_eq!(ours_f["proc.cmdline"], "sh -c clear; (bash || ash || sh)");
    assert_eq!(ours_f["proc.tty"], 34816);
    assert_eq!(ours_f["user.loginuid"], -1);
    assert_eq!(ours_f["container.id"], "aaaaaaaaaaaa");
    assert_eq!(ours_f["k8s.ns.name"], "default");
    assert!(ours_f["evt.time"].is_u64());
    // A host event: container fields are "host" or null, never missing keys.
    let (_, alerts) = w.spawn(1, Exec::new("shred", &["shred", "/dev/sda"]));
    let host: Value = serde_json::from_str(&alerts[0].to_json_line()).unwrap();
    assert_eq!(host["output_fields"]["container.id"], "host");
    assert_eq!(host["output_fields"]["k8s.ns.name"], Value::Null);
    assert!(
        alerts[0].output.contains("k8s_ns=<NA>"),
        "{}",
        alerts[0].output
    );
}

#[test]
fn engine_from_config_writes_falco_lines_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("local.yaml");
    std::fs::write(
        &rules,
        "- list: known_ptrace_binaries\n  items: [gdb]\n  override:\n    items: append\n",
    )
    .unwrap();
    let out = dir.path().join("alerts.json");
    let yaml = format!(
        "enabled: true\nrules_files: [{}]\nhostname: node-7\nrules: {{ disabled_tags: [maturity_sandbox] }}\nrate_limit: {{ rate: 0, burst: 2 }}\noutputs: {{ file: {{ enabled: true, path: {} }} }}\nkubernetes_api: {{ addresses: [10.96.0.1] }}\n",
        rules.display(),
        out.display()
    );
    let config: SecurityConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let metrics = Arc::new(CountingMetrics::default());
    let mut engine =
        SecurityEngine::from_config(&config, Arc::new(metadata()), metrics.clone()).unwrap();
    assert!(
        engine
            .rules()
            .rule("Detect crypto miners using the Stratum protocol")
            .is_some_and(|r| !r.enabled)
    );
    let required = engine.required_event_types();
    assert!(required.contains(EventType::Ptrace) && required.contains(EventType::Procexit));
    assert!(
        !required.contains(EventType::Accept),
        "no default rule reads accept"
    );
    let mut outputs = Outputs::new(metrics.clone());
    outputs.push(Box::new(FileOutput::new(&config.outputs.file.path, false)));
    // A ptrace attach, decoded from a kernel record as the ring buffer delivers it.
    let clock = BootClock::with_offset(1_700_000_000_000_000_000);
    let mut p = Process::new(4242, 1, "inject");
    p.start_ns = 1;
    engine.table_mut().insert(p);
    for i in 0..5u64 {
        let mut event = Event::new(
            EventType::Ptrace,
            4242,
            EventArgs::Ptrace(node_agent_security::event::PtraceArgs {
                request: 16,
                target_pid: 1,
            }),
        );
        event.ts_ns = 1_700_000_000_000_000_000 + i;
        event.comm = "inject".into();
        let bytes = wire::encode(&event, &clock);
        let mut decoded = wire::decode(&bytes, &clock).unwrap();
        let mut alerts = Vec::new();
        engine.handle(&mut decoded, &mut alerts);
        for a in &alerts {
            outputs.emit(a);
        }
    }
    // Burst 2, no refill: two lines, three suppressed.
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["rule"], "PTRACE attached to process");
    assert_eq!(lines[0]["hostname"], "node-7");
    assert_eq!(lines[0]["time"], "2023-11-14T22:13:20.000000000Z");
    let counts = metrics.snapshot();
    assert_eq!(
        counts.alerts[&(
            "PTRACE attached to process".to_string(),
            node_agent_security::Priority::Warning
        )],
        2
    );
    assert_eq!(counts.suppressed["PTRACE attached to process"], 3);
    assert_eq!(engine.stats().suppressed, 3);
    // gdb was made a known debugger by the local file.
    let mut gdb = Event::new(
        EventType::Execve,
        4242,
        EventArgs::Exec(ExecArgs {
            filename: "/usr/bin/gdb".into(),
            argv: vec!["gdb".into()],
            ..Default::default()
        }),
    );
    gdb.comm = "gdb".into();
    gdb.ts_ns = 1_700_000_100_000_000_000;
    let mut alerts = Vec::new();
    engine.handle(&mut gdb, &mut alerts);
    let mut attach = Event::new(
        EventType::Ptrace,
        4242,
        EventArgs::Ptrace(node_agent_security::event::PtraceArgs {
            request: 16,
            target_pid: 1,
        }),
    );
    attach.ts_ns = 1_700_000_200_000_000_000;
    engine.handle(&mut attach, &mut alerts);
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn config_errors_reach_the_caller_with_key_paths() {
    let bad: SecurityConfig = serde_yaml_ng::from_str("rules: { disabled: [\"No such rule\"] }\nrate_limit: { rules: { Ghost: { rate: 1, burst: 1 } } }").unwrap();
    let err = SecurityEngine::from_config(
        &bad,
        Arc::new(metadata()),
        Arc::new(CountingMetrics::default()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("security.rules.disabled[0]: no rule is named 'No such rule'"),
        "{err}"
    );
    let bad: SecurityConfig =
        serde_yaml_ng::from_str("rate_limit: { rules: { Ghost: { rate: 1, burst: 1 } } }").unwrap();
    let err = SecurityEngine::from_config(
        &bad,
        Arc::new(metadata()),
        Arc::new(CountingMetrics::default()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("security.rate_limit.rules.Ghost: no rule is named 'Ghost'"),
        "{err}"
    );
    let bad: SecurityConfig =
        serde_yaml_ng::from_str("outputs: { http: { enabled: true, url: nope } }").unwrap();
    let err = SecurityEngine::from_config(
        &bad,
        Arc::new(metadata()),
        Arc::new(CountingMetrics::default()),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("security.outputs.http.url: 'nope' is not a URL"),
        "{err}"
    );
}

/// The node's metadata cache as the agent passes it (`node_agent_core::kube`): WEB runs
/// in pod shop/web-1 of Deployment web.
struct Cache;

impl node_agent_core::kube::ContainerLookup for Cache {
    fn generation(&self) -> u64 {
        1
    }

    fn container(&self, id: &str) -> Option<node_agent_core::kube::ContainerFound> {
        use node_agent_core::kube::{ContainerMetadata, PodMetadata, Workload};
        (id == WEB).then(|| node_agent_core::kube::ContainerFound {
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "u1".into(),
            container: "nginx".into(),
            metadata: Arc::new(PodMetadata {
                labels: [("app".to_string(), "web".to_string())].into(),
                workload: Some(Workload {
                    kind: "Deployment".into(),
                    name: "web".into(),
                }),
                container: Some(ContainerMetadata {
                    image: "docker.io/library/nginx:1.27".into(),
                    image_id: "docker.io/library/nginx@sha256:ab12".into(),
                    container_id: format!("containerd://{WEB}"),
                }),
                ..Default::default()
            }),
        })
    }
}

#[test]
fn alerts_of_known_containers_carry_their_kubernetes_metadata() {
    let rules = rules_from(
        r#"
- rule: Shell in an app
  desc: t
  condition: evt.type = execve and proc.name = sh and k8s.pod.label.app = web
  output: shell (pod=%k8s.pod.name)
  priority: WARNING
- rule: Any shell
  desc: t
  condition: evt.type = execve and proc.name = sh
  output: shell
  priority: NOTICE
"#,
    );
    let metadata = Arc::new(node_agent_security::process::KubeMetadata::new(Arc::new(
        Cache,
    )));
    let mut w = World::with_metadata(rules, metadata);
    let web = w.container(WEB);
    let alerts = w.exec(web, Exec::new("sh", &["sh"]));
    assert_eq!(names(&alerts), ["Shell in an app", "Any shell"]);
    for alert in &alerts {
        let line: Value = serde_json::from_str(&alert.to_json_line()).unwrap();
        let f = &line["output_fields"];
        assert_eq!(f["container.id"], &WEB[..12]);
        assert_eq!(f["container.name"], "nginx");
        assert_eq!(f["container.image"], "docker.io/library/nginx:1.27");
        assert_eq!(f["container.image.repository"], "docker.io/library/nginx");
        assert_eq!(f["container.image.tag"], "1.27");
        assert_eq!(f["container.image.digest"], "sha256:ab12");
        assert_eq!(f["k8s.ns.name"], "shop");
        assert_eq!(f["k8s.pod.name"], "web-1");
        assert_eq!(f["k8s.pod.uid"], "u1");
        assert_eq!(f["k8s.workload.kind"], "Deployment");
        assert_eq!(f["k8s.workload.name"], "web");
    }
    assert!(
        alerts[0].output.ends_with("shell (pod=web-1)"),
        "{}",
        alerts[0].output
    );

    // A container the cache does not know (yet): the rule on its label cannot match,
    // the other fires, without metadata fields; nothing waits.
    let other = w.container(SYSTEM);
    let alerts = w.exec(other, Exec::new("sh", &["sh"]));
    assert_eq!(names(&alerts), ["Any shell"]);
    let line: Value = serde_json::from_str(&alerts[0].to_json_line()).unwrap();
    let f = line["output_fields"].as_object().unwrap();
    assert!(
        !f.contains_key("k8s.ns.name") && !f.contains_key("container.image"),
        "{f:?}"
    );
}
