//! Library side of node-agent, exposed so `tests/` and `xtask/` can drive the pieces.
//!
//! Data flows one way. Metrics: `metrics::COLLECTORS` → exposition → `/metrics`.
//! Logs: discover → tail → parse → enrich → batch → sink → acknowledge → checkpoint.

pub mod app;
pub mod config;
pub mod handover;
pub mod host;
pub mod identity;
pub mod logs;
pub mod metrics;
pub mod shutdown;
pub mod sinks;
pub mod syscalls;
pub mod telemetry;
