//! Config validation that reports every problem at once, each with the YAML key path it
//! concerns (`logs.batch_max_records`, `sinks[1].url`), before anything starts.
//!
//! Each subsystem's config type implements [`Validate`]; the top-level config walks its
//! sections with [`KeyPath::key`]/[`KeyPath::index`] and collects into [`Problems`].

use std::fmt;

/// Where a value sits in the config file, e.g. `sinks[1].auth.basic`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(String);

impl KeyPath {
    /// The document root.
    pub fn root() -> Self {
        Self::default()
    }

    /// `self.name`.
    pub fn key(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// `self[i]`.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "(top level)"
        } else {
            &self.0
        })
    }
}

/// One thing wrong with a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: KeyPath,
    pub message: String,
}

/// Every problem found in a config; empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `message` about the value at `path`.
    pub fn add(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.clone(),
            message: message.into(),
        });
    }

    /// Records `message` at `path` unless `ok`.
    pub fn check(&mut self, ok: bool, path: &KeyPath, message: impl Into<String>) {
        if !ok {
            self.add(path, message);
        }
    }

    /// Records an error (with its causes) at `path`, if `result` is one; passes the value on.
    pub fn take<T, E: fmt::Display>(&mut self, path: &KeyPath, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(path, format!("{e:#}"));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// `Ok` when nothing was found, otherwise every problem as one error.
    pub fn into_result(self) -> Result<(), InvalidConfig> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidConfig(self))
        }
    }
}

/// A config with problems; displays one `path: message` line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidConfig(pub Problems);

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.0.len();
        write!(
            f,
            "{n} problem{} in the configuration",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.0.0 {
            write!(f, "\n  {}: {}", p.path, p.message)?;
        }
        Ok(())
    }
}

/// A config section that can check itself. `at` is the section's own key path.
pub trait Validate {
    fn validate(&self, at: &KeyPath, problems: &mut Problems);

    /// Validates this section alone (as the document root), for tests and callers that
    /// build a section in code.
    fn validated(&self) -> Result<(), InvalidConfig> {
        let mut problems = Problems::new();
        self.validate(&KeyPath::root(), &mut problems);
        problems.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Section {
        a: u32,
        b: Vec<u32>,
    }

    impl Validate for Section {
        fn validate(&self, at: &KeyPath, problems: &mut Problems) {
            problems.check(self.a > 0, &at.key("a"), "must be greater than 0");
            for (i, b) in self.b.iter().enumerate() {
                problems.check(*b < 10, &at.index(i).key("b"), format!("{b} is too big"));
            }
        }
    }

    #[test]
    fn collects_every_problem_with_its_path() {
        let s = Section {
            a: 0,
            b: vec![1, 20, 30],
        };
        let mut problems = Problems::new();
        s.validate(&KeyPath::root().key("logs"), &mut problems);
        let text = problems.into_result().unwrap_err().to_string();
        assert_eq!(
            text,
            "3 problems in the configuration\n  logs.a: must be greater than 0\n  \
             logs[1].b: 20 is too big\n  logs[2].b: 30 is too big"
        );
        assert!(Section { a: 1, b: vec![] }.validated().is_ok());
    }
}
