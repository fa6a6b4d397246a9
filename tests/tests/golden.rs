//! Golden end-to-end test: the agent (in this process, through its real flags and HTTP
//! endpoint) over one host tree merged from every collector's fixtures under
//! `agent/metrics/testdata`, every collector on; the exposition is diffed against
//! `tests/testdata/golden.prom` and must be `promtool check metrics` clean.
//!
//! `UPDATE_GOLDEN=1 cargo test -p node-agent-tests --test golden` rewrites the file.
//! Values read from the live kernel (clock, adjtimex, uname, statfs of the fixture's
//! mount points, file mtimes, durations) are replaced by `<live>`; the tree's temporary
//! path by `$ROOT`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use node_agent::metrics::config::NODE_EXPORTER_COLLECTORS;
use node_agent_tests::in_process::InProcessAgent;
use node_agent_tests::{http, require};

/// (fixture path under testdata, destination under the merged root).
const LAYOUT: &[(&str, &str)] = &[
    ("cpu/basic", ""),
    ("arp", ""),
    ("bonding", ""),
    ("conntrack", ""),
    ("diskstats", ""),
    ("dmi", ""),
    ("edac", ""),
    ("fibrechannel", ""),
    ("filesystem", ""),
    ("hwmon", ""),
    ("infiniband", ""),
    ("ipvs", ""),
    ("mdadm", ""),
    ("netclass", ""),
    ("netdev", ""),
    ("netstat", ""),
    ("nfs", ""),
    ("nfsd", ""),
    ("nvme", ""),
    ("powersupplyclass", ""),
    ("rapl", ""),
    ("sockstat", ""),
    ("softnet", ""),
    ("tapestats", ""),
    ("thermal_zone", ""),
    ("udp_queues", ""),
    ("xfs", ""),
    ("bcache", ""),
    ("btrfs", ""),
    ("zfs", ""),
    ("interrupts", ""),
    ("meminfo_numa", ""),
    ("processes", ""),
    ("sysctl", ""),
    ("tcpstat", ""),
    ("watchdog", ""),
    ("loadavg", ""),
    ("powersupplyclass/sys_utf8", "sys"),
    ("meminfo/meminfo", "proc/meminfo"),
    ("stat/stat", "proc/stat"),
    ("vmstat/vmstat", "proc/vmstat"),
    ("schedstat/schedstat", "proc/schedstat"),
    ("filefd/file-nr", "proc/sys/fs/file-nr"),
    ("pressure/ok", "proc/pressure"),
    ("entropy/ok", "proc"),
    ("time/ok", "sys"),
    ("cpufreq/ok", "sys"),
    ("os/debian", "rootfs"),
    ("selinux/permissive", "rootfs"),
    ("textfile/mixed", "textfile"),
];

/// Families whose values come from the live system, not the fixtures.
const LIVE: &[&str] = &[
    "node_scrape_collector_duration_seconds",
    "node_textfile_mtime_seconds",
    "node_time_seconds",
    "node_time_zone_offset_seconds",
    "node_boot_time_seconds",
];
const LIVE_PREFIXES: &[&str] = &[
    "node_timex_",
    "node_uname_",
    "node_filesystem_",
    // The agent's own (leadership, handover timing).
    "node_agent_",
];

fn copy_tree(from: &Path, to: &Path) {
    if from.is_file() {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
        return;
    }
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let ty = entry.file_type().unwrap();
        let dest = to.join(entry.file_name());
        if ty.is_symlink() {
            let target = std::fs::read_link(entry.path()).unwrap();
            let _ = std::fs::remove_file(&dest);
            std::os::unix::fs::symlink(target, &dest).unwrap();
        } else if ty.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn normalize(text: &str, root: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.replace(root, "$ROOT");
        if line.starts_with('#') || line.is_empty() {
            out.push_str(&line);
            out.push('\n');
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or("");
        let live = LIVE.contains(&name) || LIVE_PREFIXES.iter().any(|p| name.starts_with(p));
        // uname's labels are the running kernel's and host's own (they change with the VM).
        if name == "node_uname_info" {
            out.push_str("node_uname_info{<live>} <live>\n");
            continue;
        }
        match (live, line.rsplit_once(' ')) {
            (true, Some((series, _))) => {
                out.push_str(series);
                out.push_str(" <live>\n");
            }
            _ => {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/golden.prom")
}

#[test]
fn exposition_over_every_fixture_matches_the_golden_file() {
    let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/metrics/testdata");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    for (from, to) in LAYOUT {
        copy_tree(&testdata.join(from), &root.join(to));
    }
    let config_file = dir.path().join("agent.yaml");
    std::fs::write(
        &config_file,
        format!(
            // Its own state dir too: the leader also locks that, and another agent on this
            // host holding the default one would keep this one a standby.
            "logs:\n  enabled: false\n  state_dir: {}\nhandover:\n  lock_file: {}\n",
            dir.path().join("state").display(),
            dir.path().join("leader.lock").display()
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut args = vec![
        "node-agent".to_string(),
        format!("--web.listen-address={addr}"),
        format!("--config.file={}", config_file.display()),
        format!("--path.procfs={}", root.join("proc").display()),
        format!("--path.sysfs={}", root.join("sys").display()),
        format!("--path.rootfs={}", root.join("rootfs").display()),
        format!("--path.udev.data={}", root.join("udev").display()),
        format!(
            "--collector.textfile.directory={}",
            root.join("textfile").display()
        ),
        "--web.disable-exporter-metrics".into(),
        "--collector.cpu.info".into(),
    ];
    // Every collector node_exporter has (unimplemented ones are accepted and ignored).
    args.extend(
        NODE_EXPORTER_COLLECTORS
            .iter()
            // systemd needs a bus: tests/systemd_dbus.rs covers it.
            .filter(|(n, _)| *n != "systemd")
            .map(|(n, _)| format!("--collector.{n}")),
    );
    let agent = InProcessAgent::start(args);
    assert!(http::wait_ready(addr, "/readyz", Duration::from_secs(10)));
    let body = http::get(addr, "/metrics", &[]).unwrap().text();
    agent.stop().expect("agent run");

    // Only the agent's own families may remain besides node_*: none, with the exporter
    // metrics off.
    let got = normalize(&body, &root.display().to_string());
    let path = golden_path();
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .filter(|l| !got.lines().any(|g| g == *l))
            .map(|l| format!("- {l}"))
            .chain(
                got.lines()
                    .filter(|l| !want.lines().any(|w| w == *l))
                    .map(|l| format!("+ {l}")),
            )
            .take(60)
            .collect();
        panic!(
            "exposition differs from {} (UPDATE_GOLDEN=1 rewrites it):\n{}",
            path.display(),
            diff.join("\n")
        );
    }

    // promtool check metrics on the raw exposition.
    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => return require::missing("promtool (Debian prometheus) for check metrics"),
    };
    std::io::Write::write_all(&mut promtool.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // node_exporter's own names draw these lints too (procfs field names kept verbatim,
    // entropy in bits); anything else, and any parse error, fails.
    let unexpected: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let procfs_field = ["node_memory_", "node_netstat_", "node_vmstat_"]
                .iter()
                .any(|p| l.starts_with(p))
                && l.contains("should be written in 'snake_case'");
            let entropy = l.starts_with("node_entropy_") && l.contains("base unit \"bytes\"");
            !(procfs_field || entropy)
        })
        .collect();
    assert!(unexpected.is_empty(), "promtool:\n{report}");
}
