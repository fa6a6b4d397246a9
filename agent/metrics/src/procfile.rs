//! Reading procfs and sysfs files cheaply, scrape after scrape.
//!
//! Opening a file is most of what reading a small /proc or /sys file costs: the path walk
//! (through /sys/class symlinks), the open and the close took 4–9 µs of the ~10 µs per
//! attribute measured here, and a fresh seq_file has to grow its buffer by retrying (a
//! first read of /proc/net/netstat costs twice a later one). So, as procps' `top` does with
//! /proc/stat, files on procfs and sysfs stay open between scrapes and are re-read with
//! `pread` at offset 0, which makes the kernel generate the contents afresh.
//!
//! A kept file is only trusted while it names the same kernel object as its path:
//! - a removed object (device unplugged, interface deleted, process gone) fails its reads
//!   with ENODEV/ESRCH/ENOENT, and the path is opened again;
//! - a renamed object keeps its open files, which would then follow the new name: callers
//!   that list renameable devices (network interfaces) use [`list_dir`], which forgets the
//!   files under any name whose directory entry changed inode;
//! - regular files (os-release, udev data, textfiles) are replaced by rename, so only files
//!   on procfs and sysfs are kept at all.
//!
//! Files not read for [`IDLE_SCRAPES`] scrapes are closed, and at most [`MAX_KEPT`] are open
//! at once: each kept seq_file holds a page-sized kernel buffer charged to our cgroup.

use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use super::CollectorError;

/// Upper bound on kept files (~4 KiB of kernel memory each once read).
pub const MAX_KEPT: usize = 1024;
/// A file unread for this many scrapes is closed (e.g. an interface that went away, or a
/// collector left out by `collect[]` filters for a while).
pub const IDLE_SCRAPES: u64 = 8;

/// Open files by path, plus the directory listings that guard them.
#[derive(Default)]
pub struct FileCache {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// By path bytes: hashing a `Path` walks its components, bytes hash in one go.
    files: FxHashMap<Vec<u8>, KeptFile>,
    /// Inode last seen per (listed directory, entry name), see [`FileCache::list_dir`].
    listings: FxHashMap<PathBuf, FxHashMap<String, u64>>,
    scrape: u64,
}

struct KeptFile {
    file: File,
    last_used: u64,
}

/// The cache the collectors share.
fn global() -> &'static FileCache {
    static GLOBAL: LazyLock<FileCache> = LazyLock::new(FileCache::default);
    &GLOBAL
}

/// Reads a whole procfs/sysfs file through the shared [`FileCache`].
pub fn read_proc(path: impl AsRef<Path>) -> Result<String, CollectorError> {
    global().read(path.as_ref())
}

/// [`FileCache::read_if_changed`] on the shared cache.
pub fn read_proc_if_changed(
    path: impl AsRef<Path>,
    have_previous: bool,
) -> Result<Option<String>, CollectorError> {
    global().read_if_changed(path.as_ref(), have_previous)
}

/// [`FileCache::list_dir`] on the shared cache.
pub fn list_dir(dir: &Path) -> io::Result<Vec<DirEntry>> {
    global().list_dir(dir)
}

/// [`FileCache::end_scrape`] on the shared cache.
pub fn end_scrape() {
    global().end_scrape()
}

/// An entry of a listed directory.
pub struct DirEntry {
    pub name: String,
    pub ino: u64,
    pub file_type: std::fs::FileType,
}

impl FileCache {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a whole file, keeping it open for the next scrape if it is on procfs or
    /// sysfs (see the module docs).
    pub fn read(&self, path: &Path) -> Result<String, CollectorError> {
        self.read_if_changed(path, false)
            .map(|text| text.unwrap_or_default())
    }

    /// Reads a file whose `poll` reports changes with `POLLPRI` (`/proc/<pid>/mounts`,
    /// `mountinfo`, `/proc/swaps`), or `Ok(None)` when the kept file says nothing changed
    /// since the previous call, so the caller's parse of that read still holds.
    ///
    /// Generating /proc/1/mounts was the costliest read of a scrape (~70 µs for 23 mounts,
    /// more than any other file) although the mount table rarely changes. The kernel bumps
    /// the mount namespace's event count on every mount, unmount and remount, and `poll`
    /// flags a file opened on it until the file has polled the new count, so a change
    /// between the poll and the read is seen by the read, and one after it by the next
    /// poll. `have_previous: false` (the caller holds no parse) always reads. Only for
    /// files with such a poll: other seq files never set `POLLPRI` and would read as
    /// unchanged forever. Files not on procfs/sysfs are not kept and are always read.
    pub fn read_if_changed(
        &self,
        path: &Path,
        have_previous: bool,
    ) -> Result<Option<String>, CollectorError> {
        let key = path.as_os_str().as_bytes();
        {
            // Poll and read under the lock, so concurrent scrapes never share a seq_file
            // position, nor one's poll consume the change the other reads.
            let mut kept = self.lock();
            let scrape = kept.scrape;
            if let Some(entry) = kept.files.get_mut(key) {
                // Poll before the read: it consumes the event, and the read then sees at
                // least the state it announced.
                if have_previous && !polled_change(&entry.file) {
                    entry.last_used = scrape;
                    return Ok(None);
                }
                match read_all(&entry.file) {
                    Ok(bytes) => {
                        entry.last_used = scrape;
                        return decode(path, bytes).map(Some);
                    }
                    Err(e) if is_gone(&e) => {
                        kept.files.remove(key);
                    }
                    // EINVAL, EIO...: the attribute's own answer (e.g. `speed` of a down
                    // link), not a stale file.
                    Err(e) => {
                        entry.last_used = scrape;
                        return Err(CollectorError::io(path, e));
                    }
                }
            }
        }
        // A file opened now starts at the current event count, so nothing is missed.
        let file = File::open(path).map_err(|e| CollectorError::io(path, e))?;
        let result = read_all(&file);
        if is_pseudo_fs(&file) {
            self.put_back(path, file);
        }
        decode(path, result.map_err(|e| CollectorError::io(path, e))?).map(Some)
    }

    /// Lists a sysfs class directory such as /sys/class/net, and forgets kept files under
    /// any entry whose inode changed since the last listing: a renamed or replaced device
    /// must not be read through files opened for another one.
    pub fn list_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        use std::os::unix::fs::DirEntryExt;
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let file_type = entry.file_type()?;
            entries.push(DirEntry {
                name,
                ino: entry.ino(),
                file_type,
            });
        }
        let seen: FxHashMap<String, u64> =
            entries.iter().map(|e| (e.name.clone(), e.ino)).collect();
        let mut kept = self.lock();
        let previous = kept.listings.remove(dir).unwrap_or_default();
        for (name, ino) in previous {
            if seen.get(&name) != Some(&ino) {
                let changed = dir.join(&name);
                let changed = changed.as_os_str().as_bytes();
                kept.files.retain(|path, _| {
                    !(path.starts_with(changed)
                        && matches!(path.get(changed.len()), None | Some(b'/')))
                });
            }
        }
        kept.listings.insert(dir.to_path_buf(), seen);
        Ok(entries)
    }

    /// Ends a scrape: closes files unread for [`IDLE_SCRAPES`] scrapes.
    pub fn end_scrape(&self) {
        let mut kept = self.lock();
        kept.scrape += 1;
        let oldest = kept.scrape.saturating_sub(IDLE_SCRAPES);
        kept.files.retain(|_, f| f.last_used >= oldest);
    }

    fn put_back(&self, path: &Path, file: File) {
        let key = path.as_os_str().as_bytes();
        let mut kept = self.lock();
        if kept.files.len() >= MAX_KEPT && !kept.files.contains_key(key) {
            return;
        }
        let last_used = kept.scrape;
        kept.files
            .insert(key.to_vec(), KeptFile { file, last_used });
    }

    #[cfg(test)]
    fn is_kept(&self, path: &Path) -> bool {
        self.lock().files.contains_key(path.as_os_str().as_bytes())
    }
}

/// Whether `poll` flags a change (`POLLPRI`/`POLLERR`) on a file such as /proc/1/mounts.
/// A failed poll counts as a change: the caller then reads the file.
fn polled_change(file: &File) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_none_or(|r| r.intersects(PollFlags::POLLPRI | PollFlags::POLLERR)),
        Err(_) => true,
    }
}

/// The object behind the file is gone: open the path again.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV | libc::ESRCH | libc::ENOENT | libc::ESTALE | libc::ENXIO)
    )
}

fn is_pseudo_fs(file: &File) -> bool {
    use nix::sys::statfs::{PROC_SUPER_MAGIC, SYSFS_MAGIC, fstatfs};
    fstatfs(file).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == PROC_SUPER_MAGIC || t == SYSFS_MAGIC
    })
}

/// Reads from offset 0 to EOF into a per-thread buffer reused across scrapes.
///
/// seq files and sysfs attributes fill the caller's buffer until EOF, so a short read *is*
/// EOF and the usual extra zero-length read is skipped (each read of a seq file such as
/// /proc/net/udp would restart the kernel's walk of its table).
fn read_all(file: &File) -> io::Result<Vec<u8>> {
    use std::cell::RefCell;
    thread_local! {
        static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
    }
    BUF.with_borrow_mut(|buf| {
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let want = buf.len() - len;
            let n = match file.read_at(&mut buf[len..], len as u64) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            len += n;
            if n < want {
                break;
            }
        }
        Ok(buf[..len].to_vec())
    })
}

/// Text of a procfs/sysfs file. Bytes that are not UTF-8 (a power supply's `model_name`
/// from firmware, a DMI string) become U+FFFD, as node_exporter's label values do, rather
/// than losing the whole file; valid text is not copied.
fn decode(_path: &Path, bytes: Vec<u8>) -> Result<String, CollectorError> {
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_kept_and_reread_fresh() {
        let cache = FileCache::default();
        let path = Path::new("/proc/self/stat");
        let first = cache.read(path).unwrap();
        assert!(cache.is_kept(path));
        // Re-read through the kept file: regenerated, not the first read's bytes again
        // (the thread count and times may differ, the pid does not).
        let second = cache.read(path).unwrap();
        assert_eq!(
            first.split_whitespace().next(),
            second.split_whitespace().next()
        );
        assert!(cache.is_kept(path));
        let t0 = cache.read(Path::new("/proc/uptime")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t1 = cache.read(Path::new("/proc/uptime")).unwrap();
        assert_ne!(t0, t1, "a kept file is regenerated on every read");
    }

    #[test]
    fn regular_files_are_not_kept() {
        let cache = FileCache::default();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("os-release");
        std::fs::write(&path, "ID=a\n").unwrap();
        assert_eq!(cache.read(&path).unwrap(), "ID=a\n");
        assert!(!cache.is_kept(&path));
        // Replaced by rename, as package managers do: the new contents are read.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "ID=b\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(cache.read(&path).unwrap(), "ID=b\n");
    }

    #[test]
    fn missing_files_are_not_found_errors() {
        let err = FileCache::default()
            .read(Path::new("/proc/self/no-such-file"))
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn idle_files_are_closed() {
        let cache = FileCache::default();
        let path = Path::new("/proc/self/statm");
        cache.read(path).unwrap();
        for _ in 0..IDLE_SCRAPES {
            cache.end_scrape();
        }
        assert!(cache.is_kept(path));
        cache.end_scrape();
        assert!(!cache.is_kept(path));
    }

    #[test]
    fn a_changed_directory_entry_forgets_its_files() {
        // A tempdir stands in for /sys/class/net: a "renamed" entry is a new inode under
        // the old name. Files there are not kept (not sysfs), so plant one by hand.
        let cache = FileCache::default();
        let dir = tempfile::tempdir().unwrap();
        let iface = dir.path().join("eth0");
        std::fs::create_dir(&iface).unwrap();
        let planted = iface.join("mtu");
        std::fs::write(&planted, "1500\n").unwrap();
        cache.list_dir(dir.path()).unwrap();
        cache.put_back(&planted, File::open(&planted).unwrap());
        cache.list_dir(dir.path()).unwrap();
        assert!(cache.is_kept(&planted), "same inode: kept");
        std::fs::rename(&iface, dir.path().join("eth1")).unwrap();
        std::fs::create_dir(&iface).unwrap();
        let mut names: Vec<String> = cache
            .list_dir(dir.path())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        assert_eq!(names, ["eth0", "eth1"]);
        assert!(!cache.is_kept(&planted), "new inode: forgotten");
    }

    fn in_ns(pid: u32, args: &[&str]) {
        let status = std::process::Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-m", "--"])
            .args(args)
            .status()
            .expect("nsenter runs");
        assert!(status.success(), "nsenter {args:?}: {status}");
    }

    #[test]
    fn mounts_are_reread_only_when_the_mount_table_changes() {
        let child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "60"])
            .spawn();
        let (Ok(child), true) = (child, nix::unistd::geteuid().is_root()) else {
            let reason = "unshare and root are needed to change a mount table";
            if std::env::var_os("NODE_AGENT_REQUIRE_ALL").is_some_and(|v| v == "1") {
                panic!("required: {reason}");
            }
            eprintln!("SKIPPED: {reason}");
            return;
        };
        // A child in its own mount namespace, so the test can change a mount table.
        let child = crate::fixtures::KillOnDrop(child);
        let pid = child.0.id();
        let path = PathBuf::from(format!("/proc/{pid}/mounts"));
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().to_str().unwrap();
        let cache = FileCache::default();
        // Until `unshare` has made the namespace, the table is the parent's: wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
            == std::fs::read_link("/proc/self/ns/mnt").ok()
            || std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n"
        {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare never ran sleep"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let first = cache.read_if_changed(&path, false).unwrap();
        assert!(first.is_some_and(|t| !t.contains(target)));
        assert_eq!(cache.read_if_changed(&path, true).unwrap(), None);
        assert_eq!(cache.read_if_changed(&path, true).unwrap(), None);
        // Without a previous parse the caller always gets the text.
        assert!(cache.read_if_changed(&path, false).unwrap().is_some());

        in_ns(
            pid,
            &["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", target],
        );
        let mounted = cache.read_if_changed(&path, true).unwrap();
        let line = |text: &str| {
            text.lines()
                .find(|l| l.split(' ').nth(1) == Some(target))
                .map(str::to_string)
        };
        let mounted = mounted.expect("a mount is a change");
        assert!(
            line(&mounted).is_some_and(|l| l.contains(" rw,")),
            "{mounted}"
        );
        assert_eq!(cache.read_if_changed(&path, true).unwrap(), None);

        // A remount changes only options (node_filesystem_readonly): also a change.
        in_ns(pid, &["mount", "-o", "remount,ro", target]);
        let remounted = cache
            .read_if_changed(&path, true)
            .unwrap()
            .expect("remount");
        assert!(
            line(&remounted).is_some_and(|l| l.contains(" ro,")),
            "{remounted}"
        );

        in_ns(pid, &["umount", target]);
        let unmounted = cache.read_if_changed(&path, true).unwrap().expect("umount");
        assert_eq!(line(&unmounted), None);
        assert_eq!(cache.read_if_changed(&path, true).unwrap(), None);
    }

    #[test]
    fn a_file_of_a_vanished_object_is_opened_again() {
        // /proc/<pid>/stat of a reaped child reads ESRCH through the kept file; the path is
        // opened again and the caller sees "not found", as without the cache.
        let cache = FileCache::default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let path = PathBuf::from(format!("/proc/{}/stat", child.id()));
        assert!(cache.read(&path).unwrap().contains("(sleep)"));
        assert!(cache.is_kept(&path));
        child.kill().unwrap();
        child.wait().unwrap();
        let err = cache.read(&path).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(!cache.is_kept(&path));
    }
}
