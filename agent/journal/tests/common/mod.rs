//! Test support: systemd's own tools make the journal files (`systemd-journal-remote`) and
//! read them back as the oracle (`journalctl`).
#![allow(dead_code)]

pub mod raw;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use node_agent_journal::export::{self, ExportEntry};
use node_agent_journal::{Entry, Journal, JournalOptions};

pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
pub const BOOT: &str = "0123456789abcdef0123456789abcdef";
/// Wall-clock time of the test boots' start (µs); tests log after it.
pub const BOOT_START: u64 = 1_763_999_990_000_000;
pub const BOOT2: &str = "fedcba9876543210fedcba9876543210";

/// True when systemd's tools are here. Without them the test fails under
/// NODE_AGENT_REQUIRE_ALL=1 (CI) and is skipped with a printed reason otherwise.
pub fn tools_present(test: &str) -> bool {
    let have = Path::new(JOURNAL_REMOTE).exists()
        && Command::new("journalctl")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !have {
        let why = format!(
            "{test}: needs {JOURNAL_REMOTE} and journalctl (Debian packages systemd-journal-remote, systemd)"
        );
        if std::env::var("NODE_AGENT_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED {why}");
    }
    have
}

/// One entry to feed journal-remote: timestamps, boot and fields.
#[derive(Clone, Debug)]
pub struct Input {
    pub realtime: u64,
    pub monotonic: u64,
    pub boot: &'static str,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Input {
    pub fn new(realtime: u64, monotonic: u64, fields: &[(&str, &[u8])]) -> Input {
        Input {
            realtime,
            monotonic,
            boot: BOOT,
            fields: fields
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        }
    }
}

pub fn export_bytes(entries: &[Input]) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in entries {
        let rt = e.realtime.to_string();
        let mono = e.monotonic.to_string();
        let mut f: Vec<(&str, &[u8])> = vec![
            ("__REALTIME_TIMESTAMP", rt.as_bytes()),
            ("__MONOTONIC_TIMESTAMP", mono.as_bytes()),
            ("_BOOT_ID", e.boot.as_bytes()),
        ];
        f.extend(e.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
        export::write_entry(&mut buf, f).expect("write to Vec");
    }
    buf
}

/// Writes `entries` into `path` (must end in `.journal`) with systemd-journal-remote.
/// `env`: e.g. SYSTEMD_JOURNAL_COMPACT=0, SYSTEMD_JOURNAL_KEYED_HASH=0.
pub fn write_journal(path: &Path, entries: &[Input], env: &[(&str, &str)]) {
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", path.display()))
        .arg("-")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start systemd-journal-remote");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&export_bytes(entries))
        .expect("feed systemd-journal-remote");
    let out = child
        .wait_with_output()
        .expect("wait systemd-journal-remote");
    assert!(
        out.status.success(),
        "systemd-journal-remote failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `journalctl <args> -o export`, parsed.
pub fn journalctl(args: &[&str]) -> Vec<ExportEntry> {
    let out = Command::new("journalctl")
        .args(args)
        .args(["-o", "export", "--no-pager"])
        .output()
        .expect("run journalctl");
    assert!(
        out.status.success() || out.stdout.is_empty(),
        "journalctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    export::parse(&out.stdout).expect("parse journalctl export output")
}

pub fn dir_arg(dir: &Path) -> String {
    format!("--directory={}", dir.display())
}

/// Reads every entry of `dir` with our reader.
pub fn read_dir_all(dir: &Path) -> (Journal, Vec<Entry>) {
    let mut j = Journal::open(options(dir));
    let mut all = Vec::new();
    while let Some(e) = j.next_entry() {
        all.push(e);
    }
    (j, all)
}

pub fn options(dir: &Path) -> JournalOptions {
    JournalOptions {
        directories: vec![dir.to_path_buf()],
        ..JournalOptions::default()
    }
}

/// Asserts our entries equal journalctl's, field by field, with cursors and timestamps.
pub fn assert_same(ours: &[Entry], oracle: &[ExportEntry]) {
    assert_eq!(
        ours.len(),
        oracle.len(),
        "entry count differs from journalctl"
    );
    for (i, (a, b)) in ours.iter().zip(oracle).enumerate() {
        let cursor = String::from_utf8_lossy(b.get("__CURSOR").unwrap_or_default()).to_string();
        assert_eq!(a.cursor().to_string(), cursor, "cursor of entry {i}");
        let num = |n: &str| -> u64 {
            String::from_utf8_lossy(b.get(n).unwrap_or_default())
                .parse()
                .unwrap_or(u64::MAX)
        };
        assert_eq!(
            a.realtime_usec(),
            num("__REALTIME_TIMESTAMP"),
            "realtime of {i}"
        );
        assert_eq!(
            a.monotonic_usec(),
            num("__MONOTONIC_TIMESTAMP"),
            "monotonic of {i}"
        );
        assert_eq!(
            a.boot_id().to_string().as_bytes(),
            b.get("_BOOT_ID").unwrap_or_default(),
            "boot id of {i}"
        );
        // journalctl prints _BOOT_ID from the entry header and skips the field itself.
        let ours: Vec<(&str, &[u8])> = a.fields().filter(|(n, _)| *n != "_BOOT_ID").collect();
        let theirs: Vec<(&str, &[u8])> = b
            .fields
            .iter()
            .filter(|(n, _)| !n.starts_with("__") && n != "_BOOT_ID")
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        assert_eq!(ours, theirs, "fields of entry {i} ({cursor})");
    }
}

/// Deterministic pseudo-random numbers (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Realistic node entries: kubelet/containerd/kernel/sshd; every 7th has a long (thus
/// compressed) message, every 11th a binary field, every 13th a multi-line message.
pub fn node_entries(n: usize, seed: u64, start_realtime: u64) -> Vec<Input> {
    let mut rng = Rng(seed | 1);
    let units = [
        ("kubelet.service", "kubelet", "stdout"),
        ("containerd.service", "containerd", "stdout"),
        ("", "kernel", "kernel"),
        ("ssh.service", "sshd", "syslog"),
    ];
    (0..n)
        .map(|i| {
            let (unit, ident, transport) = units[rng.below(units.len() as u64) as usize];
            let mut msg = format!(
                "I1201 {i:06} pod_workers.go:{}] \"SyncPod\" pod=\"kube-system/coredns-{:x}\"",
                rng.below(2000),
                rng.next() & 0xffff
            );
            if i % 7 == 3 {
                for k in 0..40 {
                    msg.push_str(&format!(" key{k}=value-{}", rng.below(1000)));
                }
            }
            if i % 13 == 5 {
                msg.push_str("\n  goroutine 1 [running]:\n  main.main()");
            }
            let prio = (3 + rng.below(4)).to_string();
            let mut fields: Vec<(String, Vec<u8>)> = vec![
                ("MESSAGE".into(), msg.into_bytes()),
                ("PRIORITY".into(), prio.into_bytes()),
                ("SYSLOG_IDENTIFIER".into(), ident.into()),
                ("_TRANSPORT".into(), transport.into()),
                ("_HOSTNAME".into(), b"node-1".to_vec()),
                (
                    "_PID".into(),
                    (1000 + rng.below(5)).to_string().into_bytes(),
                ),
            ];
            if !unit.is_empty() {
                fields.push(("_SYSTEMD_UNIT".into(), unit.into()));
            }
            if i % 11 == 4 {
                fields.push(("BINARY".into(), vec![0, 0xff, 0xfe, b'\n', i as u8]));
            }
            let realtime = start_realtime + i as u64 * 1000;
            Input {
                realtime,
                // Consistent with the wall clock within the boot, as on a real host.
                monotonic: realtime.saturating_sub(BOOT_START),
                boot: BOOT,
                fields,
            }
        })
        .collect()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("journal-test")
        .tempdir()
        .expect("tempdir")
}

pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
