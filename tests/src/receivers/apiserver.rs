//! A fake Kubernetes API server, faithful to the wire protocol the metadata cache uses
//! (the API conventions and api-concepts pages: lists, watches, resource versions):
//!
//! - HTTPS only, with its own CA (rcgen); the certificate names `localhost` and
//!   `127.0.0.1`. Bearer-token auth: any request without a valid token gets 401 with a
//!   `Status` body; [`ApiServer::rotate_token`] makes the old token stale at once.
//! - Core v1 pods (namespaced), namespaces and nodes. Objects get a global, increasing
//!   `metadata.resourceVersion` (etcd's revision) on every write; the server keeps the
//!   history of changes since the last [`ApiServer::compact`].
//! - List (`GET /api/v1/pods`, `/api/v1/namespaces/{ns}/pods`, `/api/v1/namespaces`,
//!   `/api/v1/nodes`): `fieldSelector` (`metadata.name`, `metadata.namespace`, and
//!   `spec.nodeName`/`status.phase` on pods; others are refused with 400 like the real
//!   server), `limit`/`continue` chunking over a consistent snapshot at the first page's
//!   resourceVersion (`remainingItemCount` set), `resourceVersion`/`resourceVersionMatch`
//!   (`0` is served "from the watch cache": current state, `limit` ignored, as the real
//!   cache does), list items without `kind`/`apiVersion`. A continue token or an `Exact`
//!   resourceVersion older than the compaction gets HTTP 410 `Expired`.
//! - Watch (`?watch=true`): `200`, chunked JSON lines `{"type":…,"object":…}` of
//!   ADDED/MODIFIED/DELETED from the given resourceVersion (history replayed, then live),
//!   with field-selector transitions as the watch cache does them (an object that stops
//!   matching is DELETED, one that starts matching is ADDED), BOOKMARK events when
//!   `allowWatchBookmarks=true` (every [`ApiServer::set_bookmark_interval`]), closed
//!   after `timeoutSeconds`. A resourceVersion older than the compaction gets an ERROR
//!   event carrying a 410 `Status` (`Expired`, "too old resource version"), then the
//!   stream ends, as the real server does. `resourceVersion` unset or `0` starts with
//!   synthetic ADDED events for the current objects.
//! - GET of one object (`/api/v1/nodes/{name}`, …); `Accept: …;as=PartialObjectMetadata`
//!   (and `…List`) answers metadata-only objects, for gets, lists and watches.
//! - Knobs: hang every watch ([`ApiServer::hang_watches`]: headers sent, then silence,
//!   timeout ignored) or every list, close every watch, go down (the port is closed and
//!   every connection dropped) and come back on the same port, rotate the valid token,
//!   and a log of every request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Namespace,
    Node,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Self::Pod => "pods",
            Self::Namespace => "namespaces",
            Self::Node => "nodes",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::Namespace => "Namespace",
            Self::Node => "Node",
        }
    }

    fn from_name(kind: &str) -> Option<Self> {
        match kind {
            "Pod" => Some(Self::Pod),
            "Namespace" => Some(Self::Namespace),
            "Node" => Some(Self::Node),
            _ => None,
        }
    }

    fn namespaced(self) -> bool {
        self == Self::Pod
    }

    /// Field selectors the real API server accepts for this kind (a subset for pods).
    fn selectable(self, field: &str) -> bool {
        match (self, field) {
            (_, "metadata.name") => true,
            (_, "metadata.namespace") => self.namespaced(),
            (
                Self::Pod,
                "spec.nodeName" | "status.phase" | "spec.restartPolicy" | "spec.schedulerName",
            ) => true,
            (Self::Namespace, "status.phase") => true,
            (Self::Node, "spec.unschedulable") => true,
            _ => false,
        }
    }
}

/// A request's verb as the server understood it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    List,
    Watch,
    Get,
    /// Not routed (404/405) or refused before routing.
    Other,
}

/// One request, as received.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub kind: Option<Kind>,
    pub verb: Verb,
    /// The bearer token presented, if any.
    pub token: Option<String>,
    /// Asked for `PartialObjectMetadata`.
    pub metadata_only: bool,
    pub status: u16,
}

impl ApiRequest {
    /// A query parameter's (decoded) value.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

type Key = (Kind, String, String);

#[derive(Debug)]
struct Change {
    rv: u64,
    old: Option<Arc<Value>>,
    new: Option<Arc<Value>>,
}

impl Change {
    fn kind(&self) -> Option<Kind> {
        self.new
            .as_deref()
            .or(self.old.as_deref())
            .and_then(kind_of)
    }
}

#[derive(Debug, Default)]
struct Objects {
    rv: u64,
    current: BTreeMap<Key, Arc<Value>>,
    /// Changes with rv > `compacted`, oldest first.
    history: Vec<Arc<Change>>,
    compacted: u64,
}

impl Objects {
    /// The objects of `kind` as they were at `rv` (≥ `compacted`).
    fn snapshot(&self, kind: Kind, rv: u64) -> BTreeMap<Key, Arc<Value>> {
        let mut objects: BTreeMap<Key, Arc<Value>> = self
            .current
            .iter()
            .filter(|(k, _)| k.0 == kind)
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if change.kind() != Some(kind) {
                continue;
            }
            let Some(key) = change
                .new
                .as_deref()
                .or(change.old.as_deref())
                .and_then(key_of)
            else {
                continue;
            };
            match &change.old {
                Some(old) => {
                    objects.insert(key, Arc::clone(old));
                }
                None => {
                    objects.remove(&key);
                }
            }
        }
        objects
    }
}

fn kind_of(object: &Value) -> Option<Kind> {
    Kind::from_name(object.get("kind")?.as_str()?)
}

fn key_of(object: &Value) -> Option<Key> {
    let kind = kind_of(object)?;
    let meta = object.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let namespace = if kind.namespaced() {
        meta.get("namespace")?.as_str()?.to_string()
    } else {
        String::new()
    };
    Some((kind, namespace, name))
}

fn with_rv(object: &Value, rv: u64) -> Value {
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
    object
}

/// One `k=v` / `k!=v` term of a field selector.
#[derive(Debug, Clone)]
struct Term {
    field: String,
    value: String,
    equal: bool,
}

#[derive(Debug, Clone, Default)]
struct Selector {
    namespace: Option<String>,
    terms: Vec<Term>,
}

impl Selector {
    fn parse(kind: Kind, namespace: Option<&str>, text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').filter(|t| !t.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if !kind.selectable(field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(Term {
                field: field.to_string(),
                value: value.trim().to_string(),
                equal,
            });
        }
        Ok(Self {
            namespace: namespace.map(str::to_string),
            terms,
        })
    }

    fn matches(&self, object: &Value) -> bool {
        let field = |path: &str| -> String {
            let mut v = object;
            for part in path.split('.') {
                match v.get(part) {
                    Some(next) => v = next,
                    None => return String::new(),
                }
            }
            match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                _ => String::new(),
            }
        };
        if let Some(ns) = &self.namespace
            && field("metadata.namespace") != *ns
        {
            return false;
        }
        self.terms
            .iter()
            .all(|t| (field(&t.field) == t.value) == t.equal)
    }
}

/// Full objects or `PartialObjectMetadata` (from the `Accept` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Full,
    Metadata,
}

impl Format {
    fn of(headers: &HeaderMap) -> Self {
        let accept = headers
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if accept.contains("as=PartialObjectMetadata") {
            Self::Metadata
        } else {
            Self::Full
        }
    }

    /// An object as a watch event or GET carries it.
    fn object(self, object: &Value) -> Value {
        match self {
            Self::Full => object.clone(),
            Self::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }),
        }
    }

    /// A list item: the real server leaves out `kind`/`apiVersion` of typed list items.
    fn item(self, object: &Value) -> Value {
        let mut item = self.object(object);
        if self == Self::Full
            && let Some(map) = item.as_object_mut()
        {
            map.remove("kind");
            map.remove("apiVersion");
        }
        item
    }

    fn list_kind(self, kind: Kind) -> (String, &'static str) {
        match self {
            Self::Full => (format!("{}List", kind.name()), "v1"),
            Self::Metadata => ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1"),
        }
    }
}

fn status(code: StatusCode, reason: &str, message: impl Into<String>) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code.as_u16(),
    })
}

/// A response body: whole, or streamed from a channel (watch), or never (a hung list).
enum ApiBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Stream(_) => SizeHint::default(),
        }
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response<ApiBody> {
    let mut response = Response::new(ApiBody::Full(Some(Bytes::from(value.to_string()))));
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// The CA and the server's certificate.
struct Pki {
    ca_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fake kubernetes CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            chain: vec![cert.der().clone(), ca_cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    fn server_config(&self) -> std::io::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(self.chain.clone(), self.key.clone_key())
            })
            .map_err(std::io::Error::other)?;
        Ok(Arc::new(config))
    }
}

struct Inner {
    objects: Mutex<Objects>,
    changes: broadcast::Sender<Arc<Change>>,
    tokens: Mutex<Vec<String>>,
    hang_watches: AtomicBool,
    hang_lists: AtomicBool,
    bookmark_interval: Mutex<Option<Duration>>,
    log: Mutex<Vec<ApiRequest>>,
    /// Cancelled (and replaced) by `close_watches`.
    close: Mutex<CancellationToken>,
    active_watches: Mutex<BTreeMap<Kind, usize>>,
    watch_seq: AtomicUsize,
}

/// While up: cancels the accept loop and every connection; `stopped` fires once the
/// listener is closed.
struct Up {
    cancel: CancellationToken,
    stopped: oneshot::Receiver<()>,
}

/// A running fake API server; stops when dropped.
pub struct ApiServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
    up: tokio::sync::Mutex<Option<Up>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Ok(mut up) = self.up.try_lock()
            && let Some(up) = up.take()
        {
            up.cancel.cancel();
        }
    }
}

/// The token valid when the server starts.
pub const INITIAL_TOKEN: &str = "token-1";

impl ApiServer {
    /// Listens on 127.0.0.1 (an ephemeral port) with TLS; [`INITIAL_TOKEN`] is valid.
    pub async fn start() -> std::io::Result<Self> {
        let pki = Pki::new().map_err(std::io::Error::other)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            objects: Mutex::default(),
            changes: broadcast::channel(4096).0,
            tokens: Mutex::new(vec![INITIAL_TOKEN.to_string()]),
            hang_watches: AtomicBool::new(false),
            hang_lists: AtomicBool::new(false),
            bookmark_interval: Mutex::new(Some(Duration::from_secs(1))),
            log: Mutex::default(),
            close: Mutex::new(CancellationToken::new()),
            active_watches: Mutex::default(),
            watch_seq: AtomicUsize::new(0),
        });
        let server = Self {
            inner,
            addr,
            acceptor,
            ca_pem: pki.ca_pem,
            up: tokio::sync::Mutex::new(None),
        };
        *server.up.lock().await = Some(server.serve(listener));
        Ok(server)
    }

    fn serve(&self, listener: TcpListener) -> Up {
        let cancel = CancellationToken::new();
        let (stopped_tx, stopped) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        let acceptor = self.acceptor.clone();
        let token = cancel.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    () = token.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let inner = Arc::clone(&inner);
                let acceptor = acceptor.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    let conn_token = token.clone();
                    let service = service_fn(move |req| {
                        let inner = Arc::clone(&inner);
                        let token = conn_token.clone();
                        async move { Ok::<_, Infallible>(handle(&inner, req, token).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service);
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
            drop(listener);
            let _ = stopped_tx.send(());
        });
        Up { cancel, stopped }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Writes a kubeconfig naming this server, its CA (as a file next to it) and `token`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> std::io::Result<()> {
        let ca = path.with_extension("ca.pem");
        std::fs::write(&ca, &self.ca_pem)?;
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\n\
             users:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: agent\n    namespace: default\n",
            url = self.url(),
            ca = ca.display(),
        );
        std::fs::write(path, yaml)
    }

    // ---- auth ----

    /// Only `token` is valid from now on (open watches keep running, as on a real server).
    pub fn rotate_token(&self, token: &str) {
        *self.inner.tokens.lock().unwrap() = vec![token.to_string()];
    }

    pub fn set_tokens(&self, tokens: &[&str]) {
        *self.inner.tokens.lock().unwrap() = tokens.iter().map(|t| t.to_string()).collect();
    }

    // ---- objects ----

    /// Creates or replaces an object (its `kind` says which); returns its new
    /// resourceVersion. Live watches see ADDED or MODIFIED.
    pub fn upsert(&self, object: Value) -> u64 {
        let Some(key) = key_of(&object) else {
            panic!("object without kind/name/namespace: {object}");
        };
        let mut objects = self.inner.objects.lock().unwrap();
        objects.rv += 1;
        let rv = objects.rv;
        let new = Arc::new(with_rv(&object, rv));
        let old = objects.current.insert(key, Arc::clone(&new));
        let change = Arc::new(Change {
            rv,
            old,
            new: Some(new),
        });
        objects.history.push(Arc::clone(&change));
        // Sent under the lock, so watchers see changes in resourceVersion order.
        let _ = self.inner.changes.send(change);
        rv
    }

    /// Deletes an object; live watches see DELETED. `None` if it did not exist.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<u64> {
        let mut objects = self.inner.objects.lock().unwrap();
        let namespace = if kind.namespaced() { namespace } else { "" };
        let old = objects
            .current
            .remove(&(kind, namespace.to_string(), name.to_string()))?;
        objects.rv += 1;
        let rv = objects.rv;
        let change = Arc::new(Change {
            rv,
            old: Some(old),
            new: None,
        });
        objects.history.push(Arc::clone(&change));
        let _ = self.inner.changes.send(change);
        Some(rv)
    }

    pub fn object(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        self.inner
            .objects
            .lock()
            .unwrap()
            .current
            .get(&(kind, namespace.to_string(), name.to_string()))
            .map(|v| (**v).clone())
    }

    /// The newest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.objects.lock().unwrap().rv
    }

    /// Forgets the history (etcd compaction / the watch cache's window moving on): a
    /// watch from an older resourceVersion gets 410 Gone, and so does a continue token.
    pub fn compact(&self) {
        let mut objects = self.inner.objects.lock().unwrap();
        objects.compacted = objects.rv;
        objects.history.clear();
    }

    // ---- failure knobs ----

    /// Ends every open watch cleanly (as its timeout would), except hung ones.
    pub fn close_watches(&self) {
        let mut close = self.inner.close.lock().unwrap();
        close.cancel();
        *close = CancellationToken::new();
    }

    /// While set, open and new watches send nothing more and never end on their own
    /// (a black-holed connection); new watches still get their 200.
    pub fn hang_watches(&self, hang: bool) {
        self.inner.hang_watches.store(hang, Ordering::SeqCst);
    }

    /// While set, list requests are never answered.
    pub fn hang_lists(&self, hang: bool) {
        self.inner.hang_lists.store(hang, Ordering::SeqCst);
    }

    /// Down: the port is closed and every connection (watches too) is dropped. Up again:
    /// listens on the same port.
    pub async fn set_down(&self, down: bool) -> std::io::Result<()> {
        let mut up = self.up.lock().await;
        if down {
            if let Some(running) = up.take() {
                running.cancel.cancel();
                let _ = running.stopped.await;
            }
        } else if up.is_none() {
            let mut tries = 0;
            let listener = loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => break l,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            *up = Some(self.serve(listener));
        }
        Ok(())
    }

    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK (`None`: never).
    pub fn set_bookmark_interval(&self, every: Option<Duration>) {
        *self.inner.bookmark_interval.lock().unwrap() = every;
    }

    // ---- observation ----

    pub fn requests(&self) -> Vec<ApiRequest> {
        self.inner.log.lock().unwrap().clone()
    }

    /// Requests of this kind and verb so far.
    pub fn count(&self, kind: Kind, verb: Verb) -> usize {
        self.inner
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.kind == Some(kind) && r.verb == verb)
            .count()
    }

    /// Watch streams of this kind open now.
    pub fn active_watches(&self, kind: Kind) -> usize {
        self.inner
            .active_watches
            .lock()
            .unwrap()
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }
}

/// What a path names.
enum Route {
    Collection {
        kind: Kind,
        namespace: Option<String>,
    },
    Object {
        kind: Kind,
        namespace: String,
        name: String,
    },
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let collection = |kind, namespace: Option<&str>| Route::Collection {
        kind,
        namespace: namespace.map(str::to_string),
    };
    let object = |kind, namespace: &str, name: &str| Route::Object {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    Some(match parts.as_slice() {
        ["api", "v1", "pods"] => collection(Kind::Pod, None),
        ["api", "v1", "namespaces"] => collection(Kind::Namespace, None),
        ["api", "v1", "nodes"] => collection(Kind::Node, None),
        ["api", "v1", "namespaces", ns, "pods"] => collection(Kind::Pod, Some(ns)),
        ["api", "v1", "nodes", name] => object(Kind::Node, "", name),
        ["api", "v1", "namespaces", name] => object(Kind::Namespace, "", name),
        ["api", "v1", "namespaces", ns, "pods", name] => object(Kind::Pod, ns, name),
        _ => return None,
    })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

async fn handle(
    inner: &Arc<Inner>,
    req: Request<Incoming>,
    conn: CancellationToken,
) -> Response<ApiBody> {
    let (parts, _body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let token = bearer(&parts.headers);
    let route = route(&path);
    let watch = params.get("watch").is_some_and(|w| w == "true" || w == "1");
    let (kind, verb) = match &route {
        Some(Route::Collection { kind, .. }) => {
            (Some(*kind), if watch { Verb::Watch } else { Verb::List })
        }
        Some(Route::Object { kind, .. }) => (Some(*kind), Verb::Get),
        None => (None, Verb::Other),
    };
    let format = Format::of(&parts.headers);
    let log = |status: StatusCode| {
        inner.log.lock().unwrap().push(ApiRequest {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            kind,
            verb,
            token: token.clone(),
            metadata_only: format == Format::Metadata,
            status: status.as_u16(),
        });
    };
    let reply = |code: StatusCode, value: &Value| {
        log(code);
        json_response(code, value)
    };

    let authorized = token
        .as_ref()
        .is_some_and(|t| inner.tokens.lock().unwrap().iter().any(|v| v == t));
    if !authorized {
        return reply(
            StatusCode::UNAUTHORIZED,
            &status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
        );
    }
    let Some(route) = route else {
        return reply(
            StatusCode::NOT_FOUND,
            &status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    if parts.method != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the fake serves GET only",
            ),
        );
    }
    let bad = |message: String| {
        reply(
            StatusCode::BAD_REQUEST,
            &status(StatusCode::BAD_REQUEST, "BadRequest", message),
        )
    };

    match route {
        Route::Object {
            kind,
            namespace,
            name,
        } => {
            let found = inner
                .objects
                .lock()
                .unwrap()
                .current
                .get(&(kind, namespace, name.clone()))
                .cloned();
            match found {
                Some(object) => reply(StatusCode::OK, &format.object(&object)),
                None => reply(
                    StatusCode::NOT_FOUND,
                    &status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{} \"{name}\" not found", kind.plural()),
                    ),
                ),
            }
        }
        Route::Collection { kind, namespace } => {
            if params.get("labelSelector").is_some_and(|s| !s.is_empty()) {
                return bad("labelSelector is not supported by this fake".into());
            }
            if params.get("sendInitialEvents").is_some_and(|s| s == "true") {
                return bad("sendInitialEvents is not supported by this fake".into());
            }
            let selector = match Selector::parse(
                kind,
                namespace.as_deref(),
                params.get("fieldSelector").map_or("", String::as_str),
            ) {
                Ok(s) => s,
                Err(message) => return bad(message),
            };
            if watch {
                let from = match params.get("resourceVersion").map(String::as_str) {
                    None | Some("") | Some("0") => None,
                    Some(rv) => match rv.parse::<u64>() {
                        Ok(rv) => Some(rv),
                        Err(_) => return bad(format!("invalid resource version: {rv}")),
                    },
                };
                let bookmarks = params
                    .get("allowWatchBookmarks")
                    .is_some_and(|b| b == "true");
                let timeout = match params.get("timeoutSeconds").map(|t| t.parse::<u64>()) {
                    None => Duration::from_secs(1800),
                    Some(Ok(t)) => Duration::from_secs(t),
                    Some(Err(_)) => return bad("invalid timeoutSeconds".into()),
                };
                log(StatusCode::OK);
                let (tx, rx) = mpsc::channel(256);
                let close = inner.close.lock().unwrap().clone();
                tokio::spawn(stream_watch(
                    Arc::clone(inner),
                    WatchSpec {
                        kind,
                        selector,
                        from,
                        bookmarks,
                        timeout,
                        format,
                    },
                    tx,
                    conn,
                    close,
                ));
                let mut response = Response::new(ApiBody::Stream(rx));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                return response;
            }
            if inner.hang_lists.load(Ordering::SeqCst) {
                log(StatusCode::OK);
                conn.cancelled().await;
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({}));
            }
            match list(inner, kind, &selector, &params, format) {
                Ok(body) => reply(StatusCode::OK, &body),
                Err((code, body)) => reply(code, &body),
            }
        }
    }
}

fn parse_continue(token: &str) -> Option<(u64, Key)> {
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    let rv = value.get("rv")?.as_u64()?;
    let start = value.get("start")?.as_array()?;
    let kind = Kind::from_name(start.first()?.as_str()?)?;
    let ns = start.get(1)?.as_str()?.to_string();
    let name = start.get(2)?.as_str()?.to_string();
    Some((rv, (kind, ns, name)))
}

/// Opaque to clients, like the real base64'd `{"v":…,"rv":…,"start":…}` token.
fn make_continue(rv: u64, key: &Key) -> String {
    let value = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": [key.0.name(), key.1, key.2]});
    value
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn list(
    inner: &Inner,
    kind: Kind,
    selector: &Selector,
    params: &BTreeMap<String, String>,
    format: Format,
) -> Result<Value, (StatusCode, Value)> {
    let gone = |message: String| {
        (
            StatusCode::GONE,
            status(StatusCode::GONE, "Expired", message),
        )
    };
    let bad = |message: String| {
        (
            StatusCode::BAD_REQUEST,
            status(StatusCode::BAD_REQUEST, "BadRequest", message),
        )
    };
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => 0,
        Some(Ok(l)) => l,
        Some(Err(_)) => return Err(bad("invalid limit".into())),
    };
    let rv_param = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let rv_match = params
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or("");
    let objects = inner.objects.lock().unwrap();
    let (list_rv, start, paged) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let Some((rv, start)) = parse_continue(token) else {
                return Err(bad("continue key is not valid".into()));
            };
            if rv < objects.compacted {
                return Err(gone(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter."
                        .into(),
                ));
            }
            (rv, Some(start), true)
        }
        None => match (rv_param, rv_match) {
            // "Any": the watch cache answers, whole (it does not page).
            ("0", _) => (objects.rv, None, false),
            ("", _) => (objects.rv, None, true),
            (rv, "Exact") => {
                let Ok(rv) = rv.parse::<u64>() else {
                    return Err(bad(format!("invalid resource version: {rv}")));
                };
                if rv < objects.compacted {
                    return Err(gone(format!(
                        "too old resource version: {rv} ({})",
                        objects.compacted + 1
                    )));
                }
                if rv > objects.rv {
                    return Err((
                        StatusCode::GATEWAY_TIMEOUT,
                        status(
                            StatusCode::GATEWAY_TIMEOUT,
                            "Timeout",
                            format!("Too large resource version: {rv}, current: {}", objects.rv),
                        ),
                    ));
                }
                (rv, None, true)
            }
            (rv, _) => {
                if rv.parse::<u64>().is_err() {
                    return Err(bad(format!("invalid resource version: {rv}")));
                }
                (objects.rv, None, true)
            }
        },
    };
    let snapshot = objects.snapshot(kind, list_rv);
    drop(objects);
    let matching: Vec<(&Key, &Arc<Value>)> = snapshot
        .iter()
        .filter(|(key, _)| start.as_ref().is_none_or(|s| *key > s))
        .filter(|(_, object)| selector.matches(object))
        .collect();
    let (list_kind, api_version) = format.list_kind(kind);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    let page = if paged && limit > 0 && matching.len() > limit {
        let page = matching.get(..limit).unwrap_or_default();
        if let Some((last, _)) = page.last() {
            metadata["continue"] = json!(make_continue(list_rv, last));
            metadata["remainingItemCount"] = json!(matching.len() - limit);
        }
        page
    } else {
        &matching[..]
    };
    let items: Vec<Value> = page.iter().map(|(_, object)| format.item(object)).collect();
    Ok(json!({
        "kind": list_kind,
        "apiVersion": api_version,
        "metadata": metadata,
        "items": items,
    }))
}

struct WatchSpec {
    kind: Kind,
    selector: Selector,
    /// `None`: start with the current objects as ADDED.
    from: Option<u64>,
    bookmarks: bool,
    timeout: Duration,
    format: Format,
}

/// What a change looks like to a watcher with `spec`'s selector.
fn event_for(spec: &WatchSpec, change: &Change) -> Option<Value> {
    if change.kind() != Some(spec.kind) {
        return None;
    }
    let old = change.old.as_deref().filter(|o| spec.selector.matches(o));
    let new = change.new.as_deref().filter(|n| spec.selector.matches(n));
    let (kind, object) = match (old, new, &change.new) {
        (None, Some(new), _) => ("ADDED", new.clone()),
        (Some(_), Some(new), _) => ("MODIFIED", new.clone()),
        // Deleted, or no longer matching: the previous object at the change's version.
        (Some(old), None, _) => ("DELETED", with_rv(old, change.rv)),
        (None, None, _) => return None,
    };
    Some(json!({"type": kind, "object": spec.format.object(&object)}))
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

struct ActiveWatch {
    inner: Arc<Inner>,
    kind: Kind,
}

impl Drop for ActiveWatch {
    fn drop(&mut self) {
        if let Some(n) = self
            .inner
            .active_watches
            .lock()
            .unwrap()
            .get_mut(&self.kind)
        {
            *n = n.saturating_sub(1);
        }
    }
}

async fn stream_watch(
    inner: Arc<Inner>,
    spec: WatchSpec,
    tx: mpsc::Sender<Bytes>,
    conn: CancellationToken,
    close: CancellationToken,
) {
    *inner
        .active_watches
        .lock()
        .unwrap()
        .entry(spec.kind)
        .or_insert(0) += 1;
    let _active = ActiveWatch {
        inner: Arc::clone(&inner),
        kind: spec.kind,
    };
    inner.watch_seq.fetch_add(1, Ordering::Relaxed);
    let hung = || inner.hang_watches.load(Ordering::SeqCst);
    // Hung: nothing more is sent and the stream never ends on its own.
    let hang = || async {
        tokio::select! {
            () = conn.cancelled() => {}
            () = tx.closed() => {}
        }
    };
    let mut changes = inner.changes.subscribe();
    let (backlog, mut seen_rv) = {
        let objects = inner.objects.lock().unwrap();
        match spec.from {
            None => {
                let added: Vec<Value> = objects
                    .current
                    .values()
                    .filter(|o| kind_of(o) == Some(spec.kind) && spec.selector.matches(o))
                    .map(|o| json!({"type": "ADDED", "object": spec.format.object(o)}))
                    .collect();
                (added, objects.rv)
            }
            Some(rv) if rv < objects.compacted => {
                let error = json!({
                    "type": "ERROR",
                    "object": status(StatusCode::GONE, "Expired", format!("too old resource version: {rv} ({})", objects.compacted + 1)),
                });
                (vec![error], u64::MAX)
            }
            Some(rv) => {
                let replay: Vec<Value> = objects
                    .history
                    .iter()
                    .filter(|c| c.rv > rv)
                    .filter_map(|c| event_for(&spec, c))
                    .collect();
                (replay, objects.rv.max(rv))
            }
        }
    };
    if hung() {
        return hang().await;
    }
    for event in &backlog {
        if tx.send(line(event)).await.is_err() {
            return;
        }
    }
    if seen_rv == u64::MAX {
        // The 410: the real server ends the stream after it.
        return;
    }
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let every = *inner.bookmark_interval.lock().unwrap();
    let mut bookmark = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
    bookmark.tick().await;
    loop {
        tokio::select! {
            () = conn.cancelled() => return,
            () = close.cancelled() => {
                if hung() { return hang().await; }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if hung() { return hang().await; }
                return;
            }
            () = tx.closed() => return,
            change = changes.recv() => {
                let change = match change {
                    Ok(change) => change,
                    // Too slow a watcher: the real cache terminates it too.
                    Err(_) => return,
                };
                if hung() {
                    return hang().await;
                }
                if change.rv <= seen_rv {
                    continue;
                }
                seen_rv = change.rv;
                if let Some(event) = event_for(&spec, &change)
                    && tx.send(line(&event)).await.is_err()
                {
                    return;
                }
            }
            _ = bookmark.tick() => {
                if hung() {
                    return hang().await;
                }
                if spec.bookmarks && every.is_some() {
                    let event = json!({
                        "type": "BOOKMARK",
                        "object": {
                            "kind": spec.kind.name(),
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": seen_rv.to_string()},
                        },
                    });
                    if tx.send(line(&event)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

// ---- object builders for tests ----

/// A pod as the API server stores it (scheduled to `node`, running).
pub struct PodBuilder {
    value: Value,
}

impl PodBuilder {
    pub fn new(namespace: &str, name: &str, uid: &str, node: &str) -> Self {
        Self {
            value: json!({
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uid,
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "labels": {},
                    "annotations": {},
                },
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "containerStatuses": []},
            }),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.value["metadata"]["labels"][key] = json!(value);
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.value["metadata"]["annotations"][key] = json!(value);
        self
    }

    /// The controller owner reference.
    pub fn owner(mut self, kind: &str, name: &str) -> Self {
        let api_version = match kind {
            "Job" | "CronJob" => "batch/v1",
            "Node" => "v1",
            _ => "apps/v1",
        };
        self.value["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": name, "uid": format!("{name}-uid"),
            "controller": true, "blockOwnerDeletion": true,
        }]);
        self
    }

    fn push(&mut self, spec_list: &str, status_list: &str, name: &str, image: &str, running: bool) {
        let spec = &mut self.value["spec"];
        if spec.get(spec_list).is_none() {
            spec[spec_list] = json!([]);
        }
        if let Some(list) = spec[spec_list].as_array_mut() {
            list.push(json!({"name": name, "image": image}));
        }
        if running {
            let status = &mut self.value["status"];
            if status.get(status_list).is_none() {
                status[status_list] = json!([]);
            }
            if let Some(list) = status[status_list].as_array_mut() {
                list.push(json!({
                    "name": name, "image": image, "ready": true, "restartCount": 0,
                    "imageID": format!("{image}@sha256:{:0>64}", name.len()),
                    "containerID": format!("containerd://{name}-{:0>8}", list.len()),
                    "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}},
                }));
            }
        }
    }

    /// A running container (spec and status).
    pub fn container(mut self, name: &str, image: &str) -> Self {
        self.push("containers", "containerStatuses", name, image, true);
        self
    }

    /// Sets the runtime id (`containerd://<id>`) of a running container added before, as
    /// a real runtime's 64-hex id (the default ids are short names).
    pub fn container_id(mut self, name: &str, id: &str) -> Self {
        for list in [
            "containerStatuses",
            "initContainerStatuses",
            "ephemeralContainerStatuses",
        ] {
            if let Some(statuses) = self.value["status"][list].as_array_mut() {
                for status in statuses.iter_mut().filter(|s| s["name"] == name) {
                    status["containerID"] = json!(format!("containerd://{id}"));
                }
            }
        }
        self
    }

    /// A container in the spec that has not started (no status yet).
    pub fn waiting_container(mut self, name: &str, image: &str) -> Self {
        self.push("containers", "containerStatuses", name, image, false);
        self
    }

    pub fn init_container(mut self, name: &str, image: &str) -> Self {
        self.push("initContainers", "initContainerStatuses", name, image, true);
        self
    }

    pub fn ephemeral_container(mut self, name: &str, image: &str) -> Self {
        self.push(
            "ephemeralContainers",
            "ephemeralContainerStatuses",
            name,
            image,
            true,
        );
        self
    }

    pub fn build(self) -> Value {
        self.value
    }
}

/// A namespace with labels and annotations.
pub fn namespace(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Value {
    let map = |pairs: &[(&str, &str)]| -> serde_json::Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    };
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name, "uid": format!("ns-{name}"), "labels": map(labels), "annotations": map(annotations)},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// A node with labels (and a status big enough to make metadata-only GETs worth it).
pub fn node(name: &str, labels: &[(&str, &str)]) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "uid": format!("node-{name}"), "labels": labels},
        "spec": {"podCIDR": "10.0.0.0/24"},
        "status": {"images": (0..20).map(|i| json!({"names": [format!("registry.example/image-{i}:v1")], "sizeBytes": 1_000_000})).collect::<Vec<_>>()},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let key = (Kind::Pod, "ns".to_string(), "a-b".to_string());
        let token = make_continue(42, &key);
        assert_eq!(parse_continue(&token), Some((42, key)));
        assert_eq!(parse_continue("zz"), None);
    }

    #[test]
    fn field_selectors_match_like_the_api_server() {
        let pod = PodBuilder::new("ns", "p", "u", "node-1").build();
        let s = |text: &str| Selector::parse(Kind::Pod, None, text).unwrap();
        assert!(s("spec.nodeName=node-1").matches(&pod));
        assert!(!s("spec.nodeName=node-2").matches(&pod));
        assert!(s("spec.nodeName!=node-2,metadata.namespace==ns").matches(&pod));
        assert!(Selector::parse(Kind::Pod, None, "spec.bogus=x").is_err());
        assert!(Selector::parse(Kind::Node, None, "spec.nodeName=x").is_err());
        assert!(
            !Selector::parse(Kind::Pod, Some("other"), "")
                .unwrap()
                .matches(&pod)
        );
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let spec = WatchSpec {
            kind: Kind::Pod,
            selector: Selector::parse(Kind::Pod, None, "spec.nodeName=node-1").unwrap(),
            from: Some(0),
            bookmarks: false,
            timeout: Duration::from_secs(1),
            format: Format::Full,
        };
        let unscheduled = Arc::new(PodBuilder::new("ns", "p", "u", "").build());
        let bound = Arc::new(PodBuilder::new("ns", "p", "u", "node-1").build());
        let moved = Arc::new(PodBuilder::new("ns", "p", "u", "node-2").build());
        let ev = |old: Option<&Arc<Value>>, new: Option<&Arc<Value>>| {
            event_for(
                &spec,
                &Change {
                    rv: 9,
                    old: old.cloned(),
                    new: new.cloned(),
                },
            )
            .map(|e| e["type"].as_str().unwrap_or("").to_string())
        };
        assert_eq!(ev(None, Some(&unscheduled)), None);
        assert_eq!(
            ev(Some(&unscheduled), Some(&bound)).as_deref(),
            Some("ADDED")
        );
        assert_eq!(ev(Some(&bound), Some(&bound)).as_deref(), Some("MODIFIED"));
        assert_eq!(ev(Some(&bound), Some(&moved)).as_deref(), Some("DELETED"));
        assert_eq!(ev(Some(&bound), None).as_deref(), Some("DELETED"));
    }
}
