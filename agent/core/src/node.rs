//! Node identity from the Downward API, with a hostname fallback for standalone runs.

use std::net::IpAddr;

/// Who and where this agent is; stamped on every log record and metrics target.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeIdentity {
    /// `NODE_NAME` (spec.nodeName), or the hostname when run outside Kubernetes.
    pub node_name: String,
    /// `POD_NAME`; empty outside Kubernetes.
    pub pod_name: String,
    /// `POD_NAMESPACE`; empty outside Kubernetes.
    pub pod_namespace: String,
    /// `POD_UID`; empty outside Kubernetes.
    pub pod_uid: String,
    /// `HOST_IP` (status.hostIP), if set and valid.
    pub host_ip: Option<IpAddr>,
}

impl NodeIdentity {
    /// Reads the Downward API variables from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Same as [`Self::from_env`] with an injectable lookup, for tests.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |key: &str| {
            lookup(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let node_name = get("NODE_NAME").unwrap_or_else(hostname);
        let host_ip = get("HOST_IP").and_then(|ip| match ip.parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tracing::warn!(value = %ip, "HOST_IP is not an IP address; ignoring it");
                None
            }
        });
        Self {
            node_name,
            pod_name: get("POD_NAME").unwrap_or_default(),
            pod_namespace: get("POD_NAMESPACE").unwrap_or_default(),
            pod_uid: get("POD_UID").unwrap_or_default(),
            host_ip,
        }
    }

    /// A short label for logs and the handover lock file: `namespace/pod` or `pid-N`.
    pub fn instance(&self) -> String {
        if self.pod_name.is_empty() {
            format!("{}/pid-{}", self.node_name, std::process::id())
        } else {
            format!("{}/{}", self.pod_namespace, self.pod_name)
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_downward_api_variables() {
        let env: HashMap<&str, &str> = [
            ("NODE_NAME", "worker-1"),
            ("POD_NAME", "node-agent-abcde"),
            ("POD_NAMESPACE", "monitoring"),
            ("POD_UID", "1234-5678"),
            ("HOST_IP", "10.0.0.7"),
        ]
        .into();
        let id = NodeIdentity::from_lookup(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(id.node_name, "worker-1");
        assert_eq!(id.pod_name, "node-agent-abcde");
        assert_eq!(id.pod_namespace, "monitoring");
        assert_eq!(id.pod_uid, "1234-5678");
        assert_eq!(id.host_ip, Some("10.0.0.7".parse().unwrap()));
        assert_eq!(id.instance(), "monitoring/node-agent-abcde");
    }

    #[test]
    fn falls_back_to_hostname_and_ignores_bad_ip() {
        let id = NodeIdentity::from_lookup(|k| (k == "HOST_IP").then(|| "not-an-ip".to_string()));
        assert!(!id.node_name.is_empty());
        assert_eq!(id.host_ip, None);
        assert!(id.pod_name.is_empty());
        assert!(id.instance().contains("/pid-"));
    }
}
