//! Values a sink takes from a record by name, for labels, structured metadata and tenants:
//!
//! `namespace`, `pod`, `pod_uid`, `container`, `node`, `stream`, `source` (the source
//! kind), `workload` and `workload_kind` (the owning Deployment/StatefulSet/… once the
//! metadata cache resolved it), `label:<pod label>`, `annotation:<pod annotation>`,
//! `namespace_label:<label>`, `field:<dotted path into the parsed fields>`.
//!
//! A value the record lacks (or an empty one) is "absent": the label, metadata entry or
//! tenant is left out.

use std::borrow::Cow;

use node_agent_core::record::LogRecord;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordValue {
    Namespace,
    Pod,
    PodUid,
    Container,
    Node,
    Stream,
    Source,
    Workload,
    WorkloadKind,
    Label(String),
    Annotation(String),
    NamespaceLabel(String),
    /// Dotted path, split.
    Field(Vec<String>),
    /// Any Kubernetes metadata field by its ECS name (`PodMetadata::field`):
    /// `metadata:container.image.name`, `metadata:kubernetes.node.labels.<key>`.
    Metadata(String),
}

impl std::str::FromStr for RecordValue {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let named = |prefix: &str| -> Option<Result<String, String>> {
            s.strip_prefix(prefix).map(|rest| {
                if rest.is_empty() {
                    Err(format!("{s:?}: a name must follow {prefix:?}"))
                } else {
                    Ok(rest.to_string())
                }
            })
        };
        if let Some(name) = named("label:") {
            return name.map(Self::Label);
        }
        if let Some(name) = named("annotation:") {
            return name.map(Self::Annotation);
        }
        if let Some(name) = named("namespace_label:") {
            return name.map(Self::NamespaceLabel);
        }
        if let Some(name) = named("metadata:") {
            return name.map(Self::Metadata);
        }
        if let Some(path) = named("field:") {
            let path = path?;
            if path.split('.').any(str::is_empty) {
                return Err(format!("{s:?}: empty part in the field path"));
            }
            return Ok(Self::Field(path.split('.').map(str::to_string).collect()));
        }
        Ok(match s {
            "namespace" => Self::Namespace,
            "pod" => Self::Pod,
            "pod_uid" => Self::PodUid,
            "container" => Self::Container,
            "node" => Self::Node,
            "stream" => Self::Stream,
            "source" => Self::Source,
            "workload" => Self::Workload,
            "workload_kind" => Self::WorkloadKind,
            other => {
                return Err(format!(
                    "unknown record value {other:?} (namespace, pod, pod_uid, container, node, \
                     stream, source, workload, workload_kind, label:<name>, annotation:<name>, \
                     namespace_label:<name>, metadata:<ECS name>, field:<path>)"
                ));
            }
        })
    }
}

impl<'de> Deserialize<'de> for RecordValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl RecordValue {
    /// Whether the value can differ between records of one file (then it cannot be
    /// cached per source).
    pub fn per_record(&self) -> bool {
        matches!(self, Self::Field(_))
    }

    /// The value for `r`; `None` when absent or empty.
    pub fn get<'a>(&self, r: &'a LogRecord, node_fallback: &'a str) -> Option<Cow<'a, str>> {
        let s = &r.source;
        let k = s.kubernetes.as_deref();
        let v: Cow<'a, str> = match self {
            Self::Namespace => Cow::Borrowed(s.namespace.as_str()),
            Self::Pod => Cow::Borrowed(s.pod.as_str()),
            Self::PodUid => Cow::Borrowed(s.pod_uid.as_str()),
            Self::Container => Cow::Borrowed(s.container.as_str()),
            Self::Node if s.node.is_empty() => Cow::Borrowed(node_fallback),
            Self::Node => Cow::Borrowed(s.node.as_str()),
            Self::Stream => Cow::Borrowed(r.stream.as_str()),
            Self::Source => Cow::Borrowed(s.kind.as_str()),
            // The resolved workload (Deployment `web`), not the direct owner (ReplicaSet
            // `web-7d4b9c8f6`, a new value on every rollout).
            Self::Workload => Cow::Borrowed(k?.workload.as_ref()?.name.as_str()),
            Self::WorkloadKind => Cow::Borrowed(k?.workload.as_ref()?.kind.as_str()),
            Self::Metadata(name) => Cow::Borrowed(k?.field(name)?),
            Self::Label(name) => Cow::Borrowed(k?.labels.get(name)?.as_str()),
            Self::Annotation(name) => Cow::Borrowed(k?.annotations.get(name)?.as_str()),
            Self::NamespaceLabel(name) => Cow::Borrowed(k?.namespace_labels.get(name)?.as_str()),
            Self::Field(path) => {
                let fields = r.fields.as_ref()?;
                let mut v = fields.get(&path[0])?;
                for part in &path[1..] {
                    v = v.as_object()?.get(part)?;
                }
                match v {
                    serde_json::Value::String(s) => Cow::Borrowed(s.as_str()),
                    serde_json::Value::Number(n) => Cow::Owned(n.to_string()),
                    serde_json::Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
                    _ => return None,
                }
            }
        };
        (!v.is_empty()).then_some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_agent_core::record::{SourceKind, SourceMeta, Stream};
    use std::sync::Arc;

    #[test]
    fn parses_and_reads_values() {
        let meta = Arc::new(SourceMeta {
            kind: SourceKind::Pod,
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "u1".into(),
            container: "nginx".into(),
            node: String::new(),
            path: "/p".into(),
            file_id: 1,
            kubernetes: Some(Arc::new(node_agent_core::kube::PodMetadata {
                labels: [("app".to_string(), "web".to_string())].into(),
                owner: Some(node_agent_core::kube::Workload {
                    kind: "ReplicaSet".into(),
                    name: "web-7d4b9c8f6".into(),
                }),
                workload: Some(node_agent_core::kube::Workload {
                    kind: "Deployment".into(),
                    name: "web".into(),
                }),
                container: Some(node_agent_core::kube::ContainerMetadata {
                    image: "nginx:1.27".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        });
        let mut r = LogRecord::new(meta, 0, Stream::Stderr, 0, "m".into());
        r.fields =
            serde_json::from_str(r#"{"level":"warn","user":{"id":7},"ok":true,"n":null}"#).ok();
        let get = |s: &str| {
            s.parse::<RecordValue>()
                .unwrap()
                .get(&r, "fallback-node")
                .map(|v| v.into_owned())
        };
        assert_eq!(get("namespace").as_deref(), Some("shop"));
        assert_eq!(get("node").as_deref(), Some("fallback-node"));
        assert_eq!(get("stream").as_deref(), Some("stderr"));
        assert_eq!(get("workload").as_deref(), Some("web"));
        assert_eq!(get("workload_kind").as_deref(), Some("Deployment"));
        assert_eq!(get("label:app").as_deref(), Some("web"));
        assert_eq!(get("label:tier"), None);
        assert_eq!(
            get("metadata:container.image.name").as_deref(),
            Some("nginx:1.27")
        );
        assert_eq!(
            get("metadata:kubernetes.replicaset.name").as_deref(),
            Some("web-7d4b9c8f6")
        );
        assert_eq!(
            get("metadata:kubernetes.labels.app").as_deref(),
            Some("web")
        );
        assert_eq!(get("metadata:kubernetes.labels.tier"), None);
        assert_eq!(get("annotation:x"), None);
        assert_eq!(get("field:level").as_deref(), Some("warn"));
        assert_eq!(get("field:user.id").as_deref(), Some("7"));
        assert_eq!(get("field:ok").as_deref(), Some("true"));
        assert_eq!(get("field:n"), None);
        assert_eq!(get("field:user"), None);
        assert!("label:".parse::<RecordValue>().is_err());
        assert!("field:a..b".parse::<RecordValue>().is_err());
        assert!(
            "pods"
                .parse::<RecordValue>()
                .unwrap_err()
                .contains("unknown")
        );
    }
}
