//! The workload that runs a pod, from the pod alone (no RBAC on ReplicaSets or Jobs),
//! the way Vector and Filebeat do it:
//! - ReplicaSet `web-7d4b9c8f6` whose pods carry `pod-template-hash: 7d4b9c8f6` →
//!   Deployment `web` (the Deployment controller names its ReplicaSets so and sets the
//!   label); without that label it stays a ReplicaSet.
//! - Job `backup-29012345` (8–10 digits: the scheduled time in minutes, or seconds for
//!   the old controller) → CronJob `backup`; any other Job stays a Job.
//! - StatefulSet, DaemonSet, Job as owned; another controller kind is passed through
//!   (`Node` for static pods' mirror pods, custom controllers).
//!
//! Known limit (shared with both peers): a ReplicaSet made by another controller that
//! also sets `pod-template-hash` (Argo Rollouts) is reported as a Deployment.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// The pod's controller as its `ownerReferences` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub kind: Box<str>,
    pub name: Box<str>,
}

/// Kind of the top-level workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    /// Any other controller kind, as written in the owner reference.
    Other(Box<str>),
}

impl WorkloadKind {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Deployment => "Deployment",
            Self::ReplicaSet => "ReplicaSet",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::Other(kind) => kind,
        }
    }
}

/// The workload a pod belongs to (`kubernetes.deployment.name` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: Box<str>,
}

/// `pod-template-hash`, set by the Deployment controller on its ReplicaSets' pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The controller reference (or, without one, the first owner) and the workload it
/// resolves to; `None` for a bare pod.
pub fn resolve(
    owners: Option<&[OwnerReference]>,
    labels: Option<&BTreeMap<String, String>>,
) -> Option<(OwnerRef, Workload)> {
    let owners = owners?;
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())?;
    let name = owner.name.as_str();
    let workload = match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = labels.and_then(|l| l.get(POD_TEMPLATE_HASH));
            match hash.and_then(|h| strip_suffix(name, h)) {
                Some(deployment) => Workload {
                    kind: WorkloadKind::Deployment,
                    name: deployment.into(),
                },
                None => Workload {
                    kind: WorkloadKind::ReplicaSet,
                    name: name.into(),
                },
            }
        }
        "Job" => match cronjob_of(name) {
            Some(cronjob) => Workload {
                kind: WorkloadKind::CronJob,
                name: cronjob.into(),
            },
            None => Workload {
                kind: WorkloadKind::Job,
                name: name.into(),
            },
        },
        "StatefulSet" => Workload {
            kind: WorkloadKind::StatefulSet,
            name: name.into(),
        },
        "DaemonSet" => Workload {
            kind: WorkloadKind::DaemonSet,
            name: name.into(),
        },
        "Deployment" => Workload {
            kind: WorkloadKind::Deployment,
            name: name.into(),
        },
        "CronJob" => Workload {
            kind: WorkloadKind::CronJob,
            name: name.into(),
        },
        other => Workload {
            kind: WorkloadKind::Other(other.into()),
            name: name.into(),
        },
    };
    Some((
        OwnerRef {
            kind: owner.kind.as_str().into(),
            name: name.into(),
        },
        workload,
    ))
}

/// `name` without `-<suffix>`, if that is how it ends and something is left.
fn strip_suffix<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let prefix = name.strip_suffix(suffix)?.strip_suffix('-')?;
    (!prefix.is_empty()).then_some(prefix)
}

/// The CronJob of a Job named `<cronjob>-<8 to 10 digits>`.
fn cronjob_of(job: &str) -> Option<&str> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    let numeric = (8..=10).contains(&suffix.len()) && suffix.bytes().all(|b| b.is_ascii_digit());
    (numeric && !prefix.is_empty()).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller,
            block_owner_deletion: None,
        }
    }

    fn workload(owners: &[OwnerReference], labels: &[(&str, &str)]) -> Option<(String, String)> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(Some(owners), Some(&labels))
            .map(|(_, w)| (w.kind.as_str().to_string(), w.name.to_string()))
    }

    fn pair(kind: &str, name: &str) -> Option<(String, String)> {
        Some((kind.to_string(), name.to_string()))
    }

    #[test]
    fn replicaset_of_a_deployment_by_its_hash_label() {
        let rs = [owner("ReplicaSet", "web-api-7d4b9c8f6", Some(true))];
        assert_eq!(
            workload(&rs, &[("pod-template-hash", "7d4b9c8f6")]),
            pair("Deployment", "web-api")
        );
        // No label (a bare ReplicaSet) or a label that is not the suffix: a ReplicaSet.
        assert_eq!(workload(&rs, &[]), pair("ReplicaSet", "web-api-7d4b9c8f6"));
        assert_eq!(
            workload(&rs, &[("pod-template-hash", "other")]),
            pair("ReplicaSet", "web-api-7d4b9c8f6")
        );
        let only_hash = [owner("ReplicaSet", "-abc", Some(true))];
        assert_eq!(
            workload(&only_hash, &[("pod-template-hash", "abc")]),
            pair("ReplicaSet", "-abc")
        );
    }

    #[test]
    fn job_of_a_cronjob_by_its_time_suffix() {
        let cron = [owner("Job", "nightly-backup-29012345", Some(true))];
        assert_eq!(workload(&cron, &[]), pair("CronJob", "nightly-backup"));
        let old_controller = [owner("Job", "report-1700000000", Some(true))];
        assert_eq!(workload(&old_controller, &[]), pair("CronJob", "report"));
        for name in [
            "migrate-2",
            "migrate",
            "nightly-manual-x2k",
            "x-12345678901",
        ] {
            assert_eq!(
                workload(&[owner("Job", name, Some(true))], &[]),
                pair("Job", name)
            );
        }
    }

    #[test]
    fn direct_owners_and_the_controller_first() {
        assert_eq!(
            workload(&[owner("StatefulSet", "db", Some(true))], &[]),
            pair("StatefulSet", "db")
        );
        assert_eq!(
            workload(&[owner("DaemonSet", "agent", Some(true))], &[]),
            pair("DaemonSet", "agent")
        );
        assert_eq!(
            workload(&[owner("Node", "node-1", Some(true))], &[]),
            pair("Node", "node-1")
        );
        let both = [
            owner("ConfigMap", "gc-only", None),
            owner("DaemonSet", "ds", Some(true)),
        ];
        assert_eq!(workload(&both, &[]), pair("DaemonSet", "ds"));
        let none_controller = [owner("StatefulSet", "first", None)];
        assert_eq!(
            workload(&none_controller, &[]),
            pair("StatefulSet", "first")
        );
        assert_eq!(resolve(None, None), None);
        assert_eq!(resolve(Some(&[]), None), None);
    }
}
