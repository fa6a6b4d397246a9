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
//! value counts in `node_agent_logs_redactions_total{pattern}`. Text passes two sieves
//! before any pattern runs alone: literal tests (`@`, `eyJ`, `AIza`, `bearer`, 13 digits in
//! a row, …, see `Needs`) skip the text no built-in can match, then one pass over all
//! patterns at once ([`regex::RegexSet`]) says which do.

use std::borrow::Cow;

use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::Value;

use node_agent_core::record::LogRecord;

use super::Stage;
use super::config::BuildContext;
use super::matcher::{MatchConfig, Matcher};
use crate::metrics::metrics;

/// Built-in patterns: name, regex, whether a match must pass the Luhn check, and what any
/// match needs (see [`Needs`]).
const BUILT_IN: [(&str, &str, bool, Needs); 7] = [
    (
        "email",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        false,
        Needs::Literal("@"),
    ),
    (
        "credit_card",
        r"\b(?:\d[ -]?){12,18}\d\b",
        true,
        Needs::DigitRun(13),
    ),
    (
        "bearer_token",
        r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]+=*)",
        false,
        Needs::IgnoringCase("bearer", 0),
    ),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        false,
        Needs::Literal("eyJ"),
    ),
    (
        "aws_access_key",
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        false,
        Needs::AwsKeyId,
    ),
    (
        "aws_secret_key",
        r#"(?i)aws_secret_access_key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})"#,
        false,
        Needs::IgnoringCase("aws_secret_access_key", 3),
    ),
    (
        "gcp_api_key",
        r"\bAIza[0-9A-Za-z_\-]{35}",
        false,
        Needs::Literal("AIza"),
    ),
];

/// What text must contain for a built-in to match in it: a cheap test run before the
/// regexes. Most log lines carry none of `@`, `eyJ`, `AIza`, `bearer`, … nor 13 digits in a
/// row, and then no regex runs. A test may pass text its regex does not match, never the
/// other way round.
#[derive(Debug, Clone, Copy)]
enum Needs {
    /// This literal.
    Literal(&'static str),
    /// `AKIA`, `ASIA`, `ABIA` or `ACCA`.
    AwsKeyId,
    /// This lower-case literal ignoring ASCII case, in ASCII text: the regex is `(?i)`, and
    /// Unicode case folding reaches its letters from outside ASCII (`ſ` → `s`, `K` → `k`).
    /// The byte at the index is looked for first (the rarest, case-free if possible).
    IgnoringCase(&'static str, usize),
    /// This many ASCII digits, each separated from the next by at most one space or dash,
    /// in ASCII text (`\d` is any Unicode digit).
    DigitRun(usize),
}

impl Needs {
    /// Only ASCII text can be judged; other text must run the regexes.
    fn ascii_only(self) -> bool {
        matches!(self, Needs::IgnoringCase(..) | Needs::DigitRun(_))
    }

    fn may_match(self, text: &[u8], finder: Option<&memchr::memmem::Finder<'_>>) -> bool {
        match self {
            Needs::Literal(l) => match finder {
                Some(f) => f.find(text).is_some(),
                None => memchr::memmem::find(text, l.as_bytes()).is_some(),
            },
            Needs::AwsKeyId => memchr::memchr_iter(b'A', text).any(|i| {
                matches!(
                    text.get(i + 1..i + 4),
                    Some(b"KIA" | b"SIA" | b"BIA" | b"CCA")
                )
            }),
            Needs::IgnoringCase(l, at) => contains_ignore_ascii_case(text, l.as_bytes(), at),
            Needs::DigitRun(min) => digit_run(text, min),
        }
    }
}

/// Whether `text` contains `needle` (lower-case ASCII) ignoring ASCII case, looking for
/// `needle[at]` first.
fn contains_ignore_ascii_case(text: &[u8], needle: &[u8], at: usize) -> bool {
    let Some(&key) = needle.get(at) else {
        return true;
    };
    let check = |i: usize| {
        i.checked_sub(at)
            .and_then(|start| text.get(start..start + needle.len()))
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    };
    if key.is_ascii_alphabetic() {
        memchr::memchr2_iter(key, key.to_ascii_uppercase(), text).any(check)
    } else {
        memchr::memchr_iter(key, text).any(check)
    }
}

/// The built-ins' [`Needs`], tested one after the other.
struct Prefilter {
    needs: Vec<(Needs, Option<memchr::memmem::Finder<'static>>)>,
    /// A test only judges ASCII text (other text always runs the regexes).
    ascii_only: bool,
}

impl Prefilter {
    /// `None` when a rule has no test (a custom pattern): the regexes always run.
    fn new(needs: &[Option<Needs>]) -> Option<Self> {
        let needs = needs
            .iter()
            .map(|n| {
                let n = (*n)?;
                let finder = match n {
                    Needs::Literal(l) => Some(memchr::memmem::Finder::new(l.as_bytes())),
                    _ => None,
                };
                Some((n, finder))
            })
            .collect::<Option<Vec<_>>>()?;
        let ascii_only = needs.iter().any(|(n, _)| n.ascii_only());
        Some(Self { needs, ascii_only })
    }

    /// `false` when no rule can match `text`.
    fn may_match(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        (self.ascii_only && !bytes.is_ascii())
            || self
                .needs
                .iter()
                .any(|(n, finder)| n.may_match(bytes, finder.as_ref()))
    }
}

/// Whether `text` holds at least `min` ASCII digits each separated from the next by at most
/// one space or dash: what `(?:\d[ -]?){12,18}\d` needs in ASCII text.
fn digit_run(text: &[u8], min: usize) -> bool {
    let in_run = |b: u8| b.is_ascii_digit() || b == b' ' || b == b'-';
    let mut i = 0;
    while i + min <= text.len() {
        // A run starting in i..i + min covers text[i + min - 1]: when that byte cannot be
        // in one, none starts there.
        if !in_run(text[i + min - 1]) {
            i += min;
            continue;
        }
        // Follow the run from i until it breaks.
        let mut digits = 0;
        // The byte before was a separator following a digit.
        let mut after_separator = false;
        while i < text.len() {
            let b = text[i];
            i += 1;
            if b.is_ascii_digit() {
                digits += 1;
                if digits >= min {
                    return true;
                }
                after_separator = false;
            } else if (b == b' ' || b == b'-') && digits > 0 && !after_separator {
                after_separator = true;
            } else {
                break;
            }
        }
    }
    false
}

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
        let mut sources: Vec<(String, String, bool, String, Option<Needs>)> = Vec::new();
        let all_builtins = self.builtins.is_empty() && self.patterns.is_empty();
        for (i, name) in self.builtins.iter().enumerate() {
            match BUILT_IN.iter().find(|b| b.0 == name) {
                Some((n, re, luhn, needs)) => sources.push((
                    n.to_string(),
                    re.to_string(),
                    *luhn,
                    self.replacement.clone(),
                    Some(*needs),
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
            for (n, re, luhn, needs) in BUILT_IN {
                sources.push((
                    n.into(),
                    re.into(),
                    luhn,
                    self.replacement.clone(),
                    Some(needs),
                ));
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
                None,
            ));
        }
        let mut rules = Vec::new();
        let custom_from = sources.len() - self.patterns.len();
        let mut needs = Vec::new();
        for (i, (name, re, luhn, replacement, need)) in sources.into_iter().enumerate() {
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
            needs.push(need);
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
            prefilter: Prefilter::new(&needs),
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
    /// `None`: the set runs on every text.
    prefilter: Option<Prefilter>,
    rules: Vec<Rule>,
    set: regex::RegexSet,
    fields: bool,
}

impl Redact {
    /// `false` when no pattern can match `text` (then the set need not run). When it is
    /// `true` the set decides on the whole text as before, so what is masked is the same.
    fn may_match(&self, text: &str) -> bool {
        self.prefilter.as_ref().is_none_or(|p| p.may_match(text))
    }

    /// `text` with every pattern masked, `None` when nothing was.
    fn redact(&self, text: &str) -> Option<String> {
        if !self.may_match(text) {
            return None;
        }
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

    /// Inputs for the prefilter checks: what each built-in matches, near misses, and text
    /// outside ASCII (digits and case folding beyond it).
    const PREFILTER_INPUTS: &[&str] = &[
        "mail jane.doe+x@mail.example.co.uk now",
        "no at sign here: jane.doe mail.example.co.uk",
        "user@localhost has no dot",
        "card 4111 1111 1111 1111 ok",
        "card 4111-1111-1111-1111",
        "4111111111111111",
        "12 digits only 411111111111",
        "two separators 4111  1111 1111 1111",
        "2024-05-01 12:00:00.123 ERROR payment for order 4711 failed",
        "arabic digits ١٢٣٤٥٦٧٨٩٠١٢٣٤ and 4111",
        "Authorization: Bearer abc.DEF-123_x/y+z==",
        "BEARER token",
        "bearerless bear er",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJ alone",
        "key AKIAIOSFODNN7EXAMPLE used",
        "key ASIAIOSFODNN7EXAMPLE ABIAIOSFODNN7EXAMPLE ACCAIOSFODNN7EXAMPLE",
        "AKIA short",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_ACCESS_KEY: \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
        "aws_ſecret_access_\u{212A}ey=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "k=AIzaSyD-abcdefghijklmnopqrstuvwxyz12345",
        "AIza too short",
        "id-pod0-app-12345 abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
        "{\"id\":\"id-pod1-app-7\",\"level\":\"info\",\"msg\":\"klmnop\"}",
        "\tat com.acme.shop.checkout.PaymentService.charge(PaymentService.java:88)",
        "",
    ];

    #[test]
    fn prefilters_pass_whatever_their_regex_matches() {
        let mut inputs: Vec<String> = PREFILTER_INPUTS.iter().map(|s| s.to_string()).collect();
        // Random text over an alphabet the patterns care about.
        let alphabet: Vec<char> = "0123456789 -@.abeyJKIAzSrBCAkws_=:/+ſ\u{212A}١"
            .chars()
            .collect();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(rng % 48) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                s.push(alphabet[(rng % alphabet.len() as u64) as usize]);
            }
            inputs.push(s);
        }
        let mut matched = vec![0; BUILT_IN.len()];
        let mut skipped = vec![0; BUILT_IN.len()];
        for (i, (name, re, ..)) in BUILT_IN.iter().enumerate() {
            let re = regex::Regex::new(re).unwrap();
            let only = redact(&format!("builtins: [{name}]")).unwrap();
            for text in &inputs {
                let passes = only.may_match(text);
                if re.is_match(text) {
                    matched[i] += 1;
                    assert!(
                        passes,
                        "{name}: the prefilter refused {text:?}, which matches"
                    );
                } else if !passes {
                    skipped[i] += 1;
                }
            }
        }
        for (i, (name, ..)) in BUILT_IN.iter().enumerate() {
            assert!(matched[i] > 0, "{name}: no input matched");
            assert!(skipped[i] > 0, "{name}: the prefilter never skipped");
        }
        // Plain log lines skip every regex.
        let r = redact("{}").unwrap();
        for text in [
            "id-pod0-app-12345 abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
            "2024-05-01 12:00:00.123 ERROR [http-nio-8080-exec-7] payment for order 4711 failed",
            "\tat com.acme.shop.checkout.PaymentService.charge(PaymentService.java:88)",
        ] {
            assert!(!r.may_match(text), "{text}");
        }
        assert!(r.may_match("x@y.org"));
        // A custom pattern has no prefilter: the set always runs.
        let r =
            redact("builtins: [email]\npatterns: [{name: s, regex: 'session=(\\w+)'}]").unwrap();
        assert!(r.may_match("plain"));
    }

    #[test]
    fn digit_runs() {
        assert!(digit_run(b"4111 1111 1111 1", 13));
        assert!(digit_run(b"4111-1111-1111-1", 13));
        assert!(!digit_run(b"4111 1111 1111 ", 13));
        assert!(!digit_run(b"4111  1111 1111 1111", 13));
        assert!(!digit_run(b"4111 -1111 1111 1111", 13));
        assert!(!digit_run(b"2024-05-01 12:00:00.123", 13));
        assert!(digit_run(b"order 12 then 4111 1111-1111 1111 ok", 13));
        assert!(digit_run(b"1234567890123", 13));
        assert!(!digit_run(b"123456789012", 13));
        assert!(!digit_run(b"x 4111 1111 111 x 4111 1111", 13));
        assert!(digit_run(
            b"abcdefghijklmnopqrstuvwxyz 12 - 4111111111111",
            13
        ));
        assert!(contains_ignore_ascii_case(b"x BeArEr y", b"bearer", 0));
        assert!(!contains_ignore_ascii_case(b"x bearr y", b"bearer", 0));
        assert!(!contains_ignore_ascii_case(b"beare", b"bearer", 0));
        assert!(contains_ignore_ascii_case(
            b"AWS_Secret_Access_Key",
            b"aws_secret_access_key",
            3
        ));
        assert!(!contains_ignore_ascii_case(
            b"_secret_access_key",
            b"aws_secret_access_key",
            3
        ));
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
