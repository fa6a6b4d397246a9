//! `logs.processors`: the ordered list of stages, each `{type: …, match: …, …}`.
//!
//! ```yaml
//! logs:
//!   processors:
//!     - type: multiline            # join stack traces (see stages::multiline)
//!       detector: auto
//!     - type: json                 # parsers: json, logfmt, regex (see stages::parse)
//!       match: {namespace: prod-*}
//! ```
//!
//! Validation compiles every entry (regexes, globs, formats) and reports each problem at its
//! key path, e.g. `logs.processors[2].pattern: invalid regex …`; building the chain later
//! compiles them again from the validated config.

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
}

/// What a stage is built with besides its own settings.
pub struct BuildContext<'a> {
    pub at: &'a KeyPath,
    pub problems: &'a mut Problems,
    /// `logs.max_line_bytes`: the default size cap of joined messages.
    pub max_line_bytes: usize,
}

impl BuildContext<'_> {
    /// The compiled `match:` of an entry.
    pub fn matcher(&mut self, config: &MatchConfig) -> Matcher {
        Matcher::compile(config, &self.at.key("match"), self.problems)
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
        }
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
    problems: &mut Problems,
) -> Vec<Box<dyn Stage>> {
    let mut stages = Vec::new();
    for (i, p) in processors.iter().enumerate() {
        let at = at.index(i);
        let mut cx = BuildContext {
            at: &at,
            problems: &mut *problems,
            max_line_bytes,
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
) -> Result<Chain, InvalidConfig> {
    let mut problems = Problems::new();
    let mut stages = leading;
    stages.extend(build_all(processors, at, max_line_bytes, &mut problems));
    problems.into_result()?;
    Ok(Chain::new(stages))
}
