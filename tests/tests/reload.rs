//! Configuration reload on a real agent: SIGHUP or a changed file restarts the log
//! pipeline from its checkpoint with the new sinks, losing and repeating nothing; a
//! change that cannot be applied at run time, or a broken file, is refused and the
//! running configuration keeps shipping.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use node_agent_tests::agent_proc::{AgentDirs, AgentProc};
use node_agent_tests::loggen::{self, ContainerLog, Format, LineMix};

const WAIT: Duration = Duration::from_secs(30);

/// Occurrences of each loggen message id in a file sink's output.
fn ids(sink: &Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let text = std::fs::read_to_string(sink).unwrap_or_default();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line).expect("JSON lines");
        if let Some(id) = record["message"].as_str().and_then(loggen::message_id) {
            *seen.entry(id.to_string()).or_default() += 1;
        }
    }
    seen
}

async fn wait_for_ids(sink: &Path, want: &[String]) -> HashMap<String, usize> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = ids(sink);
        if want.iter().all(|id| seen.contains_key(id)) || tokio::time::Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(dirs: &AgentDirs, sinks: &[&Path], lock_file: &Path, extra_logs: &str) -> String {
    let mut yaml = format!(
        "logs:\n  pods_dir: {:?}\n  state_dir: {:?}\n{extra_logs}sinks:\n",
        dirs.pods_dir, dirs.state_dir
    );
    for sink in sinks {
        let name = sink.file_stem().and_then(|s| s.to_str()).unwrap_or("file");
        yaml.push_str(&format!(
            "  - type: file\n    name: {name}\n    path: {sink:?}\n"
        ));
    }
    yaml.push_str(&format!("handover:\n  lock_file: {lock_file:?}\n"));
    yaml
}

fn write_lines(log: &mut ContainerLog, n: usize) -> Vec<String> {
    let lines = log.write_lines(n, &LineMix::plain(60)).expect("write");
    log.flush().expect("flush");
    lines
        .iter()
        .map(|l| loggen::message_id(l).expect("loggen id").to_string())
        .collect()
}

fn assert_once(seen: &HashMap<String, usize>, want: &[String], sink: &str) {
    let lost: Vec<&String> = want.iter().filter(|id| !seen.contains_key(*id)).collect();
    let repeated: Vec<(&String, &usize)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty(),
        "{sink}: {} lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert!(
        repeated.is_empty(),
        "{sink}: repeated {:?}",
        &repeated[..repeated.len().min(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_restarts_the_pipeline_without_loss_and_refuses_what_it_cannot_apply() {
    let dirs = AgentDirs::new().unwrap();
    let sink_a = dirs.root.path().join("sink/a.jsonl");
    let sink_b = dirs.root.path().join("sink/b.jsonl");
    let path = dirs.root.path().join("config.yaml");
    std::fs::write(&path, config(&dirs, &[&sink_a], &dirs.lock_file, "")).unwrap();
    let agent = AgentProc::start("reload-agent", &path).await.unwrap();
    agent
        .wait_for_event("acquired leader lock: now leader", WAIT)
        .await
        .unwrap();
    let mut log =
        ContainerLog::create(&dirs.pods_dir, "shop", "web-1", "app", Format::Cri).unwrap();
    let mut all = write_lines(&mut log, 200);
    wait_for_ids(&sink_a, &all).await;

    // SIGHUP with a second sink and other batching: the pipeline restarts from its
    // checkpoint; lines written around the reload reach A once, and B from then on.
    std::fs::write(
        &path,
        config(
            &dirs,
            &[&sink_a, &sink_b],
            &dirs.lock_file,
            "  batch_max_records: 7\n",
        ),
    )
    .unwrap();
    let during = write_lines(&mut log, 100);
    all.extend(during.iter().cloned());
    kill(agent.pid(), Signal::SIGHUP).unwrap();
    agent
        .wait_for_event(
            "config reloaded: log pipeline restarted from its checkpoint",
            WAIT,
        )
        .await
        .unwrap();
    let after = write_lines(&mut log, 100);
    all.extend(after.iter().cloned());
    let seen_a = wait_for_ids(&sink_a, &all).await;
    assert_once(&seen_a, &all, "sink A");
    let seen_b = wait_for_ids(&sink_b, &after).await;
    assert_once(&seen_b, &after, "sink B");
    assert!(
        seen_b.keys().all(|id| all.contains(id)),
        "sink B got records that were never written"
    );

    // A new lock file cannot apply at run time: refused on the file change alone (no
    // signal), and the running pipeline keeps shipping to both sinks.
    let other_lock = dirs.root.path().join("run/other.lock");
    std::fs::write(&path, config(&dirs, &[&sink_a], &other_lock, "")).unwrap();
    let refused = agent
        .wait_for_event(
            "config reload refused; keeping the running configuration",
            WAIT,
        )
        .await
        .unwrap();
    let error = refused.fields["error"].as_str().unwrap_or_default();
    assert!(error.contains("handover cannot change"), "{error}");
    let more = write_lines(&mut log, 20);
    all.extend(more.iter().cloned());
    assert_once(
        &wait_for_ids(&sink_a, &all).await,
        &all,
        "sink A after refusal",
    );
    assert!(
        wait_for_ids(&sink_b, &more)
            .await
            .keys()
            .any(|id| more.contains(id))
    );

    // A broken file is refused with its key path, on SIGHUP too.
    std::fs::write(&path, "logs:\n  batch_max_records: many\n").unwrap();
    kill(agent.pid(), Signal::SIGHUP).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let broken = agent.events().into_iter().any(|e| {
            e.message == "config reload refused; keeping the running configuration"
                && e.fields["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("logs.batch_max_records"))
        });
        if broken {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(agent.metric("node_agent_leader").await.unwrap(), Some(1.0));
    agent.terminate().unwrap();
}
