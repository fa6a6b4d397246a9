//! Who may lead: a pod that cannot do the leader's work never takes the lock, two agents
//! over one state dir never lead at once, and a leader that loses its lock stops leading.
//! Real `node-agent` processes, as in handover.rs.

use std::path::Path;
use std::time::Duration;

use node_agent::handover::LeaderLock;
use node_agent_tests::agent_proc::{AgentDirs, AgentProc, agent_binary};

const ACQUIRED: &str = "acquired leader lock: now leader";
const STANDBY: &str = "leader lock is held: waiting as standby";

fn write(dirs: &AgentDirs, name: &str, lock_file: &Path, sink_extra: &str) -> std::path::PathBuf {
    let yaml = format!(
        "logs:\n  pods_dir: {:?}\n  state_dir: {:?}\nsinks:\n  - type: file\n    path: {:?}\n{sink_extra}handover:\n  lock_file: {:?}\n",
        dirs.pods_dir, dirs.state_dir, dirs.sink_path, lock_file
    );
    let path = dirs.root.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

async fn leader(agent: &AgentProc) -> f64 {
    agent
        .metric("node_agent_leader")
        .await
        .unwrap()
        .expect("node_agent_leader exported")
}

/// A missing CA file used to leave the pod leader, Ready and shipping nothing, with the
/// standby blocked forever. Now it is a configuration error: exit 2 before the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_sink_exits_2_without_taking_the_lock() {
    let dirs = AgentDirs::new().unwrap();
    let config = write(
        &dirs,
        "broken.yaml",
        &dirs.lock_file,
        "  - type: loki\n    url: https://loki.invalid:3100\n    tls: {ca_file: /nonexistent/ca.pem}\n",
    );
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(agent_binary().unwrap())
        .arg(format!("--config.file={}", config.display()))
        .args([
            "--web.listen-address=127.0.0.1:0",
            "--collector.disable-defaults",
        ])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("exits at once")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ca.pem"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    // Nobody holds (or ever held) the lock.
    assert!(
        !dirs.lock_file.exists() || LeaderLock::try_acquire(&dirs.lock_file).unwrap().is_some()
    );
}

/// A rollout that changes `handover.lock_file` gives the old and new pod different lock
/// files; the state dir's own lock still lets only one lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_lock_files_over_one_state_dir_never_lead_twice() {
    let dirs = AgentDirs::new().unwrap();
    let old_cfg = write(
        &dirs,
        "old.yaml",
        &dirs.root.path().join("run/old.lock"),
        "",
    );
    let new_cfg = write(
        &dirs,
        "new.yaml",
        &dirs.root.path().join("run/new.lock"),
        "",
    );
    let mut old = AgentProc::start("old", &old_cfg).await.unwrap();
    old.wait_for_event(ACQUIRED, Duration::from_secs(10))
        .await
        .unwrap();
    let mut new = AgentProc::start("new", &new_cfg).await.unwrap();
    new.wait_for_event(STANDBY, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(leader(&old).await, 1.0);
    assert_eq!(leader(&new).await, 0.0);
    old.terminate().unwrap();
    assert!(old.wait(Duration::from_secs(15)).await.unwrap().success());
    new.wait_for_event(ACQUIRED, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(leader(&new).await, 1.0);
    new.terminate().unwrap();
    assert!(new.wait(Duration::from_secs(15)).await.unwrap().success());
}

/// A deleted lock file excludes nobody any more: the leader drains and exits non-zero so
/// the standby (which locks the new file) is the only leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lock_file_is_deleted_stops_leading() {
    let dirs = AgentDirs::new().unwrap();
    let config = dirs.write_config(&[]).unwrap();
    let mut agent = AgentProc::start("leader", &config).await.unwrap();
    agent
        .wait_for_event(ACQUIRED, Duration::from_secs(10))
        .await
        .unwrap();
    std::fs::remove_file(&dirs.lock_file).unwrap();
    let status = agent.wait(Duration::from_secs(20)).await.unwrap();
    assert!(!status.success(), "exits non-zero");
    assert!(
        agent.log_text().contains("lost the leader lock"),
        "{}",
        agent.log_text()
    );
}

/// An unusable state dir (a file, not a directory) used to leave a leader that shipped
/// nothing and held the lock until SIGTERM (the old `leader_keeps_leading_when_log_shipping_
/// fails`). Now it fails the pod at start with status 2, before the lock is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_dir_exits_2_without_taking_the_lock() {
    let dirs = AgentDirs::new().unwrap();
    let config = dirs.write_config(&[]).unwrap();
    let _ = std::fs::remove_dir_all(&dirs.state_dir);
    std::fs::write(&dirs.state_dir, "not a directory").unwrap();
    let out = tokio::process::Command::new(agent_binary().unwrap())
        .arg(format!("--config.file={}", config.display()))
        .args([
            "--web.listen-address=127.0.0.1:0",
            "--collector.disable-defaults",
        ])
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("exits at once")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&dirs.state_dir.display().to_string()),
        "{stderr}"
    );
    assert!(
        !dirs.lock_file.exists() || LeaderLock::try_acquire(&dirs.lock_file).unwrap().is_some()
    );
}
