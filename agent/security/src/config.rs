//! The `security:` section of the agent's configuration.
//!
//! ```yaml
//! security:
//!   enabled: true
//!   default_rules: true                 # the embedded rules first
//!   rules_files: [/etc/node-agent/rules.d]   # then these (files or directories), in order
//!   rules:
//!     disabled: ["Change thread namespace"]  # names, `*` wildcards allowed
//!     enabled: []
//!     disabled_tags: [maturity_sandbox]
//!     enabled_tags: []
//!   min_priority: notice
//!   rule_matching: first                # or all
//!   lists:                              # replace the items of lists of the rules
//!     known_ptrace_binaries: [gdb, strace]
//!   kubernetes_api:
//!     addresses: [10.96.0.1]            # default: $KUBERNETES_SERVICE_HOST
//!     ports: [443, 6443]
//!   outputs:
//!     stdout: { enabled: true }
//!     file: { enabled: false, path: /var/log/node-agent/alerts.json, keep_alive: false }
//!     http: { enabled: false, url: http://falcosidekick:2801/, timeout_ms: 5000 }
//!   rate_limit:
//!     rate: 10          # alerts per second per rule, on average
//!     burst: 100
//!     rules: { "Write below etc": { rate: 1, burst: 10 } }
//!   process_table: { max_processes: 32768, exited_linger_secs: 60 }
//!   kernel:
//!     open_read_prefixes: [/etc/shadow, /etc/sudoers, …]
//!     open_write_prefixes: [/etc/, /root/, /var/log/, …]
//!   paths: { proc: /proc, cgroup: /sys/fs/cgroup, rootfs: / }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::alert::Priority;
use crate::event::EventType;
use crate::rules::RuleMatching;

/// Prefixes the kernel side matches opens against: at most this many per list…
pub const MAX_KERNEL_PREFIXES: usize = 64;
/// …each at most this long (bytes, without the NUL).
pub const MAX_KERNEL_PREFIX_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    pub enabled: bool,
    pub default_rules: bool,
    pub rules_files: Vec<PathBuf>,
    pub rules: RulesConfig,
    pub min_priority: Priority,
    pub rule_matching: MatchingConfig,
    pub lists: BTreeMap<String, Vec<String>>,
    pub kubernetes_api: KubernetesApiConfig,
    /// `HH:MM:SS` (false, Falco's default) or ISO 8601 times in output lines.
    pub time_format_iso_8601: bool,
    /// Hostname in alerts (default: $NODE_NAME, then the host name).
    pub hostname: Option<String>,
    pub outputs: OutputsConfig,
    pub rate_limit: RateLimitConfig,
    pub process_table: ProcessTableConfig,
    pub kernel: KernelConfig,
    pub paths: PathsConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enabled: false,
            default_rules: true,
            rules_files: Vec::new(),
            rules: RulesConfig::default(),
            min_priority: Priority::Debug,
            rule_matching: MatchingConfig::First,
            lists: BTreeMap::new(),
            kubernetes_api: KubernetesApiConfig::default(),
            time_format_iso_8601: false,
            hostname: None,
            outputs: OutputsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            process_table: ProcessTableConfig::default(),
            kernel: KernelConfig::default(),
            paths: PathsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RulesConfig {
    pub enabled: Vec<String>,
    pub disabled: Vec<String>,
    pub enabled_tags: Vec<String>,
    pub disabled_tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchingConfig {
    #[default]
    First,
    All,
}

impl From<MatchingConfig> for RuleMatching {
    fn from(m: MatchingConfig) -> RuleMatching {
        match m {
            MatchingConfig::First => RuleMatching::First,
            MatchingConfig::All => RuleMatching::All,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesApiConfig {
    /// `None`: `KUBERNETES_SERVICE_HOST` (and nothing when it is unset).
    pub addresses: Option<Vec<String>>,
    pub ports: Vec<u16>,
}

impl Default for KubernetesApiConfig {
    fn default() -> Self {
        KubernetesApiConfig {
            addresses: None,
            ports: vec![443, 6443],
        }
    }
}

impl KubernetesApiConfig {
    /// The addresses to use, given the environment.
    pub fn resolved_addresses(&self) -> Vec<String> {
        match &self.addresses {
            Some(a) => a.clone(),
            None => std::env::var("KUBERNETES_SERVICE_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .into_iter()
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputsConfig {
    pub stdout: StdoutOutputConfig,
    pub file: FileOutputConfig,
    pub http: HttpOutputConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutOutputConfig {
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileOutputConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub keep_alive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpOutputConfig {
    pub enabled: bool,
    pub url: String,
    pub timeout_ms: u64,
    pub queue_capacity: usize,
    pub max_retries: u32,
    pub retry_backoff_ms: u64,
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpOutputConfig {
    fn default() -> Self {
        HttpOutputConfig {
            enabled: false,
            url: String::new(),
            timeout_ms: 5_000,
            queue_capacity: 1024,
            max_retries: 3,
            retry_backoff_ms: 200,
            headers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Alerts per second per rule, on average.
    pub rate: f64,
    pub burst: u32,
    pub rules: BTreeMap<String, RuleRateLimit>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            rate: 10.0,
            burst: 100,
            rules: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleRateLimit {
    pub rate: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessTableConfig {
    pub max_processes: usize,
    pub exited_linger_secs: u64,
}

impl Default for ProcessTableConfig {
    fn default() -> Self {
        ProcessTableConfig {
            max_processes: 32_768,
            exited_linger_secs: 60,
        }
    }
}

/// What the kernel side sends: which opens (by path prefix) and which event types.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelConfig {
    /// Opens for reading are reported below these prefixes only.
    pub open_read_prefixes: Vec<String>,
    /// Opens for writing are reported below these prefixes only.
    pub open_write_prefixes: Vec<String>,
    /// Event types switched off (`evt.type` names), whatever the rules need.
    pub disabled_events: Vec<String>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        KernelConfig {
            open_read_prefixes: strings(&[
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/sudoers",
                "/etc/pam.conf",
                "/etc/pam.d/",
                "/etc/security/",
                "/root/.ssh/",
                "/root/.aws/",
                "/var/run/secrets/",
                "/run/secrets/",
                "/etc/kubernetes/",
                "/var/lib/kubelet/pki/",
            ]),
            open_write_prefixes: strings(&[
                "/etc/",
                "/root/",
                "/var/log/",
                "/bin/",
                "/sbin/",
                "/usr/bin/",
                "/usr/sbin/",
                "/usr/local/bin/",
                "/lib/modules/",
                "/boot/",
                "/var/run/secrets/",
                "/run/secrets/",
                "/dev/shm/",
            ]),
            disabled_events: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    /// The host's /proc (`/host/proc` in a container that mounts it there).
    pub proc: PathBuf,
    /// The cgroup v2 mount.
    pub cgroup: PathBuf,
    /// The host's root, for /etc/passwd and /etc/group.
    pub rootfs: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            proc: PathBuf::from("/proc"),
            cgroup: PathBuf::from("/sys/fs/cgroup"),
            rootfs: PathBuf::from("/"),
        }
    }
}

/// A config error at a key path (`security.outputs.http.url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every error of a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The prefix of every key path.
pub const KEY_PREFIX: &str = "security";

impl SecurityConfig {
    /// Checks what serde cannot; every problem is reported with its key path.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |key: String, message: String| {
            errors.push(ConfigError {
                key: format!("{KEY_PREFIX}.{key}"),
                message,
            })
        };
        if self.enabled && !self.default_rules && self.rules_files.is_empty() {
            err(
                "rules_files".into(),
                "no rules: enable default_rules or list rules files".into(),
            );
        }
        for (i, path) in self.rules_files.iter().enumerate() {
            if path.as_os_str().is_empty() {
                err(format!("rules_files[{i}]"), "empty path".into());
            }
        }
        for (key, names) in [
            ("enabled", &self.rules.enabled),
            ("disabled", &self.rules.disabled),
            ("enabled_tags", &self.rules.enabled_tags),
            ("disabled_tags", &self.rules.disabled_tags),
        ] {
            for (i, name) in names.iter().enumerate() {
                if name.trim().is_empty() {
                    err(format!("rules.{key}[{i}]"), "empty name".into());
                }
            }
        }
        for name in &self.rules.enabled {
            if self.rules.disabled.contains(name) {
                err(
                    "rules".into(),
                    format!("rule '{name}' is both enabled and disabled"),
                );
            }
        }
        for name in self.lists.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                err(
                    format!("lists.{name}"),
                    "list names are letters, digits and '_'".into(),
                );
            }
        }
        if let Some(addresses) = &self.kubernetes_api.addresses {
            for (i, a) in addresses.iter().enumerate() {
                if a.parse::<IpAddr>().is_err() && a.parse::<ipnet::IpNet>().is_err() {
                    err(
                        format!("kubernetes_api.addresses[{i}]"),
                        format!("'{a}' is not an IP address or CIDR network"),
                    );
                }
            }
        }
        for (i, p) in self.kubernetes_api.ports.iter().enumerate() {
            if *p == 0 {
                err(format!("kubernetes_api.ports[{i}]"), "port 0".into());
            }
        }
        let out = &self.outputs;
        if out.file.enabled && out.file.path.as_os_str().is_empty() {
            err(
                "outputs.file.path".into(),
                "required when the file output is enabled".into(),
            );
        }
        if out.http.enabled {
            match reqwest::Url::parse(&out.http.url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => err(
                    "outputs.http.url".into(),
                    format!("scheme '{}' is not http or https", url.scheme()),
                ),
                Err(e) => err(
                    "outputs.http.url".into(),
                    format!("'{}' is not a URL: {e}", out.http.url),
                ),
            }
            if out.http.timeout_ms == 0 {
                err("outputs.http.timeout_ms".into(), "must be > 0".into());
            }
            if out.http.queue_capacity == 0 || out.http.queue_capacity > 1_000_000 {
                err(
                    "outputs.http.queue_capacity".into(),
                    "must be between 1 and 1000000".into(),
                );
            }
            if out.http.max_retries > 100 {
                err("outputs.http.max_retries".into(), "at most 100".into());
            }
            for k in out.http.headers.keys() {
                if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    err(
                        format!("outputs.http.headers.{k}"),
                        "not a valid header name".into(),
                    );
                }
            }
        }
        let mut check_rate = |key: String, rate: f64, burst: u32| {
            if !rate.is_finite() || rate < 0.0 {
                err(format!("{key}.rate"), "must be a number ≥ 0".into());
            }
            if burst == 0 {
                err(format!("{key}.burst"), "must be ≥ 1".into());
            }
        };
        check_rate(
            "rate_limit".into(),
            self.rate_limit.rate,
            self.rate_limit.burst,
        );
        for (rule, limit) in &self.rate_limit.rules {
            check_rate(format!("rate_limit.rules.{rule}"), limit.rate, limit.burst);
        }
        if !(16..=4_194_304).contains(&self.process_table.max_processes) {
            err(
                "process_table.max_processes".into(),
                "must be between 16 and 4194304".into(),
            );
        }
        for (key, prefixes) in [
            ("open_read_prefixes", &self.kernel.open_read_prefixes),
            ("open_write_prefixes", &self.kernel.open_write_prefixes),
        ] {
            if prefixes.len() > MAX_KERNEL_PREFIXES {
                err(
                    format!("kernel.{key}"),
                    format!("at most {MAX_KERNEL_PREFIXES} prefixes"),
                );
            }
            for (i, p) in prefixes.iter().enumerate() {
                if !p.starts_with('/') {
                    err(
                        format!("kernel.{key}[{i}]"),
                        format!("'{p}' is not an absolute path"),
                    );
                } else if p.len() > MAX_KERNEL_PREFIX_LEN {
                    err(
                        format!("kernel.{key}[{i}]"),
                        format!("longer than {MAX_KERNEL_PREFIX_LEN} bytes"),
                    );
                }
            }
        }
        for (i, name) in self.kernel.disabled_events.iter().enumerate() {
            if EventType::from_name(name).is_none() {
                err(
                    format!("kernel.disabled_events[{i}]"),
                    format!("unknown event type '{name}'"),
                );
            } else if matches!(
                name.as_str(),
                "execve" | "execveat" | "fork" | "vfork" | "clone" | "clone3" | "procexit"
            ) {
                err(
                    format!("kernel.disabled_events[{i}]"),
                    format!("'{name}' keeps the process table current and cannot be disabled"),
                );
            }
        }
        for (key, path) in [
            ("paths.proc", &self.paths.proc),
            ("paths.cgroup", &self.paths.cgroup),
            ("paths.rootfs", &self.paths.rootfs),
        ] {
            if !path.is_absolute() {
                err(key.into(), "must be an absolute path".into());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_parse_from_empty() {
        SecurityConfig::default().validate().unwrap();
        let parsed: SecurityConfig = serde_yaml_ng::from_str("{}").unwrap();
        assert_eq!(parsed, SecurityConfig::default());
    }

    #[test]
    fn parses_the_documented_example() {
        let text = r#"
enabled: true
rules_files: [/etc/node-agent/rules.d]
rules: { disabled: ["Change thread namespace"], disabled_tags: [maturity_sandbox] }
min_priority: notice
rule_matching: all
lists: { known_ptrace_binaries: [gdb, strace] }
kubernetes_api: { addresses: [10.96.0.1], ports: [443] }
outputs:
  stdout: { enabled: true }
  file: { enabled: true, path: /var/log/alerts.json }
  http: { enabled: true, url: "http://falcosidekick:2801/", headers: { X-Token: abc } }
rate_limit: { rate: 5, burst: 20, rules: { "Write below etc": { rate: 1, burst: 10 } } }
process_table: { max_processes: 1000 }
kernel: { open_write_prefixes: [/etc/], disabled_events: [bpf] }
"#;
        let c: SecurityConfig = serde_yaml_ng::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.min_priority, Priority::Notice);
        assert_eq!(c.rule_matching, MatchingConfig::All);
        assert_eq!(c.rate_limit.rules["Write below etc"].burst, 10);
        let unknown =
            serde_yaml_ng::from_str::<SecurityConfig>("outputs: { smtp: {} }").unwrap_err();
        assert!(unknown.to_string().contains("smtp"), "{unknown}");
        let bad_priority =
            serde_yaml_ng::from_str::<SecurityConfig>("min_priority: severe").unwrap_err();
        assert!(
            bad_priority.to_string().contains("unknown priority"),
            "{bad_priority}"
        );
    }

    #[test]
    fn every_problem_has_its_key_path() {
        let mut c = SecurityConfig {
            enabled: true,
            default_rules: false,
            ..Default::default()
        };
        c.rules.enabled = vec!["x".into()];
        c.rules.disabled = vec!["x".into(), " ".into()];
        c.lists.insert("bad name".into(), vec![]);
        c.kubernetes_api.addresses = Some(vec!["kubernetes".into()]);
        c.kubernetes_api.ports = vec![0];
        c.outputs.file.enabled = true;
        c.outputs.http.enabled = true;
        c.outputs.http.url = "ftp://x".into();
        c.outputs.http.timeout_ms = 0;
        c.outputs.http.queue_capacity = 0;
        c.outputs
            .http
            .headers
            .insert("bad header".into(), "v".into());
        c.rate_limit.rate = f64::NAN;
        c.rate_limit.rules.insert(
            "R".into(),
            RuleRateLimit {
                rate: 1.0,
                burst: 0,
            },
        );
        c.process_table.max_processes = 1;
        c.kernel.open_read_prefixes = vec!["etc".into(), format!("/{}", "a".repeat(300))];
        c.kernel.open_write_prefixes = vec!["/x".to_string(); 65];
        c.kernel.disabled_events = vec!["nope".into(), "execve".into()];
        c.paths.proc = "proc".into();
        let keys: Vec<String> = c
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.key)
            .collect();
        for want in [
            "security.rules_files",
            "security.rules.disabled[1]",
            "security.rules",
            "security.lists.bad name",
            "security.kubernetes_api.addresses[0]",
            "security.kubernetes_api.ports[0]",
            "security.outputs.file.path",
            "security.outputs.http.url",
            "security.outputs.http.timeout_ms",
            "security.outputs.http.queue_capacity",
            "security.outputs.http.headers.bad header",
            "security.rate_limit.rate",
            "security.rate_limit.rules.R.burst",
            "security.process_table.max_processes",
            "security.kernel.open_read_prefixes[0]",
            "security.kernel.open_read_prefixes[1]",
            "security.kernel.open_write_prefixes",
            "security.kernel.disabled_events[0]",
            "security.kernel.disabled_events[1]",
            "security.paths.proc",
        ] {
            assert!(keys.iter().any(|k| k == want), "missing {want} in {keys:?}");
        }
    }
}
