//! Parses messages that are JSON objects into the record's `fields` (`type: json` in
//! `logs.processors`, and the older `logs.parse_json: true`). A message that is not a JSON
//! object is shipped as it is.

use serde::Deserialize;

use node_agent_core::record::LogRecord;

use super::Stage;
use super::config::BuildContext;
use super::matcher::{MatchConfig, Matcher};

/// `type: json`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JsonConfig {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
}

impl JsonConfig {
    pub fn build(&self, cx: &mut BuildContext<'_>) -> Option<ParseJson> {
        Some(ParseJson {
            matcher: cx.matcher(&self.matcher),
        })
    }
}

/// The JSON parser stage.
#[derive(Debug, Default)]
pub struct ParseJson {
    matcher: Matcher,
}

impl Stage for ParseJson {
    fn name(&self) -> &'static str {
        "json"
    }

    fn process(&mut self, mut record: LogRecord, out: &mut Vec<LogRecord>) {
        if !record.malformed
            && record.message.starts_with('{')
            && self.matcher.matches(&record.source)
        {
            record.fields = serde_json::from_str(&record.message).ok();
        }
        out.push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::record;
    use super::*;

    #[test]
    fn objects_become_fields_and_the_rest_passes() {
        let mut stage = ParseJson::default();
        let mut out = Vec::new();
        stage.process(record(0, r#"{"level":"info","n":1}"#), &mut out);
        stage.process(record(1, "plain text"), &mut out);
        stage.process(record(2, "{broken"), &mut out);
        assert_eq!(out.len(), 3);
        let fields = out[0].fields.as_ref().expect("parsed");
        assert_eq!(fields["level"], "info");
        assert!(out[1].fields.is_none() && out[2].fields.is_none());
        assert_eq!(out[2].message, "{broken");
    }
}
