//! Falco's JSON alert line (`json_output: true`, `json_include_output_property: true`),
//! which Falcosidekick, falco-exporter and the Elastic/Loki Falco integrations read:
//!
//! ```json
//! {"hostname":"node-1","output":"13:44:05.478445995: Notice A shell was spawned …",
//!  "priority":"Notice","rule":"Terminal shell in container","source":"syscall",
//!  "tags":["container","shell"],"time":"2023-05-25T13:44:05.478445995Z",
//!  "output_fields":{"evt.time":1685022245478445995,"proc.name":"sh","proc.tty":34816}}
//! ```

use std::collections::BTreeMap;

use serde::Serialize;

use super::Alert;

#[derive(Serialize)]
struct FalcoJson<'a> {
    hostname: &'a str,
    output: &'a str,
    priority: &'a str,
    rule: &'a str,
    source: &'a str,
    tags: &'a [String],
    time: String,
    output_fields: &'a BTreeMap<String, serde_json::Value>,
}

/// RFC 3339 in UTC with nanoseconds (`2023-05-25T13:44:05.478445995Z`).
pub fn rfc3339_nanos(ts_ns: u64) -> String {
    let secs = (ts_ns / 1_000_000_000) as i64;
    let nanos = (ts_ns % 1_000_000_000) as u32;
    chrono::DateTime::from_timestamp(secs, nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub fn to_line(alert: &Alert) -> String {
    let doc = FalcoJson {
        hostname: &alert.hostname,
        output: &alert.output,
        priority: alert.priority.as_str(),
        rule: &alert.rule,
        source: alert.source,
        tags: &alert.tags,
        time: rfc3339_nanos(alert.time_ns),
        output_fields: &alert.output_fields,
    };
    // Serialising strings, numbers and maps cannot fail.
    serde_json::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_nanoseconds_and_z() {
        assert_eq!(
            rfc3339_nanos(1_685_022_245_478_445_995),
            "2023-05-25T13:44:05.478445995Z"
        );
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
    }
}
