//! `proxy.upstream_proxy`: every outbound connection but Redis through a parent proxy, here
//! an in-process one (`common::parent`) whose `.corp.test` names resolve nowhere else, so a
//! request that reaches such a name went through it. Token requests, upstreams (plaintext in
//! absolute form, https in a CONNECT tunnel), passthrough and opaque tunnels; `no_proxy` and
//! `upstream_proxy: false` going direct; a refusal answered as `502 upstream_proxy_refused`,
//! counted, shown in `/status`, and the password never shown anywhere.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::parent::Parent;
use common::*;
use http::{header, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokenproxy::body::{full, Body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CANARY: &str = "CANARY-parent-password";

/// An HTTPS server for `api.corp.test` that issues tokens at /token and otherwise echoes
/// the request's Authorization and header names; its CA's PEM.
async fn tls_server(headers_seen: Arc<Mutex<Vec<String>>>) -> (SocketAddr, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names = vec!["api.corp.test".to_string(), "idp.corp.test".to_string()];
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), headers_seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let seen = seen.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(req, &seen)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca.pem())
}

fn answer(req: Request<Incoming>, seen: &Mutex<Vec<String>>) -> Response<Body> {
    let mut seen = seen.lock().unwrap();
    seen.extend(req.headers().keys().map(|k| k.to_string()));
    let body = if req.uri().path() == "/token" {
        r#"{"access_token":"tls-token","token_type":"Bearer","expires_in":3600}"#.to_string()
    } else {
        let auth = req.headers().get(header::AUTHORIZATION);
        let auth = auth.map(|v| v.to_str().unwrap().to_string());
        serde_json::json!({ "authorization": auth }).to_string()
    };
    Response::new(full(body))
}

/// A parent that accepts `tp:<password>`, an authorization server, an echo upstream, and a
/// config with the forward listener and the client `idp`.
async fn peers(password: &str) -> (Parent, FakeIdp, Echo, TestConfig) {
    let parent = Parent::start(&format!("tp:{password}")).await;
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let c = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), "client-secret");
    (parent, idp, echo, c)
}

fn proxy_section(parent: &Parent, password: serde_json::Value, no_proxy: &[&str]) -> String {
    serde_json::json!({
        "url": parent.url(),
        "username": "tp",
        "password": password,
        "no_proxy": no_proxy,
    })
    .to_string()
}

async fn scrape(p: &tokenproxy::Running, path: &str) -> String {
    get(p.admin_addr().unwrap(), path, "x", "").await.body
}

fn counter(metrics: &str, series: &str) -> u64 {
    let prefix = format!("{series} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn plaintext_token_requests_and_upstreams_go_to_the_parent_in_absolute_form() {
    let (parent, idp, echo, c) = peers("s3cret").await;
    let c = c
        .upstream(
            "api",
            &format!("http://api.corp.test:{}", echo.addr.port()),
            "api.example.com",
            "idp",
        )
        .set("upstreams.api.allow_plaintext", true)
        .merge(
            "proxy.upstream_proxy",
            &proxy_section(&parent, "s3cret".into(), &[]),
        );
    let p = tokenproxy::start(c.config()).await.unwrap();
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
    let lines = parent.lines();
    let token = format!("POST {}", idp.url());
    let api = format!("GET http://api.corp.test:{}/x", echo.addr.port());
    assert!(lines.contains(&token) && lines.contains(&api), "{lines:?}");
    let basic = format!("Basic {}", base64_encode("tp:s3cret"));
    assert!(parent
        .authorizations()
        .iter()
        .all(|a| a.as_deref() == Some(basic.as_str())));
    // The parent's credential is the parent's: the upstream never sees it.
    let headers = r.json()["headers"].to_string().to_ascii_lowercase();
    assert!(!headers.contains("proxy-authorization"), "{headers}");
    p.shutdown().await;
}

#[tokio::test]
async fn https_token_endpoints_and_upstreams_are_connect_tunnels_with_tls_inside() {
    let parent = Parent::start("tp:s3cret").await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (addr, ca) = tls_server(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let port = addr.port();
    let c = TestConfig::new()
        .forward()
        .client("idp", &format!("https://idp.corp.test:{port}/token"), "b")
        .set("clients.idp.ca_file", ca_path.to_str().unwrap())
        .upstream(
            "api",
            &format!("https://api.corp.test:{port}"),
            "api.example.com",
            "idp",
        )
        .set("upstreams.api.ca_file", ca_path.to_str().unwrap())
        .merge(
            "proxy.upstream_proxy",
            &proxy_section(&parent, "s3cret".into(), &[]),
        );
    let p = tokenproxy::start(c.config()).await.unwrap();
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["authorization"], "Bearer tls-token");
    let lines = parent.lines();
    assert!(
        lines.contains(&format!("CONNECT idp.corp.test:{port}")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&format!("CONNECT api.corp.test:{port}")),
        "{lines:?}"
    );
    assert!(!seen
        .lock()
        .unwrap()
        .iter()
        .any(|h| h == "proxy-authorization"));
    p.shutdown().await;
}

#[tokio::test]
async fn no_proxy_and_upstream_proxy_false_go_direct() {
    let (parent, _idp, echo, c) = peers("s3cret").await;
    let c = c
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .upstream("other", &echo.url(), "other.example.com", "idp")
        .set("upstreams.other.upstream_proxy", false)
        .merge(
            "proxy.upstream_proxy",
            &proxy_section(&parent, "s3cret".into(), &["localhost", "127.0.0.0/8"]),
        );
    let p = tokenproxy::start(c.config()).await.unwrap();
    assert_eq!(get_api(&p).await.status, 200);
    let fwd = p.forward_addr().unwrap();
    let r = get(fwd, "http://other.example.com/y", "other.example.com", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(parent.lines(), Vec::<String>::new());
    p.shutdown().await;
}

#[tokio::test]
async fn passthrough_and_opaque_tunnels_are_chained_through_the_parent() {
    let (parent, _idp, echo, c) = peers("s3cret").await;
    let c = c
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .set("upstreams.api.upstream_proxy", false)
        .set("clients.idp.upstream_proxy", false)
        .merge(
            "proxy.upstream_proxy",
            &proxy_section(&parent, "s3cret".into(), &[]),
        );
    let p = tokenproxy::start(c.config()).await.unwrap();
    let fwd = p.forward_addr().unwrap();
    let target = format!("other.corp.test:{}", echo.addr.port());
    let r = get(
        fwd,
        &format!("http://{target}/pass"),
        &target,
        "Proxy-Authorization: Basic YXBwOmFwcA==\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.json()["authorization"].as_array().unwrap().is_empty(),
        "{r:?}"
    );
    // The app's own Proxy-Authorization was for tokenproxy, and goes no further.
    let basic = format!("Basic {}", base64_encode("tp:s3cret"));
    assert_eq!(parent.authorizations(), vec![Some(basic)]);
    let mut tunnel = common::tunnel::connect(fwd, &target).await.unwrap();
    let ask = format!("GET /tunnelled HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    tunnel.write_all(ask.as_bytes()).await.unwrap();
    let mut back = String::new();
    tunnel.read_to_string(&mut back).await.unwrap();
    assert!(back.starts_with("HTTP/1.1 200"), "{back}");
    let lines = parent.lines();
    assert_eq!(
        lines,
        vec![
            format!("GET http://{target}/pass"),
            format!("CONNECT {target}")
        ]
    );
    // A CONNECT the parent refuses is the app's 502, with the parent's status.
    parent
        .forbidden_ports
        .lock()
        .unwrap()
        .push(echo.addr.port());
    let ask = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    let refused = raw(fwd, &ask).await;
    assert_eq!(refused.status, 502, "{refused:?}");
    assert_eq!(refused.json()["error"], "upstream_proxy_refused");
    assert!(refused.body.contains("HTTP 403"), "{refused:?}");
    let m = scrape(&p, "/metrics").await;
    assert_eq!(
        counter(
            &m,
            r#"tokenproxy_upstream_proxy_refusals_total{via="tunnel"}"#
        ),
        1
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_is_502_upstream_proxy_refused_and_a_fixed_file_is_used_at_once() {
    let (parent, _idp, echo, c) = peers("right").await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, CANARY).unwrap();
    let file = serde_json::json!({ "file": pw.to_str().unwrap() });
    let c = c
        .upstream(
            "api",
            &format!("http://api.corp.test:{}", echo.addr.port()),
            "api.example.com",
            "idp",
        )
        .set("upstreams.api.allow_plaintext", true)
        .merge(
            "proxy.upstream_proxy",
            &proxy_section(&parent, file, &["127.0.0.1"]),
        );
    let p = tokenproxy::start(c.config()).await.unwrap();
    let r = get_api(&p).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_proxy_refused");
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("HTTP 407") && message.contains("password"),
        "{message}"
    );
    let m = scrape(&p, "/metrics").await;
    assert_eq!(
        counter(
            &m,
            r#"tokenproxy_upstream_proxy_refusals_total{via="upstream"}"#
        ),
        1
    );
    // Rotated on disk: the next request reads it (a refusal re-reads the source).
    std::fs::write(&pw, "right").unwrap();
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    for shown in [r.body.clone(), message, m, scrape(&p, "/status").await] {
        assert!(
            !shown.contains(CANARY) && !shown.contains(&base64_encode(&format!("tp:{CANARY}")))
        );
    }
    p.shutdown().await;
}

#[tokio::test]
async fn token_requests_the_parent_refuses_show_in_status_with_its_status() {
    let parent = Parent::start("tp:right").await;
    let (addr, ca) = tls_server(Arc::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let c = TestConfig::new()
        .forward()
        .set("tokens.wait_timeout", "1s")
        .client(
            "idp",
            &format!("https://idp.corp.test:{}/token", addr.port()),
            "b",
        )
        .set("clients.idp.ca_file", ca_path.to_str().unwrap())
        .upstream("api", "https://api.example.com", "api.example.com", "idp")
        .merge(
            "proxy.upstream_proxy",
            &proxy_section(&parent, CANARY.into(), &[]),
        );
    let p = tokenproxy::start(c.config()).await.unwrap();
    eventually(|| !parent.lines().is_empty()).await;
    let mut status = String::new();
    for _ in 0..100 {
        status = scrape(&p, "/status").await;
        if status.contains("HTTP 407") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        status.contains("parent proxy") && status.contains("HTTP 407"),
        "{status}"
    );
    let m = scrape(&p, "/metrics").await;
    assert!(
        counter(
            &m,
            r#"tokenproxy_upstream_proxy_refusals_total{via="token"}"#
        ) >= 1
    );
    let outcome =
        r#"tokenproxy_token_fetches_total{outcome="upstream_proxy_refused",upstream="api"}"#;
    assert!(counter(&m, outcome) >= 1, "{m}");
    let r = get_api(&p).await;
    assert_eq!(r.status, 503, "{r:?}");
    for shown in [status, m, r.body] {
        assert!(!shown.contains(CANARY), "{shown}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn a_parent_that_is_tokenproxy_itself_is_refused_at_start() {
    let idp = FakeIdp::start().await;
    let port = free_port();
    let mut config = TestConfig::new()
        .forward()
        .set("admin.listen", format!("127.0.0.1:{port}"))
        .client("idp", &idp.url(), "client-secret")
        .upstream("api", "https://api.example.com", "api.example.com", "idp")
        .config();
    // Past validation (which refuses a fixed port): the check made once listeners are bound,
    // as for `exec --ephemeral`, whose ports are known only then.
    let parent = tokenproxy::config::ParentProxyConfig {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
        no_proxy: vec![],
    };
    config.proxy.upstream_proxy = Some(Arc::new(parent));
    let err = tokenproxy::start(config).await.err().unwrap().to_string();
    assert!(
        err.contains("own listeners") && err.contains("HTTP_PROXY"),
        "{err}"
    );
}
