//! Where log records go. Each sink delivers a batch or says why not; the pipeline advances
//! checkpoints only after every sink said yes.
//!
//! Layout: [`config`] (what the `sinks:` entries look like, `match:` routes), [`stdout`]
//! and [`file`] (JSON lines, see [`jsonl`]), [`loki`], [`elasticsearch`] and [`otlp`] (HTTP,
//! sharing [`http`] for the client, auth, gzip, capped answers, `Retry-After`, health on
//! 401/403 and response classes, and `node_agent_core::backoff` for retries), [`values`]
//! (record values for labels, metadata and tenants), [`deadletter`] (records a receiver
//! refused for good), [`metrics`] (the `node_agent_sink_*` families).

pub mod config;
pub mod deadletter;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod jsonl;
pub mod kubernetes;
pub mod loki;
pub mod metrics;
pub mod otlp;
pub mod stdout;
pub mod values;

/// Entry points for the fuzz targets (tests/fuzz): the parsers of what receivers answer
/// are private to their sinks.
#[doc(hidden)]
pub mod fuzzing {
    /// Reads an Elasticsearch bulk response to `sent` documents: (done, retry, refused).
    pub fn es_bulk_response(body: &[u8], sent: usize) -> Result<[usize; 3], String> {
        let sent: Vec<usize> = (0..sent).collect();
        let r = super::elasticsearch::read_items(body, &sent)?;
        // Every document sent gets exactly one verdict.
        assert_eq!(r.done.len() + r.retry.len() + r.refused.len(), sent.len());
        Ok([r.done.len(), r.retry.len(), r.refused.len()])
    }

    /// Classifies an HTTP answer (Loki's error bodies, ES's) as the sinks do.
    pub fn http_response(status: u16, body: &[u8]) -> super::http::Outcome {
        super::http::classify(status, bytes::Bytes::copy_from_slice(body), None)
    }
}

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use node_agent_core::config::{KeyPath, Problems, Validate};
use node_agent_core::node::NodeIdentity;

pub use config::SinkConfig;

pub use node_agent_core::sink::{CountedFuture, DeliverFuture, Sink, SinkError};

/// The `sinks:` section of the config file.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct SinksConfig(pub Vec<SinkConfig>);

impl Validate for SinksConfig {
    /// Each entry checks itself; names must be distinct (they label metrics and files).
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let mut names = std::collections::HashSet::new();
        for (i, config) in self.0.iter().enumerate() {
            let name = config.name();
            let at = at.index(i);
            problems.take(&at, config.validate().with_context(|| format!("({name})")));
            if let Some(route) = config.route() {
                route.validate(&at.key("match"), problems);
            }
            if !names.insert(name.clone()) {
                problems.add(
                    &at,
                    format!("a second sink is named {name:?}; give each sink a distinct `name`"),
                );
            }
        }
    }
}

/// Builds every configured sink; no `sinks:` entry means the embedded default (stdout).
/// Dead letters default to [`node_agent_core::state::DEFAULT_STATE_DIR`]; see [`build_all_in`].
pub fn build_all(
    configs: &[SinkConfig],
    identity: &NodeIdentity,
) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    build_all_in(
        configs,
        identity,
        Path::new(node_agent_core::state::DEFAULT_STATE_DIR),
    )
}

/// [`build_all`] with dead letters defaulting to `<state_dir>/deadletter/<sink>.ndjson`.
pub fn build_all_in(
    configs: &[SinkConfig],
    identity: &NodeIdentity,
    state_dir: &Path,
) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    let defaults = [SinkConfig::Stdout(config::StdoutConfig::default())];
    let configs = if configs.is_empty() {
        &defaults[..]
    } else {
        configs
    };
    let mut problems = Problems::new();
    SinksConfig(configs.to_vec()).validate(&KeyPath::root().key("sinks"), &mut problems);
    problems.into_result()?;
    let mut sinks = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let name = config.name();
        let sink =
            build(config, identity, state_dir).with_context(|| format!("sinks[{i}] ({name})"))?;
        sinks.push(sink);
    }
    Ok(sinks)
}

/// Builds one sink from its (validated) config.
pub fn build(
    config: &SinkConfig,
    identity: &NodeIdentity,
    state_dir: &Path,
) -> anyhow::Result<Arc<dyn Sink>> {
    let name = config.name();
    let sink: Arc<dyn Sink> = match config {
        SinkConfig::Stdout(_) => Arc::new(stdout::StdoutSink::new(name)),
        SinkConfig::File(c) => Arc::new(file::FileSink::open(name, &c.path)?),
        SinkConfig::Loki(c) => Arc::new(loki::LokiSink::with_state_dir(
            name, c, identity, state_dir,
        )?),
        SinkConfig::Elasticsearch(c) => Arc::new(elasticsearch::ElasticsearchSink::with_state_dir(
            name, c, state_dir,
        )?),
        SinkConfig::Otlp(c) => Arc::new(otlp::OtlpSink::with_state_dir(
            name, c, identity, state_dir,
        )?),
    };
    Ok(match config.route() {
        None => sink,
        Some(route) => Arc::new(node_agent_core::sink::Routed {
            inner: sink,
            matcher: node_agent_core::route::Matcher::new(route)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_sections_are_validated_with_key_paths() {
        let configs: SinksConfig = serde_yaml_ng::from_str(
            "- {type: stdout, match: {namespace: ok}}\n\
             - {type: loki, url: 'http://l', match: {source: pods, pod: ['a[']}}\n",
        )
        .unwrap();
        let mut problems = Problems::new();
        configs.validate(&KeyPath::root().key("sinks"), &mut problems);
        let err = problems.into_result().unwrap_err().to_string();
        assert!(err.contains("sinks[1].match.source[0]"), "{err}");
        assert!(err.contains("sinks[1].match.pod[0]"), "{err}");
        assert!(!err.contains("sinks[0]"), "{err}");
        // Unknown keys inside `match:` are refused by name.
        let err = serde_yaml_ng::from_str::<SinksConfig>(
            "- {type: file, path: /x, match: {namespaces: a}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("namespaces"), "{err}");
    }

    #[test]
    fn a_sink_with_match_is_routed() {
        let state = tempfile::tempdir().unwrap();
        let configs: SinksConfig = serde_yaml_ng::from_str(
            "- {type: stdout, match: {namespace: 'team-*'}}\n- {type: stdout, name: all}\n",
        )
        .unwrap();
        let sinks = build_all_in(&configs.0, &NodeIdentity::default(), state.path()).unwrap();
        assert!(sinks[0].route().is_some());
        assert!(sinks[1].route().is_none());
        assert_eq!(sinks[0].name(), "stdout");
    }
}
