//! Leadership between an old and a new pod during a `maxSurge: 1` rollout.
//!
//! Both pods serve metrics; only the holder of an exclusive flock on a hostPath file
//! ships logs and attaches eBPF. The new pod waits as a standby (Ready, so the rollout
//! proceeds to terminate the old pod). The old pod, on SIGTERM, drains, persists its final
//! checkpoints and only then releases the lock, so the new leader starts exactly where the
//! old one stopped: nothing lost, nothing shipped twice. If the leader dies instead
//! (SIGKILL, OOM), the kernel frees the lock and the standby resumes from the last
//! persisted checkpoint (at most the unacknowledged batches are re-sent).
//!
//! Deployment: the lock file's directory and `logs.state_dir` must be hostPaths shared by
//! both pods (`DirectoryOrCreate`); the rollout `maxSurge: 1, maxUnavailable: 0`;
//! `terminationGracePeriodSeconds` above `logs.drain_timeout`, so the old pod releases the
//! lock itself instead of being killed mid-drain.

pub mod lock;
mod metrics;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

pub use lock::{HolderInfo, LeaderLock, LockError};
use node_agent_core::config::{KeyPath, Problems, Validate};
use node_agent_core::node::NodeIdentity;

/// `handover:` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoverConfig {
    /// Coordinate through the lock at all. Off: this process always leads (one agent per
    /// host guaranteed by other means).
    pub enabled: bool,
    /// flock()ed file shared by the old and new pod on a hostPath; parents are created.
    pub lock_file: PathBuf,
}

impl Validate for HandoverConfig {
    /// The lock must name one file for every pod on the node, so it must be absolute.
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.check(
            self.lock_file.is_absolute(),
            &at.key("lock_file"),
            format!("must be an absolute path, got {}", self.lock_file.display()),
        );
    }
}

impl Default for HandoverConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            lock_file: PathBuf::from("/var/run/node-agent/leader.lock"),
        }
    }
}

/// File name of the lock each guarded state directory holds.
pub const STATE_LOCK_FILE: &str = ".node-agent-leader.lock";

/// Waits to become leader (or returns when `shutdown` comes first), then runs `work` (the
/// leader's job) until `shutdown` fires and the work has drained, then releases the lock.
///
/// Besides `handover.lock_file`, the leader holds a lock inside each of `state_dirs` (the
/// directories whose files only one leader may write: checkpoints, dead letters): two
/// agents that share a state dir never lead at once, even when their `lock_file`
/// settings differ (a rollout that changes it). If any held lock file is deleted or
/// replaced, the lock excludes nobody any more: the leader stops (drains) and `run`
/// returns an error, so the process exits and a standby takes over.
pub async fn run<F, Fut>(
    settings: &HandoverConfig,
    identity: &NodeIdentity,
    state_dirs: &[PathBuf],
    shutdown: CancellationToken,
    work: F,
) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let metrics = metrics::get();
    let mut paths: Vec<PathBuf> = Vec::new();
    if settings.enabled {
        paths.push(settings.lock_file.clone());
    } else {
        tracing::info!("handover disabled: leading without handover.lock_file");
    }
    for dir in state_dirs {
        push_distinct(&mut paths, dir.join(STATE_LOCK_FILE));
    }

    let waiting = Instant::now();
    let mut locks = Vec::with_capacity(paths.len());
    for path in &paths {
        let lock = match LeaderLock::try_acquire(path)? {
            Some(lock) => lock,
            None => {
                log_standby(path);
                match LeaderLock::acquire(path, &shutdown).await? {
                    Some(lock) => lock,
                    None => {
                        tracing::info!(
                            waited_seconds = waiting.elapsed().as_secs_f64(),
                            "shutdown while standby: exiting without leading"
                        );
                        return Ok(());
                    }
                }
            }
        };
        if let Err(err) = lock.write_holder(&HolderInfo::current(identity)) {
            // Debugging aid only; the lock itself is what counts.
            tracing::warn!(lock_file = %path.display(), error = %err, "cannot write holder info");
        }
        locks.push(lock);
    }
    let acquired_at = wall_clock();
    let waited = waiting.elapsed();
    metrics.became_leader(waited);
    tracing::info!(
        lock_files = ?paths,
        %acquired_at,
        waited_seconds = waited.as_secs_f64(),
        "acquired leader lock: now leader"
    );

    let leading = Instant::now();
    let work_stop = shutdown.child_token();
    let led = lead(work, work_stop.clone());
    tokio::pin!(led);
    let mut lost = None;
    let Led { drain, result } = tokio::select! {
        led = &mut led => led,
        reason = watch_locks(&locks) => {
            tracing::error!(%reason, "leader lock lost: stopping leader work so that only one instance leads");
            lost = Some(reason);
            work_stop.cancel();
            led.await
        }
    };
    metrics.drained(drain);
    let unlock_at = wall_clock();
    let mut released = Ok(());
    for lock in locks {
        let r = lock.release();
        if released.is_ok() {
            released = r;
        }
    }
    metrics.stopped_leading();
    match &released {
        Ok(()) => tracing::info!(
            lock_files = ?paths,
            %unlock_at,
            led_seconds = leading.elapsed().as_secs_f64(),
            drain_seconds = drain.as_secs_f64(),
            "released leader lock"
        ),
        Err(err) => {
            tracing::error!(error = %err, "releasing the leader lock failed; closing it instead")
        }
    }
    result?;
    released?;
    if let Some(reason) = lost {
        anyhow::bail!("lost the leader lock ({reason}); exiting so that a standby takes over");
    }
    Ok(())
}

/// Adds `path` unless it names a file already in `paths` (locking one file twice through
/// two descriptions would deadlock on ourselves).
fn push_distinct(paths: &mut Vec<PathBuf>, path: PathBuf) {
    let same = |a: &Path, b: &Path| {
        let canon = |p: &Path| {
            p.parent()
                .and_then(|d| std::fs::canonicalize(d).ok())
                .map(|d| d.join(p.file_name().unwrap_or_default()))
                .unwrap_or_else(|| p.to_path_buf())
        };
        a == b || canon(a) == canon(b)
    };
    if !paths.iter().any(|p| same(p, &path)) {
        paths.push(path);
    }
}

/// How the leader's work ended.
struct Led {
    /// Shutdown to work returned (zero if the work ended before shutdown).
    drain: Duration,
    result: anyhow::Result<()>,
}

/// Runs the leader's work until `shutdown` and it has drained.
///
/// Work that ends early with success (nothing enabled) keeps the leadership until
/// `shutdown`, so a standby does not start the same nothing; work that fails returns the
/// error (the process exits, the lock frees and the pod is restarted).
async fn lead<F, Fut>(work: F, shutdown: CancellationToken) -> Led
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let work = work(shutdown.clone());
    tokio::pin!(work);
    tokio::select! {
        result = &mut work => {
            if result.is_ok() {
                tracing::info!("leader work finished before shutdown; holding leadership until shutdown");
                shutdown.cancelled().await;
            }
            Led { drain: Duration::ZERO, result }
        }
        _ = shutdown.cancelled() => {
            tracing::info!("leader draining before releasing the lock");
            let started = Instant::now();
            let result = work.await;
            Led { drain: started.elapsed(), result }
        }
    }
}

/// How often the leader checks that its lock files are still in place.
const LOCK_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Returns once a held lock's path no longer names the locked file (deleted or replaced:
/// a newcomer would lock a different file and lead too). A check that cannot be made
/// (I/O error) is logged and retried.
async fn watch_locks(locks: &[LeaderLock]) -> String {
    loop {
        tokio::time::sleep(LOCK_CHECK_INTERVAL).await;
        for lock in locks {
            match lock.still_named() {
                Ok(true) => {}
                Ok(false) => {
                    return format!("{} was deleted or replaced", lock.path().display());
                }
                Err(err) => {
                    tracing::warn!(lock_file = %lock.path().display(), error = %err, "cannot check the leader lock file")
                }
            }
        }
    }
}

/// Wall-clock time (µs) for transition logs: `acquired_at` of the new leader minus
/// `unlock_at` of the old one bounds the leaderless gap from above.
fn wall_clock() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn log_standby(path: &std::path::Path) {
    match lock::read_holder(path) {
        Ok(Ok(holder)) => tracing::info!(
            lock_file = %path.display(),
            holder_pod = %holder.pod,
            holder_namespace = %holder.namespace,
            holder_pid = holder.pid,
            holder_version = %holder.version,
            holder_since = %holder.since,
            "leader lock is held: waiting as standby"
        ),
        Ok(Err(raw)) => tracing::info!(
            lock_file = %path.display(),
            holder = %raw,
            "leader lock is held: waiting as standby"
        ),
        Err(err) => tracing::info!(
            lock_file = %path.display(),
            error = %err,
            "leader lock is held (holder unreadable): waiting as standby"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn config(lock_file: PathBuf) -> HandoverConfig {
        HandoverConfig {
            lock_file,
            ..HandoverConfig::default()
        }
    }

    #[test]
    fn config_section_parses_and_rejects_unknown_keys() {
        let handover: HandoverConfig =
            serde_yaml_ng::from_str("lock_file: /tmp/x.lock\nenabled: false\n").unwrap();
        assert_eq!(handover.lock_file, PathBuf::from("/tmp/x.lock"));
        assert!(!handover.enabled);
        let err = serde_yaml_ng::from_str::<HandoverConfig>("lockfile: /x\n").unwrap_err();
        assert!(format!("{err:#}").contains("lockfile"), "{err:#}");
        assert!(HandoverConfig::default().enabled);
    }

    /// Two `run`s in one process (separate open file descriptions): the second leads only
    /// after the first has drained and released; the work never overlaps.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn second_instance_leads_after_first_drains() {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(config(dir.path().join("leader.lock")));
        let leaders = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let instance = |name: &'static str, shutdown: CancellationToken| {
            let config = Arc::clone(&config);
            let leaders = Arc::clone(&leaders);
            let order = Arc::clone(&order);
            tokio::spawn(async move {
                run(
                    &config,
                    &NodeIdentity::default(),
                    &[],
                    shutdown,
                    |token| async move {
                        assert_eq!(leaders.fetch_add(1, Ordering::SeqCst), 0, "two leaders");
                        order.lock().unwrap().push(format!("{name} leads"));
                        token.cancelled().await;
                        tokio::time::sleep(Duration::from_millis(30)).await; // the drain
                        order.lock().unwrap().push(format!("{name} drained"));
                        leaders.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    },
                )
                .await
            })
        };
        let old_stop = CancellationToken::new();
        let new_stop = CancellationToken::new();
        let old = instance("old", old_stop.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let new = instance("new", new_stop.clone());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*order.lock().unwrap(), vec!["old leads"]);
        old_stop.cancel();
        old.await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while order.lock().unwrap().len() < 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("new instance leads");
        new_stop.cancel();
        new.await.unwrap().unwrap();
        assert_eq!(
            *order.lock().unwrap(),
            vec!["old leads", "old drained", "new leads", "new drained"]
        );
        let holder = lock::read_holder(&config.lock_file).unwrap().unwrap();
        assert_eq!(holder.pid, std::process::id());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn standby_shut_down_never_runs_the_work() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path().join("leader.lock"));
        let held = LeaderLock::try_acquire(&config.lock_file).unwrap().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            stop.cancel();
        });
        let result = tokio::time::timeout(
            Duration::from_secs(2),
            run(
                &config,
                &NodeIdentity::default(),
                &[],
                shutdown,
                |_| async { panic!("a standby must not work") },
            ),
        )
        .await
        .expect("standby exits promptly");
        result.unwrap();
        held.release().unwrap();
    }

    #[tokio::test]
    async fn failed_work_releases_the_lock_and_reports() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path().join("leader.lock"));
        let err = run(
            &config,
            &NodeIdentity::default(),
            &[],
            CancellationToken::new(),
            |_| async { anyhow::bail!("sink config is broken") },
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("sink config"));
        assert!(
            LeaderLock::try_acquire(&config.lock_file)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn relative_lock_file_is_rejected() {
        let config = config(PathBuf::from("run/leader.lock"));
        let mut problems = Problems::new();
        config.validate(&KeyPath::root().key("handover"), &mut problems);
        let err = problems.into_result().unwrap_err();
        assert!(err.to_string().contains("handover.lock_file"), "{err}");
    }

    #[tokio::test]
    async fn disabled_handover_leads_without_a_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path().join("leader.lock"));
        config.enabled = false;
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let ran = std::sync::atomic::AtomicBool::new(false);
        run(
            &config,
            &NodeIdentity::default(),
            &[],
            shutdown,
            |_| async {
                ran.store(true, Ordering::SeqCst);
                Ok(())
            },
        )
        .await
        .unwrap();
        assert!(ran.load(Ordering::SeqCst));
        assert!(!config.lock_file.exists());
    }

    /// Two agents over one state dir with different `handover.lock_file` settings (a
    /// rollout that changed it) must not both lead: the state dir's own lock decides.
    #[tokio::test]
    async fn a_shared_state_dir_excludes_a_second_leader_with_another_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = vec![dir.path().join("state")];
        std::fs::create_dir_all(&state[0]).unwrap();
        let leading = Arc::new(AtomicUsize::new(0));
        let max_leading = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let mut stops = Vec::new();
        for name in ["old.lock", "new.lock"] {
            let config = config(dir.path().join(name));
            let (state, leading, max_leading) =
                (state.clone(), leading.clone(), max_leading.clone());
            let stop = CancellationToken::new();
            stops.push(stop.clone());
            tasks.push(tokio::spawn(async move {
                run(
                    &config,
                    &NodeIdentity::default(),
                    &state,
                    stop,
                    |token| async move {
                        let now = leading.fetch_add(1, Ordering::SeqCst) + 1;
                        max_leading.fetch_max(now, Ordering::SeqCst);
                        token.cancelled().await;
                        leading.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    },
                )
                .await
            }));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(leading.load(Ordering::SeqCst), 1, "only one leads");
        stops[0].cancel();
        tasks.remove(0).await.unwrap().unwrap();
        // The second takes over once the first released.
        let deadline = Instant::now() + Duration::from_secs(5);
        while leading.load(Ordering::SeqCst) != 1 {
            assert!(Instant::now() < deadline, "second agent never led");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stops[1].cancel();
        tasks.remove(0).await.unwrap().unwrap();
        assert_eq!(max_leading.load(Ordering::SeqCst), 1);
    }

    /// A deleted lock file excludes nobody: the leader stops and reports it.
    #[tokio::test]
    async fn losing_the_lock_file_ends_leadership() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path().join("leader.lock"));
        let lock_file = config.lock_file.clone();
        let drained = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = drained.clone();
        let task = tokio::spawn(async move {
            run(
                &config,
                &NodeIdentity::default(),
                &[],
                CancellationToken::new(),
                |token| async move {
                    token.cancelled().await;
                    d.store(true, Ordering::SeqCst);
                    Ok(())
                },
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::remove_file(&lock_file).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("leader stops after losing its lock")
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("lost the leader lock"), "{err}");
        assert!(
            drained.load(Ordering::SeqCst),
            "the work was asked to drain"
        );
    }
}
