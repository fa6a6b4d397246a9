//! node-agent against Debian's prometheus-node-exporter 1.5.0 on this host: same family
//! names, types, label names and HELP; same label values and stable values where the host
//! state is stable; no promtool findings beyond node_exporter's own.
//!
//! Needs `prometheus-node-exporter` and `promtool` (installed by `.ci/run`). Without them the
//! test fails under CI and is skipped with a message elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use node_agent_tests::expfmt::{self, Family};
use node_agent_tests::http;

const NODE_EXPORTER: &str = "prometheus-node-exporter";
/// Debian's patched default (03-Default_settings.patch); ours defaults to upstream's.
const DEBIAN_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run|sys|mnt|media|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

/// Off by default in both; on here so node_cpu_info/flag_info/bug_info are compared too.
const CPU_INFO_FLAGS: &[&str] = &[
    "--collector.cpu.info",
    "--collector.cpu.info.flags-include=^(aes|avx2?|sse4_2|hypervisor)$",
    "--collector.cpu.info.bugs-include=^spectre",
];

struct Scrapes {
    ne_text: String,
    ours_text: String,
    ne: BTreeMap<String, Family>,
    ours: BTreeMap<String, Family>,
    ours_addr: SocketAddr,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Scrapes both exporters once (shared by all tests in this file); `None` = skipped.
fn scrapes() -> Option<&'static Scrapes> {
    static SCRAPES: OnceLock<Option<Scrapes>> = OnceLock::new();
    SCRAPES
        .get_or_init(|| {
            if !have(NODE_EXPORTER) {
                node_agent_tests::require::missing(&format!("{NODE_EXPORTER} not installed; run .ci/run or apt-get install prometheus-node-exporter"));
                return None;
            }
            Some(scrape_both())
        })
        .as_ref()
}

fn scrape_both() -> Scrapes {
    let dir = tempfile::tempdir().expect("tempdir");
    let textfile_dir = dir.path().join("textfile");
    std::fs::create_dir(&textfile_dir).unwrap();
    std::fs::write(
        textfile_dir.join("compat.prom"),
        "# HELP compat_test_metric A metric from a textfile.\n# TYPE compat_test_metric gauge\ncompat_test_metric{a=\"b\"} 42\n",
    )
    .unwrap();
    let config_file = dir.path().join("agent.yaml");
    std::fs::write(
        &config_file,
        format!(
            "logs:\n  enabled: false\nhandover:\n  lock_file: {}\n",
            dir.path().join("leader.lock").display()
        ),
    )
    .unwrap();

    let ne_addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let ours_addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();

    let _ne = KillOnDrop(
        Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address={ne_addr}"))
            .arg("--no-collector.systemd")
            .args(CPU_INFO_FLAGS)
            .arg(format!(
                "--collector.textfile.directory={}",
                textfile_dir.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting node_exporter"),
    );

    let config = node_agent::config::Config::from_args(
        [
            "node-agent".to_string(),
            format!("--web.listen-address={ours_addr}"),
            format!("--collector.textfile.directory={}", textfile_dir.display()),
            "--collector.netdev.device-exclude=^lo$".to_string(),
            format!("--collector.filesystem.mount-points-exclude={DEBIAN_MOUNT_POINTS_EXCLUDE}"),
            format!("--config.file={}", config_file.display()),
        ]
        .into_iter()
        .chain(CPU_INFO_FLAGS.iter().map(|f| f.to_string())),
    )
    .expect("agent config");
    let stop = tokio_util::sync::CancellationToken::new();
    let agent_stop = stop.clone();
    let agent = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(node_agent::app::run_until(config, agent_stop))
    });

    assert!(
        http::wait_ready(ne_addr, "/", Duration::from_secs(10)),
        "node_exporter did not start"
    );
    assert!(
        http::wait_ready(ours_addr, "/readyz", Duration::from_secs(10)),
        "node-agent did not start"
    );
    // Warm-up scrape: cpu counters and first-scrape caches settle.
    let _ = http::get(ours_addr, "/metrics", &[]);

    let ne_resp = http::get(ne_addr, "/metrics", &[]).expect("scraping node_exporter");
    let ours_resp = http::get(ours_addr, "/metrics", &[]).expect("scraping node-agent");
    assert_eq!(ne_resp.status, 200);
    assert_eq!(ours_resp.status, 200);
    assert_eq!(
        ours_resp.header("content-type"),
        ne_resp.header("content-type"),
        "content type differs"
    );

    let ne_text = ne_resp.text();
    let ours_text = ours_resp.text();
    let ne = expfmt::parse(&ne_text).expect("parsing node_exporter output");
    let ours = expfmt::parse(&ours_text).expect("parsing node-agent output");

    // Keep the agent running for the HTTP tests below; it is torn down with the process.
    std::mem::forget(dir);
    std::mem::forget(agent);
    std::mem::forget(stop);
    Scrapes {
        ne_text,
        ours_text,
        ne,
        ours,
        ours_addr,
    }
}

/// Families that only exist in node_exporter's process: Go runtime and promhttp internals.
fn is_exporter_internal(name: &str) -> bool {
    name.starts_with("go_") || name.starts_with("promhttp_")
}

#[test]
fn same_family_names_types_and_labels() {
    let Some(s) = scrapes() else { return };
    let mut problems = Vec::new();
    for (name, ne_family) in &s.ne {
        if is_exporter_internal(name) || ne_family.series.is_empty() {
            continue;
        }
        match s.ours.get(name) {
            None => problems.push(format!("missing family {name} ({})", ne_family.kind)),
            Some(ours) => {
                if ours.kind != ne_family.kind {
                    problems.push(format!(
                        "{name}: type {} != node_exporter's {}",
                        ours.kind, ne_family.kind
                    ));
                }
                if ours.label_names() != ne_family.label_names() {
                    problems.push(format!(
                        "{name}: labels {:?} != node_exporter's {:?}",
                        ours.label_names(),
                        ne_family.label_names()
                    ));
                }
                if name.starts_with("node_")
                    && name != "node_exporter_build_info"
                    && ours.help != ne_family.help
                {
                    problems.push(format!(
                        "{name}: HELP {:?} != node_exporter's {:?}",
                        ours.help, ne_family.help
                    ));
                }
            }
        }
    }
    for (name, family) in &s.ours {
        if name.starts_with("node_")
            && !name.starts_with("node_agent_")
            && !s.ne.contains_key(name)
            && !family.series.is_empty()
        {
            problems.push(format!(
                "extra family {name} that node_exporter does not expose here"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn same_label_values_for_stable_dimensions() {
    let Some(s) = scrapes() else { return };
    let checks: &[(&str, &[&str])] = &[
        ("node_cpu_seconds_total", &["cpu", "mode"]),
        ("node_cpu_guest_seconds_total", &["cpu", "mode"]),
        (
            "node_cpu_info",
            &[
                "package",
                "core",
                "cpu",
                "vendor",
                "family",
                "model",
                "model_name",
                "microcode",
                "stepping",
                "cachesize",
            ],
        ),
        ("node_cpu_flag_info", &["flag"]),
        ("node_cpu_bug_info", &["bug"]),
        (
            "node_filesystem_size_bytes",
            &["device", "fstype", "mountpoint"],
        ),
        ("node_network_receive_bytes_total", &["device"]),
        (
            "node_network_info",
            &[
                "device",
                "address",
                "operstate",
                "duplex",
                "broadcast",
                "ifalias",
            ],
        ),
        ("node_disk_reads_completed_total", &["device"]),
        ("node_disk_info", &["device", "major", "minor"]),
        (
            "node_uname_info",
            &[
                "sysname",
                "release",
                "version",
                "machine",
                "nodename",
                "domainname",
            ],
        ),
        (
            "node_os_info",
            &[
                "id",
                "name",
                "pretty_name",
                "version",
                "version_id",
                "version_codename",
            ],
        ),
        ("node_textfile_mtime_seconds", &["file"]),
        ("compat_test_metric", &["a"]),
        ("node_time_zone_offset_seconds", &["time_zone"]),
        ("node_time_clocksource_current_info", &["clocksource"]),
        ("node_pressure_cpu_waiting_seconds_total", &[]),
        ("node_softnet_processed_total", &["cpu"]),
        ("node_udp_queues", &["ip", "queue"]),
    ];
    let mut problems = Vec::new();
    for (family, labels) in checks {
        let (Some(ne), Some(ours)) = (s.ne.get(*family), s.ours.get(*family)) else {
            if s.ne.contains_key(*family) {
                problems.push(format!("{family}: missing"));
            }
            continue;
        };
        if ne.series.len() != ours.series.len() {
            problems.push(format!(
                "{family}: {} series != node_exporter's {}",
                ours.series.len(),
                ne.series.len()
            ));
        }
        for label in *labels {
            let (a, b) = (ours.label_values(label), ne.label_values(label));
            if a != b {
                problems.push(format!(
                    "{family}{{{label}}}: {a:?} != node_exporter's {b:?}"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn same_stable_values() {
    let Some(s) = scrapes() else { return };
    let value = |map: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]| {
        map.get(name).and_then(|f| f.value_where(labels))
    };
    let exact: &[(&str, &[(&str, &str)])] = &[
        ("node_memory_MemTotal_bytes", &[]),
        ("node_memory_SwapTotal_bytes", &[]),
        ("node_filesystem_size_bytes", &[("mountpoint", "/")]),
        ("node_filesystem_files", &[("mountpoint", "/")]),
        ("node_filefd_maximum", &[]),
        ("node_entropy_pool_size_bits", &[]),
        ("node_network_mtu_bytes", &[("device", "eth0")]),
        ("node_network_speed_bytes", &[("device", "eth0")]),
        ("node_textfile_scrape_error", &[]),
        ("compat_test_metric", &[("a", "b")]),
        ("node_nf_conntrack_entries_limit", &[]),
        ("node_sockstat_TCP_mem_bytes", &[]),
    ];
    let mut problems = Vec::new();
    for (name, labels) in exact {
        let (ne, ours) = (value(&s.ne, name, labels), value(&s.ours, name, labels));
        if ne.is_some() && ne != ours {
            problems.push(format!(
                "{name}{labels:?}: {ours:?} != node_exporter's {ne:?}"
            ));
        }
    }
    let boot = |m| value(m, "node_boot_time_seconds", &[]);
    match (boot(&s.ne), boot(&s.ours)) {
        (Some(a), Some(b)) if (a - b).abs() <= 1.0 => {}
        (a, b) => problems.push(format!(
            "node_boot_time_seconds: {b:?} vs node_exporter's {a:?}"
        )),
    }
    let cpus = |m: &BTreeMap<String, Family>| {
        m.get("node_cpu_seconds_total")
            .map(|f| f.label_values("cpu").len())
    };
    if cpus(&s.ne) != cpus(&s.ours) {
        problems.push(format!(
            "cpu count {:?} != node_exporter's {:?}",
            cpus(&s.ours),
            cpus(&s.ne)
        ));
    }
    // Counters read a moment apart: ours must be within 2 s of idle time per cpu.
    if let (Some(ne), Some(ours)) = (
        s.ne.get("node_cpu_seconds_total"),
        s.ours.get("node_cpu_seconds_total"),
    ) {
        for cpu in ne.label_values("cpu") {
            let a = ne
                .value_where(&[("cpu", &cpu), ("mode", "idle")])
                .unwrap_or(f64::NAN);
            let b = ours
                .value_where(&[("cpu", &cpu), ("mode", "idle")])
                .unwrap_or(f64::NAN);
            if (b - a).abs().is_nan() || (b - a).abs() > 2.0 {
                problems.push(format!("cpu {cpu} idle seconds {b} vs node_exporter's {a}"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// `promtool check metrics` findings, one per line, without the exit status noise.
fn promtool_findings(text: &str) -> BTreeSet<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("promtool");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    all.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn promtool_finds_nothing_beyond_node_exporters_own_findings() {
    let Some(s) = scrapes() else { return };
    if !have("promtool") {
        node_agent_tests::require::missing("promtool not installed");
        return;
    }
    let ne = promtool_findings(&s.ne_text);
    let ours = promtool_findings(&s.ours_text);
    let extra: Vec<_> = ours
        .difference(&ne)
        .filter(|l| !l.starts_with("node_agent_"))
        .collect();
    assert!(
        extra.is_empty(),
        "promtool findings node_exporter does not have:\n{extra:#?}"
    );
    assert!(
        !ours
            .iter()
            .any(|l| l.contains("error while linting") || l.contains("parse")),
        "{ours:#?}"
    );
}

/// Scrapes re-read kept procfs/sysfs files and reuse the previous scrape's sample set: a
/// later scrape, even right after a filtered one, serves exactly the series compared above.
#[test]
fn repeated_scrapes_serve_the_same_series() {
    let Some(s) = scrapes() else { return };
    // Request counts by code gain a "400" series when the test above asks for a bad filter.
    let series = |families: &BTreeMap<String, Family>| -> BTreeSet<String> {
        families
            .iter()
            .filter(|(name, _)| *name != "promhttp_metric_handler_requests_total")
            .flat_map(|(_, f)| f.series.iter())
            .map(|(name, series)| format!("{name}{:?}", series.labels))
            .collect()
    };
    let filtered = http::get(s.ours_addr, "/metrics?collect[]=loadavg", &[]).unwrap();
    assert_eq!(filtered.status, 200);
    let first = series(&s.ours);
    for _ in 0..3 {
        let again = http::get(s.ours_addr, "/metrics", &[]).unwrap();
        let again = series(&expfmt::parse(&again.text()).unwrap());
        let missing: Vec<_> = first.difference(&again).collect();
        let added: Vec<_> = again.difference(&first).collect();
        assert!(
            missing.is_empty() && added.is_empty(),
            "missing {missing:?}, added {added:?}"
        );
    }
}
