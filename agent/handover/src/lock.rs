//! The leader lock: an exclusive `flock(2)` on a file shared by the old and the new pod.
//!
//! flock locks belong to an *open file description*: two `open()`s of the same path in one
//! process exclude each other like two processes do, and the kernel drops the lock when the
//! last descriptor of the description is closed — also when the holder is SIGKILLed or
//! OOM-killed, which is what lets a standby take over from a crashed leader.
//!
//! A standby waits in a blocking `flock(LOCK_EX)` on a dedicated thread, so it wakes within
//! the scheduler's latency of the release (no polling interval adds to the leaderless gap,
//! and an idle standby costs no wake-ups). To cancel that wait, the thread is sent a signal
//! whose handler does nothing and is installed without `SA_RESTART`: `flock` returns `EINTR`
//! and the thread sees the cancellation flag.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::{FileExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::os::unix::thread::JoinHandleExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Signal used to interrupt a standby's blocking `flock`. SIGURG is ignored by default (a
/// stray one is harmless) and nothing else in the agent uses it; Go's runtime picks it for
/// thread preemption for the same reasons.
const WAKE_SIGNAL: Signal = Signal::SIGURG;

const WAITER_STACK_BYTES: usize = 64 * 1024;

/// How long a cancelled standby keeps nudging its waiter thread before detaching it.
const CANCEL_DEADLINE: Duration = Duration::from_secs(1);

/// Why the lock could not be taken or released.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("creating lock directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening lock file {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("flock({}) failed: {errno}", path.display())]
    Flock { path: PathBuf, errno: Errno },
    #[error("starting the standby thread: {0}")]
    Spawn(std::io::Error),
    #[error("the standby thread ended without an answer")]
    WaiterLost,
}

/// Written into the lock file by the leader, for whoever debugs a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    pub pod: String,
    pub namespace: String,
    pub node: String,
    pub pid: u32,
    pub version: String,
    /// RFC 3339 time the lock was acquired.
    pub since: String,
}

impl HolderInfo {
    /// Describes this process as the holder from now on.
    pub fn current(identity: &node_agent_core::node::NodeIdentity) -> Self {
        Self {
            pod: identity.pod_name.clone(),
            namespace: identity.pod_namespace.clone(),
            node: identity.node_name.clone(),
            pid: std::process::id(),
            version: node_agent_core::telemetry::VERSION.to_string(),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }
}

/// The held leader lock. Dropping it also releases the lock; [`LeaderLock::release`] does
/// so explicitly and reports errors.
#[derive(Debug)]
pub struct LeaderLock {
    file: Flock<File>,
    path: PathBuf,
}

impl LeaderLock {
    /// Takes the lock if it is free right now; `None` when another holder has it.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, LockError> {
        loop {
            let file = open(path)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(file) => {
                    if let Some(lock) = Self::verified(file, path)? {
                        return Ok(Some(lock));
                    }
                }
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, Errno::EINTR)) => continue,
                Err((_, errno)) => {
                    return Err(LockError::Flock {
                        path: path.to_path_buf(),
                        errno,
                    });
                }
            }
        }
    }

    /// Waits until the lock is ours, or returns `None` when `cancel` fires first.
    pub async fn acquire(
        path: &Path,
        cancel: &CancellationToken,
    ) -> Result<Option<Self>, LockError> {
        loop {
            if let Some(lock) = Self::try_acquire(path)? {
                return Ok(Some(lock));
            }
            let waiter = Waiter::spawn(open(path)?, path)?;
            let Some(file) = waiter.wait(cancel).await? else {
                return Ok(None);
            };
            if let Some(lock) = Self::verified(file, path)? {
                return Ok(Some(lock));
            }
        }
    }

    /// Keeps a freshly locked file only if `path` still names it. A lock on a file that was
    /// deleted or replaced meanwhile excludes nobody: a newcomer would open and lock the
    /// new file, and both would lead.
    fn verified(file: Flock<File>, path: &Path) -> Result<Option<Self>, LockError> {
        match names(&file, path) {
            Ok(true) => Ok(Some(Self {
                file,
                path: path.to_path_buf(),
            })),
            Ok(false) => {
                tracing::warn!(path = %path.display(), "lock file was deleted or replaced while we waited; retrying");
                Ok(None)
            }
            Err(source) => Err(LockError::Open {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Whether the lock path still names the locked file. If not (someone deleted or
    /// replaced it), a newcomer can lock a different file and lead too.
    pub fn still_named(&self) -> std::io::Result<bool> {
        names(&self.file, &self.path)
    }

    /// Replaces the lock file's content with `info` — in place, through the locked
    /// descriptor: the lock lives on the inode, so the file must never be replaced.
    pub fn write_holder(&self, info: &HolderInfo) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(info).map_err(std::io::Error::other)?;
        text.push(b'\n');
        self.file.set_len(0)?;
        self.file.write_all_at(&text, 0)?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unlocks, then closes the file.
    pub fn release(self) -> Result<(), LockError> {
        match self.file.unlock() {
            Ok(file) => {
                drop(file);
                Ok(())
            }
            Err((file, errno)) => {
                // LOCK_UN on a descriptor we own does not fail in practice; closing the
                // last descriptor (the drop) releases the lock regardless.
                drop(file);
                Err(LockError::Flock {
                    path: self.path,
                    errno,
                })
            }
        }
    }
}

/// Whether `path` currently names the same inode as `file`.
fn names(file: &File, path: &Path) -> std::io::Result<bool> {
    let locked = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == locked.dev() && named.ino() == locked.ino()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

/// Reads the holder info currently in the lock file (for the standby's log line).
pub fn read_holder(path: &Path) -> std::io::Result<Result<HolderInfo, String>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(0))?;
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text)?;
    Ok(serde_json::from_str(text.trim()).map_err(|_| text.trim().to_string()))
}

fn open(path: &Path) -> Result<File, LockError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| LockError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // No truncation here: the content belongs to the current holder. std opens with
    // O_CLOEXEC, so children never inherit (and keep alive) the lock.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })
}

type WaitResult = Result<Flock<File>, Errno>;

/// A thread blocked in `flock(LOCK_EX)` on its own open file description.
struct Waiter {
    thread: JoinHandle<()>,
    cancelled: Arc<AtomicBool>,
    answer: oneshot::Receiver<WaitResult>,
    path: PathBuf,
}

impl Waiter {
    fn spawn(file: File, path: &Path) -> Result<Self, LockError> {
        let interruptible = install_wake_handler();
        if !interruptible {
            tracing::warn!(
                "cannot install the SIGURG handler; a cancelled standby thread will linger until the lock frees"
            );
        }
        let cancelled = Arc::new(AtomicBool::new(false));
        let (tx, answer) = oneshot::channel();
        let flag = Arc::clone(&cancelled);
        let thread = std::thread::Builder::new()
            .name("leader-lock".into())
            // It only sits in flock(); the default 2 MiB stack would be wasted address space.
            .stack_size(WAITER_STACK_BYTES)
            .spawn(move || {
                let mut file = file;
                let result = loop {
                    if flag.load(Ordering::Acquire) {
                        break Err(Errno::ECANCELED);
                    }
                    match Flock::lock(file, FlockArg::LockExclusive) {
                        Ok(locked) => break Ok(locked),
                        Err((back, Errno::EINTR)) => file = back,
                        Err((_, errno)) => break Err(errno),
                    }
                };
                // If nobody listens any more, the returned lock is dropped (unlocked) here.
                let _ = tx.send(result);
            })
            .map_err(LockError::Spawn)?;
        Ok(Self {
            thread,
            cancelled,
            answer,
            path: path.to_path_buf(),
        })
    }

    /// The locked file, or `None` if `cancel` fired first.
    async fn wait(mut self, cancel: &CancellationToken) -> Result<Option<Flock<File>>, LockError> {
        let answer = tokio::select! {
            answer = &mut self.answer => answer,
            _ = cancel.cancelled() => {
                self.stop().await;
                return Ok(None);
            }
        };
        let _ = self.thread.join();
        match answer {
            Ok(Ok(file)) => Ok(Some(file)),
            Ok(Err(errno)) => Err(LockError::Flock {
                path: self.path,
                errno,
            }),
            Err(_) => Err(LockError::WaiterLost),
        }
    }

    /// Interrupts the blocked `flock` and joins the thread. The signal is re-sent until the
    /// thread is gone because it may arrive just before the thread enters `flock`.
    async fn stop(self) {
        self.cancelled.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + CANCEL_DEADLINE;
        while !self.thread.is_finished() {
            if tokio::time::Instant::now() >= deadline {
                // Detached: if it ever gets the lock, it drops it at once (see spawn).
                tracing::warn!("standby lock thread did not stop; leaving it behind");
                return;
            }
            // SAFETY: the thread is not joined yet, so its pthread_t is valid, and the
            // handler for WAKE_SIGNAL is installed (or the signal is ignored by default).
            unsafe {
                libc::pthread_kill(self.thread.as_pthread_t(), WAKE_SIGNAL as libc::c_int);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let _ = self.thread.join();
        // A lock acquired in the race with cancellation is dropped (unlocked) with `answer`.
    }
}

extern "C" fn on_wake_signal(_: libc::c_int) {}

/// Installs the do-nothing handler (once per process). `false` if another handler owns
/// the signal, in which case we put it back and do without interruption.
fn install_wake_handler() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let action = SigAction::new(
            SigHandler::Handler(on_wake_signal),
            SaFlags::empty(), // no SA_RESTART: flock must return EINTR
            SigSet::empty(),
        );
        // SAFETY: the handler is async-signal-safe (it does nothing).
        match unsafe { sigaction(WAKE_SIGNAL, &action) } {
            Ok(old) => match old.handler() {
                SigHandler::SigDfl | SigHandler::SigIgn => true,
                _ => {
                    // SAFETY: restores the handler that was there before.
                    let _ = unsafe { sigaction(WAKE_SIGNAL, &old) };
                    false
                }
            },
            Err(err) => {
                tracing::warn!(error = %err, "sigaction(SIGURG) failed");
                false
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn lock_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("run/node-agent/leader.lock")
    }

    #[test]
    fn first_locker_wins_and_creates_parent_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let first = LeaderLock::try_acquire(&path).unwrap().expect("free lock");
        // A second open file description, as a second process would have.
        assert!(LeaderLock::try_acquire(&path).unwrap().is_none());
        first.release().unwrap();
        assert!(LeaderLock::try_acquire(&path).unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standby_acquires_within_100ms_of_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let leader = LeaderLock::try_acquire(&path).unwrap().unwrap();
        let cancel = CancellationToken::new();
        let standby = tokio::spawn({
            let path = path.clone();
            let cancel = cancel.clone();
            async move {
                let lock = LeaderLock::acquire(&path, &cancel).await;
                (lock, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !standby.is_finished(),
            "standby must wait while the leader holds the lock"
        );
        let released = Instant::now();
        leader.release().unwrap();
        let (lock, acquired) = standby.await.unwrap();
        assert!(lock.unwrap().is_some());
        let gap = acquired - released;
        assert!(gap < Duration::from_millis(100), "gap {gap:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_lock_also_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let leader = LeaderLock::try_acquire(&path).unwrap().unwrap();
        let cancel = CancellationToken::new();
        let standby = tokio::spawn({
            let path = path.clone();
            async move { LeaderLock::acquire(&path, &cancel).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(leader);
        let lock = tokio::time::timeout(Duration::from_secs(5), standby)
            .await
            .expect("standby acquires")
            .unwrap();
        assert!(lock.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_standby_returns_promptly_and_leaves_no_lock_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let leader = LeaderLock::try_acquire(&path).unwrap().unwrap();
        let cancel = CancellationToken::new();
        let standby = tokio::spawn({
            let path = path.clone();
            let cancel = cancel.clone();
            async move { LeaderLock::acquire(&path, &cancel).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let asked = Instant::now();
        cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(2), standby)
            .await
            .expect("cancel is prompt")
            .unwrap();
        assert!(result.unwrap().is_none());
        assert!(
            asked.elapsed() < CANCEL_DEADLINE,
            "thread was interrupted, not detached"
        );
        leader.release().unwrap();
        // The cancelled waiter's thread is gone: nobody grabs the lock after release.
        let again = LeaderLock::try_acquire(&path).unwrap();
        assert!(again.is_some());
    }

    #[test]
    fn holder_info_is_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            "a much longer leftover from an older holder, to be truncated\n",
        )
        .unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let lock = LeaderLock::try_acquire(&path).unwrap().unwrap();
        let identity = node_agent_core::node::NodeIdentity {
            node_name: "worker-1".into(),
            pod_name: "node-agent-x".into(),
            pod_namespace: "monitoring".into(),
            ..Default::default()
        };
        let info = HolderInfo::current(&identity);
        lock.write_holder(&info).unwrap();
        assert_eq!(read_holder(&path).unwrap().unwrap(), info);
        assert_eq!(info.pid, std::process::id());
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode, "same inode");
        lock.release().unwrap();
    }

    #[test]
    fn lock_on_a_replaced_file_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let stale = open(&path).unwrap();
        let stale = Flock::lock(stale, FlockArg::LockExclusive).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "").unwrap();
        assert!(LeaderLock::verified(stale, &path).unwrap().is_none());
        let held = LeaderLock::try_acquire(&path).unwrap().unwrap();
        assert!(held.still_named().unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!held.still_named().unwrap());
        drop(held);
        // The new file at the path is lockable.
        assert!(LeaderLock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn unwritable_lock_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let err = LeaderLock::try_acquire(&blocker.join("leader.lock")).unwrap_err();
        assert!(err.to_string().contains("lock directory"), "{err}");
    }
}
