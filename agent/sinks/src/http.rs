//! The HTTP side shared by the Loki and Elasticsearch sinks: a rustls `reqwest` client
//! with the configured CA / client certificate, auth from files or env, extra headers,
//! gzip bodies, and the mapping of answers to "done / retry / refuse".

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue,
};

use super::config::{AuthOptions, HttpOptions};
use super::metrics::SinkMetrics;

/// Where a secret comes from. Files are re-read for every request so a rotated Secret
/// applies without a restart (a few hundred bytes per request is cheap).
#[derive(Debug, Clone)]
enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    fn from_options(
        what: &str,
        file: &Option<PathBuf>,
        env: &Option<String>,
    ) -> anyhow::Result<Self> {
        match (file, env) {
            (Some(f), None) => Ok(Self::File(f.clone())),
            (None, Some(e)) => Ok(Self::Env(e.clone())),
            _ => anyhow::bail!("auth: set exactly one of `{what}_file` or `{what}_env`"),
        }
    }

    fn read(&self) -> Result<String, String> {
        let raw = match self {
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("reading secret file {}: {e}", path.display()))?,
            Self::Env(var) => {
                std::env::var(var).map_err(|e| format!("reading secret env var {var}: {e}"))?
            }
        };
        let secret = raw.trim();
        if secret.is_empty() {
            return Err(format!("secret from {self:?} is empty"));
        }
        Ok(secret.to_string())
    }
}

#[derive(Debug, Clone)]
enum Auth {
    Basic {
        user: String,
        password: SecretSource,
    },
    Bearer(SecretSource),
    ApiKey(SecretSource),
}

impl Auth {
    fn from_options(options: &AuthOptions) -> anyhow::Result<Self> {
        Ok(match options {
            AuthOptions::Basic {
                user,
                password_file,
                password_env,
            } => Auth::Basic {
                user: user.clone(),
                password: SecretSource::from_options("password", password_file, password_env)?,
            },
            AuthOptions::Bearer {
                token_file,
                token_env,
            } => Auth::Bearer(SecretSource::from_options("token", token_file, token_env)?),
            AuthOptions::ApiKey { key_file, key_env } => {
                Auth::ApiKey(SecretSource::from_options("key", key_file, key_env)?)
            }
        })
    }

    /// Adds the credentials to `request`, reading the secret now.
    fn apply(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, String> {
        Ok(match self {
            Auth::Basic { user, password } => request.basic_auth(user, Some(password.read()?)),
            Auth::Bearer(token) => request.bearer_auth(token.read()?),
            Auth::ApiKey(key) => {
                let mut value =
                    HeaderValue::from_str(&format!("ApiKey {}", key.read()?)).map_err(|_| {
                        "the API key contains characters not allowed in a header".to_string()
                    })?;
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
        })
    }
}

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// 2xx; the body is returned for protocols that report per-item results.
    Accepted { status: u16, body: Bytes },
    /// Worth retrying: network error, timeout, 429, 5xx, 401/403 (credentials may be
    /// rotating; dropping data over a config error would be worse than stalling).
    /// `retry_after` is the receiver's `Retry-After` (429/503), honoured over the backoff.
    Transient {
        class: &'static str,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The receiver refused the content for good (other 4xx). `body` is the whole answer
    /// (capped) for protocols that name the refused items in it (Loki).
    Refused {
        status: u16,
        detail: String,
        body: Bytes,
    },
}

/// Answers are read up to this many bytes: a receiver streaming a huge body cannot
/// exhaust memory. A bulk answer for the largest request we send is far smaller; a cut
/// answer is unreadable and handled as a bad response.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Longest `Retry-After` we obey: a receiver asking for an hour is more likely
/// misconfigured than right, and the backoff cap applies after it anyway.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `Retry-After` as delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let now = chrono::Utc::now();
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Reads at most `cap` bytes of `response`'s body; `true` when the body was longer.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Bytes, bool), reqwest::Error> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body.freeze(), true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), false))
}

/// Gzips a request body. Level 1: on a node agent CPU is the scarcer resource, and
/// log text still shrinks several-fold.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    enc.write_all(body).expect("gzip into Vec");
    enc.finish().expect("gzip into Vec")
}

/// A configured client for one sink.
pub struct HttpClient {
    sink: String,
    /// Set while the receiver refuses our credentials or tenant (401/403), with when we
    /// last warned about it.
    refused_auth: std::sync::Mutex<Option<Instant>>,
    client: reqwest::Client,
    auth: Option<Auth>,
    headers: HeaderMap,
    gzip: bool,
    pub metrics: SinkMetrics,
}

impl HttpClient {
    pub fn new(sink: &str, options: &HttpOptions, metrics: SinkMetrics) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout())
            .connect_timeout(options.timeout().min(std::time::Duration::from_secs(10)))
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("node-agent/", env!("CARGO_PKG_VERSION")));
        let tls = &options.tls;
        if let Some(ca) = &tls.ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("reading tls.ca_file {}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing tls.ca_file {}", ca.display()))?;
            if certs.is_empty() {
                anyhow::bail!("tls.ca_file {} holds no PEM certificate", ca.display());
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            let mut pem = std::fs::read(cert)
                .with_context(|| format!("reading tls.cert_file {}", cert.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .with_context(|| format!("reading tls.key_file {}", key.display()))?,
            );
            let identity = reqwest::Identity::from_pem(&pem)
                .context("parsing the client certificate and key")?;
            builder = builder.identity(identity);
        }
        if tls.insecure_skip_verify {
            tracing::warn!(
                sink,
                "tls.insecure_skip_verify is on: server certificates are not checked"
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder.build().context("building the HTTP client")?;

        let auth = options.auth.as_ref().map(Auth::from_options).transpose()?;
        if let Some(auth) = &auth {
            // Fail at start-up on a missing secret rather than stalling silently later.
            auth.apply(client.post("http://localhost/"))
                .map(drop)
                .map_err(|e| anyhow::anyhow!("auth: {e}"))?;
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &options.headers {
            let name = HeaderName::try_from(name.as_str())
                .with_context(|| format!("header name {name:?}"))?;
            let value =
                HeaderValue::from_str(value).with_context(|| format!("header {name} value"))?;
            headers.insert(name, value);
        }
        node_agent_core::health::set(&health_name(sink), node_agent_core::health::State::Up);
        Ok(Self {
            sink: sink.to_string(),
            refused_auth: std::sync::Mutex::new(None),
            client,
            auth,
            headers,
            gzip: options.gzip,
            metrics,
        })
    }

    /// Whether bodies go out gzip'd (some protocols compress on their own instead).
    pub fn gzip(&self) -> bool {
        self.gzip
    }

    /// Sends one POST of an encoded (and possibly compressed) body.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        content_type: &'static str,
        body: Bytes,
        body_gzipped: bool,
        extra: &[(&'static str, &str)],
    ) -> Outcome {
        let mut request = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, content_type);
        if body_gzipped {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        if let Some(auth) = &self.auth {
            match auth.apply(request) {
                Ok(with_auth) => request = with_auth,
                Err(detail) => {
                    return Outcome::Transient {
                        class: "auth",
                        detail,
                        retry_after: None,
                    };
                }
            }
        }
        let started = Instant::now();
        let response = request.body(body).send().await;
        let outcome = match response {
            Err(e) => {
                let class = if e.is_timeout() { "timeout" } else { "network" };
                Outcome::Transient {
                    class,
                    detail: error_chain(&e),
                    retry_after: None,
                }
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                match read_capped(response, MAX_RESPONSE_BYTES).await {
                    Err(e) => Outcome::Transient {
                        class: "network",
                        detail: error_chain(&e),
                        retry_after: None,
                    },
                    Ok((body, cut)) => {
                        if cut {
                            tracing::warn!(sink = %self.sink, status, cap = MAX_RESPONSE_BYTES,
                                "response body over the cap; read only its start");
                        }
                        classify(status, body, retry_after)
                    }
                }
            }
        };
        self.metrics.request_took(started.elapsed());
        self.track_auth(&outcome);
        match &outcome {
            Outcome::Accepted { .. } => {}
            Outcome::Transient {
                class: class @ ("http_auth" | "auth"),
                ..
            } => self.metrics.failure(class),
            Outcome::Transient {
                class,
                detail,
                retry_after,
            } => {
                self.metrics.failure(class);
                tracing::warn!(sink = %self.sink, class, %detail, ?retry_after, "request failed; will retry");
            }
            Outcome::Refused { status, detail, .. } => {
                self.metrics.failure("http_4xx");
                tracing::warn!(sink = %self.sink, status, %detail, "receiver refused the request");
            }
        }
        outcome
    }
}

/// The `/healthz` subsystem (and `node_agent_subsystem_up` label) of a sink.
pub fn health_name(sink: &str) -> String {
    format!("sink/{sink}")
}

/// How often a sink still refused for its credentials says so.
const AUTH_WARNING_EVERY: Duration = Duration::from_secs(60);

impl HttpClient {
    /// A 401/403 (or a secret we cannot read) makes the sink unhealthy until a request
    /// gets past authentication again; it keeps retrying (nothing is lost) and warns once
    /// a minute instead of at every retry.
    fn track_auth(&self, outcome: &Outcome) {
        use node_agent_core::health::{State, set};
        let mut refused = self
            .refused_auth
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        match outcome {
            Outcome::Transient {
                class: "http_auth" | "auth",
                detail,
                ..
            } => {
                let now = Instant::now();
                let due = refused.is_none_or(|last| now.duration_since(last) >= AUTH_WARNING_EVERY);
                if refused.is_none() {
                    set(
                        &health_name(&self.sink),
                        State::Degraded(format!(
                            "the receiver refuses our credentials or tenant: {detail}"
                        )),
                    );
                }
                if due {
                    tracing::warn!(sink = %self.sink, %detail,
                        "the receiver refuses our credentials or tenant (check auth/tenant); retrying, nothing is dropped");
                    *refused = Some(now);
                }
            }
            Outcome::Transient {
                class: "network" | "timeout",
                ..
            } => {}
            _ => {
                if refused.take().is_some() {
                    tracing::info!(sink = %self.sink, "the receiver accepts our credentials again");
                    set(&health_name(&self.sink), State::Up);
                }
            }
        }
    }
}

pub(crate) fn classify(status: u16, body: Bytes, retry_after: Option<Duration>) -> Outcome {
    let detail = || {
        format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)]).trim()
        )
    };
    match status {
        200..=299 => Outcome::Accepted { status, body },
        429 => Outcome::Transient {
            class: "http_429",
            detail: detail(),
            retry_after,
        },
        401 | 403 => Outcome::Transient {
            class: "http_auth",
            detail: detail(),
            retry_after: None,
        },
        408 => Outcome::Transient {
            class: "timeout",
            detail: detail(),
            retry_after: None,
        },
        400..=499 => Outcome::Refused {
            status,
            detail: detail(),
            body,
        },
        _ => Outcome::Transient {
            class: "http_5xx",
            detail: detail(),
            retry_after,
        },
    }
}

/// `reqwest` errors hide the useful part (connection refused, certificate unknown) in
/// their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let b = Bytes::new;
        assert!(matches!(classify(204, b(), None), Outcome::Accepted { .. }));
        assert!(matches!(
            classify(429, b(), Some(Duration::from_secs(3))),
            Outcome::Transient {
                class: "http_429",
                retry_after: Some(d),
                ..
            } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(503, b(), None),
            Outcome::Transient {
                class: "http_5xx",
                ..
            }
        ));
        assert!(matches!(
            classify(401, b(), Some(Duration::from_secs(9))),
            Outcome::Transient {
                class: "http_auth",
                retry_after: None,
                ..
            }
        ));
        assert!(
            matches!(classify(400, Bytes::from("entry out of order"), None), Outcome::Refused { status: 400, ref detail, .. } if detail.contains("out of order"))
        );
        assert!(matches!(classify(413, b(), None), Outcome::Refused { .. }));
    }

    #[test]
    fn parses_retry_after() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc2822();
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d > Duration::from_secs(50) && d <= Duration::from_secs(60),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn huge_answers_are_read_up_to_the_cap() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 1 << 16];
            // Far more than the cap; the client stops reading at the cap.
            for _ in 0..(MAX_RESPONSE_BYTES / chunk.len() + 64) {
                let head = format!("{:x}\r\n", chunk.len());
                if s.write_all(head.as_bytes()).await.is_err()
                    || s.write_all(&chunk).await.is_err()
                    || s.write_all(b"\r\n").await.is_err()
                {
                    return;
                }
            }
        });
        let client = HttpClient::new(
            "cap-test",
            &HttpOptions {
                url: format!("http://{addr}"),
                ..HttpOptions::default()
            },
            SinkMetrics::new("cap-test"),
        )
        .unwrap();
        let url = reqwest::Url::parse(&format!("http://{addr}/")).unwrap();
        match client
            .post(&url, "text/plain", Bytes::from_static(b"x"), false, &[])
            .await
        {
            Outcome::Accepted { body, .. } => assert_eq!(body.len(), MAX_RESPONSE_BYTES),
            other => panic!("{other:?}"),
        }
    }
}

/// How a request ended once transient failures were retried away.
#[derive(Debug)]
pub enum Settled {
    Accepted {
        status: u16,
        body: Bytes,
    },
    Refused {
        status: u16,
        detail: String,
        body: Bytes,
    },
}

impl HttpClient {
    /// Sends until the receiver accepts or refuses for good, backing off between
    /// transient failures; `Cancelled` as soon as `cancel` fires (even mid-request).
    #[allow(clippy::too_many_arguments)]
    pub async fn send_until_settled(
        &self,
        url: &reqwest::Url,
        content_type: &'static str,
        body: Bytes,
        body_gzipped: bool,
        extra: &[(&'static str, &str)],
        backoff: &mut node_agent_core::backoff::Backoff,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<Settled, super::SinkError> {
        loop {
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return Err(super::SinkError::Cancelled),
                outcome = self.post(url, content_type, body.clone(), body_gzipped, extra) => outcome,
            };
            match outcome {
                Outcome::Accepted { status, body } => {
                    return Ok(Settled::Accepted { status, body });
                }
                Outcome::Refused {
                    status,
                    detail,
                    body,
                } => {
                    return Ok(Settled::Refused {
                        status,
                        detail,
                        body,
                    });
                }
                Outcome::Transient { retry_after, .. } => {
                    // The receiver's own pacing wins over ours when it is longer.
                    let ours = backoff.next_delay();
                    let delay = retry_after.map_or(ours, |theirs| theirs.max(ours));
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(super::SinkError::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    self.metrics.retry(1);
                }
            }
        }
    }
}
