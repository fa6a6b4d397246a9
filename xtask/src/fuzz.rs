//! `cargo xtask fuzz [--minutes N | --seconds N] [--target NAME]...`: runs each cargo-fuzz
//! target of tests/fuzz for the given time (default 1 minute each) and prints a table.
//!
//! Each target starts from its committed seeds (tests/fuzz/corpus/<target>) plus what
//! earlier runs found (tests/fuzz/target/corpus/<target>, not committed), so longer runs
//! build on shorter ones without growing the repository. A crash, leak, timeout (10 s per
//! input) or allocation past 2 GiB fails the target; libFuzzer leaves the input under
//! tests/fuzz/artifacts/<target>/, and `cargo +nightly fuzz run --fuzz-dir tests/fuzz
//! <target> <file>` replays it. Needs the nightly toolchain; installs cargo-fuzz if missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

const TARGETS: &[&str] = &[
    "cri",
    "docker",
    "textfile",
    "procfs",
    "checkpoint",
    "config",
    "sink_response",
    "security_wire",
    "journal",
];

struct Options {
    seconds: u64,
    targets: Vec<String>,
}

fn parse(args: &[&str]) -> anyhow::Result<Options> {
    let mut o = Options {
        seconds: 60,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        let mut value = || {
            it.next()
                .copied()
                .with_context(|| format!("{a} needs a value"))
        };
        match a {
            "--minutes" => o.seconds = value()?.parse::<u64>().context("--minutes")? * 60,
            "--seconds" => o.seconds = value()?.parse().context("--seconds")?,
            "--target" => {
                let t = value()?;
                if !TARGETS.contains(&t) {
                    bail!("unknown fuzz target {t:?}; targets: {}", TARGETS.join(", "));
                }
                o.targets.push(t.to_string());
            }
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask fuzz [--minutes N | --seconds N] [--target NAME]..."
            ),
        }
    }
    if o.seconds == 0 {
        bail!("the run time must be at least one second");
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(o)
}

struct Row {
    target: String,
    ok: bool,
    execs: u64,
    seconds: f64,
    corpus: usize,
    note: String,
}

pub fn run(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let o = parse(args)?;
    let fuzz_dir = root.join("tests/fuzz");
    ensure_cargo_fuzz()?;
    // One build for all targets; `fuzz run` then only links what is fresh.
    let status = Command::new("cargo")
        .args(["+nightly", "fuzz", "build", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .current_dir(root)
        .status()
        .context("running cargo +nightly fuzz build")?;
    if !status.success() {
        bail!("building the fuzz targets failed");
    }
    let mut rows = Vec::new();
    for t in &o.targets {
        rows.push(run_target(root, &fuzz_dir, t, o.seconds)?);
    }
    println!();
    println!(
        "{:<14} {:>7} {:>12} {:>10} {:>7}  result",
        "target", "seconds", "execs", "execs/s", "corpus"
    );
    for r in &rows {
        println!(
            "{:<14} {:>7.0} {:>12} {:>10.0} {:>7}  {}",
            r.target,
            r.seconds,
            r.execs,
            r.execs as f64 / r.seconds.max(0.001),
            r.corpus,
            if r.ok {
                "ok".to_string()
            } else {
                format!("FAILED: {}", r.note)
            }
        );
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz targets failed: {} (inputs under tests/fuzz/artifacts/)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn run_target(root: &Path, fuzz_dir: &Path, target: &str, seconds: u64) -> anyhow::Result<Row> {
    let work = fuzz_dir.join("target/corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let seeds = fuzz_dir.join("corpus").join(target);
    println!("==> fuzz {target} for {seconds} s");
    let started = Instant::now();
    let output = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "--fuzz-dir"])
        .arg(fuzz_dir)
        .arg(target)
        // New inputs go to the first directory: the uncommitted working corpus.
        .arg(&work)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args([
            "-timeout=10",
            "-rss_limit_mb=2048",
            "-malloc_limit_mb=2048",
            "-print_final_stats=1",
        ])
        .current_dir(root)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&output.stderr);
    let stat = |name: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim_start_matches(':').trim().parse().ok())
            .unwrap_or(0)
    };
    let ok = output.status.success();
    let note = if ok {
        String::new()
    } else {
        // libFuzzer's summary line names what went wrong (deadly signal, leak, timeout, OOM).
        eprintln!("{log}");
        log.lines()
            .rev()
            .find(|l| l.contains("SUMMARY:") || l.contains("ERROR:"))
            .unwrap_or("see the log above")
            .trim()
            .to_string()
    };
    Ok(Row {
        target: target.to_string(),
        ok,
        execs: stat("stat::number_of_executed_units"),
        seconds: started.elapsed().as_secs_f64(),
        corpus: std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0),
        note,
    })
}

/// cargo-fuzz is a cargo subcommand from crates.io; a fresh machine lacks it.
fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    println!("==> cargo install cargo-fuzz --locked");
    let status = Command::new("cargo")
        .args(["install", "cargo-fuzz", "--locked"])
        .status()
        .context("running cargo install cargo-fuzz")?;
    if !status.success() {
        bail!("installing cargo-fuzz failed");
    }
    Ok(())
}
