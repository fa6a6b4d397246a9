//! Which records a processor applies to: the `match:` of a `logs.processors` entry.
//!
//! ```yaml
//! match:
//!   source: pod                 # pod, journal, file, audit, security
//!   namespace: [prod-*, staging]
//!   pod: /^api-[0-9a-f]+$/      # /…/ is a regex (matching the whole value), else a glob
//!   container: app
//!   labels: {app.kubernetes.io/name: "checkout*"}
//! ```
//!
//! Every key given must match (and), a list matches when any of its patterns does (or).
//! Labels come from the Kubernetes metadata the enrich stage attached: a record without it
//! matches no `labels:` condition. Records of one file share one [`SourceMeta`], so the
//! verdict is cached for the last one seen.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use node_agent_core::config::{KeyPath, Problems};
use node_agent_core::record::SourceMeta;

/// One pattern or several (any of them).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Patterns {
    One(String),
    Any(Vec<String>),
}

impl Patterns {
    fn as_slice(&self) -> &[String] {
        match self {
            Patterns::One(p) => std::slice::from_ref(p),
            Patterns::Any(v) => v,
        }
    }
}

/// The `match:` section as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MatchConfig {
    pub source: Option<Patterns>,
    pub namespace: Option<Patterns>,
    pub pod: Option<Patterns>,
    pub container: Option<Patterns>,
    pub labels: BTreeMap<String, Patterns>,
}

/// A compiled glob or regex.
#[derive(Debug, Clone)]
pub enum Pattern {
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

impl Pattern {
    /// `/…/` is a regex anchored to the whole value; anything else a glob (`*`, `?`, `[…]`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(inner) = text
            .strip_prefix('/')
            .and_then(|t| t.strip_suffix('/'))
            .filter(|_| text.len() >= 2)
        {
            regex::Regex::new(&format!("^(?:{inner})$"))
                .map(Pattern::Regex)
                .map_err(|e| format!("invalid regex {inner:?}: {e}"))
        } else {
            globset::GlobBuilder::new(text)
                .literal_separator(false)
                .build()
                .map(|g| Pattern::Glob(g.compile_matcher()))
                .map_err(|e| format!("invalid glob {text:?}: {e}"))
        }
    }

    pub fn is_match(&self, value: &str) -> bool {
        match self {
            Pattern::Glob(g) => g.is_match(value),
            Pattern::Regex(r) => r.is_match(value),
        }
    }
}

/// Compiles every pattern of `patterns`, reporting bad ones at `at` (`at[i]` in a list).
fn compile(patterns: &Patterns, at: &KeyPath, problems: &mut Problems) -> Vec<Pattern> {
    let list = patterns.as_slice();
    problems.check(!list.is_empty(), at, "must name at least one pattern");
    list.iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let path = match patterns {
                Patterns::One(_) => at.clone(),
                Patterns::Any(_) => at.index(i),
            };
            problems.take(&path, Pattern::parse(p))
        })
        .collect()
}

fn any(patterns: &[Pattern], value: &str) -> bool {
    patterns.iter().any(|p| p.is_match(value))
}

/// The compiled `match:`; an empty one matches everything.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    source: Option<Vec<Pattern>>,
    namespace: Option<Vec<Pattern>>,
    pod: Option<Vec<Pattern>>,
    container: Option<Vec<Pattern>>,
    labels: Vec<(String, Vec<Pattern>)>,
    /// The last source seen and its verdict (the `Arc` is kept so its address stays its own).
    last: Option<(Arc<SourceMeta>, bool)>,
}

impl Matcher {
    /// Compiles `config`; problems are reported under `at` (the `match` key).
    pub fn compile(config: &MatchConfig, at: &KeyPath, problems: &mut Problems) -> Self {
        let mut one = |name: &str, p: &Option<Patterns>| {
            p.as_ref()
                .map(|p| compile(p, &at.key(name), &mut *problems))
        };
        let source = one("source", &config.source);
        let namespace = one("namespace", &config.namespace);
        let pod = one("pod", &config.pod);
        let container = one("container", &config.container);
        let labels = config
            .labels
            .iter()
            .map(|(k, p)| (k.clone(), compile(p, &at.key("labels").key(k), problems)))
            .collect();
        Self {
            source,
            namespace,
            pod,
            container,
            labels,
            last: None,
        }
    }

    /// Whether records of `source` are this processor's.
    pub fn matches(&mut self, source: &Arc<SourceMeta>) -> bool {
        if let Some((last, verdict)) = &self.last
            && Arc::ptr_eq(last, source)
        {
            return *verdict;
        }
        let verdict = self.evaluate(source);
        self.last = Some((Arc::clone(source), verdict));
        verdict
    }

    fn evaluate(&self, s: &SourceMeta) -> bool {
        let field = |p: &Option<Vec<Pattern>>, v: &str| p.as_ref().is_none_or(|p| any(p, v));
        field(&self.source, s.kind.as_str())
            && field(&self.namespace, &s.namespace)
            && field(&self.pod, &s.pod)
            && field(&self.container, &s.container)
            && self.labels.iter().all(|(key, patterns)| {
                s.kubernetes
                    .as_ref()
                    .and_then(|k| k.labels.get(key))
                    .is_some_and(|v| any(patterns, v))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::test_support::meta;
    use node_agent_core::kube::PodMetadata;

    fn matcher(yaml: &str) -> Result<Matcher, String> {
        let config: MatchConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let mut problems = Problems::new();
        let m = Matcher::compile(&config, &KeyPath::root().key("match"), &mut problems);
        problems.into_result().map(|_| m).map_err(|e| e.to_string())
    }

    #[test]
    fn globs_regexes_lists_and_labels() {
        let plain = meta("prod-eu", "api-7f9c", "app");
        let mut m =
            matcher("namespace: prod-*\npod: /api-[0-9a-f]+/\ncontainer: [sidecar, app]").unwrap();
        assert!(m.matches(&plain));
        assert!(m.matches(&plain), "cached verdict");
        assert!(!m.matches(&meta("prod-eu", "api-7f9c-x", "app")));
        assert!(!m.matches(&meta("dev", "api-7f9c", "app")));
        assert!(matcher("").unwrap().matches(&plain));
        assert!(matcher("source: pod").unwrap().matches(&plain));
        assert!(!matcher("source: [journal, file]").unwrap().matches(&plain));

        let mut labelled = matcher("labels: {team: pay*}").unwrap();
        assert!(!labelled.matches(&plain), "no metadata, no label match");
        let mut with_labels = (*plain).clone();
        let mut pod = PodMetadata::default();
        pod.labels.insert("team".into(), "payments".into());
        with_labels.kubernetes = Some(Arc::new(pod));
        assert!(labelled.matches(&Arc::new(with_labels)));
    }

    #[test]
    fn bad_patterns_are_reported_with_their_key_path() {
        let err =
            matcher("pod: /api-(/\nnamespace: [ok, 'a[']\nlabels: {app: '/x)/'}").unwrap_err();
        assert!(err.contains("3 problems"), "{err}");
        assert!(err.contains("match.pod: invalid regex"), "{err}");
        assert!(err.contains("match.namespace[1]: invalid glob"), "{err}");
        assert!(err.contains("match.labels.app: invalid regex"), "{err}");
        assert!(matcher("pods: x").is_err(), "unknown key");
        assert!(matcher("pod: []").unwrap_err().contains("at least one"));
    }
}
