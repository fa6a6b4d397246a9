//! Map entries → `node_agent_syscalls_total` series with bounded cardinality.
//!
//! Counts of every non-container cgroup are summed into one host series per syscall, so
//! the series count is bounded by (containers + 1) × syscalls in use. On top of that a hard
//! cap: the first `max_series` distinct series are admitted and stay admitted for the life
//! of the collector; later ones are folded into a single `other` series. Admission is
//! sticky so that every series — including `other` — only ever grows between scrapes.
//!
//! `syscalls.kube_labels` adds labels from the Kubernetes metadata of the series'
//! container (its workload, a pod label…), empty for host series and for containers the
//! metadata does not know (yet), `other` on the overflow series. Each container has one
//! value per label, so they do not multiply the series; the cap covers them all the same.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::cgroups::{Attribution, ContainerLabels, Owner};
use super::names::syscall_name;
use node_agent_core::kube::{MetadataValue, NoContainers, SharedContainerLookup};
use node_agent_metrics::MetricSet;

/// Label value of all labels of the overflow series.
pub const OTHER: &str = "other";

/// The values of the `kube_labels`, in the order of their names.
pub type Extra = Arc<[String]>;

/// Identity of one exported series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    Syscall {
        nr: u64,
        owner: Owner,
        /// Values of the `kube_labels` (empty when none are configured).
        extra: Extra,
    },
    /// Everything beyond `max_series`.
    Other,
}

/// Sticky admission of series under a cap.
#[derive(Debug)]
pub struct Admission {
    max_series: usize,
    admitted: HashSet<SeriesKey>,
    /// Series folded into `other`, with the count last seen: once folded, always folded,
    /// so that `other` only grows.
    folded: HashMap<SeriesKey, u64>,
    /// Last counts of folded series that have since disappeared (dead containers whose
    /// map entries the leader removed); keeps `other` monotonic.
    folded_gone: u64,
}

impl Admission {
    pub fn new(max_series: usize) -> Self {
        Self {
            max_series,
            admitted: HashSet::new(),
            folded: HashMap::new(),
            folded_gone: 0,
        }
    }

    /// Accounts `count` of `key`: returns true if the series is exported on its own.
    fn admit(&mut self, key: &SeriesKey, count: u64) -> bool {
        if self.admitted.contains(key) {
            return true;
        }
        if !self.folded.contains_key(key) && self.admitted.len() < self.max_series {
            self.admitted.insert(key.clone());
            return true;
        }
        self.folded.insert(key.clone(), count);
        false
    }

    /// Forgets series that are no longer in the map (their containers are gone), freeing
    /// their slots for new series.
    fn prune(&mut self, present: impl Fn(&SeriesKey) -> bool) {
        self.admitted.retain(|k| present(k));
        let mut gone = 0;
        self.folded.retain(|k, last| {
            let keep = present(k);
            if !keep {
                gone += *last;
            }
            keep
        });
        self.folded_gone += gone;
    }

    /// The `other` series' value.
    fn other(&self) -> u64 {
        self.folded_gone + self.folded.values().sum::<u64>()
    }
}

/// The `kube_labels` of container series, from the Kubernetes metadata by container id.
pub struct KubeLabels {
    names: Vec<String>,
    values: Vec<MetadataValue>,
    lookup: SharedContainerLookup,
    /// cgroup id → (lookup generation, scrape last seen, values): looked up again only
    /// when the metadata changed. A container the metadata no longer knows (restarted
    /// with a new id, or its pod gone) keeps its last values, so the counts of its last
    /// scrapes stay in the series they were in.
    memo: HashMap<u64, (u64, u64, Extra)>,
    scrape: u64,
    none: Extra,
    blank: Extra,
}

impl KubeLabels {
    /// `labels`: label name → metadata value (`syscalls.kube_labels`).
    pub fn new(labels: &BTreeMap<String, MetadataValue>, lookup: SharedContainerLookup) -> Self {
        Self {
            names: labels.keys().cloned().collect(),
            values: labels.values().cloned().collect(),
            lookup,
            memo: HashMap::new(),
            scrape: 0,
            none: Arc::from(Vec::new()),
            blank: labels.keys().map(|_| String::new()).collect(),
        }
    }

    /// No extra labels.
    pub fn none() -> Self {
        Self::new(&BTreeMap::new(), Arc::new(NoContainers))
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn values_of(&mut self, cgroup_id: u64, owner: &Owner, generation: u64) -> Extra {
        if self.names.is_empty() {
            return Arc::clone(&self.none);
        }
        let Owner::Container(labels) = owner else {
            return Arc::clone(&self.blank);
        };
        let scrape = self.scrape;
        if let Some((at, seen, values)) = self.memo.get_mut(&cgroup_id) {
            *seen = scrape;
            if *at == generation {
                return Arc::clone(values);
            }
        }
        let values = match self.lookup.container(&labels.id.0) {
            Some(found) => self
                .values
                .iter()
                .map(|v| v.get(&found.metadata).unwrap_or_default().to_string())
                .collect(),
            None => self
                .memo
                .get(&cgroup_id)
                .map_or_else(|| Arc::clone(&self.blank), |(_, _, v)| Arc::clone(v)),
        };
        self.memo
            .insert(cgroup_id, (generation, scrape, Arc::clone(&values)));
        values
    }
}

/// Sums `(cgroup id, syscall nr, count)` rows into series. Rows are visited in sorted
/// order, so which series get admitted first does not depend on hash-map iteration order.
pub fn aggregate(
    rows: impl IntoIterator<Item = (u64, u64, u64)>,
    attribution: &Attribution,
    kube: &mut KubeLabels,
    admission: &mut Admission,
) -> BTreeMap<SeriesKey, u64> {
    kube.scrape += 1;
    let generation = kube.lookup.generation();
    let mut by_key: BTreeMap<SeriesKey, u64> = BTreeMap::new();
    for (cgroup_id, nr, count) in rows {
        let owner = attribution.owner(cgroup_id);
        let extra = kube.values_of(cgroup_id, &owner, generation);
        let key = SeriesKey::Syscall { nr, owner, extra };
        *by_key.entry(key).or_default() += count;
    }
    let scrape = kube.scrape;
    kube.memo.retain(|_, (_, seen, _)| *seen == scrape);
    admission.prune(|k| by_key.contains_key(k));
    let mut out = BTreeMap::new();
    for (key, count) in by_key {
        if admission.admit(&key, count) {
            out.insert(key, count);
        }
    }
    let other = admission.other();
    if other > 0 {
        out.insert(SeriesKey::Other, other);
    }
    out
}

/// Writes the series as `node_agent_syscalls_total`; `extra_names` are the
/// [`KubeLabels::names`] the keys carry values of.
pub fn emit(series: &BTreeMap<SeriesKey, u64>, extra_names: &[String], out: &mut MetricSet) {
    const NAME: &str = "node_agent_syscalls_total";
    const HELP: &str = "Syscalls entered, by syscall and container (host processes have empty namespace/pod/container).";
    let host = Arc::new(ContainerLabels {
        namespace: String::new(),
        pod: String::new(),
        container: String::new(),
        id: Default::default(),
    });
    for (key, count) in series {
        let number;
        let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(4 + extra_names.len());
        let (syscall, labels, extra) = match key {
            SeriesKey::Other => {
                pairs.extend([
                    ("syscall", OTHER),
                    ("namespace", OTHER),
                    ("pod", OTHER),
                    ("container", OTHER),
                ]);
                pairs.extend(extra_names.iter().map(|n| (n.as_str(), OTHER)));
                out.counter(NAME, HELP, &pairs, *count as f64);
                continue;
            }
            SeriesKey::Syscall { nr, owner, extra } => {
                let syscall = match syscall_name(*nr) {
                    Some(name) => name,
                    // Every number that is no syscall shares one key slot (SysKey).
                    None if *nr == syscalls_common::SysKey::NR_INVALID => "invalid",
                    None => {
                        number = nr.to_string();
                        number.as_str()
                    }
                };
                let labels = match owner {
                    Owner::Host => &host,
                    Owner::Container(labels) => labels,
                };
                (syscall, labels, extra)
            }
        };
        pairs.extend([
            ("syscall", syscall),
            ("namespace", labels.namespace.as_str()),
            ("pod", labels.pod.as_str()),
            ("container", labels.container.as_str()),
        ]);
        for (i, name) in extra_names.iter().enumerate() {
            pairs.push((name, extra.get(i).map_or("", String::as_str)));
        }
        out.counter(NAME, HELP, &pairs, *count as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cgroups::AttributionSources;

    fn no_cgroups() -> Attribution {
        Attribution::new(
            AttributionSources {
                cgroup_root: None,
                pods_dir: "/nonexistent".into(),
                containers_dir: "/nonexistent".into(),
            },
            Duration::ZERO,
        )
    }

    #[test]
    fn host_cgroups_are_summed_per_syscall() {
        let attribution = no_cgroups();
        let mut admission = Admission::new(100);
        let series = aggregate(
            [(10, 0, 5), (11, 0, 7), (10, 1, 1)],
            &attribution,
            &mut KubeLabels::none(),
            &mut admission,
        );
        assert_eq!(
            series.get(&SeriesKey::Syscall {
                nr: 0,
                owner: Owner::Host,
                extra: Arc::from(Vec::new()),
            }),
            Some(&12)
        );
        assert_eq!(series.len(), 2);
    }

    #[test]
    fn cap_folds_new_series_into_other_and_admission_is_sticky() {
        let attribution = no_cgroups();
        let mut admission = Admission::new(2);
        let first = aggregate(
            [(1, 5, 10), (1, 6, 20)],
            &attribution,
            &mut KubeLabels::none(),
            &mut admission,
        );
        assert_eq!(first.len(), 2);
        assert!(!first.contains_key(&SeriesKey::Other));
        // A lower syscall number shows up later: it must not evict an admitted series.
        let second = aggregate(
            [(1, 1, 3), (1, 5, 11), (1, 6, 21), (1, 7, 4)],
            &attribution,
            &mut KubeLabels::none(),
            &mut admission,
        );
        assert_eq!(second.get(&SeriesKey::Other), Some(&7));
        assert_eq!(
            second.get(&SeriesKey::Syscall {
                nr: 5,
                owner: Owner::Host,
                extra: Arc::from(Vec::new()),
            }),
            Some(&11)
        );
        // Series 5 disappears (its container died): its slot frees up, but the folded
        // series 1 stays folded and "other" keeps series 7's last count after it goes too.
        let third = aggregate(
            [(1, 1, 5), (1, 6, 22), (1, 8, 1)],
            &attribution,
            &mut KubeLabels::none(),
            &mut admission,
        );
        assert_eq!(third.get(&SeriesKey::Other), Some(&(5 + 4)));
        assert!(third.contains_key(&SeriesKey::Syscall {
            nr: 8,
            owner: Owner::Host,
            extra: Arc::from(Vec::new()),
        }));
    }

    #[test]
    fn emits_names_and_labels() {
        let attribution = no_cgroups();
        let mut admission = Admission::new(1);
        let nr = crate::names::syscall_nr("getppid").expect("getppid");
        let series = aggregate(
            [(1, nr, 3), (1, 100_000, 2)],
            &attribution,
            &mut KubeLabels::none(),
            &mut admission,
        );
        let mut set = MetricSet::new();
        emit(&series, &[], &mut set);
        let families = set.into_families();
        assert_eq!(families.len(), 1);
        let metrics = families[0].get_metric();
        let labels = |i: usize| -> Vec<(String, String)> {
            metrics[i]
                .get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect()
        };
        let all: Vec<_> = (0..metrics.len())
            .map(|i| (labels(i), metrics[i].get_counter().get_value()))
            .collect();
        assert!(all.iter().any(|(l, v)| *v == 3.0
            && l.contains(&("syscall".into(), "getppid".into()))
            && l.contains(&("pod".into(), String::new()))));
        assert!(
            all.iter()
                .any(|(l, v)| *v == 2.0 && l.contains(&("syscall".into(), OTHER.into())))
        );
    }

    /// A lookup over a map the test changes, with a generation it bumps.
    #[derive(Default)]
    struct Fake {
        pods: std::sync::Mutex<HashMap<String, node_agent_core::kube::ContainerFound>>,
        generation: std::sync::atomic::AtomicU64,
        asked: std::sync::atomic::AtomicU64,
    }

    impl Fake {
        fn put(&self, id: &str, app: &str) {
            let metadata = node_agent_core::kube::PodMetadata {
                labels: [("app".to_string(), app.to_string())].into(),
                workload: Some(node_agent_core::kube::Workload {
                    kind: "Deployment".into(),
                    name: "web".into(),
                }),
                ..Default::default()
            };
            self.pods.lock().unwrap().insert(
                id.into(),
                node_agent_core::kube::ContainerFound {
                    namespace: "shop".into(),
                    pod: "web-1".into(),
                    pod_uid: "u1".into(),
                    container: "app".into(),
                    metadata: Arc::new(metadata),
                },
            );
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }

        fn remove(&self, id: &str) {
            self.pods.lock().unwrap().remove(id);
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    impl node_agent_core::kube::ContainerLookup for Fake {
        fn generation(&self) -> u64 {
            self.generation.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn container(&self, id: &str) -> Option<node_agent_core::kube::ContainerFound> {
            self.asked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.pods.lock().unwrap().get(id).cloned()
        }
    }

    /// A fixture cgroup tree with one container `ID` in pod `web-1`, and a host cgroup.
    fn container_tree(dir: &std::path::Path) -> (Attribution, u64, u64) {
        use std::os::unix::fs::MetadataExt as _;
        const UID: &str = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
        let root = dir.join("cgroup");
        let ctr = root.join(format!("kubepods/pod{UID}/{ID}"));
        let host = root.join("system.slice/kubelet.service");
        for d in [&ctr, &host] {
            std::fs::create_dir_all(d).unwrap();
        }
        let pods = dir.join("pods");
        std::fs::create_dir_all(pods.join(format!("shop_web-1_{UID}"))).unwrap();
        let mut attribution = Attribution::new(
            AttributionSources {
                cgroup_root: Some(root),
                pods_dir: pods,
                containers_dir: "/nonexistent".into(),
            },
            Duration::ZERO,
        );
        assert!(attribution.refresh());
        let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
        (attribution, ino(&ctr), ino(&host))
    }

    const ID: &str = "4f9a0e1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7";

    fn labelled(set: MetricSet) -> Vec<(BTreeMap<String, String>, f64)> {
        let families = set.into_families();
        families[0]
            .get_metric()
            .iter()
            .map(|m| {
                let labels = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_string(), l.value().to_string()))
                    .collect();
                (labels, m.get_counter().get_value())
            })
            .collect()
    }

    fn series_with(labels: &[(&str, &str)], all: &[(BTreeMap<String, String>, f64)]) -> f64 {
        all.iter()
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    #[test]
    fn kube_labels_come_from_the_containers_metadata_and_stay_under_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let (attribution, ctr, host) = container_tree(dir.path());
        let fake = Arc::new(Fake::default());
        let config: BTreeMap<String, MetadataValue> = [
            ("app".to_string(), "label:app".parse().unwrap()),
            ("workload".to_string(), MetadataValue::Workload),
        ]
        .into();
        let mut kube = KubeLabels::new(&config, fake.clone());
        let mut admission = Admission::new(100);
        let names = kube.names().to_vec();
        let scrape = |kube: &mut KubeLabels, admission: &mut Admission, n: u64| {
            let series = aggregate(
                [(ctr, 0, n), (ctr, 1, n), (host, 0, 1)],
                &attribution,
                kube,
                admission,
            );
            let mut set = MetricSet::new();
            emit(&series, &names, &mut set);
            labelled(set)
        };

        // Not known yet: the labels are there, empty; nothing waits.
        let all = scrape(&mut kube, &mut admission, 5);
        assert_eq!(
            series_with(&[("pod", "web-1"), ("app", ""), ("workload", "")], &all),
            10.0
        );
        assert_eq!(
            series_with(&[("pod", ""), ("app", ""), ("workload", "")], &all),
            1.0,
            "host series have the labels, empty"
        );

        fake.put(ID, "shop-web");
        let all = scrape(&mut kube, &mut admission, 6);
        assert_eq!(
            series_with(
                &[
                    ("namespace", "shop"),
                    ("pod", "web-1"),
                    // No /var/log/containers link in the fixture: the short id.
                    ("container", &ID[..12]),
                    ("app", "shop-web"),
                    ("workload", "web")
                ],
                &all
            ),
            12.0
        );
        // Looked up once per container per metadata generation, not per row or scrape.
        let asked = fake.asked.load(std::sync::atomic::Ordering::Relaxed);
        scrape(&mut kube, &mut admission, 7);
        assert_eq!(fake.asked.load(std::sync::atomic::Ordering::Relaxed), asked);

        // The pod went: the container keeps its last values rather than hop series.
        fake.remove(ID);
        let all = scrape(&mut kube, &mut admission, 8);
        assert_eq!(series_with(&[("app", "shop-web")], &all), 16.0);

        // Over the cap the overflow series has `other` in every label.
        let mut small = Admission::new(1);
        let mut kube = KubeLabels::new(&config, fake.clone());
        let series = aggregate(
            [(host, 0, 1), (ctr, 0, 2), (ctr, 1, 3)],
            &attribution,
            &mut kube,
            &mut small,
        );
        assert_eq!(series.len(), 2);
        let mut set = MetricSet::new();
        emit(&series, &names, &mut set);
        let all = labelled(set);
        assert_eq!(
            series_with(
                &[
                    ("syscall", OTHER),
                    ("pod", OTHER),
                    ("app", OTHER),
                    ("workload", OTHER)
                ],
                &all
            ),
            5.0
        );
    }
}
