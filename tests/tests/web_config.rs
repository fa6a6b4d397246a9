//! `--web.config.file` in exporter-toolkit's format over loopback: TLS with a server
//! certificate, TLS version bounds, client certificates (RequireAndVerifyClientCert),
//! basic auth with bcrypt hashes, extra response headers; and the HTTP server's
//! connection cap and header-read timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use node_agent_tests::http;
use node_agent_tests::in_process::InProcessAgent;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate.
struct Pki {
    ca_pem: String,
    client_pem: String,
}

fn write_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["scraper".to_string()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), server_key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        client_pem: format!("{}{}", client.pem(), client_key.serialize_pem()),
    }
}

/// Runs an agent in this process with `args`; stops it on drop.
struct Agent {
    addr: SocketAddr,
    _agent: InProcessAgent,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(dir: tempfile::TempDir, args: &[String]) -> Self {
        let config_file = dir.path().join("agent.yaml");
        std::fs::write(
            &config_file,
            format!(
                "logs:\n  enabled: false\nhandover:\n  lock_file: {}\n",
                dir.path().join("leader.lock").display()
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
        let mut all = vec![
            "node-agent".to_string(),
            format!("--web.listen-address={addr}"),
            format!("--config.file={}", config_file.display()),
            "--collector.disable-defaults".into(),
            "--collector.loadavg".into(),
        ];
        all.extend(args.iter().cloned());
        let agent = InProcessAgent::start(all);
        // Listening once a TCP connect succeeds (TLS or not).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "agent not listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            addr,
            _agent: agent,
            _dir: dir,
        }
    }
}

fn client(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_basic_auth_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path());
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.path().join("web.yml");
    // Relative file names are relative to the web config file, as in exporter-toolkit.
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  max_version: TLS12\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\nbasic_auth_users:\n  alice: {hash}\n"
        ),
    )
    .unwrap();
    let arg = format!("--web.config.file={}", web.display());
    let agent = tokio::task::spawn_blocking(move || Agent::start(dir, &[arg]))
        .await
        .unwrap();
    let url = |path: &str| format!("https://{}{path}", agent.addr);
    let c = client(&pki.ca_pem).build().unwrap();

    let r = c.get(url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic");
    assert_eq!(r.headers()["x-frame-options"], "deny");
    let r = c
        .get(url("/metrics"))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(url("/metrics"))
        .basic_auth("mallory", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for _ in 0..2 {
        // The second time from the cache of verified credentials.
        let r = c
            .get(url("/metrics"))
            .basic_auth("alice", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-frame-options"], "deny");
        assert!(r.text().await.unwrap().contains("node_load1 "));
    }
    // Probes need no credentials (the kubelet sends none).
    assert_eq!(c.get(url("/healthz")).send().await.unwrap().status(), 200);

    // max_version TLS12: a TLS 1.3-only client cannot connect.
    let tls13 = client(&pki.ca_pem)
        .min_tls_version(reqwest::tls::Version::TLS_1_3)
        .build()
        .unwrap();
    assert!(tls13.get(url("/healthz")).send().await.is_err());
    // Plain HTTP to the TLS port gets no HTTP answer.
    let addr = agent.addr;
    let plain = tokio::task::spawn_blocking(move || http::get(addr, "/healthz", &[]))
        .await
        .unwrap();
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status != 200));
    // A client that doesn't trust the agent's CA refuses it.
    let other = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
    let untrusting = client(&other.cert.pem()).build().unwrap();
    assert!(untrusting.get(url("/healthz")).send().await.is_err());
    tokio::task::spawn_blocking(move || drop(agent))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path());
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n  client_ca_file: ca.pem\n  client_auth_type: RequireAndVerifyClientCert\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
    )
    .unwrap();
    let arg = format!("--web.config.file={}", web.display());
    let agent = tokio::task::spawn_blocking(move || Agent::start(dir, &[arg]))
        .await
        .unwrap();
    let url = format!("https://{}/metrics", agent.addr);

    let anonymous = client(&pki.ca_pem).build().unwrap();
    assert!(anonymous.get(&url).send().await.is_err());
    let with_cert = client(&pki.ca_pem)
        .identity(reqwest::Identity::from_pem(pki.client_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = with_cert.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("node_load1 "));
    // A certificate from another CA is refused.
    let stranger = rcgen::generate_simple_self_signed(vec!["scraper".to_string()]).unwrap();
    let pem = format!(
        "{}{}",
        stranger.cert.pem(),
        stranger.signing_key.serialize_pem()
    );
    let wrong_cert = client(&pki.ca_pem)
        .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(wrong_cert.get(&url).send().await.is_err());
    tokio::task::spawn_blocking(move || drop(agent))
        .await
        .unwrap();
}

#[test]
fn connection_cap_and_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        dir,
        &[
            "--web.max-connections=1".to_string(),
            "--web.header-read-timeout=2s".to_string(),
        ],
    );
    // A holds the only connection slot and sends nothing.
    let mut a = TcpStream::connect(agent.addr).unwrap();
    // Wait until A is accepted for sure: a request on B cannot be served before.
    std::thread::sleep(Duration::from_millis(200));
    let mut b = TcpStream::connect(agent.addr).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    b.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    b.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    // B was only served once the header-read timeout had closed A.
    a.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    match a.read(&mut buf) {
        Ok(_) => {} // closed (0) or a 408 answer before closing
        Err(e) => panic!("A still open while B was served: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_served_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_pki(dir.path());
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let arg = format!("--web.config.file={}", web.display());
    let agent = tokio::task::spawn_blocking(move || Agent::start(dir, &[arg]))
        .await
        .unwrap();
    let url = format!("https://{}/healthz", agent.addr);
    let ok = |ca: &str| {
        let c = client(ca).build().unwrap();
        let url = url.clone();
        async move { c.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
    };
    assert!(ok(&first.ca_pem).await);
    // cert-manager renews: a new CA and server pair replace the files.
    let second = write_pki(&path);
    assert!(ok(&second.ca_pem).await, "the new certificate is served");
    assert!(!ok(&first.ca_pem).await, "the old one is not");
    // A broken rewrite keeps the last good pair.
    std::fs::write(path.join("server.pem"), "not a certificate").unwrap();
    assert!(ok(&second.ca_pem).await);
    tokio::task::spawn_blocking(move || drop(agent))
        .await
        .unwrap();
}
