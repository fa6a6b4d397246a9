//! `filesystem`: node_filesystem_* for every mount in /proc/1/mounts (node_exporter 1.5.0
//! collector/filesystem_linux.go, filesystem_common.go), with stuck-mount protection.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use regex::Regex;

use super::{BuildContext, Collector, CollectorError, MetricSet, procfile};
use node_agent_core::host::HostPaths;

/// node_exporter 1.5.0 upstream default.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

/// node_exporter 1.5.0 upstream default.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";

/// One line of a mounts file, mountpoint unescaped and stripped of the rootfs prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mount {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
}

/// The statfs figures node_exporter exports, already multiplied by the block size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsStats {
    pub size: f64,
    pub free: f64,
    pub avail: f64,
    pub files: f64,
    pub files_free: f64,
}

/// How a mount is stat'ed; a plain fn so tests can simulate a hanging filesystem.
type StatFn = fn(&Path) -> Result<FsStats, nix::Error>;

fn statvfs(path: &Path) -> Result<FsStats, nix::Error> {
    let s = nix::sys::statvfs::statvfs(path)?;
    // Like node_exporter (statfs Blocks × Bsize): f_bsize, not f_frsize.
    let bsize = s.block_size() as f64;
    Ok(FsStats {
        size: s.blocks() as f64 * bsize,
        free: s.blocks_free() as f64 * bsize,
        avail: s.blocks_available() as f64 * bsize,
        files: s.files() as f64,
        files_free: s.files_free() as f64,
    })
}

pub struct FilesystemCollector {
    paths: HostPaths,
    mount_points_exclude: Regex,
    fs_types_exclude: Regex,
    timeout: Duration,
    stat: StatFn,
    /// Mount points whose statfs is still running past the timeout (node_exporter's
    /// `stuckMounts`); shared with the worker threads that remove them on return.
    stuck: Arc<Mutex<HashSet<String>>>,
    /// The current stat worker; replaced when one hangs.
    worker: Mutex<Option<mpsc::Sender<Arc<Batch>>>>,
    /// The last parse of the mounts file and the path it came from, reused while the
    /// kernel reports the mount table unchanged (see [`procfile::read_proc_if_changed`]).
    mounts: Mutex<Option<(PathBuf, Arc<Vec<Mount>>)>>,
}

/// The mounts of one scrape, statted in order by the worker thread. The worker wakes the
/// collector only when the whole batch is done, so a scrape costs one thread hand-off
/// rather than two per mount; the collector checks progress whenever an item's deadline
/// passes.
struct Batch {
    /// (path to stat, mount point) per item.
    items: Vec<(PathBuf, String)>,
    state: Mutex<BatchState>,
    done: Condvar,
}

struct BatchState {
    /// Results of `items[..results.len()]`.
    results: Vec<Result<FsStats, nix::Error>>,
    /// When the item at `results.len()` was started (or the batch was queued).
    started: Instant,
    /// The collector gave up on the item in progress (marked stuck) and on this worker.
    abandoned: bool,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    Ok(Box::new(FilesystemCollector::new(ctx, statvfs)))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Outcome of statting one mount.
enum Stat {
    Ok(FsStats),
    Failed(nix::Error),
    Stuck,
}

impl FilesystemCollector {
    fn new(ctx: &BuildContext<'_>, stat: StatFn) -> Self {
        Self {
            paths: ctx.paths.clone(),
            mount_points_exclude: ctx.options.fs_mount_points_exclude.clone(),
            fs_types_exclude: ctx.options.fs_types_exclude.clone(),
            timeout: ctx.options.fs_mount_timeout,
            stat,
            stuck: Arc::default(),
            worker: Mutex::new(None),
            mounts: Mutex::new(None),
        }
    }

    fn read_mounts(&self) -> Result<Arc<Vec<Mount>>, CollectorError> {
        let mut cached = lock(&self.mounts);
        let primary = self.paths.proc_path("1/mounts");
        let fallback = self.paths.proc_path("mounts");
        let read = |path: &PathBuf| {
            let have = cached.as_ref().is_some_and(|(p, _)| p == path);
            procfile::read_proc_if_changed(path, have)
        };
        let (path, text) = match read(&primary) {
            Ok(text) => (primary, text),
            Err(e) if e.is_not_found() => (fallback.clone(), read(&fallback)?),
            Err(e) => return Err(e),
        };
        let Some(text) = text else {
            if let Some((_, mounts)) = cached.as_ref() {
                return Ok(Arc::clone(mounts));
            }
            return Err(CollectorError::parse(
                path.display().to_string(),
                "mounts reported unchanged before a first read".to_string(),
            ));
        };
        let mounts = match parse_mounts(&text, &self.paths) {
            Ok(mounts) => Arc::new(mounts),
            Err(detail) => {
                // The kept parse is older than the text that failed: the next scrape must
                // read again rather than serve it while poll reports no further change.
                *cached = None;
                return Err(CollectorError::parse(path.display().to_string(), detail));
            }
        };
        *cached = Some((path, Arc::clone(&mounts)));
        Ok(mounts)
    }

    /// Stats `items` on the worker thread. An item that takes longer than `timeout` is
    /// marked stuck and its worker abandoned; the worker clears the mark and exits when
    /// the call finally returns, and the items after it go to a fresh worker.
    fn stat_all(
        &self,
        worker: &mut Option<mpsc::Sender<Arc<Batch>>>,
        mut items: Vec<(PathBuf, String)>,
    ) -> Vec<Stat> {
        let mut out = Vec::with_capacity(items.len());
        while !items.is_empty() {
            let batch = Arc::new(Batch {
                items: std::mem::take(&mut items),
                state: Mutex::new(BatchState {
                    results: Vec::new(),
                    started: Instant::now(),
                    abandoned: false,
                }),
                done: Condvar::new(),
            });
            if !self.dispatch(worker, &batch) {
                out.extend(batch.items.iter().map(|_| Stat::Failed(nix::Error::EAGAIN)));
                break;
            }
            let n = batch.items.len();
            let mut st = lock(&batch.state);
            loop {
                if st.results.len() == n {
                    break;
                }
                let deadline = st.started + self.timeout;
                let now = Instant::now();
                if now >= deadline {
                    let i = st.results.len();
                    let mountpoint = &batch.items[i].1;
                    tracing::error!(
                        mountpoint = %mountpoint,
                        "mount point timed out, it is being labeled as stuck and will not be monitored"
                    );
                    st.abandoned = true;
                    // Marked while holding the batch lock, which the worker also holds when
                    // it clears the mark, so the mark cannot be lost.
                    lock(&self.stuck).insert(mountpoint.clone());
                    *worker = None;
                    items = batch.items[i + 1..].to_vec();
                    break;
                }
                st = batch
                    .done
                    .wait_timeout(st, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            let stuck = st.abandoned;
            out.extend(st.results.drain(..).map(|r| match r {
                Ok(s) => Stat::Ok(s),
                Err(e) => Stat::Failed(e),
            }));
            if stuck {
                out.push(Stat::Stuck);
            }
        }
        out
    }

    /// Hands a batch to the worker, (re)starting it if needed.
    fn dispatch(&self, worker: &mut Option<mpsc::Sender<Arc<Batch>>>, batch: &Arc<Batch>) -> bool {
        for _ in 0..2 {
            let tx = worker.get_or_insert_with(|| spawn_worker(self.stat, self.stuck.clone()));
            if tx.send(batch.clone()).is_ok() {
                return true;
            }
            *worker = None;
        }
        tracing::error!("cannot start statfs worker thread");
        false
    }
}

fn spawn_worker(stat: StatFn, stuck: Arc<Mutex<HashSet<String>>>) -> mpsc::Sender<Arc<Batch>> {
    let (tx, rx) = mpsc::channel::<Arc<Batch>>();
    let spawned = std::thread::Builder::new()
        .name("fs-statfs".into())
        .spawn(move || {
            for batch in rx {
                for (path, mountpoint) in &batch.items {
                    let result = stat(path);
                    let mut st = lock(&batch.state);
                    if st.abandoned {
                        lock(&stuck).remove(mountpoint);
                        tracing::info!(mountpoint = %mountpoint, "mount point has recovered, monitoring will resume");
                        // The collector moved on to another worker.
                        return;
                    }
                    st.results.push(result);
                    // The next item's clock starts in the same critical section, so the
                    // collector never charges one item's time to the next.
                    st.started = Instant::now();
                }
                batch.done.notify_one();
            }
        });
    if let Err(e) = spawned {
        // Dropping the receiver makes the send fail and the mounts report an error.
        tracing::error!(error = %e, "cannot spawn statfs worker thread");
    }
    tx
}

const HELP_SIZE: &str = "Filesystem size in bytes.";
const HELP_FREE: &str = "Filesystem free space in bytes.";
const HELP_AVAIL: &str = "Filesystem space available to non-root users in bytes.";
const HELP_FILES: &str = "Filesystem total file nodes.";
const HELP_FILES_FREE: &str = "Filesystem total free file nodes.";
const HELP_RO: &str = "Filesystem read-only status.";
const HELP_ERROR: &str = "Whether an error occurred while getting statistics for the given device.";

impl Collector for FilesystemCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        let mounts = self.read_mounts()?;
        let mut seen: HashSet<&Mount> = HashSet::new();
        let mut todo: Vec<&Mount> = Vec::new();
        {
            let stuck = lock(&self.stuck);
            for m in mounts.iter() {
                if self.mount_points_exclude.is_match(&m.mountpoint)
                    || self.fs_types_exclude.is_match(&m.fstype)
                    || !seen.insert(m)
                {
                    continue;
                }
                if stuck.contains(&m.mountpoint) {
                    tracing::debug!(mountpoint = %m.mountpoint, "mount point is in an unresponsive state");
                    continue;
                }
                todo.push(m);
            }
        }
        let items = todo
            .iter()
            .map(|m| (self.paths.rootfs_path(&m.mountpoint), m.mountpoint.clone()))
            .collect();
        let results = self.stat_all(&mut lock(&self.worker), items);
        for (m, result) in todo.into_iter().zip(results) {
            let labels = [
                ("device", m.device.as_str()),
                ("fstype", m.fstype.as_str()),
                ("mountpoint", m.mountpoint.as_str()),
            ];
            let s = match result {
                Stat::Stuck => continue,
                Stat::Failed(e) => {
                    tracing::debug!(mountpoint = %m.mountpoint, error = %e, "error on statfs() system call");
                    out.gauge("node_filesystem_device_error", HELP_ERROR, &labels, 1.0);
                    continue;
                }
                Stat::Ok(s) => s,
            };
            let ro = m.options.split(',').any(|o| o == "ro");
            out.gauge("node_filesystem_device_error", HELP_ERROR, &labels, 0.0);
            out.gauge("node_filesystem_size_bytes", HELP_SIZE, &labels, s.size);
            out.gauge("node_filesystem_free_bytes", HELP_FREE, &labels, s.free);
            out.gauge("node_filesystem_avail_bytes", HELP_AVAIL, &labels, s.avail);
            out.gauge("node_filesystem_files", HELP_FILES, &labels, s.files);
            out.gauge(
                "node_filesystem_files_free",
                HELP_FILES_FREE,
                &labels,
                s.files_free,
            );
            out.gauge(
                "node_filesystem_readonly",
                HELP_RO,
                &labels,
                f64::from(u8::from(ro)),
            );
        }
        Ok(())
    }
}

/// Parses a mounts file (fstab(5) format). Mount points get `\040` and `\011` unescaped
/// and the rootfs prefix stripped, as node_exporter does.
pub fn parse_mounts(text: &str, paths: &HostPaths) -> Result<Vec<Mount>, String> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_whitespace();
        let (Some(device), Some(mountpoint), Some(fstype), Some(options)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(format!("malformed mount point information: {line:?}"));
        };
        let mountpoint = if mountpoint.contains('\\') {
            mountpoint.replace("\\040", " ").replace("\\011", "\t")
        } else {
            mountpoint.to_string()
        };
        mounts.push(Mount {
            device: device.to_string(),
            mountpoint: paths.strip_rootfs(&mountpoint),
            fstype: fstype.to_string(),
            options: options.to_string(),
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::CollectorOptions;
    use crate::fixtures::{help, len, paths, testdata, value};

    fn fake_stat(path: &Path) -> Result<FsStats, nix::Error> {
        let p = path.to_string_lossy();
        if p.ends_with("/broken") {
            return Err(nix::Error::EACCES);
        }
        if p.ends_with("/hang") {
            let start = Instant::now();
            while !RELEASE.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(FsStats {
            size: 4096.0 * 100.0,
            free: 4096.0 * 50.0,
            avail: 4096.0 * 40.0,
            files: 1000.0,
            files_free: 900.0,
        })
    }
    static RELEASE: AtomicBool = AtomicBool::new(false);

    fn collector(p: &HostPaths, timeout: Duration) -> FilesystemCollector {
        let options = CollectorOptions {
            fs_mount_timeout: timeout,
            ..CollectorOptions::default()
        };
        FilesystemCollector::new(
            &BuildContext {
                paths: p,
                options: &options,
            },
            fake_stat,
        )
    }

    fn labels<'a>(dev: &'a str, fstype: &'a str, mp: &'a str) -> [(&'a str, &'a str); 3] {
        [("device", dev), ("fstype", fstype), ("mountpoint", mp)]
    }

    #[test]
    fn parses_mounts_with_escapes_and_rootfs_prefix() {
        let p = HostPaths {
            rootfs: "/host/root".into(),
            ..HostPaths::default()
        };
        let m = parse_mounts(
            "/dev/vda /host/root ext4 rw,relatime 0 0\n/dev/sdb1 /host/root/mnt/my\\040disk\\011x vfat ro 0 0\n",
            &p,
        )
        .unwrap();
        assert_eq!(m[0].mountpoint, "/");
        assert_eq!(m[1].mountpoint, "/mnt/my disk\tx");
        assert_eq!(m[1].options, "ro");
        let err = parse_mounts("/dev/vda / ext4\n", &p).unwrap_err();
        assert!(err.contains("malformed"), "{err}");
    }

    #[test]
    fn emits_stats_errors_and_dedups() {
        let p = paths("filesystem");
        let c = collector(&p, Duration::from_secs(5));
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        let root = labels("/dev/vda", "ext4", "/");
        assert_eq!(value(&set, "node_filesystem_size_bytes", &root), 409600.0);
        assert_eq!(value(&set, "node_filesystem_free_bytes", &root), 204800.0);
        assert_eq!(value(&set, "node_filesystem_avail_bytes", &root), 163840.0);
        assert_eq!(value(&set, "node_filesystem_files", &root), 1000.0);
        assert_eq!(value(&set, "node_filesystem_files_free", &root), 900.0);
        assert_eq!(value(&set, "node_filesystem_readonly", &root), 0.0);
        assert_eq!(value(&set, "node_filesystem_device_error", &root), 0.0);
        let ro = labels("/dev/sdb1", "vfat", "/media/usb stick");
        assert_eq!(value(&set, "node_filesystem_readonly", &ro), 1.0);
        // statfs failure: only device_error=1.
        let broken = labels("nfs:/export", "nfs4", "/broken");
        assert_eq!(value(&set, "node_filesystem_device_error", &broken), 1.0);
        assert_eq!(len(&set, "node_filesystem_size_bytes"), 2);
        // /proc, /sys, cgroup2 and the duplicate / line are not exported.
        assert_eq!(len(&set, "node_filesystem_device_error"), 3);
        assert_eq!(
            help(&set, "node_filesystem_avail_bytes"),
            "Filesystem space available to non-root users in bytes."
        );
    }

    #[test]
    fn falls_back_to_proc_mounts_and_reports_missing_files() {
        let mut p = paths("filesystem");
        p.proc = testdata("filesystem").join("proc_fallback");
        let mut set = MetricSet::new();
        collector(&p, Duration::from_secs(5))
            .update(&mut set)
            .unwrap();
        assert_eq!(
            value(
                &set,
                "node_filesystem_size_bytes",
                &labels("/dev/vdb", "xfs", "/data")
            ),
            409600.0
        );

        p.proc = testdata("filesystem").join("missing");
        let err = collector(&p, Duration::from_secs(5))
            .update(&mut MetricSet::new())
            .unwrap_err();
        assert!(err.to_string().contains("mounts"), "{err}");
    }

    #[test]
    fn stuck_mount_is_skipped_until_statfs_returns() {
        let mut p = paths("filesystem");
        p.proc = testdata("filesystem").join("proc_hang");
        let timeout = Duration::from_millis(250);
        let c = collector(&p, timeout);
        let data = labels("/dev/vdb", "xfs", "/data");
        let hang = labels("nfs:/x", "nfs4", "/hang");

        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        assert_eq!(value(&set, "node_filesystem_device_error", &data), 0.0);
        let before = labels("/dev/vdc", "ext4", "/before");
        assert_eq!(value(&set, "node_filesystem_device_error", &before), 0.0);
        assert_eq!(
            len(&set, "node_filesystem_device_error"),
            2,
            "mounts before and after the stuck one"
        );
        assert!(lock(&c.stuck).contains("/hang"));

        // While stuck, the mount is skipped without waiting for the timeout again.
        let start = Instant::now();
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        assert!(start.elapsed() < timeout);
        assert_eq!(len(&set, "node_filesystem_device_error"), 2);

        RELEASE.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while lock(&c.stuck).contains("/hang") {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "stuck mark never cleared"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut set = MetricSet::new();
        c.update(&mut set).unwrap();
        assert_eq!(value(&set, "node_filesystem_device_error", &hang), 0.0);
        assert_eq!(value(&set, "node_filesystem_device_error", &data), 0.0);
    }

    #[test]
    fn real_statvfs_on_root() {
        let s = statvfs(Path::new("/")).unwrap();
        assert!(s.size > 0.0 && s.avail <= s.size);
        assert!(statvfs(Path::new("/nonexistent/dir")).is_err());
    }
}
