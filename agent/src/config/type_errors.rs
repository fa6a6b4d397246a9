//! Every type error of a config file, not only the first: serde stops at the first value
//! it cannot deserialize, so a file with three mistakes would need three runs of
//! `check-config` to find them. Only used once the normal parse has failed.
//!
//! The document is read into a [`Value`] and deserialized again piece by piece: each
//! section on its own, each entry of `logs.processors` and `sinks` on its own, and within a
//! mapping each key on its own (with the entry's `type`, so tagged entries still resolve),
//! which works wherever the other keys have defaults. What failed is pruned; the rest is
//! deserialized as a whole and validated, so the listing also has the validation problems
//! of the parts that were well typed.

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use node_agent_core::config::{KeyPath, Problem, Problems, Validate};
use node_agent_handover::HandoverConfig;
use node_agent_kube::KubeConfig;
use node_agent_logs::LogsConfig;
use node_agent_logs::stages::config::ProcessorConfig;
use node_agent_security::config::SecurityConfig;
use node_agent_sinks::SinkConfig;
use node_agent_syscalls::SyscallsConfig;

use super::FileConfig;

/// Every problem of `text` (type errors, then validation problems of what was well
/// typed), or `None` when it is not YAML at all (the caller's syntax error says where).
pub fn collect(text: &str) -> Option<Problems> {
    let value: Value = serde_yaml_ng::from_str(text).ok()?;
    let mut walk = Walk::default();
    let pruned = walk.top(&value);
    let mut problems = Problems::new();
    for Problem { path, message } in std::mem::take(&mut walk.problems) {
        problems.add(&path, message);
    }
    if let Some(pruned) = pruned
        && let Ok(config) = serde_yaml_ng::from_value::<FileConfig>(pruned)
    {
        let mut validation = Problems::new();
        config.validate(&KeyPath::root(), &mut validation);
        for p in validation.iter() {
            problems.add(&walk.original_path(&p.path), p.message.clone());
        }
    }
    Some(problems)
}

/// Deserializes `value` as `T`; on error, the key path inside `value` (empty at its root)
/// and the message.
fn attempt<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

/// `at` followed by a path from serde_path_to_error (`a.b[2].c`).
fn join(at: &KeyPath, inner: &str) -> KeyPath {
    if inner.is_empty() {
        return at.clone();
    }
    let text = at.as_str();
    let sep = if text.is_empty() || inner.starts_with('[') {
        ""
    } else {
        "."
    };
    KeyPath::root().key(&format!("{text}{sep}{inner}"))
}

fn key_name(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "?".into()),
    }
}

/// How a key of a mapping is checked: as a key of the mapping's own type, or by a
/// function that knows the key's type (sections, lists of entries).
type Child = fn(&mut Walk, &Value, &KeyPath) -> Option<Value>;

#[derive(Default)]
struct Walk {
    problems: Vec<Problem>,
    /// For each list that lost entries: its path and the original index of every entry
    /// kept, so validation problems of the pruned list name the entries of the file.
    kept: Vec<(String, Vec<usize>)>,
}

impl Walk {
    fn add(&mut self, path: KeyPath, message: String) {
        self.problems.push(Problem { path, message });
    }

    fn top(&mut self, value: &Value) -> Option<Value> {
        let children: &[(&str, Child)] = &[
            ("logs", |w, v, at| {
                w.mapping::<LogsConfig>(
                    v,
                    at,
                    &[("processors", |w, v, at| w.list::<ProcessorConfig>(v, at))],
                )
            }),
            ("sinks", |w, v, at| w.list::<SinkConfig>(v, at)),
            ("handover", |w, v, at| {
                w.mapping::<HandoverConfig>(v, at, &[])
            }),
            ("syscalls", |w, v, at| {
                w.mapping::<SyscallsConfig>(v, at, &[])
            }),
            ("kubernetes", |w, v, at| w.mapping::<KubeConfig>(v, at, &[])),
            ("security", |w, v, at| {
                w.mapping::<SecurityConfig>(v, at, &[])
            }),
        ];
        self.mapping::<FileConfig>(value, &KeyPath::root(), children)
    }

    /// Checks a mapping of type `T` key by key; returns it without the keys that failed
    /// (`None` when it cannot be split).
    fn mapping<T: DeserializeOwned>(
        &mut self,
        value: &Value,
        at: &KeyPath,
        children: &[(&str, Child)],
    ) -> Option<Value> {
        let whole = attempt::<T>(value);
        let Value::Mapping(map) = value else {
            if let Err((path, message)) = whole {
                self.add(join(at, &path), message);
                return None;
            }
            return Some(value.clone());
        };
        if whole.is_ok() && children.is_empty() {
            return Some(value.clone());
        }
        // A tagged entry (`type: json`) keeps its tag in every trial.
        let tag = Value::String("type".into());
        let mut base = Mapping::new();
        if let Some(t) = map.get(&tag) {
            base.insert(tag.clone(), t.clone());
        }
        if let Err((path, message)) = attempt::<T>(&Value::Mapping(base.clone())) {
            // Required keys, or an unknown `type`: the entry fails as one.
            let (path, message) = whole.err().unwrap_or((path, message));
            self.add(join(at, &path), message);
            return None;
        }
        let before = self.problems.len();
        let mut pruned = base.clone();
        for (key, v) in map {
            if *key == tag {
                continue;
            }
            let name = key_name(key);
            let key_at = at.key(&name);
            if let Some((_, child)) = children.iter().find(|(n, _)| *n == name) {
                if let Some(v) = child(self, v, &key_at) {
                    pruned.insert(key.clone(), v);
                }
                continue;
            }
            let mut trial = base.clone();
            trial.insert(key.clone(), v.clone());
            match attempt::<T>(&Value::Mapping(trial)) {
                Ok(_) => {
                    pruned.insert(key.clone(), v.clone());
                }
                Err((path, message)) => {
                    let path = if path.is_empty() {
                        key_at
                    } else {
                        join(at, &path)
                    };
                    self.add(path, message);
                }
            }
        }
        if let Err((path, message)) = whole
            && self.problems.len() == before
        {
            // Only the combination fails: say so rather than nothing.
            self.add(join(at, &path), message);
            return None;
        }
        Some(Value::Mapping(pruned))
    }

    /// Checks a list of entries of type `T` one by one; returns the good ones.
    fn list<T: DeserializeOwned>(&mut self, value: &Value, at: &KeyPath) -> Option<Value> {
        let Value::Sequence(items) = value else {
            if let Err((path, message)) = attempt::<Vec<T>>(value) {
                self.add(join(at, &path), message);
                return None;
            }
            return Some(value.clone());
        };
        let mut kept = Vec::new();
        let mut good = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(v) = self.mapping::<T>(item, &at.index(i), &[])
                && attempt::<T>(&v).is_ok()
                && v == *item
            {
                kept.push(i);
                good.push(v);
            }
        }
        if kept.len() < items.len() {
            self.kept.push((at.as_str().to_string(), kept));
        }
        Some(Value::Sequence(good))
    }

    /// A validation problem's path in the pruned document → the same place in the file.
    fn original_path(&self, path: &KeyPath) -> KeyPath {
        let text = path.as_str();
        for (list, kept) in &self.kept {
            let Some(rest) = text
                .strip_prefix(list.as_str())
                .and_then(|r| r.strip_prefix('['))
            else {
                continue;
            };
            let Some((index, tail)) = rest.split_once(']') else {
                continue;
            };
            if let Some(original) = index.parse::<usize>().ok().and_then(|j| kept.get(j)) {
                return KeyPath::root().key(&format!("{list}[{original}]{tail}"));
            }
        }
        path.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(text: &str) -> Vec<String> {
        collect(text)
            .expect("YAML")
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn every_type_error_is_listed_with_its_key_path() {
        let got = listed(
            "logs:
  batch_max_records: lots
  checkpoint_interval: [1]
  processors:
    - type: json
    - type: multiline
      max_lines: many
      flush_timeout: {a: 1}
    - type: sed
    - type: filter
      match: {pod: \"/[/\"}
sinks:
  - type: loki
    url: 7
  - type: file
    path: /tmp/x
    bogus_field: 1
handover:
  lock_file: [a]
extra_section: 1
",
        );
        let text = got.join("\n");
        for want in [
            "logs.batch_max_records: invalid type",
            "logs.checkpoint_interval: ",
            "logs.processors[1].max_lines: invalid type",
            "logs.processors[1].flush_timeout: ",
            "logs.processors[2].type: unknown variant `sed`",
            "sinks[0].url: invalid type: integer",
            "sinks[1]: unknown field `bogus_field`",
            "handover.lock_file: invalid type",
            "extra_section: unknown field `extra_section`",
            // Validation of what was well typed still runs, at the file's indices.
            "logs.processors[3].match.pod: invalid regex",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
        assert_eq!(got.len(), 10, "{text}");
    }

    #[test]
    fn a_valid_document_has_no_problems_and_bad_yaml_is_left_to_the_parser() {
        assert!(
            collect("logs:\n  processors: [{type: json}]\n")
                .unwrap()
                .is_empty()
        );
        assert!(collect("logs: [unclosed").is_none());
    }
}
