//! The HTTP side shared by the Loki and Elasticsearch sinks: a rustls `reqwest` client
//! with the configured CA / client certificate, auth from files or env, extra headers,
//! gzip bodies, and the mapping of answers to "done / retry / refuse".

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

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
    Transient { class: &'static str, detail: String },
    /// The receiver refused the content for good (other 4xx).
    Refused { status: u16, detail: String },
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
        Ok(Self {
            sink: sink.to_string(),
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
                }
            }
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Err(e) => Outcome::Transient {
                        class: "network",
                        detail: error_chain(&e),
                    },
                    Ok(body) => classify(status, body),
                }
            }
        };
        self.metrics.request_took(started.elapsed());
        match &outcome {
            Outcome::Accepted { .. } => {}
            Outcome::Transient { class, detail } => {
                self.metrics.failure(class);
                tracing::warn!(sink = %self.sink, class, %detail, "request failed; will retry");
            }
            Outcome::Refused { status, detail } => {
                self.metrics.failure("http_4xx");
                tracing::warn!(sink = %self.sink, status, %detail, "receiver refused the request");
            }
        }
        outcome
    }
}

pub(crate) fn classify(status: u16, body: Bytes) -> Outcome {
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
        },
        401 | 403 => Outcome::Transient {
            class: "http_auth",
            detail: detail(),
        },
        408 => Outcome::Transient {
            class: "timeout",
            detail: detail(),
        },
        400..=499 => Outcome::Refused {
            status,
            detail: detail(),
        },
        _ => Outcome::Transient {
            class: "http_5xx",
            detail: detail(),
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
        assert!(matches!(classify(204, b()), Outcome::Accepted { .. }));
        assert!(matches!(
            classify(429, b()),
            Outcome::Transient {
                class: "http_429",
                ..
            }
        ));
        assert!(matches!(
            classify(503, b()),
            Outcome::Transient {
                class: "http_5xx",
                ..
            }
        ));
        assert!(matches!(
            classify(401, b()),
            Outcome::Transient {
                class: "http_auth",
                ..
            }
        ));
        assert!(
            matches!(classify(400, Bytes::from("entry out of order")), Outcome::Refused { status: 400, ref detail } if detail.contains("out of order"))
        );
        assert!(matches!(classify(413, b()), Outcome::Refused { .. }));
    }
}

/// How a request ended once transient failures were retried away.
#[derive(Debug)]
pub enum Settled {
    Accepted { status: u16, body: Bytes },
    Refused { status: u16, detail: String },
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
                Outcome::Refused { status, detail } => {
                    return Ok(Settled::Refused { status, detail });
                }
                Outcome::Transient { .. } => {
                    backoff.wait(cancel).await?;
                    self.metrics.retry(1);
                }
            }
        }
    }
}
