//! The HTTP output against a receiver that behaves like Falcosidekick (`POST /` with
//! Falco's JSON), including its failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use node_agent_security::alert::outputs::HttpSettings;
use node_agent_security::alert::{
    Alert, AlertMetrics, CountingMetrics, HttpOutput, Outputs, Priority,
};

#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    content_type: String,
    token: String,
    body: String,
}

/// A receiver answering with `statuses` in turn (then 200), after `delay`.
async fn receiver(statuses: Vec<u16>, delay: Duration) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(statuses));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            let statuses = statuses.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    let statuses = statuses.clone();
                    async move {
                        let header = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let (method, path) =
                            (req.method().to_string(), req.uri().path().to_string());
                        let (content_type, token) = (header("content-type"), header("x-token"));
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        tokio::time::sleep(delay).await;
                        log.lock().unwrap().push(Received {
                            method,
                            path,
                            content_type,
                            token,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        let status = {
                            let mut s = statuses.lock().unwrap();
                            if s.is_empty() { 200 } else { s.remove(0) }
                        };
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(StatusCode::from_u16(status).unwrap())
                                .body(Full::new(Bytes::from_static(b"{}")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

fn alert(n: u64) -> Alert {
    Alert {
        rule: Arc::from("Terminal shell in container"),
        priority: Priority::Notice,
        output: format!("00:00:00.000000000: Notice shell {n}"),
        output_fields: [("proc.name".to_string(), serde_json::json!("sh"))].into(),
        tags: Arc::from(vec!["container".to_string()]),
        time_ns: n,
        hostname: Arc::from("node-1"),
        source: "syscall",
    }
}

fn settings(url: &str, queue: usize) -> HttpSettings {
    HttpSettings {
        url: url.parse().unwrap(),
        timeout: Duration::from_secs(5),
        queue_capacity: queue,
        max_retries: 3,
        retry_backoff: Duration::from_millis(10),
        headers: vec![("X-Token".into(), "secret".into())],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_falco_json_and_retries_server_errors() {
    let (url, seen) = receiver(vec![500, 503], Duration::ZERO).await;
    let metrics = Arc::new(CountingMetrics::default());
    let http = HttpOutput::start(
        settings(&url, 16),
        &tokio::runtime::Handle::current(),
        metrics.clone(),
    )
    .unwrap();
    let mut outputs = Outputs::new(metrics.clone());
    outputs.push(Box::new(http));
    outputs.emit(&alert(1));
    outputs.emit(&alert(2));
    drop(outputs); // closing the queue lets the task finish after delivering
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = seen.lock().unwrap().clone();
    // Two failures of the first alert, then both delivered, in order.
    assert_eq!(got.len(), 4, "{got:?}");
    for r in &got {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/"));
        assert_eq!(r.content_type, "application/json");
        assert_eq!(r.token, "secret");
    }
    let first: serde_json::Value = serde_json::from_str(&got[2].body).unwrap();
    assert_eq!(first["rule"], "Terminal shell in container");
    assert_eq!(first["output_fields"]["proc.name"], "sh");
    assert_eq!(got[0].body, got[2].body, "retries resend the same line");
    assert!(got[3].body.contains("shell 2"));
    assert!(metrics.snapshot().output_errors.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_retried_and_are_counted() {
    let (url, seen) = receiver(vec![400], Duration::ZERO).await;
    let metrics = Arc::new(CountingMetrics::default());
    let http = HttpOutput::start(
        settings(&url, 16),
        &tokio::runtime::Handle::current(),
        metrics.clone(),
    )
    .unwrap();
    let mut outputs = Outputs::new(metrics.clone());
    outputs.push(Box::new(http));
    outputs.emit(&alert(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.snapshot().output_errors.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(
        metrics.snapshot().output_errors[&("http".to_string(), "error")],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_and_close_drains() {
    let (url, seen) = receiver(vec![], Duration::from_millis(200)).await;
    let metrics = Arc::new(CountingMetrics::default());
    let mut http = HttpOutput::start(
        settings(&url, 2),
        &tokio::runtime::Handle::current(),
        metrics.clone(),
    )
    .unwrap();
    let mut dropped = 0;
    for n in 0..10 {
        if let Err(e) =
            node_agent_security::alert::AlertOutput::emit(&mut http, &alert(n).to_json_line())
        {
            assert!(e.to_string().contains("queue full"), "{e}");
            metrics.output_error("http", "dropped");
            dropped += 1;
        }
    }
    assert!(dropped >= 7, "only {dropped} dropped");
    http.close(Duration::from_secs(10)).await;
    // Everything that was queued arrived; nothing else did.
    assert_eq!(seen.lock().unwrap().len(), 10 - dropped);
    assert_eq!(
        metrics.snapshot().output_errors[&("http".to_string(), "dropped")],
        dropped as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_receiver_fails_after_retries() {
    // Nothing listens on this port (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = Arc::new(CountingMetrics::default());
    let mut s = settings(&format!("http://127.0.0.1:{port}/"), 4);
    s.max_retries = 2;
    let http = HttpOutput::start(s, &tokio::runtime::Handle::current(), metrics.clone()).unwrap();
    let mut outputs = Outputs::new(metrics.clone());
    outputs.push(Box::new(http));
    outputs.emit(&alert(1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.snapshot().output_errors.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        metrics.snapshot().output_errors[&("http".to_string(), "error")],
        1
    );
}
