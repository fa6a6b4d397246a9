//! kubelet's on-disk layout, the one parser of it that log shipping and syscall attribution
//! share: pod log directories `<pods_dir>/<namespace>_<pod>_<uid>/<container>/<n>.log`
//! (plus rotated siblings `<n>.log.<timestamp>` and `<n>.log.<timestamp>.gz`) and the
//! `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` links.

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

/// Parses `<namespace>_<pod>_<uid>` into (namespace, pod, uid). No part can contain `_`
/// (namespaces and pod names are DNS-1123 names), and the uid must look like one
/// ([`is_pod_uid`]), so stray directories are not mistaken for pods.
pub fn parse_pod_dir(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || pod.is_empty() || !is_pod_uid(uid) {
        return None;
    }
    Some((ns, pod, uid))
}

/// A pod uid as kubelet names directories with it: the API server's UUID
/// (`8-4-4-4-12` hex digits), or for static pods kubelet's own 32-hex-digit hash of the
/// manifest (their mirror pods carry the same uid).
pub fn is_pod_uid(text: &str) -> bool {
    let hex = |b: u8| b.is_ascii_hexdigit();
    match text.len() {
        36 => text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => hex(b),
        }),
        32 => text.bytes().all(hex),
        _ => false,
    }
}

/// A container id as runtimes print it: 64 hex digits.
pub fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` → (id, container name).
pub fn parse_container_log_link(name: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if !is_container_id(id) {
        return None;
    }
    let container = rest.splitn(3, '_').nth(2)?;
    (!container.is_empty()).then(|| (id.to_ascii_lowercase(), container.to_string()))
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

        let rotated =
            root.join("ns_pod_0b1c2d3e-1111-2222-3333-444455556666/c/0.log.20240101-120000");
        assert_eq!(parse_path(&root, &rotated).unwrap().kind, FileKind::Rotated);
        let gz =
            root.join("ns_pod_0b1c2d3e-1111-2222-3333-444455556666/c/0.log.20240101-120000.gz");
        assert_eq!(
            parse_path(&root, &gz).unwrap().kind,
            FileKind::RotatedCompressed
        );
    }

    #[test]
    fn pod_uids() {
        assert!(is_pod_uid("0b1c2d3e-1111-2222-3333-444455556666"));
        // A static pod: kubelet's hash of its manifest.
        assert!(is_pod_uid("3f1e8a2b9c0d4e5f60718293a4b5c6d7"));
        for bad in [
            "uid",
            "not-a-uid",
            "0b1c2d3e_1111_2222_3333_444455556666",
            "",
        ] {
            assert!(!is_pod_uid(bad), "{bad}");
        }
    }

    #[test]
    fn rejects_junk() {
        let root = PathBuf::from("/var/log/pods");
        for junk in [
            "ns_pod/c/0.log",
            "ns_pod_0b1c2d3e-1111-2222-3333-444455556666_extra/c/0.log",
            "_pod_uid/c/0.log",
            "ns_pod_0b1c2d3e-1111-2222-3333-444455556666/c/x.log",
            "ns_pod_0b1c2d3e-1111-2222-3333-444455556666/c/0.txt",
            "ns_pod_0b1c2d3e-1111-2222-3333-444455556666/c/0.log.",
            "ns_pod_0b1c2d3e-1111-2222-3333-444455556666/c/0.log.20240101.gz.tmp",
            "ns_pod_0b1c2d3e-1111-2222-3333-444455556666/c/sub/0.log",
            "ns_pod_0b1c2d3e-1111-2222-3333-444455556666/0.log",
            "ns_pod_0b1c2d3e-1111-2222-3333-444455556666",
        ] {
            assert_eq!(parse_path(&root, &root.join(junk)), None, "{junk}");
        }
        assert_eq!(
            parse_path(
                &root,
                Path::new("/elsewhere/ns_p_0b1c2d3e-1111-2222-3333-444455556666/c/0.log")
            ),
            None
        );
    }

    const UID: &str = "0b1c2d3e-1111-4222-8333-444455556666";
    const ID: &str = "4a5b6c7d8e9f00112233445566778899aabbccddeeff00112233445566778899";

    #[test]
    fn pod_dirs_and_container_links() {
        assert_eq!(
            parse_pod_dir(&format!("kube-system_coredns-5d78c9869d-abcde_{UID}")),
            Some(("kube-system", "coredns-5d78c9869d-abcde", UID))
        );
        assert_eq!(parse_pod_dir("kube-system_coredns"), None);
        assert_eq!(parse_pod_dir(&format!("a_b_c_{UID}")), None);
        assert_eq!(parse_pod_dir("ns_pod_not-a-uid"), None);

        assert_eq!(
            parse_container_log_link(&format!("coredns-abc_kube-system_coredns-{ID}.log")),
            Some((ID.into(), "coredns".into()))
        );
        // Container names may contain dashes; the id is after the last one.
        assert_eq!(
            parse_container_log_link(&format!("web-0_prod_istio-proxy-{ID}.log")),
            Some((ID.into(), "istio-proxy".into()))
        );
        assert_eq!(parse_container_log_link("web-0_prod_app-123.log"), None);
        assert_eq!(
            parse_container_log_link(&format!("web-0_prod-{ID}.log")),
            None
        );
        assert_eq!(parse_container_log_link(&format!("x_y_z-{ID}.txt")), None);
    }
}
