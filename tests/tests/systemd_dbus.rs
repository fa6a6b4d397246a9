//! The systemd collector end to end: a private dbus-daemon listening where the host's
//! system bus would be (`<rootfs>/run/dbus/system_bus_socket`), a fake
//! `org.freedesktop.systemd1` served on it with zbus, and the agent (in this process,
//! through its real flags and HTTP endpoint) scraped; the systemd families must match
//! node_exporter 1.5.0's names, labels, HELP and TYPE exactly, and when Debian's
//! `prometheus-node-exporter` is installed, it is pointed at the same private bus
//! (`DBUS_SYSTEM_BUS_ADDRESS`) and both expositions must be equal line for line (names,
//! labels, types, values). Some units have properties that cannot be read: only their
//! series are left out. A bus that is absent must fail only the collector.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node_agent_tests::in_process::InProcessAgent;
use node_agent_tests::{http, require};
use zbus::zvariant::OwnedObjectPath;

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

struct Manager;
#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn list_units(&self) -> Vec<Row> {
        let row = |name: &str, load: &str, active: &str| {
            (
                name.to_string(),
                String::new(),
                load.to_string(),
                active.to_string(),
                "x".to_string(),
                String::new(),
                OwnedObjectPath::try_from(unit_path(name)).unwrap(),
                0,
                String::new(),
                OwnedObjectPath::try_from("/").unwrap(),
            )
        };
        vec![
            row("ssh.service", "loaded", "active"),
            row("cron.service", "loaded", "failed"),
            row("dbus.socket", "loaded", "active"),
            row("apt.timer", "loaded", "inactive"),
            // Filtered out by the default exclude, but counted in node_systemd_units.
            row("-.mount", "loaded", "active"),
            // Not loaded: neither reported nor queried.
            row("gone.service", "not-found", "inactive"),
            // No object at all: every property fails; only the state series remain.
            row("broken.service", "loaded", "active"),
            // No NRefused (systemd < 239): that series alone is left out.
            row("old.socket", "loaded", "active"),
            // A socket whose NConnections fails: only its accepted count remains.
            row("half.socket", "loaded", "inactive"),
            // An active timer without the Timer interface: its start time remains.
            row("lost.timer", "loaded", "active"),
        ]
    }
    #[zbus(property)]
    fn version(&self) -> String {
        "252.22-1~deb12u1".into()
    }
    #[zbus(property)]
    fn system_state(&self) -> String {
        "degraded".into()
    }
}

struct UnitObj(u64);
#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl UnitObj {
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> u64 {
        self.0
    }
}

struct Service(&'static str, u32, u64);
#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl Service {
    #[zbus(property, name = "Type")]
    fn type_(&self) -> String {
        self.0.into()
    }
    #[zbus(property, name = "NRestarts")]
    fn n_restarts(&self) -> u32 {
        self.1
    }
    #[zbus(property)]
    fn tasks_current(&self) -> u64 {
        self.2
    }
    #[zbus(property)]
    fn tasks_max(&self) -> u64 {
        u64::MAX
    }
}

struct Socket;
#[zbus::interface(name = "org.freedesktop.systemd1.Socket")]
impl Socket {
    #[zbus(property, name = "NAccepted")]
    fn n_accepted(&self) -> u32 {
        42
    }
    #[zbus(property, name = "NConnections")]
    fn n_connections(&self) -> u32 {
        2
    }
    #[zbus(property, name = "NRefused")]
    fn n_refused(&self) -> u32 {
        1
    }
}

/// A socket of systemd < 239: no NRefused.
struct OldSocket;
#[zbus::interface(name = "org.freedesktop.systemd1.Socket")]
impl OldSocket {
    #[zbus(property, name = "NAccepted")]
    fn n_accepted(&self) -> u32 {
        5
    }
    #[zbus(property, name = "NConnections")]
    fn n_connections(&self) -> u32 {
        0
    }
}

/// A socket whose NConnections (and NRefused) cannot be read.
struct HalfSocket;
#[zbus::interface(name = "org.freedesktop.systemd1.Socket")]
impl HalfSocket {
    #[zbus(property, name = "NAccepted")]
    fn n_accepted(&self) -> u32 {
        9
    }
    #[zbus(property, name = "NConnections")]
    fn n_connections(&self) -> zbus::fdo::Result<u32> {
        Err(zbus::fdo::Error::AccessDenied("no".into()))
    }
    #[zbus(property, name = "NRefused")]
    fn n_refused(&self) -> u32 {
        4
    }
}

struct Timer;
#[zbus::interface(name = "org.freedesktop.systemd1.Timer")]
impl Timer {
    #[zbus(property, name = "LastTriggerUSec")]
    fn last_trigger_usec(&self) -> u64 {
        1_700_000_000_500_000
    }
}

/// systemd's object path of a unit (what ListUnits returns and what node_exporter,
/// through go-systemd, derives from the name): bytes other than [A-Za-z0-9] as `_xx`.
fn unit_path(name: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            p.push(char::from(b));
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

async fn serve(address: &str) -> zbus::Result<zbus::Connection> {
    let u = unit_path;
    zbus::connection::Builder::address(address)?
        .name("org.freedesktop.systemd1")?
        .serve_at("/org/freedesktop/systemd1", Manager)?
        .serve_at(u("ssh.service"), UnitObj(1_600_000_000_250_000))?
        .serve_at(u("ssh.service"), Service("notify", 3, 7))?
        .serve_at(u("cron.service"), UnitObj(0))?
        .serve_at(u("cron.service"), Service("simple", 0, 0))?
        .serve_at(u("dbus.socket"), UnitObj(1_600_000_001_000_000))?
        .serve_at(u("dbus.socket"), Socket)?
        .serve_at(u("apt.timer"), UnitObj(0))?
        .serve_at(u("apt.timer"), Timer)?
        .serve_at(u("old.socket"), UnitObj(1_600_000_002_000_000))?
        .serve_at(u("old.socket"), OldSocket)?
        .serve_at(u("half.socket"), HalfSocket)?
        .serve_at(u("lost.timer"), UnitObj(1_600_000_003_000_000))?
        .build()
        .await
}

/// Flags enabling the systemd collector alone, with all its optional series; the same
/// on both exporters.
const SYSTEMD_FLAGS: [&str; 6] = [
    "--web.disable-exporter-metrics",
    "--collector.disable-defaults",
    "--collector.systemd",
    "--collector.systemd.enable-task-metrics",
    "--collector.systemd.enable-restarts-metrics",
    "--collector.systemd.enable-start-time-metrics",
];

/// Debian's node_exporter 1.5.0 on the bus at `address`: its exposition, or `None` when it
/// is not installed.
fn scrape_node_exporter(address: &str) -> Option<String> {
    let Ok(bin) = which("prometheus-node-exporter") else {
        node_agent_tests::require::missing(
            "prometheus-node-exporter not installed (Debian package prometheus-node-exporter)",
        );
        return None;
    };
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let _ne = Daemon(
        Command::new(bin)
            .arg(format!("--web.listen-address={addr}"))
            .args(SYSTEMD_FLAGS)
            .env("DBUS_SYSTEM_BUS_ADDRESS", address)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter"),
    );
    assert!(
        http::wait_ready(addr, "/", Duration::from_secs(10)),
        "node_exporter did not come up"
    );
    Some(http::get(addr, "/metrics", &[]).unwrap().text())
}

/// The agent's exposition with systemd on (and everything else off) over `rootfs`.
fn scrape(dir: &Path, rootfs: &Path) -> String {
    let config_file = dir.join("agent.yaml");
    std::fs::write(
        &config_file,
        format!(
            "logs:\n  enabled: false\nhandover:\n  lock_file: {}\n",
            dir.join("leader.lock").display()
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut args = vec![
        "node-agent".to_string(),
        format!("--web.listen-address={addr}"),
        format!("--config.file={}", config_file.display()),
        format!("--path.rootfs={}", rootfs.display()),
    ];
    args.extend(SYSTEMD_FLAGS.iter().map(|f| f.to_string()));
    let agent = InProcessAgent::start(args);
    assert!(http::wait_ready(addr, "/readyz", Duration::from_secs(10)));
    let body = http::get(addr, "/metrics", &[]).unwrap().text();
    agent.stop().expect("agent run");
    body
}

fn systemd_lines(body: &str) -> String {
    body.lines()
        .filter(|l| l.contains("node_systemd_") || l.contains("collector=\"systemd\""))
        .filter(|l| !l.contains("node_scrape_collector_duration_seconds{"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn systemd_families_over_a_private_bus() {
    let Ok(daemon) = which("dbus-daemon") else {
        return require::missing("dbus-daemon not installed (Debian package dbus)");
    };
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("run/dbus")).unwrap();
    let socket = rootfs.join("run/dbus/system_bus_socket");
    let address = format!("unix:path={}", socket.display());
    // The session policy lets a client own org.freedesktop.systemd1.
    let _bus = Daemon(
        Command::new(daemon)
            .args(["--config-file=/usr/share/dbus-1/session.conf", "--nofork"])
            .arg(format!("--address={address}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start dbus-daemon"),
    );
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _server = rt
        .block_on(serve(&address))
        .expect("serve the fake systemd");

    let body = scrape(dir.path(), &rootfs);
    let got = systemd_lines(&body);
    let want_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/systemd.prom");
    let want = std::fs::read_to_string(&want_path).unwrap();
    assert_eq!(
        got,
        want,
        "systemd families differ from {}",
        want_path.display()
    );
    if let Some(theirs) = scrape_node_exporter(&address) {
        assert_eq!(
            got,
            systemd_lines(&theirs),
            "node-agent (left) and node_exporter 1.5.0 (right) differ on the same bus"
        );
    }

    // No bus under the rootfs: the collector fails cleanly, the scrape goes on.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let body = scrape(dir.path(), &empty);
    assert_eq!(
        systemd_lines(&body),
        "node_scrape_collector_success{collector=\"systemd\"} 0\n"
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}
