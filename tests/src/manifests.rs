//! Rendering the deployment manifests for the tests: kustomize (`kubectl kustomize`) and
//! the Helm chart (`helm template`), parsed into YAML values. The tools are found via
//! `$KUBECTL` / `$HELM`, then `PATH` (and, for Helm, the cache `.ci/steps/deploy.sh`
//! installs it into). Callers report a missing tool with `crate::require::missing`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_yaml_ng::Value;

/// The chart, relative to the workspace root.
pub const CHART: &str = "deploy/helm/node-agent";
/// Release name and namespace the chart is rendered with: the names the kustomize
/// manifests use.
pub const RELEASE: &str = "node-agent";
pub const NAMESPACE: &str = "node-agent";
/// The Helm version `.ci/steps/deploy.sh` installs (see there for where it comes from).
pub const HELM_VERSION: &str = "v3.17.2";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn runs(bin: &Path, args: &[&str]) -> bool {
    Command::new(bin)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

fn from_env_or_path(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Where `.ci/steps/deploy.sh` caches its tools (`$NODE_AGENT_TOOLS`, else
/// `~/.cache/node-agent`).
fn tools_dir() -> Option<PathBuf> {
    std::env::var_os("NODE_AGENT_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/node-agent")))
}

/// `$KUBECTL`, `kubectl` from PATH, or the copy `.ci/steps/deploy.sh` installs, if it runs.
pub fn kubectl() -> Option<PathBuf> {
    let cached = tools_dir().map(|tools| tools.join("deploy-venv/bin/kubectl"));
    [Some(from_env_or_path("KUBECTL", "kubectl")), cached]
        .into_iter()
        .flatten()
        .find(|bin| runs(bin, &["version", "--client"]))
}

/// `$HELM`, `helm` from PATH, or the copy `.ci/steps/deploy.sh` caches, if it runs.
pub fn helm() -> Option<PathBuf> {
    let cached = tools_dir().map(|tools| tools.join("helm").join(HELM_VERSION).join("helm"));
    [Some(from_env_or_path("HELM", "helm")), cached]
        .into_iter()
        .flatten()
        .find(|bin| runs(bin, &["version", "--short"]))
}

/// Every YAML document of `text` (null documents, e.g. after a leading `---`, dropped).
pub fn parse_documents(text: &str, what: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: output is not YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn run_render(mut cmd: Command, what: &str) -> Vec<Value> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap_or_else(|_| panic!("{what}: not UTF-8"));
    let objects = parse_documents(&text, what);
    assert!(!objects.is_empty(), "{what} renders no object");
    objects
}

/// `kubectl kustomize DIR` (DIR relative to the workspace root, or absolute).
pub fn kustomize(kubectl: &Path, dir: &Path) -> Vec<Value> {
    let mut cmd = Command::new(kubectl);
    cmd.arg("kustomize").arg(workspace_root().join(dir));
    run_render(cmd, &format!("kubectl kustomize {}", dir.display()))
}

/// `helm template node-agent deploy/helm/node-agent -n node-agent -f VALUES... --set SET...`
/// (values files relative to the chart).
pub fn helm_template(helm: &Path, values: &[&str], set: &[&str]) -> Vec<Value> {
    let chart = workspace_root().join(CHART);
    let mut cmd = Command::new(helm);
    cmd.args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", NAMESPACE]);
    for file in values {
        cmd.arg("--values").arg(chart.join(file));
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    run_render(cmd, &helm_command_line(values, set))
}

/// `helm template` expected to fail: its error output.
pub fn helm_template_error(helm: &Path, set: &[&str]) -> String {
    let mut cmd = Command::new(helm);
    cmd.args(["template", RELEASE])
        .arg(workspace_root().join(CHART));
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("running helm template");
    assert!(
        !out.status.success(),
        "{} should fail",
        helm_command_line(&[], set)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn helm_command_line(values: &[&str], set: &[&str]) -> String {
    let mut line = format!("helm template {RELEASE} {CHART}");
    for v in values {
        line.push_str(&format!(" -f {v}"));
    }
    for s in set {
        line.push_str(&format!(" --set {s}"));
    }
    line
}
