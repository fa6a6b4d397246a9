//! A receiver that accepts everything as cheaply as a real one answers: Loki pushes get
//! 204, `_bulk` gets one `create` 201 item per action line. For benchmarks, where the
//! receiver should cost (almost) nothing.

use std::sync::Arc;

use hyper::StatusCode;

use super::server::{Handler, HttpRequest, Reply, Server};

struct Null;

impl Handler for Null {
    fn handle(&self, req: &HttpRequest) -> Reply {
        if req.path.ends_with("/_bulk") {
            let items = req
                .body
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .count()
                / 2;
            let mut body = String::with_capacity(40 + items * 48);
            body.push_str(r#"{"took":0,"errors":false,"items":["#);
            for i in 0..items {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(r#"{"create":{"_index":"i","_id":"x","status":201}}"#);
            }
            body.push_str("]}");
            return Reply {
                status: StatusCode::OK,
                content_type: "application/json",
                body: body.into(),
            };
        }
        Reply::empty(StatusCode::NO_CONTENT)
    }
}

/// Starts a null receiver on 127.0.0.1.
pub async fn start() -> std::io::Result<Server> {
    Server::start(Arc::new(Null), None).await
}
