//! `node-agent check-config FILE` on the real binary: prints the effective pipeline and
//! exits 0 for a valid file, exits 2 listing every problem with its key path otherwise,
//! and starts nothing (the configured state dir is never created).

use std::path::Path;
use std::process::{Command, Output};

use node_agent_tests::agent_proc::agent_binary;

fn check(args: &[&str]) -> Output {
    Command::new(agent_binary().expect("node-agent binary"))
        .args(args)
        .output()
        .expect("run node-agent")
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().expect("utf-8 path").to_string()
}

#[test]
fn valid_config_prints_the_pipeline_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = write(
        dir.path(),
        &format!(
            "logs:
  state_dir: {}
  parse_json: true
  processors:
    - type: multiline
      match: {{namespace: [prod-*, staging]}}
    - type: filter
      name: no-debug
      match: {{container: app}}
      action: drop
      level: [debug]
    - type: redact
sinks:
  - type: elasticsearch
    endpoint: http://127.0.0.1:9
    match: {{namespace: prod-*}}
  - type: stdout
",
            state.display()
        ),
    );
    for args in [
        vec!["check-config", config.as_str()],
        vec!["--check-config", config.as_str()],
    ] {
        let out = check(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let order = [
            "sources:",
            "pod: container logs under",
            "processors (in order):",
            "json (logs.parse_json)",
            "multiline (logs.processors[0])  match: namespace=[prod-*, staging]",
            "filter \"no-debug\" (logs.processors[1])  match: container=app",
            "redact (logs.processors[2])  match: all",
            "sinks:",
            "1. elasticsearch (elasticsearch)  route: namespace=prod-*",
            "2. stdout (stdout)  route: all records",
        ];
        let mut from = 0;
        for want in order {
            let at = stdout[from..]
                .find(want)
                .unwrap_or_else(|| panic!("{want:?} missing or out of order in:\n{stdout}"));
            from += at + want.len();
        }
        assert!(!state.exists(), "check-config created the state dir");
    }
}

#[test]
fn every_problem_is_listed_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "logs:
  batch_max_records: 0
  processors:
    - type: filter
      match: {pod: \"/api-[/\"}
    - type: regex
      pattern: \"(?P<x\"
    - type: throttle
      records_per_second: 0
",
    );
    let out = check(&["check-config", &config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing printed as valid: {stderr}");
    for want in [
        "logs.batch_max_records: must be greater than 0",
        "logs.processors[0].match.pod: invalid regex \"api-[\"",
        "logs.processors[1].pattern: invalid regex \"(?P<x\"",
        "logs.processors[2]",
    ] {
        assert!(stderr.contains(want), "{want:?} missing in:\n{stderr}");
    }
}

#[test]
fn bad_regex_is_rejected_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "logs:
  processors:
    - type: redact
      patterns:
        - {name: ticket, regex: \"TICKET-(\"}
",
    );
    let out = check(&[&format!("--check-config={config}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("logs.processors[0].patterns[0]") && stderr.contains("TICKET-("),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_argument_is_a_usage_error() {
    let out = check(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a FILE"));
}

#[test]
fn every_type_error_is_listed_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    // Independent mistakes in three sections, two in one processor entry, and a bad
    // regex (a validation problem) beside them.
    let config = write(
        dir.path(),
        "logs:
  batch_max_records: plenty
  processors:
    - type: multiline
      max_lines: many
      flush_timeout: [1s]
    - type: filter
      match: {pod: \"/api-[/\"}
    - type: sed
sinks:
  - type: stdout
    nmae: typo
handover:
  lock_file: {path: /run/x}
",
    );
    let out = check(&["check-config", &config]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing printed as valid: {stderr}");
    for want in [
        "logs.batch_max_records: invalid type: string \"plenty\"",
        "logs.processors[0].max_lines: invalid type: string \"many\"",
        "logs.processors[0].flush_timeout: ",
        "logs.processors[1].match.pod: invalid regex \"api-[\"",
        "logs.processors[2].type: unknown variant `sed`",
        "sinks[0].nmae: unknown field `nmae`",
        "handover.lock_file: invalid type: map",
    ] {
        assert!(stderr.contains(want), "{want:?} missing in:\n{stderr}");
    }
    assert!(stderr.contains("problems in the configuration"), "{stderr}");
}
