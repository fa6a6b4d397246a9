//! The operator's status page: `/` (HTML that refreshes itself) and `/status` (the same
//! data as JSON), for someone who port-forwards to one node's agent.
//!
//! Everything but the recent alerts is read from the agent's own metrics registry, so the
//! page shows exactly what `/metrics` does (leader state, log sources, sinks, security
//! alert counts); the recent alerts come from `node_agent_core::status`. Sink throughput is
//! the rate between two consecutive page loads (since start for the first one).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

use node_agent_core::health::{self, State};
use node_agent_core::status::{self as core_status, AlertSummary};
use node_agent_core::telemetry::{self, VERSION};

/// Seconds between the page's own reloads.
const REFRESH_SECONDS: u32 = 5;

/// Builds [`Status`] snapshots; remembers the previous one's sink totals for rates.
pub struct StatusPage {
    node: String,
    metrics_path: String,
    started: Instant,
    previous: Mutex<Option<(Instant, BTreeMap<String, f64>)>>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub node: String,
    #[serde(skip)]
    pub metrics_path: String,
    pub version: &'static str,
    pub uptime_seconds: f64,
    pub role: Role,
    pub subsystems: Vec<Subsystem>,
    pub logs: Logs,
    pub sinks: Vec<SinkStatus>,
    pub security: Security,
}

#[derive(Debug, Serialize)]
pub struct Role {
    pub leader: bool,
    /// Unix time this process last became leader or standby (0 when handover never ran).
    pub since_unix_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Subsystem {
    pub name: String,
    /// `up`, `degraded` or `failed`.
    pub state: &'static str,
    pub reason: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Logs {
    pub open_files: f64,
    pub lag_bytes: f64,
    pub lines_read: f64,
    pub bytes_read: f64,
    pub records_shipped: f64,
    pub batches_in_flight: f64,
    pub read_errors: f64,
    pub checkpoint_errors: f64,
    /// By reason.
    pub dropped_records: BTreeMap<String, f64>,
    /// By reason.
    pub files_skipped: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct SinkStatus {
    pub name: String,
    pub records_sent: f64,
    pub bytes_sent: f64,
    pub records_per_second: f64,
    pub retries: f64,
    pub failures: f64,
    pub dead_lettered: f64,
}

#[derive(Debug, Serialize)]
pub struct Security {
    pub alerts: Vec<RuleCount>,
    pub recent: Vec<AlertSummary>,
}

#[derive(Debug, Serialize)]
pub struct RuleCount {
    pub rule: String,
    pub priority: String,
    pub count: f64,
}

impl StatusPage {
    pub fn new(node: &str, metrics_path: &str) -> Self {
        Self {
            node: node.to_owned(),
            metrics_path: metrics_path.to_owned(),
            started: Instant::now(),
            previous: Mutex::new(None),
        }
    }

    /// The current status, from the registry and the recent-alert ring.
    pub fn snapshot(&self) -> Status {
        let families = Families(telemetry::registry().gather());
        let now = Instant::now();
        let sent = families.by_label("node_agent_sink_records_sent_total", "sink");
        let (since, before) = {
            let mut previous = match self.previous.lock() {
                Ok(p) => p,
                Err(p) => p.into_inner(),
            };
            let last = previous.replace((now, sent.clone()));
            last.unwrap_or((self.started, BTreeMap::new()))
        };
        let elapsed = now.duration_since(since).as_secs_f64().max(1e-3);
        let bytes = families.by_label("node_agent_sink_bytes_sent_total", "sink");
        let retries = families.by_label("node_agent_sink_retries_total", "sink");
        let failures = families.by_label("node_agent_sink_failures_total", "sink");
        let dead = families.by_label("node_agent_sink_dead_lettered_records_total", "sink");
        let mut names: Vec<&String> = sent
            .keys()
            .chain(failures.keys())
            .chain(dead.keys())
            .collect();
        names.sort();
        names.dedup();
        let get = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
        let sinks = names
            .into_iter()
            .map(|name| SinkStatus {
                name: name.clone(),
                records_sent: get(&sent, name),
                bytes_sent: get(&bytes, name),
                records_per_second: ((get(&sent, name) - get(&before, name)) / elapsed).max(0.0),
                retries: get(&retries, name),
                failures: get(&failures, name),
                dead_lettered: get(&dead, name),
            })
            .collect();

        let subsystems = health::snapshot()
            .into_iter()
            .map(|(name, state)| {
                let (state, reason) = match state {
                    State::Up => ("up", String::new()),
                    State::Degraded(r) => ("degraded", r),
                    State::Failed(r) => ("failed", r),
                };
                Subsystem {
                    name,
                    state,
                    reason,
                }
            })
            .collect();

        let logs = Logs {
            open_files: families.sum("node_agent_logs_open_files"),
            lag_bytes: families.sum("node_agent_logs_lag_bytes"),
            lines_read: families.sum("node_agent_logs_lines_read_total"),
            bytes_read: families.sum("node_agent_logs_bytes_read_total"),
            records_shipped: families.sum("node_agent_logs_records_shipped_total"),
            batches_in_flight: families.sum("node_agent_logs_batches_in_flight"),
            read_errors: families.sum("node_agent_logs_read_errors_total"),
            checkpoint_errors: families.sum("node_agent_logs_checkpoint_errors_total"),
            dropped_records: families.by_label("node_agent_logs_dropped_records_total", "reason"),
            files_skipped: families.by_label("node_agent_logs_files_skipped_total", "reason"),
        };

        let mut alerts: Vec<RuleCount> = families
            .samples("node_agent_security_alerts_total")
            .map(|(labels, count)| RuleCount {
                rule: labels.get("rule").cloned().unwrap_or_default(),
                priority: labels.get("priority").cloned().unwrap_or_default(),
                count,
            })
            .collect();
        alerts.sort_by(|a, b| b.count.total_cmp(&a.count).then(a.rule.cmp(&b.rule)));

        Status {
            node: self.node.clone(),
            metrics_path: self.metrics_path.clone(),
            version: VERSION,
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            role: Role {
                leader: families.sum("node_agent_leader") >= 1.0,
                since_unix_seconds: families
                    .sum("node_agent_leader_state_change_timestamp_seconds"),
            },
            subsystems,
            logs,
            sinks,
            security: Security {
                alerts,
                recent: core_status::recent_alerts(),
            },
        }
    }
}

impl Status {
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data without maps keyed by non-strings: serialization cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Server-rendered HTML; every string from the outside world (rule outputs carry
    /// command lines, sink and reason names come from config) is escaped.
    pub fn to_html(&self) -> String {
        let mut h = String::with_capacity(8 * 1024);
        let role = if self.role.leader {
            "leader"
        } else {
            "standby"
        };
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
             <title>node-agent {node}</title><style>{CSS}</style></head><body>\
             <header><h1>node-agent on {node}</h1>\
             <p><span id=\"role\" class=\"role {role}\">{role}</span> since {since} · \
             version {version} · up {uptime} · <a href=\"{metrics}\">metrics</a> · \
             <a href=\"/status\">status JSON</a> · <a href=\"/healthz\">health</a></p></header>",
            node = escape(&self.node),
            metrics = escape(&self.metrics_path),
            since = unix_time(self.role.since_unix_seconds),
            version = escape(self.version),
            uptime = human_duration(self.uptime_seconds),
        );

        h.push_str("<section id=\"subsystems\"><h2>Subsystems</h2>");
        if self.subsystems.is_empty() {
            h.push_str("<p class=\"none\">none running (standby, or starting)</p>");
        } else {
            h.push_str("<table><tr><th>subsystem</th><th>state</th><th>reason</th></tr>");
            for s in &self.subsystems {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                    escape(&s.name),
                    s.state,
                    s.state,
                    escape(&s.reason)
                );
            }
            h.push_str("</table>");
        }
        h.push_str("</section>");

        let l = &self.logs;
        let _ = write!(
            h,
            "<section id=\"logs\"><h2>Log sources</h2><table>\
             <tr><th>open files</th><td>{}</td></tr><tr><th>lag</th><td>{}</td></tr>\
             <tr><th>lines read</th><td>{}</td></tr><tr><th>read</th><td>{}</td></tr>\
             <tr><th>records shipped</th><td>{}</td></tr><tr><th>batches in flight</th><td>{}</td></tr>\
             <tr><th>read errors</th><td>{}</td></tr><tr><th>checkpoint errors</th><td>{}</td></tr>",
            count(l.open_files),
            bytes(l.lag_bytes),
            count(l.lines_read),
            bytes(l.bytes_read),
            count(l.records_shipped),
            count(l.batches_in_flight),
            count(l.read_errors),
            count(l.checkpoint_errors),
        );
        for (title, map) in [
            ("dropped", &l.dropped_records),
            ("files skipped", &l.files_skipped),
        ] {
            for (reason, n) in map {
                let _ = if reason.is_empty() {
                    write!(h, "<tr><th>{title}</th><td>{}</td></tr>", count(*n))
                } else {
                    write!(
                        h,
                        "<tr><th>{title}: {}</th><td>{}</td></tr>",
                        escape(reason),
                        count(*n)
                    )
                };
            }
        }
        h.push_str("</table></section>");

        h.push_str("<section id=\"sinks\"><h2>Sinks</h2>");
        if self.sinks.is_empty() {
            h.push_str("<p class=\"none\">nothing sent yet</p>");
        } else {
            h.push_str(
                "<table><tr><th>sink</th><th>records/s</th><th>records</th><th>bytes</th>\
                 <th>retries</th><th>failures</th><th>dead-lettered</th></tr>",
            );
            for s in &self.sinks {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&s.name),
                    s.records_per_second,
                    count(s.records_sent),
                    bytes(s.bytes_sent),
                    count(s.retries),
                    count(s.failures),
                    count(s.dead_lettered),
                );
            }
            h.push_str("</table>");
        }
        h.push_str("</section>");

        h.push_str("<section id=\"security\"><h2>Security alerts</h2>");
        if self.security.alerts.is_empty() {
            h.push_str("<p class=\"none\">no alerts</p>");
        } else {
            h.push_str("<table><tr><th>rule</th><th>priority</th><th>alerts</th></tr>");
            for a in &self.security.alerts {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&a.rule),
                    escape(&a.priority),
                    count(a.count)
                );
            }
            h.push_str("</table>");
        }
        if !self.security.recent.is_empty() {
            h.push_str("<h3>Latest</h3><table><tr><th>time</th><th>rule</th><th>priority</th><th>output</th></tr>");
            for a in &self.security.recent {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"output\">{}</td></tr>",
                    unix_time(a.time_unix_nanos as f64 / 1e9),
                    escape(&a.rule),
                    escape(&a.priority),
                    escape(&a.output)
                );
            }
            h.push_str("</table>");
        }
        h.push_str("</section></body></html>\n");
        h
    }
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin-top:1.4em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
th{background:#f3f3f3}.role{padding:.1em .5em;border-radius:.3em;color:#fff}\
.leader{background:#2e7d32}.standby{background:#757575}.up{color:#2e7d32}\
.degraded{color:#b26a00}.failed{color:#c62828;font-weight:bold}.none{color:#777}\
.output{font-family:monospace;white-space:pre-wrap}";

/// Gathered families, looked up by name.
struct Families(Vec<MetricFamily>);

impl Families {
    fn samples<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (BTreeMap<String, String>, f64)> + 'a {
        self.0
            .iter()
            .filter(move |f| f.name() == name)
            .flat_map(|f| {
                let kind = f.get_field_type();
                f.get_metric().iter().map(move |m| {
                    let value = match kind {
                        MetricType::COUNTER => m.get_counter().get_value(),
                        MetricType::GAUGE => m.get_gauge().get_value(),
                        // The agent registers only counters, gauges and histograms; the
                        // page shows no histogram.
                        _ => 0.0,
                    };
                    let labels = m
                        .get_label()
                        .iter()
                        .map(|l| (l.name().to_owned(), l.value().to_owned()))
                        .collect();
                    (labels, value)
                })
            })
    }

    fn sum(&self, name: &str) -> f64 {
        self.samples(name).map(|(_, v)| v).sum()
    }

    fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (labels, v) in self.samples(name) {
            let key = labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0.0) += v;
        }
        out
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// UTC `YYYY-MM-DD HH:MM:SS` without a date crate (civil-from-days, H. Hinnant).
fn unix_time(seconds: f64) -> String {
    if !(seconds.is_finite() && seconds > 0.0) {
        return "start-up".into();
    }
    let secs = seconds as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_what_comes_from_outside() {
        core_status::record_alert(AlertSummary {
            time_unix_nanos: 1_764_633_600_000_000_000,
            rule: "Terminal shell in container".into(),
            priority: "Notice".into(),
            output: "cmdline=<script>alert(1)</script> & more".into(),
        });
        let page = StatusPage::new("node-<1>", "/metrics");
        let html = page.snapshot().to_html();
        assert!(html.contains("node-agent on node-&lt;1&gt;"));
        assert!(html.contains("cmdline=&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("2025-12-02 00:00:00 UTC"));
    }

    #[test]
    fn json_carries_the_same_sections() {
        let status = StatusPage::new("n1", "/metrics").snapshot();
        let v: serde_json::Value = serde_json::from_slice(&status.to_json()).expect("json");
        for key in [
            "node",
            "version",
            "role",
            "subsystems",
            "logs",
            "sinks",
            "security",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["node"], "n1");
    }

    #[test]
    fn times_and_sizes_read_naturally() {
        assert_eq!(unix_time(0.0), "start-up");
        assert_eq!(unix_time(951_782_400.0), "2000-02-29 00:00:00 UTC");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(human_duration(3725.0), "1h2m");
    }
}
