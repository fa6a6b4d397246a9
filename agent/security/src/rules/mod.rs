//! Falco's rule language: YAML rules files of rules, macros and lists, compiled once into
//! evaluable trees and evaluated per event.
//!
//! # Files
//!
//! A rules file is a YAML list (several `---` documents allowed). Items:
//!
//! ```yaml
//! - list: shell_binaries
//!   items: [bash, sh, zsh]
//! - macro: spawned_process
//!   condition: evt.type in (execve, execveat)
//! - rule: Shell in container
//!   desc: A shell ran in a container
//!   condition: spawned_process and container.id != host and proc.name in (shell_binaries)
//!   output: Shell (user=%user.name command=%proc.cmdline container=%container.id)
//!   priority: WARNING
//!   tags: [container, shell]
//!   enabled: true
//!   exceptions:
//!     - name: known_parents
//!       fields: [proc.pname, container.image.repository]
//!       comps: [=, startswith]
//!       values: [[tini, docker.io/library/]]
//! - required_engine_version: 26      # accepted and ignored
//! ```
//!
//! Files load in order; later items change earlier ones exactly as in Falco:
//!
//! * redefining a list, macro or rule replaces it (a rule keeps its place in the order);
//!   `- rule: X` with only `enabled:` toggles it;
//! * `append: true` adds list items, appends text to a macro's or rule's condition (with a
//!   space, so write `and …`/`or …`), and adds exception values (to an exception of the
//!   same name) or new exceptions; it is an error if nothing of that name was defined
//!   before;
//! * `override:` maps keys to `append` or `replace`: lists `items`; macros `condition`;
//!   rules append `condition`, `output`, `desc`, `tags`, `exceptions`, replace those and
//!   `priority`, `enabled`, `warn_evttypes`, `skip-if-unknown-filter`. Every other key of
//!   the item must be named in `override`; `append` and `override` cannot be combined.
//!
//! An exception with `fields: [f1, f2]`, `comps: [c1, c2]` (default `=` each) and
//! `values: [[a1, a2], [b1, b2]]` adds `and not ((f1 c1 a1 and f2 c2 a2) or (f1 c1 b1 and
//! f2 c2 b2))` to the condition; with `in`/`pmatch`/`intersects` the value is a list (list
//! names inside expand). The short form `fields: f`, `comps: in` (the default), `values:
//! [a, b]` adds `and not f in (a, b)`. An exception without values adds nothing (until a
//! later file appends some).
//!
//! Rules with a `source` other than `syscall` (Falco's `k8s_audit`, plugins) are skipped
//! with a warning. `priority`: `emergency`, `alert`, `critical`, `error`, `warning`,
//! `notice`, `informational` (or `info`), `debug`, any case.
//!
//! # Conditions
//!
//! `and`, `or`, `not` (precedence `not` > `and` > `or`), parentheses, macros by name, and
//! comparisons `field op value`:
//!
//! | operator | meaning |
//! | --- | --- |
//! | `=` (`==`), `!=` | equal, not equal |
//! | `<` `<=` `>` `>=` | numeric fields only |
//! | `contains`, `icontains` | substring (ASCII case-insensitive); on flags fields, `contains O_TRUNC` tests the flag |
//! | `bcontains`, `bstartswith` | bytes given in hex (`bcontains 2f746d70`) |
//! | `startswith`, `endswith` | prefix, suffix |
//! | `glob`, `iglob` | shell glob over the whole value (`*` also matches `/`) |
//! | `regex` | RE2-style regular expression matching the whole value |
//! | `in (a, b, list_name)`, `intersects (…)` | the value is one of the items |
//! | `pmatch (/etc, /var/*/log)` | the path is, or is below, one of the prefixes (globs within a path component) |
//! | `exists` | the field has a value |
//!
//! Values are bare words (up to whitespace or `( ) , " ' =`) or quoted strings (`"…"` or
//! `'…'`, with `\"` `\'` `\\` `\n` `\t` `\r` `\xHH` escapes). On a numeric field the value
//! must be a number, on a boolean field `true`/`false`, on an IP field an address or a
//! CIDR network (`fd.sip in ("10.0.0.0/8")` tests membership); enumerated values
//! (`evt.arg.request`, `evt.arg.cmd`, `evt.arg.nstype`) compare by name or number. A field
//! without a value (`proc.pname` of an orphan, `k8s.pod.name` on the host) makes every
//! comparison false, `!=` included; only `exists` (and `not`) see it.
//!
//! ## Fields
//!
//! * `evt.type` (execve, execveat, open, openat, openat2, connect, accept, accept4, ptrace,
//!   init_module, finit_module, mount, setuid, setgid, setreuid, setregid, setresuid,
//!   setresgid, bpf, unshare, setns, fork, vfork, clone, clone3, procexit), `evt.dir`,
//!   `evt.num`, `evt.time`, `evt.time.s`, `evt.time.iso8601`, `evt.datetime`,
//!   `evt.rawtime`, `evt.rawtime.s`, `evt.rawtime.ns`, `evt.res` (`SUCCESS` or the errno
//!   name), `evt.rawres`, `evt.failed`, `evt.is_open_read`, `evt.is_open_write`,
//!   `evt.hostname`, `evt.source`, `evt.args`;
//! * `evt.arg.NAME` / `evt.arg[NAME]` (and `evt.rawarg.NAME`, numbers instead of names):
//!   execve `filename`, `args`, `exe`, `exepath`, `tty`; open `name` (also `path`),
//!   `flags`, `mode`, `dirfd`, `fd`; connect/accept `fd`, `tuple`; ptrace `request`, `pid`;
//!   init/finit_module `fd`, `name`, `uargs`, `flags`; mount `dev`, `dir`, `type`, `flags`;
//!   setuid & co. `uid`, `gid`, `ruid`, `euid`, `suid`, `rgid`, `egid`, `sgid`; bpf `cmd`,
//!   `prog_type`, `name`; unshare/clone `flags`, clone `pid`; setns `fd`, `nstype`;
//!   procexit `status`;
//! * `proc.pid`, `proc.ppid`, `proc.name` (the 15-byte comm), `proc.exe` (argv\[0\]),
//!   `proc.exepath`, `proc.cmdline` (`name args…`), `proc.args`, `proc.cmdnargs`,
//!   `proc.tty` (`tty_nr`, 0 = none), `proc.duration`, `proc.is_exe_from_memfd`,
//!   `proc.pname`, `proc.pexe`, `proc.pexepath`, `proc.pcmdline`, `proc.aname[N]`,
//!   `proc.apid[N]`, `proc.aexe[N]`, `proc.aexepath[N]`, `proc.acmdline[N]` (N = 0 is the
//!   process, 1 its parent, …; without `[N]`: true when any ancestor matches),
//!   `thread.tid`, `thread.cap_effective`;
//! * `user.uid`, `user.name`, `user.loginuid` (-1 when unset), `user.loginname`,
//!   `group.gid`, `group.name`;
//! * `container.id` (12 characters, `host` outside containers), `container.full_id`,
//!   `container.name`, `container.image`, `container.image.repository`,
//!   `container.image.tag`, `container.image.digest`, `container.privileged`;
//! * `k8s.ns.name`, `k8s.pod.name`, `k8s.pod.uid`, `k8s.pod.label.KEY` /
//!   `k8s.pod.label[KEY]`, `k8s.pod.labels`;
//! * `fd.num`, `fd.type` (`file`, `directory`, `ipv4`, `ipv6`, `unix`), `fd.typechar`
//!   (`f`, `d`, `4`, `6`, `u`), `fd.name` (normalised path, or `cip:cport->sip:sport`),
//!   `fd.nameraw` (the path as given; a relative one joined with the process's cwd, not
//!   normalised), `fd.directory`, `fd.filename`, `fd.ip`/`fd.cip`/`fd.sip`/`fd.lip`/
//!   `fd.rip`, `fd.port`/`fd.cport`/`fd.sport`/`fd.lport`/`fd.rport`, `fd.net`/`fd.cnet`/
//!   `fd.snet`/`fd.lnet`/`fd.rnet`, `fd.l4proto`, `fd.sockfamily`.
//!
//! An unknown field, macro or (by Falco's naming, `*_binaries`, `*_images`, `*_ports`, …)
//! list is a load error naming the file, the item and the position; an unquoted name of a
//! defined list inside `(...)` is replaced by its items, anything else is a literal.
//!
//! ## Outputs
//!
//! `%field` (and `%field[arg]`) is replaced by the field's value, `<NA>` when it has none;
//! `%%` is `%`; `%container.info` expands to container id, image, tag, name, namespace and
//! pod (what Falco prints with `-pk`).
//!
//! ## Differences from Falco
//!
//! * One event per syscall carries arguments and result, so `evt.dir = <` and
//!   `evt.dir = >` are both true (Falco 0.42 deprecates `evt.dir` for the same reason).
//! * Only the event types above exist; other `evt.type` values load with a warning and
//!   never match. Fields Falco has and node-agent does not (`proc.cwd`, `fd.sip.name`,
//!   `proc.vpid`, `container.mounts`, `thread.cap_permitted`, …) are unknown-field errors
//!   (or skip the rule with `skip-if-unknown-filter: true`).
//! * Transformers (`tolower(…)`, `val(…)`) are not supported.
//! * Strings are UTF-8 (invalid bytes are replaced before matching); `glob` is globset's
//!   (`{a,b}` alternatives and `**` work, which fnmatch does not have).
//! * `user.name`/`group.name` come from the host's `/etc/passwd`/`/etc/group`.
//! * A rule's `desc` may be omitted.

pub mod compile;
pub mod fields;
pub mod loader;
pub mod output;
pub mod parser;

use std::path::Path;
use std::sync::Arc;

use crate::alert::Priority;
use crate::event::{EventType, EventTypeSet};

pub use fields::{EvalCtx, Value};
pub use loader::{Excerpt, ItemKind, LoadError, LoadErrors, Location, RuleSource};
pub use output::OutputTemplate;

/// The embedded default rules.
pub const DEFAULT_RULES: &str = include_str!("default.yaml");
/// The name the default rules have in errors.
pub const DEFAULT_RULES_NAME: &str = "default.yaml";

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: Arc<str>,
    pub desc: String,
    pub priority: Priority,
    /// Sorted, without duplicates.
    pub tags: Arc<[String]>,
    pub enabled: bool,
    /// The event types it can match (its index entry).
    pub event_types: EventTypeSet,
    pub location: Location,
    condition: compile::Node,
    output: OutputTemplate,
}

impl Rule {
    #[inline]
    pub fn matches(&self, ctx: &EvalCtx<'_>) -> bool {
        self.condition.eval(ctx)
    }

    pub fn output(&self) -> &OutputTemplate {
        &self.output
    }

    /// Number of comparisons in the compiled condition.
    pub fn checks(&self) -> usize {
        self.condition.checks()
    }
}

/// Whether an event alerts for the first matching rule (Falco's default) or every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleMatching {
    #[default]
    First,
    All,
}

/// Which rules run, beyond each rule's own `enabled`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSelection {
    /// Rule names (`*` wildcards allowed) to enable.
    pub enable: Vec<String>,
    pub disable: Vec<String>,
    /// Tags whose rules are enabled / disabled.
    pub enable_tags: Vec<String>,
    pub disable_tags: Vec<String>,
}

/// A selection entry that named nothing: key (`enable[2]`) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionError {
    pub key: String,
    pub message: String,
}

/// Compiled rules with the per-event-type index.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Event type code → indexes of enabled rules, in load order.
    index: Vec<Box<[u32]>>,
    min_priority: Priority,
    warnings: Vec<LoadError>,
}

impl RuleSet {
    fn new(rules: Vec<Rule>, warnings: Vec<LoadError>) -> RuleSet {
        let mut set = RuleSet {
            rules,
            index: Vec::new(),
            min_priority: Priority::Debug,
            warnings,
        };
        set.reindex();
        set
    }

    /// Loads rules files in order.
    pub fn load(sources: &[RuleSource]) -> Result<RuleSet, LoadErrors> {
        RuleSetBuilder::new()
            .sources(sources.iter().cloned())
            .build()
    }

    /// The embedded defaults.
    pub fn defaults() -> Result<RuleSet, LoadErrors> {
        RuleSet::load(&[RuleSource {
            name: DEFAULT_RULES_NAME.to_string(),
            content: DEFAULT_RULES.to_string(),
        }])
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| &*r.name == name)
    }

    pub fn warnings(&self) -> &[LoadError] {
        &self.warnings
    }

    /// Rules that can run (enabled and at or above the minimum priority).
    pub fn active(&self) -> impl Iterator<Item = &Rule> {
        let min = self.min_priority;
        self.rules
            .iter()
            .filter(move |r| r.enabled && r.priority.at_least(min))
    }

    /// Rules below `min` never run (Falco's `priority:` setting).
    pub fn set_min_priority(&mut self, min: Priority) {
        self.min_priority = min;
        self.reindex();
    }

    /// Applies a selection; entries that match no rule are returned (the rest applies).
    pub fn select(&mut self, selection: &RuleSelection) -> Vec<SelectionError> {
        let mut errors = Vec::new();
        let matcher = |pattern: &str| -> Result<globset::GlobMatcher, String> {
            globset::GlobBuilder::new(pattern)
                .literal_separator(false)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| e.to_string())
        };
        let mut by_tag = |tags: &[String], key: &str, enabled: bool, rules: &mut Vec<Rule>| {
            for (i, tag) in tags.iter().enumerate() {
                let mut hit = false;
                for rule in rules.iter_mut().filter(|r| r.tags.iter().any(|t| t == tag)) {
                    rule.enabled = enabled;
                    hit = true;
                }
                if !hit {
                    errors.push(SelectionError {
                        key: format!("{key}[{i}]"),
                        message: format!("no rule has tag '{tag}'"),
                    });
                }
            }
        };
        by_tag(
            &selection.disable_tags,
            "disable_tags",
            false,
            &mut self.rules,
        );
        by_tag(&selection.enable_tags, "enable_tags", true, &mut self.rules);
        for (names, key, enabled) in [
            (&selection.disable, "disable", false),
            (&selection.enable, "enable", true),
        ] {
            for (i, pattern) in names.iter().enumerate() {
                let key = format!("{key}[{i}]");
                let glob = match matcher(pattern) {
                    Ok(g) => g,
                    Err(e) => {
                        errors.push(SelectionError {
                            key,
                            message: format!("invalid pattern '{pattern}': {e}"),
                        });
                        continue;
                    }
                };
                let mut hit = false;
                for rule in self.rules.iter_mut().filter(|r| glob.is_match(&*r.name)) {
                    rule.enabled = enabled;
                    hit = true;
                }
                if !hit {
                    errors.push(SelectionError {
                        key,
                        message: format!("no rule is named '{pattern}'"),
                    });
                }
            }
        }
        self.reindex();
        errors
    }

    fn reindex(&mut self) {
        let slots = EventType::ALL
            .iter()
            .map(|t| *t as usize)
            .max()
            .unwrap_or(0)
            + 1;
        let mut index: Vec<Vec<u32>> = vec![Vec::new(); slots];
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.enabled || !rule.priority.at_least(self.min_priority) {
                continue;
            }
            for t in rule.event_types.iter() {
                if let Some(slot) = index.get_mut(t as usize) {
                    slot.push(i as u32);
                }
            }
        }
        self.index = index.into_iter().map(Vec::into_boxed_slice).collect();
    }

    /// Rules matching the event, in load order (only the first with [`RuleMatching::First`]).
    pub fn evaluate<'s>(
        &'s self,
        ctx: &EvalCtx<'_>,
        matching: RuleMatching,
        out: &mut Vec<&'s Rule>,
    ) {
        let Some(candidates) = self.index.get(ctx.event.event_type as usize) else {
            return;
        };
        for &i in candidates.iter() {
            let Some(rule) = self.rules.get(i as usize) else {
                continue;
            };
            if rule.matches(ctx) {
                out.push(rule);
                if matching == RuleMatching::First {
                    return;
                }
            }
        }
    }

    /// Number of enabled rules evaluated for events of type `t`.
    pub fn candidates(&self, t: EventType) -> usize {
        self.index.get(t as usize).map_or(0, |c| c.len())
    }
}

/// Builds a [`RuleSet`] from the defaults, files and configuration.
#[derive(Debug, Clone, Default)]
pub struct RuleSetBuilder {
    sources: Vec<RuleSource>,
    read_errors: Vec<LoadError>,
    lists: Vec<(String, Vec<String>)>,
}

impl RuleSetBuilder {
    pub fn new() -> RuleSetBuilder {
        RuleSetBuilder::default()
    }

    pub fn defaults(self) -> RuleSetBuilder {
        self.source(RuleSource {
            name: DEFAULT_RULES_NAME.to_string(),
            content: DEFAULT_RULES.to_string(),
        })
    }

    pub fn source(mut self, source: RuleSource) -> RuleSetBuilder {
        self.sources.push(source);
        self
    }

    pub fn sources(mut self, sources: impl IntoIterator<Item = RuleSource>) -> RuleSetBuilder {
        self.sources.extend(sources);
        self
    }

    /// A rules file, or every `*.yaml`/`*.yml` file of a directory in name order (as
    /// Falco's `rules_files` entries). Read errors are reported by [`Self::build`].
    pub fn path(mut self, path: &Path) -> RuleSetBuilder {
        let mut files = Vec::new();
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut names: Vec<_> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                        })
                        .collect();
                    names.sort();
                    files.extend(names);
                }
                Err(e) => self.read_error(path, e.to_string()),
            }
        } else {
            files.push(path.to_path_buf());
        }
        for file in files {
            match read_bounded(&file) {
                Ok(content) => self.sources.push(RuleSource {
                    name: file.display().to_string(),
                    content,
                }),
                Err(message) => self.read_error(&file, message),
            }
        }
        self
    }

    fn read_error(&mut self, path: &Path, message: String) {
        self.read_errors.push(LoadError {
            location: Location {
                file: Arc::from(path.display().to_string()),
                line: None,
            },
            kind: ItemKind::Item,
            name: None,
            message: format!("cannot read rules: {message}"),
            excerpt: None,
        });
    }

    /// Replaces the items of a list defined by the rules (after all files are read).
    pub fn list(mut self, name: &str, items: Vec<String>) -> RuleSetBuilder {
        self.lists.push((name.to_string(), items));
        self
    }

    pub fn build(self) -> Result<RuleSet, LoadErrors> {
        let mut loader = loader::Loader::new();
        for source in &self.sources {
            loader.add(source);
        }
        let mut errors = self.read_errors;
        for (name, items) in &self.lists {
            if let Err(message) = loader.replace_list(name, items) {
                errors.push(LoadError {
                    location: Location {
                        file: Arc::from("configuration"),
                        line: None,
                    },
                    kind: ItemKind::List,
                    name: Some(name.clone()),
                    message,
                    excerpt: None,
                });
            }
        }
        match loader.finish() {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(LoadErrors(errors)),
            Err(LoadErrors(mut more)) => {
                errors.append(&mut more);
                Err(LoadErrors(errors))
            }
        }
    }
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    file.take(loader::MAX_RULES_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > loader::MAX_RULES_FILE_BYTES {
        return Err(format!(
            "larger than {} bytes",
            loader::MAX_RULES_FILE_BYTES
        ));
    }
    String::from_utf8(buf).map_err(|_| "not UTF-8 text".to_string())
}

/// Fuzzing entry point: parses a condition; never panics, whatever the bytes.
pub fn fuzz_parse_condition(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = parser::parse(&text);
}

/// Fuzzing entry point: loads a rules file (collect and compile); never panics.
pub fn fuzz_load_rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = RuleSet::load(&[RuleSource {
        name: "fuzz.yaml".to_string(),
        content: text.into_owned(),
    }]);
}

/// Fuzzing entry point: parses an output template; never panics.
pub fn fuzz_parse_output(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = OutputTemplate::parse(&text);
}
