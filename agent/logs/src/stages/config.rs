//! `logs.processors`: the ordered list of stages, each `{type: …, name: …, match: …, …}`.
//!
//! ```yaml
//! logs:
//!   processors:
//!     - type: multiline            # join stack traces            (stages::multiline)
//!     - type: json                 # json | logfmt | regex parsers (stages::parse)
//!       match: {namespace: prod-*} # which records (stages::matcher); others pass unchanged
//!     - type: filter               # keep / drop                  (stages::filter)
//!     - type: redact               # mask secrets                 (stages::redact)
//!     - type: throttle             # rate limit per container     (stages::throttle)
//! ```
//!
//! They run after the enrich stage (pod metadata, for `labels:` matches and the multiline
//! annotation) and after `logs.parse_json`. `name` labels the stage's metrics (`processor`,
//! `reason`, default: the type). Validation compiles every entry (regexes, globs, formats)
//! and reports each problem at its key path, e.g. `logs.processors[2].pattern: invalid
//! regex …`; building the chain later compiles them again from the validated config.

use serde::Deserialize;

use node_agent_core::config::{InvalidConfig, KeyPath, Problems};

use super::matcher::{MatchConfig, Matcher};
use super::parse::ParserKind;
use super::{Chain, Stage};

/// One entry of `logs.processors`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessorConfig {
    Multiline(super::multiline::MultilineConfig),
    Json(super::parse::ParserConfig),
    Logfmt(super::parse::ParserConfig),
    Regex(super::parse::ParserConfig),
    Filter(super::filter::FilterConfig),
    Redact(super::redact::RedactConfig),
    Throttle(super::throttle::ThrottleConfig),
}

/// What a stage is built with besides its own settings.
pub struct BuildContext<'a> {
    pub at: &'a KeyPath,
    pub problems: &'a mut Problems,
    /// `logs.max_line_bytes`: the default size cap of joined messages.
    pub max_line_bytes: usize,
    /// Whether the stage counts into the process's metrics. With several sinks every sink's
    /// lane runs its own chain over the same records; only the first lane counts.
    pub counting: bool,
}

impl BuildContext<'_> {
    /// The compiled `match:` of an entry.
    pub fn matcher(&mut self, config: &MatchConfig) -> Matcher {
        Matcher::compile(config, &self.at.key("match"), self.problems)
    }

    /// `vec{labels}`, or a counter nobody exports when this chain does not count.
    pub fn counter(
        &self,
        vec: &prometheus::IntCounterVec,
        labels: &[&str],
    ) -> prometheus::IntCounter {
        counter(self.counting, vec, labels)
    }

    /// The metric label of an entry.
    pub fn label(name: &Option<String>, kind: &str) -> String {
        name.clone().unwrap_or_else(|| kind.to_string())
    }
}

impl ProcessorConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessorConfig::Multiline(_) => "multiline",
            ProcessorConfig::Json(_) => "json",
            ProcessorConfig::Logfmt(_) => "logfmt",
            ProcessorConfig::Regex(_) => "regex",
            ProcessorConfig::Filter(_) => "filter",
            ProcessorConfig::Redact(_) => "redact",
            ProcessorConfig::Throttle(_) => "throttle",
        }
    }

    /// Compiles the stage, or reports why it cannot be (then `None`).
    fn build(&self, cx: &mut BuildContext<'_>) -> Option<Box<dyn Stage>> {
        match self {
            ProcessorConfig::Multiline(c) => boxed(c.build(cx)),
            ProcessorConfig::Json(c) => boxed(c.build(ParserKind::Json, cx)),
            ProcessorConfig::Logfmt(c) => boxed(c.build(ParserKind::Logfmt, cx)),
            ProcessorConfig::Regex(c) => boxed(c.build(ParserKind::Regex, cx)),
            ProcessorConfig::Filter(c) => boxed(c.build(cx)),
            ProcessorConfig::Redact(c) => boxed(c.build(cx)),
            ProcessorConfig::Throttle(c) => boxed(c.build(cx)),
        }
    }
}

/// `vec{labels}` when `counting`, else a counter nobody exports.
pub fn counter(
    counting: bool,
    vec: &prometheus::IntCounterVec,
    labels: &[&str],
) -> prometheus::IntCounter {
    if counting {
        vec.with_label_values(labels)
    } else {
        prometheus::IntCounter::new("uncounted", "a lane that does not count")
            .expect("static metric definition")
    }
}

fn boxed(stage: Option<impl Stage + 'static>) -> Option<Box<dyn Stage>> {
    stage.map(|s| Box::new(s) as Box<dyn Stage>)
}

/// Compiles `processors` (at key path `at`) into stages, collecting every problem.
pub fn build_all(
    processors: &[ProcessorConfig],
    at: &KeyPath,
    max_line_bytes: usize,
    counting: bool,
    problems: &mut Problems,
) -> Vec<Box<dyn Stage>> {
    let mut stages = Vec::new();
    for (i, p) in processors.iter().enumerate() {
        let at = at.index(i);
        let mut cx = BuildContext {
            at: &at,
            problems: &mut *problems,
            max_line_bytes,
            counting,
        };
        if let Some(stage) = p.build(&mut cx) {
            stages.push(stage);
        }
    }
    stages
}

/// The chain for `processors`, or every problem found.
pub fn chain(
    leading: Vec<Box<dyn Stage>>,
    processors: &[ProcessorConfig],
    at: &KeyPath,
    max_line_bytes: usize,
    counting: bool,
) -> Result<Chain, InvalidConfig> {
    let mut problems = Problems::new();
    let mut stages = leading;
    stages.extend(build_all(
        processors,
        at,
        max_line_bytes,
        counting,
        &mut problems,
    ));
    problems.into_result()?;
    Ok(Chain::new(stages))
}
