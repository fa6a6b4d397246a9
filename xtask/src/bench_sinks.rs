//! `cargo xtask bench sinks [--size 1GiB] [--message-bytes 200] [--batch 2000] [--only a,b]`:
//! pushes `--size` of log messages through each sink (encoder, compression, HTTP client,
//! response handling) into a null receiver running in a child process, and prints per
//! sink: message MB/s, MB per CPU-second of the sink side, request bytes, peak RSS.
//!
//! Only the `deliver` calls are timed (record generation is excluded). Figures are only
//! meaningful optimized: a debug build re-runs itself with `--release`.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use node_agent::core::record::{LogRecord, SourceMeta};
use node_agent::identity::NodeIdentity;
use node_agent::sinks::{Sink, SinkConfig};
use node_agent_tests::receivers::records::source;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::selfstat::{cpu_seconds, status_kib};
use crate::size::{MIB, parse_size};
const ALL: &[&str] = &[
    "loki",
    "loki-old-labels",
    "loki-json",
    "loki-json-gzip",
    "elasticsearch",
    "elasticsearch-gzip",
    "otlp",
    "otlp-gzip",
    "file",
];

struct Options {
    size: u64,
    message_bytes: usize,
    batch: usize,
    only: Vec<String>,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut o = Options {
        size: 1024 * MIB,
        message_bytes: 200,
        batch: 2000,
        only: ALL.iter().map(|s| s.to_string()).collect(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match *arg {
            "--size" => o.size = parse_size(value()?)?,
            "--message-bytes" => o.message_bytes = value()?.parse().context("--message-bytes")?,
            "--batch" => o.batch = value()?.parse().context("--batch")?,
            "--only" => {
                o.only = value()?.split(',').map(str::to_string).collect();
                if let Some(bad) = o.only.iter().find(|s| !ALL.contains(&s.as_str())) {
                    bail!("unknown sink {bad:?}; choose from {}", ALL.join(","));
                }
            }
            other => bail!(
                "unknown option {other:?}; usage: cargo xtask bench sinks [--size 1GiB] [--message-bytes 200] [--batch 2000] [--only {}]",
                ALL.join(",")
            ),
        }
    }
    if o.message_bytes < 16 || o.batch == 0 {
        bail!("--message-bytes must be ≥ 16 and --batch ≥ 1");
    }
    Ok(o)
}

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    if args == ["--serve-null"] {
        return serve_null();
    }
    if cfg!(debug_assertions) {
        eprintln!("bench sinks: re-running optimized (cargo run --release -p xtask)");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "xtask",
                "--",
                "bench",
                "sinks",
            ])
            .args(args)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("optimized benchmark failed: {status}");
        }
        return Ok(());
    }
    let options = parse_args(args)?;
    let receiver = NullReceiver::spawn()?;
    println!(
        "sinks benchmark: {:.0} MiB of {}-byte messages per sink, {} records per batch, null receiver in a child process",
        options.size as f64 / MIB as f64,
        options.message_bytes,
        options.batch
    );
    println!(
        "{:<20} {:>9} {:>12} {:>11} {:>12} {:>10}",
        "sink", "MB/s", "MB/CPU-s", "CPU s", "body MiB", "peak RSS"
    );
    for name in &options.only {
        let figures = bench_one(name, &options, &receiver.url)?;
        println!(
            "{:<20} {:>9.1} {:>12.1} {:>11.2} {:>12.1} {:>7.1} MiB",
            name,
            figures.message_bytes as f64 / 1e6 / figures.wall.as_secs_f64(),
            figures.message_bytes as f64 / 1e6 / figures.cpu_seconds,
            figures.cpu_seconds,
            figures.wire_bytes as f64 / MIB as f64,
            figures.peak_rss_kib as f64 / 1024.0,
        );
    }
    println!(
        "(MB = 10^6 bytes of message text; body MiB = request bodies before compression; CPU = this process: encode, compress, HTTP client, response parsing)"
    );
    Ok(())
}

struct Figures {
    message_bytes: u64,
    wall: Duration,
    cpu_seconds: f64,
    wire_bytes: u64,
    peak_rss_kib: u64,
}

fn config_for(name: &str, url: &str, file: &Path) -> anyhow::Result<SinkConfig> {
    let value = match name {
        "loki" => json!({"type": "loki", "url": url}),
        // The output of the Loki sink before labels and structured metadata were
        // configurable (pod and node as labels, no metadata): compares encoders on equal
        // output; the default's structured metadata is ~24% more bytes.
        "loki-old-labels" => json!({"type": "loki", "url": url, "structured_metadata": {},
            "record_labels": {"namespace": "namespace", "pod": "pod", "container": "container",
                              "node": "node", "stream": "stream"}}),
        "loki-json" => json!({"type": "loki", "url": url, "encoding": "json"}),
        "loki-json-gzip" => json!({"type": "loki", "url": url, "encoding": "json", "gzip": true}),
        "elasticsearch" => json!({"type": "elasticsearch", "url": url}),
        "elasticsearch-gzip" => json!({"type": "elasticsearch", "url": url, "gzip": true}),
        "otlp" => json!({"type": "otlp", "url": url}),
        "otlp-gzip" => json!({"type": "otlp", "url": url, "gzip": true}),
        "file" => json!({"type": "file", "path": file}),
        other => bail!("unknown sink {other}"),
    };
    let mut value = value;
    value["name"] = json!(format!("bench-{name}"));
    Ok(serde_json::from_value(value)?)
}

/// Log-like messages of about `len` bytes with varying content (so compression is not
/// trivially effective).
fn message_pool(len: usize) -> Vec<String> {
    let words = [
        "GET",
        "POST",
        "/api/v1/orders",
        "user",
        "latency_ms",
        "status",
        "200",
        "404",
        "cache",
        "miss",
        "upstream",
        "request",
        "completed",
        "trace_id",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..4096)
        .map(|i| {
            let mut s = format!("{{\"level\":\"info\",\"seq\":{i},\"msg\":\"");
            while s.len() + 2 < len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let w = words[(state % words.len() as u64) as usize];
                s.push_str(w);
                s.push(' ');
                if state.is_multiple_of(5) {
                    s.push_str(&format!("{} ", state % 100_000));
                }
            }
            s.truncate(len - 2);
            s.push_str("\"}");
            s
        })
        .collect()
}

fn bench_one(name: &str, options: &Options, url: &str) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("out.ndjson");
    let config = config_for(name, url, &file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sink: Arc<dyn Sink> =
        node_agent::sinks::build(&config, &NodeIdentity::default(), dir.path())?;
    let pool = message_pool(options.message_bytes);
    let sources: Vec<Arc<SourceMeta>> = (0..16)
        .map(|i| source(&format!("ns-{}", i % 4), &format!("pod-{i}"), "app"))
        .collect();
    let cancel = CancellationToken::new();

    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut message_bytes = 0u64;
    let mut wire_bytes = 0u64;
    let mut wall = Duration::ZERO;
    let mut cpu = 0.0;
    let mut seq: u64 = 0;
    let mut batch: Vec<LogRecord> = Vec::with_capacity(options.batch);
    while message_bytes < options.size {
        batch.clear();
        for _ in 0..options.batch {
            // Runs of 100 records per file, as a tailer hands them over.
            let src = &sources[(seq / 100) as usize % sources.len()];
            let message = pool[seq as usize % pool.len()].clone();
            message_bytes += message.len() as u64;
            batch.push(LogRecord {
                source: Arc::clone(src),
                timestamp_nanos: 1_700_000_000_000_000_000 + seq as i64 * 1000,
                stream: node_agent::core::record::Stream::Stdout,
                offset: seq * (options.message_bytes as u64 + 40),
                message,
                truncated: false,
                malformed: false,
                fields: None,
            });
            seq += 1;
        }
        let (cpu0, t0) = (cpu_seconds(), Instant::now());
        runtime
            .block_on(sink.deliver(&batch, &cancel))
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        wall += t0.elapsed();
        cpu += cpu_seconds() - cpu0;
        if name == "file" {
            // Keep the disk footprint bounded; the append + fsync already happened.
            wire_bytes += std::fs::metadata(&file)?.len();
            std::fs::File::create(&file)?;
        }
    }
    if name != "file" {
        wire_bytes = sent_bytes(&format!("bench-{name}"));
    }
    Ok(Figures {
        message_bytes,
        wall,
        cpu_seconds: cpu,
        wire_bytes,
        peak_rss_kib: status_kib("VmHWM:").unwrap_or(0),
    })
}

/// Request body bytes (before compression) from the sink's own counter.
fn sent_bytes(sink: &str) -> u64 {
    node_agent::core::telemetry::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == "node_agent_sink_bytes_sent_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == sink))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// The null receiver, in a child process so its CPU does not count as the sink's.
pub(crate) struct NullReceiver {
    child: std::process::Child,
    pub(crate) url: String,
}

impl NullReceiver {
    pub(crate) fn spawn() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["bench", "sinks", "--serve-null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the null receiver")?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line.trim().to_string();
        if !url.starts_with("http://") {
            let _ = child.kill();
            bail!("null receiver said {url:?}");
        }
        Ok(Self { child, url })
    }
}

impl Drop for NullReceiver {
    fn drop(&mut self) {
        // Closing stdin tells the child to exit.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Child side: serve until stdin closes.
fn serve_null() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = node_agent_tests::receivers::null::start().await?;
        println!("{}", server.url());
        std::io::stdout().flush()?;
        tokio::task::spawn_blocking(|| {
            let mut sink = [0u8; 64];
            while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        })
        .await?;
        drop(server);
        Ok(())
    })
}
