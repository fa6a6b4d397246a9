//! Parsers: `type: json`, `type: logfmt` and `type: regex` in `logs.processors` turn the
//! message into `fields`, optionally take the record's time from a field and normalise the
//! level.
//!
//! ```yaml
//! - type: regex
//!   pattern: '^(?P<time>\S+) (?P<lvl>\w+) (?P<msg>.*)$'   # named captures become fields
//!   timestamp: {field: time, format: '%Y-%m-%dT%H:%M:%S%.f%z'}
//!   level: lvl            # field holding the level (default: level, lvl, severity, …)
//! - type: logfmt          # key=value key2="quoted value"
//! - type: json            # a JSON object
//! ```
//!
//! Parsed keys are added to the record's `fields` (a later parser's keys win). With
//! `timestamp`, the field's time becomes the record's time and the container runtime's time
//! is kept beside it as `fields.runtime_time` (RFC 3339). Formats: `rfc3339`, `unix`
//! (seconds, fractions allowed), `unix_ms`, `unix_us`, `unix_ns`, or a chrono strftime
//! format (without an offset it is read as UTC). The level found (`trace`, `WARNING`,
//! `E`, `SEVERE`, syslog 0–7, pino/bunyan 10–60, …) is written to `fields.level` as one of
//! `debug`, `info`, `warn`, `error`, `fatal`; an unknown value is left as it is.
//!
//! A message that does not parse (or whose time does not) is shipped unchanged with
//! `fields.parse_error` saying why, and counted in
//! `node_agent_logs_parse_failures_total{processor}`.

use chrono::format::{Item, StrftimeItems};
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::{Map, Value};

use node_agent_core::record::LogRecord;

use super::Stage;
use super::config::BuildContext;
use super::matcher::{MatchConfig, Matcher};
use crate::metrics::metrics;

/// Field keys tried for the level when `level` is not set.
const LEVEL_KEYS: [&str; 7] = [
    "level",
    "lvl",
    "severity",
    "loglevel",
    "log_level",
    "levelname",
    "@l",
];

/// `type: json | logfmt | regex`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParserConfig {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// `regex` only: the pattern, with named captures.
    pub pattern: Option<String>,
    pub timestamp: Option<TimestampConfig>,
    /// The field holding the level.
    pub level: Option<String>,
}

/// `timestamp:` of a parser.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    pub field: String,
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    "rfc3339".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParserKind {
    Json,
    Logfmt,
    Regex,
}

impl ParserKind {
    fn as_str(self) -> &'static str {
        match self {
            ParserKind::Json => "json",
            ParserKind::Logfmt => "logfmt",
            ParserKind::Regex => "regex",
        }
    }
}

#[derive(Debug, Clone)]
enum TimeFormat {
    Rfc3339,
    /// Seconds times this many nanoseconds.
    Unix(i64),
    Strftime {
        format: String,
        has_offset: bool,
    },
}

impl TimeFormat {
    fn parse_config(format: &str) -> Result<Self, String> {
        Ok(match format {
            "rfc3339" => TimeFormat::Rfc3339,
            "unix" => TimeFormat::Unix(1_000_000_000),
            "unix_ms" => TimeFormat::Unix(1_000_000),
            "unix_us" => TimeFormat::Unix(1_000),
            "unix_ns" => TimeFormat::Unix(1),
            f => {
                let items: Vec<Item> = StrftimeItems::new(f).collect();
                if items.is_empty() || items.contains(&Item::Error) {
                    return Err(format!(
                        "invalid time format {f:?} (rfc3339, unix, unix_ms, unix_us, unix_ns or a strftime format)"
                    ));
                }
                TimeFormat::Strftime {
                    format: f.to_string(),
                    has_offset: f.contains("%z") || f.contains("%:z") || f.contains("%#z"),
                }
            }
        })
    }

    /// Nanoseconds since the epoch of `value`.
    fn read(&self, value: &Value) -> Result<i64, String> {
        let text = value.as_str();
        match self {
            TimeFormat::Unix(scale) => {
                let text = match value {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.trim().to_string(),
                    _ => return Err(format!("{value} is not a number")),
                };
                unix_nanos(&text, *scale).ok_or_else(|| format!("{value} is not a number in range"))
            }
            TimeFormat::Rfc3339 => {
                let t = text.ok_or_else(|| format!("{value} is not a string"))?;
                chrono::DateTime::parse_from_rfc3339(t.trim())
                    .map_err(|e| format!("{t:?}: {e}"))?
                    .timestamp_nanos_opt()
                    .ok_or_else(|| format!("{t:?} is out of range"))
            }
            TimeFormat::Strftime { format, has_offset } => {
                let t = text.ok_or_else(|| format!("{value} is not a string"))?;
                let parsed = if *has_offset {
                    chrono::DateTime::parse_from_str(t, format).map(|d| d.timestamp_nanos_opt())
                } else {
                    chrono::NaiveDateTime::parse_from_str(t, format)
                        .map(|d| d.and_utc().timestamp_nanos_opt())
                };
                parsed
                    .map_err(|e| format!("{t:?}: {e}"))?
                    .ok_or_else(|| format!("{t:?} is out of range"))
            }
        }
    }
}

impl ParserConfig {
    pub fn build(&self, kind: ParserKind, cx: &mut BuildContext<'_>) -> Option<Parser> {
        let at = cx.at.clone();
        let matcher = cx.matcher(&self.matcher);
        let problems = &mut *cx.problems;
        let regex = match (kind, &self.pattern) {
            (ParserKind::Regex, None) => {
                problems.add(&at.key("pattern"), "is required for `type: regex`");
                return None;
            }
            (ParserKind::Regex, Some(p)) => {
                let r = problems.take(
                    &at.key("pattern"),
                    regex::Regex::new(p).map_err(|e| format!("invalid regex {p:?}: {e}")),
                )?;
                if r.capture_names().flatten().next().is_none() {
                    problems.add(
                        &at.key("pattern"),
                        "has no named capture ((?P<name>…)) to make a field of",
                    );
                    return None;
                }
                Some(r)
            }
            (_, Some(_)) => {
                problems.add(&at.key("pattern"), "is only for `type: regex`");
                return None;
            }
            (_, None) => None,
        };
        let timestamp = match &self.timestamp {
            Some(t) => {
                problems.check(
                    !t.field.is_empty(),
                    &at.key("timestamp").key("field"),
                    "must not be empty",
                );
                let format = problems.take(
                    &at.key("timestamp").key("format"),
                    TimeFormat::parse_config(&t.format),
                )?;
                Some((t.field.clone(), format))
            }
            None => None,
        };
        let label = BuildContext::label(&self.name, kind.as_str());
        Some(Parser {
            kind,
            regex,
            matcher,
            timestamp,
            level: self.level.clone(),
            lenient: false,
            failures: cx.counter(&metrics().parse_failures, &[&label]),
        })
    }
}

/// A parser stage.
pub struct Parser {
    kind: ParserKind,
    regex: Option<regex::Regex>,
    matcher: Matcher,
    timestamp: Option<(String, TimeFormat)>,
    level: Option<String>,
    /// `logs.parse_json`: only messages starting with `{` are tried, and failures are
    /// neither flagged nor counted (that setting's behaviour before processors existed).
    lenient: bool,
    failures: IntCounter,
}

impl Parser {
    /// The stage `logs.parse_json: true` stands for.
    pub fn legacy_json() -> Self {
        Self {
            kind: ParserKind::Json,
            regex: None,
            matcher: Matcher::default(),
            timestamp: None,
            level: None,
            lenient: true,
            failures: metrics().parse_failures.with_label_values(&["parse_json"]),
        }
    }

    fn parse(&self, message: &str) -> Result<Map<String, Value>, String> {
        match self.kind {
            ParserKind::Json => match serde_json::from_str::<Value>(message) {
                Ok(Value::Object(map)) => Ok(map),
                Ok(_) => Err("not a JSON object".into()),
                Err(e) => Err(format!("invalid JSON: {e}")),
            },
            ParserKind::Logfmt => logfmt(message),
            ParserKind::Regex => {
                let Some(re) = &self.regex else {
                    return Err("no pattern".into());
                };
                let caps = re.captures(message).ok_or("the pattern does not match")?;
                Ok(re
                    .capture_names()
                    .flatten()
                    .filter_map(|name| {
                        caps.name(name)
                            .map(|m| (name.to_string(), Value::String(m.as_str().into())))
                    })
                    .collect())
            }
        }
    }

    fn fail(&self, record: &mut LogRecord, mut why: String) {
        self.failures.inc();
        // `{kind}: {why}` in the buffer `why` already has (most messages fail a parser that
        // is not theirs: this runs for every one of them).
        why.insert_str(0, ": ");
        why.insert_str(0, self.kind.as_str());
        record
            .fields
            .get_or_insert_with(Map::new)
            .insert("parse_error".into(), Value::String(why));
    }

    /// Applies `timestamp:` to a record whose fields were just parsed.
    fn take_time(&self, record: &mut LogRecord) -> Result<(), String> {
        let Some((field, format)) = &self.timestamp else {
            return Ok(());
        };
        let fields = record.fields.get_or_insert_with(Map::new);
        let value = fields
            .get(field)
            .ok_or_else(|| format!("no field {field:?} for the timestamp"))?;
        let nanos = format
            .read(value)
            .map_err(|e| format!("timestamp field {field:?}: {e}"))?;
        fields.insert(
            "runtime_time".into(),
            Value::String(rfc3339_nanos(record.timestamp_nanos)),
        );
        record.timestamp_nanos = nanos;
        Ok(())
    }

    fn normalise_level(&self, fields: &mut Map<String, Value>) {
        let found = match &self.level {
            Some(key) => fields.get(key),
            None => LEVEL_KEYS.iter().find_map(|k| fields.get(*k)),
        };
        if let Some(level) = found.and_then(normalise_level)
            && fields.get("level").and_then(Value::as_str) != Some(level)
        {
            fields.insert("level".into(), Value::String(level.into()));
        }
    }
}

/// `seconds[.fraction]` in units of `scale` nanoseconds, exactly (no float rounding).
fn unix_nanos(text: &str, scale: i64) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let mut nanos = whole.parse::<i64>().ok()?.checked_mul(scale)?;
    // Fraction digits beyond a nanosecond are dropped.
    let mut unit = scale;
    for b in fraction.bytes() {
        unit /= 10;
        if unit == 0 {
            break;
        }
        nanos = nanos.checked_add(i64::from(b - b'0') * unit)?;
    }
    Some(if negative { -nanos } else { nanos })
}

fn rfc3339_nanos(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// One of `debug`, `info`, `warn`, `error`, `fatal` for the usual spellings of a level.
pub fn normalise_level(value: &Value) -> Option<&'static str> {
    let n = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    if let Some(n) = n {
        return match n {
            // syslog severities
            0..=2 => Some("fatal"),
            3 => Some("error"),
            4 => Some("warn"),
            5 | 6 => Some("info"),
            7 => Some("debug"),
            // pino / bunyan
            10 | 20 => Some("debug"),
            30 => Some("info"),
            40 => Some("warn"),
            50 => Some("error"),
            60 => Some("fatal"),
            _ => None,
        };
    }
    let text = value.as_str()?.trim();
    if text.len() > 16 {
        return None;
    }
    Some(match text.to_ascii_lowercase().as_str() {
        "trace" | "trc" | "debug" | "dbg" | "d" | "t" | "verbose" | "fine" | "finer" | "finest" => {
            "debug"
        }
        "info" | "inf" | "i" | "information" | "informational" | "notice" | "config" => "info",
        "warn" | "warning" | "wrn" | "w" => "warn",
        "error" | "err" | "eror" | "e" | "severe" => "error",
        "fatal" | "critical" | "crit" | "alert" | "emerg" | "emergency" | "panic" | "dpanic"
        | "f" | "c" => "fatal",
        _ => return None,
    })
}

/// `key=value key2="quoted \" value" flag`: at least one `key=value` pair is required.
pub fn logfmt(message: &str) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    let mut pairs = 0;
    let mut rest = message.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        if key_end == 0 {
            return Err(format!("expected a key at {:?}", truncate(rest)));
        }
        let key = &rest[..key_end];
        rest = &rest[key_end..];
        let value = if let Some(after) = rest.strip_prefix('=') {
            pairs += 1;
            if let Some(quoted) = after.strip_prefix('"') {
                let (value, after) = unquote(quoted).ok_or("unterminated quoted value")?;
                rest = after;
                Value::String(value)
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                rest = &after[end..];
                Value::String(after[..end].into())
            }
        } else if rest.starts_with('"') {
            return Err(format!("unexpected quote after key {key:?}"));
        } else {
            Value::Bool(true)
        };
        map.insert(key.into(), value);
        rest = rest.trim_start();
    }
    if pairs == 0 {
        return Err("no key=value pair".into());
    }
    Ok(map)
}

fn truncate(s: &str) -> &str {
    let end = s.char_indices().nth(20).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

/// The value up to the closing quote (escapes resolved) and what follows it.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

impl Stage for Parser {
    fn name(&self) -> &'static str {
        self.kind.as_str()
    }

    fn process(&mut self, mut record: LogRecord, out: &mut Vec<LogRecord>) {
        if record.malformed || !self.matcher.matches(&record.source) {
            out.push(record);
            return;
        }
        if self.lenient {
            if record.message.starts_with('{')
                && let Ok(map) = self.parse(&record.message)
            {
                record.fields = Some(map);
            }
            out.push(record);
            return;
        }
        match self.parse(&record.message) {
            Ok(map) => {
                // The parsed map is the fields when there are none yet (no copy into a new one).
                let fields = match &mut record.fields {
                    Some(fields) => {
                        fields.extend(map);
                        fields
                    }
                    None => record.fields.insert(map),
                };
                self.normalise_level(fields);
                if let Err(why) = self.take_time(&mut record) {
                    self.fail(&mut record, why);
                }
            }
            Err(why) => self.fail(&mut record, why),
        }
        out.push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::record;
    use super::*;
    use node_agent_core::config::{KeyPath, Problems};

    fn parser(kind: ParserKind, yaml: &str) -> Result<Parser, String> {
        let config: ParserConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let mut problems = Problems::new();
        let at = KeyPath::root().key("logs").key("processors").index(2);
        let mut cx = BuildContext {
            at: &at,
            problems: &mut problems,
            max_line_bytes: 1024,
            counting: true,
        };
        let p = config.build(kind, &mut cx);
        problems.into_result().map_err(|e| e.to_string())?;
        p.ok_or_else(|| "not built".into())
    }

    fn run(p: &mut Parser, message: &str) -> LogRecord {
        let mut out = Vec::new();
        let mut r = record(0, message);
        r.timestamp_nanos = 1_700_000_000_000_000_000;
        p.process(r, &mut out);
        out.pop().unwrap()
    }

    fn fields(r: &LogRecord) -> &Map<String, Value> {
        r.fields.as_ref().expect("fields")
    }

    #[test]
    fn json_with_timestamp_and_level() {
        let mut p = parser(ParserKind::Json, "timestamp: {field: ts, format: rfc3339}").unwrap();
        let r = run(
            &mut p,
            r#"{"ts":"2024-05-01T12:00:00.5+02:00","severity":"WARNING","msg":"slow"}"#,
        );
        let f = fields(&r);
        assert_eq!(f["msg"], "slow");
        assert_eq!(f["level"], "warn");
        assert_eq!(f["severity"], "WARNING", "the original is kept");
        assert_eq!(r.timestamp_nanos, 1_714_557_600_500_000_000);
        assert_eq!(f["runtime_time"], "2023-11-14T22:13:20.000000000Z");
        assert!(f.get("parse_error").is_none());

        let before = p.failures.get();
        for bad in [
            "plain text",
            "[1,2]",
            r#"{"ts":"yesterday"}"#,
            r#"{"no_ts":1}"#,
        ] {
            let r = run(&mut p, bad);
            assert_eq!(r.message, bad, "raw line kept");
            let err = fields(&r)["parse_error"].as_str().unwrap().to_string();
            assert!(err.starts_with("json: "), "{err}");
            assert_eq!(
                r.timestamp_nanos, 1_700_000_000_000_000_000,
                "runtime time kept"
            );
        }
        assert_eq!(p.failures.get() - before, 4);
    }

    #[test]
    fn logfmt_values_and_failures() {
        let mut p = parser(ParserKind::Logfmt, "timestamp: {field: t, format: unix_ms}").unwrap();
        let r = run(
            &mut p,
            r#"t=1714564800123 level=E msg="quoted \"value\" here" dry_run path=/a=b"#,
        );
        let f = fields(&r);
        assert_eq!(f["msg"], r#"quoted "value" here"#);
        assert_eq!(f["level"], "error");
        assert_eq!(f["dry_run"], true);
        assert_eq!(f["path"], "/a=b");
        assert_eq!(r.timestamp_nanos, 1_714_564_800_123_000_000);
        for bad in ["just words here", r#"msg="unterminated"#, "=x"] {
            let r = run(&mut p, bad);
            assert!(
                fields(&r)["parse_error"]
                    .as_str()
                    .unwrap()
                    .starts_with("logfmt: "),
                "{bad}"
            );
        }
    }

    #[test]
    fn regex_named_captures_with_strftime_time() {
        let mut p = parser(
            ParserKind::Regex,
            r"{pattern: '^(?P<time>\S+ \S+) (?P<lvl>\w+) (?P<msg>.*)$', level: lvl, timestamp: {field: time, format: '%Y-%m-%d %H:%M:%S%.3f'}}",
        )
        .unwrap();
        let r = run(&mut p, "2024-05-01 12:00:00.250 CRIT disk full");
        let f = fields(&r);
        assert_eq!(f["msg"], "disk full");
        assert_eq!(f["level"], "fatal");
        assert_eq!(r.timestamp_nanos, 1_714_564_800_250_000_000);
        let r = run(&mut p, "garbage");
        assert_eq!(
            fields(&r)["parse_error"],
            "regex: the pattern does not match"
        );
    }

    #[test]
    fn unix_times_are_exact() {
        assert_eq!(
            unix_nanos("1714564800.123456789", 1_000_000_000),
            Some(1_714_564_800_123_456_789)
        );
        assert_eq!(
            unix_nanos("1714564800123", 1_000_000),
            Some(1_714_564_800_123_000_000)
        );
        assert_eq!(unix_nanos("1.5", 1), Some(1));
        assert_eq!(unix_nanos("-2.5", 1_000_000_000), Some(-2_500_000_000));
        for bad in ["", "x", "1e9", "1.2.3", "99999999999999999999"] {
            assert_eq!(unix_nanos(bad, 1_000_000_000), None, "{bad}");
        }
    }

    #[test]
    fn levels() {
        for (v, want) in [
            (Value::from("TRACE"), Some("debug")),
            (Value::from("Information"), Some("info")),
            (Value::from("warning"), Some("warn")),
            (Value::from("SEVERE"), Some("error")),
            (Value::from("emerg"), Some("fatal")),
            (Value::from(30), Some("info")),
            (Value::from(3), Some("error")),
            (Value::from("60"), Some("fatal")),
            (Value::from("loud"), None),
            (Value::from(true), None),
        ] {
            assert_eq!(normalise_level(&v), want, "{v}");
        }
    }

    #[test]
    fn bad_configs_name_the_key() {
        let err = parser(ParserKind::Regex, "pattern: '(?P<x>'")
            .err()
            .unwrap();
        assert!(
            err.contains("logs.processors[2].pattern: invalid regex"),
            "{err}"
        );
        let err = parser(ParserKind::Regex, "pattern: '\\d+'").err().unwrap();
        assert!(err.contains("named capture"), "{err}");
        let err = parser(ParserKind::Regex, "{}").err().unwrap();
        assert!(
            err.contains("logs.processors[2].pattern: is required"),
            "{err}"
        );
        let err = parser(ParserKind::Json, "pattern: x").err().unwrap();
        assert!(err.contains("only for"), "{err}");
        let err = parser(ParserKind::Json, "timestamp: {field: t, format: '%Q'}")
            .err()
            .unwrap();
        assert!(
            err.contains("logs.processors[2].timestamp.format: invalid time format"),
            "{err}"
        );
        assert!(parser(ParserKind::Json, "timestamp: {field: t, fmt: x}").is_err());
    }

    #[test]
    fn legacy_parse_json_is_lenient() {
        let mut p = Parser::legacy_json();
        let r = run(&mut p, r#"{"level":"info","n":1}"#);
        assert_eq!(fields(&r)["n"], 1);
        assert!(run(&mut p, "plain text").fields.is_none());
        let r = run(&mut p, "{broken");
        assert!(r.fields.is_none());
        assert_eq!(r.message, "{broken");
    }
}
