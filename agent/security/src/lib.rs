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

/// Skips a test whose environment is missing, or fails it when `NODE_AGENT_REQUIRE_ALL=1`
/// (CI), as the project's tests do.
#[cfg(test)]
pub(crate) fn skip_test(reason: &str) {
    if std::env::var("NODE_AGENT_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("NODE_AGENT_REQUIRE_ALL=1 and {reason}");
    }
    eprintln!("skipped: {reason}");
}
