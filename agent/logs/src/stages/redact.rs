//! Masks secrets and personal data: `type: redact` in `logs.processors`.
//!
//! ```yaml
//! - type: redact
//!   builtins: [email, credit_card, bearer_token, jwt, aws_access_key, aws_secret_key, gcp_api_key]
//!   patterns:                           # your own; a capture group masks only that part
//!     - {name: session, regex: 'session=(\w+)'}
//!   replacement: '[REDACTED]'           # default; a pattern may set its own
//!   fields: true                        # also string values in `fields` (default)
//! ```
//!
//! Without `builtins` and `patterns` every built-in is on. Built-ins: e-mail addresses,
//! card numbers (13–19 digits, spaces or dashes allowed, kept only when the Luhn check
//! passes so order ids are left alone), `Bearer` tokens (the token only), JWTs, AWS access
//! key ids and secret keys (`aws_secret_access_key=…`), GCP API keys (`AIza…`). Each masked
//! value counts in `node_agent_logs_redactions_total{pattern}`. A cheap pass over all
//! patterns at once ([`regex::RegexSet`]) skips the text no pattern matches.

use std::borrow::Cow;

use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::Value;

use node_agent_core::record::LogRecord;

use super::Stage;
use super::config::BuildContext;
use super::matcher::{MatchConfig, Matcher};
use crate::metrics::metrics;

/// Built-in patterns: name, regex, whether a match must pass the Luhn check.
const BUILT_IN: [(&str, &str, bool); 7] = [
    (
        "email",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        false,
    ),
    ("credit_card", r"\b(?:\d[ -]?){12,18}\d\b", true),
    (
        "bearer_token",
        r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]+=*)",
        false,
    ),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        false,
    ),
    (
        "aws_access_key",
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        false,
    ),
    (
        "aws_secret_key",
        r#"(?i)aws_secret_access_key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})"#,
        false,
    ),
    ("gcp_api_key", r"\bAIza[0-9A-Za-z_\-]{35}", false),
];

/// One entry of `patterns:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub name: String,
    pub regex: String,
    pub replacement: Option<String>,
}

/// `type: redact`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactConfig {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    pub builtins: Vec<String>,
    pub patterns: Vec<PatternConfig>,
    pub replacement: String,
    pub fields: bool,
}

impl Default for RedactConfig {
    fn default() -> Self {
        Self {
            name: None,
            matcher: MatchConfig::default(),
            builtins: Vec::new(),
            patterns: Vec::new(),
            replacement: "[REDACTED]".into(),
            fields: true,
        }
    }
}

struct Rule {
    regex: regex::Regex,
    replacement: String,
    luhn: bool,
    count: IntCounter,
}

impl RedactConfig {
    pub fn build(&self, cx: &mut BuildContext<'_>) -> Option<Redact> {
        let at = cx.at.clone();
        let matcher = cx.matcher(&self.matcher);
        let counting = cx.counting;
        let problems = &mut *cx.problems;
        let mut sources: Vec<(String, String, bool, String)> = Vec::new();
        let all_builtins = self.builtins.is_empty() && self.patterns.is_empty();
        for (i, name) in self.builtins.iter().enumerate() {
            match BUILT_IN.iter().find(|b| b.0 == name) {
                Some((n, re, luhn)) => sources.push((
                    n.to_string(),
                    re.to_string(),
                    *luhn,
                    self.replacement.clone(),
                )),
                None => problems.add(
                    &at.key("builtins").index(i),
                    format!(
                        "unknown built-in pattern {name:?}; expected one of {}",
                        BUILT_IN.map(|b| b.0).join(", ")
                    ),
                ),
            }
        }
        if all_builtins {
            for (n, re, luhn) in BUILT_IN {
                sources.push((n.into(), re.into(), luhn, self.replacement.clone()));
            }
        }
        for (i, p) in self.patterns.iter().enumerate() {
            problems.check(
                !p.name.is_empty(),
                &at.key("patterns").index(i).key("name"),
                "must not be empty",
            );
            sources.push((
                p.name.clone(),
                p.regex.clone(),
                false,
                p.replacement
                    .clone()
                    .unwrap_or_else(|| self.replacement.clone()),
            ));
        }
        let mut rules = Vec::new();
        let custom_from = sources.len() - self.patterns.len();
        for (i, (name, re, luhn, replacement)) in sources.into_iter().enumerate() {
            let path = if i >= custom_from {
                at.key("patterns").index(i - custom_from).key("regex")
            } else {
                at.key("builtins")
            };
            let Some(regex) = problems.take(
                &path,
                regex::Regex::new(&re).map_err(|e| format!("invalid regex {re:?}: {e}")),
            ) else {
                continue;
            };
            rules.push(Rule {
                regex,
                replacement,
                luhn,
                count: super::config::counter(counting, &metrics().redactions, &[&name]),
            });
        }
        let set = problems.take(
            &at,
            regex::RegexSet::new(rules.iter().map(|r| r.regex.as_str())),
        )?;
        Some(Redact {
            matcher,
            rules,
            set,
            fields: self.fields,
        })
    }
}

/// Whether the digits of `text` pass the Luhn check (card numbers).
pub fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 { d2 - 9 } else { d2 }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The redaction stage.
pub struct Redact {
    matcher: Matcher,
    rules: Vec<Rule>,
    set: regex::RegexSet,
    fields: bool,
}

impl Redact {
    /// `text` with every pattern masked, `None` when nothing was.
    fn redact(&self, text: &str) -> Option<String> {
        let hits = self.set.matches(text);
        if !hits.matched_any() {
            return None;
        }
        let mut current = Cow::Borrowed(text);
        let mut changed = false;
        for i in hits.iter() {
            let rule = &self.rules[i];
            let mut n = 0;
            let replaced = rule.regex.replace_all(&current, |caps: &regex::Captures| {
                let whole = caps.get(0).map_or("", |m| m.as_str());
                if rule.luhn && !luhn(whole) {
                    return whole.to_string();
                }
                n += 1;
                match caps.get(1) {
                    // Only the secret part: `Bearer [REDACTED]`.
                    Some(secret) => {
                        let start = secret.start() - caps.get(0).map_or(0, |m| m.start());
                        let end = start + secret.len();
                        format!("{}{}{}", &whole[..start], rule.replacement, &whole[end..])
                    }
                    None => rule.replacement.clone(),
                }
            });
            if n > 0 {
                rule.count.inc_by(n);
                changed = true;
                current = Cow::Owned(replaced.into_owned());
            }
        }
        changed.then(|| current.into_owned())
    }

    fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.redact_value(v)),
            _ => {}
        }
    }
}

impl Stage for Redact {
    fn name(&self) -> &'static str {
        "redact"
    }

    fn process(&mut self, mut record: LogRecord, out: &mut Vec<LogRecord>) {
        if self.matcher.matches(&record.source) {
            if let Some(r) = self.redact(&record.message) {
                record.message = r;
            }
            if self.fields
                && let Some(fields) = &mut record.fields
            {
                fields.values_mut().for_each(|v| self.redact_value(v));
            }
        }
        out.push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::record;
    use super::*;
    use node_agent_core::config::{KeyPath, Problems};

    fn redact(yaml: &str) -> Result<Redact, String> {
        let config: RedactConfig = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let mut problems = Problems::new();
        let at = KeyPath::root().key("logs").key("processors").index(3);
        let mut cx = BuildContext {
            at: &at,
            problems: &mut problems,
            max_line_bytes: 1024,
            counting: true,
        };
        let r = config.build(&mut cx);
        problems.into_result().map_err(|e| e.to_string())?;
        r.ok_or_else(|| "not built".into())
    }

    fn run(r: &mut Redact, message: &str) -> String {
        let mut out = Vec::new();
        r.process(record(0, message), &mut out);
        out.pop().unwrap().message
    }

    #[test]
    fn built_ins_mask_what_they_should_and_nothing_else() {
        let mut r = redact("{}").unwrap();
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        for (input, want) in [
            (
                "mail jane.doe+x@mail.example.co.uk now",
                "mail [REDACTED] now",
            ),
            ("card 4111 1111 1111 1111 ok", "card [REDACTED] ok"),
            ("card 4111-1111-1111-1111", "card [REDACTED]"),
            (
                "order 4111111111111112 (fails Luhn)",
                "order 4111111111111112 (fails Luhn)",
            ),
            (
                "Authorization: Bearer abc.DEF-123_x/y+z==",
                "Authorization: Bearer [REDACTED]",
            ),
            (&format!("token={jwt};"), "token=[REDACTED];"),
            ("key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used"),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_access_key = [REDACTED]",
            ),
            ("k=AIzaSyD-abcdefghijklmnopqrstuvwxyz12345", "k=[REDACTED]"),
            ("nothing to hide, id 12345", "nothing to hide, id 12345"),
        ] {
            assert_eq!(run(&mut r, input), want, "{input}");
        }
    }

    #[test]
    fn custom_patterns_fields_and_counts() {
        let mut r = redact(
            "builtins: [email]\npatterns: [{name: t-session, regex: 'session=(\\w+)', replacement: '***'}]",
        )
        .unwrap();
        let count = metrics().redactions.with_label_values(&["t-session"]);
        let before = count.get();
        let mut rec = record(0, "session=abc and session=def for a@b.io");
        rec.fields =
            serde_json::json!({"user": {"mail": "x@y.org"}, "n": 1, "tags": ["session=zz"]})
                .as_object()
                .cloned();
        let mut out = Vec::new();
        r.process(rec, &mut out);
        assert_eq!(out[0].message, "session=*** and session=*** for [REDACTED]");
        let f = out[0].fields.as_ref().unwrap();
        assert_eq!(f["user"]["mail"], "[REDACTED]");
        assert_eq!(f["tags"][0], "session=***");
        assert_eq!(f["n"], 1);
        assert_eq!(count.get() - before, 3);
        assert_eq!(
            run(&mut r, "card 4111 1111 1111 1111"),
            "card 4111 1111 1111 1111",
            "only what was asked for"
        );
    }

    #[test]
    fn luhn_check() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn("1234"));
    }

    #[test]
    fn bad_patterns_name_the_key() {
        let err = redact("patterns: [{name: a, regex: ok}, {name: b, regex: '(('}]")
            .err()
            .unwrap();
        assert!(
            err.contains("logs.processors[3].patterns[1].regex: invalid regex"),
            "{err}"
        );
        let err = redact("builtins: [ssn]").err().unwrap();
        assert!(
            err.contains("logs.processors[3].builtins[0]: unknown built-in"),
            "{err}"
        );
    }
}
