//! Test support for node-agent end-to-end tests.

pub mod agent_proc;
pub mod loggen;
pub mod receivers;
