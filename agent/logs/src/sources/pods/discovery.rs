//! Finds pod log files in kubelet's layout (`<pods_dir>/<ns>_<pod>_<uid>/<container>/`).

use std::path::Path;

use node_agent_core::kubelet::{self, FileKind, PodLogPath};

use crate::sources::tail::{self, Candidate};

/// Which namespaces to ship.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl NamespaceFilter {
    pub fn allows(&self, ns: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|n| n == ns))
            && !self.exclude.iter().any(|n| n == ns)
    }
}

fn entries(dir: &Path) -> impl Iterator<Item = std::fs::DirEntry> {
    let iter = match std::fs::read_dir(dir) {
        Ok(i) => Some(i),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot list directory");
            }
            None
        }
    };
    iter.into_iter().flatten().filter_map(Result::ok)
}

/// Lists every pod log file (current and rotated) under `pods_dir`, junk ignored.
pub fn scan(pods_dir: &Path, filter: &NamespaceFilter) -> Vec<Candidate<PodLogPath>> {
    let mut out = Vec::new();
    for pod in entries(pods_dir) {
        let pod_name = pod.file_name();
        let Some((ns, _, _)) = pod_name.to_str().and_then(kubelet::parse_pod_dir) else {
            tracing::debug!(entry = ?pod_name, "ignoring entry that is not <namespace>_<pod>_<uid>");
            continue;
        };
        if !filter.allows(ns) {
            continue;
        }
        for container in entries(&pod.path()) {
            for file in entries(&container.path()) {
                let path = file.path();
                match kubelet::parse_path(pods_dir, &path) {
                    Some(info) => out.push(Candidate {
                        path,
                        kind: match info.kind {
                            FileKind::Current => tail::FileKind::Current,
                            FileKind::Rotated => tail::FileKind::Rotated,
                            FileKind::RotatedCompressed => tail::FileKind::RotatedCompressed,
                        },
                        info,
                    }),
                    None => tracing::debug!(path = %path.display(), "ignoring non-log file"),
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_layout_and_filters_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "a_p1_00000000-0000-4000-8000-000000000001/c/0.log",
            "a_p1_00000000-0000-4000-8000-000000000001/c/0.log.20240101-000000",
            "b_p2_00000000-0000-4000-8000-000000000002/c/1.log",
            "junk/c/0.log",
            "a_p1_00000000-0000-4000-8000-000000000001/c/notes.txt",
        ] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"").unwrap();
        }
        let all = scan(root, &NamespaceFilter::default());
        let names: Vec<_> = all
            .iter()
            .map(|c| {
                c.path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "a_p1_00000000-0000-4000-8000-000000000001/c/0.log",
                "a_p1_00000000-0000-4000-8000-000000000001/c/0.log.20240101-000000",
                "b_p2_00000000-0000-4000-8000-000000000002/c/1.log"
            ]
        );
        let only_b = scan(
            root,
            &NamespaceFilter {
                include: vec![],
                exclude: vec!["a".into()],
            },
        );
        assert_eq!(only_b.len(), 1);
        assert_eq!(only_b[0].info.namespace, "b");
        assert!(scan(&root.join("missing"), &NamespaceFilter::default()).is_empty());
    }
}
