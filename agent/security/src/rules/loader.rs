//! Rules files → a compiled [`super::RuleSet`].
//!
//! Loading has two phases, as in Falco: every file is *collected* in order (definitions,
//! redefinitions, `append`, `override`), then everything is *compiled* (so a macro or list
//! may be used before it is defined, but can only be appended to after). Every error is
//! collected, not only the first, and names the file, the line of the item, the item and,
//! for conditions and outputs, the position in the text.

use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde_yaml_ng::Value as Yaml;

use super::compile::{Compiler, Definitions, Node};
use super::output::OutputTemplate;
use super::parser::{self, Expr, FieldRef, Literal, Op, Rhs};
use super::{Rule, RuleSet};
use crate::alert::Priority;

/// Largest rules file read, bytes.
pub const MAX_RULES_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most items accepted across all files (hostile input stays bounded).
pub const MAX_ITEMS: usize = 100_000;

/// One rules file.
#[derive(Debug, Clone)]
pub struct RuleSource {
    /// Shown in errors: the path, or a name such as `default.yaml`.
    pub name: String,
    pub content: String,
}

/// Where an item is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<str>,
    /// 1-based line of the item's `- ` (when it could be told).
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}", self.file, line),
            None => f.write_str(&self.file),
        }
    }
}

/// The kind of item an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Rule,
    Macro,
    List,
    Item,
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ItemKind::Rule => "rule",
            ItemKind::Macro => "macro",
            ItemKind::List => "list",
            ItemKind::Item => "item",
        })
    }
}

/// The text an error points into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// `condition`, `output`, or `exception NAME`.
    pub what: String,
    pub text: String,
    /// Byte position in `text`.
    pub pos: usize,
}

/// One load error (or warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub location: Location,
    pub kind: ItemKind,
    /// The item's name, when it has one.
    pub name: Option<String>,
    pub message: String,
    pub excerpt: Option<Excerpt>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        match &self.name {
            Some(name) => write!(f, "{} '{}': ", self.kind, name)?,
            None if self.kind != ItemKind::Item => write!(f, "{}: ", self.kind)?,
            None => {}
        }
        match &self.excerpt {
            None => f.write_str(&self.message),
            Some(ex) => {
                let pos = ex.pos.min(ex.text.len());
                let prefix = ex.text.get(..pos).unwrap_or(&ex.text);
                // Column of the position in its line, counted in characters.
                let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
                let column = prefix[line_start..].chars().count();
                let line_end = ex.text[line_start..]
                    .find('\n')
                    .map_or(ex.text.len(), |i| line_start + i);
                let line = &ex.text[line_start..line_end];
                write!(
                    f,
                    "{}: {} at position {}\n    {}\n    {}^",
                    ex.what,
                    self.message,
                    ex.text.get(..pos).map_or(pos, |p| p.chars().count()) + 1,
                    line,
                    " ".repeat(column)
                )
            }
        }
    }
}

/// Every error of a load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s) loading rules", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ListDef {
    items: Vec<Literal>,
    loc: Location,
}

#[derive(Debug, Clone)]
struct MacroDef {
    condition: String,
    loc: Location,
}

#[derive(Debug, Clone)]
enum ExFields {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone)]
struct ExceptionDef {
    name: String,
    fields: Option<ExFields>,
    comps: Option<Vec<String>>,
    values: Vec<Yaml>,
}

#[derive(Debug, Clone)]
struct RuleDef {
    desc: String,
    condition: String,
    output: String,
    priority: Priority,
    tags: Vec<String>,
    enabled: bool,
    exceptions: Vec<ExceptionDef>,
    source: String,
    skip_if_unknown_filter: bool,
    warn_evttypes: bool,
    loc: Location,
}

/// Definitions in order of first definition.
#[derive(Debug)]
struct Ordered<T> {
    index: FxHashMap<String, usize>,
    items: Vec<(String, T)>,
}

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered {
            index: FxHashMap::default(),
            items: Vec::new(),
        }
    }
}

impl<T> Ordered<T> {
    fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        let i = *self.index.get(name)?;
        self.items.get_mut(i).map(|(_, t)| t)
    }

    /// Defines or redefines (in place).
    fn put(&mut self, name: &str, value: T) {
        match self.index.get(name) {
            Some(&i) => {
                if let Some(slot) = self.items.get_mut(i) {
                    slot.1 = value;
                }
            }
            None => {
                self.index.insert(name.to_string(), self.items.len());
                self.items.push((name.to_string(), value));
            }
        }
    }
}

/// Collected items of all files, then compiled.
#[derive(Default)]
pub struct Loader {
    lists: Ordered<ListDef>,
    macros: Ordered<MacroDef>,
    rules: Ordered<RuleDef>,
    errors: Vec<LoadError>,
    warnings: Vec<LoadError>,
    items: usize,
}

fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn key<'y>(map: &'y serde_yaml_ng::Mapping, name: &str) -> Option<&'y Yaml> {
    map.get(Yaml::String(name.to_string()))
}

/// 1-based lines where top-level sequence items start (`- ` at column 0): the YAML
/// library does not report positions of values, and rules files are written in block
/// style, so this finds each item's line. If the count does not match the items (flow
/// style), lines are left out.
fn item_lines(content: &str) -> Vec<usize> {
    content
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "-" || l.starts_with("- ") || l.starts_with("-\t"))
        .map(|(i, _)| i + 1)
        .collect()
}

/// The keys each kind of item may have (others are warned about).
const RULE_KEYS: &[&str] = &[
    "rule",
    "desc",
    "condition",
    "output",
    "priority",
    "tags",
    "enabled",
    "exceptions",
    "append",
    "override",
    "source",
    "skip-if-unknown-filter",
    "warn_evttypes",
    "capture",
    "capture_duration",
];
const MACRO_KEYS: &[&str] = &["macro", "condition", "append", "override", "source"];
const LIST_KEYS: &[&str] = &["list", "items", "append", "override"];

/// How an item changes an earlier definition.
enum Change {
    Define,
    Append,
    Override(Vec<(String, bool)>),
}

impl Loader {
    pub fn new() -> Loader {
        Loader::default()
    }

    fn error(&mut self, loc: &Location, kind: ItemKind, name: Option<&str>, message: String) {
        self.errors.push(LoadError {
            location: loc.clone(),
            kind,
            name: name.map(str::to_string),
            message,
            excerpt: None,
        });
    }

    fn warn(&mut self, loc: &Location, kind: ItemKind, name: Option<&str>, message: String) {
        self.warnings.push(LoadError {
            location: loc.clone(),
            kind,
            name: name.map(str::to_string),
            message,
            excerpt: None,
        });
    }

    /// Collects one file.
    pub fn add(&mut self, source: &RuleSource) {
        let file: Arc<str> = Arc::from(source.name.as_str());
        let lines = item_lines(&source.content);
        let mut items = Vec::new();
        for document in serde_yaml_ng::Deserializer::from_str(&source.content) {
            match serde::Deserialize::deserialize(document) {
                Ok(Yaml::Null) => {}
                Ok(Yaml::Sequence(seq)) => items.extend(seq),
                Ok(_) => {
                    self.error(
                        &Location {
                            file: file.clone(),
                            line: None,
                        },
                        ItemKind::Item,
                        None,
                        "a rules file is a YAML list of items (- rule:, - macro:, - list:)"
                            .to_string(),
                    );
                    return;
                }
                Err(err) => {
                    let line = err.location().map(|l| l.line());
                    let message = match err.location() {
                        Some(l) => format!(
                            "invalid YAML at line {} column {}: {err}",
                            l.line(),
                            l.column()
                        ),
                        None => format!("invalid YAML: {err}"),
                    };
                    self.error(
                        &Location {
                            file: file.clone(),
                            line,
                        },
                        ItemKind::Item,
                        None,
                        message,
                    );
                    return;
                }
            }
        }
        let use_lines = lines.len() == items.len();
        for (i, item) in items.into_iter().enumerate() {
            let loc = Location {
                file: file.clone(),
                line: if use_lines {
                    lines.get(i).copied()
                } else {
                    None
                },
            };
            self.items += 1;
            if self.items > MAX_ITEMS {
                self.error(
                    &loc,
                    ItemKind::Item,
                    None,
                    format!("more than {MAX_ITEMS} items; the rest is ignored"),
                );
                return;
            }
            self.item(item, loc);
        }
    }

    fn item(&mut self, item: Yaml, loc: Location) {
        let Yaml::Mapping(map) = item else {
            self.error(
                &loc,
                ItemKind::Item,
                None,
                "each item must be a mapping (- rule: …, - macro: …, - list: …)".to_string(),
            );
            return;
        };
        if key(&map, "rule").is_some() {
            self.rule(&map, loc);
        } else if key(&map, "macro").is_some() {
            self.macro_item(&map, loc);
        } else if key(&map, "list").is_some() {
            self.list(&map, loc);
        } else if key(&map, "required_engine_version").is_some()
            || key(&map, "required_plugin_versions").is_some()
        {
            // Versions of Falco's engine and plugins: nothing to check here.
        } else {
            let keys: Vec<String> = map.keys().filter_map(scalar).collect();
            self.error(
                &loc,
                ItemKind::Item,
                None,
                format!(
                    "unknown item with keys [{}]: expected rule, macro, list or required_engine_version",
                    keys.join(", ")
                ),
            );
        }
    }

    /// The item's name, or an error.
    fn name(
        &mut self,
        map: &serde_yaml_ng::Mapping,
        kind: ItemKind,
        loc: &Location,
    ) -> Option<String> {
        let key_name = kind.to_string();
        match key(map, &key_name).and_then(scalar) {
            Some(name) if !name.trim().is_empty() => Some(name),
            _ => {
                self.error(
                    loc,
                    kind,
                    None,
                    format!("'{key_name}' must be a non-empty string"),
                );
                None
            }
        }
    }

    fn check_keys(
        &mut self,
        map: &serde_yaml_ng::Mapping,
        allowed: &[&str],
        kind: ItemKind,
        name: &str,
        loc: &Location,
    ) {
        for k in map.keys() {
            let k = scalar(k).unwrap_or_default();
            if !allowed.contains(&k.as_str()) {
                self.warn(
                    loc,
                    kind,
                    Some(name),
                    format!("unknown key '{k}' is ignored"),
                );
            }
        }
    }

    /// Reads `append`/`override`. For override, checks that its keys are allowed for the
    /// action, present in the item, and that the item has no other keys.
    fn change(
        &mut self,
        map: &serde_yaml_ng::Mapping,
        kind: ItemKind,
        name: &str,
        loc: &Location,
        appendable: &[&str],
        replaceable: &[&str],
    ) -> Option<Change> {
        let append = match key(map, "append") {
            None => false,
            Some(Yaml::Bool(b)) => *b,
            Some(_) => {
                self.error(
                    loc,
                    kind,
                    Some(name),
                    "'append' must be true or false".to_string(),
                );
                return None;
            }
        };
        let Some(over) = key(map, "override") else {
            return Some(if append {
                Change::Append
            } else {
                Change::Define
            });
        };
        if append {
            self.error(
                loc,
                kind,
                Some(name),
                "'append' and 'override' cannot be used together".to_string(),
            );
            return None;
        }
        let Yaml::Mapping(over) = over else {
            self.error(
                loc,
                kind,
                Some(name),
                "'override' must map keys to append or replace".to_string(),
            );
            return None;
        };
        let mut keys = Vec::new();
        for (k, action) in over {
            let k = scalar(k).unwrap_or_default();
            let is_append = match scalar(action).as_deref() {
                Some("append") => true,
                Some("replace") => false,
                _ => {
                    self.error(
                        loc,
                        kind,
                        Some(name),
                        format!("override of '{k}' must be 'append' or 'replace'"),
                    );
                    return None;
                }
            };
            let allowed = if is_append { appendable } else { replaceable };
            if !allowed.contains(&k.as_str()) {
                let how = if is_append { "appended" } else { "replaced" };
                self.error(
                    loc,
                    kind,
                    Some(name),
                    format!("'{k}' cannot be {how} (allowed: {})", allowed.join(", ")),
                );
                return None;
            }
            if key(map, &k).is_none() {
                self.error(
                    loc,
                    kind,
                    Some(name),
                    format!("override names '{k}', but the item has no '{k}'"),
                );
                return None;
            }
            keys.push((k, is_append));
        }
        let kind_key = kind.to_string();
        for k in map.keys() {
            let k = scalar(k).unwrap_or_default();
            if k != kind_key && k != "override" && !keys.iter().any(|(o, _)| *o == k) {
                self.error(
                    loc,
                    kind,
                    Some(name),
                    format!("'{k}' is not in 'override': say whether it is appended or replaced"),
                );
                return None;
            }
        }
        Some(Change::Override(keys))
    }

    fn list(&mut self, map: &serde_yaml_ng::Mapping, loc: Location) {
        let Some(name) = self.name(map, ItemKind::List, &loc) else {
            return;
        };
        self.check_keys(map, LIST_KEYS, ItemKind::List, &name, &loc);
        let items = match key(map, "items") {
            Some(Yaml::Sequence(seq)) => {
                let mut items = Vec::with_capacity(seq.len());
                for v in seq {
                    match scalar(v) {
                        Some(s) => items.push(parser::parse_list_item(&s)),
                        None => {
                            self.error(
                                &loc,
                                ItemKind::List,
                                Some(&name),
                                "list items must be strings or numbers".to_string(),
                            );
                            return;
                        }
                    }
                }
                items
            }
            Some(Yaml::Null) => Vec::new(),
            Some(_) => {
                self.error(
                    &loc,
                    ItemKind::List,
                    Some(&name),
                    "'items' must be a list".to_string(),
                );
                return;
            }
            None => {
                self.error(
                    &loc,
                    ItemKind::List,
                    Some(&name),
                    "missing 'items'".to_string(),
                );
                return;
            }
        };
        let Some(change) = self.change(map, ItemKind::List, &name, &loc, &["items"], &["items"])
        else {
            return;
        };
        let append = match change {
            Change::Define => {
                self.lists.put(&name, ListDef { items, loc });
                return;
            }
            Change::Append => true,
            Change::Override(keys) => keys.iter().any(|(_, a)| *a),
        };
        let Some(existing) = self.lists.get_mut(&name) else {
            self.error(
                &loc,
                ItemKind::List,
                Some(&name),
                "appends or overrides a list that is not defined before it".to_string(),
            );
            return;
        };
        if append {
            existing.items.extend(items);
        } else {
            existing.items = items;
        }
    }

    fn macro_item(&mut self, map: &serde_yaml_ng::Mapping, loc: Location) {
        let Some(name) = self.name(map, ItemKind::Macro, &loc) else {
            return;
        };
        if name.contains('.') || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.error(
                &loc,
                ItemKind::Macro,
                Some(&name),
                "macro names are letters, digits and '_' (no dots)".to_string(),
            );
            return;
        }
        self.check_keys(map, MACRO_KEYS, ItemKind::Macro, &name, &loc);
        let Some(condition) = key(map, "condition").and_then(scalar) else {
            self.error(
                &loc,
                ItemKind::Macro,
                Some(&name),
                "missing 'condition' (a string)".to_string(),
            );
            return;
        };
        let Some(change) = self.change(
            map,
            ItemKind::Macro,
            &name,
            &loc,
            &["condition"],
            &["condition"],
        ) else {
            return;
        };
        let append = match change {
            Change::Define => {
                self.macros.put(&name, MacroDef { condition, loc });
                return;
            }
            Change::Append => true,
            Change::Override(keys) => keys.iter().any(|(_, a)| *a),
        };
        let Some(existing) = self.macros.get_mut(&name) else {
            self.error(
                &loc,
                ItemKind::Macro,
                Some(&name),
                "appends or overrides a macro that is not defined before it".to_string(),
            );
            return;
        };
        if append {
            existing.condition = format!("{} {}", existing.condition, condition);
        } else {
            existing.condition = condition;
        }
    }

    fn rule(&mut self, map: &serde_yaml_ng::Mapping, loc: Location) {
        let Some(name) = self.name(map, ItemKind::Rule, &loc) else {
            return;
        };
        self.check_keys(map, RULE_KEYS, ItemKind::Rule, &name, &loc);
        let text = |k: &str| key(map, k).and_then(scalar);
        let enabled = match key(map, "enabled") {
            None => None,
            Some(Yaml::Bool(b)) => Some(*b),
            Some(_) => {
                self.error(
                    &loc,
                    ItemKind::Rule,
                    Some(&name),
                    "'enabled' must be true or false".to_string(),
                );
                return;
            }
        };
        let priority = match text("priority") {
            None => None,
            Some(p) => match p.parse::<Priority>() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.error(
                        &loc,
                        ItemKind::Rule,
                        Some(&name),
                        format!("unknown priority '{p}' (emergency, alert, critical, error, warning, notice, informational, debug)"),
                    );
                    return;
                }
            },
        };
        let tags = match key(map, "tags") {
            None => None,
            Some(Yaml::Sequence(seq)) => Some(seq.iter().filter_map(scalar).collect::<Vec<_>>()),
            Some(_) => {
                self.error(
                    &loc,
                    ItemKind::Rule,
                    Some(&name),
                    "'tags' must be a list".to_string(),
                );
                return;
            }
        };
        let bool_key = |this: &mut Self, k: &str, default: bool| match key(map, k) {
            None => Some(default),
            Some(Yaml::Bool(b)) => Some(*b),
            Some(_) => {
                this.error(
                    &loc,
                    ItemKind::Rule,
                    Some(&name),
                    format!("'{k}' must be true or false"),
                );
                None
            }
        };
        let Some(skip_if_unknown_filter) = bool_key(self, "skip-if-unknown-filter", false) else {
            return;
        };
        let Some(warn_evttypes) = bool_key(self, "warn_evttypes", true) else {
            return;
        };
        let Some(exceptions) = self.exceptions(map, &name, &loc) else {
            return;
        };
        // The legacy toggle: `- rule: X` with only `enabled:`.
        let only_enabled = map
            .keys()
            .all(|k| matches!(scalar(k).as_deref(), Some("rule" | "enabled")));
        if only_enabled && enabled.is_some() {
            match self.rules.get_mut(&name) {
                Some(rule) => rule.enabled = enabled.unwrap_or(rule.enabled),
                None => self.error(
                    &loc,
                    ItemKind::Rule,
                    Some(&name),
                    "sets 'enabled' of a rule that is not defined before it".to_string(),
                ),
            }
            return;
        }
        let Some(change) = self.change(
            map,
            ItemKind::Rule,
            &name,
            &loc,
            &["condition", "output", "desc", "tags", "exceptions"],
            &[
                "condition",
                "output",
                "desc",
                "priority",
                "tags",
                "exceptions",
                "enabled",
                "warn_evttypes",
                "skip-if-unknown-filter",
            ],
        ) else {
            return;
        };
        match change {
            Change::Define => {
                let mut missing = Vec::new();
                for k in ["condition", "output", "priority"] {
                    if key(map, k).is_none() {
                        missing.push(k);
                    }
                }
                if !missing.is_empty() {
                    self.error(
                        &loc,
                        ItemKind::Rule,
                        Some(&name),
                        format!("missing {}", missing.join(", ")),
                    );
                    return;
                }
                let (Some(condition), Some(output)) = (text("condition"), text("output")) else {
                    self.error(
                        &loc,
                        ItemKind::Rule,
                        Some(&name),
                        "'condition' and 'output' must be strings".to_string(),
                    );
                    return;
                };
                if let Some(dup) = first_duplicate(&exceptions) {
                    self.error(
                        &loc,
                        ItemKind::Rule,
                        Some(&name),
                        format!("exception '{dup}' is defined twice"),
                    );
                    return;
                }
                for ex in &exceptions {
                    if ex.fields.is_none() {
                        self.error(
                            &loc,
                            ItemKind::Rule,
                            Some(&name),
                            format!("exception '{}' has no 'fields'", ex.name),
                        );
                        return;
                    }
                }
                let source = text("source").unwrap_or_else(|| "syscall".to_string());
                self.rules.put(
                    &name,
                    RuleDef {
                        desc: text("desc").unwrap_or_default(),
                        condition,
                        output,
                        priority: priority.unwrap_or(Priority::Debug),
                        tags: tags.unwrap_or_default(),
                        enabled: enabled.unwrap_or(true),
                        exceptions,
                        source,
                        skip_if_unknown_filter,
                        warn_evttypes,
                        loc,
                    },
                );
            }
            Change::Append => {
                for k in ["output", "desc", "tags", "priority"] {
                    if key(map, k).is_some() {
                        self.error(
                            &loc,
                            ItemKind::Rule,
                            Some(&name),
                            format!("with 'append: true' only condition and exceptions are appended; '{k}' needs 'override'"),
                        );
                        return;
                    }
                }
                let Some(rule) = self.rules.get_mut(&name) else {
                    self.error(
                        &loc,
                        ItemKind::Rule,
                        Some(&name),
                        "appends to a rule that is not defined before it".to_string(),
                    );
                    return;
                };
                if let Some(c) = text("condition") {
                    rule.condition = format!("{} {}", rule.condition, c);
                }
                if let Some(e) = enabled {
                    rule.enabled = e;
                }
                if let Err(message) = merge_exceptions(&mut rule.exceptions, exceptions) {
                    self.error(&loc, ItemKind::Rule, Some(&name), message);
                }
            }
            Change::Override(keys) => {
                let Some(rule) = self.rules.get_mut(&name) else {
                    self.error(
                        &loc,
                        ItemKind::Rule,
                        Some(&name),
                        "overrides a rule that is not defined before it".to_string(),
                    );
                    return;
                };
                let mut failure = None;
                let mut exceptions = Some(exceptions);
                for (k, append) in keys {
                    match (k.as_str(), append) {
                        ("condition", true) => {
                            rule.condition = format!(
                                "{} {}",
                                rule.condition,
                                text("condition").unwrap_or_default()
                            )
                        }
                        ("condition", false) => {
                            rule.condition = text("condition").unwrap_or_default()
                        }
                        ("output", true) => {
                            rule.output =
                                format!("{} {}", rule.output, text("output").unwrap_or_default())
                        }
                        ("output", false) => rule.output = text("output").unwrap_or_default(),
                        ("desc", true) => {
                            rule.desc =
                                format!("{} {}", rule.desc, text("desc").unwrap_or_default())
                        }
                        ("desc", false) => rule.desc = text("desc").unwrap_or_default(),
                        ("tags", true) => rule.tags.extend(tags.clone().unwrap_or_default()),
                        ("tags", false) => rule.tags = tags.clone().unwrap_or_default(),
                        ("priority", _) => rule.priority = priority.unwrap_or(rule.priority),
                        ("enabled", _) => rule.enabled = enabled.unwrap_or(rule.enabled),
                        ("warn_evttypes", _) => rule.warn_evttypes = warn_evttypes,
                        ("skip-if-unknown-filter", _) => {
                            rule.skip_if_unknown_filter = skip_if_unknown_filter
                        }
                        ("exceptions", true) => {
                            if let Err(m) = merge_exceptions(
                                &mut rule.exceptions,
                                exceptions.take().unwrap_or_default(),
                            ) {
                                failure = Some(m);
                            }
                        }
                        ("exceptions", false) => {
                            let new = exceptions.take().unwrap_or_default();
                            if let Some(ex) = new.iter().find(|e| e.fields.is_none()) {
                                failure = Some(format!("exception '{}' has no 'fields'", ex.name));
                            } else if let Some(dup) = first_duplicate(&new) {
                                failure = Some(format!("exception '{dup}' is defined twice"));
                            } else {
                                rule.exceptions = new;
                            }
                        }
                        _ => {}
                    }
                }
                if let Some(message) = failure {
                    self.error(&loc, ItemKind::Rule, Some(&name), message);
                }
            }
        }
    }

    fn exceptions(
        &mut self,
        map: &serde_yaml_ng::Mapping,
        rule: &str,
        loc: &Location,
    ) -> Option<Vec<ExceptionDef>> {
        let seq = match key(map, "exceptions") {
            None | Some(Yaml::Null) => return Some(Vec::new()),
            Some(Yaml::Sequence(seq)) => seq,
            Some(_) => {
                self.error(
                    loc,
                    ItemKind::Rule,
                    Some(rule),
                    "'exceptions' must be a list".to_string(),
                );
                return None;
            }
        };
        let mut out = Vec::with_capacity(seq.len());
        for ex in seq {
            let Yaml::Mapping(ex) = ex else {
                self.error(
                    loc,
                    ItemKind::Rule,
                    Some(rule),
                    "each exception must be a mapping with 'name'".to_string(),
                );
                return None;
            };
            let Some(name) = key(ex, "name").and_then(scalar) else {
                self.error(
                    loc,
                    ItemKind::Rule,
                    Some(rule),
                    "an exception has no 'name'".to_string(),
                );
                return None;
            };
            let fields = match key(ex, "fields") {
                None => None,
                Some(Yaml::Sequence(s)) => {
                    Some(ExFields::Many(s.iter().filter_map(scalar).collect()))
                }
                Some(v) => {
                    match scalar(v) {
                        Some(f) => Some(ExFields::One(f)),
                        None => {
                            self.error(loc, ItemKind::Rule, Some(rule), format!("exception '{name}': 'fields' must be a field or a list of fields"));
                            return None;
                        }
                    }
                }
            };
            let comps = match key(ex, "comps") {
                None => None,
                Some(Yaml::Sequence(s)) => Some(s.iter().filter_map(scalar).collect()),
                Some(v) => scalar(v).map(|c| vec![c]),
            };
            let values = match key(ex, "values") {
                None | Some(Yaml::Null) => Vec::new(),
                Some(Yaml::Sequence(s)) => s.clone(),
                Some(_) => {
                    self.error(
                        loc,
                        ItemKind::Rule,
                        Some(rule),
                        format!("exception '{name}': 'values' must be a list"),
                    );
                    return None;
                }
            };
            for k in ex.keys() {
                let k = scalar(k).unwrap_or_default();
                if !matches!(k.as_str(), "name" | "fields" | "comps" | "values") {
                    self.warn(
                        loc,
                        ItemKind::Rule,
                        Some(rule),
                        format!("exception '{name}': unknown key '{k}' is ignored"),
                    );
                }
            }
            out.push(ExceptionDef {
                name,
                fields,
                comps,
                values,
            });
        }
        Some(out)
    }

    /// Replaces a list's items (configuration such as the API server's addresses).
    pub fn replace_list(&mut self, name: &str, items: &[String]) -> Result<(), String> {
        match self.lists.get_mut(name) {
            Some(list) => {
                list.items = items.iter().map(|i| parser::parse_list_item(i)).collect();
                Ok(())
            }
            None => Err(format!("no list named '{name}' is defined by the rules")),
        }
    }

    /// Compiles everything collected.
    pub fn finish(mut self) -> Result<RuleSet, LoadErrors> {
        let lists = self.resolve_lists();
        let mut macro_asts = FxHashMap::default();
        let mut macro_errors = Vec::new();
        for (name, def) in &self.macros.items {
            match parser::parse(&def.condition) {
                Ok(expr) => {
                    macro_asts.insert(name.clone(), expr);
                }
                Err(e) => macro_errors.push(LoadError {
                    location: def.loc.clone(),
                    kind: ItemKind::Macro,
                    name: Some(name.clone()),
                    message: e.message,
                    excerpt: Some(Excerpt {
                        what: "condition".into(),
                        text: def.condition.clone(),
                        pos: e.pos,
                    }),
                }),
            }
        }
        self.errors.extend(macro_errors);
        let mut compiler = Compiler::new(Definitions {
            macros: &macro_asts,
            lists: &lists,
        });
        // Macros on their own first, so that an error is reported once, for the macro.
        for (name, def) in &self.macros.items {
            if !macro_asts.contains_key(name) {
                continue;
            }
            if let Err(e) = compiler.compile_macro(name) {
                if e.message.contains("has errors (reported with the macro)") && e.pos == 0 {
                    continue;
                }
                self.errors.push(LoadError {
                    location: def.loc.clone(),
                    kind: ItemKind::Macro,
                    name: Some(name.clone()),
                    message: e.message,
                    excerpt: Some(Excerpt {
                        what: "condition".into(),
                        text: def.condition.clone(),
                        pos: e.pos,
                    }),
                });
            }
        }
        let mut rules = Vec::with_capacity(self.rules.items.len());
        let defs = std::mem::take(&mut self.rules.items);
        for (name, def) in defs {
            if def.source != "syscall" {
                self.warnings.push(LoadError {
                    location: def.loc.clone(),
                    kind: ItemKind::Rule,
                    name: Some(name.clone()),
                    message: format!(
                        "source '{}' is not captured by node-agent; the rule is skipped",
                        def.source
                    ),
                    excerpt: None,
                });
                continue;
            }
            match self.compile_rule(&mut compiler, &name, &def) {
                Ok(Some(rule)) => rules.push(rule),
                Ok(None) => {}
                Err(e) => self.errors.push(e),
            }
        }
        for w in compiler.warnings.drain(..) {
            self.warnings.push(LoadError {
                location: Location {
                    file: Arc::from("rules"),
                    line: None,
                },
                kind: ItemKind::Item,
                name: None,
                message: w,
                excerpt: None,
            });
        }
        if !self.errors.is_empty() {
            return Err(LoadErrors(self.errors));
        }
        Ok(RuleSet::new(rules, self.warnings))
    }

    // Load-time only, once per rule: the error's size does not matter.
    #[allow(clippy::result_large_err)]
    fn compile_rule(
        &mut self,
        compiler: &mut Compiler<'_>,
        name: &str,
        def: &RuleDef,
    ) -> Result<Option<Rule>, LoadError> {
        let error = |what: &str, text: &str, message: String, pos: usize| LoadError {
            location: def.loc.clone(),
            kind: ItemKind::Rule,
            name: Some(name.to_string()),
            message,
            excerpt: Some(Excerpt {
                what: what.to_string(),
                text: text.to_string(),
                pos,
            }),
        };
        let expr = parser::parse(&def.condition)
            .map_err(|e| error("condition", &def.condition, e.message, e.pos))?;
        let mut condition = match compiler.compile(&expr) {
            Ok(node) => node,
            Err(e) if e.unknown_field && def.skip_if_unknown_filter => {
                self.warnings.push(LoadError {
                    location: def.loc.clone(),
                    kind: ItemKind::Rule,
                    name: Some(name.to_string()),
                    message: format!("{}; skipped (skip-if-unknown-filter)", e.message),
                    excerpt: None,
                });
                return Ok(None);
            }
            Err(e) => return Err(error("condition", &def.condition, e.message, e.pos)),
        };
        for ex in &def.exceptions {
            let what = format!("exception '{}'", ex.name);
            let expr = exception_expr(ex).map_err(|m| LoadError {
                location: def.loc.clone(),
                kind: ItemKind::Rule,
                name: Some(name.to_string()),
                message: format!("{what}: {m}"),
                excerpt: None,
            })?;
            if let Some(expr) = expr {
                let node = compiler.compile(&expr).map_err(|e| LoadError {
                    location: def.loc.clone(),
                    kind: ItemKind::Rule,
                    name: Some(name.to_string()),
                    message: format!("{what}: {}", e.message),
                    excerpt: None,
                })?;
                condition = Node::And(Box::new([condition, Node::Not(Box::new(node))]));
            }
        }
        let output = OutputTemplate::parse(&def.output)
            .map_err(|e| error("output", &def.output, e.message, e.pos))?;
        let event_types = condition.event_types().0;
        if event_types.is_empty() {
            self.warnings.push(LoadError {
                location: def.loc.clone(),
                kind: ItemKind::Rule,
                name: Some(name.to_string()),
                message: "never fires: its condition is always false or names no event type node-agent captures (an empty list?)".to_string(),
                excerpt: None,
            });
        } else if event_types.is_all() && def.warn_evttypes {
            self.warnings.push(LoadError {
                location: def.loc.clone(),
                kind: ItemKind::Rule,
                name: Some(name.to_string()),
                message: "has no evt.type restriction: it is evaluated for every event".to_string(),
                excerpt: None,
            });
        }
        let mut tags = def.tags.clone();
        tags.sort();
        tags.dedup();
        Ok(Some(Rule {
            name: Arc::from(name),
            desc: def.desc.clone(),
            priority: def.priority,
            tags: Arc::from(tags),
            enabled: def.enabled,
            event_types,
            location: def.loc.clone(),
            condition,
            output,
        }))
    }

    /// List name → items, with names of other lists expanded (cycles end expansion).
    fn resolve_lists(&mut self) -> FxHashMap<String, Vec<String>> {
        fn expand(
            name: &str,
            defs: &Ordered<ListDef>,
            done: &mut FxHashMap<String, Vec<String>>,
            stack: &mut Vec<String>,
            cycles: &mut Vec<(String, Location)>,
        ) -> Vec<String> {
            if let Some(items) = done.get(name) {
                return items.clone();
            }
            let Some(&i) = defs.index.get(name) else {
                return Vec::new();
            };
            let Some((_, def)) = defs.items.get(i) else {
                return Vec::new();
            };
            if stack.iter().any(|s| s == name) {
                cycles.push((format!("{} → {name}", stack.join(" → ")), def.loc.clone()));
                return Vec::new();
            }
            stack.push(name.to_string());
            let mut out = Vec::with_capacity(def.items.len());
            for item in &def.items {
                if !item.quoted && defs.index.contains_key(&item.text) {
                    out.extend(expand(&item.text, defs, done, stack, cycles));
                } else {
                    out.push(item.text.clone());
                }
            }
            stack.pop();
            done.insert(name.to_string(), out.clone());
            out
        }
        let mut done = FxHashMap::default();
        let mut cycles = Vec::new();
        let names: Vec<String> = self.lists.items.iter().map(|(n, _)| n.clone()).collect();
        for name in names {
            let mut stack = Vec::new();
            expand(&name, &self.lists, &mut done, &mut stack, &mut cycles);
        }
        for (cycle, loc) in cycles {
            self.error(
                &loc,
                ItemKind::List,
                None,
                format!("lists refer to each other in a loop ({cycle})"),
            );
        }
        done
    }

    /// Consumes the loader's warnings (for callers that stop after collecting).
    pub fn warnings(&self) -> &[LoadError] {
        &self.warnings
    }
}

fn first_duplicate(exceptions: &[ExceptionDef]) -> Option<&str> {
    exceptions
        .iter()
        .enumerate()
        .find(|(i, e)| exceptions[..*i].iter().any(|o| o.name == e.name))
        .map(|(_, e)| e.name.as_str())
}

/// Appended exceptions: values of an existing name are added; a new name needs fields.
fn merge_exceptions(
    existing: &mut Vec<ExceptionDef>,
    new: Vec<ExceptionDef>,
) -> Result<(), String> {
    for ex in new {
        match existing.iter_mut().find(|e| e.name == ex.name) {
            Some(old) => {
                if ex.fields.is_some() || ex.comps.is_some() {
                    return Err(format!(
                        "exception '{}' already exists: append only 'values' to it",
                        ex.name
                    ));
                }
                old.values.extend(ex.values);
            }
            None => {
                if ex.fields.is_none() {
                    return Err(format!(
                        "exception '{}' is new and has no 'fields'",
                        ex.name
                    ));
                }
                existing.push(ex);
            }
        }
    }
    Ok(())
}

fn literal(text: String) -> Literal {
    Literal {
        text,
        quoted: false,
        pos: 0,
    }
}

fn field_ref(name: &str) -> FieldRef {
    let (name, arg) = match name.split_once('[') {
        Some((n, rest)) => (n, rest.strip_suffix(']').map(str::to_string)),
        None => (name, None),
    };
    FieldRef {
        name: name.to_string(),
        arg,
        pos: 0,
    }
}

/// An exception as a condition: `(f1 c1 v1 and f2 c2 v2) or (…)` (the rule's condition
/// is then `and not` this). `None` when it has no values yet.
fn exception_expr(ex: &ExceptionDef) -> Result<Option<Expr>, String> {
    if ex.values.is_empty() {
        return Ok(None);
    }
    let op_of = |c: &str| {
        Op::parse(c)
            .filter(|op| *op != Op::Exists)
            .ok_or_else(|| format!("unknown comparison '{c}'"))
    };
    let values_of = |v: &Yaml| -> Result<Vec<Literal>, String> {
        match v {
            Yaml::Sequence(items) => items
                .iter()
                .map(|i| {
                    scalar(i)
                        .map(literal)
                        .ok_or_else(|| "values must be strings or numbers".to_string())
                })
                .collect(),
            other => scalar(other)
                .map(|s| vec![literal(s)])
                .ok_or_else(|| "values must be strings or numbers".to_string()),
        }
    };
    match &ex.fields {
        None => Err("no 'fields'".to_string()),
        Some(ExFields::One(field)) => {
            let comp = match &ex.comps {
                None => Op::In,
                Some(c) if c.len() == 1 => op_of(&c[0])?,
                Some(_) => {
                    return Err("with a single field, 'comps' is a single operator".to_string());
                }
            };
            if !comp.takes_list() {
                return Err(format!(
                    "with a single field, 'comps' must be in, pmatch or intersects (found '{comp}')"
                ));
            }
            let mut items = Vec::new();
            for v in &ex.values {
                items.extend(values_of(v)?);
            }
            Ok(Some(Expr::Check {
                field: field_ref(field),
                op: comp,
                rhs: Rhs::List(items),
                pos: 0,
            }))
        }
        Some(ExFields::Many(fields)) => {
            let comps: Vec<Op> = match &ex.comps {
                None => vec![Op::Eq; fields.len()],
                Some(c) if c.len() == fields.len() => {
                    c.iter().map(|c| op_of(c)).collect::<Result<_, _>>()?
                }
                Some(c) => {
                    return Err(format!("has {} fields but {} comps", fields.len(), c.len()));
                }
            };
            let mut alternatives = Vec::with_capacity(ex.values.len());
            for (i, tuple) in ex.values.iter().enumerate() {
                let Yaml::Sequence(tuple) = tuple else {
                    return Err(format!(
                        "value #{} must be a list of {} items (one per field)",
                        i + 1,
                        fields.len()
                    ));
                };
                if tuple.len() != fields.len() {
                    return Err(format!(
                        "value #{} has {} items, but there are {} fields",
                        i + 1,
                        tuple.len(),
                        fields.len()
                    ));
                }
                let mut checks = Vec::with_capacity(fields.len());
                for ((field, op), value) in fields.iter().zip(&comps).zip(tuple) {
                    let rhs = if op.takes_list() {
                        Rhs::List(values_of(value)?)
                    } else {
                        match value {
                            Yaml::Sequence(_) => {
                                return Err(format!(
                                    "value #{} gives a list for '{field} {op}', which takes one value",
                                    i + 1
                                ));
                            }
                            v => Rhs::Value(Literal {
                                text: scalar(v).ok_or_else(|| {
                                    "values must be strings or numbers".to_string()
                                })?,
                                quoted: true,
                                pos: 0,
                            }),
                        }
                    };
                    checks.push(Expr::Check {
                        field: field_ref(field),
                        op: *op,
                        rhs,
                        pos: 0,
                    });
                }
                alternatives.push(Expr::And(checks));
            }
            Ok(Some(Expr::Or(alternatives)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_lines_follow_block_items() {
        let text = "# c\n- list: a\n  items: [x]\n\n- macro: m\n  condition: >\n    - not an item\n- rule: r\n";
        assert_eq!(item_lines(text), vec![2, 5, 8]);
    }

    #[test]
    fn error_display_points_at_the_position() {
        let e = LoadError {
            location: Location {
                file: Arc::from("f.yaml"),
                line: Some(3),
            },
            kind: ItemKind::Rule,
            name: Some("R".into()),
            message: "unknown field 'proc.nme'".into(),
            excerpt: Some(Excerpt {
                what: "condition".into(),
                text: "evt.type=execve and\nproc.nme=x".into(),
                pos: 20,
            }),
        };
        assert_eq!(
            e.to_string(),
            "f.yaml:3: rule 'R': condition: unknown field 'proc.nme' at position 21\n    proc.nme=x\n    ^"
        );
    }
}
