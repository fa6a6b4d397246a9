//! The operator's status page: `/status` (JSON) and `/` (HTML) on a real agent that ships
//! a pod's logs, and the page as headless Chromium renders it (Debian `chromium`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use node_agent_tests::agent_proc::{AgentDirs, AgentProc};
use node_agent_tests::loggen::{ContainerLog, Format, LineMix};
use node_agent_tests::require;

const LINES: usize = 50;

/// An agent that became leader and shipped `LINES` records to its file sink.
async fn shipping_agent(dirs: &AgentDirs) -> AgentProc {
    let mut log = ContainerLog::create(&dirs.pods_dir, "shop", "web-1", "app", Format::Cri)
        .expect("container log");
    log.write_lines(LINES, &LineMix::plain(80)).expect("write");
    log.flush().expect("flush");
    let config = dirs.write_config(&[]).expect("config");
    let agent = AgentProc::start("status-agent", &config)
        .await
        .expect("agent");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shipped = agent
            .metric("node_agent_logs_records_shipped_total")
            .await
            .expect("metrics")
            .unwrap_or(0.0);
        if shipped >= LINES as f64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "shipped only {shipped} of {LINES}\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_and_html_show_role_sources_and_sinks() {
    let dirs = AgentDirs::new().unwrap();
    let agent = shipping_agent(&dirs).await;

    let (code, body) = agent.get("/status").await.unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(status["node"], "test-node");
    assert_eq!(status["role"]["leader"], true, "{body}");
    assert!(status["role"]["since_unix_seconds"].as_f64().unwrap() > 1.0e9);
    assert!(status["logs"]["records_shipped"].as_f64().unwrap() >= LINES as f64);
    assert!(status["logs"]["open_files"].as_f64().unwrap() >= 1.0);
    // Lag follows delivery: once everything is confirmed it drops to 0 within a second.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut status = status;
    while status["logs"]["lag_bytes"].as_f64() != Some(0.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag stays: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, body) = agent.get("/status").await.unwrap();
        status = serde_json::from_str(&body).unwrap();
    }
    let sinks = status["sinks"].as_array().expect("sinks");
    let file = sinks
        .iter()
        .find(|s| s["records_sent"].as_f64().unwrap_or(0.0) >= LINES as f64)
        .unwrap_or_else(|| panic!("no sink with {LINES} records: {status}"));
    assert_eq!(file["dead_lettered"], 0.0);
    let subsystems = status["subsystems"].as_array().expect("subsystems");
    assert!(
        subsystems.iter().any(|s| s["state"] == "up"),
        "no subsystem up: {status}"
    );

    let (code, html) = agent.get("/").await.unwrap();
    assert_eq!(code, 200);
    assert!(html.contains("<meta http-equiv=\"refresh\""), "{html}");
    assert!(
        html.contains("class=\"role leader\">leader</span>"),
        "{html}"
    );
    assert!(html.contains("node-agent on test-node"));
    for section in ["Subsystems", "Log sources", "Sinks", "Security alerts"] {
        assert!(html.contains(section), "missing {section}: {html}");
    }
    agent.terminate().unwrap();
}

/// The page as an operator's browser shows it: Chromium's DOM has the role badge and the
/// sink row, and its screenshot shows the badge in the leader colour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_status_page() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        require::missing("chromium is not installed (apt-get install chromium)");
        return;
    };
    let dirs = AgentDirs::new().unwrap();
    let agent = shipping_agent(&dirs).await;
    let url = format!("http://{}/", agent.addr);
    let profile = dirs.root.path().join("chromium-profile");
    let shot = dirs.root.path().join("status.png");
    let headless = |extra: &[String]| {
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--window-size=1200,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url);
        cmd
    };

    let dom = tokio::task::spawn_blocking({
        let mut cmd = headless(&["--dump-dom".into()]);
        move || cmd.output()
    })
    .await
    .unwrap()
    .expect("run chromium --dump-dom");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"role\""), "{dom}");
    assert!(dom.contains(">leader</span>"), "{dom}");
    assert!(
        dom.contains("<td>file</td>") || dom.contains("file"),
        "{dom}"
    );

    let out = tokio::task::spawn_blocking({
        let mut cmd = headless(&[format!("--screenshot={}", shot.display())]);
        move || cmd.output()
    })
    .await
    .unwrap()
    .expect("run chromium --screenshot");
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Kept for a look: target/tmp/status-page.png.
    let _ = std::fs::copy(
        &shot,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png"),
    );
    let (width, height, rgba) = decode_png(&shot);
    assert_eq!((width, height), (1200, 900));
    // The leader badge is drawn in #2e7d32 (status.rs CSS): a block of that colour.
    let badge = count_pixels(&rgba, [0x2e, 0x7d, 0x32]);
    assert!(badge > 200, "leader badge not visible ({badge} pixels)");
    // Text and table borders: the page is not blank.
    let dark = rgba
        .chunks_exact(4)
        .filter(|p| p[0] < 100 && p[1] < 100 && p[2] < 100)
        .count();
    assert!(dark > 2000, "page looks blank ({dark} dark pixels)");
    agent.terminate().unwrap();
}

fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).expect("open screenshot");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    buf.truncate(info.buffer_size());
    let rgba = match info.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf
            .chunks_exact(3)
            .flat_map(|p| [p[0], p[1], p[2], 255])
            .collect(),
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    (info.width, info.height, rgba)
}

fn count_pixels(rgba: &[u8], rgb: [u8; 3]) -> usize {
    rgba.chunks_exact(4)
        .filter(|p| p[..3].iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 6))
        .count()
}
