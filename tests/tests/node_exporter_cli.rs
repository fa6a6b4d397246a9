//! node_exporter 1.5.0's command line works unchanged: every flag its `--help` lists (the
//! Debian package's output, checked in) plus the hidden deprecated spellings, each passed
//! alone to the real binary, is accepted (`--dry-run` validates and exits 0; a rejected
//! flag exits 2). And the listen-address forms DaemonSets use actually serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use node_agent_tests::{agent_proc, expfmt, http, require};

fn help_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/node_exporter_1.5.0_help.txt")
}

/// One command-line argument per way of passing each flag of the help text: `--x=value`
/// (its default, or a plausible value for a placeholder) and, for booleans, `--x` and
/// `--no-x`.
fn invocations(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in help.lines() {
        let Some(start) = line.find("--") else {
            continue;
        };
        // Only flag definitions: the flag is the first thing on the line (after "-h, "),
        // not a description's continuation (indented past the flag column).
        let head = line[..start].trim();
        if start > 8 || !(head.is_empty() || head == "-h,") {
            continue;
        }
        let spec = line[start..].split("  ").next().unwrap_or("").trim();
        let spec = spec.trim_end_matches(" ...");
        match spec.split_once('=') {
            Some((flag, value)) => {
                let value = value.trim_matches('"').replace("\\\\", "\\");
                // A placeholder such as COLLECTOR.ARP.DEVICE-INCLUDE: a regex-like value.
                let value = if value
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || ".-_".contains(c))
                    && !value.is_empty()
                {
                    "^x$".to_string()
                } else {
                    value
                };
                out.push(format!("{flag}={value}"));
            }
            None => {
                let flag = spec.split_whitespace().next().unwrap_or(spec);
                out.push(flag.to_string());
                if !matches!(flag, "--help" | "--version") {
                    out.push(format!("--no-{}", &flag[2..]));
                }
            }
        }
    }
    out.push("-h".into());
    out.push("--help-long".into());
    out.push("--help-man".into());
    out
}

/// Flags of 1.5.0 that its `--help` hides (deprecated names, testing knobs).
const HIDDEN: &[&str] = &[
    "--collector.filesystem.ignored-mount-points=^/(sys|proc|dev)($|/)",
    "--collector.filesystem.ignored-fs-types=^(sys|proc|auto)fs$",
    "--collector.filesystem.mount-timeout=5s",
    "--collector.diskstats.ignored-devices=^(ram|loop|fd)\\d+$",
    "--collector.netdev.device-blacklist=^lo$",
    "--collector.netdev.device-whitelist=^eth",
    "--collector.systemd.unit-whitelist=.+\\.service",
    "--collector.systemd.unit-blacklist=.+\\.scope",
    "--collector.systemd.private",
    "--web.listen-address=[10.0.0.1]:9100",
    "--web.listen-address=[::1]:9100",
    "--web.listen-address=0.0.0.0:9100",
    "--web.listen-address=localhost:9100",
    "--web.listen-address=[fe80::1%lo]:9100",
    "--collector.xfs=false",
    "--collector.cpu.guest=false",
];

fn run_dry(binary: &Path, flag: &str) -> std::process::Output {
    Command::new(binary)
        .arg("--dry-run")
        .arg(flag)
        .env_remove("NODE_AGENT_CONFIG")
        .env_remove("NODE_AGENT_LISTEN_ADDRESS")
        .output()
        .expect("running node-agent")
}

#[test]
fn every_node_exporter_1_5_0_flag_is_accepted() {
    let help = std::fs::read_to_string(help_fixture()).unwrap();
    // The checked-in text is the real one where Debian's node_exporter is installed.
    match Command::new("prometheus-node-exporter")
        .arg("--help")
        .output()
    {
        Ok(out) => {
            let live = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if live.contains("--collector.") {
                assert_eq!(
                    live.trim(),
                    help.trim(),
                    "the fixture is node_exporter's --help"
                );
            }
        }
        Err(_) => require::missing("prometheus-node-exporter (Debian) to compare --help"),
    }
    let flags = invocations(&help);
    assert!(flags.len() > 180, "parsed only {} flags", flags.len());
    assert!(flags.iter().any(|f| f == "--no-collector.wifi"));
    assert!(flags.iter().any(|f| f.starts_with("--web.config.file=")));
    let binary = agent_proc::agent_binary().unwrap();
    let mut rejected = Vec::new();
    for flag in flags
        .iter()
        .map(String::as_str)
        .chain(HIDDEN.iter().copied())
    {
        let out = run_dry(binary, flag);
        if out.status.code() != Some(0) {
            rejected.push(format!(
                "{flag}: {:?} {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(rejected.is_empty(), "rejected:\n{}", rejected.join("\n"));
}

#[test]
fn deprecated_flags_and_unimplemented_collectors_warn() {
    let binary = agent_proc::agent_binary().unwrap();
    let out = Command::new(binary)
        .args([
            "--dry-run",
            "--log.format=json",
            "--collector.netdev.device-blacklist=^lo$",
            "--collector.ntp",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("device-blacklist is DEPRECATED"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\\\"ntp\\\" is not implemented"),
        "{stderr}"
    );
    // Real errors still exit 2.
    for bad in [
        "--no-collector.nosuch",
        "--web.listen-address=nonsense",
        "--nosuch",
    ] {
        let out = run_dry(binary, bad);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn bracketed_ipv4_and_several_listen_addresses_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("agent.yaml");
    std::fs::write(
        &config_file,
        format!(
            "logs:\n  enabled: false\nhandover:\n  lock_file: {}\n",
            dir.path().join("leader.lock").display()
        ),
    )
    .unwrap();
    let (p1, p2) = (http::free_port(), http::free_port());
    let config = node_agent::config::Config::from_args([
        "node-agent".to_string(),
        // The prometheus-node-exporter Helm chart's form.
        format!("--web.listen-address=[127.0.0.1]:{p1}"),
        format!("--web.listen-address=localhost:{p2}"),
        format!("--config.file={}", config_file.display()),
        "--collector.disable-defaults".into(),
        "--collector.loadavg".into(),
        "--collector.uname".into(),
        "--runtime.gomaxprocs=1".into(),
    ])
    .expect("agent config");
    let stop = tokio_util::sync::CancellationToken::new();
    let agent_stop = stop.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(node_agent::app::run_until(config, agent_stop))
    });
    for port in [p1, p2] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            http::wait_ready(addr, "/readyz", Duration::from_secs(10)),
            "not serving on {addr}"
        );
        let r = http::get(addr, "/metrics", &[]).unwrap();
        assert!(expfmt::parse(&r.text()).unwrap().contains_key("node_load1"));
    }
    // exclude[]: every enabled collector but the excluded ones; mixed with collect[]: 400.
    let addr: SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let r = http::get(addr, "/metrics?exclude[]=loadavg&exclude[]=nosuch", &[]).unwrap();
    assert_eq!(r.status, 200);
    let families = expfmt::parse(&r.text()).unwrap();
    assert!(!families.contains_key("node_load1"));
    assert_eq!(
        families["node_scrape_collector_success"].label_values("collector"),
        ["uname".to_string()].into()
    );
    let r = http::get(addr, "/metrics?exclude[]=loadavg&collect[]=uname", &[]).unwrap();
    assert_eq!(r.status, 400);
    stop.cancel();
    thread.join().unwrap().unwrap();
}
