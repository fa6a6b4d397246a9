//! The HTTP endpoint: `/metrics` (text 0.0.4, gzip when asked, `?collect[]=` and
//! `?exclude[]=`), `/healthz`, `/readyz`, and the status page (`/` as HTML, `/status` as
//! JSON); TLS, basic auth and extra headers from `--web.config.file`. Connections are
//! capped and must send their request headers within a timeout, so idle or slow clients
//! cannot pile up.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::exposition::CONTENT_TYPE;
use super::{MetricSet, NodeCollectors};
use crate::status::StatusPage;
use crate::telemetry;
use crate::webconfig::{BasicAuth, WebServerSettings};

/// Shared state of the metrics endpoint.
pub struct MetricsEndpoint {
    collectors: Arc<NodeCollectors>,
    telemetry_path: String,
    exporter_metrics: bool,
    limit: Option<Semaphore>,
    ready: AtomicBool,
    /// A set kept from the previous scrape, so its families, label arena and index are
    /// reused; a concurrent scrape builds its own.
    spare: Mutex<Option<MetricSet>>,
    /// Capacity for the next body: the last one's size plus some.
    body_hint: AtomicUsize,
    status: StatusPage,
    auth: Arc<BasicAuth>,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl MetricsEndpoint {
    pub fn new(
        collectors: NodeCollectors,
        telemetry_path: String,
        exporter_metrics: bool,
        max_requests: usize,
    ) -> Self {
        Self {
            collectors: Arc::new(collectors),
            status: StatusPage::new("", &telemetry_path),
            telemetry_path,
            exporter_metrics,
            limit: (max_requests > 0).then(|| Semaphore::new(max_requests)),
            ready: AtomicBool::new(true),
            spare: Mutex::new(None),
            body_hint: AtomicUsize::new(64 * 1024),
            auth: Arc::new(BasicAuth::new(Default::default())),
            headers: Vec::new(),
        }
    }

    /// Names the node on the status page.
    pub fn with_node_name(mut self, node: &str) -> Self {
        self.status = StatusPage::new(node, &self.telemetry_path);
        self
    }

    /// Applies `--web.config.file`'s basic auth users and response headers (TLS is the
    /// server's, see [`ServeOptions`]).
    pub fn with_web_settings(mut self, settings: &WebServerSettings) -> Self {
        self.auth = Arc::new(BasicAuth::new(settings.basic_auth_users.clone()));
        self.headers = settings.headers.clone();
        self
    }

    /// `/readyz` answers 503 while not ready (e.g. during start-up or final drain).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Encodes one scrape: node collectors (optionally filtered) plus the agent's own
    /// metrics, as text format 0.0.4.
    pub fn render(&self, only: Option<&[String]>) -> Vec<u8> {
        let spare = self.spare.lock().map(|mut s| s.take()).unwrap_or_default();
        let mut set = spare.unwrap_or_default();
        set.clear();
        self.collectors.collect(only, &mut set);
        telemetry::collect(self.exporter_metrics, &mut set);
        let mut body = Vec::with_capacity(self.body_hint.load(Ordering::Relaxed));
        set.encode_text(&mut body);
        self.body_hint
            .store(body.len() + body.len() / 8, Ordering::Relaxed);
        if let Ok(mut spare) = self.spare.lock() {
            *spare = Some(set);
        }
        body
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut resp = Arc::clone(&self).route(req).await;
        for (name, value) in &self.headers {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
        resp
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // Probes stay open: the kubelet sends no credentials, and they reveal nothing.
        let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
        if self.auth.enabled() && !probe {
            let auth = Arc::clone(&self.auth);
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            // bcrypt is deliberately slow: off the async workers.
            let ok = tokio::task::spawn_blocking(move || auth.check(given.as_deref()))
                .await
                .unwrap_or(false);
            if !ok {
                let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                return resp;
            }
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        let path = req.uri().path();
        if path == self.telemetry_path {
            return self.scrape(&req).await;
        }
        match path {
            "/healthz" => healthz(),
            "/readyz" if self.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/" => respond(
                StatusCode::OK,
                "text/html; charset=utf-8",
                self.status.snapshot().to_html().into_bytes(),
            ),
            "/status" => respond(
                StatusCode::OK,
                "application/json",
                self.status.snapshot().to_json(),
            ),
            _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
        }
    }

    async fn scrape(self: &Arc<Self>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let _permit = match &self.limit {
            Some(limit) => match limit.try_acquire() {
                Ok(p) => Some(p),
                Err(_) => {
                    telemetry::scrape_finished("503");
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many concurrent scrapes\n",
                    );
                }
            },
            None => None,
        };
        let only = match parse_collect_filter(req.uri().query().unwrap_or(""), &self.collectors) {
            Ok(only) => only,
            Err(msg) => {
                telemetry::scrape_finished("400");
                return text(StatusCode::BAD_REQUEST, &msg);
            }
        };
        let gzip = accepts_gzip(req.headers().get(header::ACCEPT_ENCODING));
        let this = Arc::clone(self);
        // Collectors do blocking file I/O; keep them off the async workers.
        let rendered = tokio::task::spawn_blocking(move || {
            let _in_flight = telemetry::scrape_in_flight();
            this.render(only.as_deref())
        })
        .await;
        let body = match rendered {
            Ok(body) => body,
            // A collector panicked.
            Err(err) => {
                telemetry::scrape_error("gathering");
                telemetry::scrape_finished("500");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("error gathering metrics: {err}\n"),
                );
            }
        };
        telemetry::scrape_finished("200");
        let mut builder = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        let body = if gzip {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
            gzip_bytes(&body)
        } else {
            body
        };
        builder
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response\n"))
    }
}

/// `collect[]=a&collect[]=b` → `Some(["a","b"])`; unknown names are a 400, as in
/// node_exporter. `exclude[]=a` → every collector but `a` (unknown names ignored); both
/// kinds at once are a 400.
fn parse_collect_filter(
    query: &str,
    collectors: &NodeCollectors,
) -> Result<Option<Vec<String>>, String> {
    let mut names = Vec::new();
    let mut excluded = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "collect[]" => names.push(v.into_owned()),
            "exclude[]" => excluded.push(v.into_owned()),
            _ => {}
        }
    }
    if !excluded.is_empty() {
        if !names.is_empty() {
            return Err("Combined collect and exclude queries are not allowed.\n".into());
        }
        return Ok(Some(
            collectors
                .names()
                .filter(|n| !excluded.iter().any(|e| e == n))
                .map(String::from)
                .collect(),
        ));
    }
    if names.is_empty() {
        return Ok(None);
    }
    for name in &names {
        if !collectors.names().any(|n| n == name) {
            return Err(format!(
                "couldn't create filtered metrics handler: collector {name:?} not available\n"
            ));
        }
    }
    Ok(Some(names))
}

fn accepts_gzip(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        let q_zero = it.any(|p| {
            let p = p.trim();
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        coding.eq_ignore_ascii_case("gzip") && !q_zero
    })
}

fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 5), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `ok`, or one line per subsystem that is not up. A failed subsystem answers 503 (the
/// agent is on its way out); a degraded one (e.g. a sink refusing our credentials) is
/// reported with 200, since restarting the pod would not fix it.
fn healthz() -> Response<Full<Bytes>> {
    use node_agent_core::health::State;
    let states = node_agent_core::health::snapshot();
    let mut body = String::new();
    let mut failed = false;
    for (name, state) in &states {
        match state {
            State::Up => {}
            State::Degraded(why) => body.push_str(&format!("{name}: degraded: {why}\n")),
            State::Failed(why) => {
                failed = true;
                body.push_str(&format!("{name}: failed: {why}\n"));
            }
        }
    }
    if body.is_empty() {
        return text(StatusCode::OK, "ok\n");
    }
    let code = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    text(code, &body)
}

fn respond(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Binds the listen address with SO_REUSEPORT, so an old and a new pod sharing the host
/// network during a `maxSurge` rollout can both serve (see the handover module). `[::]`
/// on a host without IPv6 falls back to `0.0.0.0`, as Go does.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match bind_exact(addr) {
        Err(e)
            if addr.ip() == std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            bind_exact(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        other => other,
    }
}

fn bind_exact(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // ":9100" binds [::]; accept IPv4 too, as Go's net.Listen does.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// `--web.systemd-socket`: the listening sockets systemd passed (sd_listen_fds: fds 3.. as
/// counted by LISTEN_FDS, if LISTEN_PID is this process).
pub fn systemd_listeners() -> anyhow::Result<Vec<TcpListener>> {
    use anyhow::Context as _;
    use std::os::fd::FromRawFd as _;
    let pid: u32 = std::env::var("LISTEN_PID")
        .context("--web.systemd-socket: LISTEN_PID is not set (not socket-activated)")?
        .parse()
        .context("--web.systemd-socket: invalid LISTEN_PID")?;
    if pid != std::process::id() {
        anyhow::bail!("--web.systemd-socket: LISTEN_PID {pid} is not this process");
    }
    let count: i32 = std::env::var("LISTEN_FDS")
        .context("--web.systemd-socket: LISTEN_FDS is not set")?
        .parse()
        .context("--web.systemd-socket: invalid LISTEN_FDS")?;
    if count < 1 {
        anyhow::bail!("--web.systemd-socket: no sockets passed");
    }
    let mut listeners = Vec::new();
    for fd in 3..3 + count {
        let is_socket = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
            .is_ok_and(|st| (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK);
        if !is_socket {
            anyhow::bail!("--web.systemd-socket: fd {fd} is not a socket");
        }
        // SAFETY: systemd hands these descriptors to this process, and nothing else owns them.
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true)?;
        listeners.push(TcpListener::from_std(std_listener)?);
    }
    // As sd_listen_fds(unset_environment=1): children must not take them too.
    // SAFETY: called at start-up before other threads read the environment.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    Ok(listeners)
}

/// How the server treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS from `--web.config.file`; `None` is plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections open at once, over all listeners; the rest wait in the backlog.
    pub max_connections: usize,
    /// Time a client has to complete the TLS handshake, and to send each request's headers.
    pub header_read_timeout: std::time::Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            max_connections: 64,
            header_read_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Serves `listeners` until `shutdown` is cancelled; in-flight requests are allowed to
/// finish.
pub async fn serve(
    listeners: Vec<TcpListener>,
    endpoint: Arc<MetricsEndpoint>,
    options: ServeOptions,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let mut tasks = tokio::task::JoinSet::new();
    for listener in listeners {
        let local = listener.local_addr().ok();
        tracing::info!(address = ?local, tls = tls.is_some(), "serving metrics");
        tasks.spawn(accept_loop(
            listener,
            Arc::clone(&endpoint),
            tls.clone(),
            options.header_read_timeout,
            Arc::clone(&slots),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(
    listener: TcpListener,
    endpoint: Arc<MetricsEndpoint>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_timeout: std::time::Duration,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        // A free slot first: at the cap, new clients wait in the kernel's backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let endpoint = Arc::clone(&endpoint);
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, peer, endpoint, header_timeout, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, endpoint, header_timeout, shutdown).await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    endpoint: Arc<MetricsEndpoint>,
    header_timeout: std::time::Duration,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let endpoint = Arc::clone(&endpoint);
        async move { Ok::<_, Infallible>(endpoint.handle(req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => if let Err(err) = res {
            tracing::debug!(%peer, error = %err, "connection error");
        },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(accepts_gzip(Some(&h("gzip"))));
        assert!(accepts_gzip(Some(&h("deflate, gzip;q=1.0, *;q=0.5"))));
        assert!(!accepts_gzip(Some(&h("gzip;q=0"))));
        assert!(!accepts_gzip(Some(&h("identity"))));
        assert!(!accepts_gzip(None));
    }
}
