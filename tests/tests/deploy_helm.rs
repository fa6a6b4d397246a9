//! The Helm chart and the kustomize manifests are two spellings of one deployment: for the
//! same settings they render the same objects. Each case renders a kustomize directory
//! with `kubectl kustomize` and the chart with `helm template node-agent -n node-agent`
//! and the matching values, normalises what only differs in spelling, and compares the
//! rest object by object (kind + name), every field.
//!
//! Normalised away (and nothing else):
//! - Helm's standard labels, which the kustomize manifests don't carry:
//!   `helm.sh/chart`, `app.kubernetes.io/managed-by`, `app.kubernetes.io/instance` and
//!   `app.kubernetes.io/version`, wherever labels are (object and pod-template labels, and
//!   the selectors: the chart selects on `instance` too, so two releases don't overlap).
//! - How a config change rolls the pods: kustomize's hashed ConfigMap name
//!   (`node-agent-config-<hash>`, and every reference to it) vs. the chart's plain name
//!   with `checksum/*` pod-template annotations.
//! - The config file's text: `data."config.yaml"` is compared as parsed YAML (kustomize
//!   keeps the file's comments, the chart renders its values).
//! - The order of `volumes` and `volumeMounts` (sorted by name / mountPath): kustomize's
//!   strategic merge puts patched entries first; the order carries no meaning.
//! - The Namespace: kustomize creates it, the chart does not (Helm stores the release in
//!   the namespace before it creates any object, so a chart cannot own its own namespace).
//!   The test checks that it is the only object kustomize has in addition.
//!
//! Skips (with a message) without kubectl or helm; fails then under
//! `NODE_AGENT_REQUIRE_ALL=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use node_agent_tests::{manifests, require};
use serde_yaml_ng::{Mapping, Value};

/// Labels Helm's conventions add that the kustomize manifests don't have.
const HELM_STANDARD_LABELS: &[&str] = &[
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// Maps whose keys are labels (metadata.labels, selector.matchLabels, a Service's selector).
const LABEL_MAPS: &[&str] = &["labels", "matchLabels", "selector"];

struct Tools {
    kubectl: PathBuf,
    helm: PathBuf,
}

fn tools() -> Option<Tools> {
    let Some(kubectl) = manifests::kubectl() else {
        require::missing("kubectl not found (set KUBECTL or install it)");
        return None;
    };
    let Some(helm) = manifests::helm() else {
        require::missing("helm not found (set HELM, or run .ci/steps/deploy.sh which caches it)");
        return None;
    };
    Some(Tools { kubectl, helm })
}

#[test]
fn chart_defaults_render_the_base() {
    let Some(t) = tools() else { return };
    assert_same(&t, Path::new("deploy/base"), &[]);
}

#[test]
fn chart_with_loki_values_renders_the_loki_overlay() {
    let Some(t) = tools() else { return };
    assert_same(
        &t,
        Path::new("deploy/overlays/loki"),
        &["ci/loki-values.yaml"],
    );
}

#[test]
fn chart_with_elasticsearch_values_renders_the_elasticsearch_overlay() {
    let Some(t) = tools() else { return };
    assert_same(
        &t,
        Path::new("deploy/overlays/elasticsearch"),
        &["ci/elasticsearch-values.yaml"],
    );
}

#[test]
fn chart_with_ebpf_renders_the_ebpf_component() {
    let Some(t) = tools() else { return };
    assert_same(
        &t,
        Path::new("deploy/overlays/ebpf"),
        &["ci/ebpf-values.yaml"],
    );
}

#[test]
fn chart_with_systemd_renders_the_systemd_component() {
    let Some(t) = tools() else { return };
    assert_same(
        &t,
        Path::new("deploy/overlays/systemd"),
        &["ci/systemd-values.yaml"],
    );
}

/// The combination the README documents (an overlay of loki + the ebpf component) is the
/// chart with both value files.
#[test]
fn chart_with_loki_and_ebpf_renders_loki_plus_the_ebpf_component() {
    let Some(t) = tools() else { return };
    // kustomize takes bases by relative path only: a directory two levels below the root.
    let scratch = manifests::workspace_root().join("target");
    std::fs::create_dir_all(&scratch).expect("target dir");
    let dir = tempfile::tempdir_in(&scratch).expect("tempdir");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources: [../../deploy/overlays/loki]\ncomponents: [../../deploy/components/ebpf]\n",
    )
    .expect("write kustomization");
    assert_same(
        &t,
        dir.path(),
        &["ci/loki-values.yaml", "ci/ebpf-values.yaml"],
    );
}

/// A sink secret needs a source; the chart says which key is wrong instead of rendering a
/// Secret without data.
#[test]
fn chart_refuses_a_sink_secret_without_data() {
    let Some(t) = tools() else { return };
    let err = manifests::helm_template_error(&t.helm, &["sinkSecrets.loki.defaultMode=256"]);
    assert!(
        err.contains("sinkSecrets.loki: set existingSecret or stringData"),
        "{err}"
    );
}

/// The chart creates the Secret from values under the name the volume uses.
#[test]
fn chart_creates_sink_secrets_from_values() {
    let Some(t) = tools() else { return };
    let objects = manifests::helm_template(
        &t.helm,
        &[],
        &["sinkSecrets.loki.stringData.password=s3cret"],
    );
    let secret = objects
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("a Secret is rendered");
    assert_eq!(secret["metadata"]["name"], "node-agent-loki");
    assert_eq!(secret["stringData"]["password"], "s3cret");
    let daemonset = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let pod = &daemonset["spec"]["template"];
    let volume = pod["spec"]["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find(|v| v["name"] == "loki-credentials"))
        .expect("loki-credentials volume");
    assert_eq!(volume["secret"]["secretName"], "node-agent-loki");
    assert_eq!(volume["secret"]["defaultMode"], 0o400);
    assert!(
        pod["metadata"]["annotations"]["checksum/secret"].is_string(),
        "a changed Secret rolls the pods"
    );
}

fn assert_same(t: &Tools, kustomize_dir: &Path, values: &[&str]) {
    let what = format!(
        "kubectl kustomize {} vs helm template -f {}",
        kustomize_dir.display(),
        if values.is_empty() {
            "(defaults)".to_string()
        } else {
            values.join(" -f ")
        }
    );
    let mut kustomize = by_key(normalise_kustomize(manifests::kustomize(
        &t.kubectl,
        kustomize_dir,
    )));
    let helm = by_key(normalise_helm(manifests::helm_template(
        &t.helm,
        values,
        &[],
    )));

    let namespaces: Vec<_> = kustomize
        .keys()
        .filter(|(kind, _)| kind == "Namespace")
        .cloned()
        .collect();
    assert_eq!(
        namespaces,
        [("Namespace".to_string(), manifests::NAMESPACE.to_string())],
        "{what}: kustomize renders the namespace"
    );
    kustomize.retain(|(kind, _), _| kind != "Namespace");

    let only_kustomize: Vec<_> = kustomize
        .keys()
        .filter(|k| !helm.contains_key(*k))
        .collect();
    let only_helm: Vec<_> = helm
        .keys()
        .filter(|k| !kustomize.contains_key(*k))
        .collect();
    assert!(
        only_kustomize.is_empty() && only_helm.is_empty(),
        "{what}: objects only kustomize renders: {only_kustomize:?}; only helm: {only_helm:?}"
    );
    for (key, expected) in &kustomize {
        let actual = &helm[key];
        if let Some(diff) = first_difference(expected, actual, "") {
            panic!(
                "{what}: {} {} differs at {diff}\n--- kustomize:\n{}\n--- helm:\n{}",
                key.0,
                key.1,
                serde_yaml_ng::to_string(expected).unwrap_or_default(),
                serde_yaml_ng::to_string(actual).unwrap_or_default(),
            );
        }
    }
}

fn by_key(objects: Vec<Value>) -> BTreeMap<(String, String), Value> {
    let mut map = BTreeMap::new();
    for object in objects {
        let kind = object["kind"].as_str().expect("kind").to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let key = (kind, name);
        assert!(
            !map.contains_key(&key),
            "{key:?} rendered twice; object names must be unique"
        );
        map.insert(key, object);
    }
    map
}

/// kustomize's generated names `<name>-<10-char hash>`, replaced by `<name>` everywhere.
fn normalise_kustomize(mut objects: Vec<Value>) -> Vec<Value> {
    let mut renames = BTreeMap::new();
    for object in &objects {
        if object["kind"] != "ConfigMap" {
            continue;
        }
        let name = object["metadata"]["name"].as_str().expect("name");
        let (base, hash) = name.rsplit_once('-').expect("generated name has a hash");
        assert!(
            hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()),
            "{name}: expected kustomize's hash suffix"
        );
        renames.insert(name.to_string(), base.to_string());
    }
    for object in &mut objects {
        rename_strings(object, &renames);
        normalise_common(object);
    }
    objects
}

fn normalise_helm(mut objects: Vec<Value>) -> Vec<Value> {
    for object in &mut objects {
        strip_helm_labels(object, false);
        if let Some(template) = pod_template(object, "metadata").and_then(Value::as_mapping_mut)
            && let Some(annotations) = template
                .get_mut("annotations")
                .and_then(Value::as_mapping_mut)
        {
            annotations.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with("checksum/")));
            if annotations.is_empty() {
                template.remove("annotations");
            }
        }
        normalise_common(object);
    }
    objects
}

/// Both sides: the config file as data, volumes and mounts in a fixed order.
fn normalise_common(object: &mut Value) {
    if object["kind"] == "ConfigMap"
        && let Some(data) = object.get_mut("data").and_then(Value::as_mapping_mut)
    {
        for (key, value) in data.iter_mut() {
            if key.as_str().is_some_and(|k| k.ends_with(".yaml")) {
                let text = value.as_str().expect("ConfigMap data is text");
                *value = serde_yaml_ng::from_str(text).expect("config file is YAML");
            }
        }
    }
    if let Some(pod) = pod_template(object, "spec") {
        sort_by(pod.get_mut("volumes"), "name");
        if let Some(containers) = pod.get_mut("containers").and_then(Value::as_sequence_mut) {
            for container in containers {
                sort_by(container.get_mut("volumeMounts"), "mountPath");
            }
        }
    }
}

/// `spec.template.<part>` of a workload, without inserting anything (`IndexMut` would).
fn pod_template<'a>(object: &'a mut Value, part: &str) -> Option<&'a mut Value> {
    object.get_mut("spec")?.get_mut("template")?.get_mut(part)
}

fn sort_by(list: Option<&mut Value>, key: &str) {
    if let Some(items) = list.and_then(Value::as_sequence_mut) {
        items.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
    }
}

fn strip_helm_labels(value: &mut Value, is_label_map: bool) {
    match value {
        Value::Mapping(map) => {
            if is_label_map {
                map.retain(|k, _| {
                    !k.as_str()
                        .is_some_and(|k| HELM_STANDARD_LABELS.contains(&k))
                });
            }
            for (key, child) in map.iter_mut() {
                let labels = key.as_str().is_some_and(|k| LABEL_MAPS.contains(&k));
                strip_helm_labels(child, labels);
            }
        }
        Value::Sequence(items) => {
            for item in items {
                strip_helm_labels(item, false);
            }
        }
        _ => {}
    }
}

fn rename_strings(value: &mut Value, renames: &BTreeMap<String, String>) {
    match value {
        Value::String(s) => {
            if let Some(new) = renames.get(s.as_str()) {
                *s = new.clone();
            }
        }
        Value::Mapping(map) => map.values_mut().for_each(|v| rename_strings(v, renames)),
        Value::Sequence(items) => items.iter_mut().for_each(|v| rename_strings(v, renames)),
        _ => {}
    }
}

/// The path of the first difference and both values there, or `None` when equal.
fn first_difference(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            let keys = |m: &Mapping| {
                m.keys()
                    .map(|k| {
                        serde_yaml_ng::to_string(k)
                            .unwrap_or_default()
                            .trim()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            };
            for (k, va) in a {
                let key = serde_yaml_ng::to_string(k).unwrap_or_default();
                let child = format!("{path}.{}", key.trim());
                match b.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_difference(va, vb, &child) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{child}: missing in helm (keys {:?})", keys(b))),
                }
            }
            b.keys().find(|k| !a.contains_key(*k)).map(|k| {
                format!(
                    "{path}.{}: only in helm",
                    serde_yaml_ng::to_string(k).unwrap_or_default().trim()
                )
            })
        }
        (Value::Sequence(a), Value::Sequence(b)) => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                if let Some(d) = first_difference(va, vb, &format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (a.len() != b.len()).then(|| {
                format!(
                    "{path}: {} items in kustomize, {} in helm",
                    a.len(),
                    b.len()
                )
            })
        }
        _ => {
            (expected != actual).then(|| format!("{path}: kustomize {expected:?}, helm {actual:?}"))
        }
    }
}
