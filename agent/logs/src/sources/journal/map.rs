//! A journal entry as a log record: `MESSAGE` is the message, the wall-clock time the
//! timestamp, and the fields users filter by go into `fields` under short names:
//!
//! | journal | field |
//! | --- | --- |
//! | `PRIORITY` | `level` (`emerg` … `debug`) and `priority` (0–7) |
//! | `_SYSTEMD_UNIT` | `unit` |
//! | `SYSLOG_IDENTIFIER` | `syslog_identifier` |
//! | `_PID` | `pid` |
//! | `_HOSTNAME` | `hostname` |
//! | `_BOOT_ID` (entry header) | `boot_id` |
//! | `_TRANSPORT` | `transport` |
//!
//! With `all_fields`, every other field is added under its journal name (`_COMM`, …).

use std::sync::Arc;

use serde_json::{Map, Value};

use node_agent_core::record::{LogRecord, SourceMeta, Stream};
use node_agent_journal::Entry;

/// syslog's level names for `PRIORITY` 0..=7 (`err` spelled `error`, as log UIs expect).
pub const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug",
];

/// The level name of a `PRIORITY` value; `None` when it is not 0..=7.
pub fn level(priority: &[u8]) -> Option<(u8, &'static str)> {
    match priority {
        [d @ b'0'..=b'7'] => {
            let n = d - b'0';
            Some((n, LEVELS[usize::from(n)]))
        }
        _ => None,
    }
}

/// Journal fields mapped to short names (the first value of each).
const MAPPED: [(&str, &str); 6] = [
    ("_SYSTEMD_UNIT", "unit"),
    ("SYSLOG_IDENTIFIER", "syslog_identifier"),
    ("_PID", "pid"),
    ("_HOSTNAME", "hostname"),
    ("_TRANSPORT", "transport"),
    ("_BOOT_ID", "boot_id"),
];

/// Builds the record of `entry`; the message is cut at `max_message` bytes (flagged).
pub fn record(
    entry: &Entry,
    meta: Arc<SourceMeta>,
    all_fields: bool,
    max_message: usize,
) -> LogRecord {
    let mut message = String::from_utf8_lossy(entry.message().unwrap_or_default()).into_owned();
    let truncated = message.len() > max_message;
    if truncated {
        let mut cut = max_message;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let mut fields = Map::new();
    if let Some((n, name)) = entry.get("PRIORITY").and_then(level) {
        fields.insert("level".into(), Value::from(name));
        fields.insert("priority".into(), Value::from(n));
    }
    for (journal, short) in MAPPED {
        let Some(v) = entry.get(journal) else {
            continue;
        };
        let text = String::from_utf8_lossy(v);
        let value = match short {
            "pid" => text
                .parse::<u64>()
                .map_or_else(|_| Value::from(text.as_ref()), Value::from),
            _ => Value::from(text.as_ref()),
        };
        fields.insert(short.into(), value);
    }
    // The boot id lives in the entry header too (journald does not always store the field).
    fields
        .entry("boot_id")
        .or_insert_with(|| Value::from(entry.boot_id().to_string()));
    if all_fields {
        for (name, v) in entry.fields() {
            if name != "MESSAGE" && !fields.contains_key(name) {
                fields.insert(name.into(), Value::from(String::from_utf8_lossy(v)));
            }
        }
    }
    let mut r = LogRecord::new(
        meta,
        timestamp_nanos(entry),
        Stream::Stdout,
        entry.seqnum(),
        message,
    );
    r.truncated = truncated;
    r.fields = Some(fields);
    r
}

/// When the entry was logged: `_SOURCE_REALTIME_TIMESTAMP` (the client's time) if it has
/// one, else when journald received it (as Vector does).
fn timestamp_nanos(entry: &Entry) -> i64 {
    let usec = entry
        .get("_SOURCE_REALTIME_TIMESTAMP")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| entry.realtime_usec());
    i64::try_from(usec.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_to_level_names() {
        assert_eq!(level(b"0"), Some((0, "emerg")));
        assert_eq!(level(b"3"), Some((3, "error")));
        assert_eq!(level(b"4"), Some((4, "warning")));
        assert_eq!(level(b"6"), Some((6, "info")));
        assert_eq!(level(b"7"), Some((7, "debug")));
        assert_eq!(level(b"8"), None);
        assert_eq!(level(b"12"), None);
        assert_eq!(level(b""), None);
    }
}
