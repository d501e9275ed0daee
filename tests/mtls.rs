//! Mutual-TLS client authentication (RFC 8705) in-process: a token endpoint and an upstream
//! that require a client certificate from a private CA, the certificate tokenproxy presents,
//! its rotation, and the certificate-bound upstream.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokenproxy::body::full;

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "mtls test CA");
        let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { ca, dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A certificate (for `names`, or a client CN) signed by the CA: (DER, PEM, key PEM).
    fn issue(&self, names: &[&str], cn: &str) -> (Vec<u8>, String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &self.ca).unwrap();
        (cert.der().to_vec(), cert.pem(), key.serialize_pem())
    }

    /// Writes a client certificate and key to `client.crt` / `client.key`; returns its DER.
    fn client_files(&self, cn: &str) -> Vec<u8> {
        let (der, pem, key) = self.issue(&[], cn);
        std::fs::write(self.dir.path().join("client.crt"), pem).unwrap();
        std::fs::write(self.dir.path().join("client.key"), key).unwrap();
        der
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// An HTTPS server (certificate for localhost) that requires a client certificate from the CA
/// and records each one it saw; it answers `answer(path)` and closes the connection.
/// Every request body the server got, for the tests that read the token request's form.
static BODIES: Mutex<Vec<String>> = Mutex::new(Vec::new());

async fn mtls_server(
    pki: &Pki,
    answer: fn(&str) -> String,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let (_, pem, key) = pki.issue(&["localhost"], "localhost");
    let cert = CertificateDer::from_pem_slice_for_test(&pem);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        KeyPair::from_pem(&key).unwrap().serialize_der(),
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, record) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Some(c) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    record.lock().unwrap().push(c.to_vec());
                }
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_string());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        BODIES
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&body).into_owned());
                        let text = answer(&path)
                            .replace("$AUTH", &auth.unwrap_or_default())
                            .replace("$BODY", &String::from_utf8_lossy(&body));
                        let mut resp = http::Response::new(full(text));
                        resp.headers_mut()
                            .insert("connection", "close".parse().unwrap());
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

trait PemTest {
    fn from_pem_slice_for_test(pem: &str) -> CertificateDer<'static>;
}

impl PemTest for CertificateDer<'static> {
    fn from_pem_slice_for_test(pem: &str) -> CertificateDer<'static> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }
}

/// Token endpoint: a token that lasts `2` seconds (so it is fetched again), and the form it got.
fn token_answer(_: &str) -> String {
    r#"{"access_token":"mtls-token","token_type":"Bearer","expires_in":2,"scope":"$BODY"}"#
        .to_string()
}

fn upstream_answer(_: &str) -> String {
    r#"{"authorization":"$AUTH"}"#.to_string()
}

fn config(
    pki: &Pki,
    token: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    method: &str,
) -> String {
    format!(
        "proxy:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\ntokens:\n  min_refresh_interval: 50ms\n\
         clients:\n  idp:\n    token_endpoint: https://localhost:{}/token\n    client_id: orders\n    auth_method: {method}\n\
         \x20   certificate: {{ file: {} }}\n    private_key: {{ file: {} }}\n    ca_file: {}\n\
         upstreams:\n  bound:\n    url: https://localhost:{}\n    match: [bound.example.com]\n    client: idp\n    client_certificate: true\n    ca_file: {}\n\
         \x20 unbound:\n    url: https://localhost:{}\n    match: [unbound.example.com]\n    client: idp\n    ca_file: {}\n",
        token.port(),
        pki.path("client.crt").display(),
        pki.path("client.key").display(),
        pki.ca_file().display(),
        upstream.port(),
        pki.ca_file().display(),
        upstream.port(),
        pki.ca_file().display(),
    )
}

#[tokio::test]
async fn the_client_certificate_authenticates_and_binds_the_token() {
    let pki = Pki::new();
    let first = pki.client_files("orders");
    let (token_addr, token_seen) = mtls_server(&pki, token_answer).await;
    let (up_addr, up_seen) = mtls_server(&pki, upstream_answer).await;
    for method in ["tls_client_auth", "self_signed_tls_client_auth"] {
        let yaml = config(&pki, token_addr, up_addr, method);
        let proxy = tokenproxy::start(tokenproxy::Config::from_yaml_checked(&yaml).unwrap())
            .await
            .unwrap();
        let fwd = proxy.forward_addr().unwrap();
        let r = get(fwd, "http://bound.example.com/x", "bound.example.com", "").await;
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        assert_eq!(r.json()["authorization"], "Bearer mtls-token");
        assert_eq!(
            up_seen.lock().unwrap().last().unwrap(),
            &first,
            "the upstream saw our certificate"
        );
        assert_eq!(
            token_seen.lock().unwrap().last().unwrap(),
            &first,
            "the token endpoint saw it too"
        );
        // Without client_certificate the upstream gets no certificate, and refuses the handshake.
        let r = get(
            fwd,
            "http://unbound.example.com/x",
            "unbound.example.com",
            "",
        )
        .await;
        assert_eq!(r.status, 502, "{}", r.body);
        proxy.shutdown().await;
    }
}

#[tokio::test]
async fn the_form_carries_the_client_id_and_no_secret() {
    let pki = Pki::new();
    pki.client_files("orders");
    let (token_addr, _) = mtls_server(&pki, |_| {
        r#"{"access_token":"f","token_type":"Bearer"}"#.into()
    })
    .await;
    let (up_addr, _) = mtls_server(&pki, upstream_answer).await;
    let config = tokenproxy::Config::from_yaml_checked(&config(
        &pki,
        token_addr,
        up_addr,
        "tls_client_auth",
    ))
    .unwrap();
    let up = config.upstream("bound").unwrap().clone();
    let metrics = tokenproxy::metrics::Metrics::new().unwrap();
    let endpoint =
        tokenproxy::token::Endpoint::new(up.client.clone(), &up.request, &config.tokens, &metrics)
            .unwrap();
    let issued = endpoint.fetch().await.unwrap();
    assert_eq!(issued.token.header(), "Bearer f");
    let forms = BODIES.lock().unwrap().clone();
    let form = forms
        .iter()
        .find(|b| b.contains("grant_type=client_credentials"))
        .unwrap();
    assert!(form.contains("client_id=orders"), "{form}");
    assert!(
        !form.contains("client_secret") && !form.contains("client_assertion"),
        "{form}"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_presented_on_the_next_connection() {
    let pki = Pki::new();
    let first = pki.client_files("orders");
    let (token_addr, token_seen) = mtls_server(&pki, token_answer).await;
    let (up_addr, _) = mtls_server(&pki, upstream_answer).await;
    let yaml = config(&pki, token_addr, up_addr, "tls_client_auth");
    let _proxy = tokenproxy::start(tokenproxy::Config::from_yaml_checked(&yaml).unwrap())
        .await
        .unwrap();
    eventually(|| !token_seen.lock().unwrap().is_empty()).await;
    assert_eq!(token_seen.lock().unwrap()[0], first);
    let renewed = pki.client_files("orders-renewed");
    // The token lasts 2 s: the refresh opens a new connection with the new certificate.
    eventually(|| token_seen.lock().unwrap().last() == Some(&renewed)).await;
}

#[test]
fn mtls_configs_are_checked() {
    let pki = Pki::new();
    pki.client_files("orders");
    let other = Pki::new();
    let (_, _, other_key) = other.issue(&[], "someone else");
    std::fs::write(pki.path("other.key"), other_key).unwrap();
    let check = |client: &str, upstream_extra: &str| -> String {
        let yaml = format!(
            "clients:\n  idp:\n    token_endpoint: https://idp.example.com/token\n    client_id: orders\n{client}\
             upstreams:\n  api:\n    url: https://api.example.com\n    client: idp\n{upstream_extra}"
        );
        tokenproxy::Config::from_yaml_checked(&yaml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let crt = pki.path("client.crt");
    let err = check("    auth_method: tls_client_auth\n", "");
    assert!(
        err.contains("line 5: clients.idp.auth_method: tls_client_auth needs private_key"),
        "{err}"
    );
    assert!(err.contains("tls_client_auth needs certificate"), "{err}");
    let mismatched = format!(
        "    auth_method: tls_client_auth\n    certificate: {{ file: {} }}\n    private_key: {{ file: {} }}\n",
        crt.display(),
        pki.path("other.key").display()
    );
    let err = check(&mismatched, "");
    assert!(
        err.contains(
            "line 6: clients.idp.certificate: the certificate and key do not belong together"
        ),
        "{err}"
    );
    let err = check(
        "    client_secret: s3cret\n",
        "    client_certificate: true\n",
    );
    assert!(err.contains("upstreams.api.client_certificate: a certificate-bound token needs a client with auth_method tls_client_auth"), "{err}");
    let fine = format!(
        "    auth_method: self_signed_tls_client_auth\n    certificate: {{ file: {} }}\n    private_key: {{ file: {} }}\n",
        crt.display(),
        pki.path("client.key").display()
    );
    assert_eq!(check(&fine, "    client_certificate: true\n"), "");
    // An expired certificate is refused up front, with its date.
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "orders");
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = p.signed_by(&key, &pki.ca).unwrap();
    std::fs::write(pki.path("expired.crt"), expired.pem()).unwrap();
    std::fs::write(pki.path("expired.key"), key.serialize_pem()).unwrap();
    let old = format!(
        "    auth_method: tls_client_auth\n    certificate: {{ file: {} }}\n    private_key: {{ file: {} }}\n",
        pki.path("expired.crt").display(),
        pki.path("expired.key").display()
    );
    let err = check(&old, "");
    assert!(
        err.contains(
            "line 6: clients.idp.certificate: the certificate expired on Jan  1 00:00:00 2021"
        ),
        "{err}"
    );
    let _ = Path::new("");
}
