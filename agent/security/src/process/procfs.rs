//! Reading processes from `/proc` (the table's bootstrap, and processes whose fork the
//! table missed).
//!
//! Everything here is input-driven: a process can exit between two reads (its files then
//! fail with ENOENT/ESRCH), and its `comm` and `cmdline` are chosen by whoever runs it
//! (spaces, parentheses, newlines, invalid UTF-8, megabytes of arguments). Reads are
//! bounded and every failure is an error value, never a panic.

use std::io;
use std::path::{Path, PathBuf};

use super::container::{container_id_from_cgroup_path, read_bounded};

/// Bytes of `/proc/PID/cmdline` read at most (argv beyond that is cut and flagged).
pub const MAX_CMDLINE_BYTES: u64 = 4096;
/// Characters kept of a path (exe).
const MAX_PATH_CHARS: usize = 4096;

/// What `/proc/PID` says about a process.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProcSnapshot {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    /// argv (bounded by [`MAX_CMDLINE_BYTES`]).
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    /// Target of `/proc/PID/exe` (empty for kernel threads and when not permitted).
    pub exe_path: String,
    pub uid: u32,
    pub gid: u32,
    pub loginuid: u32,
    pub tty: u32,
    pub cap_effective: u64,
    /// Process start, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// cgroup v2 path (or the first v1 path naming a container).
    pub cgroup_path: Option<String>,
    pub container_id: Option<String>,
}

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The process exited (or never existed): normal, not worth a log line.
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("reading /proc/{pid}: {message}")]
    Other { pid: u32, message: String },
}

/// A `/proc` tree (the host's, or another mount of it such as `/host/proc`).
#[derive(Debug, Clone)]
pub struct ProcSource {
    root: PathBuf,
    boot_time_ns: u64,
    ticks_per_second: u64,
}

impl ProcSource {
    /// `root` is the proc mount; its `stat` gives the boot time that start times are
    /// relative to.
    pub fn new(root: impl Into<PathBuf>) -> ProcSource {
        let root = root.into();
        let boot_time_ns = read_bounded(&root.join("stat"), 1024 * 1024)
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .map_or(0, |secs| secs.saturating_mul(1_000_000_000));
        ProcSource {
            root,
            boot_time_ns,
            ticks_per_second: procfs::ticks_per_second().max(1),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Process ids (not threads) present now.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(&self.root)?.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            {
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        Ok(pids)
    }

    /// Reads one process. Only `stat` is required; every other file may be missing or
    /// unreadable (kernel threads, permissions, a racing exit) and reads as empty/0.
    pub fn read(&self, pid: u32) -> Result<ProcSnapshot, ReadError> {
        let dir = self.root.join(pid.to_string());
        let process =
            procfs::process::Process::new_with_root(dir.clone()).map_err(|e| classify(pid, e))?;
        let stat = process.stat().map_err(|e| classify(pid, e))?;
        let status = process.status().ok();
        let (argv, argv_truncated) = read_cmdline(&dir.join("cmdline"));
        let exe_path = process
            .exe()
            .map(|p| truncate_chars(p.to_string_lossy().into_owned(), MAX_PATH_CHARS))
            .unwrap_or_default();
        let cgroup_path = process.cgroups().ok().and_then(|groups| {
            let v2 = groups.0.iter().find(|g| g.hierarchy == 0);
            let with_container = groups
                .0
                .iter()
                .find(|g| container_id_from_cgroup_path(&g.pathname).is_some());
            with_container.or(v2).map(|g| g.pathname.clone())
        });
        let container_id = cgroup_path
            .as_deref()
            .and_then(container_id_from_cgroup_path);
        let start_ticks = stat.starttime;
        let start_ns = self.boot_time_ns.saturating_add(
            (u128::from(start_ticks) * 1_000_000_000 / u128::from(self.ticks_per_second))
                .min(u128::from(u64::MAX)) as u64,
        );
        Ok(ProcSnapshot {
            pid,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            comm: truncate_chars(stat.comm, 64),
            argv,
            argv_truncated,
            exe_path,
            uid: status.as_ref().map_or(0, |s| s.euid),
            gid: status.as_ref().map_or(0, |s| s.egid),
            loginuid: process.loginuid().unwrap_or(u32::MAX),
            tty: u32::try_from(stat.tty_nr).unwrap_or(0),
            cap_effective: status.as_ref().map_or(0, |s| s.capeff),
            start_ns,
            cgroup_path,
            container_id,
        })
    }
}

fn classify(pid: u32, err: procfs::ProcError) -> ReadError {
    match err {
        procfs::ProcError::NotFound(_) => ReadError::Gone(pid),
        procfs::ProcError::Io(ref e, _) if e.raw_os_error() == Some(libc::ESRCH) => {
            ReadError::Gone(pid)
        }
        other => ReadError::Other {
            pid,
            message: other.to_string(),
        },
    }
}

/// argv from a cmdline file, at most [`MAX_CMDLINE_BYTES`] read.
fn read_cmdline(path: &Path) -> (Vec<String>, bool) {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open(path) else {
        return (Vec::new(), false);
    };
    let mut buf = Vec::new();
    // One byte more than we keep tells whether there was more.
    if file
        .take(MAX_CMDLINE_BYTES + 1)
        .read_to_end(&mut buf)
        .is_err()
    {
        return (Vec::new(), false);
    }
    let truncated = buf.len() as u64 > MAX_CMDLINE_BYTES;
    buf.truncate(MAX_CMDLINE_BYTES as usize);
    let used = buf.strip_suffix(&[0]).unwrap_or(&buf);
    if used.is_empty() {
        return (Vec::new(), truncated);
    }
    let mut argv: Vec<String> = used
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // A process that rewrote its argv area (setproctitle) may use spaces, not NULs; keep
    // it as one argument, as ps does.
    if truncated {
        argv.pop();
    }
    (argv, truncated)
}

fn truncate_chars(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_self() {
        let source = ProcSource::new("/proc");
        let me = source.read(std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw() as u32);
        assert!(!me.argv.is_empty());
        assert_eq!(
            std::path::Path::new(&me.exe_path),
            std::env::current_exe().unwrap()
        );
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(me.start_ns <= now && me.start_ns > now - 3_600_000_000_000);
        assert!(source.pids().unwrap().contains(&std::process::id()));
    }

    #[test]
    fn missing_process_is_gone() {
        let source = ProcSource::new("/proc");
        // pid_max is at most 2^22; this pid cannot exist.
        assert!(matches!(source.read(u32::MAX - 7), Err(ReadError::Gone(_))));
    }

    #[test]
    fn cmdline_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmdline");
        let mut data = b"prog\0-x\0".to_vec();
        data.extend(std::iter::repeat_n(b'a', 10_000));
        std::fs::write(&path, &data).unwrap();
        let (argv, truncated) = read_cmdline(&path);
        assert!(truncated);
        assert_eq!(argv, vec!["prog".to_string(), "-x".to_string()]);
        std::fs::write(&path, b"a b c").unwrap();
        assert_eq!(read_cmdline(&path), (vec!["a b c".to_string()], false));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(read_cmdline(&path), (vec![], false));
    }
}
