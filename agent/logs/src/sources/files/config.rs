//! `logs.files:`: host log files by glob, each entry with its format.

use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use node_agent_core::config::{KeyPath, Problems, Validate};

/// How the lines of a file are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Each line is a message.
    #[default]
    Plain,
    /// Each line is a JSON object; its keys go into `fields` (other lines ship as plain).
    Json,
    /// The Kubernetes API server's audit log (JSON events); source kind `audit`.
    Audit,
}

/// One `logs.files` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesEntry {
    /// Absolute globs: `*` and `?` within a name, `**` across directories, `{a,b}`, `[..]`.
    pub paths: Vec<String>,
    /// Globs of files never read, even if `paths` matches them.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub format: FileFormat,
}

/// Deepest directory level below a glob's base that `**` reaches.
pub const MAX_GLOB_DEPTH: usize = 8;

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    // `*` stays within one path component, as in a shell.
    GlobBuilder::new(pattern).literal_separator(true).build()
}

/// The literal directory a glob starts in and how many directory levels below it the
/// glob can reach (`**`: [`MAX_GLOB_DEPTH`]).
pub fn base_and_depth(pattern: &str) -> (PathBuf, usize) {
    let path = Path::new(pattern);
    let components: Vec<Component<'_>> = path.components().collect();
    let meta = |c: &Component<'_>| {
        c.as_os_str()
            .to_str()
            .is_some_and(|s| s.contains(['*', '?', '[', '{']))
    };
    let first_glob = components.iter().position(meta).unwrap_or(components.len());
    // The last component is the file name: the base is at most its parent.
    let literal = first_glob.min(components.len().saturating_sub(1));
    let base: PathBuf = components[..literal].iter().collect();
    let rest = &components[literal..];
    let depth = if rest.iter().any(|c| c.as_os_str() == "**") {
        MAX_GLOB_DEPTH
    } else {
        rest.len().saturating_sub(1)
    };
    (base, depth)
}

/// A compiled entry: matchers plus where to look.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub include: GlobSet,
    pub exclude: GlobSet,
    /// Directory scanned and watched, and how deep.
    pub base: PathBuf,
    pub depth: usize,
    pub format: FileFormat,
    /// The entry's patterns, for the checkpoint name.
    pub patterns: Vec<String>,
}

impl FilesEntry {
    /// One compiled group per distinct base directory of the entry's globs (each becomes
    /// its own tail source, so `/var/log/*.log` and `/opt/app/*.log` do not watch `/`).
    pub fn compile(&self) -> Result<Vec<Compiled>, String> {
        let mut exclude = GlobSetBuilder::new();
        for p in &self.exclude {
            exclude.add(glob(p).map_err(|e| format!("exclude {p:?}: {e}"))?);
        }
        let exclude = exclude.build().map_err(|e| e.to_string())?;
        // Globs whose bases nest share the outer base (one watch, one scan).
        let mut groups: Vec<(PathBuf, usize, GlobSetBuilder, Vec<String>)> = Vec::new();
        let mut bases: Vec<(String, Glob, PathBuf, usize)> = Vec::new();
        for p in &self.paths {
            let g = glob(p).map_err(|e| format!("{p:?}: {e}"))?;
            let (base, depth) = base_and_depth(p);
            bases.push((p.clone(), g, base, depth));
        }
        bases.sort_by_key(|(_, _, base, _)| base.components().count());
        for (p, g, base, depth) in bases {
            let outer = groups.iter_mut().find(|(b, ..)| base.starts_with(b));
            match outer {
                Some((b, d, set, pats)) => {
                    let extra = base.components().count() - b.components().count();
                    *d = (*d).max(depth + extra).min(MAX_GLOB_DEPTH);
                    set.add(g);
                    pats.push(p);
                }
                None => {
                    let mut set = GlobSetBuilder::new();
                    set.add(g);
                    groups.push((base, depth, set, vec![p]));
                }
            }
        }
        groups
            .into_iter()
            .map(|(base, depth, set, patterns)| {
                Ok(Compiled {
                    include: set.build().map_err(|e| e.to_string())?,
                    exclude: exclude.clone(),
                    base,
                    depth,
                    format: self.format,
                    patterns,
                })
            })
            .collect()
    }
}

/// Validates `logs.files`.
pub fn validate(entries: &[FilesEntry], at: &KeyPath, problems: &mut Problems) {
    for (i, e) in entries.iter().enumerate() {
        let at = at.index(i);
        problems.check(
            !e.paths.is_empty(),
            &at.key("paths"),
            "needs at least one glob",
        );
        for (name, list) in [("paths", &e.paths), ("exclude", &e.exclude)] {
            for (j, p) in list.iter().enumerate() {
                let key = at.key(name).index(j);
                if !Path::new(p).is_absolute() {
                    problems.add(&key, format!("must be an absolute path, got {p:?}"));
                } else if let Err(err) = glob(p) {
                    problems.add(&key, format!("invalid glob: {err}"));
                } else if name == "paths" && base_and_depth(p).0 == Path::new("/") {
                    problems.add(
                        &key,
                        "must start with a literal directory (not a glob at /)",
                    );
                }
            }
        }
    }
}

/// Wrapper so `logs.files` can be validated like any section.
pub struct FilesConfig<'a>(pub &'a [FilesEntry]);

impl Validate for FilesConfig<'_> {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        validate(self.0, at, problems);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_and_depths_of_globs() {
        assert_eq!(base_and_depth("/var/log/*.log"), ("/var/log".into(), 0));
        assert_eq!(
            base_and_depth("/var/log/kubernetes/audit/*.log"),
            ("/var/log/kubernetes/audit".into(), 0)
        );
        assert_eq!(base_and_depth("/var/log/*/x.log"), ("/var/log".into(), 1));
        assert_eq!(
            base_and_depth("/var/log/app/**/*.log"),
            ("/var/log/app".into(), MAX_GLOB_DEPTH)
        );
        assert_eq!(base_and_depth("/var/log/syslog"), ("/var/log".into(), 0));
    }

    #[test]
    fn entries_parse_compile_and_validate() {
        let entries: Vec<FilesEntry> = serde_yaml_ng::from_str(
            "- paths: [/var/log/*.log, /opt/app/*.log, /var/log/x/*.txt]\n  exclude: [/var/log/dpkg.log]\n  format: json\n- paths: [/var/log/kubernetes/audit/*.log]\n  format: audit\n",
        )
        .unwrap();
        assert_eq!(entries[0].format, FileFormat::Json);
        assert_eq!(entries[1].format, FileFormat::Audit);
        FilesConfig(&entries).validated().unwrap();
        let groups = entries[0].compile().unwrap();
        assert_eq!(groups.len(), 2, "one group per outermost base directory");
        assert_eq!(groups[0].base, Path::new("/var/log"));
        assert_eq!(groups[0].depth, 1, "/var/log/x/*.txt is one level below");
        assert_eq!(groups[1].base, Path::new("/opt/app"));
        assert!(groups[0].include.is_match("/var/log/syslog.log"));
        assert!(
            !groups[0].include.is_match("/var/log/pods/a/b.log"),
            "* stays in one directory"
        );
        assert!(groups[0].exclude.is_match("/var/log/dpkg.log"));

        assert!(
            serde_yaml_ng::from_str::<Vec<FilesEntry>>("- paths: [/a]\n  format: xml\n").is_err()
        );
        assert!(serde_yaml_ng::from_str::<Vec<FilesEntry>>("- path: [/a]\n").is_err());
        let bad = vec![FilesEntry {
            paths: vec![
                "var/log/*.log".into(),
                "/var/log/[.log".into(),
                "/*.log".into(),
            ],
            exclude: vec!["x".into()],
            format: FileFormat::Plain,
        }];
        let text = FilesConfig(&bad).validated().unwrap_err().to_string();
        assert!(
            text.contains("[0].paths[0]: must be an absolute path"),
            "{text}"
        );
        assert!(text.contains("[0].paths[1]: invalid glob"), "{text}");
        assert!(
            text.contains("[0].paths[2]: must start with a literal directory"),
            "{text}"
        );
        assert!(
            text.contains("[0].exclude[0]: must be an absolute path"),
            "{text}"
        );
    }
}
