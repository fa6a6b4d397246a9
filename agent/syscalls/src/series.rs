//! Map entries → `node_agent_syscalls_total` series with bounded cardinality.
//!
//! Counts of every non-container cgroup are summed into one host series per syscall, so
//! the series count is bounded by (containers + 1) × syscalls in use. On top of that a hard
//! cap: the first `max_series` distinct series are admitted and stay admitted for the life
//! of the collector; later ones are folded into a single `other` series. Admission is
//! sticky so that every series — including `other` — only ever grows between scrapes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::cgroups::{Attribution, ContainerLabels, Owner};
use super::names::syscall_name;
use node_agent_metrics::MetricSet;

/// Label value of all four labels of the overflow series.
pub const OTHER: &str = "other";

/// Identity of one exported series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    Syscall {
        nr: u64,
        owner: Owner,
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

/// Sums `(cgroup id, syscall nr, count)` rows into series. Rows are visited in sorted
/// order, so which series get admitted first does not depend on hash-map iteration order.
pub fn aggregate(
    rows: impl IntoIterator<Item = (u64, u64, u64)>,
    attribution: &Attribution,
    admission: &mut Admission,
) -> BTreeMap<SeriesKey, u64> {
    let mut by_key: BTreeMap<SeriesKey, u64> = BTreeMap::new();
    for (cgroup_id, nr, count) in rows {
        let key = SeriesKey::Syscall {
            nr,
            owner: attribution.owner(cgroup_id),
        };
        *by_key.entry(key).or_default() += count;
    }
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

/// Writes the series as `node_agent_syscalls_total`.
pub fn emit(series: &BTreeMap<SeriesKey, u64>, out: &mut MetricSet) {
    const NAME: &str = "node_agent_syscalls_total";
    const HELP: &str = "Syscalls entered, by syscall and container (host processes have empty namespace/pod/container).";
    let host = Arc::new(ContainerLabels {
        namespace: String::new(),
        pod: String::new(),
        container: String::new(),
    });
    for (key, count) in series {
        let number;
        let (syscall, labels) = match key {
            SeriesKey::Other => {
                out.counter(
                    NAME,
                    HELP,
                    &[
                        ("syscall", OTHER),
                        ("namespace", OTHER),
                        ("pod", OTHER),
                        ("container", OTHER),
                    ],
                    *count as f64,
                );
                continue;
            }
            SeriesKey::Syscall { nr, owner } => {
                let syscall = match syscall_name(*nr) {
                    Some(name) => name,
                    None => {
                        number = nr.to_string();
                        number.as_str()
                    }
                };
                let labels = match owner {
                    Owner::Host => &host,
                    Owner::Container(labels) => labels,
                };
                (syscall, labels)
            }
        };
        out.counter(
            NAME,
            HELP,
            &[
                ("syscall", syscall),
                ("namespace", &labels.namespace),
                ("pod", &labels.pod),
                ("container", &labels.container),
            ],
            *count as f64,
        );
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
            &mut admission,
        );
        assert_eq!(
            series.get(&SeriesKey::Syscall {
                nr: 0,
                owner: Owner::Host
            }),
            Some(&12)
        );
        assert_eq!(series.len(), 2);
    }

    #[test]
    fn cap_folds_new_series_into_other_and_admission_is_sticky() {
        let attribution = no_cgroups();
        let mut admission = Admission::new(2);
        let first = aggregate([(1, 5, 10), (1, 6, 20)], &attribution, &mut admission);
        assert_eq!(first.len(), 2);
        assert!(!first.contains_key(&SeriesKey::Other));
        // A lower syscall number shows up later: it must not evict an admitted series.
        let second = aggregate(
            [(1, 1, 3), (1, 5, 11), (1, 6, 21), (1, 7, 4)],
            &attribution,
            &mut admission,
        );
        assert_eq!(second.get(&SeriesKey::Other), Some(&7));
        assert_eq!(
            second.get(&SeriesKey::Syscall {
                nr: 5,
                owner: Owner::Host
            }),
            Some(&11)
        );
        // Series 5 disappears (its container died): its slot frees up, but the folded
        // series 1 stays folded and "other" keeps series 7's last count after it goes too.
        let third = aggregate(
            [(1, 1, 5), (1, 6, 22), (1, 8, 1)],
            &attribution,
            &mut admission,
        );
        assert_eq!(third.get(&SeriesKey::Other), Some(&(5 + 4)));
        assert!(third.contains_key(&SeriesKey::Syscall {
            nr: 8,
            owner: Owner::Host
        }));
    }

    #[test]
    fn emits_names_and_labels() {
        let attribution = no_cgroups();
        let mut admission = Admission::new(1);
        let nr = crate::names::syscall_nr("getppid").expect("getppid");
        let series = aggregate([(1, nr, 3), (1, 100_000, 2)], &attribution, &mut admission);
        let mut set = MetricSet::new();
        emit(&series, &mut set);
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
}
