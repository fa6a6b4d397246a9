//! `systemd` (off by default, as in upstream node_exporter 1.5.0): unit states, start
//! times, tasks, restarts, socket and timer figures and the manager's version/state,
//! read from `org.freedesktop.systemd1` over the system bus with zbus (node_exporter
//! collector/systemd_linux.go over go-systemd's dbus package).
//!
//! The bus is `$DBUS_SYSTEM_BUS_ADDRESS` when set (what go-dbus honours, so both
//! exporters can be pointed at one private bus), else the host's
//! `<rootfs>/run/dbus/system_bus_socket`. Each scrape opens its own connection, as
//! node_exporter does, so a restarted dbus-daemon needs no reconnect logic; the whole
//! exchange is bounded by [`TIMEOUT`] so a wedged bus fails the collector instead of the
//! scrape.
//!
//! Failures are scoped as node_exporter scopes them: no bus or no unit list fails the
//! collector; a unit property that cannot be read leaves out only the series it feeds
//! (a service whose `Type` is unreadable keeps its state series, with `type=""`); an
//! unreadable `SystemState` fails the collector after everything else is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use super::{BuildContext, Collector, CollectorError, MetricSet};

const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const TIMEOUT: Duration = Duration::from_secs(5);
/// The states node_exporter emits one `unit_state` series for, in its order.
const UNIT_STATES: [&str; 5] = ["active", "activating", "deactivating", "inactive", "failed"];
/// Oldest systemd node_exporter asks for timers and the system state (its
/// `minSystemdVersionSystemState`).
const MIN_VERSION_SYSTEM_STATE: f64 = 212.0;

/// ListUnits' row: name, description, load, active, sub, followed, path, job id/type/path.
type UnitRow = (
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

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Unit {
    pub name: String,
    pub active_state: String,
    /// The service's `Type` (simple, forking, …); empty for other unit kinds.
    pub service_type: String,
    pub start_time: Option<f64>,
    pub tasks_current: Option<f64>,
    pub tasks_max: Option<f64>,
    pub restarts: Option<f64>,
    /// accepted, current, refused (each absent when it, or one before it, is unreadable;
    /// refused is absent before systemd 239).
    pub socket: Option<(f64, Option<f64>, Option<f64>)>,
    pub timer_last_trigger: Option<f64>,
}

/// What one scrape read. Parts left `None` were not reached (an earlier step failed) and
/// are not reported.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// The manager's `Version` as node_exporter labels it: empty when it cannot be read or
    /// holds no version number (the value is then 0).
    pub version: Option<String>,
    /// `SystemState`; not asked of systemd older than 212.
    pub system_state: Option<String>,
    /// Counts of every listed unit by active state (before the include/exclude filter).
    pub summary: Option<BTreeMap<String, u64>>,
    pub units: Vec<Unit>,
}

pub struct SystemdCollector {
    address: String,
    /// The socket file when `address` is one plain `unix:path=`: checked before each
    /// connect (see [`SystemdCollector::update`]).
    socket_file: Option<std::path::PathBuf>,
    include: regex::Regex,
    exclude: regex::Regex,
    tasks: bool,
    restarts: bool,
    start_time: bool,
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Collector>, CollectorError> {
    let address = match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
        Ok(a) if !a.is_empty() => a,
        _ => format!(
            "unix:path={}",
            ctx.paths
                .rootfs_path("/run/dbus/system_bus_socket")
                .display()
        ),
    };
    let more = &ctx.options.more;
    Ok(Box::new(SystemdCollector {
        socket_file: socket_file(&address),
        address,
        include: more.systemd_unit_include.clone(),
        exclude: more.systemd_unit_exclude.clone(),
        tasks: more.systemd_task_metrics,
        restarts: more.systemd_restarts_metrics,
        start_time: more.systemd_start_time_metrics,
    }))
}

/// The file of a D-Bus address that is a single `unix:path=…` without other keys or
/// escapes (`None` for anything else: abstract sockets, several addresses, `tcp:`).
fn socket_file(address: &str) -> Option<std::path::PathBuf> {
    let path = address.strip_prefix("unix:path=")?;
    (!path.is_empty() && !path.contains([',', ';', '%'])).then(|| path.into())
}

fn dbus_err(what: &str, e: impl std::fmt::Display) -> CollectorError {
    CollectorError::Other(format!("systemd: {what}: {e}"))
}

/// A D-Bus property as f64, from whichever unsigned/signed integer type systemd uses.
fn number(v: &OwnedValue) -> Option<f64> {
    if let Ok(n) = u64::try_from(v) {
        return Some(n as f64);
    }
    if let Ok(n) = u32::try_from(v) {
        return Some(f64::from(n));
    }
    if let Ok(n) = i64::try_from(v) {
        return Some(n as f64);
    }
    i32::try_from(v).ok().map(f64::from)
}

struct Bus {
    conn: zbus::Connection,
}

impl Bus {
    async fn get(&self, path: &str, iface: &str, prop: &str) -> Result<OwnedValue, CollectorError> {
        let reply = self
            .conn
            .call_method(
                Some(DEST),
                path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(iface, prop),
            )
            .await
            .map_err(|e| dbus_err(&format!("{iface}.{prop} of {path}"), e))?;
        reply
            .body()
            .deserialize::<OwnedValue>()
            .map_err(|e| dbus_err(&format!("decoding {iface}.{prop} of {path}"), e))
    }

    async fn get_string(
        &self,
        path: &str,
        iface: &str,
        prop: &str,
    ) -> Result<String, CollectorError> {
        let v = self.get(path, iface, prop).await?;
        String::try_from(v).map_err(|e| dbus_err(&format!("{iface}.{prop} is not a string"), e))
    }

    async fn get_number(&self, path: &str, iface: &str, prop: &str) -> Result<f64, CollectorError> {
        let v = self.get(path, iface, prop).await?;
        number(&v).ok_or_else(|| dbus_err(&format!("{iface}.{prop} of {path}"), "not a number"))
    }
}

impl SystemdCollector {
    fn wanted(&self, name: &str) -> bool {
        self.include.is_match(name) && !self.exclude.is_match(name)
    }

    /// Fills `s` as far as the bus allows; the error is what fails the collector.
    async fn snapshot(&self, s: &mut Snapshot) -> Result<(), CollectorError> {
        let conn = zbus::connection::Builder::address(self.address.as_str())
            .map_err(|e| dbus_err(&format!("bus address {:?}", self.address), e))?
            .build()
            .await
            .map_err(|e| dbus_err(&format!("connecting to {}", self.address), e))?;
        let bus = Bus { conn };
        let version = match bus.get_string(MANAGER_PATH, MANAGER, "Version").await {
            Ok(v) if parse_version(&v) > 0.0 => v,
            Ok(v) => {
                tracing::debug!(version = v, "systemd: no version number in Version");
                String::new()
            }
            Err(e) => {
                tracing::debug!(error = %e, "systemd: Version unreadable, reporting 0");
                String::new()
            }
        };
        let recent = parse_version(&version) >= MIN_VERSION_SYSTEM_STATE;
        s.version = Some(version);
        let reply = bus
            .conn
            .call_method(Some(DEST), MANAGER_PATH, Some(MANAGER), "ListUnits", &())
            .await
            .map_err(|e| dbus_err("ListUnits", e))?;
        let rows: Vec<UnitRow> = reply
            .body()
            .deserialize()
            .map_err(|e| dbus_err("decoding ListUnits", e))?;

        let mut summary: BTreeMap<String, u64> =
            UNIT_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        for (name, _, load, active, _, _, path, ..) in rows {
            if let Some(n) = summary.get_mut(&active) {
                *n += 1;
            }
            if load != "loaded" || !self.wanted(&name) {
                continue;
            }
            s.units
                .push(self.unit(&bus, name, active, path.as_str(), recent).await);
        }
        s.summary = Some(summary);
        if recent {
            s.system_state = Some(bus.get_string(MANAGER_PATH, MANAGER, "SystemState").await?);
        }
        Ok(())
    }

    /// One unit's figures; each property that cannot be read is left out (logged at debug,
    /// as node_exporter does) rather than failing the scrape.
    async fn unit(
        &self,
        bus: &Bus,
        name: String,
        active: String,
        path: &str,
        recent: bool,
    ) -> Unit {
        let read = |what: &'static str, r: Result<f64, CollectorError>| match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::debug!(unit = name, property = what, error = %e, "systemd: property unreadable");
                None
            }
        };
        let mut unit = Unit {
            name: name.clone(),
            active_state: active.clone(),
            ..Unit::default()
        };
        const SVC: &str = "org.freedesktop.systemd1.Service";
        if name.ends_with(".service") {
            match bus.get_string(path, SVC, "Type").await {
                Ok(t) => unit.service_type = t,
                Err(e) => {
                    tracing::debug!(unit = name, error = %e, "systemd: Type unreadable")
                }
            }
            if self.restarts {
                unit.restarts = read("NRestarts", bus.get_number(path, SVC, "NRestarts").await);
            }
            if self.tasks {
                // u64::MAX is systemd's "unset"/"infinity": node_exporter skips it.
                let valid = |v: f64| (v < u64::MAX as f64).then_some(v);
                unit.tasks_current = read(
                    "TasksCurrent",
                    bus.get_number(path, SVC, "TasksCurrent").await,
                )
                .and_then(valid);
                unit.tasks_max =
                    read("TasksMax", bus.get_number(path, SVC, "TasksMax").await).and_then(valid);
            }
        }
        if self.start_time {
            unit.start_time = if active == "active" {
                read(
                    "ActiveEnterTimestamp",
                    bus.get_number(
                        path,
                        "org.freedesktop.systemd1.Unit",
                        "ActiveEnterTimestamp",
                    )
                    .await,
                )
                .map(|v| v / 1e6)
            } else {
                Some(0.0)
            };
        }
        if name.ends_with(".socket") {
            // node_exporter stops at the first unreadable one of the three, in this order;
            // older systemd has no NRefused.
            const SOCK: &str = "org.freedesktop.systemd1.Socket";
            if let Some(accepted) = read("NAccepted", bus.get_number(path, SOCK, "NAccepted").await)
            {
                let current = read(
                    "NConnections",
                    bus.get_number(path, SOCK, "NConnections").await,
                );
                let refused = match current {
                    Some(_) => read("NRefused", bus.get_number(path, SOCK, "NRefused").await),
                    None => None,
                };
                unit.socket = Some((accepted, current, refused));
            }
        }
        if recent && name.ends_with(".timer") {
            unit.timer_last_trigger = read(
                "LastTriggerUSec",
                bus.get_number(path, "org.freedesktop.systemd1.Timer", "LastTriggerUSec")
                    .await,
            )
            .map(|v| v / 1e6);
        }
        unit
    }
}

/// node_exporter's version parse: the first run of three or more digits, with an optional
/// fraction ("252.22-1~deb12u1" → 252.22).
pub fn parse_version(v: &str) -> f64 {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i - start >= 3 {
                let mut end = i;
                if end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
                    end += 1;
                    while end < b.len() && b[end].is_ascii_digit() {
                        end += 1;
                    }
                }
                return v[start..end].parse().unwrap_or(0.0);
            }
        } else {
            i += 1;
        }
    }
    0.0
}

/// Appends a snapshot's families with node_exporter 1.5.0's names, HELP and types.
pub fn emit(s: &Snapshot, out: &mut MetricSet) {
    for u in &s.units {
        for state in UNIT_STATES {
            let v = if u.active_state == state { 1.0 } else { 0.0 };
            out.gauge(
                "node_systemd_unit_state",
                "Systemd unit",
                &[
                    ("name", &u.name),
                    ("state", state),
                    ("type", &u.service_type),
                ],
                v,
            );
        }
    }
    for u in &s.units {
        let name = [("name", u.name.as_str())];
        if let Some(v) = u.start_time {
            out.gauge(
                "node_systemd_unit_start_time_seconds",
                "Start time of the unit since unix epoch in seconds.",
                &name,
                v,
            );
        }
        if let Some(v) = u.tasks_current {
            out.gauge(
                "node_systemd_unit_tasks_current",
                "Current number of tasks per Systemd unit",
                &name,
                v,
            );
        }
        if let Some(v) = u.tasks_max {
            out.gauge(
                "node_systemd_unit_tasks_max",
                "Maximum number of tasks per Systemd unit",
                &name,
                v,
            );
        }
        if let Some(v) = u.restarts {
            out.counter(
                "node_systemd_service_restart_total",
                "Service unit count of Restart triggers",
                &name,
                v,
            );
        }
        if let Some((accepted, current, refused)) = u.socket {
            out.counter(
                "node_systemd_socket_accepted_connections_total",
                "Total number of accepted socket connections",
                &name,
                accepted,
            );
            if let Some(c) = current {
                out.gauge(
                    "node_systemd_socket_current_connections",
                    "Current number of socket connections",
                    &name,
                    c,
                );
            }
            if let Some(r) = refused {
                out.gauge(
                    "node_systemd_socket_refused_connections_total",
                    "Total number of refused socket connections",
                    &name,
                    r,
                );
            }
        }
        if let Some(v) = u.timer_last_trigger {
            out.gauge(
                "node_systemd_timer_last_trigger_seconds",
                "Seconds since epoch of last trigger.",
                &name,
                v,
            );
        }
    }
    if let Some(state) = &s.system_state {
        out.gauge(
            "node_systemd_system_running",
            "Whether the system is operational (see 'systemctl is-system-running')",
            &[],
            if state == "running" { 1.0 } else { 0.0 },
        );
    }
    for (state, n) in s.summary.iter().flatten() {
        out.gauge(
            "node_systemd_units",
            "Summary of systemd unit states",
            &[("state", state)],
            *n as f64,
        );
    }
    if let Some(version) = &s.version {
        out.gauge(
            "node_systemd_version",
            "Detected systemd version",
            &[("version", version)],
            parse_version(version),
        );
    }
}

impl SystemdCollector {
    /// The whole exchange, bounded by [`TIMEOUT`].
    async fn bounded_snapshot(&self, snapshot: &mut Snapshot) -> Result<(), CollectorError> {
        tokio::time::timeout(TIMEOUT, self.snapshot(snapshot))
            .await
            .map_err(|_| dbus_err("talking to systemd", "timed out"))?
    }
}

impl Collector for SystemdCollector {
    fn update(&self, out: &mut MetricSet) -> Result<(), CollectorError> {
        // No socket file, no bus: fail as the connect would, without the round trip
        // through the runtime and zbus (3.5 % of a whole scrape's CPU on a host without a
        // system bus, `perf record` over 3,000 scrapes).
        if let Some(file) = &self.socket_file
            && let Err(e) = std::fs::metadata(file)
            && e.kind() == std::io::ErrorKind::NotFound
        {
            return Err(dbus_err(&format!("connecting to {}", self.address), e));
        }
        // What was read before a failure is still reported, as node_exporter does.
        let mut snapshot = Snapshot::default();
        let result = match tokio::runtime::Handle::try_current() {
            // The agent's scrapes run on its multi-thread runtime's blocking threads: block
            // on that runtime here (its workers drive the socket). block_in_place makes this
            // legal on a worker thread too and just runs the closure elsewhere. A thread
            // and a runtime of its own per scrape cost ~0.2 ms of CPU (measured with
            // `perf stat` over 1000 `collect[]=systemd` scrapes), more than the rest of
            // the collectors' bus work when the bus is absent.
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| {
                    handle.block_on(self.bounded_snapshot(&mut snapshot))
                })
            }
            // No runtime (a library caller), or a current-thread one that this thread would
            // block: a fresh thread has no runtime context, so a current-thread runtime can
            // run there (and is dropped outside any async context).
            _ => std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| dbus_err("starting a runtime", e))
                        .and_then(|rt| rt.block_on(self.bounded_snapshot(&mut snapshot)))
                })
                .join()
            })
            .map_err(|_| CollectorError::Other("systemd: D-Bus thread panicked".into()))?,
        };
        emit(&snapshot, out);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector whose bus address is a file but no socket (a directory): every scrape
    /// goes through zbus and fails at connect.
    fn unreachable() -> SystemdCollector {
        collector_at(&std::env::temp_dir())
    }

    fn collector_at(path: &std::path::Path) -> SystemdCollector {
        let address = format!("unix:path={}", path.display());
        SystemdCollector {
            socket_file: socket_file(&address),
            address,
            include: regex::Regex::new(".+").unwrap(),
            exclude: regex::Regex::new("^$").unwrap(),
            tasks: false,
            restarts: false,
            start_time: false,
        }
    }

    fn fails_to_connect(c: &SystemdCollector) {
        let mut out = MetricSet::new();
        match c.update(&mut out) {
            Err(CollectorError::Other(msg)) => assert!(msg.contains("connecting to"), "{msg}"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    /// Whoever calls it: no runtime, a current-thread runtime's thread, a multi-thread
    /// runtime's worker or its blocking pool (where the agent scrapes). None may panic
    /// (blocking a runtime on itself would) and all report the bus error.
    #[test]
    fn update_runs_in_any_runtime_context() {
        let c = unreachable();
        fails_to_connect(&c);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async { fails_to_connect(&c) });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = std::sync::Arc::new(c);
            let on_worker = std::sync::Arc::clone(&c);
            tokio::spawn(async move { fails_to_connect(&on_worker) })
                .await
                .unwrap();
            tokio::task::spawn_blocking(move || fails_to_connect(&c))
                .await
                .unwrap();
        });
    }

    #[test]
    fn absent_socket_fails_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let c = collector_at(&dir.path().join("no_bus"));
        // Outside any runtime, where a connect attempt would need a thread of its own.
        fails_to_connect(&c);
        let mut out = MetricSet::new();
        let err = c.update(&mut out).unwrap_err().to_string();
        assert!(
            err.contains("no_bus") && err.contains("No such file"),
            "{err}"
        );
        assert!(out.into_families().is_empty());
    }

    #[test]
    fn only_plain_unix_paths_are_checked_up_front() {
        assert_eq!(
            socket_file("unix:path=/run/dbus/system_bus_socket"),
            Some("/run/dbus/system_bus_socket".into())
        );
        for other in [
            "unix:abstract=/tmp/dbus-x",
            "unix:path=/a,guid=0123",
            "unix:path=/a;unix:path=/b",
            "unix:path=/with%20space",
            "tcp:host=127.0.0.1,port=1",
            "unix:path=",
        ] {
            assert_eq!(socket_file(other), None, "{other}");
        }
    }

    #[test]
    fn version_parse_as_node_exporter() {
        assert_eq!(parse_version("252.22-1~deb12u1"), 252.22);
        assert_eq!(parse_version("systemd 245 (245.4-4ubuntu3)"), 245.0);
        assert_eq!(parse_version("v24"), 0.0);
    }

    #[test]
    fn emits_one_series_per_state_and_summary() {
        let s = Snapshot {
            version: Some("252.22-1~deb12u1".into()),
            system_state: Some("degraded".into()),
            summary: Some(UNIT_STATES.iter().map(|s| (s.to_string(), 1)).collect()),
            units: vec![Unit {
                name: "a.socket".into(),
                active_state: "failed".into(),
                socket: Some((3.0, Some(1.0), None)),
                ..Unit::default()
            }],
        };
        let mut out = MetricSet::new();
        emit(&s, &mut out);
        let fam = |n: &str| out.families().iter().find(|f| f.name() == n).cloned();
        assert_eq!(
            fam("node_systemd_unit_state").unwrap().get_metric().len(),
            5
        );
        assert_eq!(fam("node_systemd_units").unwrap().get_metric().len(), 5);
        assert!(fam("node_systemd_socket_refused_connections_total").is_none());
        assert_eq!(
            fam("node_systemd_system_running").unwrap().get_metric()[0]
                .get_gauge()
                .get_value(),
            0.0
        );
    }

    #[test]
    fn reports_only_what_was_read() {
        // The unit list failed after an unreadable Version: node_exporter still reports
        // the version, as 0 with an empty label, and nothing else.
        let s = Snapshot {
            version: Some(String::new()),
            ..Snapshot::default()
        };
        let mut out = MetricSet::new();
        emit(&s, &mut out);
        let names: Vec<&str> = out.families().iter().map(|f| f.name()).collect();
        assert_eq!(names, ["node_systemd_version"]);
        let m = &out.families()[0].get_metric()[0];
        assert_eq!(m.get_label()[0].value(), "");
        assert_eq!(m.get_gauge().get_value(), 0.0);
        // Nothing reached (no bus): nothing reported.
        let mut out = MetricSet::new();
        emit(&Snapshot::default(), &mut out);
        assert!(out.families().is_empty());
    }
}
