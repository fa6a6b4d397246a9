//! node-agent's runtime security engine, the user-space half of a Falco replacement:
//!
//! * [`event`]: the events the kernel side sends (fixed-size ring-buffer records, decoded
//!   into [`event::Event`]);
//! * [`process`]: the process table (bootstrapped from `/proc`, kept current by
//!   fork/exec/exit events), container ids from cgroups, user names;
//! * [`rules`]: Falco's rule language (rules, macros, lists, append/override,
//!   exceptions), compiled once and evaluated per event, and the default rules;
//! * [`alert`]: alerts, Falco's JSON line, per-rule rate limiting, counters, and the
//!   stdout/file/HTTP outputs;
//! * [`config`]: the `security:` configuration;
//! * [`engine`]: one event through all of the above.
//!
//! Dependencies run one way: `event` ← `process` ← `rules` ← `engine`; `alert` and
//! `config` are used by `rules` and `engine` only for their types.

pub mod alert;
pub mod config;
pub mod engine;
pub mod event;
pub mod process;
pub mod rules;

pub use alert::{Alert, Priority};
pub use config::SecurityConfig;
pub use engine::SecurityEngine;
pub use event::{Event, EventArgs, EventType};
pub use process::{ProcessTable, TableConfig};
pub use rules::{RuleSet, RuleSetBuilder};
