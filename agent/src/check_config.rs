//! `node-agent check-config FILE` (or `--check-config FILE`): validates a config file and
//! prints the effective log pipeline (sources, processors in order with their `match:`,
//! sinks with their routes). It only reads the file: no lock, no socket, no state dir.
//! Exit 0 when valid, 2 with every problem (each at its key path) when not.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use node_agent_core::route::RouteMatch;
use node_agent_logs::LogsConfig;
use node_agent_logs::stages::config::ProcessorConfig;
use node_agent_logs::stages::matcher::{MatchConfig, Patterns};
use node_agent_sinks::config::SinkConfig;

use crate::config::FileConfig;

/// The file to check when the arguments ask for it: `check-config FILE` as the first
/// argument, or `--check-config FILE` / `--check-config=FILE` anywhere.
/// `Some(Err)` when the form is given without a file.
pub fn requested(args: &[OsString]) -> Option<Result<PathBuf, String>> {
    let file_at = |i: usize| {
        args.get(i)
            .map(PathBuf::from)
            .ok_or_else(|| "check-config needs a FILE argument".to_string())
    };
    if args.get(1).is_some_and(|a| a == "check-config") {
        return Some(file_at(2));
    }
    for (i, arg) in args.iter().enumerate().skip(1) {
        if arg == "--check-config" {
            return Some(file_at(i + 1));
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--check-config=")) {
            return Some(if path.is_empty() {
                file_at(usize::MAX)
            } else {
                Ok(PathBuf::from(path))
            });
        }
    }
    None
}

/// Runs the check: the pipeline on stdout when valid, every problem on stderr when not.
pub fn run(path: &Path) -> ExitCode {
    match FileConfig::load(path) {
        Ok(config) => {
            print!("{}", describe(path, &config));
            ExitCode::SUCCESS
        }
        Err(err) => {
            // `InvalidConfig` renders one problem a line, each with its key path.
            eprintln!("node-agent: invalid configuration: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The effective pipeline, readable.
pub fn describe(path: &Path, config: &FileConfig) -> String {
    let mut out = String::new();
    let logs = &config.logs;
    let _ = writeln!(out, "configuration {} is valid", path.display());
    let _ = writeln!(out, "\nsources:");
    describe_sources(&mut out, logs);
    let _ = writeln!(out, "\nprocessors (in order):");
    let mut n = 0;
    if logs.enabled {
        let _ = writeln!(out, "  {}. enrich (pod metadata)  match: all", next(&mut n));
        if logs.parse_json {
            let _ = writeln!(
                out,
                "  {}. json (logs.parse_json)  match: all",
                next(&mut n)
            );
        }
        for (i, p) in logs.processors.iter().enumerate() {
            describe_processor(&mut out, next(&mut n), i, p);
        }
        let _ = writeln!(
            out,
            "  then batches of {} records / {} bytes / {:?}",
            logs.batch_max_records, logs.batch_max_bytes, logs.batch_timeout
        );
    } else {
        let _ = writeln!(out, "  (none: logs are off)");
    }
    let _ = writeln!(out, "\nsinks:");
    if config.sinks.0.is_empty() {
        let _ = writeln!(out, "  1. stdout (default)  route: all records");
    }
    for (i, sink) in config.sinks.0.iter().enumerate() {
        let route = sink
            .route()
            .map(describe_route)
            .unwrap_or_else(|| "all records".into());
        let _ = writeln!(
            out,
            "  {}. {} ({})  route: {route}",
            i + 1,
            sink.name(),
            sink_type(sink)
        );
    }
    out
}

fn next(n: &mut usize) -> usize {
    *n += 1;
    *n
}

fn describe_sources(out: &mut String, logs: &LogsConfig) {
    if !logs.enabled {
        let _ = writeln!(out, "  (none: logs.enabled is false)");
        return;
    }
    let mut ns = String::new();
    if !logs.namespaces_include.is_empty() {
        let _ = write!(ns, ", namespaces {:?}", logs.namespaces_include);
    }
    if !logs.namespaces_exclude.is_empty() {
        let _ = write!(ns, ", not namespaces {:?}", logs.namespaces_exclude);
    }
    let _ = writeln!(
        out,
        "  pod: container logs under {}{ns}",
        logs.pods_dir.display()
    );
    let j = &logs.journal;
    let state = match j.enabled {
        Some(true) => "on",
        Some(false) => "off",
        None => "on if a journal directory exists",
    };
    let mut units = String::new();
    if !j.include_units.is_empty() {
        let _ = write!(units, ", units {:?}", j.include_units);
    }
    let _ = writeln!(out, "  journal: {state}{units}");
    match &logs.files {
        None => {
            let _ = writeln!(out, "  file: /var/log/*.log when there is no pods dir");
        }
        Some(entries) if entries.is_empty() => {
            let _ = writeln!(out, "  file: none");
        }
        Some(entries) => {
            for e in entries {
                let kind = match e.format {
                    node_agent_logs::sources::files::FileFormat::Audit => "audit",
                    _ => "file",
                };
                let _ = write!(out, "  {kind}: {:?} as {:?}", e.paths, e.format);
                if !e.exclude.is_empty() {
                    let _ = write!(out, ", except {:?}", e.exclude);
                }
                let _ = writeln!(out);
            }
        }
    }
    let _ = writeln!(out, "  positions in {}", logs.state_dir.display());
}

fn describe_processor(out: &mut String, n: usize, index: usize, p: &ProcessorConfig) {
    let (name, matcher) = name_and_match(p);
    let label = match name {
        Some(name) => format!("{} {name:?}", p.kind()),
        None => p.kind().to_string(),
    };
    let _ = writeln!(
        out,
        "  {n}. {label} (logs.processors[{index}])  match: {}",
        describe_match(matcher)
    );
    // The settings as parsed, defaults filled in; `name` and `match` are printed above.
    let _ = writeln!(out, "       {}", settings(p));
}

fn settings(p: &ProcessorConfig) -> String {
    match p {
        ProcessorConfig::Multiline(c) => format!("{c:?}"),
        ProcessorConfig::Json(c) | ProcessorConfig::Logfmt(c) | ProcessorConfig::Regex(c) => {
            format!("{c:?}")
        }
        ProcessorConfig::Filter(c) => format!("{c:?}"),
        ProcessorConfig::Redact(c) => format!("{c:?}"),
        ProcessorConfig::Throttle(c) => format!("{c:?}"),
    }
}

fn name_and_match(p: &ProcessorConfig) -> (Option<&str>, &MatchConfig) {
    match p {
        ProcessorConfig::Multiline(c) => (c.name.as_deref(), &c.matcher),
        ProcessorConfig::Json(c) | ProcessorConfig::Logfmt(c) | ProcessorConfig::Regex(c) => {
            (c.name.as_deref(), &c.matcher)
        }
        ProcessorConfig::Filter(c) => (c.name.as_deref(), &c.matcher),
        ProcessorConfig::Redact(c) => (c.name.as_deref(), &c.matcher),
        ProcessorConfig::Throttle(c) => (c.name.as_deref(), &c.matcher),
    }
}

fn patterns(p: &Patterns) -> String {
    match p {
        Patterns::One(s) => s.clone(),
        Patterns::Any(v) => format!("[{}]", v.join(", ")),
    }
}

fn describe_match(m: &MatchConfig) -> String {
    let fixed = [
        ("source", &m.source),
        ("namespace", &m.namespace),
        ("pod", &m.pod),
        ("container", &m.container),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v)));
    let labels = m.labels.iter().map(|(k, v)| (format!("labels.{k}"), v));
    conjunction(fixed.chain(labels), patterns, "all")
}

fn describe_route(m: &RouteMatch) -> String {
    let globs = |g: &node_agent_core::route::Globs| match g.0.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let fixed = [
        ("source", &m.source),
        ("namespace", &m.namespace),
        ("pod", &m.pod),
        ("container", &m.container),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v)));
    let labels = m.labels.iter().map(|(k, v)| (format!("labels.{k}"), v));
    let fields = m.fields.iter().map(|(k, v)| (format!("fields.{k}"), v));
    conjunction(fixed.chain(labels).chain(fields), globs, "all records")
}

/// `key=value and …` over every condition, or `all` when there is none.
fn conjunction<'a, T: 'a>(
    conditions: impl Iterator<Item = (String, &'a T)>,
    render: impl Fn(&T) -> String,
    all: &str,
) -> String {
    let parts: Vec<String> = conditions
        .map(|(k, v)| format!("{k}={}", render(v)))
        .collect();
    if parts.is_empty() {
        all.into()
    } else {
        parts.join(" and ")
    }
}

fn sink_type(s: &SinkConfig) -> &'static str {
    match s {
        SinkConfig::Stdout(_) => "stdout",
        SinkConfig::File(_) => "file",
        SinkConfig::Loki(_) => "loki",
        SinkConfig::Elasticsearch(_) => "elasticsearch",
        SinkConfig::Otlp(_) => "otlp",
    }
}
