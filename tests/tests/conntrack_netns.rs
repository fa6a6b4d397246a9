//! In a DaemonSet pod without hostNetwork, `node_nf_conntrack_entries` must be the node's
//! table, not the pod's. Here a network namespace we create plays the pod: it gets
//! conntrack entries of its own (an nft rule that tracks, five UDP flows on loopback), and
//! the agent inside it reads procfs once as `/proc` (standalone: its own namespace) and
//! once through another path, as a DaemonSet's host mount (`--path.procfs=/host/proc`):
//! then the count is init's (the host's), not the namespace's.

use std::process::Command;

use node_agent_tests::{agent_proc, expfmt, require};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `entries` column of a /proc/net/stat/nf_conntrack text (hex).
fn stat_entries(text: &str) -> f64 {
    let row = text.lines().nth(1).expect("a CPU row");
    u64::from_str_radix(row.split_whitespace().next().unwrap(), 16).unwrap() as f64
}

/// Runs the agent in a new network namespace with conntrack entries and returns
/// (its node_nf_conntrack_entries, the namespace's own count).
fn entries_in_namespace(procfs: &str) -> (f64, f64) {
    let agent = agent_proc::agent_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "logs:\n  enabled: false\nhandover:\n  lock_file: {}\n",
            dir.path().join("leader.lock").display()
        ),
    )
    .unwrap();
    let script = r#"
set -e
ip link set lo up
printf 'table inet t {\n chain out { type filter hook output priority 0; ct state new counter; }\n}\n' | nft -f -
for i in 1 2 3 4 5; do echo x > /dev/udp/127.0.0.1/$((40000 + i)); done
"$AGENT" --web.listen-address=127.0.0.1:9100 --collector.disable-defaults --collector.conntrack \
  --path.procfs="$PROCFS" --config.file="$CONFIG" --log.level=warn &
pid=$!
ok=
for i in $(seq 1 200); do
  if curl -sf http://127.0.0.1:9100/metrics > "$DIR/metrics"; then ok=1; break; fi
  sleep 0.05
done
kill "$pid"; wait "$pid" || true
[ -n "$ok" ]
cp /proc/net/stat/nf_conntrack "$DIR/own"
"#;
    let out = Command::new("unshare")
        .args(["-n", "bash", "-c", script])
        .env("AGENT", agent)
        .env("PROCFS", procfs)
        .env("CONFIG", &config)
        .env("DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "namespace script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = std::fs::read_to_string(dir.path().join("metrics")).unwrap();
    let families = expfmt::parse(&metrics).unwrap();
    let entries = families["node_nf_conntrack_entries"].series[0].1.value;
    let own = stat_entries(&std::fs::read_to_string(dir.path().join("own")).unwrap());
    (entries, own)
}

#[test]
fn conntrack_entries_are_the_nodes_through_a_host_procfs_mount() {
    if !nix::unistd::geteuid().is_root() {
        return require::missing("root, to create a network namespace");
    }
    for tool in ["unshare", "ip", "nft", "curl", "bash"] {
        if !have(tool) {
            return require::missing(&format!("{tool} (netns conntrack test)"));
        }
    }
    if !std::path::Path::new("/proc/net/stat/nf_conntrack").exists() {
        return require::missing("the nf_conntrack module");
    }
    // Standalone: the namespace's own table, with our five flows.
    let (entries, own) = entries_in_namespace("/proc");
    assert!(own >= 5.0, "the namespace has its flows: {own}");
    assert_eq!(entries, own);
    // A host procfs mount (any path other than /proc): init's namespace.
    let host_before =
        stat_entries(&std::fs::read_to_string("/proc/1/net/stat/nf_conntrack").unwrap());
    let (entries, own) = entries_in_namespace("/proc/self/root/proc");
    let host_after =
        stat_entries(&std::fs::read_to_string("/proc/1/net/stat/nf_conntrack").unwrap());
    assert!(own >= 5.0);
    assert!(
        entries == host_before || entries == host_after,
        "agent says {entries}, host has {host_before}..{host_after}, the namespace {own}"
    );
    if host_before != own && host_after != own {
        assert_ne!(entries, own, "must not be the namespace's table");
    }
}
