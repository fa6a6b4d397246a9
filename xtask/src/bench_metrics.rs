//! `cargo xtask bench metrics`: CPU per scrape and RSS of node-agent side by side with
//! Debian's prometheus-node-exporter 1.5.0 on this host, printed as ratios against the
//! targets (≤ 0.15× its CPU per scrape, ≤ 0.5× its RSS).
//!
//! node-agent is the static binary the image ships (see [`build_agent`]), or the one
//! `NODE_AGENT_BENCH_BIN` names.
//!
//! Both run the same collector set: node_exporter's defaults (read from what a default
//! node_exporter reports in `node_scrape_collector_success`) that node-agent implements;
//! `--collector.X` / `--no-collector.X` flags make up the differences on either side, and
//! the sets each exporter then reports are compared before measuring.
//!
//! Method (same as ../shared/reference/baseline.md): one keep-alive connection per
//! exporter, warm-up scrapes, then N sequential `GET /metrics`; CPU = delta of the
//! process's utime+stime, also split into user and system time (ticks, which include
//! threads that exited), and of its threads' schedstat run time (ns; per thread, so a
//! thread that exits during a round is counted as a warning, not as negative time),
//! RSS = VmRSS/VmHWM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const WARMUP: usize = 50;
/// Rounds the scrapes are split into, alternating between the two exporters.
const ROUNDS: usize = 5;
/// Debian's patched mount-point default, so both exporters see the same filesystems.
/// The targets: node-agent's CPU per scrape and RSS as a fraction of node_exporter's.
const CPU_TARGET: f64 = 0.15;
const RSS_TARGET: f64 = 0.5;
const DEBIAN_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

struct Proc {
    name: &'static str,
    child: Child,
    url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU and memory of a process, read from /proc.
#[derive(Clone, Debug)]
struct Usage {
    /// utime and stime in seconds (USER_HZ ticks / 100), dead threads included.
    utime: f64,
    stime: f64,
    /// Each live thread's schedstat run time, ns.
    sched_ns: BTreeMap<u32, u64>,
    rss_mib: f64,
    hwm_mib: f64,
}

fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the ")" of comm: state is field 3, utime 14, stime 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("bad /proc/pid/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields[11].parse()?;
    let stime: f64 = fields[12].parse()?;
    let mut sched_ns = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            let ns = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            sched_ns.insert(tid, ns);
        }
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    Ok(Usage {
        utime: utime / 100.0,
        stime: stime / 100.0,
        sched_ns,
        rss_mib: kib("VmRSS:") / 1024.0,
        hwm_mib: kib("VmHWM:") / 1024.0,
    })
}

/// Also cross-check RSS with sysinfo, the way an operator's tooling would see it.
fn sysinfo_rss_mib(pid: u32) -> f64 {
    let mut sys = sysinfo::System::new();
    let pid = sysinfo::Pid::from_u32(pid);
    sys.refresh_processes(sysinfo::ProcessesToUpdate::Some(&[pid]), true);
    sys.process(pid)
        .map(|p| p.memory() as f64 / 1024.0 / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Run time of the threads between two samples, seconds, and how many threads exited in
/// between (their time is then missing: only utime/stime keep it).
fn sched_delta(before: &Usage, after: &Usage) -> (f64, usize) {
    let ns: u64 = after
        .sched_ns
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.sched_ns.get(tid).copied().unwrap_or(0)))
        .sum();
    let exited = before
        .sched_ns
        .keys()
        .filter(|tid| !after.sched_ns.contains_key(tid))
        .count();
    (ns as f64 / 1e9, exited)
}

struct RunResult {
    cpu_ms_per_scrape: f64,
    user_ms_per_scrape: f64,
    sys_ms_per_scrape: f64,
    sched_ms_per_scrape: f64,
    /// Threads that exited during the measured scrapes.
    exited: usize,
    threads: usize,
    median_ms: f64,
    bytes: usize,
    after: Usage,
    sysinfo_rss: f64,
}

fn run(p: &Proc, scrapes: usize, warmup: usize, gzip: bool) -> anyhow::Result<RunResult> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let scrape = || -> anyhow::Result<usize> {
        let mut req = agent.get(&p.url);
        if gzip {
            req = req.header("Accept-Encoding", "gzip");
        }
        let mut resp = req.call().with_context(|| format!("scraping {}", p.name))?;
        Ok(resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()?
            .len())
    };
    for _ in 0..warmup {
        scrape()?;
    }
    let pid = p.child.id();
    let before = usage(pid)?;
    let mut latencies = Vec::with_capacity(scrapes);
    let mut bytes = 0;
    for _ in 0..scrapes {
        let t = Instant::now();
        bytes = scrape()?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let after = usage(pid)?;
    latencies.sort_by(f64::total_cmp);
    let per_scrape = |s: f64| s * 1000.0 / scrapes as f64;
    let user = after.utime - before.utime;
    let sys = after.stime - before.stime;
    let (sched, exited) = sched_delta(&before, &after);
    Ok(RunResult {
        cpu_ms_per_scrape: per_scrape(user + sys),
        user_ms_per_scrape: per_scrape(user),
        sys_ms_per_scrape: per_scrape(sys),
        sched_ms_per_scrape: per_scrape(sched),
        exited,
        threads: after.sched_ns.len(),
        median_ms: latencies[latencies.len() / 2],
        bytes,
        after,
        sysinfo_rss: sysinfo_rss_mib(pid),
    })
}

pub(crate) fn wait_up(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if ureq::get(url).call().is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{url} did not come up")
}

/// The collectors an exposition reports `node_scrape_collector_success` for: every enabled
/// one, in both exporters (node_exporter refuses to start if one cannot be built;
/// node-agent leaves such a one out, which the comparison then shows).
fn reported_collectors(url: &str) -> anyhow::Result<BTreeSet<String>> {
    let body = ureq::get(url)
        .call()
        .with_context(|| format!("scraping {url}"))?
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()?;
    Ok(body
        .lines()
        .filter_map(|l| l.strip_prefix("node_scrape_collector_success{collector=\""))
        .filter_map(|rest| rest.split_once('"').map(|(name, _)| name.to_string()))
        .collect())
}

/// What each exporter is told so that both run `common`.
struct CollectorPlan {
    common: BTreeSet<String>,
    ne_flags: Vec<String>,
    agent_flags: Vec<String>,
    /// node_exporter defaults node-agent does not implement (switched off on node_exporter).
    ne_only: BTreeSet<String>,
    /// node-agent defaults node_exporter leaves off (switched off on node-agent).
    agent_only: BTreeSet<String>,
    /// node_exporter defaults node-agent leaves off (switched on on node-agent).
    agent_enabled: BTreeSet<String>,
}

fn plan_collectors(ne_default: &BTreeSet<String>) -> CollectorPlan {
    let specs = node_agent::metrics::COLLECTORS;
    let implemented: BTreeSet<String> = specs.iter().map(|c| c.name.to_string()).collect();
    let agent_default: BTreeSet<String> = specs
        .iter()
        .filter(|c| c.default_enabled)
        .map(|c| c.name.to_string())
        .collect();
    let common: BTreeSet<String> = ne_default.intersection(&implemented).cloned().collect();
    let ne_only: BTreeSet<String> = ne_default.difference(&implemented).cloned().collect();
    let agent_only: BTreeSet<String> = agent_default.difference(&common).cloned().collect();
    let agent_enabled: BTreeSet<String> = common.difference(&agent_default).cloned().collect();
    CollectorPlan {
        ne_flags: ne_only
            .iter()
            .map(|c| format!("--no-collector.{c}"))
            .collect(),
        agent_flags: agent_only
            .iter()
            .map(|c| format!("--no-collector.{c}"))
            .chain(agent_enabled.iter().map(|c| format!("--collector.{c}")))
            .collect(),
        common,
        ne_only,
        agent_only,
        agent_enabled,
    }
}

fn list(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(",")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Builds the binary that ships: static glibc (`+crt-static` for the explicit target only,
/// as in the Dockerfile and `cargo xtask cross`). The image runs this binary, not the
/// dynamic one `cargo build` makes, and its memory differs: no ld.so, libc.so and libm.so
/// mappings (~2 MiB of RSS), only the libc code it links.
pub(crate) fn build_agent(root: &Path) -> anyhow::Result<PathBuf> {
    build_agent_with(root, &[])
}

/// [`build_agent`] with extra cargo arguments (`--features ebpf`, as the Dockerfile builds).
pub(crate) fn build_agent_with(root: &Path, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let flags_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        triple.to_uppercase().replace('-', "_")
    );
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-p",
            "node-agent",
            "--target",
            &triple,
        ])
        .args(extra)
        .env(flags_var, "-C target-feature=+crt-static")
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join(triple).join("release/node-agent"))
}

pub fn main(args: &[&str]) -> anyhow::Result<()> {
    let scrapes: usize = match args.first() {
        Some(n) => n
            .parse()
            .context("usage: cargo xtask bench metrics [SCRAPES]")?,
        None => 200,
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // A given binary instead (an A/B of two builds in one session, side by side).
    let agent_bin = match std::env::var_os("NODE_AGENT_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_agent(&root)?,
    };
    println!("node-agent binary: {}", agent_bin.display());
    // Any change to a crate's dependencies or the compiler renames its functions; the
    // unmatched ones lose their place and RSS grows back (see `cargo xtask order-file`).
    if let Err(e) =
        crate::order_file::report_matches(&agent_bin, &root.join(crate::order_file::ORDER_FILE))
    {
        println!("order file not checked: {e:#}");
    }
    let ne_bin = "prometheus-node-exporter";
    if Command::new(ne_bin)
        .arg("--version")
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        bail!("{ne_bin} not found: apt-get install prometheus-node-exporter");
    }
    let tmp = std::env::temp_dir().join(format!("node-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let config = tmp.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "logs:\n  enabled: false\nhandover:\n  lock_file: {}\n",
            tmp.join("leader.lock").display()
        ),
    )?;

    // node_exporter's default set, as a default node_exporter reports it.
    let ne_default = {
        let port = free_port()?;
        let probe = Proc {
            name: "node_exporter (defaults)",
            child: Command::new(ne_bin)
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
            url: format!("http://127.0.0.1:{port}/metrics"),
        };
        wait_up(&probe.url)?;
        reported_collectors(&probe.url)?
    };
    let plan = plan_collectors(&ne_default);

    let ne_port = free_port()?;
    let ne = Proc {
        name: "node_exporter",
        child: Command::new(ne_bin)
            .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
            .args(&plan.ne_flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        url: format!("http://127.0.0.1:{ne_port}/metrics"),
    };
    let our_port = free_port()?;
    let ours = Proc {
        name: "node-agent",
        child: Command::new(&agent_bin)
            .arg(format!("--web.listen-address=127.0.0.1:{our_port}"))
            .arg("--collector.netdev.device-exclude=^lo$")
            .arg(format!(
                "--collector.filesystem.mount-points-exclude={DEBIAN_MOUNT_POINTS_EXCLUDE}"
            ))
            .args(&plan.agent_flags)
            .arg(format!("--config.file={}", config.display()))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        url: format!("http://127.0.0.1:{our_port}/metrics"),
    };
    wait_up(&ne.url)?;
    wait_up(&ours.url)?;

    println!(
        "collectors ({}, both): {}",
        plan.common.len(),
        list(&plan.common)
    );
    println!(
        "  node_exporter defaults node-agent lacks (off on node_exporter): {}",
        list(&plan.ne_only)
    );
    println!(
        "  node-agent defaults node_exporter leaves off (off on node-agent): {}",
        list(&plan.agent_only)
    );
    println!(
        "  node_exporter defaults node-agent leaves off (on on node-agent): {}",
        list(&plan.agent_enabled)
    );
    let ne_running = reported_collectors(&ne.url)?;
    let ours_running = reported_collectors(&ours.url)?;
    if ne_running == ours_running {
        println!("  running: the same {} on both", ne_running.len());
    } else {
        println!(
            "  running differs: only node_exporter {}; only node-agent {}",
            list(&ne_running.difference(&ours_running).cloned().collect()),
            list(&ours_running.difference(&ne_running).cloned().collect()),
        );
    }
    let load_before = loadavg();

    println!(
        "metrics benchmark: {scrapes} sequential scrapes after {WARMUP} warm-up, one keep-alive connection each, in {ROUNDS} alternating rounds (CPU columns: mean of rounds)"
    );
    println!(
        "{:<14} {:<8} {:>12} {:>8} {:>8} {:>14} {:>10} {:>10} {:>9} {:>9} {:>12} {:>8}",
        "exporter",
        "enc",
        "cpu ms/scr",
        "user",
        "sys",
        "sched ms/scr",
        "median ms",
        "bytes",
        "RSS MiB",
        "HWM MiB",
        "sysinfo MiB",
        "threads"
    );
    for gzip in [false, true] {
        let enc = if gzip { "gzip" } else { "identity" };
        // Alternate the exporters in rounds so that a change in the (shared, virtual)
        // machine's speed hits both alike; the ratio is the median of the rounds'.
        let per_round = scrapes.div_ceil(ROUNDS);
        let (mut a_rounds, mut b_rounds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let warmup = if round == 0 { WARMUP } else { 5 };
            let a = run(&ne, per_round, warmup, gzip)?;
            let b = run(&ours, per_round, warmup, gzip)?;
            ratios.push(b.sched_ms_per_scrape / a.sched_ms_per_scrape);
            a_rounds.push(a);
            b_rounds.push(b);
        }
        for (p, rounds) in [(&ne, &a_rounds), (&ours, &b_rounds)] {
            let mean =
                |f: fn(&RunResult) -> f64| rounds.iter().map(f).sum::<f64>() / rounds.len() as f64;
            let mut medians: Vec<f64> = rounds.iter().map(|r| r.median_ms).collect();
            medians.sort_by(f64::total_cmp);
            let last = rounds.last().context("no rounds")?;
            println!(
                "{:<14} {:<8} {:>12.3} {:>8.3} {:>8.3} {:>14.3} {:>10.3} {:>10} {:>9.1} {:>9.1} {:>12.1} {:>8}",
                p.name,
                enc,
                mean(|r| r.cpu_ms_per_scrape),
                mean(|r| r.user_ms_per_scrape),
                mean(|r| r.sys_ms_per_scrape),
                mean(|r| r.sched_ms_per_scrape),
                medians[medians.len() / 2],
                last.bytes,
                last.after.rss_mib,
                last.after.hwm_mib,
                last.sysinfo_rss,
                last.threads
            );
            let exited: usize = rounds.iter().map(|r| r.exited).sum();
            if exited > 0 {
                println!(
                    "  warning: {exited} {} thread(s) exited while measured; sched ms/scr misses their time, cpu ms/scr keeps it",
                    p.name
                );
            }
        }
        let rounds_text: Vec<String> = ratios.iter().map(|r| format!("{r:.3}")).collect();
        ratios.sort_by(f64::total_cmp);
        let cpu_ratio = ratios[ratios.len() / 2];
        let rss_ratio = b_rounds.last().context("no rounds")?.after.rss_mib
            / a_rounds.last().context("no rounds")?.after.rss_mib;
        println!(
            "ratio node-agent/node_exporter ({enc}): CPU per scrape {cpu_ratio:.3}x (median of rounds {}; target <= {CPU_TARGET}x: {}), RSS {rss_ratio:.3}x (target <= {RSS_TARGET}x: {})",
            rounds_text.join(" "),
            if cpu_ratio <= CPU_TARGET {
                "met"
            } else {
                "NOT met"
            },
            if rss_ratio <= RSS_TARGET {
                "met"
            } else {
                "NOT met"
            },
        );
    }
    println!(
        "load average (1/5/15 min): {load_before} before, {} after",
        loadavg()
    );
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
