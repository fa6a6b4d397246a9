//! `--web.config.file`: the Prometheus exporter-toolkit web configuration that
//! node_exporter reads (TLS, client certificates, basic auth, extra response headers), in
//! the same YAML format, so an existing file carries over unchanged.
//!
//! Differences, each forced by rustls and reported at start-up rather than silently:
//! TLS 1.0/1.1 do not exist here (`min_version: TLS10`/`TLS11` means TLS 1.2, with a
//! warning), Go cipher suites rustls does not implement (CBC, RSA key exchange) are left
//! out with a warning, and `http2` is accepted but the server speaks HTTP/1.1 only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::Deserialize;

/// The file as written (exporter-toolkit's `Config`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    tls_server_config: TlsFile,
    http_server_config: HttpFile,
    basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TlsFile {
    cert_file: String,
    key_file: String,
    /// Inline PEM (exporter-toolkit ≥ 0.10).
    cert: String,
    key: String,
    client_auth_type: String,
    client_ca_file: String,
    client_ca: String,
    cipher_suites: Vec<String>,
    curve_preferences: Vec<String>,
    min_version: String,
    max_version: String,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    headers: BTreeMap<String, String>,
}

/// What the server does with the file, validated.
#[derive(Clone, Default)]
pub struct WebServerSettings {
    pub tls: Option<Arc<ServerConfig>>,
    /// user → bcrypt hash; empty means no authentication.
    pub basic_auth_users: BTreeMap<String, String>,
    /// Extra headers added to every response.
    pub headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// Things the file asks for that this server does differently (logged at start-up).
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for WebServerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the hashes.
        f.debug_struct("WebServerSettings")
            .field("tls", &self.tls.is_some())
            .field(
                "basic_auth_users",
                &self.basic_auth_users.keys().collect::<Vec<_>>(),
            )
            .field("headers", &self.headers)
            .finish()
    }
}

/// Headers exporter-toolkit allows in `http_server_config.headers`; the others would let
/// the file break the exposition (Content-Type, Content-Encoding...).
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// Reads and validates a web config file; relative paths inside it are relative to the
/// file's directory, as in exporter-toolkit.
pub fn load(path: &Path) -> anyhow::Result<WebServerSettings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --web.config.file {}", path.display()))?;
    parse(&text, path.parent().unwrap_or(Path::new(".")))
        .with_context(|| format!("in --web.config.file {}", path.display()))
}

/// Parses the YAML text of a web config file; `base` resolves relative file names.
pub fn parse(text: &str, base: &Path) -> anyhow::Result<WebServerSettings> {
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            anyhow::anyhow!("invalid YAML at {at}: {}", e.into_inner())
        })?
    };
    let mut settings = WebServerSettings::default();
    for (user, hash) in &file.basic_auth_users {
        if user.contains(':') {
            bail!("basic_auth_users: user name {user:?} contains ':'");
        }
        hash.parse::<bcrypt::HashParts>()
            .map_err(|e| anyhow::anyhow!("basic_auth_users.{user}: not a bcrypt hash: {e}"))?;
    }
    settings.basic_auth_users = file.basic_auth_users;
    for (name, value) in &file.http_server_config.headers {
        let Some(allowed) = ALLOWED_HEADERS
            .iter()
            .find(|h| h.eq_ignore_ascii_case(name))
        else {
            bail!(
                "http_server_config.headers: {name:?} is not allowed (allowed: {})",
                ALLOWED_HEADERS.join(", ")
            );
        };
        let header_name =
            hyper::header::HeaderName::from_bytes(allowed.as_bytes()).context("header name")?;
        let header_value = hyper::header::HeaderValue::from_str(value)
            .with_context(|| format!("http_server_config.headers.{name}: invalid value"))?;
        settings.headers.push((header_name, header_value));
    }
    if file.http_server_config.http2 == Some(true) {
        settings
            .warnings
            .push("http_server_config.http2: this server speaks HTTP/1.1 only".into());
    }
    settings.tls = tls_config(&file.tls_server_config, base, &mut settings.warnings)
        .context("tls_server_config")?
        .map(Arc::new);
    Ok(settings)
}

fn resolve(base: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn certs(
    base: &Path,
    file: &str,
    inline: &str,
    what: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = if !inline.is_empty() {
        CertificateDer::pem_slice_iter(inline.as_bytes())
            .collect::<Result<_, _>>()
            .with_context(|| format!("{what}: invalid PEM"))?
    } else {
        let path = resolve(base, file);
        CertificateDer::pem_file_iter(&path)
            .with_context(|| format!("{what}: reading {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{what}: invalid PEM in {}", path.display()))?
    };
    if certs.is_empty() {
        bail!("{what}: no certificate found");
    }
    Ok(certs)
}

fn private_key(tls: &TlsFile, base: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    if !tls.key.is_empty() {
        return PrivateKeyDer::from_pem_slice(tls.key.as_bytes()).context("key: invalid PEM");
    }
    let path = resolve(base, &tls.key_file);
    PrivateKeyDer::from_pem_file(&path)
        .with_context(|| format!("key_file: no private key read from {}", path.display()))
}

fn version(text: &str, key: &str) -> anyhow::Result<u8> {
    Ok(match text {
        "TLS10" => 10,
        "TLS11" => 11,
        "TLS12" => 12,
        "TLS13" => 13,
        other => bail!("{key}: unknown TLS version {other:?} (TLS10, TLS11, TLS12 or TLS13)"),
    })
}

/// Go's TLS 1.2 cipher suite names that rustls does not implement: accepted (the list in a
/// file written for node_exporter must not stop the agent) and left out with a warning.
const GO_ONLY_SUITES: [&str; 17] = [
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA256",
];

fn provider(tls: &TlsFile, warnings: &mut Vec<String>) -> anyhow::Result<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    if !tls.cipher_suites.is_empty() {
        // As in Go, the list configures TLS 1.2 only; TLS 1.3 suites are always on.
        let mut chosen = Vec::new();
        for name in &tls.cipher_suites {
            // Go's pre-1.16 names for the ChaCha20 suites.
            let canonical = match name.as_str() {
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
                    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
                }
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
                    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
                }
                other => other,
            };
            if let Some(suite) = provider
                .cipher_suites
                .iter()
                .find(|s| format!("{:?}", s.suite()) == canonical)
            {
                if suite.tls13().is_none() && !chosen.contains(suite) {
                    chosen.push(*suite);
                }
            } else if GO_ONLY_SUITES.contains(&canonical) {
                warnings.push(format!(
                    "tls_server_config.cipher_suites: {name} is not supported here; left out"
                ));
            } else {
                bail!("cipher_suites: unknown cipher suite {name:?}");
            }
        }
        let tls13: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        provider.cipher_suites = chosen.into_iter().chain(tls13).collect();
    }
    if !tls.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for name in &tls.curve_preferences {
            let wanted = match name.as_str() {
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP521" => {
                    warnings.push(
                        "tls_server_config.curve_preferences: CurveP521 is not supported here; left out"
                            .into(),
                    );
                    continue;
                }
                other => bail!("curve_preferences: unknown curve {other:?}"),
            };
            if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == wanted) {
                groups.push(*g);
            }
        }
        if groups.is_empty() {
            bail!("curve_preferences: none of the curves is supported");
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

fn tls_config(
    tls: &TlsFile,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<ServerConfig>> {
    let has_cert = !tls.cert_file.is_empty() || !tls.cert.is_empty();
    let has_key = !tls.key_file.is_empty() || !tls.key.is_empty();
    let has_ca = !tls.client_ca_file.is_empty() || !tls.client_ca.is_empty();
    if !has_cert && !has_key && tls.client_auth_type.is_empty() && !has_ca {
        return Ok(None);
    }
    if !has_cert {
        bail!("missing cert_file");
    }
    if !has_key {
        bail!("missing key_file");
    }
    let min = match tls.min_version.as_str() {
        "" => 12,
        v => version(v, "min_version")?,
    };
    let max = match tls.max_version.as_str() {
        "" => 13,
        v => version(v, "max_version")?,
    };
    if min > max {
        bail!("min_version is above max_version");
    }
    if max < 12 {
        bail!(
            "max_version {}: TLS 1.0 and 1.1 are not supported",
            tls.max_version
        );
    }
    if min < 12 {
        warnings.push(format!(
            "tls_server_config.min_version {}: TLS 1.0 and 1.1 are not supported; TLS 1.2 is the minimum",
            tls.min_version
        ));
    }
    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    if min <= 12 {
        versions.push(&rustls::version::TLS12);
    }
    if max >= 13 {
        versions.push(&rustls::version::TLS13);
    }
    let provider = Arc::new(provider(tls, warnings)?);
    if max == 12 && !provider.cipher_suites.iter().any(|s| s.tls13().is_none()) {
        bail!("cipher_suites: no supported TLS 1.2 cipher suite left");
    }

    let roots = if has_ca {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(base, &tls.client_ca_file, &tls.client_ca, "client_ca_file")? {
            roots.add(cert).context("client_ca_file: unusable CA")?;
        }
        Some(Arc::new(roots))
    } else {
        None
    };
    let verifying = |allow_unauthenticated: bool| -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
        let Some(roots) = roots.clone() else {
            bail!(
                "client_auth_type {} needs client_ca_file",
                tls.client_auth_type
            );
        };
        let builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider));
        let builder = if allow_unauthenticated {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        let verifier: Arc<dyn ClientCertVerifier> =
            builder.build().context("client certificate verifier")?;
        Ok(verifier)
    };
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match tls.client_auth_type.as_str() {
        "" | "NoClientCert" => {
            if has_ca {
                bail!("Client CA's have been configured without a Client Auth Policy");
            }
            None
        }
        "RequestClientCert" => Some(Arc::new(AnyClientCert::new(&provider, false))),
        "RequireAnyClientCert" | "RequireClientCert" => {
            Some(Arc::new(AnyClientCert::new(&provider, true)))
        }
        "VerifyClientCertIfGiven" => Some(verifying(true)?),
        "RequireAndVerifyClientCert" => Some(verifying(false)?),
        other => bail!("client_auth_type: invalid value {other:?}"),
    };
    if !tls.client_allowed_sans.is_empty() {
        // exporter-toolkit ≥ 0.9 (after node_exporter 1.5.0); refusing beats ignoring it.
        bail!("client_allowed_sans is not supported");
    }

    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .context("TLS versions")?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let resolver = ReloadingCert::new(tls, base, Arc::clone(&provider))?;
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    // Go's default (and exporter-toolkit's) is the server's order.
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// The server certificate, read again when `cert_file` or `key_file` changes (checked at
/// each TLS handshake, two stat calls), as exporter-toolkit re-reads its files per
/// connection: a certificate rotated by cert-manager or a renewed Secret takes effect
/// without a restart. A pair that fails to load keeps the previous one, with a warning.
#[derive(Debug)]
struct ReloadingCert {
    /// `None` for inline `cert`/`key`, which never change.
    files: Option<(PathBuf, PathBuf)>,
    base: PathBuf,
    inline: (String, String),
    provider: Arc<CryptoProvider>,
    current: std::sync::Mutex<(Option<FileStamp>, Arc<rustls::sign::CertifiedKey>)>,
}

/// What identifies a version of the two files (a Secret volume swaps a symlink: the
/// inode changes).
type FileStamp = [(u64, i64, i64, u64); 2];

fn stamp(paths: &(PathBuf, PathBuf)) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let one = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
    };
    Some([one(&paths.0)?, one(&paths.1)?])
}

impl ReloadingCert {
    fn new(tls: &TlsFile, base: &Path, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let files = (tls.cert.is_empty() && tls.key.is_empty())
            .then(|| (resolve(base, &tls.cert_file), resolve(base, &tls.key_file)));
        let stamp_now = files.as_ref().and_then(stamp);
        let inline = (tls.cert.clone(), tls.key.clone());
        let key = load_pair(files.as_ref(), &inline, base, &provider)?;
        Ok(Self {
            files,
            base: base.to_path_buf(),
            inline,
            provider,
            current: std::sync::Mutex::new((stamp_now, Arc::new(key))),
        })
    }

    fn load(&self) -> anyhow::Result<rustls::sign::CertifiedKey> {
        load_pair(
            self.files.as_ref(),
            &self.inline,
            &self.base,
            &self.provider,
        )
    }
}

fn load_pair(
    files: Option<&(PathBuf, PathBuf)>,
    inline: &(String, String),
    base: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let tls = TlsFile {
        cert_file: files.map(|f| f.0.display().to_string()).unwrap_or_default(),
        key_file: files.map(|f| f.1.display().to_string()).unwrap_or_default(),
        cert: inline.0.clone(),
        key: inline.1.clone(),
        ..TlsFile::default()
    };
    let chain = certs(base, &tls.cert_file, &tls.cert, "cert_file")?;
    rustls::sign::CertifiedKey::from_der(chain, private_key(&tls, base)?, provider)
        .context("cert_file and key_file do not make a usable certificate")
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(files) = &self.files {
            let now = stamp(files);
            if now.is_some() && now != current.0 {
                current.0 = now;
                match self.load() {
                    Ok(key) => {
                        tracing::info!(cert_file = %files.0.display(), "TLS certificate reloaded");
                        current.1 = Arc::new(key);
                    }
                    Err(err) => tracing::warn!(
                        error = format!("{err:#}"),
                        "TLS certificate changed but cannot be loaded; keeping the previous one"
                    ),
                }
            }
        }
        Some(Arc::clone(&current.1))
    }
}

/// `RequestClientCert` / `RequireAnyClientCert`: a client certificate is asked for (and
/// for the latter required) but not verified against a CA, as in Go; its signature over
/// the handshake is still checked, so the client holds the key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    fn new(provider: &CryptoProvider, mandatory: bool) -> Self {
        Self {
            mandatory,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Checks `Authorization: Basic ...` against the bcrypt hashes. bcrypt costs tens of
/// milliseconds by design, so (as exporter-toolkit does) a successful check is cached:
/// keyed by a randomly keyed hash of user, password and stored hash, bounded in size.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    hasher: std::collections::hash_map::RandomState,
    verified: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Checked for unknown users so that the answer takes as long as for a known one (no
    /// user enumeration by timing): made on first need, at the users' lowest cost.
    dummy: std::sync::OnceLock<String>,
    dummy_cost: u32,
}

/// Successful credentials remembered at most; the cache is emptied when full.
const AUTH_CACHE_MAX: usize = 256;

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> Self {
        let dummy_cost = users
            .values()
            .filter_map(|h| h.parse::<bcrypt::HashParts>().ok())
            .map(|p| p.get_cost())
            .min()
            .unwrap_or(bcrypt::DEFAULT_COST);
        Self {
            dummy: Default::default(),
            dummy_cost,
            users,
            hasher: Default::default(),
            verified: Default::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether the `Authorization` header value grants access. Blocking (bcrypt).
    pub fn check(&self, authorization: Option<&[u8]>) -> bool {
        use base64::Engine as _;
        use std::hash::BuildHasher as _;
        let Some(encoded) = authorization.and_then(|v| {
            let v = std::str::from_utf8(v).ok()?;
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        }) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return false;
        };
        let Some(hash) = self.users.get(user) else {
            let dummy = self
                .dummy
                .get_or_init(|| bcrypt::hash("dummy", self.dummy_cost).unwrap_or_default());
            let _ = bcrypt::verify(password, dummy);
            return false;
        };
        let key = self.hasher.hash_one((user, password, hash));
        if let Ok(verified) = self.verified.lock()
            && verified.contains(&key)
        {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false);
        if ok && let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= AUTH_CACHE_MAX {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let c = dir.join("c.pem");
        let k = dir.join("k.pem");
        std::fs::write(&c, cert.cert.pem()).unwrap();
        std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn empty_file_means_plain_http_without_auth() {
        let s = parse("", Path::new("/")).unwrap();
        assert!(s.tls.is_none());
        assert!(s.basic_auth_users.is_empty());
        let s = parse("tls_server_config: {}\n", Path::new("/")).unwrap();
        assert!(s.tls.is_none());
    }

    #[test]
    fn tls_with_relative_paths_versions_and_suites() {
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path());
        let yaml = "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  min_version: TLS10\n  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305]\n  curve_preferences: [X25519, CurveP521]\n";
        let s = parse(yaml, dir.path()).unwrap();
        assert!(s.tls.is_some());
        assert_eq!(s.warnings.len(), 3, "{:?}", s.warnings);
        let err = parse(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  cipher_suites: [NOPE]\n",
            dir.path(),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("NOPE"), "{err:#}");
    }

    #[test]
    fn bad_files_are_rejected_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path());
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        std::fs::write(
            dir.path().join("other-key.pem"),
            other.signing_key.serialize_pem(),
        )
        .unwrap();
        let cases = [
            ("tls_server_config:\n  cert_file: c.pem\n", "key_file"),
            (
                "tls_server_config:\n  cert_file: nosuch.pem\n  key_file: k.pem\n",
                "nosuch",
            ),
            (
                "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: c.pem\n",
                "Client Auth Policy",
            ),
            (
                "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_auth_type: RequireAndVerifyClientCert\n",
                "client_ca_file",
            ),
            (
                "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  min_version: TLS14\n",
                "TLS14",
            ),
            ("basic_auth_users:\n  alice: plaintext\n", "bcrypt"),
            (
                "http_server_config:\n  headers:\n    Content-Type: text/html\n",
                "not allowed",
            ),
            ("nosuch: 1\n", "nosuch"),
            (
                "tls_server_config:\n  cert_file: c.pem\n  key_file: other-key.pem\n",
                "usable certificate",
            ),
        ];
        for (yaml, needle) in cases {
            let err = parse(yaml, dir.path()).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{yaml}: {err:#}");
        }
    }

    #[test]
    fn client_auth_types_build() {
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path());
        for t in [
            "RequestClientCert",
            "RequireAnyClientCert",
            "VerifyClientCertIfGiven",
            "RequireAndVerifyClientCert",
        ] {
            let yaml = format!(
                "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: c.pem\n  client_auth_type: {t}\n"
            );
            assert!(parse(&yaml, dir.path()).unwrap().tls.is_some(), "{t}");
        }
    }

    #[test]
    fn basic_auth_checks_bcrypt_and_caches() {
        use base64::Engine as _;
        let hash = bcrypt::hash("secret", 4).unwrap();
        let auth = BasicAuth::new([("alice".to_string(), hash)].into());
        let header = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(auth.check(Some(header("alice:secret").as_bytes())));
        assert!(auth.check(Some(header("alice:secret").as_bytes())));
        assert!(!auth.check(Some(header("alice:wrong").as_bytes())));
        assert!(!auth.check(Some(header("bob:secret").as_bytes())));
        assert!(!auth.check(Some(b"Bearer x")));
        assert!(!auth.check(None));
        assert_eq!(auth.dummy_cost, 4);
    }
}
