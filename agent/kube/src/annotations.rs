//! `node-agent.io/*` annotations: exclusion and hints for later stages, read from the
//! raw annotations (before the user's annotation filter).

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::metadata::KeyValues;

/// Every hint key starts with this.
pub const PREFIX: &str = "node-agent.io/";
/// `"true"` on a pod (or its namespace): skip its logs.
pub const EXCLUDE: &str = "node-agent.io/exclude";
/// `a,b`: skip these containers' logs.
pub const EXCLUDE_CONTAINERS: &str = "node-agent.io/exclude-containers";
/// Hints kept per object at most (the rest are ignored); bounds a hostile pod.
pub const MAX_HINTS: usize = 32;

/// The `node-agent.io/*` annotations of one pod or namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    exclude: bool,
    exclude_containers: Box<[Box<str>]>,
    /// Keys without the prefix (`multiline`), sorted.
    values: KeyValues,
}

impl Hints {
    pub(crate) fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
        max_value_bytes: usize,
    ) -> Self {
        let Some(annotations) = annotations else {
            return Self::default();
        };
        let values: Vec<(Box<str>, Box<str>)> = annotations
            .range::<str, _>((Bound::Included(PREFIX), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(PREFIX))
            .filter(|(k, v)| k.len() > PREFIX.len() && v.len() <= max_value_bytes)
            .take(MAX_HINTS)
            .map(|(k, v)| (k[PREFIX.len()..].into(), v.as_str().into()))
            .collect();
        let exclude = annotations
            .get(EXCLUDE)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let exclude_containers = annotations
            .get(EXCLUDE_CONTAINERS)
            .filter(|v| v.len() <= max_value_bytes)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(Box::from)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            exclude,
            exclude_containers,
            values: KeyValues::from_sorted(values),
        }
    }

    /// `node-agent.io/exclude: "true"`.
    pub fn exclude(&self) -> bool {
        self.exclude
    }

    /// Containers named in `node-agent.io/exclude-containers`.
    pub fn excluded_containers(&self) -> impl Iterator<Item = &str> {
        self.exclude_containers.iter().map(|c| &**c)
    }

    pub fn excludes_container(&self, container: &str) -> bool {
        self.exclude_containers.iter().any(|c| &**c == container)
    }

    /// The value of `node-agent.io/<name>`, e.g. `get("multiline")`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name)
    }

    /// Every hint, keys without the prefix.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_exclusion_and_hints() {
        let a = annotations(&[
            ("node-agent.io/exclude", " True "),
            ("node-agent.io/exclude-containers", "sidecar, ,istio-proxy"),
            ("node-agent.io/multiline", "java"),
            ("node-agent.io/", "ignored"),
            ("node-agent.iox/other", "ignored"),
            ("other.io/x", "y"),
        ]);
        let h = Hints::from_annotations(Some(&a), 100);
        assert!(h.exclude());
        assert_eq!(
            h.excluded_containers().collect::<Vec<_>>(),
            ["sidecar", "istio-proxy"]
        );
        assert!(h.excludes_container("sidecar"));
        assert!(!h.excludes_container("app"));
        assert_eq!(h.get("multiline"), Some("java"));
        assert_eq!(h.iter().count(), 3);
    }

    #[test]
    fn anything_but_true_does_not_exclude_and_long_values_are_ignored() {
        let a = annotations(&[
            ("node-agent.io/exclude", "yes"),
            ("node-agent.io/multiline", "java-but-much-too-long"),
        ]);
        let h = Hints::from_annotations(Some(&a), 8);
        assert!(!h.exclude());
        assert_eq!(h.get("multiline"), None);
        assert_eq!(Hints::from_annotations(None, 8), Hints::default());
    }
}
