//! `match:` — which records a consumer (a sink) takes, by source kind, Kubernetes
//! coordinates, pod labels and parsed fields, with globs.
//!
//! ```yaml
//! match:
//!   source: pod                 # pod | journal | file | audit | security
//!   namespace: [team-*, prod]   # one glob or a list: any of them
//!   pod: web-*
//!   container: "*"
//!   labels: { app: web, tier: "front*" }   # pod labels (needs the metadata cache)
//!   fields: { level: error, user.id: "7" } # parsed fields, dotted paths into objects
//! ```
//!
//! Every key given must match (AND); inside a key, any glob (OR). A key that is absent
//! matches everything; a label or field the record lacks does not match. Records that
//! do not come from a pod have empty namespace, pod and container (`"*"` matches the
//! empty string; narrow with `source:`). Globs are `globset`'s: `*`, `?`, `[a-z]`,
//! `{a,b}`; `*` also crosses `/`.

use std::collections::BTreeMap;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::config::{KeyPath, Problems, Validate};
use crate::record::{LogRecord, SourceKind};

/// One glob or a list of globs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Globs(pub Vec<String>);

impl<'de> Deserialize<'de> for Globs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(
            match OneOrMany::deserialize(d).map_err(|_| {
                serde::de::Error::custom("expected a glob string or a list of glob strings")
            })? {
                OneOrMany::One(s) => Globs(vec![s]),
                OneOrMany::Many(v) => Globs(v),
            },
        )
    }
}

/// The `match:` section as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouteMatch {
    pub source: Option<Globs>,
    pub namespace: Option<Globs>,
    pub pod: Option<Globs>,
    pub container: Option<Globs>,
    pub labels: BTreeMap<String, Globs>,
    pub fields: BTreeMap<String, Globs>,
}

const SOURCE_KINDS: [SourceKind; 5] = [
    SourceKind::Pod,
    SourceKind::Journal,
    SourceKind::File,
    SourceKind::Audit,
    SourceKind::Security,
];

fn compile(globs: &Globs) -> Result<GlobSet, (usize, String)> {
    let mut builder = GlobSetBuilder::new();
    for (i, g) in globs.0.iter().enumerate() {
        builder.add(Glob::new(g).map_err(|e| (i, e.kind().to_string()))?);
    }
    builder.build().map_err(|e| (0, e.to_string()))
}

fn check_globs(globs: &Globs, at: &KeyPath, problems: &mut Problems) {
    if globs.0.is_empty() {
        problems.add(
            at,
            "an empty list matches nothing; remove the key to match everything",
        );
    }
    if let Err((i, e)) = compile(globs) {
        problems.add(
            &at.index(i),
            format!("invalid glob {:?}: {e}", globs.0.get(i)),
        );
    }
}

impl Validate for RouteMatch {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        if let Some(source) = &self.source {
            check_globs(source, &at.key("source"), problems);
            if let Ok(set) = compile(source) {
                for (i, g) in source.0.iter().enumerate() {
                    let alone = compile(&Globs(vec![g.clone()])).unwrap_or(set.clone());
                    if !SOURCE_KINDS.iter().any(|k| alone.is_match(k.as_str())) {
                        problems.add(
                            &at.key("source").index(i),
                            format!(
                                "{g:?} matches no source kind (pod, journal, file, audit, security)"
                            ),
                        );
                    }
                }
            }
        }
        for (name, globs) in [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("container", &self.container),
        ] {
            if let Some(globs) = globs {
                check_globs(globs, &at.key(name), problems);
            }
        }
        for (section, map) in [("labels", &self.labels), ("fields", &self.fields)] {
            for (key, globs) in map {
                let at = at.key(section).key(key);
                if key.is_empty() || key.split('.').any(str::is_empty) {
                    problems.add(
                        &at,
                        "the name must not be empty (nor have empty dotted parts)",
                    );
                }
                check_globs(globs, &at, problems);
            }
        }
    }
}

/// A compiled [`RouteMatch`].
#[derive(Debug, Clone)]
pub struct Matcher {
    source: Option<GlobSet>,
    namespace: Option<GlobSet>,
    pod: Option<GlobSet>,
    container: Option<GlobSet>,
    labels: Vec<(String, GlobSet)>,
    fields: Vec<(Vec<String>, GlobSet)>,
}

impl Matcher {
    /// Compiles a validated `match:` (an invalid glob is an error naming it).
    pub fn new(m: &RouteMatch) -> Result<Self, String> {
        let one = |name: &str, g: &Option<Globs>| -> Result<Option<GlobSet>, String> {
            g.as_ref()
                .map(|g| compile(g).map_err(|(i, e)| format!("match.{name}[{i}]: {e}")))
                .transpose()
        };
        let map =
            |name: &str, m: &BTreeMap<String, Globs>| -> Result<Vec<(String, GlobSet)>, String> {
                m.iter()
                    .map(|(k, g)| {
                        compile(g)
                            .map(|set| (k.clone(), set))
                            .map_err(|(i, e)| format!("match.{name}.{k}[{i}]: {e}"))
                    })
                    .collect()
            };
        Ok(Self {
            source: one("source", &m.source)?,
            namespace: one("namespace", &m.namespace)?,
            pod: one("pod", &m.pod)?,
            container: one("container", &m.container)?,
            labels: map("labels", &m.labels)?,
            fields: map("fields", &m.fields)?
                .into_iter()
                .map(|(k, set)| (k.split('.').map(str::to_string).collect(), set))
                .collect(),
        })
    }

    /// Whether `record` is taken.
    pub fn matches(&self, record: &LogRecord) -> bool {
        let s = &record.source;
        let is =
            |set: &Option<GlobSet>, value: &str| set.as_ref().is_none_or(|g| g.is_match(value));
        if !(is(&self.source, s.kind.as_str())
            && is(&self.namespace, &s.namespace)
            && is(&self.pod, &s.pod)
            && is(&self.container, &s.container))
        {
            return false;
        }
        if !self.labels.is_empty() {
            let Some(meta) = s.kubernetes.as_deref() else {
                return false;
            };
            if !self
                .labels
                .iter()
                .all(|(k, g)| meta.labels.get(k).is_some_and(|v| g.is_match(v)))
            {
                return false;
            }
        }
        self.fields.iter().all(|(path, g)| {
            field(record.fields.as_ref(), path).is_some_and(|v| match v {
                serde_json::Value::String(s) => g.is_match(s),
                serde_json::Value::Null
                | serde_json::Value::Array(_)
                | serde_json::Value::Object(_) => false,
                other => g.is_match(other.to_string()),
            })
        })
    }
}

fn field<'a>(
    fields: Option<&'a serde_json::Map<String, serde_json::Value>>,
    path: &[String],
) -> Option<&'a serde_json::Value> {
    let fields = fields?;
    // A literal dotted key wins (`{"user.id": 7}`), then the nested path.
    if path.len() > 1
        && let Some(v) = fields.get(&path.join("."))
    {
        return Some(v);
    }
    let (first, rest) = path.split_first()?;
    let mut v = fields.get(first)?;
    for part in rest {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{SourceMeta, Stream};
    use std::sync::Arc;

    fn rec(
        kind: SourceKind,
        ns: &str,
        pod: &str,
        labels: &[(&str, &str)],
        fields: &str,
    ) -> LogRecord {
        let kubernetes = (!labels.is_empty()).then(|| {
            Arc::new(crate::kube::PodMetadata {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
        });
        let meta = Arc::new(SourceMeta {
            kind,
            namespace: ns.into(),
            pod: pod.into(),
            pod_uid: "u".into(),
            container: "c".into(),
            node: "n".into(),
            path: "/x".into(),
            file_id: 1,
            kubernetes,
        });
        let mut r = LogRecord::new(meta, 0, Stream::Stdout, 0, "m".into());
        r.fields = serde_json::from_str(fields).ok();
        r
    }

    fn matcher(yaml: &str) -> Matcher {
        let m: RouteMatch = serde_yaml_ng::from_str(yaml).unwrap();
        m.validated().unwrap();
        Matcher::new(&m).unwrap()
    }

    #[test]
    fn route_matrix() {
        let web = rec(
            SourceKind::Pod,
            "team-a",
            "web-1",
            &[("app", "web")],
            r#"{"level":"error","user":{"id":7},"ok":true}"#,
        );
        let db = rec(
            SourceKind::Pod,
            "prod",
            "db-0",
            &[("app", "db")],
            r#"{"level":"info"}"#,
        );
        let host = rec(SourceKind::Journal, "", "", &[], "null");
        let cases: &[(&str, [bool; 3])] = &[
            ("{}", [true, true, true]),
            ("source: pod", [true, true, false]),
            ("source: [journal, file]", [false, false, true]),
            ("namespace: team-*", [true, false, false]),
            ("namespace: [team-*, prod]", [true, true, false]),
            ("namespace: '*'", [true, true, true]),
            ("pod: '{web,db}-?'", [true, true, false]),
            ("container: c", [true, true, true]),
            ("labels: {app: web}", [true, false, false]),
            ("labels: {app: '*'}", [true, true, false]),
            ("fields: {level: error}", [true, false, false]),
            ("fields: {user.id: '7'}", [true, false, false]),
            ("fields: {ok: 'true'}", [true, false, false]),
            ("fields: {user: '*'}", [false, false, false]),
            (
                "{namespace: team-*, fields: {level: info}}",
                [false, false, false],
            ),
            (
                "{source: pod, labels: {app: db}, fields: {level: info}}",
                [false, true, false],
            ),
        ];
        for (yaml, want) in cases {
            let m = matcher(yaml);
            let got = [m.matches(&web), m.matches(&db), m.matches(&host)];
            assert_eq!(&got, want, "match: {yaml}");
        }
    }

    #[test]
    fn validation_names_the_key_path() {
        let check = |yaml: &str| {
            let m: RouteMatch = serde_yaml_ng::from_str(yaml).unwrap();
            let mut problems = Problems::new();
            m.validate(
                &KeyPath::root().key("sinks").index(1).key("match"),
                &mut problems,
            );
            problems.into_result().map_err(|e| e.to_string())
        };
        assert!(
            check("namespace: [ok, 'a[']")
                .unwrap_err()
                .contains("sinks[1].match.namespace[1]")
        );
        assert!(
            check("source: pods")
                .unwrap_err()
                .contains("sinks[1].match.source[0]")
        );
        assert!(check("pod: []").unwrap_err().contains("sinks[1].match.pod"));
        assert!(
            check("fields: {'a..b': x}")
                .unwrap_err()
                .contains("fields.a..b")
        );
        assert!(check("source: 'j*'").is_ok());
        assert!(serde_yaml_ng::from_str::<RouteMatch>("namespaces: x").is_err());
        assert!(serde_yaml_ng::from_str::<RouteMatch>("pod: {a: b}").is_err());
    }
}
