//! Protocol-faithful, in-process test receivers for the log sinks (and a fake Kubernetes
//! API server for the metadata cache, [`apiserver`]).
//!
//! Each listens on `127.0.0.1:0` (optionally with TLS), decodes requests the way the real
//! service does, stores what it accepted, and can be scripted to fail: whole requests
//! (status N times, or "down": connections dropped), and per item where the protocol has
//! items (Elasticsearch bulk).

pub mod apiserver;
pub mod elasticsearch;
pub mod loki;
pub mod null;
pub mod otlp;
pub mod records;
pub mod server;

pub use apiserver::ApiServer;
pub use elasticsearch::EsReceiver;
pub use loki::LokiReceiver;
pub use otlp::OtlpReceiver;
pub use server::{Recorded, Server};
