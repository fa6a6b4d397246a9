//! node-agent: node metrics, container logs and syscall monitoring in one process.
//!
//! This crate is the top of a one-way dependency graph that the compiler holds: `main` →
//! [`app`] (wiring) and [`config`] (composition) → the subsystem crates
//! (`node-agent-metrics`, `-logs`, `-sinks`, `-handover`, `-syscalls`) → `node-agent-core`
//! (shared types). No subsystem depends on another's config or on this crate.
//!
//! Data flows one way. Metrics: collectors → exposition → `/metrics`. Logs: sources →
//! stages → sinks → acknowledgement → checkpoint (see `node_agent_logs`).
//!
//! The subsystem crates are re-exported under their short names for tests and tools.

pub mod app;
pub mod check_config;
pub mod config;
pub mod kube;
pub mod logging;
pub mod reload;
pub mod shutdown;

pub use node_agent_core as core;
pub use node_agent_core::{host, node as identity};
pub use node_agent_handover as handover;
pub use node_agent_kube as kube_cache;
pub use node_agent_logs as logs;
pub use node_agent_metrics as metrics;
pub use node_agent_metrics::telemetry;
pub use node_agent_security as security;
pub use node_agent_sinks as sinks;
pub use node_agent_syscalls as syscalls;
