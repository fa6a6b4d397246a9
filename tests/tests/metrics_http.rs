//! The metrics endpoint's HTTP behaviour, with the agent alone (no peer needed, so these
//! always run): gzip, `collect[]` filtering and its errors, probes, 404.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use node_agent_tests::{expfmt, http};

struct Agent {
    ours_addr: SocketAddr,
}

/// One agent for the tests of this file, running until the process ends.
fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_file = dir.path().join("agent.yaml");
        std::fs::write(
            &config_file,
            format!(
                "logs:\n  enabled: false\nhandover:\n  lock_file: {}\n",
                dir.path().join("leader.lock").display()
            ),
        )
        .unwrap();
        let ours_addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
        let config = node_agent::config::Config::from_args([
            "node-agent".to_string(),
            format!("--web.listen-address={ours_addr}"),
            format!("--config.file={}", config_file.display()),
        ])
        .expect("agent config");
        let stop = tokio_util::sync::CancellationToken::new();
        let agent_stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(node_agent::app::run_until(config, agent_stop))
        });
        assert!(
            http::wait_ready(ours_addr, "/readyz", Duration::from_secs(10)),
            "node-agent did not start"
        );
        std::mem::forget(dir);
        std::mem::forget(stop);
        Agent { ours_addr }
    })
}

#[test]
fn endpoint_serves_gzip_filters_probes_and_errors() {
    let s = agent();
    let gz = http::get(s.ours_addr, "/metrics", &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.body[..]), &mut text)
        .unwrap();
    assert!(expfmt::parse(&text).unwrap().contains_key("node_load1"));

    let filtered = http::get(
        s.ours_addr,
        "/metrics?collect[]=loadavg&collect[]=uname",
        &[],
    )
    .unwrap();
    let families = expfmt::parse(&filtered.text()).unwrap();
    let collectors = families["node_scrape_collector_success"].label_values("collector");
    assert_eq!(
        collectors,
        BTreeSet::from(["loadavg".to_string(), "uname".to_string()])
    );
    assert!(!families.contains_key("node_cpu_seconds_total"));

    let bad = http::get(s.ours_addr, "/metrics?collect[]=nosuch", &[]).unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("nosuch"));

    assert_eq!(http::get(s.ours_addr, "/healthz", &[]).unwrap().status, 200);
    assert_eq!(http::get(s.ours_addr, "/nope", &[]).unwrap().status, 404);
}
