//! The agent's own log output (tracing to stderr), as `--log.level` and `--log.format` say:
//! logfmt (`ts=… level=… msg=… key=value`, what node_exporter's go-kit logger prints) or
//! JSON lines.
//!
//! The logfmt formatter is ours: `tracing-logfmt` names the message `message=` and the
//! keys cannot be renamed, while node_exporter (and log queries written for it) use `msg=`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.level)
        .map_err(|e| anyhow::anyhow!("--log.level {:?}: {e}", config.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("installing the tracing subscriber: {e}"))
}

/// `ts=<RFC 3339> level=<level> caller=<module> msg=<message> key=value…`, one line per event.
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let level = meta.level().as_str().to_ascii_lowercase();
        let mut line = format!("ts={ts} level={level} caller={}", meta.target());
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(msg) = &fields.message {
            line.push_str(" msg=");
            push_value(&mut line, msg);
        }
        line.push_str(&fields.rest);
        writeln!(writer, "{line}")
    }
}

/// The message apart, the other fields as ` key=value` pairs.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
            return;
        }
        self.rest.push(' ');
        self.rest.push_str(field.name());
        self.rest.push('=');
        push_value(&mut self.rest, value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, &format!("{value:?}"));
    }
}

/// A logfmt value: bare when it has no space, quote, `=` or control character; otherwise
/// quoted with `"` and `\` escaped (as go-logfmt does).
fn push_value(out: &mut String, value: &str) {
    let bare = !value.is_empty()
        && !value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_only_when_needed() {
        let mut s = String::new();
        push_value(&mut s, "plain");
        s.push(' ');
        push_value(&mut s, "two words");
        s.push(' ');
        push_value(&mut s, "say \"hi\"\n");
        s.push(' ');
        push_value(&mut s, "");
        assert_eq!(s, r#"plain "two words" "say \"hi\"\n" """#);
    }

    #[test]
    fn events_print_as_logfmt() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .event_format(Logfmt)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(sink = "loki", retry_in = ?std::time::Duration::from_millis(50), "delivery failed: 503");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let line = text.trim_end();
        assert!(line.starts_with("ts=20"), "{line}");
        assert!(
            line.ends_with(
                r#" level=warn caller=node_agent::logging::tests msg="delivery failed: 503" sink=loki retry_in=50ms"#
            ),
            "{line}"
        );
    }
}
