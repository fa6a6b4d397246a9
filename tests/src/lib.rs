//! Test support for node-agent end-to-end tests.

pub mod expfmt;
pub mod http;
pub mod receivers;
pub mod loggen;
