//! `cargo xtask bench journal [--entries 1000000] [--files 4] [--dir PATH] [--keep]`:
//! writes a journal of kubelet/containerd-like entries with systemd's own
//! `systemd-journal-remote` (some messages long enough to be zstd-compressed), then reads
//! it whole with node-agent-journal and with `journalctl -o json` (to /dev/null), each in
//! its own process, and prints entries and MB (of `NAME=value` payload) per CPU-second side
//! by side, with each reader's peak RSS. A second line reads with a unit filter; a third
//! runs the whole journal *source* (`logs.journal`: entry → record mapping, batches,
//! delivery into a null sink, cursor checkpoints) over the same files.
//!
//! Figures are only meaningful optimized: a debug build re-runs itself with `--release`.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use node_agent_journal::{Filter, Journal, JournalOptions, export};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

struct Options {
    entries: u64,
    files: u64,
    dir: Option<PathBuf>,
    keep: bool,
}

fn parse_args(args: &[&str]) -> anyhow::Result<Options> {
    let mut o = Options {
        entries: 1_000_000,
        files: 4,
        dir: None,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match *arg {
            "--entries" => o.entries = it.next().context("--entries needs a value")?.parse()?,
            "--files" => o.files = it.next().context("--files needs a value")?.parse()?,
            "--dir" => o.dir = Some(PathBuf::from(it.next().context("--dir needs a value")?)),
            "--keep" => o.keep = true,
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench journal [--entries 1000000] [--files 4] [--dir PATH] [--keep]"
            ),
        }
    }
    ensure!(
        o.entries > 0 && o.files > 0,
        "entries and files must be > 0"
    );
    Ok(o)
}

/// xorshift64*: reproducible pseudo-random message parts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const BOOT: &str = "7d2b1c9e4f0a4b6c8d3e2f1a0b9c8d7e";
const MACHINE: &str = "3d1219c7c4c5404aaa1f6d2a48adfda4";
const PODS: [&str; 6] = [
    "kube-system/coredns-5d78c9869d-7xk2p",
    "kube-system/kube-proxy-9sd8f",
    "monitoring/node-agent-4kq7w",
    "default/web-6b7f8d9c5-2mzqv",
    "default/web-6b7f8d9c5-h8r4t",
    "ingress/nginx-controller-7c9d8b6f4-x2w9l",
];

struct Unit {
    unit: &'static str,
    comm: &'static str,
    exe: &'static str,
    cmdline: &'static str,
    pid: &'static str,
}

const UNITS: [Unit; 2] = [
    Unit {
        unit: "kubelet.service",
        comm: "kubelet",
        exe: "/usr/bin/kubelet",
        cmdline: "/usr/bin/kubelet --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf --config=/var/lib/kubelet/config.yaml --container-runtime-endpoint=unix:///run/containerd/containerd.sock --pod-infra-container-image=registry.k8s.io/pause:3.9",
        pid: "1187",
    },
    Unit {
        unit: "containerd.service",
        comm: "containerd",
        exe: "/usr/bin/containerd",
        cmdline: "/usr/bin/containerd",
        pid: "903",
    },
];

fn message(rng: &mut Rng, kubelet: bool, seq: u64) -> String {
    let pod = PODS[rng.below(PODS.len() as u64) as usize];
    let id = rng.next();
    let mut m = if kubelet {
        match rng.below(4) {
            0 => format!(
                "I1201 10:{:02}:{:02}.{:06}    1187 kubelet.go:2457] \"SyncLoop (PLEG): event for pod\" pod=\"{pod}\" event={{\"ID\":\"{id:016x}\",\"Type\":\"ContainerStarted\",\"Data\":\"{:016x}{:016x}\"}}",
                seq / 60 % 60,
                seq % 60,
                rng.below(1_000_000),
                rng.next(),
                rng.next()
            ),
            1 => format!(
                "I1201 10:{:02}:{:02}.{:06}    1187 prober.go:107] \"Probe failed\" probeType=\"Readiness\" pod=\"{pod}\" podUID=\"{id:016x}\" containerName=\"app\" probeResult=\"failure\" output=\"Get \\\"http://10.244.1.{}:8080/healthz\\\": dial tcp: connect: connection refused\"",
                seq / 60 % 60,
                seq % 60,
                rng.below(1_000_000),
                rng.below(250)
            ),
            2 => format!(
                "E1201 10:{:02}:{:02}.{:06}    1187 pod_workers.go:1300] \"Error syncing pod, skipping\" err=\"failed to \\\"StartContainer\\\" for \\\"app\\\" with CrashLoopBackOff: \\\"back-off 5m0s restarting failed container\\\"\" pod=\"{pod}\" podUID={id:016x}",
                seq / 60 % 60,
                seq % 60,
                rng.below(1_000_000)
            ),
            _ => format!(
                "I1201 10:{:02}:{:02}.{:06}    1187 kubelet_volumes.go:160] \"Cleaned up orphaned pod volumes dir\" podUID=\"{id:016x}\" path=\"/var/lib/kubelet/pods/{id:016x}/volumes\"",
                seq / 60 % 60,
                seq % 60,
                rng.below(1_000_000)
            ),
        }
    } else {
        match rng.below(3) {
            0 => format!(
                "time=\"2026-12-01T10:{:02}:{:02}.{:09}Z\" level=info msg=\"StartContainer for \\\"{id:016x}{:016x}\\\" returns successfully\"",
                seq / 60 % 60,
                seq % 60,
                rng.below(1_000_000_000),
                rng.next()
            ),
            1 => format!(
                "time=\"2026-12-01T10:{:02}:{:02}.{:09}Z\" level=info msg=\"ImageCreate event name:\\\"registry.k8s.io/pause:3.9\\\" labels:{{key:\\\"io.cri-containerd.image\\\" value:\\\"managed\\\"}}\" pod={pod}",
                seq / 60 % 60,
                seq % 60,
                rng.below(1_000_000_000)
            ),
            _ => format!(
                "time=\"2026-12-01T10:{:02}:{:02}.{:09}Z\" level=warning msg=\"cleanup warnings time=\\\"2026-12-01T10:00:00Z\\\" level=warning msg=\\\"failed to remove runc container\\\" error=\\\"runc did not terminate successfully: exit status 255\\\"\" id={id:016x} namespace=k8s.io",
                seq / 60 % 60,
                seq % 60,
                rng.below(1_000_000_000)
            ),
        }
    };
    // About 1 in 20: a long message (goroutine dump, pod spec), compressed by journald.
    if rng.below(20) == 0 {
        m.push_str(" stack=");
        for k in 0..30 {
            m.push_str(&format!(
                "goroutine {k} [select]: k8s.io/kubernetes/pkg/kubelet.(*Kubelet).syncLoop(0xc000{:06x}) /workspace/pkg/kubelet/kubelet.go:{} +0x{:x}; ",
                rng.below(1 << 24),
                1000 + rng.below(2000),
                rng.below(4096)
            ));
        }
    }
    m
}

/// Writes entries `[first, first + n)` into `path` with systemd-journal-remote.
fn write_file(path: &Path, first: u64, n: u64) -> anyhow::Result<()> {
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", path.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("starting {JOURNAL_REMOTE} (Debian package systemd-journal-remote)")
        })?;
    let stdin = child.stdin.take().context("stdin")?;
    let mut out = BufWriter::with_capacity(1 << 20, stdin);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ first);
    let t0: u64 = 1_764_583_200_000_000; // 2026-12-01T10:00:00Z
    for seq in first..first + n {
        let kubelet = rng.below(3) != 0;
        let u = &UNITS[usize::from(!kubelet)];
        let rt = (t0 + seq * 700).to_string();
        let mono = (3_600_000_000 + seq * 700).to_string();
        let msg = message(&mut rng, kubelet, seq);
        let prio = if msg.starts_with('E') || msg.contains("level=warning") {
            "3"
        } else {
            "6"
        };
        let stream = format!("{:032x}", u128::from(rng.below(8)) + 0xabc);
        let inv = format!("{:032x}", u128::from(kubelet) + 0x1234);
        let cgroup = format!("/system.slice/{}", u.unit);
        let fields: [(&str, &[u8]); 22] = [
            ("__REALTIME_TIMESTAMP", rt.as_bytes()),
            ("__MONOTONIC_TIMESTAMP", mono.as_bytes()),
            ("_BOOT_ID", BOOT.as_bytes()),
            ("_MACHINE_ID", MACHINE.as_bytes()),
            ("_HOSTNAME", b"node-1.example.internal"),
            ("PRIORITY", prio.as_bytes()),
            ("SYSLOG_FACILITY", b"3"),
            ("SYSLOG_IDENTIFIER", u.comm.as_bytes()),
            ("_TRANSPORT", b"stdout"),
            ("_STREAM_ID", stream.as_bytes()),
            ("_PID", u.pid.as_bytes()),
            ("_UID", b"0"),
            ("_GID", b"0"),
            ("_COMM", u.comm.as_bytes()),
            ("_EXE", u.exe.as_bytes()),
            ("_CMDLINE", u.cmdline.as_bytes()),
            ("_CAP_EFFECTIVE", b"1ffffffffff"),
            ("_SELINUX_CONTEXT", b"unconfined\n"),
            ("_SYSTEMD_CGROUP", cgroup.as_bytes()),
            ("_SYSTEMD_UNIT", u.unit.as_bytes()),
            ("_SYSTEMD_INVOCATION_ID", inv.as_bytes()),
            ("MESSAGE", msg.as_bytes()),
        ];
        export::write_entry(&mut out, fields).context("feeding systemd-journal-remote")?;
    }
    drop(
        out.into_inner()
            .map_err(|e| anyhow::anyhow!("flush: {e}"))?,
    );
    // Its stderr is one "Finishing after writing N entries" line, or the error.
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "systemd-journal-remote failed: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Child process: reads the whole directory, prints "entries payload_bytes issues".
fn read_child(dir: &Path, unit: Option<&str>) -> anyhow::Result<()> {
    let mut filter = Filter::new();
    if let Some(u) = unit {
        filter = filter.include_unit(u);
    }
    let mut j = Journal::open(JournalOptions {
        directories: vec![dir.to_path_buf()],
        filter,
        ..JournalOptions::default()
    });
    let mut n = 0u64;
    let mut bytes = 0u64;
    while let Some(e) = j.next_entry() {
        n += 1;
        bytes += e.payload_len() as u64;
    }
    let s = j.stats();
    println!(
        "{n} {bytes} {} {}",
        s.issues.iter().sum::<u64>(),
        s.filtered
    );
    Ok(())
}

/// Counts records and confirms at once.
#[derive(Default)]
struct NullSink(std::sync::atomic::AtomicU64);

impl node_agent::sinks::Sink for NullSink {
    fn name(&self) -> &str {
        "null"
    }

    fn deliver<'a>(
        &'a self,
        records: &'a [node_agent::core::record::LogRecord],
        _cancel: &'a tokio_util::sync::CancellationToken,
    ) -> node_agent::sinks::DeliverFuture<'a> {
        self.0
            .fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

/// Child process: runs the journal source over `dir` until `want` records were confirmed,
/// prints "records".
fn pipeline_child(dir: &Path, want: u64) -> anyhow::Result<()> {
    use node_agent::logs::sources::journal::{JournalSourceConfig, StartAt};
    let state = tempfile::Builder::new()
        .prefix("bench-journal-state-")
        .tempdir()?;
    let config = node_agent::logs::LogsConfig {
        pods_dir: state.path().join("no-pods"),
        state_dir: state.path().to_path_buf(),
        files: Some(Vec::new()),
        journal: JournalSourceConfig {
            enabled: Some(true),
            directories: vec![dir.to_path_buf()],
            start: StartAt::Head,
            ..JournalSourceConfig::default()
        },
        ..node_agent::logs::LogsConfig::default()
    };
    let sink = std::sync::Arc::new(NullSink::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let delivered = rt.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let sinks: Vec<std::sync::Arc<dyn node_agent::sinks::Sink>> = vec![sink.clone()];
        let run = tokio::spawn(node_agent::logs::run_with_sinks(
            config,
            "bench".into(),
            sinks,
            shutdown.clone(),
        ));
        while sink.0.load(std::sync::atomic::Ordering::Relaxed) < want {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        run.await??;
        anyhow::Ok(sink.0.load(std::sync::atomic::Ordering::Relaxed))
    })?;
    println!("{delivered}");
    Ok(())
}

struct Measured {
    cpu: f64,
    wall: f64,
    max_rss_kib: u64,
    stdout: String,
}

/// Runs `cmd` and measures it alone (wait4: its own CPU time and peak RSS).
fn measure(cmd: &mut Command) -> anyhow::Result<Measured> {
    let t = Instant::now();
    let child = cmd.stderr(Stdio::inherit()).spawn().context("spawn")?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = std::io::Read::read_to_string(o, &mut s);
        }
        s
    });
    let mut status = 0;
    // SAFETY: wait4 writes only into the status and rusage we pass; pid is our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    ensure!(
        r == pid,
        "wait4 failed: {}",
        std::io::Error::last_os_error()
    );
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed: status {status}"
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        wall: t.elapsed().as_secs_f64(),
        max_rss_kib: ru.ru_maxrss as u64,
        stdout: reader.join().unwrap_or_default(),
    })
}

fn row(name: &str, entries: u64, payload: u64, m: &Measured) {
    println!(
        "  {name:<34} {:>10.0} entries/CPU-s {:>8.1} MB/CPU-s   cpu {:>6.2}s wall {:>6.2}s   peak RSS {:>7.1} MiB",
        entries as f64 / m.cpu,
        payload as f64 / 1e6 / m.cpu,
        m.cpu,
        m.wall,
        m.max_rss_kib as f64 / 1024.0
    );
}

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("bench journal: re-running optimized (cargo run --release -p xtask)");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "run",
                "--release",
                "--quiet",
                "--package",
                "xtask",
                "--",
                "bench",
                "journal",
            ])
            .args(args)
            .status()
            .context("running cargo")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    match args {
        ["--read", dir] => return read_child(Path::new(dir), None),
        ["--read", dir, "--unit", unit] => return read_child(Path::new(dir), Some(unit)),
        ["--pipeline", dir, want] => return pipeline_child(Path::new(dir), want.parse()?),
        _ => {}
    }
    let o = parse_args(args)?;
    ensure!(
        Path::new(JOURNAL_REMOTE).exists(),
        "{JOURNAL_REMOTE} missing: apt-get install systemd-journal-remote"
    );
    let mut tmp = None;
    let dir = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("bench-journal-")
                .tempdir()?;
            let p = t.path().to_path_buf();
            tmp = Some(t);
            p
        }
    };
    let per_file = o.entries.div_ceil(o.files);
    println!(
        "writing {} entries into {} journal files under {} (systemd-journal-remote)",
        o.entries,
        o.files,
        dir.display()
    );
    let t = Instant::now();
    let mut first = 0;
    for i in 0..o.files {
        let n = per_file.min(o.entries - first);
        let name = if i + 1 == o.files {
            "system.journal".to_string()
        } else {
            format!("system@{i:04}.journal")
        };
        write_file(&dir.join(name), first, n)?;
        first += n;
    }
    let disk: u64 = std::fs::read_dir(&dir)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "  done in {:.1}s; {:.0} MiB on disk",
        t.elapsed().as_secs_f64(),
        disk as f64 / (1 << 20) as f64
    );

    let me = std::env::current_exe()?;
    let ours = measure(
        Command::new(&me)
            .args(["bench", "journal", "--read"])
            .arg(&dir)
            .stdout(Stdio::piped()),
    )?;
    let nums: Vec<u64> = ours
        .stdout
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let [entries, payload, issues, _] = nums[..] else {
        bail!("reader output {:?}", ours.stdout);
    };
    ensure!(
        entries == o.entries,
        "read {entries} of {} entries",
        o.entries
    );
    ensure!(issues == 0, "{issues} issues reading a healthy journal");

    let devnull = std::fs::File::create("/dev/null")?;
    let jctl = measure(
        Command::new("journalctl")
            .arg(format!("--directory={}", dir.display()))
            .args(["-o", "json", "--no-pager"])
            .stdout(devnull),
    )?;

    let filtered = measure(
        Command::new(&me)
            .args(["bench", "journal", "--read"])
            .arg(&dir)
            .args(["--unit", "containerd"])
            .stdout(Stdio::piped()),
    )?;
    let kept: u64 = filtered
        .stdout
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let devnull = std::fs::File::create("/dev/null")?;
    let jctl_filtered = measure(
        Command::new("journalctl")
            .arg(format!("--directory={}", dir.display()))
            .args([
                "-o",
                "json",
                "--no-pager",
                "_SYSTEMD_UNIT=containerd.service",
            ])
            .stdout(devnull),
    )?;

    println!(
        "read {entries} entries, {:.0} MB of NAME=value payload (entries/s and MB/s over all entries read):",
        payload as f64 / 1e6
    );
    row("node-agent-journal", entries, payload, &ours);
    row("journalctl -o json > /dev/null", entries, payload, &jctl);
    println!("unit filter (containerd.service, {kept} of {entries} kept):");
    row(
        "node-agent-journal include_units",
        entries,
        payload,
        &filtered,
    );
    row(
        "journalctl -o json _SYSTEMD_UNIT=",
        entries,
        payload,
        &jctl_filtered,
    );
    let pipeline = measure(
        Command::new(&me)
            .args(["bench", "journal", "--pipeline"])
            .arg(&dir)
            .arg(entries.to_string())
            .stdout(Stdio::piped()),
    )?;
    let shipped: u64 = pipeline.stdout.trim().parse().unwrap_or(0);
    ensure!(
        shipped == entries,
        "the journal source delivered {shipped} of {entries} records"
    );
    println!("the journal source through the pipeline (records, batches, null sink, checkpoints):");
    row("logs.journal -> null sink", entries, payload, &pipeline);
    if o.keep {
        println!("kept {}", dir.display());
        // Not deleting the temporary directory is the point of --keep.
        std::mem::forget(tmp);
    }
    Ok(())
}
