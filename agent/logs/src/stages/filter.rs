//! Keeps or drops records: `type: filter` in `logs.processors`.
//!
//! ```yaml
//! - type: filter
//!   name: drop-health-checks        # the `reason` label of dropped records
//!   action: drop                    # drop (default): drop what the conditions select
//!   match: {namespace: prod-*}      # only these records are looked at
//!   message: 'GET /health(z)? '     # regex on the message
//!   fields: {path: '^/metrics'}     # regex on a parsed field (`a.b` reaches into objects)
//!   level: [debug]                  # the normalised `fields.level` (see the parsers)
//! - type: filter
//!   action: keep                    # keep only what the conditions select
//!   match: {container: audit-*}
//!   level: [warn, error, fatal]
//! ```
//!
//! The conditions given must all hold for a record to be selected; `action: drop` with no
//! condition drops every matched record (e.g. a whole namespace). A field condition needs
//! the field (non-strings are compared as JSON text), a level condition needs a level.
//! Dropped records count in `node_agent_logs_dropped_records_total{reason}` and count as
//! delivered: positions move past them.

use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use node_agent_core::record::LogRecord;

use super::Stage;
use super::config::BuildContext;
use super::matcher::{MatchConfig, Matcher};
use crate::metrics::metrics;

/// The normalised levels a `level:` condition may name.
pub const LEVELS: [&str; 5] = ["debug", "info", "warn", "error", "fatal"];

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Drop,
    Keep,
}

/// `type: filter`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    pub action: Action,
    pub message: Option<String>,
    pub fields: BTreeMap<String, String>,
    pub level: Vec<String>,
}

impl FilterConfig {
    pub fn build(&self, cx: &mut BuildContext<'_>) -> Option<Filter> {
        let at = cx.at.clone();
        let matcher = cx.matcher(&self.matcher);
        let problems = &mut *cx.problems;
        let compile = |text: &str| {
            regex::Regex::new(text).map_err(|e| format!("invalid regex {text:?}: {e}"))
        };
        let message = match &self.message {
            Some(m) => Some(problems.take(&at.key("message"), compile(m))?),
            None => None,
        };
        let mut fields = Vec::new();
        for (name, pattern) in &self.fields {
            problems.check(
                !name.is_empty(),
                &at.key("fields"),
                "field names must not be empty",
            );
            if let Some(r) = problems.take(&at.key("fields").key(name), compile(pattern)) {
                fields.push((name.clone(), r));
            }
        }
        for (i, l) in self.level.iter().enumerate() {
            problems.check(
                LEVELS.contains(&l.as_str()),
                &at.key("level").index(i),
                format!("unknown level {l:?}; expected one of {}", LEVELS.join(", ")),
            );
        }
        let conditions = message.is_some() || !fields.is_empty() || !self.level.is_empty();
        problems.check(
            conditions || self.action == Action::Drop,
            &at.key("action"),
            "`keep` needs a condition (message, fields or level)",
        );
        let reason = BuildContext::label(&self.name, "filter");
        Some(Filter {
            matcher,
            action: self.action,
            message,
            fields,
            levels: self.level.clone(),
            dropped: cx.counter(&metrics().dropped_records, &[&reason]),
        })
    }
}

/// The filter stage.
pub struct Filter {
    matcher: Matcher,
    action: Action,
    message: Option<regex::Regex>,
    fields: Vec<(String, regex::Regex)>,
    levels: Vec<String>,
    dropped: IntCounter,
}

/// `fields[path]`, or the dotted path through nested objects.
pub fn field<'a>(
    fields: Option<&'a serde_json::Map<String, Value>>,
    path: &str,
) -> Option<&'a Value> {
    let fields = fields?;
    if let Some(v) = fields.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut value = fields.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn field_matches(value: &Value, pattern: &regex::Regex) -> bool {
    match value {
        Value::String(s) => pattern.is_match(s),
        other => pattern.is_match(&other.to_string()),
    }
}

impl Filter {
    fn selected(&self, r: &LogRecord) -> bool {
        self.message.as_ref().is_none_or(|m| m.is_match(&r.message))
            && self.fields.iter().all(|(name, pattern)| {
                field(r.fields.as_ref(), name).is_some_and(|v| field_matches(v, pattern))
            })
            && (self.levels.is_empty()
                || field(r.fields.as_ref(), "level")
                    .and_then(Value::as_str)
                    .is_some_and(|l| self.levels.iter().any(|want| want == l)))
    }
}

impl Stage for Filter {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn process(&mut self, record: LogRecord, out: &mut Vec<LogRecord>) {
        if !self.matcher.matches(&record.source) {
            out.push(record);
            return;
        }
        let keep = match self.action {
            Action::Drop => !self.selected(&record),
            Action::Keep => self.selected(&record),
        };
        if keep {
            out.push(record);
        } else {
            self.dropped.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{meta, record};
    use super::*;
    use node_agent_core::config::{KeyPath, Problems};
    use node_agent_core::record::Stream;

    fn filter(yaml: &str) -> Result<Filter, String> {
        let config: FilterConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let mut problems = Problems::new();
        let at = KeyPath::root().key("logs").key("processors").index(1);
        let mut cx = BuildContext {
            at: &at,
            problems: &mut problems,
            max_line_bytes: 1024,
            counting: true,
        };
        let f = config.build(&mut cx);
        problems.into_result().map_err(|e| e.to_string())?;
        f.ok_or_else(|| "not built".into())
    }

    fn with_fields(message: &str, fields: Value) -> LogRecord {
        let mut r = record(0, message);
        r.fields = fields.as_object().cloned();
        r
    }

    fn kept(f: &mut Filter, records: Vec<LogRecord>) -> Vec<String> {
        let mut out = Vec::new();
        for r in records {
            f.process(r, &mut out);
        }
        out.into_iter().map(|r| r.message).collect()
    }

    #[test]
    fn drop_by_message_field_and_level() {
        let mut f = filter("name: t-drop-health\nmessage: 'GET /health'").unwrap();
        let before = f.dropped.get();
        assert_eq!(
            kept(
                &mut f,
                vec![record(0, "GET /health 200"), record(1, "GET /cart 200")]
            ),
            ["GET /cart 200"]
        );
        assert_eq!(f.dropped.get() - before, 1);

        let mut f = filter("fields: {http.path: '^/metrics', code: '^2'}").unwrap();
        let records = vec![
            with_fields(
                "a",
                serde_json::json!({"http": {"path": "/metrics"}, "code": 200}),
            ),
            with_fields(
                "b",
                serde_json::json!({"http": {"path": "/metrics"}, "code": 500}),
            ),
            with_fields(
                "c",
                serde_json::json!({"http.path": "/metrics", "code": "204"}),
            ),
            record(0, "d"),
        ];
        assert_eq!(kept(&mut f, records), ["b", "d"]);

        let mut f = filter("level: [debug, info]").unwrap();
        let records = vec![
            with_fields("a", serde_json::json!({"level": "debug"})),
            with_fields("b", serde_json::json!({"level": "error"})),
            record(0, "no level"),
        ];
        assert_eq!(kept(&mut f, records), ["b", "no level"]);
    }

    #[test]
    fn keep_and_match() {
        let mut f =
            filter("action: keep\nlevel: [warn, error, fatal]\nmatch: {namespace: prod}").unwrap();
        let mut other = record(0, "other namespace passes");
        other.source = meta("dev", "p", "c");
        let records = vec![
            with_fields("warned", serde_json::json!({"level": "warn"})),
            with_fields("chatter", serde_json::json!({"level": "info"})),
            record(0, "no level"),
            other,
        ];
        let mut prod = Vec::new();
        for mut r in records {
            if r.source.namespace == "ns" {
                r.source = meta("prod", "p", "c");
            }
            prod.push(r);
        }
        assert_eq!(kept(&mut f, prod), ["warned", "other namespace passes"]);

        let mut f = filter("match: {namespace: ns, container: c}").unwrap();
        let mut r = record(0, "x");
        r.stream = Stream::Stderr;
        assert!(kept(&mut f, vec![r]).is_empty(), "drop by match alone");
    }

    #[test]
    fn bad_filters_name_the_key() {
        let err = filter("message: '('").err().unwrap();
        assert!(
            err.contains("logs.processors[1].message: invalid regex"),
            "{err}"
        );
        let err = filter("fields: {code: '[' }").err().unwrap();
        assert!(
            err.contains("logs.processors[1].fields.code: invalid regex"),
            "{err}"
        );
        let err = filter("level: [verbose]").err().unwrap();
        assert!(
            err.contains("logs.processors[1].level[0]: unknown level"),
            "{err}"
        );
        let err = filter("action: keep").err().unwrap();
        assert!(err.contains("logs.processors[1].action"), "{err}");
        assert!(filter("action: maybe").is_err());
    }
}
