//! What the enrich stage costs per record: the same records through a chain without and
//! with it (one pod per file, 110 pods × 3 containers, 20 labels and 20 annotations each,
//! the lookup an in-memory map as cheap as the cache's). Run:
//! `cargo run --release -p node-agent-logs --example enrich_bench [RECORDS]`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use node_agent_core::kube::{Found, Lease, PodLookup, PodMetadata, PodRef};
use node_agent_core::record::{LogRecord, SourceKind, SourceMeta, Stream};
use node_agent_logs::stages::Chain;
use node_agent_logs::stages::enrich::{Enrich, EnrichSettings};

struct Map(
    HashMap<String, Arc<PodMetadata>>,
    std::sync::atomic::AtomicUsize,
);

impl PodLookup for Map {
    fn generation(&self) -> u64 {
        1
    }
    fn is_current(&self) -> bool {
        true
    }
    fn find(&self, pod: &PodRef<'_>) -> Option<Found> {
        // Builds a fresh copy as the cache's conversion does.
        self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.get(pod.uid).map(|m| Found {
            metadata: Arc::new(PodMetadata::clone(m)),
            excluded: false,
        })
    }
    fn lease(&self, _uid: &str) -> Lease {
        Lease::none()
    }
}

fn main() {
    let records: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000_000);
    let kv = |prefix: &str| {
        (0..20)
            .map(|i| {
                (
                    format!("{prefix}.example.com/key-{i}"),
                    format!("value-{i}-{prefix}"),
                )
            })
            .collect()
    };
    let mut pods = HashMap::new();
    let mut sources = Vec::new();
    for p in 0..110u64 {
        let uid = format!("00000000-0000-4000-8000-{p:012}");
        pods.insert(
            uid.clone(),
            Arc::new(PodMetadata {
                labels: kv("label"),
                annotations: kv("annotation"),
                ..PodMetadata::default()
            }),
        );
        for c in 0..3u64 {
            sources.push(Arc::new(SourceMeta {
                kind: SourceKind::Pod,
                namespace: "shop".into(),
                pod: format!("pod-{p}"),
                pod_uid: uid.clone(),
                container: format!("c{c}"),
                node: "node-1".into(),
                path: PathBuf::from(format!("/var/log/pods/x/{p}/{c}/0.log")),
                file_id: p * 3 + c,
                kubernetes: None,
            }));
        }
    }
    let map = Arc::new(Map(pods, Default::default()));
    let lookup: Arc<dyn PodLookup> = map.clone();
    let message = "x".repeat(120);
    // Sources read a chunk of one file at a time: `run_len` records of a file in a row
    // (1: the worst case, every record from another file).
    let run = |chain: &mut Chain, run_len: usize| {
        let start = Instant::now();
        let mut n = 0usize;
        for i in 0..records {
            let s = &sources[(i / run_len) % sources.len()];
            let r = LogRecord::new(Arc::clone(s), 0, Stream::Stdout, i as u64, message.clone());
            chain.process(r, &mut |r| n += r.message.len());
        }
        std::hint::black_box(n);
        start.elapsed()
    };
    let per = |d: std::time::Duration| d.as_nanos() as f64 / records as f64;
    for run_len in [100, 1] {
        let plain = run(&mut Chain::new(Vec::new()), run_len);
        let enriched = run(
            &mut Chain::new(vec![Box::new(Enrich::new(
                Arc::clone(&lookup),
                EnrichSettings::default(),
            ))]),
            run_len,
        );
        println!(
            "{records} records over {} files, {run_len} in a row per file: without enrich {:.1} ns/record, with {:.1} ns/record (+{:.1} ns)",
            sources.len(),
            per(plain),
            per(enriched),
            per(enriched) - per(plain)
        );
    }
    println!(
        "lookups: {}",
        map.1.load(std::sync::atomic::Ordering::Relaxed)
    );
}
