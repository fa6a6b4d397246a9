//! The agent's state directory: checkpoints, dead letters and the handover lock live under
//! one hostPath so the old and new pod of a rollout see the same files.

use std::path::{Path, PathBuf};

/// Default state directory (a hostPath in the DaemonSet).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/node-agent";

/// [`DEFAULT_STATE_DIR`] as a path.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// A temporary file name in `dir` that no other live process uses. Both pods of a
/// handover can be PID 1 in their own containers, so the name carries the pid
/// namespace's inode beside the pid, plus a per-process counter.
pub fn unique_temp_path(dir: &Path, stem: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid_ns = std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino());
    dir.join(format!(".{stem}-{pid_ns:x}-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_differ_within_a_process() {
        let dir = Path::new("/state");
        let (a, b) = (unique_temp_path(dir, "x"), unique_temp_path(dir, "x"));
        assert_ne!(a, b);
        assert!(a.starts_with(dir));
        assert!(a.file_name().unwrap().to_str().unwrap().starts_with(".x-"));
    }
}
