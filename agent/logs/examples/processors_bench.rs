//! What the `bench logs --processors` chain (multiline auto + json + filter + all
//! redactions) costs per MB, without reading files: the messages of a CRI backlog (e.g. one
//! `cargo xtask bench logs --traces 200 --dir D --keep` left in `D/pods`) go through the
//! chain in memory. Made for instruction counts, which a shared machine does not disturb
//! (the pipeline itself cannot run under valgrind: it has no `openat2`):
//! `valgrind --tool=callgrind target/release/examples/processors_bench D/pods`.
//! Run: `cargo run --release -p node-agent-logs --example processors_bench DIR [PASSES]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use node_agent_core::record::{LogRecord, SourceKind, SourceMeta, Stream};
use node_agent_logs::LogsConfig;

/// The chain of `cargo xtask bench logs --processors` (xtask/src/bench_logs.rs reads the
/// same file).
const PROCESSORS: &str = include_str!("bench-processors.json");

/// Every `*.log` file under `dir`.
fn logs(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            logs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "log") {
            out.push(path);
        }
    }
    Ok(())
}

/// The messages of one CRI file (partial lines joined), with their offsets and streams.
fn messages(text: &str) -> Vec<(u64, Stream, String)> {
    let mut out = Vec::new();
    let mut partial = String::new();
    let mut start = None;
    let mut offset = 0u64;
    for line in text.split_inclusive('\n') {
        let at = offset;
        offset += line.len() as u64;
        let mut parts = line.trim_end_matches('\n').splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let message = parts.next().unwrap_or("");
        let stream = if stream == "stderr" {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        partial.push_str(message);
        let first = *start.get_or_insert(at);
        if tag == "F" {
            out.push((first, stream, std::mem::take(&mut partial)));
            start = None;
        }
    }
    out
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "pods".into()));
    let passes: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let mut files = Vec::new();
    logs(&dir, &mut files)?;
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no *.log files under {}", dir.display());
    let mut inputs = Vec::new();
    let mut bytes = 0usize;
    for (i, path) in files.iter().enumerate() {
        let text = std::fs::read_to_string(path)?;
        bytes += text.len();
        let meta = Arc::new(SourceMeta {
            kind: SourceKind::Pod,
            namespace: "bench".into(),
            pod: format!("pod{i}"),
            pod_uid: format!("uid{i}"),
            container: "app".into(),
            node: "node".into(),
            path: path.clone(),
            file_id: i as u64 + 1,
            kubernetes: None,
        });
        inputs.push((meta, messages(&text)));
    }
    let config = LogsConfig {
        processors: serde_json::from_str(PROCESSORS)?,
        ..LogsConfig::default()
    };
    let mut chain = config.stages()?;
    let (mut records, mut out_records, mut out_bytes) = (0usize, 0usize, 0usize);
    let t = Instant::now();
    for _ in 0..passes {
        for (meta, messages) in &inputs {
            for (offset, stream, message) in messages {
                let r = LogRecord::new(
                    Arc::clone(meta),
                    *offset as i64,
                    *stream,
                    *offset,
                    message.clone(),
                );
                records += 1;
                chain.process(r, &mut |r| {
                    out_records += 1;
                    out_bytes += r.message.len();
                });
            }
            chain.flush_file(meta.file_id, &mut |r| {
                out_records += 1;
                out_bytes += r.message.len();
            });
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let mb = (bytes * passes) as f64 / 1e6;
    println!(
        "{records} messages ({mb:.1} MB of CRI files) → {out_records} records, {:.1} MB of messages",
        out_bytes as f64 / 1e6
    );
    println!(
        "  {secs:.2} s → {:.1} MB/s of files through the chain on one thread, {:.0} ns per message",
        mb / secs,
        secs * 1e9 / records as f64
    );
    Ok(())
}
