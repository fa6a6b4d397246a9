//! Docker json-file lines: `{"log":"text\n","stream":"stdout","time":"<RFC3339Nano>"}`.
//! A `log` value without its trailing `\n` is a partial (docker splits at 16 KiB).

use serde::Deserialize;

use node_agent_core::record::Stream;

/// One decoded docker line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerLine {
    pub timestamp_nanos: i64,
    pub stream: Stream,
    pub partial: bool,
    /// The text without the trailing newline.
    pub message: String,
}

#[derive(Deserialize)]
struct Raw {
    log: String,
    stream: String,
    time: String,
}

/// Parses one line (without its `\n`); `None` when it is not a docker json-file entry.
pub fn parse(line: &[u8]) -> Option<DockerLine> {
    let raw: Raw = serde_json::from_slice(line).ok()?;
    let stream = match raw.stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let timestamp_nanos = super::cri::parse_timestamp(raw.time.as_bytes())?;
    let mut message = raw.log;
    let partial = !message.ends_with('\n');
    if !partial {
        message.pop();
    }
    Some(DockerLine {
        timestamp_nanos,
        stream,
        partial,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_partial_entries() {
        let l =
            parse(br#"{"log":"hello \"x\"\n","stream":"stderr","time":"2019-01-01T00:00:00.5Z"}"#)
                .unwrap();
        assert_eq!(l.message, "hello \"x\"");
        assert_eq!(l.stream, Stream::Stderr);
        assert!(!l.partial);
        assert_eq!(l.timestamp_nanos, 1_546_300_800_500_000_000);
        let l =
            parse(br#"{"log":"part","stream":"stdout","time":"2019-01-01T00:00:00Z"}"#).unwrap();
        assert!(l.partial);
        assert_eq!(l.message, "part");
    }

    #[test]
    fn rejects_non_docker() {
        for bad in [
            &br#"{"log":"x\n","stream":"stdin","time":"2019-01-01T00:00:00Z"}"#[..],
            br#"{"log":"x\n","stream":"stdout","time":"noon"}"#,
            br#"{"msg":"x"}"#,
            b"{not json",
        ] {
            assert_eq!(parse(bad), None);
        }
    }
}
