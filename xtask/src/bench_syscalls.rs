//! `cargo xtask bench syscalls`: cost our eBPF programs add to every syscall, beside
//! bpftrace doing the same counting, and the exec rate the security capture keeps up with.
//!
//! Times a tight loop of raw `getppid` syscalls (never cached by libc) under, side by side
//! in one run:
//!
//! * no program attached;
//! * an empty program on our hook (the floor: the tracing slow path every syscall takes
//!   once anything is attached to `sys_enter`);
//! * our counting program;
//! * our counting program plus the security capture (its `sys_exit` and sched programs)
//!   with the default rules run by a reader thread, as the agent runs it;
//! * bpftrace 0.17 counting per cgroup and syscall,
//!   `tracepoint:raw_syscalls:sys_enter { @[cgroup, args->id] = count(); }` (a perf
//!   tracepoint, not our raw tracepoint: its own hook cost is part of its figure).
//!
//! Then the kernel's own per-run accounting (bpf_stats) of the empty program, of one that
//! only calls the cgroup id helper, and of ours: our work split into helper and map.
//!
//! Interleaved rounds, best loop kept per setup, to damp noise from other tenants of the
//! machine; bpftrace (seconds to start) is attached once for its rounds, between
//! no-program rounds. Then an exec storm (`tests/src/exec_storm.c`, one chain per CPU in a
//! cgroup of its own) without any program and with the capture: execs/s, and how many exec
//! records were delivered or counted dropped.
//!
//! Needs root, the `ebpf` feature and an optimized build: otherwise it re-runs itself
//! through cargo with `--release --features ebpf`.

pub fn run() -> anyhow::Result<()> {
    #[cfg(feature = "ebpf")]
    if !cfg!(debug_assertions) {
        return measure::run();
    }
    use anyhow::Context as _;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "run",
            "--release",
            "--package",
            "xtask",
            "--features",
            "ebpf",
        ])
        .args(["--", "bench", "syscalls"])
        .status()
        .context("re-running xtask with --release --features ebpf")?;
    anyhow::ensure!(status.success(), "bench syscalls failed: {status}");
    Ok(())
}

#[cfg(feature = "ebpf")]
mod measure {
    use std::io::{BufRead as _, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Instant;

    use anyhow::{Context as _, bail, ensure};
    use node_agent::host::HostPaths;
    use node_agent::security::config::SecurityConfig;
    use node_agent::security::event::EventType;
    use node_agent::syscalls::SyscallsConfig;
    use node_agent::syscalls::loader::{
        CaptureSettings, LoadedProgram, PinnedMaps, enable_run_time_stats,
    };
    use node_agent::syscalls::security::capture::{self, Capture};

    const CALLS: u64 = 2_000_000;
    const ROUNDS: usize = 11;
    /// Loops timed by the kernel's bpf_stats, per program.
    const STATS_ROUNDS: u64 = 3;
    /// Target of issue 15: our own work at most this many ns per syscall over the floor.
    const TARGET_OVER_FLOOR_NS: f64 = 30.0;
    /// Exec storm: execs per chain, one chain per CPU.
    const STORM_PER_CHAIN: u64 = 25_000;
    const BPFTRACE_PROGRAM: &str =
        "tracepoint:raw_syscalls:sys_enter { @[cgroup, args->id] = count(); }";

    /// ns per syscall of one loop of [`CALLS`] getppid.
    fn ns_per_syscall() -> f64 {
        let start = Instant::now();
        for _ in 0..CALLS {
            // SAFETY: getppid has no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        start.elapsed().as_nanos() as f64 / CALLS as f64
    }

    fn remove_pins(pin_path: &Path) {
        for map in ["COUNTS", "STATS"] {
            let _ = std::fs::remove_file(pin_path.join(map));
        }
        let _ = std::fs::remove_dir(pin_path);
    }

    /// ns per run of the attached program as the kernel accounts it (bpf_stats).
    fn program_ns(program: &LoadedProgram) -> anyhow::Result<f64> {
        let stats = enable_run_time_stats()?;
        let (time0, runs0) = program.run_stats()?;
        for _ in 0..STATS_ROUNDS {
            ns_per_syscall();
        }
        let (time1, runs1) = program.run_stats()?;
        drop(stats);
        Ok((time1 - time0).as_nanos() as f64 / (runs1 - runs0).max(1) as f64)
    }

    /// The capture as the agent runs it: default rules, no outputs but a count of the
    /// exec records of one cgroup (the storm's).
    struct Security {
        config: SecurityConfig,
        capture: Option<Capture>,
        /// Exec records of `storm_cgroup` the reader decoded.
        execs_seen: Arc<AtomicU64>,
        storm_cgroup: Arc<AtomicU64>,
        _runtime: tokio::runtime::Runtime,
    }

    /// The capture attached, its reader running.
    struct Attached {
        program: LoadedProgram,
        reader: capture::CaptureHandle,
    }

    impl Security {
        fn new() -> anyhow::Result<Security> {
            let mut config = SecurityConfig {
                enabled: true,
                ..SecurityConfig::default()
            };
            config.outputs.stdout.enabled = false;
            let config =
                node_agent::syscalls::security::with_v2_cgroup_root(config, &HostPaths::default());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("tokio runtime")?;
            let mut capture = Capture::from_config(&config, runtime.handle(), None)
                .context("engine from the default rules")?;
            let execs_seen = Arc::new(AtomicU64::new(0));
            let storm_cgroup = Arc::new(AtomicU64::new(u64::MAX));
            capture.event_observer = Some(Box::new({
                let (seen, cgroup) = (Arc::clone(&execs_seen), Arc::clone(&storm_cgroup));
                move |e| {
                    if e.event_type == EventType::Execve
                        && e.cgroup_id == cgroup.load(Ordering::Relaxed)
                    {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            Ok(Security {
                config,
                capture: Some(capture),
                execs_seen,
                storm_cgroup,
                _runtime: runtime,
            })
        }

        fn attach(&mut self, syscalls: &SyscallsConfig) -> anyhow::Result<Attached> {
            let capture = self.capture.take().context("capture already attached")?;
            let settings =
                CaptureSettings::from_security(&self.config, capture.engine.required_event_types());
            let mut program = LoadedProgram::load_with_capture(syscalls, &settings)
                .context("loading the capture")?;
            let events = program.take_events().context("EVENTS map")?;
            let reader = capture::spawn(events, capture)?;
            Ok(Attached { program, reader })
        }

        fn detach(&mut self, attached: Attached) -> anyhow::Result<()> {
            let Attached { program, reader } = attached;
            self.capture = Some(reader.stop().context("the reader thread panicked")?);
            drop(program);
            Ok(())
        }
    }

    /// bpftrace running the counting one-liner until dropped (SIGINT, then wait).
    struct Bpftrace(Child);

    /// What bpftrace 0.17 prints on stderr once every probe is attached, when
    /// `__BPFTRACE_NOTIFY_PROBES_ATTACHED` is set (the hook of its own runtime tests).
    /// "Attaching 1 probe..." on stdout comes *before* the attach: timing loops after it
    /// measured syscalls without bpftrace (its figure was then close to none).
    const BPFTRACE_ATTACHED: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";
    /// bpftrace attaches in a few seconds, even on a loaded machine.
    const BPFTRACE_ATTACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

    impl Bpftrace {
        fn start() -> anyhow::Result<Bpftrace> {
            ensure_tracefs()?;
            let mut child = Command::new("bpftrace")
                .args(["-e", BPFTRACE_PROGRAM])
                .env(BPFTRACE_ATTACHED, "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting bpftrace (apt-get install bpftrace)")?;
            let stdout = child.stdout.take().context("bpftrace stdout")?;
            let stderr = child.stderr.take().context("bpftrace stderr")?;
            // Drains the map it prints at exit, so that it never blocks on a full pipe.
            std::thread::spawn(move || BufReader::new(stdout).lines().for_each(drop));
            // A thread reads its stderr: the marker (or the end of the stream) comes through
            // a channel, so that a bpftrace that neither attaches nor exits fails the bench
            // after BPFTRACE_ATTACH_TIMEOUT instead of hanging it; later lines (errors) are
            // forwarded, which also keeps the pipe drained.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut said = Vec::new();
                let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
                for line in lines.by_ref() {
                    if line.trim() == BPFTRACE_ATTACHED {
                        let _ = tx.send(Ok(()));
                        break;
                    }
                    said.push(line);
                }
                // Err: the stream ended before the marker.
                let _ = tx.send(Err(said.join("\n")));
                for line in lines {
                    eprintln!("bpftrace: {line}");
                }
            });
            let failure = match rx.recv_timeout(BPFTRACE_ATTACH_TIMEOUT) {
                Ok(Ok(())) => None,
                Ok(Err(said)) => Some(format!("bpftrace did not attach: {said}")),
                Err(_) => Some(format!(
                    "bpftrace did not attach within {BPFTRACE_ATTACH_TIMEOUT:?}"
                )),
            };
            if let Some(failure) = failure {
                let _ = child.kill();
                let _ = child.wait();
                bail!(failure);
            }
            Ok(Bpftrace(child))
        }
    }

    impl Drop for Bpftrace {
        fn drop(&mut self) {
            if let Ok(pid) = i32::try_from(self.0.id()) {
                // SAFETY: signalling our own child, still unwaited (its pid is not reused).
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            let _ = self.0.wait();
        }
    }

    /// bpftrace's tracepoints live in tracefs; mount it where it is missing.
    fn ensure_tracefs() -> anyhow::Result<()> {
        let tracing = Path::new("/sys/kernel/tracing");
        if tracing.join("events").is_dir() {
            return Ok(());
        }
        let status = Command::new("mount")
            .args(["-t", "tracefs", "nodev"])
            .arg(tracing)
            .status()
            .context("running mount")?;
        ensure!(
            status.success(),
            "mount -t tracefs nodev {tracing:?}: {status}"
        );
        Ok(())
    }

    /// A cgroup of its own for the storm, removed on drop.
    struct StormCgroup(PathBuf);

    impl StormCgroup {
        fn new() -> anyhow::Result<StormCgroup> {
            let root = node_agent::syscalls::cgroups::detect_v2_root(&HostPaths::default())
                .context("no cgroup v2 hierarchy")?;
            let dir = root.join(format!("node-agent-bench-storm-{}", std::process::id()));
            std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            Ok(StormCgroup(dir))
        }

        fn id(&self) -> anyhow::Result<u64> {
            use std::os::unix::fs::MetadataExt as _;
            Ok(std::fs::metadata(&self.0).context("stat the cgroup")?.ino())
        }
    }

    impl Drop for StormCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    fn line(name: &str, ns: f64, none: f64, floor: f64) {
        println!(
            "  {name:<34} {ns:6.1} ns/syscall  +{:5.1} over none  {:+6.1} over the floor",
            ns - none,
            ns - floor
        );
    }

    pub fn run() -> anyhow::Result<()> {
        node_agent::syscalls::support::check(&HostPaths::default())
            .context("eBPF not usable here")?;
        let pin_path = PathBuf::from(format!(
            "/sys/fs/bpf/node-agent-bench-{}",
            std::process::id()
        ));
        let config = SyscallsConfig {
            pin_path: pin_path.clone(),
            ..SyscallsConfig::default()
        };
        let mut security = Security::new()?;
        println!(
            "bench syscalls: {CALLS} raw getppid per loop, {ROUNDS} interleaved rounds of (none, empty, ours, ours+capture), best loop kept"
        );
        // Interleaved rounds, so that drift in the machine's load hits every setup alike;
        // the minimum is the least disturbed round.
        let mut best = [f64::INFINITY; 4];
        // Per round, ours minus the floor measured right before it: the median of these
        // paired differences is less hostage to one lucky floor loop than best - best.
        let mut paired = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            best[0] = best[0].min(ns_per_syscall());
            let baseline =
                LoadedProgram::load_baseline(&config).context("loading the empty program")?;
            let floor_round = ns_per_syscall();
            best[1] = best[1].min(floor_round);
            drop(baseline);
            let program = LoadedProgram::load(&config).context("loading the eBPF program")?;
            let ours_round = ns_per_syscall();
            best[2] = best[2].min(ours_round);
            paired.push(ours_round - floor_round);
            drop(program);
            let attached = security.attach(&config)?;
            best[3] = best[3].min(ns_per_syscall());
            security.detach(attached)?;
        }
        let [none, floor, ours, capture] = best;
        // bpftrace: attached once (it takes seconds to start), its rounds between rounds
        // with nothing attached (compared with `none` above, to see drift).
        let (bpftrace, none_again) = {
            let mut none_again = f64::INFINITY;
            let mut with = f64::INFINITY;
            for _ in 0..3 {
                none_again = none_again.min(ns_per_syscall());
                let tracer = Bpftrace::start()?;
                for _ in 0..ROUNDS / 3 {
                    with = with.min(ns_per_syscall());
                }
                drop(tracer);
            }
            (with, none_again)
        };

        let baseline = LoadedProgram::load_baseline(&config)?;
        let floor_ns_run = program_ns(&baseline)?;
        drop(baseline);
        let helper_only = LoadedProgram::load_cgroup_id_only(&config)?;
        let helper_ns_run = program_ns(&helper_only)?;
        drop(helper_only);
        let program = LoadedProgram::load(&config)?;
        let ours_ns_run = program_ns(&program)?;
        let counted: u64 = PinnedMaps::open(&pin_path)?
            .counts()?
            .into_iter()
            .filter(|(_, nr, _)| *nr == libc::SYS_getppid as u64)
            .map(|(_, _, c)| c)
            .sum();
        drop(program);

        line("no program attached", none, none, floor);
        line("empty program (hook floor)", floor, none, floor);
        line("ours: counting", ours, none, floor);
        line("ours: counting + capture + rules", capture, none, floor);
        line("bpftrace @[cgroup, args->id]", bpftrace, none, floor);
        println!(
            "  (no program attached, bpftrace's rounds: {none_again:.1} ns/syscall; ours/bpftrace over none: counting {:.2}, + capture {:.2})",
            (ours - none) / (bpftrace - none),
            (capture - none) / (bpftrace - none)
        );
        println!(
            "  kernel bpf_stats per run: empty {floor_ns_run:.1} ns, cgroup id helper only {helper_ns_run:.1} ns, ours {ours_ns_run:.1} ns -> our program's own work {:.1} ns (cgroup id {:.1}, counter map {:.1})",
            ours_ns_run - floor_ns_run,
            helper_ns_run - floor_ns_run,
            ours_ns_run - helper_ns_run
        );
        // The verdict uses bpf_stats: the kernel's own accounting of the program's run time,
        // which other tenants of a shared machine disturb far less than the wall clock
        // (whose best-of-rounds differences swung by +-40 ns at load 5).
        let own_work = ours_ns_run - floor_ns_run;
        println!(
            "  our own work over the floor: {own_work:.1} ns per run by bpf_stats (target <= {TARGET_OVER_FLOOR_NS} ns: {}); wall clock {:.1} ns/syscall counting, {:.1} with capture",
            if own_work <= TARGET_OVER_FLOOR_NS {
                "met"
            } else {
                "MISSED"
            },
            ours - floor,
            capture - floor
        );
        paired.sort_by(f64::total_cmp);
        println!(
            "  wall clock per round, ours minus the floor just before: median {:.1} ns/syscall (range {:.1} to {:.1})",
            paired[paired.len() / 2],
            paired[0],
            paired[paired.len() - 1]
        );
        // Our counting program was attached for one loop per round plus the bpf_stats
        // loops, the capture's for one per round (other processes' getppid add to it).
        let expected = CALLS * (2 * ROUNDS as u64 + STATS_ROUNDS);
        println!("  getppid counted while attached: {counted} (>= {expected} expected)");
        ensure!(counted >= expected, "the program missed syscalls");

        exec_storm(&mut security, &config)?;
        remove_pins(&pin_path);
        Ok(())
    }

    /// Execs/s without any program and with the capture, every exec delivered or counted.
    fn exec_storm(security: &mut Security, config: &SyscallsConfig) -> anyhow::Result<()> {
        if let Some(reason) = node_agent_tests::exec_storm::unavailable() {
            println!("  exec storm skipped: {reason}");
            return Ok(());
        }
        let dir = tempfile::tempdir().context("tempdir")?;
        let driver = node_agent_tests::exec_storm::build(dir.path())?;
        let cgroup = StormCgroup::new()?;
        let procs = cgroup.0.join("cgroup.procs");
        let chains = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        let bare = node_agent_tests::exec_storm::run(&driver, &procs, chains, STORM_PER_CHAIN)?;
        security.storm_cgroup.store(cgroup.id()?, Ordering::Relaxed);
        security.execs_seen.store(0, Ordering::Relaxed);
        let attached = security.attach(config)?;
        let dropped_before = attached.program.events_dropped()?;
        let storm = node_agent_tests::exec_storm::run(&driver, &procs, chains, STORM_PER_CHAIN)?;
        let dropped = attached.program.events_dropped()? - dropped_before;
        let drain_start = Instant::now();
        // stop() drains what is left in the ring buffer.
        security.detach(attached)?;
        let seen = security.execs_seen.load(Ordering::Relaxed);
        println!(
            "  exec storm ({chains} chains of {STORM_PER_CHAIN} self-execs): no program {:.0} execs/s; capture + rules {:.0} execs/s, {} execs: {seen} delivered, {dropped} ring-buffer drops counted (all kinds), reader drained the rest in {:.2} s",
            bare.per_second(),
            storm.per_second(),
            storm.execs,
            drain_start.elapsed().as_secs_f64()
        );
        ensure!(
            seen <= storm.execs && seen + dropped >= storm.execs,
            "exec records neither delivered nor counted as dropped"
        );
        Ok(())
    }
}
