//! The `kube` client: in-cluster (service-account token and CA, `KUBERNETES_SERVICE_HOST/PORT`)
//! or from a kubeconfig, with one tower layer of ours that
//! - sets the in-cluster bearer token, re-read as soon as the token file changes, and
//! - counts list/watch/get requests per resource and notices a watch that is live again.
//!
//! Why our own token handling: kube's in-cluster `TokenFile` re-reads the file on a
//! 60 s timer only, so after kubelet (or an admin) replaces a token that the API server
//! already refuses, up to a minute of requests fail with 401 and the watch backoff
//! grows. A `stat` per request (requests are a few per minute) notices the new file at
//! once. Like client-go, a token that cannot be re-read keeps the last one read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tower::{Layer, Service};

use crate::config::KubeConfig;
use crate::health::{Health, Resource, Verb};

/// Why the cache could not start. Retrying does not help: the configuration or the
/// pod's mounts are wrong.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid kubernetes config: {0}")]
    Config(#[from] crate::config::ConfigErrors),
    #[error("kubernetes.node_name is empty (set NODE_NAME from the Downward API)")]
    NoNodeName,
    #[error(
        "not in a cluster: KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set (set kubernetes.kubeconfig or kubernetes.api_server_url)"
    )]
    NotInCluster,
    #[error("invalid API server URL {url:?}")]
    BadUrl { url: String },
    #[error("reading the CA bundle {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA bundle {path} holds no PEM certificate")]
    CaEmpty { path: PathBuf },
    #[error("reading the service-account token {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// `https://host:port` from `KUBERNETES_SERVICE_HOST`/`_PORT` (IPv6 hosts bracketed).
pub fn in_cluster_url(host: &str, port: &str) -> Result<String, StartError> {
    let bad = || StartError::BadUrl {
        url: format!("{host}:{port}"),
    };
    let port: u16 = port.trim().parse().map_err(|_| bad())?;
    let host = host.trim();
    if host.is_empty() {
        return Err(bad());
    }
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Ok(format!("https://{host}:{port}"))
}

pub(crate) async fn build(
    config: &KubeConfig,
    health: Arc<Health>,
) -> Result<kube::Client, StartError> {
    let (mut kube_config, token) = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| StartError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            let options = KubeConfigOptions {
                context: config.kubeconfig_context.clone(),
                ..KubeConfigOptions::default()
            };
            let c = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| StartError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?;
            (c, None)
        }
        None => {
            let url = match &config.api_server_url {
                Some(url) => url.clone(),
                None => {
                    let host = std::env::var("KUBERNETES_SERVICE_HOST")
                        .map_err(|_| StartError::NotInCluster)?;
                    let port = std::env::var("KUBERNETES_SERVICE_PORT")
                        .map_err(|_| StartError::NotInCluster)?;
                    in_cluster_url(&host, &port)?
                }
            };
            let uri: http::Uri = url
                .parse()
                .map_err(|_| StartError::BadUrl { url: url.clone() })?;
            let mut c = kube::Config::new(uri);
            c.root_cert = Some(read_ca(&config.ca_file)?);
            // kube re-reads this file periodically, for CA rotation.
            c.root_cert_file = Some(config.ca_file.clone());
            c.default_namespace = "default".into();
            let token = TokenFile::open(&config.token_file)?;
            (c, Some(Arc::new(token)))
        }
    };
    kube_config.connect_timeout = Some(config.connect_timeout);
    // The watcher restarts a silent watch after watch_timeout + 5 s; this catches a
    // list or GET that never answers. Counted from the request's write, not from when a
    // pooled connection went idle.
    kube_config.read_timeout = Some(config.watch_timeout + Duration::from_secs(10));
    kube_config.reset_reader_on_write = true;
    let builder = ClientBuilder::try_from(kube_config).map_err(StartError::Client)?;
    Ok(builder.with_layer(&ApiLayer { token, health }).build())
}

fn read_ca(path: &Path) -> Result<Vec<Vec<u8>>, StartError> {
    let pem = std::fs::read(path).map_err(|source| StartError::CaFile {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .map(|c| c.as_ref().to_vec())
        .collect();
    if certs.is_empty() {
        return Err(StartError::CaEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// What identifies one version of the token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    dev: u64,
    ino: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: m.modified().ok(),
            len: m.len(),
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

#[derive(Debug, Default)]
struct Cached {
    stamp: Option<Stamp>,
    header: Option<HeaderValue>,
}

/// The service-account token, re-read when its file changes (kubelet swaps a symlink,
/// so the followed file's inode changes).
#[derive(Debug)]
pub(crate) struct TokenFile {
    path: PathBuf,
    cached: Mutex<Cached>,
}

impl TokenFile {
    /// Reads it once now, so a missing mount fails at start.
    pub fn open(path: &Path) -> Result<Self, StartError> {
        let token = Self {
            path: path.to_path_buf(),
            cached: Mutex::default(),
        };
        std::fs::read_to_string(path).map_err(|source| StartError::TokenFile {
            path: path.to_path_buf(),
            source,
        })?;
        token.header();
        Ok(token)
    }

    /// `Bearer <token>`; `None` if no token could ever be read.
    pub fn header(&self) -> Option<HeaderValue> {
        let stamp = Stamp::of(&self.path);
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if stamp.is_some() && stamp == cached.stamp && cached.header.is_some() {
            return cached.header.clone();
        }
        let fresh = std::fs::read_to_string(&self.path).ok().and_then(|text| {
            let token = text.trim();
            if token.is_empty() {
                return None;
            }
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
            value.set_sensitive(true);
            Some(value)
        });
        if let Some(value) = fresh {
            cached.header = Some(value);
            cached.stamp = stamp;
        }
        cached.header.clone()
    }
}

/// Which of our resources a request is for, and its verb.
fn classify(uri: &http::Uri) -> Option<(Resource, Verb)> {
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let path = uri.path().trim_end_matches('/');
    let (resource, named) = match path {
        "/api/v1/pods" => (Resource::Pods, false),
        "/api/v1/namespaces" => (Resource::Namespaces, false),
        "/api/v1/nodes" => (Resource::Node, false),
        p if p.starts_with("/api/v1/nodes/") => (Resource::Node, true),
        _ => return None,
    };
    let verb = match (watch, named) {
        (true, _) => Verb::Watch,
        (false, true) => Verb::Get,
        (false, false) => Verb::List,
    };
    Some((resource, verb))
}

#[derive(Clone)]
struct ApiLayer {
    token: Option<Arc<TokenFile>>,
    health: Arc<Health>,
}

impl<S> Layer<S> for ApiLayer {
    type Service = ApiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiService {
            inner,
            token: self.token.clone(),
            health: Arc::clone(&self.health),
        }
    }
}

struct ApiService<S> {
    inner: S,
    token: Option<Arc<TokenFile>>,
    health: Arc<Health>,
}

impl<S, B> Service<Request<kube::client::Body>> for ApiService<S>
where
    S: Service<Request<kube::client::Body>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<kube::client::Body>) -> Self::Future {
        if let Some(header) = self.token.as_ref().and_then(|t| t.header()) {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, header);
        }
        let class = classify(request.uri());
        if let Some((resource, verb)) = class {
            self.health.request(resource, verb);
        }
        let health = Arc::clone(&self.health);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            if let (Some((resource, Verb::Watch)), Ok(r)) = (class, &response)
                && r.status().is_success()
            {
                health.watch_established(resource);
            }
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_cluster_url_from_env_values() {
        assert_eq!(
            in_cluster_url("10.96.0.1", "443").unwrap(),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            in_cluster_url("fd00::1", "6443").unwrap(),
            "https://[fd00::1]:6443"
        );
        assert!(in_cluster_url("10.96.0.1", "https").is_err());
        assert!(in_cluster_url("", "443").is_err());
    }

    #[test]
    fn requests_are_classified_by_path_and_watch_flag() {
        let c = |s: &str| classify(&s.parse().unwrap());
        assert_eq!(
            c("/api/v1/pods?fieldSelector=spec.nodeName%3Dn&limit=500"),
            Some((Resource::Pods, Verb::List))
        );
        assert_eq!(
            c("/api/v1/pods?watch=true&resourceVersion=5"),
            Some((Resource::Pods, Verb::Watch))
        );
        assert_eq!(
            c("/api/v1/namespaces?watch=true"),
            Some((Resource::Namespaces, Verb::Watch))
        );
        assert_eq!(
            c("/api/v1/nodes/node-1?resourceVersion=0"),
            Some((Resource::Node, Verb::Get))
        );
        assert_eq!(c("/api/v1/namespaces/default/pods"), None);
    }

    #[test]
    fn token_is_reread_when_the_file_changes_and_kept_when_it_vanishes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("token");
        std::fs::write(&path, "one\n").unwrap();
        let token = TokenFile::open(&path).unwrap();
        assert_eq!(token.header().unwrap(), "Bearer one");
        // kubelet's atomic writer: a new file renamed over the old one.
        let next = dir.join("token.new");
        std::fs::write(&next, "two").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(token.header().unwrap(), "Bearer two");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(token.header().unwrap(), "Bearer two");
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(
            token.header().unwrap(),
            "Bearer two",
            "an empty token is not used"
        );
        assert!(matches!(
            TokenFile::open(&dir.join("missing")),
            Err(StartError::TokenFile { .. })
        ));
    }
}
