//! `kubernetes:` section of the config file: [`KubeConfig`], with defaults and
//! [`KubeConfig::validate`] (which names the YAML key of each problem).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::filter::KeyFilter;

/// Where this section sits in the agent's config file; error paths start with it.
pub const SECTION: &str = "kubernetes";

/// The service-account files kubelet projects into every pod that mounts a token.
pub const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// How the cache reaches the API server and what it keeps.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KubeConfig {
    /// `true`/`false`; unset means on when running in a cluster (`KUBERNETES_SERVICE_HOST`
    /// is set) or when `kubeconfig` is given. See [`KubeConfig::is_enabled`].
    pub enabled: Option<bool>,
    /// A kubeconfig file for standalone use (its current context, or `kubeconfig_context`).
    /// Unset: in-cluster config (service-account token and CA, `KUBERNETES_SERVICE_HOST/PORT`).
    pub kubeconfig: Option<PathBuf>,
    /// Context of `kubeconfig` to use instead of its current one.
    pub kubeconfig_context: Option<String>,
    /// In-cluster only: the API server URL instead of `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`
    /// (Fluent Bit's `Kube_URL`), e.g. to bypass the service VIP.
    pub api_server_url: Option<String>,
    /// In-cluster only: the service-account token, re-read whenever the file changes
    /// (kubelet rotates projected tokens).
    pub token_file: PathBuf,
    /// In-cluster only: the CA bundle that signs the API server's certificate.
    pub ca_file: PathBuf,
    /// This node's name (the Downward API's `spec.nodeName`): set by the caller, never
    /// read from YAML.
    #[serde(skip)]
    pub node_name: String,

    /// Pod labels kept, by key glob (`kubernetes.labels.*`).
    pub pod_labels: KeyFilterConfig,
    /// Pod annotations kept, by key glob (`kubernetes.annotations.*`). The
    /// `node-agent.io/*` hints are read before this filter, so excluding them here only
    /// keeps them off the records.
    pub pod_annotations: KeyFilterConfig,
    /// Namespace labels kept (`kubernetes.namespace_labels.*`).
    pub namespace_labels: KeyFilterConfig,
    /// Namespace annotations kept (`kubernetes.namespace_annotations.*`); none by default,
    /// as in Filebeat.
    pub namespace_annotations: KeyFilterConfig,
    /// This node's labels kept (`kubernetes.node.labels.*`): a small, well-known set by
    /// default, since node-feature-discovery and cloud providers add hundreds.
    pub node_labels: KeyFilterConfig,

    /// How long a deleted pod's metadata stays looked-up-able after the pod is deleted,
    /// or after its last [`PodLease`](crate::PodLease) is dropped, whichever is later.
    #[serde(with = "duration_serde")]
    pub deleted_pod_retention: Duration,
    /// Callers waiting at once in [`MetadataCache::wait_for_pod`](crate::MetadataCache::wait_for_pod);
    /// more are refused at once (0: never wait).
    pub max_waiters: usize,

    /// Server-side timeout of each watch request (`timeoutSeconds`); the watch is then
    /// resumed from its resourceVersion. A watch that delivers nothing for this plus 5 s
    /// is taken for hung and restarted; a list that receives no byte for this plus 10 s
    /// is abandoned.
    #[serde(with = "duration_serde")]
    pub watch_timeout: Duration,
    /// This node's labels are read with a metadata-only GET (needs only `get` on nodes),
    /// again after this long.
    #[serde(with = "duration_serde")]
    pub node_refresh_interval: Duration,
    /// Objects per list page (`limit`) for consistent lists (`use_apiserver_cache: false`).
    pub list_page_size: u32,
    /// List with `resourceVersion=0` (served from the API server's watch cache, possibly
    /// slightly stale, in one response: the cache does not page) instead of a consistent,
    /// paged read, as client-go informers do. Keeps a DaemonSet rollout off etcd on clusters without consistent reads from
    /// cache (before Kubernetes 1.31).
    pub use_apiserver_cache: bool,
    /// Retry delay after the first error of a streak (doubles, with jitter)…
    #[serde(with = "duration_serde")]
    pub backoff_initial: Duration,
    /// …up to this.
    #[serde(with = "duration_serde")]
    pub backoff_max: Duration,
    /// TCP + TLS connect timeout.
    #[serde(with = "duration_serde")]
    pub connect_timeout: Duration,

    /// Pods cached at most (live and recently deleted); beyond it new pods are counted
    /// in `over_capacity` and not cached. kubelet's default is 110 pods per node.
    pub max_pods: usize,
    /// Namespaces cached at most.
    pub max_namespaces: usize,
    /// Label and annotation values longer than this are dropped (and counted): bounds
    /// memory and keeps multi-kilobyte annotations off every record.
    pub max_value_bytes: usize,

    /// Log enrichment: how long a log file's records wait for its pod to reach the
    /// cache while the cache is current (0: never wait; records then ship with the
    /// path's metadata and count as misses).
    #[serde(with = "duration_serde")]
    pub hold_time: Duration,
    /// Log enrichment: bytes of records held across all files waiting for their pods.
    pub hold_max_bytes: usize,
}

impl Default for KubeConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            kubeconfig: None,
            kubeconfig_context: None,
            api_server_url: None,
            token_file: PathBuf::from(SERVICE_ACCOUNT_TOKEN),
            ca_file: PathBuf::from(SERVICE_ACCOUNT_CA),
            node_name: String::new(),
            pod_labels: KeyFilterConfig::all(),
            pod_annotations: KeyFilterConfig {
                include: vec!["*".into()],
                // kubectl apply's copy of the whole object: kilobytes, and useless on a log line.
                exclude: vec!["kubectl.kubernetes.io/last-applied-configuration".into()],
            },
            namespace_labels: KeyFilterConfig::all(),
            namespace_annotations: KeyFilterConfig::none(),
            node_labels: KeyFilterConfig {
                include: [
                    "kubernetes.io/arch",
                    "kubernetes.io/os",
                    "kubernetes.io/hostname",
                    "node.kubernetes.io/instance-type",
                    "topology.kubernetes.io/region",
                    "topology.kubernetes.io/zone",
                    "node-role.kubernetes.io/*",
                ]
                .map(String::from)
                .to_vec(),
                exclude: Vec::new(),
            },
            deleted_pod_retention: Duration::from_secs(300),
            max_waiters: 256,
            watch_timeout: Duration::from_secs(290),
            node_refresh_interval: Duration::from_secs(300),
            list_page_size: 500,
            use_apiserver_cache: true,
            backoff_initial: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_pods: 1024,
            max_namespaces: 20_000,
            max_value_bytes: 4096,
            hold_time: Duration::from_secs(2),
            hold_max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// Keys kept: those matching any `include` glob and no `exclude` glob. `*` matches any
/// run of characters, `/` included (`app.kubernetes.io/*`).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct KeyFilterConfig {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl KeyFilterConfig {
    /// Every key.
    pub fn all() -> Self {
        Self {
            include: vec!["*".into()],
            exclude: Vec::new(),
        }
    }

    /// No key.
    pub fn none() -> Self {
        Self::default()
    }
}

/// One problem in the `kubernetes:` section, at a YAML key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// e.g. `kubernetes.pod_labels.include[1]`.
    pub path: String,
    pub message: String,
}

/// Every problem found by [`KubeConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl KubeConfig {
    /// Whether to run the cache: `enabled` if set, else in-cluster or with a kubeconfig.
    pub fn is_enabled(&self) -> bool {
        self.is_enabled_with(
            std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty()),
        )
    }

    /// [`Self::is_enabled`] with the in-cluster test made by the caller.
    pub fn is_enabled_with(&self, in_cluster: bool) -> bool {
        self.enabled
            .unwrap_or(in_cluster || self.kubeconfig.is_some())
    }

    /// Checks every setting (when enabled, `node_name` too); reports all problems.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut bad = |key: &str, message: String| {
            errors.push(ConfigError {
                path: format!("{SECTION}.{key}"),
                message,
            });
        };
        let filters = [
            ("pod_labels", &self.pod_labels),
            ("pod_annotations", &self.pod_annotations),
            ("namespace_labels", &self.namespace_labels),
            ("namespace_annotations", &self.namespace_annotations),
            ("node_labels", &self.node_labels),
        ];
        for (name, filter) in filters {
            for (list, globs) in [("include", &filter.include), ("exclude", &filter.exclude)] {
                for (i, glob) in globs.iter().enumerate() {
                    if let Err(e) = KeyFilter::compile_one(glob) {
                        bad(
                            &format!("{name}.{list}[{i}]"),
                            format!("invalid glob {glob:?}: {e}"),
                        );
                    }
                }
            }
        }
        // The caller fills node_name; an enabled cache without it would watch every pod.
        if self.is_enabled() && self.node_name.trim().is_empty() {
            bad(
                "node_name",
                "this node's name is required (set NODE_NAME from the Downward API)".into(),
            );
        }
        if let Some(url) = &self.api_server_url
            && url
                .parse::<http::Uri>()
                .map_or(true, |u| u.scheme().is_none() || u.host().is_none())
        {
            bad("api_server_url", format!("{url:?} is not an absolute URL"));
        }
        if self.kubeconfig.is_some() && self.api_server_url.is_some() {
            bad(
                "api_server_url",
                "only for in-cluster config; the kubeconfig names its own server".into(),
            );
        }
        let watch_secs = self.watch_timeout.as_secs();
        if !(1..=3600).contains(&watch_secs) {
            bad("watch_timeout", "must be between 1s and 1h".into());
        }
        if self.node_refresh_interval < Duration::from_secs(1) {
            bad("node_refresh_interval", "must be at least 1s".into());
        }
        if self.list_page_size == 0 {
            bad("list_page_size", "must be greater than 0".into());
        }
        if self.backoff_initial.is_zero() {
            bad("backoff_initial", "must be greater than 0".into());
        }
        if self.backoff_max < self.backoff_initial {
            bad("backoff_max", "must not be below backoff_initial".into());
        }
        if self.hold_time > Duration::from_secs(60) {
            bad(
                "hold_time",
                "must be at most 60s (held records delay the file's shipping)".into(),
            );
        }
        if self.connect_timeout.is_zero() {
            bad("connect_timeout", "must be greater than 0".into());
        }
        for (key, value) in [
            ("max_pods", self.max_pods),
            ("max_namespaces", self.max_namespaces),
            ("max_value_bytes", self.max_value_bytes),
        ] {
            if value == 0 {
                bad(key, "must be greater than 0".into());
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }
}

/// Durations written as "5s", "250ms", "2m", "1h" or a bare number of seconds (the
/// agent's config grammar).
pub mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}"))?;
        let seconds = match unit.trim() {
            "ms" => value / 1000.0,
            "" | "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => {
                return Err(format!(
                    "invalid duration unit in {text:?} (use ms, s, m or h)"
                ));
            }
        };
        Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {text:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Duration::try_from_secs_f64(s)
                .map_err(|_| serde::de::Error::custom(format!("invalid duration {s}"))),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_yaml(text: &str) -> Result<KubeConfig, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(text)
    }

    #[test]
    fn defaults_are_valid_with_a_node_name() {
        let mut c = KubeConfig {
            enabled: Some(true),
            ..KubeConfig::default()
        };
        let errors = c.validate().unwrap_err();
        assert_eq!(errors.0[0].path, "kubernetes.node_name");
        c.node_name = "node-1".into();
        c.validate().unwrap();
    }

    #[test]
    fn enabled_by_default_only_in_cluster_or_with_a_kubeconfig() {
        let mut c = KubeConfig::default();
        assert!(c.is_enabled_with(true));
        assert!(!c.is_enabled_with(false));
        c.kubeconfig = Some("/k".into());
        assert!(c.is_enabled_with(false));
        c.enabled = Some(false);
        assert!(!c.is_enabled_with(true));
    }

    #[test]
    fn parses_yaml_with_durations_and_filters() {
        let c = from_yaml(
            "enabled: true\nwatch_timeout: 30s\ndeleted_pod_retention: 2m\nbackoff_initial: 250ms\n\
             node_refresh_interval: 60\npod_labels:\n  include: ['app', 'app.kubernetes.io/*']\n  exclude: ['*hash*']\n",
        )
        .unwrap();
        assert_eq!(c.watch_timeout, Duration::from_secs(30));
        assert_eq!(c.deleted_pod_retention, Duration::from_secs(120));
        assert_eq!(c.backoff_initial, Duration::from_millis(250));
        assert_eq!(c.node_refresh_interval, Duration::from_secs(60));
        assert_eq!(c.pod_labels.include, ["app", "app.kubernetes.io/*"]);
        assert_eq!(c.list_page_size, 500);
    }

    #[test]
    fn unknown_keys_and_node_name_in_yaml_are_rejected() {
        assert!(from_yaml("bogus: 1\n").is_err());
        assert!(from_yaml("node_name: x\n").is_err());
        assert!(from_yaml("watch_timeout: 5 parsecs\n").is_err());
    }

    #[test]
    fn validate_reports_every_problem_with_its_key_path() {
        let c = KubeConfig {
            enabled: Some(true),
            node_name: "n".into(),
            pod_annotations: KeyFilterConfig {
                include: vec!["ok".into(), "bad[".into()],
                exclude: Vec::new(),
            },
            watch_timeout: Duration::ZERO,
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(1),
            max_pods: 0,
            api_server_url: Some("not a url".into()),
            ..KubeConfig::default()
        };
        let paths: Vec<String> = c
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(
            paths,
            [
                "kubernetes.pod_annotations.include[1]",
                "kubernetes.api_server_url",
                "kubernetes.watch_timeout",
                "kubernetes.backoff_max",
                "kubernetes.max_pods",
            ]
        );
    }

    #[test]
    fn duration_grammar() {
        assert_eq!(
            duration_serde::parse("1h").unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            duration_serde::parse("1.5s").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(duration_serde::parse("-1s").is_err());
        assert!(duration_serde::parse("").is_err());
        assert!(duration_serde::parse("1e999").is_err());
    }
}
