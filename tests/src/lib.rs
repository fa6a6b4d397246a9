//! Test support for node-agent end-to-end tests.

pub mod agent_proc;
pub mod exec_storm;
pub mod expfmt;
pub mod http;
pub mod in_process;
pub mod kube_bench;
pub mod loggen;
pub mod manifests;
pub mod pipeline;
pub mod receivers;
pub mod require;
