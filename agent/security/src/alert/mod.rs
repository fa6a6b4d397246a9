//! Alerts: the record a matching rule produces, its Falco-compatible JSON line, the per-rule
//! rate limiter, counter hooks, and the stdout/file/HTTP outputs.

pub mod json;
pub mod outputs;
pub mod ratelimit;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

pub use outputs::{AlertOutput, FileOutput, HttpOutput, OutputError, Outputs, WriterOutput};
pub use ratelimit::{RateLimit, RateLimiter};

/// Falco's priorities, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Informational,
    Debug,
}

impl Priority {
    pub const ALL: [Priority; 8] = [
        Priority::Emergency,
        Priority::Alert,
        Priority::Critical,
        Priority::Error,
        Priority::Warning,
        Priority::Notice,
        Priority::Informational,
        Priority::Debug,
    ];

    /// As Falco prints it in outputs and JSON (`Warning`, `Informational`).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "Emergency",
            Priority::Alert => "Alert",
            Priority::Critical => "Critical",
            Priority::Error => "Error",
            Priority::Warning => "Warning",
            Priority::Notice => "Notice",
            Priority::Informational => "Informational",
            Priority::Debug => "Debug",
        }
    }

    /// At least as severe as `min`.
    pub fn at_least(self, min: Priority) -> bool {
        self <= min
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown priority name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown priority '{0}' (emergency, alert, critical, error, warning, notice, informational, debug)"
)]
pub struct UnknownPriority(pub String);

impl FromStr for Priority {
    type Err = UnknownPriority;

    /// Case-insensitive; `info` is `informational`, as in Falco.
    fn from_str(s: &str) -> Result<Priority, UnknownPriority> {
        let lower = s.trim().to_ascii_lowercase();
        if lower == "info" {
            return Ok(Priority::Informational);
        }
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(&lower))
            .ok_or_else(|| UnknownPriority(s.to_string()))
    }
}

impl<'de> serde::Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Priority, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: Arc<str>,
    pub priority: Priority,
    /// `HH:MM:SS.nnnnnnnnn: Priority <rendered output>`, as Falco prints it.
    pub output: String,
    /// Field name → value of every field in the output (and `evt.time`).
    pub output_fields: BTreeMap<String, serde_json::Value>,
    /// Sorted.
    pub tags: Arc<[String]>,
    /// Event time, ns since the Unix epoch.
    pub time_ns: u64,
    pub hostname: Arc<str>,
    /// Always `syscall`.
    pub source: &'static str,
}

impl Alert {
    /// The Falco JSON line (without a newline).
    pub fn to_json_line(&self) -> String {
        json::to_line(self)
    }
}

/// The metric the agent exposes for alerts.
pub const ALERTS_TOTAL: &str = "node_agent_security_alerts_total";
pub const ALERTS_TOTAL_HELP: &str =
    "Alerts raised by security rules (after rate limiting), by rule and priority.";
/// Alerts the rate limiter held back.
pub const ALERTS_SUPPRESSED_TOTAL: &str = "node_agent_security_alerts_suppressed_total";
pub const ALERTS_SUPPRESSED_TOTAL_HELP: &str =
    "Alerts not emitted because their rule exceeded its rate limit, by rule.";
/// Alerts an output failed to deliver (after retries) or dropped (queue full).
pub const OUTPUT_ERRORS_TOTAL: &str = "node_agent_security_output_errors_total";
pub const OUTPUT_ERRORS_TOTAL_HELP: &str =
    "Alerts an output could not deliver, by output and reason (error, dropped).";

/// Counter hooks; the agent implements them with its metrics registry.
pub trait AlertMetrics: Send + Sync {
    /// `node_agent_security_alerts_total{rule,priority}`.
    fn alert(&self, rule: &str, priority: Priority);
    /// `node_agent_security_alerts_suppressed_total{rule}`.
    fn suppressed(&self, rule: &str);
    /// `node_agent_security_output_errors_total{output,reason}`.
    fn output_error(&self, output: &str, reason: &'static str);
}

/// Counts nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl AlertMetrics for NoMetrics {
    fn alert(&self, _rule: &str, _priority: Priority) {}
    fn suppressed(&self, _rule: &str) {}
    fn output_error(&self, _output: &str, _reason: &'static str) {}
}

/// Counts in memory (tests, and the agent before its registry exists).
#[derive(Debug, Default)]
pub struct CountingMetrics {
    inner: Mutex<Counts>,
}

/// A snapshot of [`CountingMetrics`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub alerts: BTreeMap<(String, Priority), u64>,
    pub suppressed: BTreeMap<String, u64>,
    pub output_errors: BTreeMap<(String, &'static str), u64>,
}

impl CountingMetrics {
    pub fn snapshot(&self) -> Counts {
        self.inner.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl AlertMetrics for CountingMetrics {
    fn alert(&self, rule: &str, priority: Priority) {
        if let Ok(mut c) = self.inner.lock() {
            *c.alerts.entry((rule.to_string(), priority)).or_default() += 1;
        }
    }

    fn suppressed(&self, rule: &str) {
        if let Ok(mut c) = self.inner.lock() {
            *c.suppressed.entry(rule.to_string()).or_default() += 1;
        }
    }

    fn output_error(&self, output: &str, reason: &'static str) {
        if let Ok(mut c) = self.inner.lock() {
            *c.output_errors
                .entry((output.to_string(), reason))
                .or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_parse_and_order_like_falco() {
        assert_eq!("WARNING".parse::<Priority>(), Ok(Priority::Warning));
        assert_eq!("info".parse::<Priority>(), Ok(Priority::Informational));
        assert_eq!(
            "Informational".parse::<Priority>(),
            Ok(Priority::Informational)
        );
        assert!("severe".parse::<Priority>().is_err());
        assert!(Priority::Critical.at_least(Priority::Warning));
        assert!(!Priority::Notice.at_least(Priority::Warning));
        assert_eq!(Priority::Warning.to_string(), "Warning");
    }

    #[test]
    fn counting_metrics_count() {
        let m = CountingMetrics::default();
        m.alert("r", Priority::Notice);
        m.alert("r", Priority::Notice);
        m.suppressed("r");
        m.output_error("http", "dropped");
        let c = m.snapshot();
        assert_eq!(c.alerts[&("r".to_string(), Priority::Notice)], 2);
        assert_eq!(c.suppressed["r"], 1);
        assert_eq!(c.output_errors[&("http".to_string(), "dropped")], 1);
    }
}
