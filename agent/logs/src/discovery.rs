//! Finds pod log files: a recursive `notify` watch wakes the reader on any change (new pods
//! are picked up within milliseconds), and a periodic full rescan is the fallback for lost
//! events (inotify queue overflow, watch limits, directories created before being watched).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use node_agent_core::kubelet::{self, PodLogPath};

/// A log file found under the pods directory.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    pub info: PodLogPath,
}

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
pub fn scan(pods_dir: &Path, filter: &NamespaceFilter) -> Vec<Candidate> {
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
                    Some(info) => out.push(Candidate { path, info }),
                    None => tracing::debug!(path = %path.display(), "ignoring non-log file"),
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Watches `pods_dir` recursively. Structural changes set `rescan`; every event pokes
/// `wake` (coalesced: a full channel means the reader is already due to wake).
pub fn watch(
    pods_dir: &Path,
    rescan: Arc<AtomicBool>,
    wake: SyncSender<()>,
) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(event) => {
                if !matches!(
                    event.kind,
                    EventKind::Modify(notify::event::ModifyKind::Data(_))
                ) && !matches!(event.kind, EventKind::Access(_))
                {
                    rescan.store(true, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "file watch error; rescanning");
                rescan.store(true, Ordering::Relaxed);
            }
        }
        let _ = wake.try_send(());
    })?;
    watcher.watch(pods_dir, RecursiveMode::Recursive)?;
    Ok(watcher)
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
