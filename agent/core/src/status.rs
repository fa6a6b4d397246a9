//! What the status page (`/`, `/status`) shows that the metrics registry cannot: the last
//! few security alerts, newest first. Counters and gauges come from the registry itself,
//! so the page and `/metrics` never disagree.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

/// Alerts kept for the page; older ones are in the sinks.
pub const RECENT_ALERTS: usize = 20;

/// One alert as the status page lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AlertSummary {
    /// Unix time in nanoseconds.
    pub time_unix_nanos: i64,
    pub rule: String,
    pub priority: String,
    pub output: String,
}

fn recent() -> std::sync::MutexGuard<'static, VecDeque<AlertSummary>> {
    static RECENT: OnceLock<Mutex<VecDeque<AlertSummary>>> = OnceLock::new();
    let ring = RECENT.get_or_init(|| Mutex::new(VecDeque::with_capacity(RECENT_ALERTS)));
    match ring.lock() {
        Ok(r) => r,
        Err(p) => p.into_inner(),
    }
}

/// Remembers `alert`, forgetting the oldest beyond [`RECENT_ALERTS`].
pub fn record_alert(alert: AlertSummary) {
    let mut ring = recent();
    if ring.len() == RECENT_ALERTS {
        ring.pop_back();
    }
    ring.push_front(alert);
}

/// The remembered alerts, newest first.
pub fn recent_alerts() -> Vec<AlertSummary> {
    recent().iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_alerts_first_and_bounded() {
        for i in 0..(RECENT_ALERTS as i64 + 5) {
            record_alert(AlertSummary {
                time_unix_nanos: i,
                rule: format!("r{i}"),
                priority: "Warning".into(),
                output: String::new(),
            });
        }
        let alerts = recent_alerts();
        assert_eq!(alerts.len(), RECENT_ALERTS);
        assert_eq!(alerts[0].time_unix_nanos, RECENT_ALERTS as i64 + 4);
        assert_eq!(alerts[RECENT_ALERTS - 1].time_unix_nanos, 5);
    }
}
