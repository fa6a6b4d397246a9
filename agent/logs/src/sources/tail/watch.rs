//! What the kernel tells us about a tailed tree (inotify through `notify`, recursively):
//! which files were written and whether anything structural (create, rename, delete)
//! happened. With it the tail source reads only files that changed and rescans only when
//! the tree changed, so an idle node costs almost nothing; the periodic full pass stays as
//! the fallback for lost events (queue overflow, watch limits, directories created before
//! they were watched).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// Written paths remembered between two passes; beyond this the next pass reads every file.
const MAX_MODIFIED: usize = 8192;

/// Changes since the reader last looked.
#[derive(Debug, Default)]
pub struct Changes {
    structural: AtomicBool,
    written: Mutex<Written>,
}

#[derive(Debug, Default)]
struct Written {
    paths: HashSet<PathBuf>,
    /// Too many to remember, or events were lost: read everything.
    overflow: bool,
}

/// What [`Changes::take`] returns.
#[derive(Debug, Default)]
pub struct Taken {
    pub structural: bool,
    /// `None`: read every file (events were lost or too many).
    pub written: Option<HashSet<PathBuf>>,
}

impl Changes {
    /// Takes and clears what happened since the last call.
    pub fn take(&self) -> Taken {
        let structural = self.structural.swap(false, Ordering::Relaxed);
        let mut w = match self.written.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        let overflow = std::mem::take(&mut w.overflow);
        let paths = std::mem::take(&mut w.paths);
        Taken {
            structural,
            written: (!overflow).then_some(paths),
        }
    }

    fn record(&self, event: &notify::Event) {
        if event.need_rescan() {
            self.lost();
            return;
        }
        match event.kind {
            EventKind::Access(_) => {}
            EventKind::Modify(notify::event::ModifyKind::Data(_)) => {
                let mut w = match self.written.lock() {
                    Ok(w) => w,
                    Err(p) => p.into_inner(),
                };
                for path in &event.paths {
                    if w.paths.len() >= MAX_MODIFIED {
                        w.overflow = true;
                        w.paths.clear();
                        break;
                    }
                    w.paths.insert(path.clone());
                }
            }
            _ => self.structural.store(true, Ordering::Relaxed),
        }
    }

    fn lost(&self) {
        self.structural.store(true, Ordering::Relaxed);
        let mut w = match self.written.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        w.overflow = true;
        w.paths.clear();
    }
}

/// Watches `root` recursively into `changes`; every event pokes `wake` (coalesced: a full
/// channel means the reader is already due to wake).
pub fn watch(
    root: &Path,
    changes: Arc<Changes>,
    wake: SyncSender<()>,
) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        match res {
            Ok(event) => changes.record(&event),
            Err(e) => {
                tracing::debug!(error = %e, "file watch error; reading everything");
                changes.lost();
            }
        }
        let _ = wake.try_send(());
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};

    fn wait_for(changes: &Changes, pred: impl Fn(&Taken) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Taken {
            structural: false,
            written: Some(HashSet::new()),
        };
        while Instant::now() < deadline {
            let t = changes.take();
            seen.structural |= t.structural;
            match (&mut seen.written, t.written) {
                (Some(a), Some(b)) => a.extend(b),
                (_, None) => seen.written = None,
                (None, Some(_)) => {}
            }
            if pred(&seen) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn tells_writes_from_structural_changes() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("pod/c");
        std::fs::create_dir_all(&sub).unwrap();
        let file = sub.join("0.log");
        let mut f = std::fs::File::create(&file).unwrap();
        let changes = Arc::new(Changes::default());
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        let _w = watch(dir.path(), Arc::clone(&changes), tx).unwrap();
        f.write_all(b"x\n").unwrap();
        assert!(wait_for(&changes, |t| t
            .written
            .as_ref()
            .is_some_and(|w| w.contains(&file))));
        std::fs::rename(&file, sub.join("0.log.1")).unwrap();
        assert!(wait_for(&changes, |t| t.structural));
    }
}
