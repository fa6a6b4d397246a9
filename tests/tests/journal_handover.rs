//! Rolling SIGTERM handovers while the journal source ships a journal that is being
//! written: the new leader resumes from the old one's confirmed cursor, so every entry
//! reaches the sink exactly once. Real `node-agent` processes and real journal files
//! written by systemd-journal-remote (as journald writes them).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node_agent_tests::agent_proc::{AgentDirs, AgentProc};
use node_agent_tests::require;

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const ACQUIRED: &str = "acquired leader lock: now leader";
const STANDBY: &str = "leader lock is held: waiting as standby";
const WAIT: Duration = Duration::from_secs(60);
const HANDOVERS: usize = 4;
const CHUNK: usize = 40;

/// systemd-journal-remote writing one journal file from export-format input.
struct Writer {
    child: Child,
    next: usize,
}

impl Writer {
    fn spawn(path: &Path) -> Writer {
        let child = Command::new(JOURNAL_REMOTE)
            .arg(format!("--output={}", path.display()))
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start systemd-journal-remote");
        Writer { child, next: 0 }
    }

    /// Appends `n` entries `jmsg-<i>` from kubelet.service.
    fn feed(&mut self, n: usize) {
        let mut buf = Vec::new();
        for i in self.next..self.next + n {
            let realtime = (1_764_000_000_000_000u64 + i as u64 * 1000).to_string();
            let mono = (5_000_000 + i as u64 * 1000).to_string();
            let message = format!("jmsg-{i:06} kubelet says hello");
            node_agent_journal::export::write_entry(
                &mut buf,
                [
                    ("__REALTIME_TIMESTAMP", realtime.as_bytes()),
                    ("__MONOTONIC_TIMESTAMP", mono.as_bytes()),
                    ("_BOOT_ID", b"0123456789abcdef0123456789abcdef".as_slice()),
                    ("MESSAGE", message.as_bytes()),
                    ("PRIORITY", b"6".as_slice()),
                    ("SYSLOG_IDENTIFIER", b"kubelet".as_slice()),
                    ("_SYSTEMD_UNIT", b"kubelet.service".as_slice()),
                    ("_TRANSPORT", b"stdout".as_slice()),
                ],
            )
            .expect("write to Vec");
        }
        self.next += n;
        let stdin = self.child.stdin.as_mut().expect("writer stdin");
        stdin.write_all(&buf).unwrap();
        stdin.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// How often each journal message reached the file sink.
fn shipped(sink: &Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in std::fs::read_to_string(sink).unwrap_or_default().lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("JSON lines");
        if record["source"] == "journal"
            && let Some(m) = record["message"].as_str()
        {
            *seen.entry(m.to_string()).or_default() += 1;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_handovers_lose_and_duplicate_nothing() {
    if !Path::new(JOURNAL_REMOTE).exists() {
        require::missing("systemd-journal-remote (Debian package systemd-journal-remote)");
        return;
    }
    let dirs = AgentDirs::new().unwrap();
    let journal_dir = dirs.root.path().join("journal");
    std::fs::create_dir_all(&journal_dir).unwrap();
    let config = dirs
        .write_config(&[
            "journal:",
            "  enabled: true",
            &format!("  directories: [{:?}]", journal_dir),
            "  start: head",
        ])
        .unwrap();
    let mut writer = Writer::spawn(&journal_dir.join("system.journal"));
    writer.feed(CHUNK);

    let mut old = AgentProc::start("agent-0", &config).await.unwrap();
    old.wait_for_event(ACQUIRED, WAIT).await.unwrap();
    for i in 1..=HANDOVERS {
        // maxSurge: the new pod is Ready (standby) before the old one gets SIGTERM; the
        // journal keeps growing meanwhile.
        let new = AgentProc::start(&format!("agent-{i}"), &config)
            .await
            .unwrap();
        new.wait_for_event(STANDBY, WAIT).await.unwrap();
        writer.feed(CHUNK);
        tokio::time::sleep(Duration::from_millis(200)).await;
        writer.feed(CHUNK);
        old.terminate().unwrap();
        writer.feed(CHUNK);
        let status = old.wait(WAIT).await.unwrap();
        assert!(status.success(), "{}", old.log_text());
        new.wait_for_event(ACQUIRED, WAIT).await.unwrap();
        old = new;
    }
    writer.feed(CHUNK);
    let written = writer.next;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if shipped(&dirs.sink_path).len() >= written {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shipped {} of {written}\n{}",
            shipped(&dirs.sink_path).len(),
            old.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    old.terminate().unwrap();
    old.wait(WAIT).await.unwrap();
    writer.finish();

    let seen = shipped(&dirs.sink_path);
    let lost: Vec<String> = (0..written)
        .map(|i| format!("jmsg-{i:06} kubelet says hello"))
        .filter(|m| !seen.contains_key(m))
        .collect();
    let repeated: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty(),
        "{} lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert!(
        repeated.is_empty(),
        "{} repeated, e.g. {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(3)]
    );
    assert_eq!(seen.len(), written);
}
