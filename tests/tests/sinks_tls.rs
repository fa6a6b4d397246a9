//! HTTP sinks over TLS with a CA generated at test time (rcgen), mutual TLS, and the
//! failure when the server's CA is not trusted.

use std::sync::Arc;
use std::time::Duration;

use node_agent::identity::NodeIdentity;
use node_agent::sinks::config::{ElasticsearchConfig, LokiConfig};
use node_agent::sinks::elasticsearch::ElasticsearchSink;
use node_agent::sinks::loki::LokiSink;
use node_agent::sinks::{Sink, SinkError};
use node_agent_tests::receivers::records::{batch, source};
use node_agent_tests::receivers::{EsReceiver, LokiReceiver};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const T0: i64 = 1_700_000_000_000_000_000;

/// A CA, a `localhost` server certificate and a client certificate, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "node-agent test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let server_cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&server_key, &issuer)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "node-agent");
        let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), client_cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
        Self {
            ca_der: ca_cert.der().clone(),
            server_chain: vec![server_cert.der().clone(), ca_cert.der().clone()],
            server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            dir,
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .unwrap();
        Arc::new(config)
    }

    /// Requires a client certificate signed by the CA.
    fn server_config_mtls(&self) -> Arc<rustls::ServerConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Self::provider(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .unwrap();
        Arc::new(config)
    }
}

fn retry_fast(mut config: serde_json::Value) -> serde_json::Value {
    config["retry"] = json!({"initial_backoff_ms": 1, "max_backoff_ms": 20});
    config
}

fn loki_sink(config: serde_json::Value, state: &tempfile::TempDir) -> LokiSink {
    let config: LokiConfig = serde_json::from_value(retry_fast(config)).unwrap();
    LokiSink::with_state_dir(
        "loki-tls".into(),
        &config,
        &NodeIdentity::default(),
        state.path(),
    )
    .unwrap()
}

#[tokio::test]
async fn loki_over_tls_with_a_custom_ca() {
    let pki = Pki::new();
    let loki = LokiReceiver::start_with_tls(Some(pki.server_config()))
        .await
        .unwrap();
    assert!(loki.url().starts_with("https://localhost:"));
    let state = tempfile::tempdir().unwrap();
    let sink = loki_sink(
        json!({"url": loki.url(), "tls": {"ca_file": pki.path("ca.pem")}}),
        &state,
    );
    let records = batch(&source("ns", "p", "c"), T0, 10, "tls");
    tokio::time::timeout(
        Duration::from_secs(20),
        sink.deliver(&records, &CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(loki.lines().len(), 10);
}

#[tokio::test]
async fn untrusted_server_certificate_stalls_until_cancelled_unless_insecure() {
    let pki = Pki::new();
    let loki = LokiReceiver::start_with_tls(Some(pki.server_config()))
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let records = batch(&source("ns", "p", "c"), T0, 3, "x");

    let strict = loki_sink(json!({"url": loki.url()}), &state);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let result = tokio::time::timeout(Duration::from_secs(10), strict.deliver(&records, &cancel))
        .await
        .unwrap();
    assert!(matches!(result, Err(SinkError::Cancelled)), "{result:?}");
    assert!(strict.metrics().failures("network") >= 1);
    assert!(loki.lines().is_empty());

    let insecure = loki_sink(
        json!({"url": loki.url(), "name": "insecure", "tls": {"insecure_skip_verify": true}}),
        &state,
    );
    tokio::time::timeout(
        Duration::from_secs(20),
        insecure.deliver(&records, &CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(loki.lines().len(), 3);
}

#[tokio::test]
async fn elasticsearch_with_mutual_tls() {
    let pki = Pki::new();
    let es = EsReceiver::start_with_tls(Some(pki.server_config_mtls()))
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let build = |tls: serde_json::Value| {
        let config: ElasticsearchConfig =
            serde_json::from_value(retry_fast(json!({"url": es.url(), "tls": tls}))).unwrap();
        ElasticsearchSink::with_state_dir("es-mtls".into(), &config, state.path()).unwrap()
    };
    let records = batch(&source("ns", "p", "c"), T0, 4, "m");

    let with_cert = build(
        json!({"ca_file": pki.path("ca.pem"), "cert_file": pki.path("client.pem"), "key_file": pki.path("client.key")}),
    );
    tokio::time::timeout(
        Duration::from_secs(20),
        with_cert.deliver(&records, &CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(es.docs().len(), 4);

    // Without a client certificate the handshake fails: retried, never acknowledged.
    let without = build(json!({"ca_file": pki.path("ca.pem")}));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        without.deliver(&batch(&source("ns", "q", "c"), T0, 1, "n"), &cancel),
    )
    .await
    .unwrap();
    assert!(matches!(result, Err(SinkError::Cancelled)), "{result:?}");
    assert_eq!(es.docs().len(), 4);
}
