//! One host, several identities by path: `match: [host/prefix/*]`. The longest prefix wins, a
//! whole-host pattern is the fallback, and a path that normalises outside a prefix never gets
//! that prefix's token, through the forward listener and inside CONNECT tunnels (HTTP/1 and
//! HTTP/2). Each upstream has its own authorization server here, so a token names its upstream.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::tunnel::connect;
use common::*;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    p: tokenproxy::Running,
    _idps: Vec<FakeIdp>,
    echo: Echo,
}

/// `whole` owns api.example.com, `orders` its /orders/ paths, `archive` /orders/archive/;
/// `direct` owns only /orders/ on the echo server's own address (no whole-host pattern).
async fn start() -> Setup {
    let echo = Echo::start().await;
    let mut idps = Vec::new();
    let mut c = TestConfig::new().forward();
    for name in ["whole", "orders", "archive", "direct"] {
        let idp = FakeIdp::start().await;
        idp.push(Answer::token(&format!("{name}-token"), 3600));
        c = c.client(name, &idp.url(), "s3cret");
        idps.push(idp);
    }
    let echo_host = echo.addr.to_string();
    let c = c
        .upstream("whole", &echo.url(), "api.example.com", "whole")
        .upstream("orders", &echo.url(), "api.example.com/orders/*", "orders")
        .upstream(
            "archive",
            &echo.url(),
            "api.example.com/orders/archive/*",
            "archive",
        )
        .upstream(
            "direct",
            &echo.url(),
            &format!("{echo_host}/orders/*"),
            "direct",
        );
    let p = tokenproxy::start(c.config()).await.unwrap();
    eventually(|| idps.iter().all(|i| i.calls() == 1)).await;
    Setup {
        p,
        _idps: idps,
        echo,
    }
}

/// `GET http://api.example.com<path>` through the forward listener.
async fn forward(s: &Setup, path: &str) -> RawResponse {
    let target = format!("http://api.example.com{path}");
    get(s.p.forward_addr().unwrap(), &target, "api.example.com", "").await
}

fn token(r: &RawResponse) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    let auth = &r.json()["authorization"][0];
    auth.as_str().unwrap_or("none").to_string()
}

#[tokio::test]
async fn the_longest_prefix_gets_its_token_and_the_host_is_the_fallback() {
    let s = start().await;
    for (path, want) in [
        ("/orders", "orders"),
        ("/orders/42?x=1", "orders"),
        ("/orders/archive/2019", "archive"),
        ("/ordersx", "whole"),
        ("/users/1", "whole"),
        ("/", "whole"),
    ] {
        let r = forward(&s, path).await;
        assert_eq!(token(&r), format!("Bearer {want}-token"), "{path}");
    }
    let r = forward(&s, "/orders/42?x=1").await;
    assert_eq!(r.json()["uri"], "/orders/42?x=1", "the path goes as sent");
    s.p.shutdown().await;
}

#[tokio::test]
async fn dot_segments_are_routed_and_sent_as_the_path_they_name() {
    let s = start().await;
    for (path, want, sent) in [
        ("/orders/../users?q=1", "whole", "/users?q=1"),
        ("/orders/%2e%2E/users", "whole", "/users"),
        ("/orders/./archive/../../users", "whole", "/users"),
        ("/users/../orders/7", "orders", "/orders/7"),
        ("/%6Frders/7", "orders", "/orders/7"),
        // Outside /orders on every reading: the host's token, the path as sent.
        ("/orders%2F..%2Fusers", "whole", "/orders%2F..%2Fusers"),
    ] {
        let r = forward(&s, path).await;
        assert_eq!(token(&r), format!("Bearer {want}-token"), "{path}");
        assert_eq!(r.json()["uri"], sent, "{path}");
    }
    s.p.shutdown().await;
}

#[tokio::test]
async fn paths_that_servers_read_two_ways_are_refused() {
    let s = start().await;
    let before = s.echo.requests.load(std::sync::atomic::Ordering::SeqCst);
    for path in [
        "/orders/..%2Fusers",
        "/orders/..%5cusers",
        "/orders//../users",
        "/orders/..;/users",
        "//orders/1",
        "/users/..;/orders/1",
        "/orders/%zz",
    ] {
        let r = forward(&s, path).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "bad_request", "{path}");
        assert!(!r.body.contains("-token"), "{path}: {}", r.body);
    }
    let after = s.echo.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(before, after, "nothing reached the upstream");
    s.p.shutdown().await;
}

#[tokio::test]
async fn a_path_no_upstream_claims_is_passed_through_without_a_token() {
    let s = start().await;
    let host = s.echo.addr.to_string();
    let at = |path: &str| format!("http://{host}{path}");
    let fwd = s.p.forward_addr().unwrap();
    let r = get(fwd, &at("/orders/1"), &host, "").await;
    assert_eq!(token(&r), "Bearer direct-token");
    let r = get(fwd, &at("/users/1"), &host, "").await;
    assert_eq!(token(&r), "none", "{r:?}");
    let r = get(fwd, &at("/orders/../users/1"), &host, "").await;
    assert_eq!(token(&r), "none");
    assert_eq!(r.json()["uri"], "/users/1");
    s.p.shutdown().await;
}

#[tokio::test]
async fn requests_in_a_tunnel_are_routed_by_path_over_http1_and_http2() {
    let s = start().await;
    let fwd = s.p.forward_addr().unwrap();
    // HTTP/1.1, keep-alive: two requests on one tunnel, two identities.
    let mut t = connect(fwd, "api.example.com:80").await.unwrap();
    t.write_all(b"GET /orders/1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = t.read(&mut buf).await.unwrap();
    let first = parse_response(&buf[..n]);
    assert_eq!(token(&first), "Bearer orders-token");
    t.write_all(
        b"GET /orders/../users HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut rest = Vec::new();
    t.read_to_end(&mut rest).await.unwrap();
    let second = parse_response(&rest);
    assert_eq!(token(&second), "Bearer whole-token");
    assert_eq!(second.json()["uri"], "/users");

    // HTTP/2 with prior knowledge: routed by :path.
    let t = connect(fwd, "api.example.com:80").await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(t))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (path, want) in [
        ("/orders/archive/1", "archive"),
        ("/orders/9", "orders"),
        ("/x", "whole"),
    ] {
        let req = http::Request::get(format!("http://api.example.com{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["authorization"][0],
            format!("Bearer {want}-token"),
            "{path}"
        );
    }
    let req = http::Request::get("http://api.example.com/orders/..;/users")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    s.p.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_says_intercept_false_keeps_its_connects_refused() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let c = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), "s3cret")
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .set("upstreams.api.intercept", false);
    let p = tokenproxy::start(c.config()).await.unwrap();
    let refused = connect(p.forward_addr().unwrap(), "api.example.com:80")
        .await
        .unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    p.shutdown().await;
}
