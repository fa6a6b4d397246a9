//! kubelet's pod log layout: `<pods_dir>/<namespace>_<pod>_<uid>/<container>/<n>.log`,
//! plus rotated siblings `<n>.log.<timestamp>` and `<n>.log.<timestamp>.gz`.

use std::path::Path;

/// What a path under the pods directory names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLogPath {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// Restart count of the container (`<n>` in `<n>.log`).
    pub restart: u32,
    pub kind: FileKind,
}

/// The live file, or one kubelet has rotated away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `<n>.log`: the runtime is writing to it.
    Current,
    /// `<n>.log.<timestamp>`: renamed away by kubelet, plain text.
    Rotated,
    /// `<n>.log.<timestamp>.gz`: compressed by kubelet; never read (its bytes were read
    /// from the plain file before compression, or the plain file's checkpoint says so).
    RotatedCompressed,
}

/// Parses `<namespace>_<pod>_<uid>` (no part can contain `_`: DNS-1123 names and UUIDs).
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some((ns, pod, uid))
}

/// Parses a log file name: `0.log`, `0.log.20240101-120000`, `0.log.20240101-120000.gz`.
pub fn parse_file_name(name: &str) -> Option<(u32, FileKind)> {
    let (restart, rest) = name.split_once(".log")?;
    let restart: u32 = restart.parse().ok()?;
    let kind = match rest {
        "" => FileKind::Current,
        _ => {
            let suffix = rest.strip_prefix('.')?;
            if suffix.is_empty() || suffix.contains('/') {
                return None;
            }
            if suffix.ends_with(".gz") {
                FileKind::RotatedCompressed
            } else if suffix.ends_with(".tmp") {
                // kubelet writes the compressed file under a temporary name first.
                return None;
            } else {
                FileKind::Rotated
            }
        }
    };
    Some((restart, kind))
}

/// Parses a full path under `pods_dir`; `None` for anything not shaped like a pod log.
pub fn parse_path(pods_dir: &Path, path: &Path) -> Option<PodLogPath> {
    let rel = path.strip_prefix(pods_dir).ok()?;
    let mut comps = rel.components();
    let pod_dir = comps.next()?.as_os_str().to_str()?;
    let container = comps.next()?.as_os_str().to_str()?;
    let file = comps.next()?.as_os_str().to_str()?;
    if comps.next().is_some() || container.is_empty() {
        return None;
    }
    let (namespace, pod, pod_uid) = parse_pod_dir(pod_dir)?;
    let (restart, kind) = parse_file_name(file)?;
    Some(PodLogPath {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        pod_uid: pod_uid.to_string(),
        container: container.to_string(),
        restart,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn parses_current_and_rotated_files() {
        let root = PathBuf::from("/var/log/pods");
        let p = parse_path(
            &root,
            &root.join("kube-system_coredns-5d78c9869d-abcde_0b1c2d3e-1111-2222-3333-444455556666/coredns/3.log"),
        )
        .unwrap();
        assert_eq!(p.namespace, "kube-system");
        assert_eq!(p.pod, "coredns-5d78c9869d-abcde");
        assert_eq!(p.pod_uid, "0b1c2d3e-1111-2222-3333-444455556666");
        assert_eq!(p.container, "coredns");
        assert_eq!(p.restart, 3);
        assert_eq!(p.kind, FileKind::Current);

        let rotated = root.join("ns_pod_uid/c/0.log.20240101-120000");
        assert_eq!(parse_path(&root, &rotated).unwrap().kind, FileKind::Rotated);
        let gz = root.join("ns_pod_uid/c/0.log.20240101-120000.gz");
        assert_eq!(
            parse_path(&root, &gz).unwrap().kind,
            FileKind::RotatedCompressed
        );
    }

    #[test]
    fn rejects_junk() {
        let root = PathBuf::from("/var/log/pods");
        for junk in [
            "ns_pod/c/0.log",
            "ns_pod_uid_extra/c/0.log",
            "_pod_uid/c/0.log",
            "ns_pod_uid/c/x.log",
            "ns_pod_uid/c/0.txt",
            "ns_pod_uid/c/0.log.",
            "ns_pod_uid/c/0.log.20240101.gz.tmp",
            "ns_pod_uid/c/sub/0.log",
            "ns_pod_uid/0.log",
            "ns_pod_uid",
        ] {
            assert_eq!(parse_path(&root, &root.join(junk)), None, "{junk}");
        }
        assert_eq!(
            parse_path(&root, Path::new("/elsewhere/ns_p_u/c/0.log")),
            None
        );
    }
}
