//! `enrich`: Kubernetes metadata on the records of pod log files, from the node's metadata
//! cache ([`PodLookup`]), and the `node-agent.io/exclude*` annotations applied.
//!
//! # Per file, never per line
//! The first record of a file looks its pod and container up and builds one enriched
//! [`SourceMeta`] that every later record of the file shares (an `Arc` swap per record).
//! The lookup is repeated only when the cache's [`PodLookup::generation`] moved (a pod,
//! namespace or the node changed: labels edited, a container id reported), one atomic
//! load per record otherwise. A file holds a [`Lease`] on its pod from its first record
//! until it is finished ([`Stage::flush_file`]), so a deleted pod's backlog is still
//! enriched; a pod that left the cache meanwhile keeps the metadata the file had.
//!
//! # A file before its pod
//! kubelet creates a container's log file moments after the pod reaches this node, and
//! the pod watch can be a little behind. When the cache is current (listed and
//! watching) and does not know the pod, the file's records are held for up to
//! `hold_time` (default 2 s), re-checked whenever the cache changes, and released
//! enriched as soon as the pod arrives. Positions do not move past held records
//! ([`Stage::held_from`]), so a restart re-reads them. The hold is bounded: at most
//! `hold_max_bytes` across all files (a file that would exceed it is released at once),
//! and only the first `hold_time` of a file's life. When the cache is not current (API
//! server down or slow, never synced) nothing waits: records ship at once with the path's
//! metadata. Every record shipped without metadata counts in
//! `node_agent_k8s_metadata_misses_total`; when the pod shows up later, the file's
//! following records are enriched.
//!
//! # Exclusion
//! `node-agent.io/exclude: "true"` on a pod or its namespace, or the container named in
//! `node-agent.io/exclude-containers`, drops the records (counted in
//! `node_agent_k8s_excluded_records_total`); a dropped record counts as delivered.

use rustc_hash::FxHashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntGauge};

use node_agent_core::kube::{Found, Lease, PodLookup, PodRef};
use node_agent_core::record::{LogRecord, SourceKind, SourceMeta};
use node_agent_core::telemetry;

use super::Stage;

/// How often held files are re-checked (besides every cache change seen on a record).
const HOLD_POLL: Duration = Duration::from_millis(100);
/// Files tracked at most; past it, files not holding anything are forgotten (they look
/// their pod up again on their next record). The tail source keeps far fewer open.
const MAX_FILES: usize = 16_384;
/// Per-record overhead counted against `hold_max_bytes` besides the message.
const RECORD_OVERHEAD: usize = 128;

/// What the enrich stage is allowed to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrichSettings {
    /// How long a file's records wait for its pod to reach the cache (0: never wait).
    pub hold_time: Duration,
    /// Bytes of held records across all files.
    pub hold_max_bytes: usize,
    /// Whether this stage counts records in the `node_agent_k8s_*_records_total`
    /// counters: a source runs one lane (and enrich stage) per sink, and only its first
    /// lane counts, so a record counts once however many sinks it goes to.
    pub counted: bool,
}

impl Default for EnrichSettings {
    fn default() -> Self {
        Self {
            hold_time: Duration::from_secs(2),
            hold_max_bytes: 8 * 1024 * 1024,
            counted: true,
        }
    }
}

struct Metrics {
    misses: IntCounter,
    excluded: IntCounter,
    enriched: IntCounter,
    held: IntGauge,
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str| {
            telemetry::register(IntCounter::new(name, help).expect("static metric definition"))
        };
        Metrics {
            misses: counter(
                "node_agent_k8s_metadata_misses_total",
                "Pod log records shipped without Kubernetes metadata (the pod was not in the metadata cache).",
            ),
            excluded: counter(
                "node_agent_k8s_excluded_records_total",
                "Pod log records dropped by node-agent.io/exclude or node-agent.io/exclude-containers.",
            ),
            enriched: counter(
                "node_agent_k8s_enriched_records_total",
                "Pod log records shipped with Kubernetes metadata.",
            ),
            held: telemetry::register(
                IntGauge::new(
                    "node_agent_k8s_held_records",
                    "Pod log records waiting for their pod to reach the metadata cache.",
                )
                .expect("static metric definition"),
            ),
        }
    })
}

#[derive(Clone)]
enum Outcome {
    Enriched(Arc<SourceMeta>),
    Excluded,
    Missing,
}

struct Hold {
    until: Instant,
    records: Vec<LogRecord>,
    bytes: usize,
}

struct FileState {
    /// The cache generation `outcome` was looked up at.
    generation: u64,
    outcome: Outcome,
    hold: Option<Hold>,
    _lease: Lease,
}

/// The last file's outcome, for the next record of the same file (sources read a chunk
/// of one file at a time): no hashing at all then.
struct Last {
    /// Held, so that the pointer comparison cannot match a new allocation.
    source: Arc<SourceMeta>,
    generation: u64,
    outcome: Outcome,
}

/// The enrich stage (see the module docs).
pub struct Enrich {
    lookup: Arc<dyn PodLookup>,
    settings: EnrichSettings,
    files: FxHashMap<u64, FileState>,
    last: Option<Last>,
    held_bytes: usize,
    held_records: usize,
}

impl Enrich {
    pub fn new(lookup: Arc<dyn PodLookup>, settings: EnrichSettings) -> Self {
        Self {
            lookup,
            settings,
            files: FxHashMap::default(),
            last: None,
            held_bytes: 0,
            held_records: 0,
        }
    }

    fn resolve(&self, source: &Arc<SourceMeta>) -> Outcome {
        let pod = PodRef {
            namespace: &source.namespace,
            pod: &source.pod,
            uid: &source.pod_uid,
            container: &source.container,
        };
        match self.lookup.find(&pod) {
            Some(Found { excluded: true, .. }) => Outcome::Excluded,
            Some(Found { metadata, .. }) => Outcome::Enriched(Arc::new(SourceMeta {
                kubernetes: Some(metadata),
                ..SourceMeta::clone(source)
            })),
            None => Outcome::Missing,
        }
    }

    /// Looks the file's pod up again if the cache changed since; a pod no longer cached
    /// keeps what the file had.
    fn refresh(&mut self, file_id: u64, source: &Arc<SourceMeta>) {
        let generation = self.lookup.generation();
        if self
            .files
            .get(&file_id)
            .is_none_or(|f| f.generation == generation)
        {
            return;
        }
        let outcome = self.resolve(source);
        if let Some(f) = self.files.get_mut(&file_id) {
            f.generation = generation;
            if !matches!(outcome, Outcome::Missing) {
                f.outcome = outcome;
            }
        }
    }

    fn track(&mut self, source: &Arc<SourceMeta>) {
        if self.files.len() >= MAX_FILES {
            self.files.retain(|_, f| f.hold.is_some());
            self.last = None;
        }
        // Read before the lookup, so a change in between is seen on the next record.
        let generation = self.lookup.generation();
        let lease = if source.pod_uid.is_empty() {
            Lease::none()
        } else {
            self.lookup.lease(&source.pod_uid)
        };
        let outcome = self.resolve(source);
        let hold = (matches!(outcome, Outcome::Missing)
            && !self.settings.hold_time.is_zero()
            && self.held_bytes < self.settings.hold_max_bytes
            && self.lookup.is_current())
        .then(|| Hold {
            until: Instant::now() + self.settings.hold_time,
            records: Vec::new(),
            bytes: 0,
        });
        self.files.insert(
            source.file_id,
            FileState {
                generation,
                outcome,
                hold,
                _lease: lease,
            },
        );
    }

    /// Releases `file_id`'s held records with its current outcome.
    fn release(&mut self, file_id: u64, out: &mut Vec<LogRecord>) {
        let Some(f) = self.files.get_mut(&file_id) else {
            return;
        };
        let Some(hold) = f.hold.take() else {
            return;
        };
        let outcome = f.outcome.clone();
        self.held_bytes -= hold.bytes;
        self.held_records -= hold.records.len();
        metrics().held.sub(hold.records.len() as i64);
        for r in hold.records {
            apply(&outcome, r, out, self.settings.counted);
        }
    }
}

impl Drop for Enrich {
    fn drop(&mut self) {
        // The gauge is shared by every lane's stage: take back what this one held.
        metrics().held.sub(self.held_records as i64);
    }
}

fn apply(outcome: &Outcome, mut record: LogRecord, out: &mut Vec<LogRecord>, counted: bool) {
    let m = metrics();
    match outcome {
        Outcome::Enriched(meta) => {
            record.source = Arc::clone(meta);
            if counted {
                m.enriched.inc();
            }
            out.push(record);
        }
        Outcome::Excluded => {
            if counted {
                m.excluded.inc();
            }
        }
        Outcome::Missing => {
            if counted {
                m.misses.inc();
            }
            out.push(record);
        }
    }
}

impl Stage for Enrich {
    fn name(&self) -> &'static str {
        "enrich"
    }

    fn process(&mut self, record: LogRecord, out: &mut Vec<LogRecord>) {
        if record.source.kind != SourceKind::Pod || record.source.pod.is_empty() {
            out.push(record);
            return;
        }
        let generation = self.lookup.generation();
        if let Some(last) = &self.last
            && Arc::ptr_eq(&last.source, &record.source)
            && last.generation == generation
        {
            return apply(&last.outcome, record, out, self.settings.counted);
        }
        let source = Arc::clone(&record.source);
        let file_id = source.file_id;
        if self.files.contains_key(&file_id) {
            self.refresh(file_id, &source);
        } else {
            self.track(&source);
        }
        let Some(f) = self.files.get(&file_id) else {
            return apply(&Outcome::Missing, record, out, self.settings.counted);
        };
        if f.hold.is_some() && !matches!(f.outcome, Outcome::Missing) {
            // The pod arrived: what was held goes first, in file order.
            self.release(file_id, out);
        }
        let Some(f) = self.files.get_mut(&file_id) else {
            return apply(&Outcome::Missing, record, out, self.settings.counted);
        };
        if f.hold.is_none() {
            let outcome = f.outcome.clone();
            self.last = Some(Last {
                source,
                generation: f.generation,
                outcome: outcome.clone(),
            });
            return apply(&outcome, record, out, self.settings.counted);
        }
        let bytes = record.message.len() + RECORD_OVERHEAD;
        if self.held_bytes + bytes > self.settings.hold_max_bytes {
            self.release(file_id, out);
            return apply(&Outcome::Missing, record, out, self.settings.counted);
        }
        if let Some(hold) = f.hold.as_mut() {
            hold.bytes += bytes;
            hold.records.push(record);
            self.held_bytes += bytes;
            self.held_records += 1;
            metrics().held.inc();
        }
    }

    fn flush_due(&mut self, now: Instant, out: &mut Vec<LogRecord>) {
        if self.held_records == 0 {
            return;
        }
        let holding: Vec<(u64, Arc<SourceMeta>, Instant)> = self
            .files
            .iter()
            .filter_map(|(id, f)| {
                let hold = f.hold.as_ref()?;
                Some((*id, Arc::clone(&hold.records.first()?.source), hold.until))
            })
            .collect();
        for (id, source, until) in holding {
            self.refresh(id, &source);
            let found = self
                .files
                .get(&id)
                .is_some_and(|f| !matches!(f.outcome, Outcome::Missing));
            if found || now >= until {
                self.release(id, out);
            }
        }
    }

    fn flush_file(&mut self, file_id: u64, out: &mut Vec<LogRecord>) {
        let source = self
            .files
            .get(&file_id)
            .and_then(|f| f.hold.as_ref()?.records.first())
            .map(|r| Arc::clone(&r.source));
        if let Some(source) = source {
            self.refresh(file_id, &source);
        }
        self.release(file_id, out);
        // Drops the file's lease: a deleted pod may now leave the cache.
        self.files.remove(&file_id);
        if self
            .last
            .as_ref()
            .is_some_and(|l| l.source.file_id == file_id)
        {
            self.last = None;
        }
    }

    fn held_from(&self, file_id: u64) -> Option<u64> {
        self.files
            .get(&file_id)?
            .hold
            .as_ref()?
            .records
            .first()
            .map(|r| r.offset)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let until = self
            .files
            .values()
            .filter_map(|f| f.hold.as_ref().filter(|h| !h.records.is_empty()))
            .map(|h| h.until)
            .min()?;
        Some(until.min(Instant::now() + HOLD_POLL))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    use node_agent_core::kube::PodMetadata;
    use node_agent_core::record::Stream;

    /// An in-memory cache: pods by uid, a generation, leases counted.
    #[derive(Default)]
    struct FakeLookup {
        pods: Mutex<std::collections::HashMap<String, Found>>,
        generation: AtomicU64,
        current: AtomicBool,
        finds: AtomicUsize,
        leases: Arc<AtomicUsize>,
    }

    struct FakeLease(Arc<AtomicUsize>);
    impl Drop for FakeLease {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl FakeLookup {
        fn current() -> Arc<Self> {
            let l = Self::default();
            l.current.store(true, Ordering::SeqCst);
            Arc::new(l)
        }

        fn add(&self, uid: &str, app: &str, excluded: bool) {
            let metadata = Arc::new(PodMetadata {
                labels: [("app".to_string(), app.to_string())].into(),
                ..PodMetadata::default()
            });
            self.pods
                .lock()
                .unwrap()
                .insert(uid.into(), Found { metadata, excluded });
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl PodLookup for FakeLookup {
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
        fn is_current(&self) -> bool {
            self.current.load(Ordering::SeqCst)
        }
        fn find(&self, pod: &PodRef<'_>) -> Option<Found> {
            self.finds.fetch_add(1, Ordering::SeqCst);
            self.pods.lock().unwrap().get(pod.uid).cloned()
        }
        fn lease(&self, _uid: &str) -> Lease {
            self.leases.fetch_add(1, Ordering::SeqCst);
            Lease::new(FakeLease(Arc::clone(&self.leases)))
        }
    }

    fn source(file_id: u64, uid: &str) -> Arc<SourceMeta> {
        Arc::new(SourceMeta {
            kind: SourceKind::Pod,
            namespace: "ns".into(),
            pod: "pod".into(),
            pod_uid: uid.into(),
            container: "app".into(),
            node: "node".into(),
            path: PathBuf::from("/x/0.log"),
            file_id,
            kubernetes: None,
        })
    }

    fn record(s: &Arc<SourceMeta>, offset: u64) -> LogRecord {
        LogRecord::new(
            Arc::clone(s),
            0,
            Stream::Stdout,
            offset,
            format!("m{offset}"),
        )
    }

    fn app(r: &LogRecord) -> Option<&str> {
        r.source
            .kubernetes
            .as_ref()?
            .labels
            .get("app")
            .map(String::as_str)
    }

    #[test]
    fn enriches_with_one_lookup_per_file_and_follows_changes() {
        let lookup = FakeLookup::current();
        lookup.add("u1", "web", false);
        let mut stage = Enrich::new(lookup.clone(), EnrichSettings::default());
        let s = source(1, "u1");
        let mut out = Vec::new();
        for i in 0..100 {
            stage.process(record(&s, i), &mut out);
        }
        assert_eq!(out.len(), 100);
        assert!(out.iter().all(|r| app(r) == Some("web")));
        assert!(
            Arc::ptr_eq(&out[0].source, &out[99].source),
            "one shared SourceMeta"
        );
        assert_eq!(
            lookup.finds.load(Ordering::SeqCst),
            1,
            "never a lookup per line"
        );
        lookup.add("u1", "api", false);
        stage.process(record(&s, 100), &mut out);
        assert_eq!(app(&out[100]), Some("api"));
        assert_eq!(lookup.finds.load(Ordering::SeqCst), 2);
        assert_eq!(lookup.leases.load(Ordering::SeqCst), 1);
        stage.flush_file(1, &mut out);
        assert_eq!(
            lookup.leases.load(Ordering::SeqCst),
            0,
            "lease dropped when finished"
        );
    }

    #[test]
    fn holds_a_file_until_its_pod_arrives() {
        let lookup = FakeLookup::current();
        let mut stage = Enrich::new(lookup.clone(), EnrichSettings::default());
        let s = source(1, "late");
        let mut out = Vec::new();
        stage.process(record(&s, 0), &mut out);
        stage.process(record(&s, 10), &mut out);
        assert!(out.is_empty());
        assert_eq!(stage.held_from(1), Some(0));
        assert!(stage.next_deadline().is_some());
        stage.flush_due(Instant::now(), &mut out);
        assert!(out.is_empty(), "still within hold_time and still unknown");
        lookup.add("late", "web", false);
        stage.flush_due(Instant::now(), &mut out);
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 10]);
        assert!(out.iter().all(|r| app(r) == Some("web")));
        assert_eq!(stage.held_from(1), None);
        assert_eq!(stage.next_deadline(), None);
    }

    #[test]
    fn ships_after_the_hold_and_enriches_once_the_pod_is_known() {
        let lookup = FakeLookup::current();
        let mut stage = Enrich::new(lookup.clone(), EnrichSettings::default());
        let s = source(1, "late");
        let mut out = Vec::new();
        stage.process(record(&s, 0), &mut out);
        let misses = metrics().misses.get();
        let later = Instant::now() + EnrichSettings::default().hold_time;
        stage.flush_due(later, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(app(&out[0]), None);
        assert!(metrics().misses.get() > misses);
        // Not held again: the file ships at once from now on.
        stage.process(record(&s, 10), &mut out);
        assert_eq!(out.len(), 2);
        lookup.add("late", "web", false);
        stage.process(record(&s, 20), &mut out);
        assert_eq!(app(&out[2]), Some("web"));
    }

    #[test]
    fn does_not_wait_while_the_cache_is_not_current() {
        let lookup = Arc::new(FakeLookup::default());
        let mut stage = Enrich::new(lookup.clone(), EnrichSettings::default());
        let s = source(1, "u1");
        let mut out = Vec::new();
        stage.process(record(&s, 0), &mut out);
        assert_eq!(out.len(), 1, "API server down: ship with the path metadata");
        assert_eq!(app(&out[0]), None);
        lookup.add("u1", "web", false);
        stage.process(record(&s, 10), &mut out);
        assert_eq!(app(&out[1]), Some("web"), "enrichment resumes");
    }

    #[test]
    fn holding_is_bounded_by_bytes() {
        let lookup = FakeLookup::current();
        let mut stage = Enrich::new(
            lookup.clone(),
            EnrichSettings {
                hold_time: Duration::from_secs(60),
                hold_max_bytes: 3 * (RECORD_OVERHEAD + 2),
                counted: true,
            },
        );
        let s = source(1, "late");
        let mut out = Vec::new();
        for i in 0..3 {
            stage.process(record(&s, i), &mut out);
        }
        assert!(out.is_empty());
        stage.process(record(&s, 3), &mut out);
        assert_eq!(
            out.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(stage.held_from(1), None);
        // A new file finds the budget free again but the old one does not hold again.
        stage.process(record(&s, 4), &mut out);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn a_finished_file_releases_what_it_held() {
        let lookup = FakeLookup::current();
        let mut stage = Enrich::new(lookup.clone(), EnrichSettings::default());
        let s = source(7, "late");
        let mut out = Vec::new();
        stage.process(record(&s, 0), &mut out);
        assert!(out.is_empty());
        stage.flush_file(7, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(lookup.leases.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn excluded_containers_are_dropped_and_other_sources_pass() {
        let lookup = FakeLookup::current();
        lookup.add("u1", "web", true);
        let mut stage = Enrich::new(lookup.clone(), EnrichSettings::default());
        let mut out = Vec::new();
        stage.process(record(&source(1, "u1"), 0), &mut out);
        assert!(out.is_empty());
        let journal = Arc::new(SourceMeta {
            kind: SourceKind::Journal,
            pod: String::new(),
            ..SourceMeta::clone(&source(2, ""))
        });
        stage.process(record(&journal, 0), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            lookup.finds.load(Ordering::SeqCst),
            1,
            "no lookup for the journal"
        );
    }
}
