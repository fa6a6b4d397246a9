//! `cargo xtask bench rules [--events N]`: events per second through the default rules.
//!
//! A synthetic node (host services, 50 pods, churning shells) produces a stream modelled
//! on what the kernel side sends: fork/exec/exit, opens for write and of sensitive paths,
//! connects, setuid, mounts; about 4% of events match a rule (a shell under nginx, a
//! shadow read in a pod), rate-limited as configured by default. Three figures:
//!
//! * `rules`: `RuleSet::evaluate` alone on a fixed process table, per event type;
//! * `engine`: `SecurityEngine::handle` (process table updates, rules, rate limiter,
//!   alert formatting), events built outside the timed part;
//! * `decode+engine`: the same from ring-buffer records (`wire::decode` included).
//!
//! Falco itself is not installable here (Debian has only its kernel driver), so there is
//! no peer column; Falco's own benchmarks report its userspace at ~100k–300k events/s
//! per core with its default rules. Figures are only meaningful optimized: a debug build
//! re-runs itself with `--release`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use node_agent_security::alert::{NoMetrics, RateLimit, RateLimiter};
use node_agent_security::event::{
    BootClock, Event, EventArgs, EventType, ExecArgs, ExitArgs, ForkArgs, L4Proto, MountArgs,
    OpenArgs, SetIdArgs, SocketArgs, SocketFamily, wire,
};
use node_agent_security::process::{
    ContainerInfo, PodInfo, Process, ProcessTable, StaticMetadata, TableConfig, UserDb,
};
use node_agent_security::rules::{EvalCtx, RuleMatching, RuleSetBuilder};
use node_agent_security::{RuleSet, SecurityEngine};

use crate::selfstat::{cpu_seconds, status_kib};

const PODS: u32 = 50;
const HOST_PROCS: u32 = 500;
const CHUNK: usize = 100_000;
const START_NS: u64 = 1_700_000_000_000_000_000;

fn container_id(i: u32) -> String {
    format!("{i:08x}{}", "0123456789abcdef".repeat(4))
        .chars()
        .take(64)
        .collect()
}

fn rules() -> anyhow::Result<RuleSet> {
    RuleSetBuilder::new()
        .defaults()
        .list("k8s_api_server_addresses", vec!["10.96.0.1".into()])
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn metadata() -> StaticMetadata {
    let mut m = StaticMetadata::default();
    for i in 0..PODS {
        m.insert(
            ContainerInfo {
                id: container_id(i),
                name: Some(format!("app-{i}")),
                image: Some(format!("registry.example/team/app-{i}:1.0")),
                k8s: Some(PodInfo {
                    namespace: if i % 10 == 0 {
                        "kube-system".into()
                    } else {
                        "default".into()
                    },
                    name: format!("app-{i}-7d4b9"),
                    uid: format!("{i:08}-0000-0000-0000-000000000000"),
                    labels: [("app".to_string(), format!("app-{i}"))].into(),
                    workload: Some(("Deployment".into(), format!("app-{i}"))),
                }),
                ..Default::default()
            }
            .with_image_parts(),
        );
    }
    m
}

/// Host services and each pod's init + worker; returns (host pids, pod worker pids).
fn populate(table: &mut ProcessTable) -> (Vec<u32>, Vec<u32>) {
    let mut add = |pid: u32, ppid: u32, comm: &str, container: Option<String>| {
        let mut p = Process::new(pid, ppid, comm);
        p.set_argv(&[comm.to_string(), "--serve".to_string()], false);
        p.exe_path = Arc::from(format!("/usr/bin/{comm}"));
        p.start_ns = START_NS - 1_000_000_000_000;
        p.container_id = container.map(Arc::from);
        table.insert(p);
    };
    add(1, 0, "systemd", None);
    add(10, 1, "containerd-shim", None);
    add(11, 1, "kubelet", None);
    add(12, 1, "sshd", None);
    add(13, 1, "rsyslogd", None);
    let mut host = vec![11, 12, 13];
    for i in 0..HOST_PROCS {
        let pid = 100 + i;
        add(
            pid,
            1,
            ["cron", "dbus-daemon", "chronyd", "node_exporter", "bash"][i as usize % 5],
            None,
        );
        host.push(pid);
    }
    let mut workers = Vec::new();
    for i in 0..PODS {
        let init = 10_000 + i * 10;
        add(init, 10, "nginx", Some(container_id(i)));
        add(init + 1, init, "nginx", Some(container_id(i)));
        workers.push(init + 1);
    }
    (host, workers)
}

fn open(pid: u32, path: &str, flags: i32, ts: u64) -> Event {
    let mut e = Event::new(
        EventType::Openat,
        pid,
        EventArgs::Open(OpenArgs {
            dirfd: libc::AT_FDCWD,
            path: path.into(),
            flags: flags as u32,
            mode: 0o644,
        }),
    );
    e.res = 5;
    e.ts_ns = ts;
    e
}

fn connect(pid: u32, remote: &str, ts: u64) -> Event {
    let mut e = Event::new(
        EventType::Connect,
        pid,
        EventArgs::Socket(SocketArgs {
            fd: 7,
            family: SocketFamily::Inet,
            protocol: L4Proto::Tcp,
            local: "10.244.1.7:40112".parse().ok(),
            remote: remote.parse().ok(),
            unix_path: String::new(),
        }),
    );
    e.res = -(libc::EINPROGRESS as i64);
    e.ts_ns = ts;
    e
}

/// The workload: a deterministic cycle of 100 events. Shells come and go (fork, exec,
/// exit), so the process table churns as on a busy node.
struct Workload {
    host: Vec<u32>,
    workers: Vec<u32>,
    next_pid: u32,
    n: u64,
}

impl Workload {
    fn next(&mut self) -> Event {
        let i = self.n;
        self.n += 1;
        let ts = START_NS + i * 1_000; // 1M events per second of event time
        let worker = self.workers[(i / 100) as usize % self.workers.len()];
        let host = self.host[(i / 7) as usize % self.host.len()];
        let write = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND;
        match i % 100 {
            // A shell in a pod runs a command: fork, exec, … exit.
            0..10 => {
                let child = self.next_pid + (i % 100) as u32;
                let mut e = Event::new(
                    EventType::Clone,
                    worker,
                    EventArgs::Fork(ForkArgs {
                        child_pid: child,
                        child_tid: child,
                        flags: libc::SIGCHLD as u64,
                    }),
                );
                e.ts_ns = ts;
                e
            }
            10..20 => {
                let child = self.next_pid + (i % 100 - 10) as u32;
                let (comm, argv): (&str, &[&str]) = match i % 4 {
                    0 => ("sh", &["sh", "-c", "/usr/local/bin/healthcheck --quiet"]),
                    1 => ("curl", &["curl", "-s", "http://localhost:8080/healthz"]),
                    2 => ("ls", &["ls", "-la", "/var/cache/nginx"]),
                    _ => ("date", &["date", "+%s"]),
                };
                let mut e = Event::new(
                    EventType::Execve,
                    child,
                    EventArgs::Exec(ExecArgs {
                        filename: format!("/usr/bin/{comm}"),
                        argv: argv.iter().map(|a| a.to_string()).collect(),
                        exe_path: format!("/usr/bin/{comm}"),
                        ..Default::default()
                    }),
                );
                e.comm = comm.into();
                e.ppid = worker;
                e.ts_ns = ts;
                e
            }
            20..30 => {
                let child = self.next_pid + (i % 100 - 20) as u32;
                if i % 100 == 29 {
                    self.next_pid += 10;
                }
                let mut e = Event::new(
                    EventType::Procexit,
                    child,
                    EventArgs::Exit(ExitArgs { status: 0 }),
                );
                e.ts_ns = ts;
                e
            }
            // Logs appended, configuration written, sensitive reads by trusted programs.
            30..50 => open(host, "/var/log/app/requests.log", write, ts),
            50..55 => open(
                11,
                "/etc/kubernetes/manifests/kube-apiserver.yaml",
                libc::O_WRONLY | libc::O_TRUNC,
                ts,
            ),
            55..60 => open(12, "/etc/shadow", libc::O_RDONLY, ts),
            60..65 => open(worker, "/etc/nginx/conf.d/default.conf", libc::O_RDONLY, ts),
            65..70 => open(worker, "/var/log/nginx/access.log", write, ts),
            // Connections: services, the API server from kube-system, the internet.
            70..85 => connect(worker, "10.96.12.34:5432", ts),
            85..88 => connect(host, "10.96.0.1:443", ts),
            88..95 => connect(worker, "93.184.216.34:443", ts),
            95..97 => {
                let mut e = Event::new(
                    EventType::Setuid,
                    worker,
                    EventArgs::SetId(SetIdArgs {
                        real: None,
                        effective: Some(101),
                        saved: None,
                    }),
                );
                e.ts_ns = ts;
                e
            }
            97 => {
                let mut e = Event::new(
                    EventType::Mount,
                    host,
                    EventArgs::Mount(MountArgs {
                        source: "tmpfs".into(),
                        target: "/run/x".into(),
                        fstype: "tmpfs".into(),
                        flags: 0,
                    }),
                );
                e.ts_ns = ts;
                e
            }
            // The 1%: a shell in a pod reads /etc/shadow.
            _ => open(worker, "/etc/shadow", libc::O_RDONLY, ts),
        }
    }
}

fn workload(table: &mut ProcessTable) -> Workload {
    let (host, workers) = populate(table);
    Workload {
        host,
        workers,
        next_pid: 100_000,
        n: 0,
    }
}

fn engine() -> anyhow::Result<(SecurityEngine, Workload)> {
    let mut table = ProcessTable::new(TableConfig::default());
    let work = workload(&mut table);
    let users = UserDb::from_contents(
        "root:x:0:0::/root:/bin/bash\nnginx:x:101:101::/:/sbin/nologin\n",
        "root:x:0:\n",
    );
    let engine = SecurityEngine::new(
        rules()?,
        table,
        users,
        Arc::new(metadata()),
        Arc::new(NoMetrics),
    )
    .with_hostname("bench")
    .with_rate_limiter(RateLimiter::new(Some(RateLimit {
        rate: 10.0,
        burst: 100,
    })));
    Ok((engine, work))
}

fn rules_only(events: usize) -> anyhow::Result<()> {
    let rules = rules()?;
    let mut table = ProcessTable::new(TableConfig::default());
    let mut work = workload(&mut table);
    let users = UserDb::default();
    let meta = metadata();
    // The steady-state stream without the churn (forks/exits change the table).
    let sample: Vec<Event> = (0..100)
        .map(|_| work.next())
        .filter(|e| {
            !matches!(
                e.event_type,
                EventType::Clone | EventType::Procexit | EventType::Execve
            )
        })
        .collect();
    let mut by_type: BTreeMap<&str, (u64, f64, u64)> = BTreeMap::new();
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    let mut matched = Vec::new();
    let rounds = (events / sample.len()).max(1);
    let start = Instant::now();
    for round in 0..rounds {
        for event in &sample {
            let t = Instant::now();
            let ctx = EvalCtx::new(event, &table, &users, &meta, "bench", round as u64 + 1);
            matched.clear();
            rules.evaluate(&ctx, RuleMatching::First, &mut matched);
            let entry = by_type.entry(event.event_type.name()).or_default();
            entry.0 += 1;
            entry.1 += t.elapsed().as_secs_f64();
            entry.2 += matched.len() as u64;
            for r in &matched {
                *by_rule.entry(r.name.to_string()).or_default() += 1;
            }
        }
    }
    let total = start.elapsed().as_secs_f64();
    let n = (rounds * sample.len()) as f64;
    println!(
        "rules          {:>12.0} events/s  {:>7.0} ns/event  (RuleSet::evaluate, fixed table)",
        n / total,
        total / n * 1e9
    );
    for (t, (count, secs, hits)) in by_type {
        println!(
            "  {t:<12} {:>12.0} events/s  {:>7.0} ns/event  {:>3} rules indexed, {:.1}% matched",
            count as f64 / secs,
            secs / count as f64 * 1e9,
            rules.candidates(EventType::from_name(t).unwrap_or(EventType::Openat)),
            hits as f64 / count as f64 * 100.0
        );
    }
    for (rule, count) in &by_rule {
        println!("  matched {count:>9} × {rule}");
    }
    // exec events on a table that already holds the new program.
    let mut exec_table = ProcessTable::new(TableConfig::default());
    let mut w = workload(&mut exec_table);
    let execs: Vec<Event> = (0..100).map(|_| w.next()).collect();
    for e in &execs {
        exec_table.observe(e);
    }
    let execs: Vec<&Event> = execs
        .iter()
        .filter(|e| e.event_type == EventType::Execve)
        .collect();
    let rounds = (events / 10 / execs.len()).max(1);
    let t = Instant::now();
    for round in 0..rounds {
        for event in &execs {
            let ctx = EvalCtx::new(event, &exec_table, &users, &meta, "bench", round as u64 + 1);
            matched.clear();
            rules.evaluate(&ctx, RuleMatching::First, &mut matched);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let n = (rounds * execs.len()) as f64;
    println!(
        "  {:<12} {:>12.0} events/s  {:>7.0} ns/event  {:>3} rules indexed",
        "execve",
        n / secs,
        secs / n * 1e9,
        rules.candidates(EventType::Execve)
    );
    Ok(())
}

fn run_engine(events: usize, decode: bool) -> anyhow::Result<()> {
    let (mut engine, mut work) = engine()?;
    let clock = BootClock::with_offset(0);
    let mut alerts = Vec::new();
    let mut timed = 0.0;
    let mut alert_count = 0u64;
    let cpu0 = cpu_seconds();
    let mut done = 0;
    while done < events {
        let n = CHUNK.min(events - done);
        if decode {
            let records: Vec<Vec<u8>> =
                (0..n).map(|_| wire::encode(&work.next(), &clock)).collect();
            let t = Instant::now();
            for r in &records {
                let Ok(mut e) = wire::decode(r, &clock) else {
                    bail!("a record did not decode");
                };
                engine.handle(&mut e, &mut alerts);
                alert_count += alerts.len() as u64;
                alerts.clear();
            }
            timed += t.elapsed().as_secs_f64();
        } else {
            let mut batch: Vec<Event> = (0..n).map(|_| work.next()).collect();
            let t = Instant::now();
            for e in &mut batch {
                engine.handle(e, &mut alerts);
                alert_count += alerts.len() as u64;
                alerts.clear();
            }
            timed += t.elapsed().as_secs_f64();
        }
        done += n;
    }
    let cpu = cpu_seconds() - cpu0;
    let stats = engine.stats();
    println!(
        "{:<14} {:>12.0} events/s  {:>7.0} ns/event  matches {} alerts {} suppressed {}  table {} (evicted {})  cpu incl. event building {:.2}s",
        if decode { "decode+engine" } else { "engine" },
        events as f64 / timed,
        timed / events as f64 * 1e9,
        stats.matches,
        alert_count,
        stats.suppressed,
        engine.table().len(),
        engine.table().stats().evicted_exited,
        cpu
    );
    Ok(())
}

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("bench rules: re-running optimized (cargo run --release -p xtask)");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "xtask",
                "--",
                "bench",
                "rules",
            ])
            .args(args)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("optimized benchmark failed: {status}");
        }
        return Ok(());
    }
    let mut events = 2_000_000usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--events" => {
                events = it
                    .next()
                    .context("--events needs a value")?
                    .parse()
                    .context("--events")?;
            }
            other => {
                bail!("unknown option {other:?} (usage: cargo xtask bench rules [--events N])")
            }
        }
    }
    let rules = rules()?;
    println!(
        "bench rules: {} default rules ({} active), {events} events, 1 thread; node-agent (Falco: not installable here)",
        rules.rules().len(),
        rules.active().count()
    );
    rules_only(events)?;
    run_engine(events, false)?;
    run_engine(events, true)?;
    if let Some(hwm) = status_kib("VmHWM:") {
        println!("peak RSS {:.1} MiB", hwm as f64 / 1024.0);
    }
    Ok(())
}
