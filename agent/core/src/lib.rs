//! The small core every node-agent subsystem depends on, and which depends on none of them:
//! the log record and the sink contract, node identity, host paths, durations, backoff,
//! kubelet's directory layout, the state directory, config validation and the
//! self-metrics registry.

pub mod backoff;
pub mod cgroup;
pub mod config;
pub mod duration;
pub mod fsutil;
pub mod health;
pub mod host;
pub mod kube;
pub mod kubelet;
pub mod node;
pub mod record;
pub mod route;
pub mod sink;
pub mod state;
pub mod status;
pub mod telemetry;
