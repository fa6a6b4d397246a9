//! Configuration reload: on SIGHUP, or when the config file's content changes (a
//! ConfigMap update swaps the file behind a symlink, which a content check sees and a
//! file watch on the old inode would not), the file is read and validated again.
//!
//! What can change at run time is the log pipeline: `logs` (sources, processors,
//! batching; not `logs.state_dir`, which the leader lock guards) and `sinks` (routes and
//! destinations). The leader applies a change by draining the running pipeline to its
//! checkpoint and starting the new one from it, the same path as a handover, so no record
//! is lost or sent twice. Anything else (handover, syscalls, command-line flags) cannot
//! be reloaded: such a change, or a file that does not parse or validate, is refused with
//! a log line and the running configuration stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::FileConfig;

/// How often the file's content is compared with what is running.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Top-level sections a reload may change; `logs.state_dir` excepted.
const RELOADABLE: &[&str] = &["logs", "sinks"];

/// Starts watching `path` (SIGHUP and content changes); the receiver always holds the
/// configuration that should run.
pub fn watch(
    path: PathBuf,
    initial: FileConfig,
    stop: CancellationToken,
) -> anyhow::Result<watch::Receiver<Arc<FileConfig>>> {
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let running_text = std::fs::read_to_string(&path).unwrap_or_default();
    let (tx, rx) = watch::channel(Arc::new(initial));
    tokio::spawn(async move {
        let mut running_text = running_text;
        let mut last_seen = running_text.clone();
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let requested = tokio::select! {
                _ = stop.cancelled() => return,
                _ = hup.recv() => true,
                _ = tick.tick() => false,
            };
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(err) => {
                    if requested {
                        tracing::error!(path = %path.display(), error = %err, "config reload refused: cannot read the file; keeping the running configuration");
                    }
                    continue;
                }
            };
            // A change is reported once, not at every poll; SIGHUP always gets an answer.
            if !requested && (text == running_text || text == last_seen) {
                continue;
            }
            last_seen = text.clone();
            if text == running_text {
                tracing::info!("config reload: the file is unchanged");
                continue;
            }
            match check(&running_text, &text) {
                Ok(config) => {
                    tracing::info!(path = %path.display(), trigger = if requested { "SIGHUP" } else { "file change" }, "config reload accepted; restarting the log pipeline from its checkpoint");
                    running_text = text;
                    if tx.send(Arc::new(config)).is_err() {
                        return;
                    }
                }
                Err(err) => tracing::error!(
                    path = %path.display(),
                    error = format!("{err:#}"),
                    "config reload refused; keeping the running configuration"
                ),
            }
        }
    });
    Ok(rx)
}

/// Validates `new` and checks that it differs from `running` only where a reload can
/// apply it.
pub fn check(running: &str, new: &str) -> anyhow::Result<FileConfig> {
    let config = FileConfig::parse(new)?;
    let fixed = |text: &str| -> anyhow::Result<serde_yaml_ng::Value> {
        let mut value: serde_yaml_ng::Value = if text.trim().is_empty() {
            serde_yaml_ng::Value::Mapping(Default::default())
        } else {
            serde_yaml_ng::from_str(text)?
        };
        // The state dir is compared as parsed (a default and its explicit spelling agree).
        let state_dir = FileConfig::parse(text)?.logs.state_dir;
        if let Some(map) = value.as_mapping_mut() {
            for key in RELOADABLE {
                map.remove(*key);
            }
            map.insert(
                "logs.state_dir".into(),
                state_dir.to_string_lossy().into_owned().into(),
            );
        }
        Ok(value)
    };
    let (before, after) = (fixed(running)?, fixed(new)?);
    if before != after {
        let (Some(b), Some(a)) = (before.as_mapping(), after.as_mapping()) else {
            anyhow::bail!("the file's top level changed shape");
        };
        let mut changed: Vec<String> = b
            .iter()
            .filter(|(k, v)| a.get(*k) != Some(*v))
            .chain(a.iter().filter(|(k, _)| !b.contains_key(*k)))
            .filter_map(|(k, _)| k.as_str().map(str::to_owned))
            .collect();
        changed.sort();
        changed.dedup();
        anyhow::bail!(
            "{} cannot change without a restart (only {} except logs.state_dir can)",
            changed.join(", "),
            RELOADABLE.join(" and ")
        );
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "logs:\n  pods_dir: /var/log/pods\nsinks:\n  - type: stdout\nhandover:\n  lock_file: /run/a.lock\n";

    #[test]
    fn pipeline_changes_are_accepted() {
        let new = "logs:\n  pods_dir: /var/log/pods\n  batch_max_records: 10\nsinks:\n  - type: file\n    path: /tmp/x.jsonl\nhandover:\n  lock_file: /run/a.lock\n";
        let config = check(BASE, new).expect("reloadable");
        assert_eq!(config.logs.batch_max_records, 10);
    }

    #[test]
    fn other_sections_and_the_state_dir_are_refused() {
        let lock = BASE.replace("/run/a.lock", "/run/b.lock");
        let err = check(BASE, &lock).unwrap_err().to_string();
        assert!(err.contains("handover cannot change"), "{err}");
        let state = BASE.replace("pods_dir: /var/log/pods", "state_dir: /tmp/elsewhere");
        let err = check(BASE, &state).unwrap_err().to_string();
        assert!(err.contains("logs.state_dir"), "{err}");
    }

    #[test]
    fn invalid_files_are_refused_with_the_key_path() {
        let err = format!(
            "{:#}",
            check(BASE, "logs:\n  batch_max_records: many\n").unwrap_err()
        );
        assert!(err.contains("logs.batch_max_records"), "{err}");
    }
}
