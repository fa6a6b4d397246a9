//! A small hyper 1 server shared by the receivers: loopback listener, optional TLS,
//! gzip request decoding, a log of request heads, scripted failures, and "down" mode.

use std::collections::VecDeque;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A decoded request handed to a protocol handler.
pub struct HttpRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// Body after `Content-Encoding: gzip` was undone.
    pub body: Bytes,
}

/// What a protocol handler answers.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: Bytes::from(value.to_string()),
        }
    }

    pub fn text(status: StatusCode, text: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(text.into()),
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            content_type: "text/plain",
            body: Bytes::new(),
        }
    }
}

/// A protocol: turns requests into replies, storing what it accepted.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: &HttpRequest) -> Reply;
}

/// The head of a request as received (for auth/header assertions).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The body arrived gzip'd.
    pub gzipped: bool,
    /// Body length on the wire.
    pub wire_len: usize,
    /// Status we answered.
    pub status: u16,
}

#[derive(Default)]
struct Control {
    /// Statuses (and a `Retry-After`) to answer to the next requests, before the handler
    /// sees them.
    script: Mutex<VecDeque<(StatusCode, Option<u64>)>>,
    down: AtomicBool,
    /// Milliseconds every request waits before it is answered ("slow").
    delay_ms: std::sync::atomic::AtomicU64,
    log: Mutex<Vec<Recorded>>,
}

/// A running receiver; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    control: Arc<Control>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Server {
    /// Starts serving `handler` on 127.0.0.1 (an ephemeral port), with TLS if given.
    pub async fn start(
        handler: Arc<dyn Handler>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let control = Arc::new(Control::default());
        let stop = CancellationToken::new();
        let acceptor = tls.clone().map(tokio_rustls::TlsAcceptor::from);
        {
            let control = Arc::clone(&control);
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, _) = tokio::select! {
                        _ = stop.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                    };
                    if control.down.load(Ordering::SeqCst) {
                        // "Down": the connection is dropped before any HTTP is spoken.
                        drop(stream);
                        continue;
                    }
                    let handler = Arc::clone(&handler);
                    let control = Arc::clone(&control);
                    let acceptor = acceptor.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let handler = Arc::clone(&handler);
                            let control = Arc::clone(&control);
                            async move {
                                // Down also for connections opened before: an error from
                                // the service makes hyper close the connection unanswered,
                                // as a service that went away resets it.
                                if control.down.load(Ordering::SeqCst) {
                                    return Err(std::io::Error::other("receiver is down"));
                                }
                                Ok(serve(&*handler, &control, req).await)
                            }
                        });
                        match acceptor {
                            Some(acceptor) => {
                                let Ok(tls_stream) = acceptor.accept(stream).await else {
                                    return;
                                };
                                let conn = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls_stream), service);
                                tokio::select! { _ = stop.cancelled() => {}, _ = conn => {} }
                            }
                            None => {
                                let conn = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service);
                                tokio::select! { _ = stop.cancelled() => {}, _ = conn => {} }
                            }
                        }
                    });
                }
            });
        }
        Ok(Self {
            addr,
            tls: tls.is_some(),
            control,
            stop,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://127.0.0.1:port` (TLS servers answer to `localhost` in test certs).
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Answers the next `times` requests with `status` (before decoding them).
    pub fn fail_next(&self, times: usize, status: u16) {
        let status = StatusCode::from_u16(status).expect("valid status");
        self.control
            .script
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n((status, None), times));
    }

    /// Answers the next `times` requests with `status` and `Retry-After: <secs>`.
    pub fn fail_next_retry_after(&self, times: usize, status: u16, secs: u64) {
        let status = StatusCode::from_u16(status).expect("valid status");
        self.control
            .script
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n((status, Some(secs)), times));
    }

    /// Drops the scripted failures not answered yet.
    pub fn clear_failures(&self) {
        self.control.script.lock().unwrap().clear();
    }

    /// While down, new connections are accepted and closed at once, and requests on open
    /// ones get the connection closed instead of an answer.
    pub fn set_down(&self, down: bool) {
        self.control.down.store(down, Ordering::SeqCst);
    }

    /// Every request waits `delay` before it is answered (zero: none), as a slow or
    /// overloaded service does.
    pub fn set_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.control.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Heads of every request served so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.control.log.lock().unwrap().clone()
    }
}

async fn serve(
    handler: &dyn Handler,
    control: &Control,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let wire = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return respond(Reply::text(
                StatusCode::BAD_REQUEST,
                format!("reading body: {e}"),
            ));
        }
    };
    let gzipped = parts
        .headers
        .get(hyper::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let delay = control.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let scripted = control.script.lock().unwrap().pop_front();
    let mut retry_after = None;
    let reply = if let Some((status, after)) = scripted {
        retry_after = after;
        Reply::text(status, format!("scripted failure {}", status.as_u16()))
    } else {
        let body = if gzipped {
            let mut out = Vec::new();
            match flate2::read::GzDecoder::new(&wire[..]).read_to_end(&mut out) {
                Ok(_) => Ok(Bytes::from(out)),
                Err(e) => Err(Reply::text(
                    StatusCode::BAD_REQUEST,
                    format!("bad gzip body: {e}"),
                )),
            }
        } else {
            Ok(wire.clone())
        };
        match body {
            Err(reply) => reply,
            Ok(body) => handler.handle(&HttpRequest {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().map(str::to_string),
                headers: parts.headers.clone(),
                body,
            }),
        }
    };
    control.log.lock().unwrap().push(Recorded {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        gzipped,
        wire_len: wire.len(),
        status: reply.status.as_u16(),
    });
    let mut response = respond(reply);
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, secs.into());
    }
    response
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = reply.status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(reply.content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}
