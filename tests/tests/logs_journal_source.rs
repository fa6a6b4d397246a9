//! The journal source through the real pipeline (source thread → delivery → ack →
//! checkpoint), on journal files written by systemd's own `systemd-journal-remote`, with
//! `journalctl` as the oracle where it helps.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use node_agent::core::record::SourceKind;
use node_agent::logs::LogsConfig;
use node_agent::logs::sources::journal::{JournalSourceConfig, StartAt};
use node_agent_journal::export;
use node_agent_tests::pipeline::{self, CollectingSink, Running};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const BOOT: &str = "0123456789abcdef0123456789abcdef";
const T0: u64 = 1_764_000_000_000_000;

/// Whether systemd's tools are here; without them the test fails under
/// NODE_AGENT_REQUIRE_ALL=1 (CI, as `node_agent_tests::require::missing`) and is skipped
/// with a printed reason otherwise.
fn tools_present(test: &str) -> bool {
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
            panic!("NODE_AGENT_REQUIRE_ALL=1 but this test cannot run: {why}");
        }
        eprintln!("SKIPPED: {why}");
    }
    have
}

/// One entry: (unit, identifier, transport, priority, message); realtime from its index.
#[derive(Clone)]
struct In {
    unit: &'static str,
    ident: &'static str,
    transport: &'static str,
    priority: u8,
    message: String,
    realtime: u64,
}

const UNITS: [(&str, &str, &str); 4] = [
    ("kubelet.service", "kubelet", "stdout"),
    ("containerd.service", "containerd", "stdout"),
    ("", "kernel", "kernel"),
    ("ssh.service", "sshd", "syslog"),
];

/// `n` entries numbered from `first`, cycling through [`UNITS`].
fn entries(first: usize, n: usize) -> Vec<In> {
    (first..first + n)
        .map(|i| {
            let (unit, ident, transport) = UNITS[i % UNITS.len()];
            In {
                unit,
                ident,
                transport,
                priority: (i % 8) as u8,
                message: format!("msg-{i:06} {ident} says hello"),
                realtime: T0 + i as u64 * 1000,
            }
        })
        .collect()
}

fn export_bytes(entries: &[In]) -> Vec<u8> {
    let mut buf = Vec::new();
    for e in entries {
        let rt = e.realtime.to_string();
        let mono = (e.realtime - T0 + 5_000_000).to_string();
        let prio = e.priority.to_string();
        let mut f: Vec<(&str, &[u8])> = vec![
            ("__REALTIME_TIMESTAMP", rt.as_bytes()),
            ("__MONOTONIC_TIMESTAMP", mono.as_bytes()),
            ("_BOOT_ID", BOOT.as_bytes()),
            ("MESSAGE", e.message.as_bytes()),
            ("PRIORITY", prio.as_bytes()),
            ("SYSLOG_IDENTIFIER", e.ident.as_bytes()),
            ("_TRANSPORT", e.transport.as_bytes()),
            ("_HOSTNAME", b"node-1"),
            ("_PID", b"4242"),
            ("_COMM", e.ident.as_bytes()),
        ];
        if !e.unit.is_empty() {
            f.push(("_SYSTEMD_UNIT", e.unit.as_bytes()));
        }
        export::write_entry(&mut buf, f).expect("write to Vec");
    }
    buf
}

/// A running systemd-journal-remote writing `path` from its stdin.
struct Writer(Child);

impl Writer {
    fn spawn(path: &Path) -> Writer {
        Writer(
            Command::new(JOURNAL_REMOTE)
                .arg(format!("--output={}", path.display()))
                .arg("-")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start systemd-journal-remote"),
        )
    }

    fn feed(&mut self, entries: &[In]) {
        let stdin = self.0.stdin.as_mut().expect("writer stdin");
        stdin.write_all(&export_bytes(entries)).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the file (journal-remote archives nothing; the state stays online until
    /// it exits cleanly, then offline).
    fn finish(mut self) {
        drop(self.0.stdin.take());
        assert!(self.0.wait().unwrap().success());
    }
}

/// Writes `entries` into `path` and waits for the writer.
fn write_journal(path: &Path, entries: &[In]) {
    let mut w = Writer::spawn(path);
    w.feed(entries);
    w.finish();
}

/// Marks a finished journal file archived, as journald's rotation does.
fn set_archived(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    b[16] = 2;
    std::fs::write(path, &b).unwrap();
}

fn config(root: &Path, journal_dir: &Path) -> LogsConfig {
    LogsConfig {
        // No pods here: only the journal ships.
        pods_dir: root.join("pods"),
        state_dir: root.join("state"),
        checkpoint_interval: Duration::from_millis(100),
        batch_max_records: 64,
        batch_timeout: Duration::from_millis(20),
        // One at a time: the sink then sees the journal's order (with more in flight,
        // batches may overtake each other, which is allowed).
        max_in_flight_batches: 1,
        drain_timeout: Duration::from_secs(5),
        journal: JournalSourceConfig {
            enabled: Some(true),
            directories: vec![journal_dir.to_path_buf()],
            start: StartAt::Head,
            poll_interval: Duration::from_millis(50),
            ..JournalSourceConfig::default()
        },
        ..LogsConfig::default()
    }
}

fn start(config: LogsConfig, sink: &Arc<CollectingSink>) -> Running {
    Running::start(config, vec![sink.clone()])
}

async fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    pipeline::wait_for(what, Duration::from_secs(30), cond).await
}

/// `got` equals `want`, or a short account of how not (counts, duplicates, first difference).
fn assert_same(got: &[String], want: &[String]) {
    if got == want {
        return;
    }
    let mut seen = std::collections::HashMap::new();
    for m in got {
        *seen.entry(m.as_str()).or_insert(0usize) += 1;
    }
    let dups: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(m, _)| *m)
        .take(5)
        .collect();
    let missing: Vec<_> = want
        .iter()
        .filter(|m| !seen.contains_key(m.as_str()))
        .take(5)
        .collect();
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "got {} records, want {}; duplicates e.g. {dups:?}; missing e.g. {missing:?}; first difference at {first:?}: {:?}",
        got.len(),
        want.len(),
        first.map(|i| (&got[i], &want[i]))
    );
}

fn messages(entries: &[In]) -> Vec<String> {
    entries.iter().map(|e| e.message.clone()).collect()
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    (dir, journal)
}

/// A counter of the process-wide registry (0 when not registered yet).
fn counter(name: &str, label: Option<(&str, &str)>) -> u64 {
    node_agent::core::telemetry::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            label.is_none_or(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == k && l.value() == v)
            })
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_filtered_entries_with_mapped_fields_like_journalctl() {
    if !tools_present("ships_filtered_entries_with_mapped_fields_like_journalctl") {
        return;
    }
    let (dir, jdir) = tempdir();
    let input = entries(0, 400);
    write_journal(&jdir.join("system.journal"), &input);
    let mut cfg = config(dir.path(), &jdir);
    cfg.journal.include_units = vec!["kubelet".into(), "containerd.service".into()];
    cfg.journal.include_kernel = true;
    let sink = Arc::new(CollectingSink::default());
    let run = start(cfg, &sink);
    let want: Vec<In> = input
        .iter()
        .filter(|e| e.ident != "sshd")
        .cloned()
        .collect();
    wait_for("filtered entries", || sink.len() >= want.len()).await;
    run.stop().await;

    // journalctl's view of the same filter is the oracle for which entries and in what order.
    let out = Command::new("journalctl")
        .arg(format!("--directory={}", jdir.display()))
        .args([
            "_SYSTEMD_UNIT=kubelet.service",
            "_SYSTEMD_UNIT=containerd.service",
            "+",
            "_TRANSPORT=kernel",
            "-o",
            "export",
            "--no-pager",
        ])
        .output()
        .unwrap();
    let oracle = export::parse(&out.stdout).unwrap();
    let oracle_messages: Vec<String> = oracle
        .iter()
        .map(|e| String::from_utf8_lossy(e.get("MESSAGE").unwrap()).into_owned())
        .collect();
    assert_same(&sink.messages(), &oracle_messages);
    assert_same(&sink.messages(), &messages(&want));

    let records = sink.records.lock().unwrap();
    for (r, e) in records.iter().zip(&want) {
        assert_eq!(r.source.kind, SourceKind::Journal);
        assert_eq!(r.source.node, "node-1");
        assert_eq!(r.timestamp_nanos, (e.realtime * 1000) as i64);
        let f = r.fields.as_ref().expect("fields");
        let level = [
            "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
        ][e.priority as usize];
        assert_eq!(f["level"], level, "{}", r.message);
        assert_eq!(f["priority"], e.priority);
        assert_eq!(f["syslog_identifier"], e.ident);
        assert_eq!(f["transport"], e.transport);
        assert_eq!(f["pid"], 4242);
        assert_eq!(f["hostname"], "node-1");
        assert_eq!(f["boot_id"], BOOT);
        if e.unit.is_empty() {
            assert!(!f.contains_key("unit"));
        } else {
            assert_eq!(f["unit"], e.unit);
        }
        assert!(!f.contains_key("_COMM"), "all_fields is off");
    }
    // (file_id, offset) names each entry uniquely.
    let mut ids: Vec<(u64, u64)> = records
        .iter()
        .map(|r| (r.source.file_id, r.offset))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_after_the_confirmed_cursor_exactly_once() {
    if !tools_present("restart_resumes_after_the_confirmed_cursor_exactly_once") {
        return;
    }
    let (dir, jdir) = tempdir();
    let mut w = Writer::spawn(&jdir.join("system.journal"));
    w.feed(&entries(0, 300));
    let cfg = config(dir.path(), &jdir);
    let sink = Arc::new(CollectingSink::default());

    let run = start(cfg.clone(), &sink);
    wait_for("first 300", || sink.len() >= 300).await;
    // Written while the agent runs, then some while it is stopped.
    w.feed(&entries(300, 200));
    wait_for("500", || sink.len() >= 500).await;
    run.stop().await;
    assert!(cfg.state_dir.join("journal-checkpoint.json").exists());
    w.feed(&entries(500, 250));

    // The sink is down for a while after the restart: nothing moves, nothing is lost.
    sink.failing.store(true, Ordering::SeqCst);
    let run = start(cfg.clone(), &sink);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.len(), 500, "nothing confirmed while the sink fails");
    sink.failing.store(false, Ordering::SeqCst);
    w.feed(&entries(750, 250));
    wait_for("all 1000", || sink.len() >= 1000).await;
    run.stop().await;
    w.finish();

    // A third run finds nothing new.
    let run = start(cfg, &sink);
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.stop().await;
    // Retried batches may overtake each other (two in flight): exactly once, any order.
    let mut got = sink.messages();
    got.sort();
    assert_same(&got, &messages(&entries(0, 1000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_rotation_and_vacuum_while_running_and_while_stopped() {
    if !tools_present("follows_rotation_and_vacuum_while_running_and_while_stopped") {
        return;
    }
    let (dir, jdir) = tempdir();
    let current = jdir.join("system.journal");
    let cfg = config(dir.path(), &jdir);
    let sink = Arc::new(CollectingSink::default());

    let mut w = Writer::spawn(&current);
    w.feed(&entries(0, 200));
    let run = start(cfg.clone(), &sink);
    wait_for("first file", || sink.len() >= 200).await;

    // Rotation as journald does it: archive, rename, a new file under the old name.
    w.finish();
    set_archived(&current);
    let archived = jdir.join("system@0001-0000000000000001-0005e2c4a0000000.journal");
    std::fs::rename(&current, &archived).unwrap();
    let mut w = Writer::spawn(&current);
    w.feed(&entries(200, 200));
    wait_for("after rotation", || sink.len() >= 400).await;

    // Vacuuming the archived file while running changes nothing for the new one.
    std::fs::remove_file(&archived).unwrap();
    w.feed(&entries(400, 100));
    wait_for("after vacuum", || sink.len() >= 500).await;
    run.stop().await;
    w.finish();
    assert_same(&sink.messages(), &messages(&entries(0, 500)));

    // While stopped: the file holding the checkpointed cursor is rotated and vacuumed and
    // a new file written. The new file's entries all arrive (a different seqnum id: the
    // loss of what was vacuumed is reported, nothing after it is lost).
    let lost_before = counter(
        "node_agent_logs_journal_issues_total",
        Some(("kind", "entries_may_be_lost")),
    );
    std::fs::remove_file(&current).unwrap();
    write_journal(&current, &entries(500, 150));
    let run = start(cfg, &sink);
    wait_for("after vacuum while stopped", || sink.len() >= 650).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    assert_same(&sink.messages(), &messages(&entries(0, 650)));
    assert!(
        counter(
            "node_agent_logs_journal_issues_total",
            Some(("kind", "entries_may_be_lost"))
        ) > lost_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_from_tail_or_a_time_then_checkpoints_at_once() {
    if !tools_present("first_run_from_tail_or_a_time_then_checkpoints_at_once") {
        return;
    }
    // Tail: only entries written after the start.
    let (dir, jdir) = tempdir();
    let mut w = Writer::spawn(&jdir.join("system.journal"));
    w.feed(&entries(0, 100));
    // Let journal-remote write them before the agent looks.
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_all(&jdir) < 100 {
        assert!(Instant::now() < deadline, "journal-remote wrote nothing");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut cfg = config(dir.path(), &jdir);
    cfg.journal.start = StartAt::Tail;
    let checkpoint = cfg.state_dir.join("journal-checkpoint.json");
    let sink = Arc::new(CollectingSink::default());
    let run = start(cfg.clone(), &sink);
    // The tail position is checkpointed before any entry: a restart does not seek the
    // tail again and skip what came in between.
    wait_for("tail checkpoint", || checkpoint.exists()).await;
    run.stop().await;
    w.feed(&entries(100, 50));
    let run = start(cfg, &sink);
    wait_for("new entries", || sink.len() >= 50).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    w.finish();
    assert_same(&sink.messages(), &messages(&entries(100, 50)));

    // Since a time: entries at or after it.
    let (dir, jdir) = tempdir();
    write_journal(&jdir.join("system.journal"), &entries(0, 100));
    let mut cfg = config(dir.path(), &jdir);
    let from = std::time::SystemTime::UNIX_EPOCH + Duration::from_micros(T0 + 60 * 1000);
    cfg.journal.start = StartAt::Since(from);
    let sink = Arc::new(CollectingSink::default());
    let run = start(cfg, &sink);
    wait_for("entries since", || sink.len() >= 40).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    assert_same(&sink.messages(), &messages(&entries(60, 40)));
}

fn read_all(dir: &Path) -> usize {
    let mut j = node_agent_journal::Journal::open(node_agent_journal::JournalOptions {
        directories: vec![dir.to_path_buf()],
        ..Default::default()
    });
    std::iter::from_fn(|| j.next_entry()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_files_are_counted_and_do_not_stall() {
    if !tools_present("corrupt_and_truncated_files_are_counted_and_do_not_stall") {
        return;
    }
    let (dir, jdir) = tempdir();
    write_journal(&jdir.join("system.journal"), &entries(0, 300));
    // Not a journal at all, and a real one cut in half.
    std::fs::write(jdir.join("garbage.journal"), vec![0x5a; 8192]).unwrap();
    let cut = jdir.join("user-1000.journal");
    write_journal(&cut, &entries(1000, 300));
    // The file is preallocated: cut in the middle of what is written (the header's
    // tail_object_offset, at byte 136, is where the last object starts).
    let bytes = std::fs::read(&cut).unwrap();
    let tail = u64::from_le_bytes(bytes[136..144].try_into().unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(tail / 2)
        .unwrap();
    let before: u64 = counter("node_agent_logs_journal_issues_total", None);
    let sink = Arc::new(CollectingSink::default());
    let run = start(config(dir.path(), &jdir), &sink);
    wait_for("the sound file", || {
        let m = sink.messages();
        m.contains(&"msg-000299 sshd says hello".to_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.stop().await;
    let got = sink.messages();
    let sound: Vec<String> = got
        .iter()
        .filter(|m| m.as_str() < "msg-001000")
        .cloned()
        .collect();
    assert_eq!(sound, messages(&entries(0, 300)));
    let from_cut = got.len() - sound.len();
    assert!(
        from_cut < 300,
        "the cut file yields at most what is left of it"
    );
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "no duplicates");
    assert!(counter("node_agent_logs_journal_issues_total", None) > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_fields_and_the_message_cap() {
    if !tools_present("all_fields_and_the_message_cap") {
        return;
    }
    let (dir, jdir) = tempdir();
    let mut input = entries(0, 2);
    // Long enough for journal-remote to zstd-compress it, and over the cap below.
    input[1].message = format!("long {}", "é".repeat(3000));
    write_journal(&jdir.join("system.journal"), &input);
    let mut cfg = config(dir.path(), &jdir);
    cfg.journal.all_fields = true;
    cfg.max_line_bytes = 1001;
    let sink = Arc::new(CollectingSink::default());
    let run = start(cfg, &sink);
    wait_for("two entries", || sink.len() >= 2).await;
    run.stop().await;
    let records = sink.records.lock().unwrap();
    let f = records[0].fields.as_ref().unwrap();
    assert_eq!(f["_COMM"], "kubelet", "every field under its journal name");
    assert_eq!(f["unit"], "kubelet.service", "and the short names too");
    assert!(!f.contains_key("MESSAGE"));
    assert!(!records[0].truncated);
    let long = &records[1];
    assert!(long.truncated);
    assert!(long.message.len() <= 1001);
    assert!(
        long.message.starts_with("long é"),
        "cut on a character boundary"
    );
}
