//! What the kernel tells us about a tailed tree: which files were written and whether
//! anything structural (create, rename, delete) happened. With it the tail source reads
//! only files that changed and rescans only when the tree changed, so an idle node costs
//! almost nothing; the periodic full pass stays as the fallback for lost events (queue
//! overflow, watch limits, directories created before they were watched).
//!
//! This uses the `inotify` crate directly rather than `notify`: notify's inotify backend
//! always subscribes to `IN_OPEN` (and `IN_CLOSE_WRITE`), so every directory listing of our
//! own rescan (600 directories for 100 pods × 5 containers) and every open by any other
//! reader came back as events and wake-ups. Measured with `cargo xtask bench logs --idle`
//! over 500 quiet files: 24 CPU ticks a minute with notify, most of them spent on those
//! events. Here the mask is only what the tail source needs, and the tree is watched
//! recursively by adding a watch for each directory as it appears.
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

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

    fn written(&self, path: PathBuf) {
        let mut w = match self.written.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        if w.overflow {
            return;
        }
        if w.paths.len() >= MAX_MODIFIED {
            w.overflow = true;
            w.paths.clear();
            return;
        }
        w.paths.insert(path);
    }

    fn structural(&self) {
        self.structural.store(true, Ordering::Relaxed);
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

/// Deepest directory level watched below the root (pods: pod dir, container dir).
pub const MAX_DEPTH: usize = 4;
/// Bound on watched directories; beyond it the periodic pass covers the rest.
const MAX_WATCHES: usize = 65_536;

/// Keeps the watch thread running; dropping it stops the thread.
pub struct Watcher {
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Closing our end of the pipe wakes the thread's poll with a hang-up.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Watches `root` and its directories into `changes`; every change pokes `wake`
/// (coalesced: a full channel means the reader is already due to wake).
pub fn watch(root: &Path, changes: Arc<Changes>, wake: SyncSender<()>) -> std::io::Result<Watcher> {
    watch_to_depth(root, MAX_DEPTH, changes, wake)
}

/// [`watch`] down to `max_depth` directory levels below `root` (0: only `root`), so a
/// source whose files sit right in `/var/log` does not watch `/var/log/pods/**` too.
pub fn watch_to_depth(
    root: &Path,
    max_depth: usize,
    changes: Arc<Changes>,
    wake: SyncSender<()>,
) -> std::io::Result<Watcher> {
    let inotify = Inotify::init()?;
    let mut tree = Tree {
        inotify,
        dirs: HashMap::new(),
        root_depth: root.components().count(),
        max_depth: max_depth.min(MAX_DEPTH),
    };
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a directory", root.display()),
        ));
    }
    tree.add_tree(root, &changes);
    // Close-on-exec: a child process started while we watch (anything the agent or a test
    // spawns) must not inherit the write end, or dropping the watcher never hangs up.
    let (stop_rx, stop_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let thread = std::thread::Builder::new()
        .name("logs-watch".into())
        .spawn(move || tree.run(&changes, &wake, stop_rx))?;
    Ok(Watcher {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// The watched directories of one tree.
struct Tree {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    root_depth: usize,
    max_depth: usize,
}

impl Tree {
    fn mask() -> WatchMask {
        WatchMask::MODIFY
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR
            | WatchMask::DONT_FOLLOW
    }

    /// Watches `dir` and the directories below it (symlinks not followed).
    fn add_tree(&mut self, dir: &Path, changes: &Changes) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            if self.dirs.len() >= MAX_WATCHES {
                changes.lost();
                return;
            }
            let level = dir.components().count().saturating_sub(self.root_depth);
            if level > self.max_depth {
                continue;
            }
            match self.inotify.watches().add(&dir, Self::mask()) {
                Ok(wd) => {
                    self.dirs.insert(wd, dir.clone());
                }
                Err(e) => {
                    // Gone already, or out of watches: the periodic pass covers it.
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory");
                    changes.lost();
                    continue;
                }
            }
            if level >= self.max_depth {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }

    fn run(mut self, changes: &Changes, wake: &SyncSender<()>, stop: OwnedFd) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let ready = {
                let mut fds = [
                    PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "file watch failed; relying on periodic passes");
                        changes.lost();
                        return;
                    }
                }
                if fds[1].any().unwrap_or(true) {
                    return;
                }
                fds[0].any().unwrap_or(false)
            };
            if !ready {
                continue;
            }
            let mut new_dirs = Vec::new();
            let events = match self.inotify.read_events(&mut buf) {
                Ok(events) => events,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading file watch events");
                    changes.lost();
                    continue;
                }
            };
            for event in events {
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    changes.lost();
                    continue;
                }
                let Some(dir) = self.dirs.get(&event.wd) else {
                    continue;
                };
                let path = event.name.map(|n| dir.join(n));
                if event.mask.contains(EventMask::MODIFY) {
                    if let Some(p) = path {
                        changes.written(p);
                    }
                    continue;
                }
                changes.structural();
                if event.mask.contains(EventMask::ISDIR)
                    && event
                        .mask
                        .intersects(EventMask::CREATE | EventMask::MOVED_TO)
                    && let Some(p) = path
                {
                    new_dirs.push(p);
                }
                if event.mask.contains(EventMask::IGNORED) {
                    self.dirs.remove(&event.wd);
                }
            }
            for dir in new_dirs {
                self.add_tree(&dir, changes);
            }
            let _ = wake.try_send(());
        }
    }
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
