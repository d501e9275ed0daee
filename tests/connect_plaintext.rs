//! `proxy.connect_plaintext` (default on): with no interception CA, a CONNECT to a host that
//! gets tokens is answered, and the plaintext HTTP/1 or HTTP/2 inside it is served with the
//! token (what Python websockets and undici send for `ws://` and `http://` through a proxy).
//! TLS inside such a tunnel is closed and counted; port 443, and the setting off, keep the
//! clear `403 tunnel_refused`.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::tunnel::connect;
use common::*;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(plaintext: Option<bool>) -> (FakeIdp, Echo, tokenproxy::Running) {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let mut c = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), "s3cret")
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .set(
            "upstreams.api.match",
            serde_json::json!(["api.example.com", "api.example.com:8443"]),
        );
    if let Some(on) = plaintext {
        c = c.set("proxy.connect_plaintext", on);
    }
    let p = tokenproxy::start(c.config()).await.unwrap();
    eventually(|| idp.calls() == 1).await;
    (idp, echo, p)
}

#[tokio::test]
async fn plaintext_http1_in_a_tunnel_gets_the_token_with_no_ca() {
    let (_idp, _echo, p) = start(None).await;
    let mut s = connect(p.forward_addr().unwrap(), "api.example.com:80")
        .await
        .unwrap();
    s.write_all(b"GET /ws-or-fetch HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let r = parse_response(&buf);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
    assert_eq!(r.json()["uri"], "/ws-or-fetch");
    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(
        m.contains(r#"tokenproxy_connects_total{outcome="plaintext"} 1"#),
        "{m}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn http2_with_prior_knowledge_in_a_tunnel_gets_the_token() {
    let (_idp, _echo, p) = start(None).await;
    let s = connect(p.forward_addr().unwrap(), "api.example.com:80")
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://api.example.com/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["authorization"][0], "Bearer tok-1");
    p.shutdown().await;
}

#[tokio::test]
async fn tls_in_a_plaintext_tunnel_is_closed_and_counted() {
    let (_idp, echo, p) = start(None).await;
    let mut s = connect(p.forward_addr().unwrap(), "api.example.com:8443")
        .await
        .unwrap();
    // The start of a ClientHello: a handshake record.
    s.write_all(b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest));
    read.await.unwrap().unwrap_or_default();
    assert!(rest.is_empty(), "closed without an answer: {rest:?}");
    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(
        m.contains(r#"tokenproxy_intercept_handshake_failures_total{reason="not_intercepted"} 1"#),
        "{m}"
    );
    assert_eq!(echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    p.shutdown().await;
}

#[tokio::test]
async fn port_443_and_the_setting_off_keep_the_refusal() {
    let (_idp, _echo, p) = start(None).await;
    let fwd = p.forward_addr().unwrap();
    let refused = connect(fwd, "api.example.com:443").await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    p.shutdown().await;
    let (_idp, _echo, p) = start(Some(false)).await;
    let refused = connect(p.forward_addr().unwrap(), "api.example.com:80")
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    p.shutdown().await;
}
