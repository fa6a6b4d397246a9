//! `cargo xtask bench logs [--size 1GiB] [--dir PATH] [--keep]`: generates a backlog of CRI
//! pod logs, runs the real pipeline (discovery, read, parse, enrich, batch, ack,
//! checkpoint) into a null sink, and prints throughput, MB per CPU-second and peak RSS.
//! Targets: ≥ 100 MB per CPU-second, peak RSS ≤ 64 MiB. `--processors` adds a multiline
//! (auto), JSON parse, filter and redaction chain (see [`PROCESSORS`]).
//!
//! `--traces PER_MILLE` makes that share of the records multi-line Java stack traces
//! (written one line per message, as a runtime does; joined again by `--processors`).
//! `--sink es` ships through the real Elasticsearch sink to a null `_bulk` receiver in a
//! child process (its CPU is not counted) instead of the in-process null sink.
//! `--compare` runs the pipeline twice over the same backlog, processing off then on, each
//! in a fresh process (peak RSS is per process), and prints both. The processing target:
//! `--size 1GiB --traces 200 --sink es --compare`: ≥ 100 MB per CPU-second and peak RSS
//! ≤ 48 MiB with processing on.
//!
//! `--enrich` (Elasticsearch sink unless `--sink null`): the backlog's files are the
//! containers of the fake API server's full node (`node_agent_tests::kube_bench`: 110
//! pods × 3 containers, 20 labels + 20 annotations each); the pipeline runs five times,
//! each in a fresh process: without Kubernetes metadata, with a cache synced against a
//! server holding only the node and namespaces (the client's own memory), with the full
//! node, full without pod annotations, and full with only the everyday keys (7 labels:
//! app, pod-template-hash, app.kubernetes.io/*; 4 annotations). Prints CPU, its change
//! against off, RSS once the cache is synced (before the pipeline starts) and peak RSS
//! side by side. The API
//! servers run in child processes (their CPU is not counted). Target: CPU with the full
//! cache within +10% of off: `--size 1GiB --containers 330 --enrich`.
//!
//! `--checkpoint-min-interval DURATION` sets `logs.checkpoint_min_interval` (`0s`: a
//! checkpoint write after every acknowledgement, the behaviour before that setting).
//!
//! `--one-sink-down SECS`: two null sinks, one of them down for the first SECS seconds
//! (its own delivery lane stalls; the files are its buffer). Prints the healthy sink's
//! throughput while the other is down, RSS over the outage (it must stay flat), and the
//! time the recovered sink needs to catch up.
//!
//! `cargo xtask bench logs --idle [SECS] [--pods 100] [--containers-per-pod 5]`: the idle
//! tax every node pays. Runs the release agent binary over that many quiet containers
//! (nothing written after start) and prints its CPU ticks per minute, share of a core and
//! RSS. Target ≤ 0.2% of a core.
//!
//! Figures are only meaningful optimized: a debug build re-runs itself with `--release`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use node_agent::core::record::LogRecord;
use node_agent::logs::LogsConfig;
use node_agent::sinks::{CountedFuture, DeliverFuture, Sink, SinkError};
use node_agent_tests::kube_bench::{self, Endpoint};
use node_agent_tests::loggen::{ContainerLog, Format, LineMix};
use tokio_util::sync::CancellationToken;

use crate::selfstat::{cpu_seconds, status_kib, usage};
use crate::size::{MIB, parse_size};

struct Options {
    size: u64,
    dir: Option<PathBuf>,
    keep: bool,
    containers: usize,
    /// Seconds the sink is down at the start (reading must pause, memory stay flat).
    outage: Option<u64>,
    /// Seconds a second sink is down while the first ships.
    one_down: Option<u64>,
    /// Run the records through [`PROCESSORS`].
    processors: bool,
    /// Per mille of records that are multi-line Java stack traces.
    traces_per_mille: u32,
    /// Deliver through the Elasticsearch sink (to a null receiver) instead of a null sink.
    es: bool,
    /// Processing off, then on, in separate processes over one backlog.
    compare: bool,
    /// Kubernetes enrichment off, then on (an empty and a full metadata cache from the
    /// fake API server), in separate processes over one backlog of the fixture's pods.
    enrich: bool,
    /// Child side: the fake API server to sync a metadata cache with (an
    /// [`Endpoint`] line) before the pipeline starts.
    kube_endpoint: Option<String>,
    /// Child side: keep no pod annotations on the records (`pod_annotations.exclude: ["*"]`).
    kube_annotations_off: bool,
    /// Child side: keep only the fixture's everyday keys (7 labels: app, pod-template-hash,
    /// app.kubernetes.io/*; 4 annotations), not its `example.com/*` padding.
    kube_typical: bool,
    /// `logs.checkpoint_min_interval` (default: the agent's).
    checkpoint_min_interval: Option<Duration>,
}

/// What the generator wrote.
#[derive(Debug, Clone, Copy)]
struct Backlog {
    bytes: u64,
    /// Messages on disk: the records without multiline joining.
    lines: u64,
    /// Records once every stack trace is joined into one.
    joined: u64,
}

/// The `--processors` chain: every line passes multiline (each is held until the next),
/// the JSON lines are parsed, one filter (that drops nothing here, so every message is
/// still counted) and the built-in redactions.
const PROCESSORS: &str = include_str!("../../agent/logs/examples/bench-processors.json");

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut o = Options {
        size: 1024 * MIB,
        dir: None,
        keep: false,
        containers: 8,
        outage: None,
        one_down: None,
        processors: false,
        traces_per_mille: 0,
        es: false,
        compare: false,
        enrich: false,
        kube_endpoint: None,
        kube_annotations_off: false,
        kube_typical: false,
        checkpoint_min_interval: None,
    };
    let mut sink_given = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--size" => o.size = parse_size(it.next().context("--size needs a value")?)?,
            "--dir" => o.dir = Some(PathBuf::from(it.next().context("--dir needs a value")?)),
            "--containers" => {
                o.containers = it.next().context("--containers needs a value")?.parse()?
            }
            "--keep" => o.keep = true,
            "--processors" => o.processors = true,
            "--compare" => o.compare = true,
            "--enrich" => o.enrich = true,
            "--kube-endpoint" => {
                o.kube_endpoint = Some(
                    it.next()
                        .context("--kube-endpoint needs a value")?
                        .to_string(),
                )
            }
            "--kube-annotations-off" => o.kube_annotations_off = true,
            "--kube-typical" => o.kube_typical = true,
            "--checkpoint-min-interval" => {
                let value = it
                    .next()
                    .context("--checkpoint-min-interval needs a duration")?;
                o.checkpoint_min_interval = Some(
                    node_agent::core::duration::parse(value)
                        .with_context(|| format!("--checkpoint-min-interval {value:?}"))?,
                );
            }
            "--traces" => {
                o.traces_per_mille = it.next().context("--traces needs a per mille")?.parse()?
            }
            "--sink" => {
                sink_given = true;
                match it.next().copied() {
                    Some("es") => o.es = true,
                    Some("null") => o.es = false,
                    other => bail!("--sink is es or null, not {other:?}"),
                }
            }
            "--outage" => o.outage = Some(it.next().context("--outage needs seconds")?.parse()?),
            "--one-sink-down" => {
                o.one_down = Some(
                    it.next()
                        .context("--one-sink-down needs seconds")?
                        .parse()?,
                )
            }
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench logs [--size 1GiB] [--containers 8] [--dir PATH] [--keep] [--outage SECS] [--one-sink-down SECS] [--processors] [--traces PER_MILLE] [--sink null|es] [--compare] [--enrich]"
            ),
        }
    }
    // The enrichment comparison is about what the metadata costs the Elasticsearch
    // documents, so that is its default sink.
    if o.enrich && !sink_given {
        o.es = true;
    }
    anyhow::ensure!(
        !(o.enrich && o.compare),
        "--enrich and --compare are separate comparisons"
    );
    anyhow::ensure!(
        !o.enrich || o.containers <= kube_bench::PODS * kube_bench::CONTAINERS,
        "--enrich lays the files out as the fixture's containers: at most {}",
        kube_bench::PODS * kube_bench::CONTAINERS
    );
    anyhow::ensure!(
        o.size > 0 && o.containers > 0,
        "size and containers must be > 0"
    );
    anyhow::ensure!(o.traces_per_mille <= 1000, "--traces is at most 1000");
    anyhow::ensure!(
        !(o.es && (o.outage.is_some() || o.one_down.is_some())),
        "--sink es does not combine with --outage or --one-sink-down (null sinks)"
    );
    Ok(o)
}

/// Counts records and confirms at once, or refuses everything while `down`.
struct NullSink {
    name: &'static str,
    records: AtomicU64,
    down: AtomicBool,
}

impl NullSink {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            records: AtomicU64::new(0),
            down: AtomicBool::new(false),
        }
    }
}

impl Sink for NullSink {
    fn name(&self) -> &str {
        self.name
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        _cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        if self.down.load(Ordering::Relaxed) {
            return Box::pin(async { Err(SinkError::Failed("simulated outage".into())) });
        }
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// A real sink, counting what it confirmed (the pipeline's end condition).
struct Counting {
    inner: Arc<dyn Sink>,
    records: AtomicU64,
}

impl Sink for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> DeliverFuture<'a> {
        Box::pin(async move { self.deliver_counted(records, cancel).await.map(|_| ()) })
    }

    fn deliver_counted<'a>(
        &'a self,
        records: &'a [LogRecord],
        cancel: &'a CancellationToken,
    ) -> CountedFuture<'a> {
        Box::pin(async move {
            let refused = self.inner.deliver_counted(records, cancel).await?;
            self.records
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            Ok(refused)
        })
    }

    fn max_in_flight(&self) -> Option<usize> {
        self.inner.max_in_flight()
    }
}

/// Lines of one generated Java stack trace (5–24 frames, half with a cause), varied by
/// `r`: what a failing Spring service writes to stderr.
fn java_trace(r: u64) -> Vec<String> {
    const FRAMES: [&str; 8] = [
        "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
        "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:166)",
        "com.acme.shop.checkout.PaymentService.charge(PaymentService.java:88)",
        "com.acme.shop.checkout.CheckoutController.submit(CheckoutController.java:41)",
        "java.base/jdk.internal.reflect.DirectMethodHandleAccessor.invoke(DirectMethodHandleAccessor.java:103)",
        "org.apache.tomcat.util.net.NioEndpoint$SocketProcessor.doRun(NioEndpoint.java:1744)",
        "java.base/java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1144)",
        "java.base/java.lang.Thread.run(Thread.java:1583)",
    ];
    let frames = 5 + (r % 20) as usize;
    let mut lines = vec![
        format!(
            "2024-05-01 12:00:00.{:03} ERROR [http-nio-8080-exec-{}] c.a.s.CheckoutController : payment for order {} failed",
            r % 1000,
            (r >> 10) % 200,
            r >> 20
        ),
        "java.lang.IllegalStateException: card declined by issuer".to_string(),
    ];
    for i in 0..frames {
        lines.push(format!(
            "\tat {}",
            FRAMES[(i + (r >> 5) as usize) % FRAMES.len()]
        ));
    }
    if (r >> 40).is_multiple_of(2) {
        lines.push("Caused by: java.net.SocketTimeoutException: Read timed out".to_string());
        lines.push(format!("\tat {}", FRAMES[2]));
        lines.push(format!("\t... {} more", frames - 1));
    }
    lines
}

/// Keeps the sink down for `secs` while sampling RSS: with the files as the buffer,
/// reading pauses at the in-flight bound and memory must stay flat.
async fn outage_phase(sink: &NullSink, secs: u64) {
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(status_kib("VmRSS:").unwrap_or(0));
    }
    let delivered = sink.records.load(Ordering::Relaxed);
    sink.down.store(false, Ordering::Relaxed);
    let mib = |k: u64| k as f64 / 1024.0;
    let (min, max) = (
        samples.iter().min().copied().unwrap_or(0),
        samples.iter().max().copied().unwrap_or(0),
    );
    let last_min = samples
        .iter()
        .rev()
        .take(samples.len().div_ceil(10))
        .copied()
        .max()
        .unwrap_or(0);
    println!("sink outage of {secs} s: {delivered} records delivered meanwhile (expected 0)");
    println!(
        "  RSS during outage: min {:.1} MiB, max {:.1} MiB, max over the last tenth {:.1} MiB (flat = no growth)",
        mib(min),
        mib(max),
        mib(last_min)
    );
}

/// Keeps `down` down for `secs` while `healthy` ships the backlog: prints the healthy
/// sink's throughput and CPU while the other is down, RSS over the outage, then how long
/// the recovered sink takes to catch up.
async fn one_down_phase(healthy: &NullSink, down: &NullSink, secs: u64, lines: u64, bytes: u64) {
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let mut samples = Vec::new();
    let mut healthy_done: Option<(f64, f64)> = None;
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        samples.push(status_kib("VmRSS:").unwrap_or(0));
        if healthy_done.is_none() && healthy.records.load(Ordering::Relaxed) >= lines {
            healthy_done = Some((start.elapsed().as_secs_f64(), cpu_seconds() - cpu0));
        }
    }
    let mb = bytes as f64 / 1e6;
    let shipped = healthy.records.load(Ordering::Relaxed);
    println!(
        "one sink down for {secs} s: the down sink got {} records (expected 0)",
        down.records.load(Ordering::Relaxed)
    );
    match healthy_done {
        Some((wall, cpu)) => println!(
            "  healthy sink shipped all {shipped} messages in {wall:.2} s → {:.1} MB/s, {:.1} MB per CPU-second (whole process)",
            mb / wall,
            mb / cpu
        ),
        None => println!(
            "  healthy sink shipped {shipped} of {lines} messages during the outage (make it longer for the full backlog)"
        ),
    }
    let mib = |k: u64| k as f64 / 1024.0;
    let tail = samples.len().div_ceil(4);
    let first: u64 = samples.iter().take(tail).copied().max().unwrap_or(0);
    let last: u64 = samples.iter().rev().take(tail).copied().max().unwrap_or(0);
    println!(
        "  RSS during the outage: max over the first quarter {:.1} MiB, over the last quarter {:.1} MiB (flat = no growth)",
        mib(first),
        mib(last)
    );
    down.down.store(false, Ordering::Relaxed);
    let back = Instant::now();
    while down.records.load(Ordering::Relaxed) < lines && back.elapsed() < Duration::from_secs(3600)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "  recovered sink caught up with {} messages in {:.2} s (re-read from the files)",
        down.records.load(Ordering::Relaxed),
        back.elapsed().as_secs_f64()
    );
}

/// Writes the backlog.
fn generate(pods_dir: &Path, o: &Options) -> anyhow::Result<Backlog> {
    let mix = LineMix {
        stderr_per_mille: 100,
        json_per_mille: 200,
        long_per_mille: 20,
        payload_bytes: 150,
        split_bytes: 512,
    };
    let mut logs = (0..o.containers)
        .map(|i| {
            let mut l = if o.enrich {
                // The fake API server's pods: file i is pod i's first container, then
                // the pods' second containers, and so on.
                let pod = i % kube_bench::PODS;
                ContainerLog::create_with_uid(
                    pods_dir,
                    &kube_bench::pod_namespace(pod),
                    &kube_bench::pod_name(pod),
                    &kube_bench::pod_uid(pod),
                    kube_bench::CONTAINER_NAMES[i / kube_bench::PODS % kube_bench::CONTAINERS],
                    Format::Cri,
                )?
            } else {
                ContainerLog::create(pods_dir, "bench", &format!("pod{i}"), "app", Format::Cri)?
            };
            l.set_track_expected(false);
            Ok(l)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let per_file = o.size / o.containers as u64;
    // Lines a joined trace no longer counts as records.
    let mut folded = 0u64;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for l in &mut logs {
        loop {
            for _ in 0..1000 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if (rng % 1000) < u64::from(o.traces_per_mille) {
                    let trace = java_trace(rng >> 10);
                    let lines: Vec<&str> = trace.iter().map(String::as_str).collect();
                    l.write_messages(true, &lines, mix.split_bytes)?;
                    folded += lines.len() as u64 - 1;
                } else {
                    l.write_line(&mix)?;
                }
            }
            l.flush()?;
            if std::fs::metadata(l.path())?.len() >= per_file {
                break;
            }
        }
    }
    let mut bytes = 0;
    for l in &logs {
        bytes += std::fs::metadata(l.path())?.len();
    }
    let lines: u64 = logs.iter().map(|l| l.lines_written()).sum();
    Ok(Backlog {
        bytes,
        lines,
        joined: lines - folded,
    })
}

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("bench logs: re-running optimized (cargo run --release -p xtask)");
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "run",
                    "--release",
                    "--quiet",
                    "--package",
                    "xtask",
                    "--",
                    "bench",
                    "logs",
                ])
                .args(args)
                .status()
                .context("running cargo")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    if let ["--idle", rest @ ..] = args {
        return idle(rest);
    }
    if let ["--generate-into", dir, rest @ ..] = args {
        // Child process: generation must not count towards the pipeline's peak RSS.
        let o = parse_args(rest)?;
        let b = generate(Path::new(dir), &o)?;
        println!("{} {} {}", b.bytes, b.lines, b.joined);
        return Ok(());
    }
    if let ["--serve-kube", dir, pods] = args {
        // Child process of `--enrich`: the fake API server, its CPU and memory not ours.
        let pods: usize = pods.parse().context("--serve-kube pods")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        return runtime.block_on(kube_bench::serve_fixture_with(Path::new(dir), pods));
    }
    if let ["--pipeline-only", root, backlog, rest @ ..] = args {
        // Child process of `--compare`: one pipeline run, its own peak RSS.
        let o = parse_args(rest)?;
        return pipeline(&o, Path::new(root), parse_backlog(backlog)?).map(|_| ());
    }
    let o = parse_args(args)?;
    let tmp;
    let root = match &o.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new().prefix("bench-logs-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let pods_dir = root.join("pods");
    println!(
        "generating {} MiB of CRI logs in {} containers under {} ({}‰ of records Java stack traces)",
        o.size / MIB,
        o.containers,
        pods_dir.display(),
        o.traces_per_mille
    );
    let t = Instant::now();
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "logs", "--generate-into"])
        .arg(&pods_dir)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the generator")?;
    anyhow::ensure!(out.status.success(), "generator failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog = parse_backlog(text.trim())?;
    println!(
        "  {:.0} MiB, {} messages ({} records with traces joined) in {:.1}s",
        backlog.bytes as f64 / MIB as f64,
        backlog.lines,
        backlog.joined,
        t.elapsed().as_secs_f64()
    );

    let encoded = format!("{} {} {}", backlog.bytes, backlog.lines, backlog.joined);
    if o.compare {
        let passed: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| !matches!(*a, "--compare" | "--processors"))
            .collect();
        let results = run_variants(
            &root,
            &encoded,
            &passed,
            &[("off", None, &[]), ("on", None, &["--processors"])],
        )?;
        println!(
            "\nprocessing (multiline+json+filter+redact) off vs on, {:.0} MiB, {}‰ traces, → {}:",
            backlog.bytes as f64 / MIB as f64,
            o.traces_per_mille,
            if o.es {
                "Elasticsearch sink"
            } else {
                "null sink"
            }
        );
        println!(
            "  {:<16} {:>10} {:>12} {:>14}",
            "processing", "MB/s", "MB/CPU-s", "peak RSS MiB"
        );
        for (label, r) in results {
            println!(
                "  {label:<16} {:>10.1} {:>12.1} {:>14.1}",
                r.mb_s, r.mb_cpu, r.peak_mib
            );
        }
        println!("  (targets with processing on: ≥ 100 MB/CPU-s, peak RSS ≤ 48 MiB)");
    } else if o.enrich {
        enrich_compare(&o, args, &root, &encoded, backlog)?;
    } else {
        pipeline(&o, &root, backlog)?;
    }
    if o.keep {
        if let Some(d) = &o.dir {
            println!("kept {}", d.display());
        }
    } else if o.dir.is_some() {
        std::fs::remove_dir_all(root.join("pods")).ok();
        std::fs::remove_dir_all(root.join("state")).ok();
    }
    Ok(())
}

/// One child pipeline run's `RESULT` line.
#[derive(Debug, Clone, Copy)]
struct RunResult {
    mb_s: f64,
    mb_cpu: f64,
    cpu_s: f64,
    peak_mib: f64,
    /// VmRSS once everything but the pipeline is up (the metadata cache synced).
    ready_mib: f64,
    /// Request bodies the sinks sent.
    body_mb: f64,
    user_s: f64,
    sys_s: f64,
    records: f64,
}

/// Runs the pipeline once per variant, each in a fresh process over the same backlog
/// (`label`, the fake API server to sync with, extra arguments), and returns the figures.
fn run_variants(
    root: &Path,
    encoded: &str,
    passed: &[&str],
    variants: &[(&'static str, Option<&Endpoint>, &[&str])],
) -> anyhow::Result<Vec<(&'static str, RunResult)>> {
    let mut results = Vec::new();
    for (label, endpoint, extra) in variants {
        // Each run starts without positions: the whole backlog again.
        std::fs::remove_dir_all(root.join("state")).ok();
        let mut child = std::process::Command::new(std::env::current_exe()?);
        child
            .args(["bench", "logs", "--pipeline-only"])
            .arg(root)
            .arg(encoded)
            .args(passed)
            .args(*extra);
        if let Some(endpoint) = endpoint {
            child.arg("--kube-endpoint").arg(endpoint.line());
        }
        let out = child
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running the pipeline")?;
        let text = String::from_utf8_lossy(&out.stdout);
        print!("{text}");
        anyhow::ensure!(out.status.success(), "pipeline run {label} failed");
        let r = text
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .and_then(|r| {
                let v: Vec<f64> = r.split(' ').filter_map(|x| x.parse().ok()).collect();
                (v.len() == 9).then(|| RunResult {
                    mb_s: v[0],
                    mb_cpu: v[1],
                    peak_mib: v[2],
                    ready_mib: v[3],
                    cpu_s: v[4],
                    body_mb: v[5] / 1e6,
                    user_s: v[6],
                    sys_s: v[7],
                    records: v[8],
                })
            })
            .context("pipeline run printed no RESULT line")?;
        results.push((*label, r));
    }
    Ok(results)
}

/// The fake API server in a child process, serving until dropped.
struct ApiChild {
    child: std::process::Child,
    endpoint: Endpoint,
}

impl ApiChild {
    fn spawn(dir: &Path, pods: usize) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        std::fs::create_dir_all(dir)?;
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["bench", "logs", "--serve-kube"])
            .arg(dir)
            .arg(pods.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the fake API server")?;
        let stdout = child.stdout.take().context("API server stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        match Endpoint::parse(&line) {
            Ok(endpoint) => Ok(Self { child, endpoint }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.context("the fake API server's first line"))
            }
        }
    }
}

impl Drop for ApiChild {
    fn drop(&mut self) {
        // Closing stdin tells the child to exit.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// `--enrich`: the pipeline without Kubernetes metadata, with an empty cache (the node
/// and namespaces only: the client's own cost), with the full node's metadata (110 pods ×
/// 3 containers, 20 labels + 20 annotations each), and full without annotations.
fn enrich_compare(
    o: &Options,
    args: &[&str],
    root: &Path,
    encoded: &str,
    backlog: Backlog,
) -> anyhow::Result<()> {
    let passed: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !matches!(*a, "--enrich"))
        .chain(o.es.then_some(["--sink", "es"]).into_iter().flatten())
        .collect();
    let empty = ApiChild::spawn(&root.join("kube-empty"), 0)?;
    let full = ApiChild::spawn(&root.join("kube-full"), kube_bench::PODS)?;
    let results = run_variants(
        root,
        encoded,
        &passed,
        &[
            ("off", None, &[]),
            ("empty cache", Some(&empty.endpoint), &[]),
            ("full cache", Some(&full.endpoint), &[]),
            (
                "full, no annotations",
                Some(&full.endpoint),
                &["--kube-annotations-off"],
            ),
            (
                "full, typical keys",
                Some(&full.endpoint),
                &["--kube-typical"],
            ),
        ],
    )?;
    drop((empty, full));
    println!(
        "\nKubernetes enrichment off vs on, {:.0} MiB in {} files of the fixture's pods ({} pods × {} containers, {} labels + {} annotations each), → {}; loadavg {}:",
        backlog.bytes as f64 / MIB as f64,
        o.containers,
        kube_bench::PODS,
        kube_bench::CONTAINERS,
        kube_bench::LABELS,
        kube_bench::ANNOTATIONS,
        if o.es {
            "Elasticsearch sink"
        } else {
            "null sink"
        },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "  {:<22} {:>8} {:>10} {:>8} {:>7} {:>7} {:>10} {:>9} {:>9} {:>15} {:>13}",
        "enrichment",
        "MB/s",
        "MB/CPU-s",
        "CPU s",
        "user s",
        "sys s",
        "CPU vs off",
        "sent MB",
        "B/record",
        "RSS ready MiB",
        "peak RSS MiB"
    );
    let off_cpu = results.first().map(|(_, r)| r.cpu_s).unwrap_or(0.0);
    for (label, r) in &results {
        println!(
            "  {label:<22} {:>8.1} {:>10.1} {:>8.2} {:>7.2} {:>7.2} {:>+9.1}% {:>9.0} {:>9.0} {:>15.1} {:>13.1}",
            r.mb_s,
            r.mb_cpu,
            r.cpu_s,
            r.user_s,
            r.sys_s,
            (r.cpu_s / off_cpu - 1.0) * 100.0,
            r.body_mb,
            r.body_mb * 1e6 / r.records.max(1.0),
            r.ready_mib,
            r.peak_mib
        );
    }
    println!(
        "  (target: CPU with the full cache within +10% of off; RSS ready = before the pipeline starts, the cache synced)"
    );
    Ok(())
}

fn parse_backlog(text: &str) -> anyhow::Result<Backlog> {
    let v: Vec<u64> = text
        .split(' ')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("generator output {text:?}"))?;
    match v[..] {
        [bytes, lines, joined] => Ok(Backlog {
            bytes,
            lines,
            joined,
        }),
        _ => bail!("generator output {text:?}"),
    }
}

/// Runs the pipeline over the backlog in `root/pods` until every record was delivered;
/// prints the figures and a `RESULT MB/s MB/CPU-s peak-RSS-MiB ready-RSS-MiB CPU-s` line.
fn pipeline(o: &Options, root: &Path, backlog: Backlog) -> anyhow::Result<()> {
    let Backlog { bytes, lines, .. } = backlog;
    // Joined traces are fewer records; without multiline each line is one.
    let records = if o.processors {
        backlog.joined
    } else {
        backlog.lines
    };
    let rss_before = status_kib("VmRSS:").unwrap_or(0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sink = Arc::new(NullSink::new("null"));
    sink.down.store(o.outage.is_some(), Ordering::Relaxed);
    let down_sink = Arc::new(NullSink::new("null-down"));
    down_sink
        .down
        .store(o.one_down.is_some(), Ordering::Relaxed);
    // Kept alive for the run; its CPU is the child's, not counted here.
    let receiver = if o.es {
        Some(crate::bench_sinks::NullReceiver::spawn()?)
    } else {
        None
    };
    let es = match &receiver {
        Some(receiver) => {
            let configs: Vec<node_agent::sinks::SinkConfig> =
                serde_json::from_value(serde_json::json!([
                    {"type": "elasticsearch", "name": "es", "url": receiver.url}
                ]))
                .context("elasticsearch sink config")?;
            let built = node_agent::sinks::build_all_in(
                &configs,
                &node_agent::identity::NodeIdentity::default(),
                &root.join("state"),
            )?;
            let inner = built
                .into_iter()
                .next()
                .context("elasticsearch sink not built")?;
            Some(Arc::new(Counting {
                inner,
                records: AtomicU64::new(0),
            }))
        }
        None => None,
    };
    let delivered = || match &es {
        Some(es) => es.records.load(Ordering::Relaxed),
        None => sink.records.load(Ordering::Relaxed),
    };
    let mut sinks = match &es {
        Some(es) => vec![es.clone() as Arc<dyn Sink>],
        None => vec![sink.clone() as Arc<dyn Sink>],
    };
    if o.one_down.is_some() {
        sinks.push(down_sink.clone() as Arc<dyn Sink>);
    }
    let config = LogsConfig {
        pods_dir: root.join("pods"),
        state_dir: root.join("state"),
        processors: if o.processors {
            serde_json::from_str(PROCESSORS).context("bench processors")?
        } else {
            Vec::new()
        },
        checkpoint_min_interval: o
            .checkpoint_min_interval
            .unwrap_or(LogsConfig::default().checkpoint_min_interval),
        ..LogsConfig::default()
    };
    // The metadata cache syncs before the pipeline starts (as the agent waits up to
    // `kubernetes.hold_time` for it) and outside the measured CPU: the comparison is
    // about what enrichment costs per record, not the one list at start.
    let kube_stop = CancellationToken::new();
    let _kube_stop = kube_stop.clone().drop_guard();
    let kube_dir = tempfile::tempdir()?;
    let enrichment = match &o.kube_endpoint {
        Some(line) => {
            let endpoint = Endpoint::parse(line)?;
            let mut kube = endpoint.config(kube_dir.path())?;
            // Synced before the start, so nothing would wait; with the empty cache no
            // pod ever comes, and files must not wait for one.
            kube.hold_time = Duration::ZERO;
            if o.kube_annotations_off {
                kube.pod_annotations.exclude = vec!["*".into()];
            }
            if o.kube_typical {
                kube.pod_labels.exclude = vec!["example.com/*".into()];
                kube.pod_annotations.exclude = vec!["example.com/*".into()];
            }
            let cache = runtime.block_on(async {
                let cache = node_agent::kube_cache::MetadataCache::start(&kube, &kube_stop).await?;
                anyhow::ensure!(
                    cache.wait_synced(Duration::from_secs(30)).await,
                    "metadata cache did not sync: {:?}",
                    cache.stats()
                );
                // Let the list buffers go and the watches open.
                tokio::time::sleep(Duration::from_millis(300)).await;
                anyhow::Ok(cache)
            })?;
            println!(
                "  metadata cache synced: {} pods, {} namespaces, ~{} KiB of metadata",
                cache.stats().cached.pods,
                cache.stats().cached.namespaces,
                cache.heap_bytes() / 1024
            );
            Some(node_agent::kube::enrichment(&cache, &kube))
        }
        None => None,
    };
    let rss_ready = status_kib("VmRSS:").unwrap_or(0);
    let usage0 = usage();
    let t0 = Instant::now();
    let summary = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(node_agent::logs::run_enriched(
            config,
            kube_bench::NODE.into(),
            sinks,
            enrichment,
            shutdown.clone(),
        ));
        if let Some(secs) = o.outage {
            outage_phase(&sink, secs).await;
        }
        if let Some(secs) = o.one_down {
            one_down_phase(&sink, &down_sink, secs, lines, bytes).await;
        }
        let deadline = Instant::now() + Duration::from_secs(3600);
        while delivered() < records
            || (o.one_down.is_some() && down_sink.records.load(Ordering::Relaxed) < lines)
        {
            if run.is_finished() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        run.await
    })??;
    let wall = t0.elapsed().as_secs_f64();
    let used = usage() - usage0;
    let cpu = used.user + used.sys;
    let shipped = delivered();
    anyhow::ensure!(
        shipped == records,
        "pipeline shipped {shipped} of {records} records"
    );
    let mb = bytes as f64 / 1e6;
    let hwm = status_kib("VmHWM:").unwrap_or(0);
    println!(
        "logs pipeline (discover+read+parse+enrich{}+batch+ack+checkpoint → {}):",
        if o.processors {
            "+multiline+json+filter+redact"
        } else {
            ""
        },
        if o.es {
            "Elasticsearch sink → null _bulk receiver in a child process"
        } else {
            "null sink"
        }
    );
    if o.kube_endpoint.is_some() {
        println!(
            "  with Kubernetes metadata from the fake API server{}",
            if o.kube_annotations_off {
                " (pod annotations off)"
            } else {
                ""
            }
        );
    }
    println!(
        "  records         {shipped} in {} batches ({lines} messages on disk)",
        summary.batches_delivered
    );
    println!("  wall            {wall:.2} s   → {:.1} MB/s", mb / wall);
    println!(
        "  cpu (user+sys)  {cpu:.2} s   → {:.1} MB per CPU-second (target ≥ 100)",
        mb / cpu
    );
    println!(
        "  cpu split       {:.2} s user + {:.2} s sys, {} minor page faults",
        used.user, used.sys, used.minor_faults
    );
    println!(
        "  peak RSS        {:.1} MiB (VmHWM; {:.1} MiB before start; target ≤ {})",
        hwm as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        if o.processors { 48 } else { 64 }
    );
    // What the sinks sent (request bodies before compression): enriched documents are
    // several times the size of bare ones, and moving those bytes is most of the cost.
    let body_bytes: f64 = node_agent::core::telemetry::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "node_agent_sink_bytes_sent_total")
        .flat_map(|f| f.get_metric().iter().map(|m| m.get_counter().get_value()))
        .sum();
    println!(
        "  body bytes      {:.0} MB sent, {:.0} bytes per record",
        body_bytes / 1e6,
        body_bytes / shipped.max(1) as f64
    );
    println!(
        "RESULT {:.1} {:.1} {:.1} {:.1} {cpu:.3} {body_bytes:.0} {:.3} {:.3} {}",
        mb / wall,
        mb / cpu,
        hwm as f64 / 1024.0,
        rss_ready as f64 / 1024.0,
        used.user,
        used.sys,
        shipped
    );
    drop(receiver);
    Ok(())
}

/// `--idle`: the agent binary over many quiet containers, measured from outside.
fn idle(args: &[&str]) -> anyhow::Result<()> {
    let mut secs = 60u64;
    let (mut pods, mut per_pod) = (100usize, 5usize);
    let mut agent: Option<std::path::PathBuf> = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--pods" => pods = it.next().context("--pods needs a value")?.parse()?,
            "--containers-per-pod" => {
                per_pod = it
                    .next()
                    .context("--containers-per-pod needs a value")?
                    .parse()?
            }
            "--agent" => agent = Some(it.next().context("--agent needs a path")?.into()),
            n if n.parse::<u64>().is_ok() => secs = n.parse()?,
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench logs --idle [SECS] [--pods N] [--containers-per-pod N] [--agent BINARY]"
            ),
        }
    }
    // Another build (e.g. an older commit's) can be compared with `--agent`.
    let agent = match agent {
        Some(a) => a,
        None => {
            let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(&cargo)
                .args(["build", "--release", "--quiet", "-p", "node-agent"])
                .current_dir(&root)
                .status()
                .context("building node-agent")?;
            anyhow::ensure!(status.success(), "building node-agent failed");
            root.join("target/release/node-agent")
        }
    };

    let tmp = tempfile::Builder::new().prefix("bench-idle-").tempdir()?;
    let pods_dir = tmp.path().join("pods");
    for p in 0..pods {
        for c in 0..per_pod {
            let mut log = ContainerLog::create(
                &pods_dir,
                "idle",
                &format!("pod-{p}"),
                &format!("c{c}"),
                Format::Cri,
            )?;
            log.write_lines(5, &LineMix::default())?;
            log.flush()?;
        }
    }
    let config = tmp.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "logs:\n  pods_dir: {}\n  state_dir: {}\nsinks:\n  - type: file\n    path: {}\nhandover:\n  lock_file: {}\n",
            pods_dir.display(),
            tmp.path().join("state").display(),
            tmp.path().join("out.ndjson").display(),
            tmp.path().join("leader.lock").display(),
        ),
    )?;
    let mut child = std::process::Command::new(&agent)
        .args([
            "--web.listen-address=127.0.0.1:0",
            "--collector.disable-defaults",
            "--log.level=warn",
        ])
        .arg(format!("--config.file={}", config.display()))
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting node-agent")?;
    let pid = child.id();
    let files = pods * per_pod;
    println!(
        "idle: node-agent over {pods} pods × {per_pod} containers ({files} files), settling 10 s, then measuring {secs} s"
    );
    std::thread::sleep(Duration::from_secs(10));
    let ticks = |pid: u32| -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let after = stat.rsplit_once(')').context("stat")?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    };
    let t0 = ticks(pid)?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let t1 = ticks(pid)?;
    let wall = start.elapsed().as_secs_f64();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let used = (t1 - t0) as f64;
    println!(
        "  cpu             {used:.0} ticks in {wall:.0} s = {:.1} ticks/min = {:.3}% of a core (target ≤ 0.2%)",
        used * 60.0 / wall,
        used / hz / wall * 100.0
    );
    println!("  RSS             {:.1} MiB", rss as f64 / 1024.0);
    Ok(())
}
