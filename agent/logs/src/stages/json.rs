//! Parses messages that are JSON objects into the record's `fields` (the `logs.parse_json`
//! setting). A message that is not a JSON object is shipped as it is.

use node_agent_core::record::LogRecord;

use super::Stage;

/// The JSON parser stage.
#[derive(Debug, Default)]
pub struct ParseJson;

impl Stage for ParseJson {
    fn name(&self) -> &'static str {
        "parse_json"
    }

    fn process(&mut self, mut record: LogRecord, out: &mut Vec<LogRecord>) {
        if !record.malformed && record.message.starts_with('{') {
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
        let mut stage = ParseJson;
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
