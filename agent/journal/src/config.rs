//! The reader's configuration as YAML sees it (the journal source embeds it), with
//! defaults and a `validate` that names the key of each error.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::file::Limits;
use crate::filter::Filter;
use crate::journal::{DEFAULT_DIRECTORIES, JournalOptions};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    /// Journal roots (machine-id subdirectories included). A DaemonSet mounts them read-only.
    pub directories: Vec<PathBuf>,
    /// Only entries of these units (`_SYSTEMD_UNIT`; `kubelet` means `kubelet.service`)…
    pub include_units: Vec<String>,
    /// …never entries of these.
    pub exclude_units: Vec<String>,
    /// Only entries with these `SYSLOG_IDENTIFIER`s (adds to `include_units`).
    pub include_identifiers: Vec<String>,
    pub exclude_identifiers: Vec<String>,
    /// Include kernel messages (`_TRANSPORT=kernel`) when includes are set.
    pub include_kernel: bool,
    /// Drop kernel messages.
    pub exclude_kernel: bool,
    /// Fields larger than this (after decompression) are dropped and counted.
    pub max_field_bytes: usize,
    /// Entries with more fields are skipped and counted.
    pub max_fields: usize,
    /// Journal files open at once.
    pub max_files: usize,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        let limits = Limits::default();
        JournalConfig {
            directories: DEFAULT_DIRECTORIES.iter().map(PathBuf::from).collect(),
            include_units: Vec::new(),
            exclude_units: Vec::new(),
            include_identifiers: Vec::new(),
            exclude_identifiers: Vec::new(),
            include_kernel: false,
            exclude_kernel: false,
            max_field_bytes: limits.max_field_size,
            max_fields: limits.max_fields,
            max_files: JournalOptions::default().max_files,
        }
    }
}

/// A configuration error at YAML key `key` (e.g. `sources.journal.directories[1]`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// The largest field cap accepted (journald's own DATA_SIZE_MAX is 768 MiB).
const MAX_FIELD_BYTES_LIMIT: usize = 256 << 20;

impl JournalConfig {
    /// Checks the settings; `at` is this config's key path (e.g. `sources.journal`).
    pub fn validate(&self, at: &str) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();
        let mut err = |key: String, message: &str| {
            errs.push(ConfigError {
                key: format!("{at}.{key}"),
                message: message.to_string(),
            })
        };
        if self.directories.is_empty() {
            err("directories".into(), "needs at least one directory");
        }
        for (i, d) in self.directories.iter().enumerate() {
            if !d.is_absolute() {
                err(format!("directories[{i}]"), "must be an absolute path");
            }
        }
        let lists = [
            ("include_units", &self.include_units),
            ("exclude_units", &self.exclude_units),
            ("include_identifiers", &self.include_identifiers),
            ("exclude_identifiers", &self.exclude_identifiers),
        ];
        for (name, list) in lists {
            for (i, v) in list.iter().enumerate() {
                if v.is_empty() || v.contains('\n') || v.contains('=') {
                    err(
                        format!("{name}[{i}]"),
                        "must be a non-empty name without '=' or newlines",
                    );
                }
            }
        }
        for (i, u) in self.include_units.iter().enumerate() {
            let n = crate::filter::normalize_unit(u);
            if self
                .exclude_units
                .iter()
                .any(|e| crate::filter::normalize_unit(e) == n)
            {
                err(format!("include_units[{i}]"), "is also in exclude_units");
            }
        }
        if self.include_kernel && self.exclude_kernel {
            err("include_kernel".into(), "conflicts with exclude_kernel");
        }
        if self.max_field_bytes == 0 || self.max_field_bytes > MAX_FIELD_BYTES_LIMIT {
            err("max_field_bytes".into(), "must be between 1 and 268435456");
        }
        if self.max_fields == 0 {
            err("max_fields".into(), "must be greater than 0");
        }
        if self.max_files == 0 {
            err("max_files".into(), "must be greater than 0");
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn filter(&self) -> Filter {
        let mut f = Filter::new()
            .include_kernel(self.include_kernel)
            .exclude_kernel(self.exclude_kernel);
        for u in &self.include_units {
            f = f.include_unit(u);
        }
        for u in &self.exclude_units {
            f = f.exclude_unit(u);
        }
        for i in &self.include_identifiers {
            f = f.include_identifier(i);
        }
        for i in &self.exclude_identifiers {
            f = f.exclude_identifier(i);
        }
        f
    }

    /// The reader options for this configuration.
    pub fn options(&self) -> JournalOptions {
        JournalOptions {
            directories: self.directories.clone(),
            filter: self.filter(),
            limits: Limits {
                // A compressed object is never larger than what it decodes to, by much.
                max_object_size: self.max_field_bytes as u64 + 4096,
                max_field_size: self.max_field_bytes,
                max_fields: self.max_fields,
            },
            max_files: self.max_files,
            ..JournalOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_yaml_round_trip() {
        let c = JournalConfig::default();
        assert_eq!(c.validate("sources.journal"), Ok(()));
        let y = serde_yaml_ng::to_string(&c).unwrap();
        let back: JournalConfig = serde_yaml_ng::from_str(&y).unwrap();
        assert_eq!(back, c);
        let partial: JournalConfig = serde_yaml_ng::from_str("include_units: [kubelet]\n").unwrap();
        assert_eq!(partial.directories, c.directories);
        assert!(serde_yaml_ng::from_str::<JournalConfig>("nope: 1\n").is_err());
    }

    #[test]
    fn errors_name_their_keys() {
        let c = JournalConfig {
            directories: vec!["relative".into()],
            include_units: vec!["kubelet".into()],
            exclude_units: vec!["kubelet.service".into(), String::new()],
            include_kernel: true,
            exclude_kernel: true,
            max_field_bytes: 0,
            ..JournalConfig::default()
        };
        let keys: Vec<String> = c
            .validate("j")
            .unwrap_err()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(
            keys,
            [
                "j.directories[0]",
                "j.exclude_units[1]",
                "j.include_units[0]",
                "j.include_kernel",
                "j.max_field_bytes"
            ]
        );
        let f = JournalConfig {
            include_units: vec!["kubelet".into()],
            ..JournalConfig::default()
        }
        .filter();
        assert!(f.accepts(Some(b"kubelet.service"), None, None));
        assert!(!f.accepts(Some(b"sshd.service"), None, None));
    }
}
