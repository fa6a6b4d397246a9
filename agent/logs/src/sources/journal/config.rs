//! `logs.journal:`: which journal directories, which entries, where a first run starts.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use node_agent_core::config::{KeyPath, Problems, Validate};
use node_agent_core::duration::serde_format as duration_serde;
use node_agent_journal::JournalConfig;

/// Where a first run (no checkpoint) starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest entry still on disk.
    Head,
    /// Only entries written from now on.
    Tail,
    /// Entries logged at most this long before the start.
    Ago(Duration),
    /// Entries logged at or after this wall-clock time.
    Since(SystemTime),
}

impl StartAt {
    /// `head`, `tail`, a duration (`1h`: that long ago) or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<StartAt, String> {
        let text = text.trim();
        match text {
            "head" => return Ok(StartAt::Head),
            "tail" => return Ok(StartAt::Tail),
            _ => {}
        }
        if let Ok(d) = node_agent_core::duration::parse(text) {
            return Ok(StartAt::Ago(d));
        }
        match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(t) => {
                let micros = u64::try_from(t.timestamp_micros())
                    .map_err(|_| format!("{text:?} is before 1970"))?;
                Ok(StartAt::Since(
                    SystemTime::UNIX_EPOCH + Duration::from_micros(micros),
                ))
            }
            Err(_) => Err(format!(
                "{text:?} is not head, tail, a duration (1h: that long ago) or an RFC 3339 time"
            )),
        }
    }

    /// The wall-clock time to seek to, µs since the epoch (`None`: head or tail).
    pub fn realtime_usec(&self, now: SystemTime) -> Option<u64> {
        let at = match *self {
            StartAt::Head | StartAt::Tail => return None,
            StartAt::Ago(d) => now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
            StartAt::Since(t) => t,
        };
        Some(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }
}

impl<'de> Deserialize<'de> for StartAt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        StartAt::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// `logs.journal:` of the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSourceConfig {
    /// Read the journal. Unset: on when one of `directories` exists at startup (decided
    /// by [`crate::run`]; code that builds a config must say `Some(true)`).
    pub enabled: Option<bool>,
    /// Journal roots; `<machine-id>/` subdirectories included. In a DaemonSet, read-only
    /// hostPaths.
    pub directories: Vec<PathBuf>,
    /// Only entries of these units (`kubelet` means `kubelet.service`)…
    pub include_units: Vec<String>,
    /// …never entries of these.
    pub exclude_units: Vec<String>,
    /// Only entries with these `SYSLOG_IDENTIFIER`s (adds to `include_units`).
    pub include_identifiers: Vec<String>,
    pub exclude_identifiers: Vec<String>,
    /// With includes set, also the kernel's messages (`_TRANSPORT=kernel`).
    pub include_kernel: bool,
    /// Never the kernel's messages.
    pub exclude_kernel: bool,
    /// Where a first run (no checkpoint) starts: `head`, `tail`, a duration (`1h`: that
    /// long ago) or an RFC 3339 time. Later runs resume after the checkpointed cursor.
    pub start: StartAt,
    /// Also put every other journal field into `fields`, under its journal name.
    pub all_fields: bool,
    /// Fields larger than this (after decompression) are dropped and counted.
    pub max_field_bytes: usize,
    /// Entries with more fields are skipped and counted.
    pub max_fields: usize,
    /// Journal files open at once.
    pub max_files: usize,
    /// How often the journal is checked for new entries and files while the kernel's
    /// file watch is unavailable; with it, the fallback period is ten times this.
    #[serde(deserialize_with = "duration_serde::deserialize")]
    pub poll_interval: Duration,
}

impl Default for JournalSourceConfig {
    fn default() -> Self {
        let reader = JournalConfig::default();
        Self {
            enabled: None,
            directories: reader.directories,
            include_units: Vec::new(),
            exclude_units: Vec::new(),
            include_identifiers: Vec::new(),
            exclude_identifiers: Vec::new(),
            include_kernel: false,
            exclude_kernel: false,
            // Like Alloy's max_age: a first install on a long-running node ships the last
            // hour, not months (which Loki would reject as too old anyway); a fresh node's
            // boot is within it.
            start: StartAt::Ago(Duration::from_secs(3600)),
            all_fields: false,
            max_field_bytes: reader.max_field_bytes,
            max_fields: reader.max_fields,
            max_files: reader.max_files,
            poll_interval: Duration::from_millis(500),
        }
    }
}

impl JournalSourceConfig {
    /// The reader's own configuration.
    pub fn reader(&self) -> JournalConfig {
        JournalConfig {
            directories: self.directories.clone(),
            include_units: self.include_units.clone(),
            exclude_units: self.exclude_units.clone(),
            include_identifiers: self.include_identifiers.clone(),
            exclude_identifiers: self.exclude_identifiers.clone(),
            include_kernel: self.include_kernel,
            exclude_kernel: self.exclude_kernel,
            max_field_bytes: self.max_field_bytes,
            max_fields: self.max_fields,
            max_files: self.max_files,
        }
    }

    /// Whether the source runs: as configured, or (unset) when a directory exists.
    pub fn resolve_enabled(&mut self) -> bool {
        *self
            .enabled
            .get_or_insert_with(|| self.directories.iter().any(|d| d.is_dir()))
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled == Some(true)
    }
}

impl Validate for JournalSourceConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        if let Err(errors) = self.reader().validate("") {
            for e in errors {
                // The reader names keys relative to its section: ".directories[1]".
                let key = e.key.trim_start_matches('.');
                problems.add(&key_path(at, key), e.message);
            }
        }
        problems.check(
            !self.poll_interval.is_zero(),
            &at.key("poll_interval"),
            "must be greater than 0",
        );
    }
}

/// The key path of a reader key (`directories[1]`) under `at`.
fn key_path(at: &KeyPath, key: &str) -> KeyPath {
    match key.split_once('[') {
        Some((name, rest)) => match rest.trim_end_matches(']').parse::<usize>() {
            Ok(i) => at.key(name).index(i),
            Err(_) => at.key(key),
        },
        None => at.key(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(StartAt::parse("head"), Ok(StartAt::Head));
        assert_eq!(StartAt::parse("tail"), Ok(StartAt::Tail));
        assert_eq!(
            StartAt::parse("2h"),
            Ok(StartAt::Ago(Duration::from_secs(7200)))
        );
        let since = StartAt::parse("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(
            since.realtime_usec(SystemTime::now()),
            Some(1_767_323_045_000_000)
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(
            StartAt::Ago(Duration::from_secs(40)).realtime_usec(now),
            Some(60_000_000)
        );
        assert_eq!(
            StartAt::Ago(Duration::from_secs(400)).realtime_usec(now),
            Some(0)
        );
        assert!(StartAt::parse("yesterday").is_err());
        assert!(StartAt::parse("1900-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn yaml_defaults_and_key_paths() {
        let c: JournalSourceConfig = serde_yaml_ng::from_str(
            "include_units: [kubelet, containerd]\ninclude_kernel: true\nstart: head\n",
        )
        .unwrap();
        assert_eq!(c.start, StartAt::Head);
        assert_eq!(c.enabled, None);
        assert_eq!(c.directories.len(), 2);
        c.validated().unwrap();
        assert!(serde_yaml_ng::from_str::<JournalSourceConfig>("unit: x\n").is_err());
        assert!(serde_yaml_ng::from_str::<JournalSourceConfig>("start: never\n").is_err());

        let bad = JournalSourceConfig {
            directories: vec!["/ok".into(), "relative".into()],
            include_units: vec!["kubelet".into()],
            exclude_units: vec!["kubelet.service".into()],
            poll_interval: Duration::ZERO,
            ..JournalSourceConfig::default()
        };
        let text = bad.validated().unwrap_err().to_string();
        assert!(
            text.contains("directories[1]: must be an absolute path"),
            "{text}"
        );
        assert!(
            text.contains("include_units[0]: is also in exclude_units"),
            "{text}"
        );
        assert!(text.contains("poll_interval"), "{text}");
    }

    #[test]
    fn unset_enabled_follows_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        let mut present = JournalSourceConfig {
            directories: vec![dir.path().join("missing"), dir.path().to_path_buf()],
            ..JournalSourceConfig::default()
        };
        assert!(!present.is_enabled());
        assert!(present.resolve_enabled());
        assert!(present.is_enabled());
        let mut absent = JournalSourceConfig {
            directories: vec![dir.path().join("missing")],
            ..JournalSourceConfig::default()
        };
        assert!(!absent.resolve_enabled());
        let mut forced = JournalSourceConfig {
            enabled: Some(true),
            ..absent.clone()
        };
        assert!(forced.resolve_enabled());
    }
}
