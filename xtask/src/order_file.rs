//! `cargo xtask order-file [SCRAPES] [--check] [--ebpf]`: writes `agent/link/metrics.order`, the
//! functions the agent executes at start-up and while serving scrapes (identity and gzip,
//! plus `/healthz` and `/readyz`), which `agent/build.rs` hands to lld so that they sit
//! next to each other in the release binary's text.
//!
//! Why: the kernel maps a binary's pages in 64 KiB fault-around windows, so the ~2 MiB of
//! functions a scrape and start-up run, scattered over 13 MiB of text, kept ~10 MiB of it
//! resident. The functions come from callgrind (every executed function, by name as the
//! symbol table has it), run on the static binary the image ships, with the collector set
//! of `cargo xtask bench metrics`. Hottest first (self instruction count), so the scrape
//! loop also shares cache lines and TLB entries.
//!
//! The names are mangled with crate hashes (legacy `17h…E`, v0 `Cs…_`) that change with a
//! crate's version, features or dependencies and with the compiler version, and thin-LTO
//! local names carry a `.llvm.N` suffix that changes with the code. A stale entry is
//! skipped by the linker, so a stale file costs RSS, not correctness: `--check` counts the
//! entries the current binary still has; regenerate after a toolchain or dependency bump.
//! The image is built with `--features ebpf`, which changes the hashes of the crates that
//! depend on it (1,254 of 2,073 names matched): `--ebpf` records that build too (it needs
//! nightly and bpf-linker) and writes the union, the image's names first.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::bench_metrics::{build_agent_with, free_port, wait_up};

/// The file `agent/build.rs` links with, relative to the workspace root.
pub(crate) const ORDER_FILE: &str = "agent/link/metrics.order";

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    let check = args.contains(&"--check");
    let ebpf = args.contains(&"--ebpf");
    let scrapes: usize = match args.iter().find(|a| !a.starts_with("--")) {
        Some(n) => n
            .parse()
            .context("usage: cargo xtask order-file [SCRAPES] [--check] [--ebpf]")?,
        None => 20,
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let order = root.join(ORDER_FILE);
    // The image's build first (its names lead the file), then the one the bench measures.
    let builds: &[&[&str]] = if ebpf {
        &[&["--features", "ebpf"], &[]]
    } else {
        &[&[]]
    };
    if check {
        for extra in builds {
            report_matches(&build_agent_with(&root, extra)?, &order)?;
        }
        return Ok(());
    }
    let mut seen = HashSet::new();
    let mut text = String::new();
    for extra in builds {
        let bin = build_agent_with(&root, extra)?;
        let tmp = tempfile::tempdir()?;
        let profile = tmp.path().join("callgrind.out");
        record(&bin, tmp.path(), &profile, scrapes)?;
        for name in executed_functions(&std::fs::read_to_string(&profile)?)? {
            if seen.insert(name.clone()) {
                text.push_str(&name);
                text.push('\n');
            }
        }
    }
    std::fs::write(&order, text).with_context(|| format!("writing {}", order.display()))?;
    println!("{}: {} functions", order.display(), seen.len());
    // Relink with the new file (build.rs reruns when it changes) and say what it matched.
    for extra in builds {
        report_matches(&build_agent_with(&root, extra)?, &order)?;
    }
    Ok(())
}

/// Runs the agent under callgrind: start-up, `scrapes` identity and gzip scrapes each, the
/// probes, then SIGTERM (so that shutdown's functions are in the profile too).
fn record(bin: &Path, dir: &Path, profile: &Path, scrapes: usize) -> anyhow::Result<()> {
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "logs:\n  enabled: false\nhandover:\n  lock_file: {}\n",
            dir.join("leader.lock").display()
        ),
    )?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--demangle=no")
        .arg(format!("--callgrind-out-file={}", profile.display()))
        .arg(bin)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.netdev.device-exclude=^lo$")
        .arg("--collector.systemd")
        .arg(format!("--config.file={}", config.display()))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting valgrind (apt-get install valgrind)")?;
    let served = (|| -> anyhow::Result<()> {
        // Under valgrind start-up takes seconds; wait_up allows 15.
        wait_up(&format!("{base}/metrics"))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        for gzip in [false, true] {
            for _ in 0..scrapes {
                let mut req = agent.get(format!("{base}/metrics"));
                if gzip {
                    req = req.header("Accept-Encoding", "gzip");
                }
                req.call()?
                    .body_mut()
                    .with_config()
                    .limit(64 << 20)
                    .read_to_vec()?;
            }
        }
        for path in ["/healthz", "/readyz"] {
            agent.get(format!("{base}{path}")).call()?;
        }
        Ok(())
    })();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = child.wait()?;
    served?;
    if !profile.exists() {
        bail!("callgrind wrote no profile ({status})");
    }
    Ok(())
}

/// The functions a callgrind profile names (`fn=` and `cfn=` lines, name compression
/// resolved), hottest first by self cost, without callgrind's recursion suffixes (`'2`)
/// and without the ones it knows only by address.
fn executed_functions(profile: &str) -> anyhow::Result<Vec<String>> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut cost: HashMap<&str, u64> = HashMap::new();
    let mut current: Option<&str> = None;
    let mut after_calls = false;
    for line in profile.lines() {
        let (kind, rest) = match line.split_once('=') {
            Some((k @ ("fn" | "cfn"), rest)) => (k, rest),
            _ => {
                if line.starts_with("calls=") {
                    after_calls = true;
                } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
                    // The line after `calls=` is the call's inclusive cost: not self cost.
                    if !std::mem::take(&mut after_calls)
                        && let (Some(f), Some(n)) = (current, line.split_whitespace().nth(1))
                    {
                        *cost.entry(f).or_default() += n.parse::<u64>().unwrap_or(0);
                    }
                }
                continue;
            }
        };
        let (id, name) = match rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
            Some((id, name)) => (id, name.trim_start()),
            None => (rest, rest),
        };
        if !name.is_empty() {
            names.insert(id, name);
        }
        cost.entry(id).or_default();
        if kind == "fn" {
            current = Some(id);
            after_calls = false;
        }
    }
    if names.is_empty() {
        bail!("no functions in the callgrind profile");
    }
    let mut by_cost: Vec<(u64, &str)> = cost
        .iter()
        .filter_map(|(id, c)| names.get(id).map(|n| (*c, *n)))
        .collect();
    by_cost.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut seen = HashSet::new();
    Ok(by_cost
        .into_iter()
        .map(|(_, n)| strip_recursion(n))
        .filter(|n| !n.starts_with("0x") && !n.starts_with('('))
        .filter(|n| seen.insert(n.to_string()))
        .map(str::to_string)
        .collect())
}

/// `name'2` → `name`: callgrind's mark of a recursion level, not part of the symbol.
fn strip_recursion(name: &str) -> &str {
    match name.rsplit_once('\'') {
        Some((base, level)) if level.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// How many of the file's names the binary defines (the rest the linker skips).
/// Prints how many of the order file's names `bin` has (`cargo xtask bench metrics`
/// prints it too: a stale file shows as RSS regained, this says why).
pub(crate) fn report_matches(bin: &Path, order: &Path) -> anyhow::Result<()> {
    let out = Command::new("nm")
        .args(["--defined-only"])
        .arg(bin)
        .output()
        .context("running nm (binutils)")?;
    if !out.status.success() {
        bail!("nm {} failed", bin.display());
    }
    let symbols: HashSet<&str> = std::str::from_utf8(&out.stdout)?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let wanted =
        std::fs::read_to_string(order).with_context(|| format!("reading {}", order.display()))?;
    let wanted: Vec<&str> = wanted.lines().filter(|l| !l.is_empty()).collect();
    let found = wanted.iter().filter(|n| symbols.contains(*n)).count();
    println!(
        "{}: {found} of {} names are in {} ({:.1} %)",
        order.display(),
        wanted.len(),
        bin.display(),
        100.0 * found as f64 / wanted.len().max(1) as f64
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_self_cost_without_recursion_marks_or_addresses() {
        let profile = "\
fn=(1) cold
0 5
cfn=(2) hot'2
calls=1 0
0 1000
fn=(2)
0 900
fn=(3) 0x00000000011a7fd0
0 7
fn=(4) hot
0 1
";
        let names = executed_functions(profile).unwrap();
        // hot'2 (900) folds into hot; the call line's 1000 is inclusive, not cold's own.
        assert_eq!(names, ["hot", "cold"]);
    }
}
