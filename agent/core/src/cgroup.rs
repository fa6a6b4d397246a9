//! Container identity in cgroup paths, shared by the syscall counters (attribution of
//! per-cgroup series) and runtime security (`container.id` of a process).
//!
//! Recognised layouts of the CRI runtimes and docker:
//! * systemd driver: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`
//!   (also `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope`);
//! * cgroupfs driver: `kubepods/burstable/pod<uid>/<id>` (also `crio-<id>`, `docker-<id>`),
//!   and docker's `/docker/<id>`.
//!
//! CRI-O's `crio-conmon-<id>.scope` is the monitor process, not the container.

use crate::kubelet::{is_container_id, is_pod_uid};

/// A container recognised in a cgroup path, with its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// Pod UID with dashes (systemd paths spell it with underscores).
    pub pod_uid: String,
    /// Full 64-hex container id, lower case.
    pub container_id: String,
}

/// The container id one path component names: `<id>`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `docker-<id>.scope`, `libpod-<id>.scope`, `containerd-<id>`.
pub fn container_id_of(component: &str) -> Option<String> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    if stem.starts_with("crio-conmon-") {
        return None;
    }
    let id = [
        "cri-containerd-",
        "crio-",
        "docker-",
        "libpod-",
        "containerd-",
    ]
    .iter()
    .find_map(|p| stem.strip_prefix(p))
    .unwrap_or(stem);
    is_container_id(id).then(|| id.to_ascii_lowercase())
}

/// The container of a process from its cgroup path: the deepest component that names one
/// (so a container that makes sub-cgroups stays attributed to itself). Any layout, pod or
/// not (docker, podman).
pub fn container_id_from_path(path: &str) -> Option<String> {
    path.split('/').rev().find_map(container_id_of)
}

/// `pod<uid>`, `kubepods-pod<uid_>.slice`, `kubepods-besteffort-pod<uid_>.slice` → uid.
pub fn pod_uid_of(component: &str) -> Option<String> {
    let stem = component.strip_suffix(".slice").unwrap_or(component);
    let at = stem.rfind("pod")?;
    let prefix = &stem[..at];
    // "kubepods-…-" and nested variants such as kind's "kubelet-kubepods-…-".
    if !(prefix.is_empty() || (prefix.contains("kubepods") && prefix.ends_with('-'))) {
        return None;
    }
    let uid = stem[at + 3..].replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// A Kubernetes container cgroup: the container component directly below the pod's (the
/// pod-level cgroup itself, or deeper sub-cgroups, are not the container's own cgroup).
pub fn parse_container_path(path: &str) -> Option<ContainerRef> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let pod_index = components.iter().rposition(|c| pod_uid_of(c).is_some())?;
    let pod_uid = pod_uid_of(components[pod_index])?;
    if components.len() != pod_index + 2 {
        return None;
    }
    let container_id = container_id_of(components[pod_index + 1])?;
    Some(ContainerRef {
        pod_uid,
        container_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";

    #[test]
    fn runtimes_and_drivers() {
        for path in [
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
                UID.replace('-', "_")
            ),
            format!(
                "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
                UID.replace('-', "_")
            ),
        ] {
            let r = parse_container_path(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!(
                (r.pod_uid.as_str(), r.container_id.as_str()),
                (UID, ID),
                "{path}"
            );
            assert_eq!(container_id_from_path(&path).as_deref(), Some(ID));
        }
        assert_eq!(
            container_id_from_path(&format!("/docker/{ID}")).as_deref(),
            Some(ID)
        );
        assert_eq!(
            container_id_from_path(&format!("/machine.slice/libpod-{ID}.scope/container"))
                .as_deref(),
            Some(ID)
        );
        // Not containers: the monitor, the pod level, the host.
        assert_eq!(container_id_of(&format!("crio-conmon-{ID}.scope")), None);
        assert_eq!(
            parse_container_path(&format!("/kubepods/besteffort/pod{UID}")),
            None
        );
        assert_eq!(
            container_id_from_path("/system.slice/kubelet.service"),
            None
        );
        assert_eq!(container_id_of(&ID.to_uppercase()).as_deref(), Some(ID));
    }
}
