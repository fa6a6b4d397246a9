//! Kept procfs/sysfs files (agent/src/metrics/procfile.rs) against a real kernel: network
//! interfaces renamed into each other's names, or deleted and re-created under the same
//! names, between scrapes must never be read through files opened for another device.
//!
//! The agent runs in a fresh network and mount namespace (`unshare --net --mount`, needs
//! root) with its own sysfs mount, so the host's interfaces are untouched. Elsewhere the
//! test is skipped with a message; under CI (root, as on this machine) it must run.

use std::collections::BTreeMap;
use std::process::Command;

use node_agent_tests::agent_proc::agent_binary;

/// Runs inside the namespaces: scrapes netclass between interface changes and prints
/// each scrape's `node_network_{mtu_bytes,iface_id}` of devices va and vb after a marker.
const SCRIPT: &str = r#"
set -eu
mount -t sysfs sysfs "$SYS"
ip link set lo up
ip link add name va type veth peer name vb
ip link set va mtu 1300
ip link set vb mtu 1400
"$AGENT" --web.listen-address=127.0.0.1:9100 --path.sysfs="$SYS" \
    --collector.disable-defaults --collector.netclass --collector.netdev \
    --config.file="$CONFIG" --log.level=warn &
pid=$!
trap 'kill $pid' EXIT
for _ in $(seq 100); do
    curl -sf http://127.0.0.1:9100/metrics >/dev/null && break
    sleep 0.1
done
scrape() {
    echo "== $1"
    curl -sf http://127.0.0.1:9100/metrics \
        | grep -E '^node_network_(mtu_bytes|iface_id)\{device="(va|vb)"\}'
}
scrape first
scrape kept
ip link set va name tmp
ip link set vb name va
ip link set tmp name vb
scrape swapped
ip link del va
ip link add name va type veth peer name vb
ip link set va mtu 1234
ip link set vb mtu 1235
scrape recreated
"#;

/// scrape marker → "metric/device" → value.
type Scrapes = BTreeMap<String, BTreeMap<String, f64>>;

fn parse(output: &str) -> Scrapes {
    let mut scrapes = Scrapes::new();
    let mut current = String::new();
    for line in output.lines() {
        if let Some(marker) = line.strip_prefix("== ") {
            current = marker.to_string();
            scrapes.entry(current.clone()).or_default();
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let key = series
            .replace("node_network_", "")
            .replace("{device=\"", "/")
            .replace("\"}", "");
        scrapes
            .entry(current.clone())
            .or_default()
            .insert(key, value.parse().unwrap());
    }
    scrapes
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn renamed_and_recreated_interfaces_are_read_afresh() {
    let usable =
        nix::unistd::geteuid().is_root() && ["unshare", "ip", "curl"].iter().all(|c| have(c));
    if !usable {
        node_agent_tests::require::missing("needs root, unshare, ip and curl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    std::fs::create_dir(&sys).unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "logs:\n  enabled: false\nhandover:\n  lock_file: {:?}\n",
            dir.path().join("leader.lock")
        ),
    )
    .unwrap();
    let output = Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            SCRIPT,
        ])
        .env("SYS", &sys)
        .env("CONFIG", &config)
        .env("AGENT", agent_binary().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "namespace script failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let s = parse(&stdout);
    let get = |scrape: &str, key: &str| -> f64 {
        *s.get(scrape)
            .and_then(|m| m.get(key))
            .unwrap_or_else(|| panic!("{scrape}: {key} missing in\n{stdout}"))
    };
    for scrape in ["first", "kept"] {
        assert_eq!(get(scrape, "mtu_bytes/va"), 1300.0);
        assert_eq!(get(scrape, "mtu_bytes/vb"), 1400.0);
    }
    // Swapped names: each name now shows the other device, ifindex included.
    assert_eq!(get("swapped", "mtu_bytes/va"), 1400.0);
    assert_eq!(get("swapped", "mtu_bytes/vb"), 1300.0);
    assert_eq!(get("swapped", "iface_id/va"), get("first", "iface_id/vb"));
    assert_eq!(get("swapped", "iface_id/vb"), get("first", "iface_id/va"));
    // Deleted and re-created under the same names: the new devices are read.
    assert_eq!(get("recreated", "mtu_bytes/va"), 1234.0);
    assert_eq!(get("recreated", "mtu_bytes/vb"), 1235.0);
    assert_ne!(get("recreated", "iface_id/va"), get("first", "iface_id/va"));
}
