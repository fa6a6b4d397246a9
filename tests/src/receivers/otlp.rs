//! An OTLP/HTTP logs receiver: `POST /v1/logs` with a binary protobuf
//! `ExportLogsServiceRequest` (gzip undone by the server), decoded with the official
//! definitions (`opentelemetry-proto`), so a field-number mistake in the agent's own
//! structs shows up. Answers an `ExportLogsServiceResponse`, with `partial_success` for
//! records it was told to reject; 415 for other content types, as the collector does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use prost::Message as _;

use super::server::{Handler, HttpRequest, Reply, Server};

/// One received log record with its resource and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpLog {
    pub resource: BTreeMap<String, String>,
    pub scope: String,
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    pub severity_number: i32,
    pub severity_text: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

/// An attribute value as text (`int:7`, `bool:true`, `double:1.5`, strings as is).
fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => format!("int:{i}"),
        Some(any_value::Value::BoolValue(b)) => format!("bool:{b}"),
        Some(any_value::Value::DoubleValue(d)) => format!("double:{d}"),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[derive(Default)]
struct Store {
    logs: Vec<OtlpLog>,
    /// Records whose body contains one of these are rejected (partial success).
    reject: Vec<String>,
}

struct Otlp {
    store: Mutex<Store>,
}

pub struct OtlpReceiver {
    server: Server,
    otlp: Arc<Otlp>,
}

impl OtlpReceiver {
    pub async fn start() -> std::io::Result<Self> {
        let otlp = Arc::new(Otlp {
            store: Mutex::default(),
        });
        let server = Server::start(Arc::clone(&otlp) as Arc<dyn Handler>, None).await?;
        Ok(Self { server, otlp })
    }

    pub fn server(&self) -> &Server {
        &self.server
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Accepted records, in arrival order.
    pub fn logs(&self) -> Vec<OtlpLog> {
        self.otlp.store.lock().unwrap().logs.clone()
    }

    /// Reject (partial success) records whose body contains `needle`.
    pub fn reject_bodies_containing(&self, needle: &str) {
        self.otlp
            .store
            .lock()
            .unwrap()
            .reject
            .push(needle.to_string());
    }
}

impl Handler for Otlp {
    fn handle(&self, req: &HttpRequest) -> Reply {
        if req.path != "/v1/logs" || req.method != Method::POST {
            return Reply::text(StatusCode::NOT_FOUND, "404 page not found");
        }
        let content_type = req
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type != "application/x-protobuf" {
            return Reply::text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content type {content_type:?}"),
            );
        }
        let request = match ExportLogsServiceRequest::decode(&req.body[..]) {
            Ok(r) => r,
            Err(e) => return Reply::text(StatusCode::BAD_REQUEST, format!("proto: {e}")),
        };
        let mut store = self.store.lock().unwrap();
        let mut rejected = 0i64;
        for rl in request.resource_logs {
            let resource: BTreeMap<String, String> = rl
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default()
                .into_iter()
                .map(|kv| (kv.key, text(&kv.value)))
                .collect();
            for sl in rl.scope_logs {
                let scope = sl.scope.map(|s| s.name).unwrap_or_default();
                for lr in sl.log_records {
                    let body = text(&lr.body);
                    if store.reject.iter().any(|n| body.contains(n.as_str())) {
                        rejected += 1;
                        continue;
                    }
                    store.logs.push(OtlpLog {
                        resource: resource.clone(),
                        scope: scope.clone(),
                        time_unix_nano: lr.time_unix_nano,
                        observed_time_unix_nano: lr.observed_time_unix_nano,
                        severity_number: lr.severity_number,
                        severity_text: lr.severity_text,
                        body,
                        attributes: lr
                            .attributes
                            .into_iter()
                            .map(|kv| (kv.key, text(&kv.value)))
                            .collect(),
                    });
                }
            }
        }
        let response = ExportLogsServiceResponse {
            partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: format!("{rejected} records rejected by the test receiver"),
            }),
        };
        Reply {
            status: StatusCode::OK,
            content_type: "application/x-protobuf",
            body: response.encode_to_vec().into(),
        }
    }
}
