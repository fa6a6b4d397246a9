//! Label/annotation key filters: include/exclude globs, compiled once.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::KeyFilterConfig;

/// A compiled [`KeyFilterConfig`].
#[derive(Debug, Clone)]
pub struct KeyFilter {
    include_all: bool,
    include: GlobSet,
    exclude: GlobSet,
}

impl KeyFilter {
    pub fn new(config: &KeyFilterConfig) -> Result<Self, globset::Error> {
        let include_all = config.include.iter().any(|g| g == "*");
        Ok(Self {
            include_all,
            include: Self::set(if include_all { &[] } else { &config.include })?,
            exclude: Self::set(&config.exclude)?,
        })
    }

    /// One glob as the filter reads it (`*` crosses `/`).
    pub(crate) fn compile_one(glob: &str) -> Result<Glob, globset::Error> {
        GlobBuilder::new(glob).literal_separator(false).build()
    }

    fn set(globs: &[String]) -> Result<GlobSet, globset::Error> {
        let mut builder = GlobSetBuilder::new();
        for glob in globs {
            builder.add(Self::compile_one(glob)?);
        }
        builder.build()
    }

    pub fn matches(&self, key: &str) -> bool {
        (self.include_all || self.include.is_match(key)) && !self.exclude.is_match(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> KeyFilter {
        KeyFilter::new(&KeyFilterConfig {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn include_and_exclude_by_glob() {
        let f = filter(&["app", "app.kubernetes.io/*"], &["*/instance"]);
        assert!(f.matches("app"));
        assert!(f.matches("app.kubernetes.io/name"));
        assert!(!f.matches("app.kubernetes.io/instance"));
        assert!(!f.matches("team"));
        let all = filter(&["*"], &["pod-template-hash"]);
        assert!(all.matches("a/b/c"));
        assert!(!all.matches("pod-template-hash"));
        let none = filter(&[], &[]);
        assert!(!none.matches("app"));
    }
}
