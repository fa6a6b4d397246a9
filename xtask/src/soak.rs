//! `cargo xtask soak [--minutes N | --seconds N] [--seed S]`: a chaos soak of the real
//! `node-agent` binary (debug build, through `agent_proc`).
//!
//! Two agents share the lock file and the state directory (as the DaemonSet's hostPaths
//! do on a node); a load writer appends kubelet-style pod logs (CRI and docker, partials,
//! rotation with gzip); both sinks of the config are real-protocol receivers (Loki and
//! Elasticsearch) and pod metadata comes from the fake API server. At seeded random
//! moments one fault is injected: a SIGTERM handover (the leader terminates, the standby
//! takes over, a new standby starts), a SIGKILL of the leader, a sink down / answering 500 /
//! 429 / slow, the state dir's filesystem (a small tmpfs) full, the API server down.
//!
//! At the end, with every fault cleared, it checks:
//! - 0 lost: every generated line id reached each sink (both sinks get every line);
//! - duplicates within the bound: a line may be delivered twice only if it was not yet
//!   confirmed by that sink when a leader was killed or handed over, or, when it was
//!   killed (or exited), if it was confirmed within the last `logs.checkpoint_min_interval`
//!   (plus a second for the write itself): its position may not be on disk yet. The bound
//!   is the sum, over those events, of the lines generated but not yet in that sink at the
//!   event, plus for kills what that sink stored in that last window;
//! - no stuck leader: after each handover or kill, a standby leads within 15 s;
//! - memory flat: the peak RSS of the agents in the last quarter of the run is at most
//!   1.5× that of the first quarter plus 16 MiB.
//!
//! It prints the seed first (re-run a finding with `--seed`) and a table at the end, and
//! exits non-zero on a violation. Needs root (it mounts the tmpfs).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use node_agent_tests::agent_proc::{AgentProc, sample};
use node_agent_tests::loggen::{ContainerLog, Format, LineMix, LoadWriter, message_id};
use node_agent_tests::receivers::apiserver::{self, ApiServer, INITIAL_TOKEN, PodBuilder};
use node_agent_tests::receivers::{EsReceiver, LokiReceiver};

const ACQUIRED: &str = "acquired leader lock: now leader";
const STANDBY: &str = "leader lock is held: waiting as standby";
/// A standby must lead this soon after the leader went away (a "stuck leader" otherwise).
const TAKEOVER: Duration = Duration::from_secs(15);
/// Once faults stop, everything must be delivered within this.
const SETTLE: Duration = Duration::from_secs(90);
const PODS: usize = 4;
/// How long a confirmed line's position may wait to be on disk: the agent's default
/// `logs.checkpoint_min_interval` plus a second for the write and the sampling.
fn checkpoint_lag() -> Duration {
    node_agent::logs::LogsConfig::default().checkpoint_min_interval + Duration::from_secs(1)
}
/// Modest: the debug build on a loaded 2-core CI machine must keep up.
const LINES_PER_SEC: u64 = 200;
const ROTATE_EVERY: u64 = 500;
/// Size of the state dir's tmpfs.
const STATE_FS: &str = "size=8m";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Handover,
    KillLeader,
    SinkDown,
    Sink500,
    Sink429,
    SinkSlow,
    StateFsFull,
    ApiServerDown,
}

const FAULTS: &[Fault] = &[
    Fault::Handover,
    Fault::KillLeader,
    Fault::SinkDown,
    Fault::Sink500,
    Fault::Sink429,
    Fault::SinkSlow,
    Fault::StateFsFull,
    Fault::ApiServerDown,
];

/// splitmix64: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

struct Options {
    duration: Duration,
    seed: u64,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut o = Options {
        duration: Duration::from_secs(180),
        seed,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match *arg {
            "--minutes" => {
                let m: f64 = value()?.parse().context("--minutes")?;
                if !(m > 0.0 && m < 10_000.0) {
                    bail!("--minutes must be in (0, 10000)");
                }
                o.duration = Duration::from_secs_f64(m * 60.0);
            }
            "--seconds" => o.duration = Duration::from_secs(value()?.parse().context("--seconds")?),
            "--seed" => o.seed = value()?.parse().context("--seed")?,
            other => bail!(
                "unknown option {other:?}; usage: cargo xtask soak [--minutes N | --seconds N] [--seed S]"
            ),
        }
    }
    Ok(o)
}

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    let o = parse_args(args)?;
    println!(
        "soak: seed {} for {:?} (re-run with `cargo xtask soak --seconds {} --seed {}`)",
        o.seed,
        o.duration,
        o.duration.as_secs(),
        o.seed
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(soak(o))
}

/// The state dir on its own small tmpfs, unmounted when dropped.
struct StateFs {
    path: PathBuf,
}

impl StateFs {
    fn mount(path: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(path)?;
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("{STATE_FS},nosuid,nodev"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!(
                "mounting a tmpfs on {} failed ({status}); the soak needs root",
                path.display()
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    fn filler(&self) -> PathBuf {
        self.path.join("soak-filler")
    }

    /// Fills the filesystem to the last byte.
    fn fill(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.filler())?;
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e).context("filling the state fs"),
            }
        }
        // Also the last partial block.
        while let Ok(n) = f.write(&chunk[..512]) {
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for StateFs {
    fn drop(&mut self) {
        self.free();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// One agent process and the peak RSS samples taken of it.
struct Agent {
    proc: AgentProc,
    /// Where its stderr is written when it is dropped (replaced or at the end), so a
    /// violation can be traced through every agent that ran.
    log_dir: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let path = self.log_dir.join(format!("{}.log", self.proc.name));
        if let Err(e) = std::fs::write(&path, self.proc.log_text()) {
            eprintln!("soak: writing {}: {e}", path.display());
        }
    }
}

struct Rss {
    /// (seconds since start, KiB) of every sample, over all agents.
    samples: Vec<(f64, u64)>,
    max_kib: u64,
}

fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct World {
    config: PathBuf,
    loki: LokiReceiver,
    es: EsReceiver,
    api: ApiServer,
    state: StateFs,
    leader: Agent,
    standby: Agent,
    log_dir: PathBuf,
    next_name: usize,
    started: Instant,
    rss: Rss,
    violations: Vec<String>,
    /// Per sink name: lines unconfirmed at kills and handovers (the duplicate bound).
    dup_bound: BTreeMap<&'static str, u64>,
    /// (when, Loki entries, Elasticsearch writes) of the last seconds, for the part of
    /// the bound that confirmed but not yet checkpointed lines make up.
    stored: std::collections::VecDeque<(Instant, u64, u64)>,
    counts: BTreeMap<Fault, u64>,
    generated: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl World {
    async fn start_agent(&mut self) -> anyhow::Result<Agent> {
        let name = format!("agent-{}", self.next_name);
        self.next_name += 1;
        let proc = AgentProc::start(&name, &self.config).await?;
        Ok(Agent {
            proc,
            log_dir: self.log_dir.clone(),
        })
    }

    fn sample_rss(&mut self) {
        let t = self.started.elapsed().as_secs_f64();
        for agent in [&self.leader, &self.standby] {
            if let Some(kib) = rss_kib(agent.proc.pid().as_raw()) {
                self.rss.samples.push((t, kib));
                self.rss.max_kib = self.rss.max_kib.max(kib);
            }
        }
    }

    fn sample_stored(&mut self) {
        let now = Instant::now();
        self.stored.push_back((
            now,
            self.loki.entry_count() as u64,
            self.es.write_count() as u64,
        ));
        while self
            .stored
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > checkpoint_lag() * 2)
        {
            self.stored.pop_front();
        }
    }

    /// Lines generated so far that a sink has not stored yet: what a leader going away
    /// now may have read and sent but not had confirmed, i.e. may send again. A leader
    /// that is killed (no final checkpoint) may also send again what the sinks stored in
    /// the last `checkpoint_lag()`.
    fn note_unconfirmed(&mut self, killed: bool) {
        let generated = self.generated.load(std::sync::atomic::Ordering::SeqCst);
        let loki = distinct(&loki_ids(&self.loki)) as u64;
        let es = self.es.docs().len() as u64;
        let (mut loki_recent, mut es_recent) = (0, 0);
        if killed {
            self.sample_stored();
            let (now, lag) = (Instant::now(), checkpoint_lag());
            let (_, loki_now, es_now) = *self.stored.back().expect("just sampled");
            // The newest sample at least `lag` old (the oldest kept otherwise).
            let (_, loki_then, es_then) = self
                .stored
                .iter()
                .rev()
                .find(|(t, _, _)| now.duration_since(*t) >= lag)
                .or(self.stored.front())
                .copied()
                .expect("just sampled");
            loki_recent = loki_now.saturating_sub(loki_then);
            es_recent = es_now.saturating_sub(es_then);
        }
        *self.dup_bound.entry("loki").or_default() += generated.saturating_sub(loki) + loki_recent;
        *self.dup_bound.entry("elasticsearch").or_default() +=
            generated.saturating_sub(es) + es_recent;
    }

    /// An agent that left on its own (a subsystem failure ends leadership with a non-zero
    /// exit, by design) is replaced, as kubelet restarts the container.
    async fn replace_exited(&mut self) -> anyhow::Result<()> {
        let leader_gone = self
            .leader
            .proc
            .wait(Duration::from_millis(1))
            .await
            .is_ok();
        let standby_gone = self
            .standby
            .proc
            .wait(Duration::from_millis(1))
            .await
            .is_ok();
        if leader_gone {
            println!(
                "  {} exited on its own; restarting it",
                self.leader.proc.name
            );
            self.note_unconfirmed(true);
            if standby_gone {
                self.standby = self.start_agent().await?;
            }
            let new_standby = self.start_agent().await?;
            let old = std::mem::replace(&mut self.leader, new_standby);
            drop(old);
            // Whichever of the two leads now is the leader.
            self.sort_leader().await?;
        } else if standby_gone {
            println!(
                "  {} exited on its own; restarting it",
                self.standby.proc.name
            );
            self.standby = self.start_agent().await?;
        }
        Ok(())
    }

    async fn sort_leader(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + TAKEOVER;
        loop {
            for swap in [false, true] {
                let agent = if swap { &self.standby } else { &self.leader };
                if let Ok(Some(1.0)) = agent.proc.metric("node_agent_leader").await {
                    if swap {
                        std::mem::swap(&mut self.leader, &mut self.standby);
                    }
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.violations.push(format!(
                    "stuck leader: neither agent leads after a restart\n--- {}:\n{}\n--- {}:\n{}",
                    self.leader.proc.name,
                    tail(&self.leader.proc.log_text()),
                    self.standby.proc.name,
                    tail(&self.standby.proc.log_text()),
                ));
                bail!("no leader");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn inject(&mut self, fault: Fault, rng: &mut Rng) -> anyhow::Result<()> {
        *self.counts.entry(fault).or_default() += 1;
        let sink_name = if rng.next().is_multiple_of(2) {
            "loki"
        } else {
            "elasticsearch"
        };
        let sink = sink_of(self, sink_name);
        let hold = rng.millis(1000, 6000);
        let t = self.started.elapsed().as_secs_f64();
        match fault {
            Fault::Handover | Fault::KillLeader => {
                let what = if fault == Fault::Handover {
                    "SIGTERM"
                } else {
                    "SIGKILL"
                };
                println!("{t:7.1}s {what} leader {}", self.leader.proc.name);
                self.note_unconfirmed(fault == Fault::KillLeader);
                if fault == Fault::Handover {
                    self.leader.proc.terminate()?;
                } else {
                    self.leader.proc.kill()?;
                }
                // As a rollout: the new pod starts while the old one goes; the standby
                // that waited takes over.
                let new = self.start_agent().await?;
                let standby = std::mem::replace(&mut self.standby, new);
                let old = std::mem::replace(&mut self.leader, standby);
                self.after_leader_left(what, old).await?;
            }
            Fault::SinkDown => {
                println!("{t:7.1}s {sink_name} down for {hold:?}");
                sink.set_down(true);
                self.hold(hold).await?;
                sink_of(self, sink_name).set_down(false);
            }
            Fault::Sink500 => {
                let n = 1 + (rng.next() % 20) as usize;
                println!("{t:7.1}s {sink_name} answers 500 to the next {n} requests");
                sink.fail_next(n, 500);
            }
            Fault::Sink429 => {
                let n = 1 + (rng.next() % 10) as usize;
                println!("{t:7.1}s {sink_name} answers 429 (Retry-After: 1) to the next {n}");
                sink.fail_next_retry_after(n, 429, 1);
            }
            Fault::SinkSlow => {
                let delay = rng.millis(200, 3000);
                println!("{t:7.1}s {sink_name} answers after {delay:?} for {hold:?}");
                sink.set_delay(delay);
                self.hold(hold).await?;
                sink_of(self, sink_name).set_delay(Duration::ZERO);
            }
            Fault::StateFsFull => {
                println!("{t:7.1}s state fs full for {hold:?}");
                self.state.fill()?;
                self.hold(hold).await?;
                self.state.free();
            }
            Fault::ApiServerDown => {
                let hold = rng.millis(1000, 10_000);
                println!("{t:7.1}s API server down for {hold:?}");
                self.api.set_down(true).await?;
                self.hold(hold).await?;
                self.api.set_down(false).await?;
            }
        }
        Ok(())
    }

    /// `self.leader` is the former standby, `self.standby` the agent just started.
    async fn after_leader_left(&mut self, what: &str, mut old: Agent) -> anyhow::Result<()> {
        match old.proc.wait(Duration::from_secs(30)).await {
            Ok(status) if what == "SIGTERM" && !status.success() => self.violations.push(format!(
                "{} exited {status} after SIGTERM\n{}",
                old.proc.name,
                tail(&old.proc.log_text())
            )),
            Ok(_) => {}
            Err(e) => self.violations.push(format!("{what}: {e:#}")),
        }
        // Whichever waiting agent the kernel lets lock first leads: usually the standby
        // that was blocked in flock, but the agent started just now may win the race (a
        // woken flock waiter retries; it is not handed the lock), which is as good.
        let deadline = Instant::now() + TAKEOVER;
        loop {
            let acquired = |a: &Agent| a.proc.events().iter().any(|e| e.message == ACQUIRED);
            if acquired(&self.leader) {
                return Ok(());
            }
            if acquired(&self.standby) {
                println!(
                    "  {} (just started) took the lock before the waiting {}",
                    self.standby.proc.name, self.leader.proc.name
                );
                std::mem::swap(&mut self.leader, &mut self.standby);
                return Ok(());
            }
            // It may have exited itself (a failing subsystem): `hold` restarts it.
            if self
                .leader
                .proc
                .wait(Duration::from_millis(1))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.violations.push(format!(
                    "stuck leader: neither {} nor {} took over within {TAKEOVER:?} after {what} of {}\n--- {}:\n{}\n--- {}:\n{}\n--- {}:\n{}",
                    self.leader.proc.name,
                    self.standby.proc.name,
                    old.proc.name,
                    self.leader.proc.name,
                    tail(&self.leader.proc.log_text()),
                    self.standby.proc.name,
                    tail(&self.standby.proc.log_text()),
                    old.proc.name,
                    tail(&old.proc.log_text()),
                ));
                bail!("no leader");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits `d`, sampling memory and replacing agents that exited.
    async fn hold(&mut self, d: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            // Often enough for `stored` to resolve `checkpoint_lag()`.
            tokio::time::sleep(Duration::from_millis(100).min(until - Instant::now())).await;
            self.sample_stored();
            self.sample_rss();
            self.replace_exited().await?;
        }
        Ok(())
    }
}

fn sink_of<'a>(w: &'a World, name: &str) -> &'a node_agent_tests::receivers::Server {
    if name == "loki" {
        w.loki.server()
    } else {
        w.es.server()
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn loki_ids(loki: &LokiReceiver) -> Vec<String> {
    loki.lines()
        .iter()
        .filter_map(|l| message_id(l).map(str::to_string))
        .collect()
}

fn distinct(ids: &[String]) -> usize {
    ids.iter().collect::<std::collections::HashSet<_>>().len()
}

/// Count per id.
fn tally(ids: impl IntoIterator<Item = String>) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id).or_default() += 1;
    }
    m
}

async fn soak(o: Options) -> anyhow::Result<()> {
    let mut rng = Rng(o.seed);
    let root = tempfile::tempdir()?;
    // Kept after the run: every agent's stderr and the lost ids, to trace a violation.
    let log_dir = std::env::temp_dir().join(format!("node-agent-soak-{}", o.seed));
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let pods_dir = root.path().join("pods");
    std::fs::create_dir_all(&pods_dir)?;
    let state = StateFs::mount(&root.path().join("state"))?;
    let lock_file = root.path().join("run/leader.lock");

    let loki = LokiReceiver::start().await?;
    // Loki accepts out-of-order writes by default since 2.4 (`unordered_writes`); a
    // replay after a kill is out of order by nature.
    loki.set_enforce_order(false);
    let es = EsReceiver::start().await?;
    let api = ApiServer::start().await?;
    api.upsert(apiserver::node("test-node", &[]));
    api.upsert(apiserver::namespace("soak", &[], &[]));
    let mut logs = Vec::new();
    for i in 0..PODS {
        let format = if i % 2 == 1 {
            Format::Docker
        } else {
            Format::Cri
        };
        let pod = format!("pod{i}");
        let log = ContainerLog::create(&pods_dir, "soak", &pod, "app", format)?;
        let dir_name = log
            .pod_dir()
            .file_name()
            .and_then(|n| n.to_str())
            .context("pod dir name")?
            .to_string();
        let uid = dir_name.rsplit('_').next().context("pod uid")?;
        api.upsert(
            PodBuilder::new("soak", &pod, uid, "test-node")
                .container("app", "example/app:1")
                .build(),
        );
        logs.push(log);
    }
    let kubeconfig = root.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig, INITIAL_TOKEN)?;
    let retry = "retry: {initial_backoff_ms: 20, max_backoff_ms: 1000}, timeout_secs: 10";
    let yaml = format!(
        "logs:\n  pods_dir: {pods_dir:?}\n  state_dir: {:?}\n  rescan_interval: 200ms\n  batch_timeout: 100ms\n\
         sinks:\n  - {{type: loki, name: loki, url: '{}', {retry}}}\n  \
         - {{type: elasticsearch, name: elasticsearch, url: '{}', {retry}}}\n\
         handover:\n  lock_file: {lock_file:?}\n\
         kubernetes:\n  kubeconfig: {kubeconfig:?}\n  watch_timeout: 5s\n  backoff_initial: 50ms\n  \
         backoff_max: 1s\n  connect_timeout: 2s\n",
        state.path,
        loki.url(),
        es.url(),
    );
    let config = root.path().join("config.yaml");
    std::fs::write(&config, yaml)?;

    let first = AgentProc::start("agent-0", &config).await?;
    first.wait_for_event(ACQUIRED, TAKEOVER).await?;
    let second = AgentProc::start("agent-1", &config).await?;
    second.wait_for_event(STANDBY, TAKEOVER).await?;
    // Lines start once a leader runs: a fresh agent (no checkpoint) does not read files
    // rotated before it started, which would count as lost here but is by design.
    let writer = LoadWriter::spawn(logs, LINES_PER_SEC, Some(ROTATE_EVERY), LineMix::default());
    let generated = writer.lines_counter();
    let mut w = World {
        config,
        loki,
        es,
        api,
        state,
        leader: Agent {
            proc: first,
            log_dir: log_dir.clone(),
        },
        standby: Agent {
            proc: second,
            log_dir: log_dir.clone(),
        },
        log_dir: log_dir.clone(),
        next_name: 2,
        started: Instant::now(),
        rss: Rss {
            samples: Vec::new(),
            max_kib: 0,
        },
        violations: Vec::new(),
        dup_bound: BTreeMap::new(),
        stored: std::collections::VecDeque::new(),
        counts: BTreeMap::new(),
        generated,
    };

    let mut outcome = Ok(());
    while w.started.elapsed() < o.duration {
        let gap = rng.millis(1000, 5000);
        if let Err(e) = w.hold(gap).await {
            outcome = Err(e);
            break;
        }
        if w.started.elapsed() >= o.duration {
            break;
        }
        let fault = rng.pick(FAULTS);
        if let Err(e) = w.inject(fault, &mut rng).await {
            outcome = Err(e);
            break;
        }
    }
    let run_secs = w.started.elapsed().as_secs_f64();
    // Clear every fault, stop the load, let the leader catch up.
    w.loki.server().set_down(false);
    w.es.server().set_down(false);
    w.loki.server().set_delay(Duration::ZERO);
    w.es.server().set_delay(Duration::ZERO);
    w.loki.server().clear_failures();
    w.es.server().clear_failures();
    w.state.free();
    w.api.set_down(false).await?;
    let logs = writer.stop()?;
    let expected: std::collections::HashSet<String> = logs
        .iter()
        .flat_map(|l| l.expected().keys().cloned())
        .collect();
    let deadline = Instant::now() + SETTLE;
    if outcome.is_ok() {
        loop {
            let loki = tally(loki_ids(&w.loki));
            // Elasticsearch `_id`s are the agent's, the line id is in `message`.
            let es: std::collections::HashSet<String> =
                w.es.messages()
                    .iter()
                    .filter_map(|m| message_id(m).map(str::to_string))
                    .collect();
            let done = expected
                .iter()
                .all(|id| loki.contains_key(id) && es.contains(id));
            if done || Instant::now() > deadline {
                println!(
                    "settled after {:.1?}: loki {} / es {} of {} ids",
                    SETTLE.saturating_sub(deadline.saturating_duration_since(Instant::now())),
                    loki.len(),
                    es.len(),
                    expected.len()
                );
                break;
            }
            if let Err(e) = w.hold(Duration::from_millis(500)).await {
                outcome = Err(e);
                break;
            }
        }
    }
    let leader_metrics = w.leader.proc.metrics().await.unwrap_or_default();
    for agent in [&w.leader, &w.standby] {
        let _ = agent.proc.terminate();
    }
    for agent in [&mut w.leader, &mut w.standby] {
        let _ = agent.proc.wait(Duration::from_secs(30)).await;
    }

    // ---- verdict ----
    let loki = tally(loki_ids(&w.loki));
    // Elasticsearch: every successful write of an `_id` (the agent's ids are derived from
    // the record, so a replay overwrites: count writes, not documents).
    let es_docs: HashMap<String, String> =
        w.es.docs()
            .into_iter()
            .filter_map(|(_, id, v)| {
                let line = v["message"].as_str()?;
                Some((id, message_id(line)?.to_string()))
            })
            .collect();
    let es_writes = w.es.writes();
    let mut es: HashMap<String, u64> = HashMap::new();
    for (doc_id, line_id) in &es_docs {
        *es.entry(line_id.clone()).or_default() +=
            es_writes.get(doc_id).copied().unwrap_or(1) as u64;
    }
    let mut rows = Vec::new();
    for (name, got) in [("loki", &loki), ("elasticsearch", &es)] {
        let lost: Vec<&String> = expected
            .iter()
            .filter(|id| !got.contains_key(*id))
            .collect();
        let dups: u64 = got.values().map(|n| n.saturating_sub(1)).sum();
        let unknown = got.keys().filter(|id| !expected.contains(*id)).count();
        let bound = w.dup_bound.get(name).copied().unwrap_or(0);
        if !lost.is_empty() {
            let mut all: Vec<&str> = lost.iter().map(|s| s.as_str()).collect();
            all.sort();
            let _ = std::fs::write(w.log_dir.join(format!("lost-{name}.txt")), all.join("\n"));
            let mut some: Vec<_> = lost.iter().take(5).collect();
            some.sort();
            w.violations
                .push(format!("{name}: {} lines lost, e.g. {some:?}", lost.len()));
        }
        if dups > bound {
            w.violations.push(format!(
                "{name}: {dups} duplicates, above the bound {bound} (lines unconfirmed at kills and handovers)"
            ));
        }
        if unknown > 0 {
            w.violations
                .push(format!("{name}: {unknown} ids never generated"));
        }
        rows.push((
            name,
            got.values().sum::<u64>(),
            got.len(),
            lost.len(),
            dups,
            bound,
        ));
    }
    // Memory: peak of the first vs the last quarter of the run.
    let quarter = run_secs / 4.0;
    let peak = |from: f64, to: f64| {
        w.rss
            .samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, k)| *k)
            .max()
            .unwrap_or(0)
    };
    let first_q = peak(0.0, quarter);
    let last_q = peak(run_secs - quarter, run_secs);
    if first_q > 0 && last_q > first_q * 3 / 2 + 16 * 1024 {
        w.violations.push(format!(
            "memory grew: peak RSS {first_q} KiB in the first quarter, {last_q} KiB in the last"
        ));
    }

    println!("\nsoak: seed {}, ran {run_secs:.0}s", o.seed);
    println!("{:<16} {:>8}", "fault", "count");
    for f in FAULTS {
        println!(
            "{:<16} {:>8}",
            format!("{f:?}"),
            w.counts.get(f).copied().unwrap_or(0)
        );
    }
    println!("{:<16} {:>8}", "events", w.counts.values().sum::<u64>());
    println!("lines generated  {:>8}", expected.len());
    println!(
        "{:<14} {:>10} {:>10} {:>7} {:>7} {:>9}",
        "sink", "delivered", "distinct", "lost", "dups", "dup bound"
    );
    for (name, delivered, distinct, lost, dups, bound) in &rows {
        println!("{name:<14} {delivered:>10} {distinct:>10} {lost:>7} {dups:>7} {bound:>9}");
    }
    println!(
        "RSS: max {} KiB, peak first quarter {first_q} KiB, last quarter {last_q} KiB",
        w.rss.max_kib
    );
    for m in [
        "node_agent_logs_dropped_records_total",
        "node_agent_handover_total",
    ] {
        if let Some(v) = sample(&leader_metrics, m) {
            println!("last leader {m} {v}");
        }
    }
    // Violations first: a run that stopped early (no leader) says why before it fails.
    for v in &w.violations {
        println!("VIOLATION: {v}");
    }
    outcome?;
    if !w.violations.is_empty() {
        bail!(
            "soak found {} violation(s); seed {}; agent logs and lost ids in {}",
            w.violations.len(),
            o.seed,
            w.log_dir.display()
        );
    }
    println!("soak: ok");
    Ok(())
}
