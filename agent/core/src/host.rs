//! Where the host's filesystems are mounted (node_exporter's `--path.*` flags).

use std::path::{Path, PathBuf};

/// Roots of the host's procfs, sysfs and root filesystem as seen by this process.
///
/// In a DaemonSet these are hostPath mounts such as `/host/proc`; standalone they are `/proc`,
/// `/sys` and `/`. Passed explicitly to every collector rather than kept as globals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub rootfs: PathBuf,
    /// udev database (`--path.udev.data`), used for `node_disk_info` labels.
    pub udev_data: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
            udev_data: PathBuf::from("/run/udev/data"),
        }
    }
}

impl HostPaths {
    /// A path below the procfs root, e.g. `proc_path("meminfo")`.
    pub fn proc_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.proc.join(rel)
    }

    /// A path below the host's `net/` procfs directory, e.g. `proc_net_path("dev")`.
    ///
    /// `<procfs>/net` resolves through `self` to the reading process's network namespace:
    /// in a pod without hostNetwork (which maxSurge rollouts need) that is the pod's, not
    /// the node's. When procfs is a host mount (not `/proc`) and has `1/net`, init's view,
    /// i.e. the node's namespace, is used instead; standalone it stays `/proc/net`.
    pub fn proc_net_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let init_net = self.proc.join("1/net");
        if self.proc != Path::new("/proc") && init_net.is_dir() {
            init_net.join(rel)
        } else {
            self.proc.join("net").join(rel)
        }
    }

    /// A path below the sysfs root, e.g. `sys_path("class/net")`.
    pub fn sys_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.sys.join(rel)
    }

    /// A host path (absolute on the host) resolved below the rootfs mount.
    pub fn rootfs_path(&self, host_abs: impl AsRef<Path>) -> PathBuf {
        let rel = host_abs.as_ref();
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        self.rootfs.join(rel)
    }

    /// Strips the rootfs prefix from a mount point seen through `/proc/1/mounts`, as
    /// node_exporter's `rootfsStripPrefix` does ("" becomes "/").
    pub fn strip_rootfs(&self, mountpoint: &str) -> String {
        let root = self.rootfs.to_string_lossy();
        if root == "/" || root.is_empty() {
            return mountpoint.to_string();
        }
        let root = root.trim_end_matches('/');
        match mountpoint.strip_prefix(root) {
            Some("") => "/".to_string(),
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            _ => mountpoint.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_rootfs_matches_node_exporter() {
        let p = HostPaths {
            rootfs: "/host/root".into(),
            ..HostPaths::default()
        };
        assert_eq!(p.strip_rootfs("/host/root"), "/");
        assert_eq!(p.strip_rootfs("/host/root/var/lib"), "/var/lib");
        assert_eq!(p.strip_rootfs("/host/rootless"), "/host/rootless");
        assert_eq!(p.strip_rootfs("/proc"), "/proc");
        assert_eq!(HostPaths::default().strip_rootfs("/boot"), "/boot");
    }

    #[test]
    fn proc_net_prefers_the_host_namespace_of_a_host_procfs_mount() {
        assert_eq!(
            HostPaths::default().proc_net_path("dev"),
            PathBuf::from("/proc/net/dev")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = HostPaths {
            proc: dir.path().to_path_buf(),
            ..HostPaths::default()
        };
        assert_eq!(p.proc_net_path("dev"), dir.path().join("net/dev"));
        std::fs::create_dir_all(dir.path().join("1/net")).unwrap();
        assert_eq!(p.proc_net_path("dev"), dir.path().join("1/net/dev"));
    }

    #[test]
    fn rootfs_path_joins_absolute_host_paths() {
        let p = HostPaths {
            rootfs: "/host/root".into(),
            ..HostPaths::default()
        };
        assert_eq!(
            p.rootfs_path("/etc/os-release"),
            PathBuf::from("/host/root/etc/os-release")
        );
    }
}
