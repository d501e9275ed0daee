//! TLS originated by tokenproxy (rustls): to the token endpoint and to an upstream, trusting a
//! private CA given as `ca_file`, and refusing a server the trust store does not vouch for.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use http::{header, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokenproxy::body::{full, Body};

/// A private CA and an HTTPS server (cert for localhost) that issues tokens at /token and
/// echoes the Authorization header elsewhere.
async fn tls_server() -> (SocketAddr, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tokenproxy test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|req| async move {
                    Ok::<_, std::convert::Infallible>(answer(req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca.pem())
}

fn answer(req: Request<Incoming>) -> Response<Body> {
    let body = if req.uri().path() == "/token" {
        r#"{"access_token":"tls-token","token_type":"Bearer","expires_in":3600}"#.to_string()
    } else {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_string());
        serde_json::json!({ "authorization": auth, "host": req.headers().get(header::HOST).map(|v| v.to_str().unwrap()) }).to_string()
    };
    Response::new(full(body))
}

fn yaml(port: u16, client_ca: Option<&str>, upstream_ca: Option<&str>) -> String {
    let mut c = TestConfig::new()
        .forward()
        .set("tokens.wait_timeout", "3s")
        .remove("tokens.min_refresh_interval")
        .client("idp", &format!("https://localhost:{port}/token"), "b")
        .set("clients.idp.client_id", "a")
        .upstream(
            "secure",
            &format!("https://localhost:{port}"),
            "secure.example.com",
            "idp",
        );
    if let Some(ca) = client_ca {
        c = c.set("clients.idp.ca_file", ca);
    }
    if let Some(ca) = upstream_ca {
        c = c.set("upstreams.secure.ca_file", ca);
    }
    c.text()
}

/// Writes the CA to a file; keep the TempDir alive while the path is in use.
fn ca_file(pem: String) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, pem).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

/// Starts a proxy on `yaml` and sends one forward request to the TLS upstream.
async fn through_proxy(yaml: &str) -> RawResponse {
    let p = tokenproxy::start(tokenproxy::Config::from_yaml_checked(yaml).unwrap())
        .await
        .unwrap();
    let r = get(
        p.forward_addr().unwrap(),
        "http://secure.example.com/data",
        "x",
        "",
    )
    .await;
    p.shutdown().await;
    r
}

fn message(r: &RawResponse) -> String {
    r.json()["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn tls_to_token_endpoint_and_upstream_with_a_private_ca() {
    let (addr, pem) = tls_server().await;
    let (_dir, ca) = ca_file(pem);
    // The app speaks plain HTTP to the proxy; tokenproxy speaks TLS upstream.
    let r = through_proxy(&yaml(addr.port(), Some(&ca), Some(&ca))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["authorization"], "Bearer tls-token");
    assert_eq!(r.json()["host"], format!("localhost:{}", addr.port()));
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let (addr, pem) = tls_server().await;
    let r = through_proxy(&yaml(addr.port(), None, None)).await;
    assert_eq!(
        r.status, 503,
        "no token from an untrusted token endpoint: {r:?}"
    );
    assert!(message(&r).contains("UnknownIssuer"), "{}", message(&r));

    // The token endpoint is trusted, the upstream is not: the token never leaves.
    let (_dir, ca) = ca_file(pem);
    let r = through_proxy(&yaml(addr.port(), Some(&ca), None)).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert!(message(&r).contains("UnknownIssuer"), "{}", message(&r));
}

#[tokio::test]
async fn a_bad_ca_file_is_a_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let config = tokenproxy::Config::from_yaml_checked(&yaml(9, ca.to_str(), None)).unwrap();
    match tokenproxy::start(config).await {
        Err(e) => assert!(e.to_string().contains("ca.pem"), "{e}"),
        Ok(_) => panic!("started with an unusable ca_file"),
    }
}
