//! TLS interception in-process: CONNECT to a matched host is answered with a certificate our
//! generated CA signed for that host, the request inside gets the token, and every way an app
//! (or an attacker) can get it wrong is refused without a token leaving.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use common::*;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokenproxy::intercept::authority::Authority;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "api.example.com";

struct Setup {
    _idp: FakeIdp,
    echo: Echo,
    proxy: tokenproxy::Running,
    trust: tempfile::TempDir,
}

async fn setup() -> Setup {
    let idp = FakeIdp::start().await;
    let echo = Echo::start().await;
    let trust = tempfile::tempdir().unwrap();
    let proxy_block = format!(
        "  listen: 127.0.0.1:0\n  intercept:\n    ca: generate\n    trust_dir: {}\n",
        trust.path().display()
    );
    let upstreams = format!(
        "  api:\n    url: {}\n    match: [{HOST}, \"*.wild.example.com\", 127.0.0.9]\n    client: idp\n  \
           quiet:\n    url: {}\n    match: [quiet.example.com]\n    intercept: false\n    client: idp\n",
        echo.url(),
        echo.url()
    );
    let config = config(&idp, &proxy_block, &upstreams);
    let proxy = tokenproxy::start(config).await.unwrap();
    Setup {
        _idp: idp,
        echo,
        proxy,
        trust,
    }
}

impl Setup {
    fn fwd(&self) -> SocketAddr {
        self.proxy.forward_addr().unwrap()
    }

    async fn metrics(&self) -> String {
        let admin = self.proxy.admin_addr().unwrap();
        get(admin, "/metrics", "x", "").await.body
    }
}

/// Opens a tunnel; returns the stream after the 200, or the proxy's answer.
async fn connect(proxy: SocketAddr, authority: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(s)
    } else {
        Err(head)
    }
}

/// A TLS client that trusts only `ca.pem` (and offers http/1.1).
fn client(trust: &Path, sni: bool) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(trust.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&pem) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_sni = sni;
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Sends one request on `io` and reads the whole answer.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: S,
    host: &str,
) -> RawResponse {
    let req = format!("GET /items?x=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = io.read_to_end(&mut buf).await;
    parse_response(&buf)
}

async fn https_get(s: &Setup, sni_name: &str, host_header: &str) -> Result<RawResponse, String> {
    let tcp = connect(s.fwd(), &format!("{HOST}:443")).await?;
    let name = ServerName::try_from(sni_name.to_string()).unwrap();
    let tls = client(s.trust.path(), true)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(exchange(tls, host_header).await)
}

#[tokio::test]
async fn https_through_connect_gets_the_token_with_a_minted_certificate() {
    let s = setup().await;
    let r = https_get(&s, HOST, HOST).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["authorization"][0], "Bearer tok-1", "{seen}");
    assert_eq!(seen["uri"], "/items?x=1");
    assert_eq!(
        seen["host"],
        s.echo.addr.to_string(),
        "Host is the upstream's own"
    );
    // A second connection reuses the host certificate.
    let again = https_get(&s, HOST, HOST).await.unwrap();
    assert_eq!(again.status, 200);
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_connects_total{outcome="intercepted"} 2"#),
        "{m}"
    );
    assert!(
        m.contains("tokenproxy_intercept_certificates_minted_total 1"),
        "{m}"
    );
    assert!(
        m.contains(r#"tokenproxy_requests_total{code="200",upstream="api"} 4"#),
        "{m}"
    );
}

#[tokio::test]
async fn wildcard_hosts_get_their_own_certificate() {
    let s = setup().await;
    let tcp = connect(s.fwd(), "a.b.wild.example.com:443").await.unwrap();
    let name = ServerName::try_from("a.b.wild.example.com").unwrap();
    let tls = client(s.trust.path(), true)
        .connect(name, tcp)
        .await
        .unwrap();
    let r = exchange(tls, "a.b.wild.example.com").await;
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
}

#[tokio::test]
async fn the_trust_files_are_written_and_hold_no_key() {
    let s = setup().await;
    let dir = s.trust.path();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let bundle = std::fs::read_to_string(dir.join("bundle.pem")).unwrap();
    assert_eq!(ca.matches("BEGIN CERTIFICATE").count(), 1);
    assert!(bundle.ends_with(&ca), "the bundle ends with our root");
    for f in ["ca.pem", "bundle.pem", "truststore.p12"] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY"),
            "{f}"
        );
    }
    let p12 = std::fs::read(dir.join("truststore.p12")).unwrap();
    let store = p12_keystore::KeyStore::from_pkcs12(
        &p12,
        "changeit",
        p12_keystore::Pkcs12ImportPolicy::Raw,
    )
    .unwrap();
    let ours = rustls_pemfile_certs(ca.as_bytes()).remove(0);
    let found = store.entries().any(|(_, e)| match e {
        p12_keystore::KeyStoreEntry::Certificate(c) => c.as_der() == ours.as_ref(),
        _ => false,
    });
    assert!(found, "our root is in the Java truststore");
    let _ = &s.echo;
}

#[tokio::test]
async fn plaintext_http_inside_a_tunnel_gets_the_token() {
    // What Node's undici sends for an http:// URL through a proxy.
    let s = setup().await;
    let tcp = connect(s.fwd(), &format!("{HOST}:80")).await.unwrap();
    let r = exchange(tcp, HOST).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
    assert!(s
        .metrics()
        .await
        .contains(r#"tokenproxy_connects_total{outcome="plaintext"} 1"#));
}

#[tokio::test]
async fn a_tls_name_other_than_the_connect_host_is_refused() {
    let s = setup().await;
    let err = https_get(&s, "other.example.com", HOST).await.unwrap_err();
    assert!(!err.is_empty());
    assert_eq!(s.echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_intercept_handshake_failures_total{reason="sni_mismatch"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_host_header_other_than_the_connect_host_gets_421() {
    let s = setup().await;
    for other in [
        "evil.example.com",
        "api.example.com:8443",
        "quiet.example.com",
    ] {
        let r = https_get(&s, HOST, other).await.unwrap();
        assert_eq!(r.status, 421, "{other}: {}", r.body);
        assert_eq!(r.json()["error"], "misdirected_request");
        assert_eq!(r.header("connection").as_deref(), Some("close"));
    }
    assert_eq!(s.echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn no_sni_is_refused() {
    let s = setup().await;
    let tcp = connect(s.fwd(), &format!("{HOST}:443")).await.unwrap();
    let name = ServerName::try_from(HOST).unwrap();
    assert!(client(s.trust.path(), false)
        .connect(name, tcp)
        .await
        .is_err());
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_intercept_handshake_failures_total{reason="no_sni"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn garbage_an_http2_preface_or_an_abort_closes_the_tunnel() {
    let s = setup().await;
    for (opening, reason) in [
        (&b"\x00\x01\x02\x03 not a protocol"[..], "not_tls"),
        (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], "http2"),
        (&b"\x16\x03\x01\x00"[..], "tls_error"),
    ] {
        let mut tcp = connect(s.fwd(), &format!("{HOST}:443")).await.unwrap();
        tcp.write_all(opening).await.unwrap();
        if reason == "tls_error" {
            // A handshake record cut short, then the client goes away.
            tcp.shutdown().await.unwrap();
        }
        let mut rest = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tcp.read_to_end(&mut rest),
        );
        read.await.unwrap().unwrap_or_default();
        assert!(rest.is_empty() || !String::from_utf8_lossy(&rest).contains("tok-"));
        let want =
            format!(r#"tokenproxy_intercept_handshake_failures_total{{reason="{reason}"}} 1"#);
        eventually_async(&s, &want).await;
    }
    assert_eq!(s.echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

async fn eventually_async(s: &Setup, want: &str) {
    for _ in 0..100 {
        if s.metrics().await.contains(want) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("metrics never showed {want}:\n{}", s.metrics().await);
}

#[tokio::test]
async fn a_slow_client_hello_times_out() {
    let idp = FakeIdp::start().await;
    let echo = Echo::start().await;
    let trust = tempfile::tempdir().unwrap();
    let proxy_block = format!(
        "  listen: 127.0.0.1:0\n  header_read_timeout: 300ms\n  intercept:\n    ca: generate\n    trust_dir: {}\n",
        trust.path().display()
    );
    let ups = format!(
        "  api:\n    url: {}\n    match: [{HOST}]\n    client: idp\n",
        echo.url()
    );
    let proxy = tokenproxy::start(config(&idp, &proxy_block, &ups))
        .await
        .unwrap();
    let mut tcp = connect(proxy.forward_addr().unwrap(), &format!("{HOST}:443"))
        .await
        .unwrap();
    tcp.write_all(b"\x16\x03").await.unwrap(); // and nothing more
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut rest),
    );
    assert!(
        closed.await.is_ok(),
        "the tunnel is closed after header_read_timeout"
    );
}

#[tokio::test]
async fn ip_literals_and_opted_out_upstreams_are_not_intercepted() {
    let s = setup().await;
    for target in ["127.0.0.9:443", "quiet.example.com:443"] {
        let refused = connect(s.fwd(), target).await.unwrap_err();
        assert!(refused.starts_with("HTTP/1.1 403"), "{target}: {refused}");
    }
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_connects_total{outcome="refused"} 2"#),
        "{m}"
    );
}

#[tokio::test]
async fn unmatched_hosts_are_still_tunnelled_untouched() {
    let s = setup().await;
    let tcp = connect(s.fwd(), &s.echo.addr.to_string()).await.unwrap();
    let r = exchange(tcp, "whatever").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!([]),
        "no token in a tunnel"
    );
    let m = s.metrics().await;
    assert!(
        m.contains(r#"tokenproxy_connects_total{outcome="tunnelled"} 1"#),
        "{m}"
    );
}

/// The generated intermediate is constrained to the intercepted names: a leaf for any other
/// name does not verify (webpki), even though the intermediate's key signed it.
#[test]
fn the_intermediate_cannot_sign_for_other_names() {
    let ca = Authority::generate(vec![HOST.to_string(), "wild.example.com".into()]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.trust_anchor.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
    let verify = |minted_for: &str| {
        let (key, _) = ca
            .mint(minted_for, std::time::Duration::from_secs(3600))
            .unwrap();
        let name = ServerName::try_from(minted_for.to_string()).unwrap();
        verifier.verify_server_cert(&key.cert[0], &key.cert[1..], &name, &[], UnixTime::now())
    };
    assert!(verify(HOST).is_ok());
    assert!(verify("x.wild.example.com").is_ok());
    assert!(verify("evil.com").is_err(), "outside the name constraints");
    assert!(
        verify("example.com").is_err(),
        "a parent of a permitted name"
    );
    assert!(ca.covers("x.wild.example.com") && !ca.covers("notwild.example.com"));
}

/// A CA certificate and key in PEM files, name-constrained or not.
fn ca_files(dir: &Path, constrained: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, GeneralSubtree, IsCa, KeyPair, NameConstraints,
    };
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    if constrained {
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: vec![GeneralSubtree::DnsName("example.com".into())],
            excluded_subtrees: vec![],
        });
    }
    let cert = p.self_signed(&key).unwrap();
    let (c, k) = (dir.join("ca.crt"), dir.join("ca.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn ca_config(dir: &Path, ca: &str) -> std::path::PathBuf {
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!("proxy:\n  listen: 127.0.0.1:0\n  intercept:\n    ca: {ca}\nclients:\n  idp:\n    token_endpoint: http://127.0.0.1:9/token\n    client_id: a\n    client_secret: b\nupstreams:\n  u:\n    url: http://127.0.0.1:9\n    match: [{HOST}]\n    client: idp\n"),
    )
    .unwrap();
    cfg
}

#[test]
fn the_ca_subcommand_writes_the_trust_files_of_a_ca_from_files() {
    const BIN: &str = env!("CARGO_BIN_EXE_tokenproxy");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_files(dir.path(), true);
    let files = format!(
        "{{cert_file: {}, key_file: {}}}",
        cert.display(),
        key.display()
    );
    let cfg = ca_config(dir.path(), &files);
    let out = dir.path().join("trust");
    let run = |args: &[&str]| std::process::Command::new(BIN).args(args).output().unwrap();
    let written = run(&[
        "ca",
        "-c",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let ca_pem = std::fs::read_to_string(out.join("ca.pem")).unwrap();
    assert_eq!(
        rustls_pemfile_certs(ca_pem.as_bytes()),
        rustls_pemfile_certs(&std::fs::read(&cert).unwrap())
    );
    assert!(out.join("bundle.pem").exists() && out.join("truststore.p12").exists());
    let printed = run(&["ca", "-c", cfg.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&printed.stdout), ca_pem);
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_body = key_text.lines().nth(1).unwrap();
    assert!(!String::from_utf8_lossy(&printed.stdout).contains(key_body));

    let generated = run(&[
        "ca",
        "-c",
        ca_config(dir.path(), "generate").to_str().unwrap(),
    ]);
    assert_eq!(generated.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&generated.stderr).contains("trust_dir"));

    // A key that is not the certificate's: a config error with its line.
    let (_, other_key) = ca_files(&tempfile::tempdir().unwrap().keep(), true);
    let mismatched = format!(
        "{{cert_file: {}, key_file: {}}}",
        cert.display(),
        other_key.display()
    );
    let bad = run(&[
        "validate",
        "-c",
        ca_config(dir.path(), &mismatched).to_str().unwrap(),
    ]);
    assert_eq!(bad.status.code(), Some(78));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("line 4: proxy.intercept.ca:")
            && err.contains("is not the key of the certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn a_ca_from_files_signs_the_host_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca_files(dir.path(), false);
    let idp = FakeIdp::start().await;
    let echo = Echo::start().await;
    let trust = dir.path().join("trust");
    let proxy_block = format!(
        "  listen: 127.0.0.1:0\n  intercept:\n    ca: {{cert_file: {}, key_file: {}}}\n    trust_dir: {}\n",
        cert.display(),
        key.display(),
        trust.display()
    );
    let ups = format!(
        "  api:\n    url: {}\n    match: [{HOST}]\n    client: idp\n",
        echo.url()
    );
    let proxy = tokenproxy::start(config(&idp, &proxy_block, &ups))
        .await
        .unwrap();
    let tcp = connect(proxy.forward_addr().unwrap(), &format!("{HOST}:443"))
        .await
        .unwrap();
    let tls = client(&trust, true)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let r = exchange(tls, HOST).await;
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
}
