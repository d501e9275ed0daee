//! `proxy.deny_destinations`: passthrough requests and opaque tunnels may not reach the listed
//! addresses. A name is checked on what it resolves to, at connect time (`localhost` here
//! stands for any name that resolves into a denied network); an IP literal before any
//! connect. Matched upstreams are the operator's choice and are not subject to it.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::tunnel::connect;
use common::*;

async fn start(deny: serde_json::Value) -> (FakeIdp, Echo, tokenproxy::Running) {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let c = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), "s3cret")
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .set("proxy.deny_destinations", deny);
    let p = tokenproxy::start(c.config()).await.unwrap();
    eventually(|| idp.calls() == 1).await;
    (idp, echo, p)
}

async fn denied_count(p: &tokenproxy::Running, via: &str) -> u64 {
    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    let line = format!("tokenproxy_destinations_denied_total{{via=\"{via}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("no {line} in\n{m}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn passthrough_to_a_denied_address_is_403_by_literal_and_by_resolved_name() {
    let (_idp, echo, p) = start(serde_json::json!(["loopback", "metadata"])).await;
    let fwd = p.forward_addr().unwrap();
    let port = echo.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        "169.254.169.254".to_string(),
    ] {
        let r = get(fwd, &format!("http://{host}/x"), &host, "").await;
        assert_eq!(r.status, 403, "{host}: {r:?}");
        assert_eq!(r.json()["error"], "destination_denied", "{host}");
    }
    assert_eq!(echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(denied_count(&p, "passthrough").await, 4);
    // The matched upstream lives on loopback too: the operator's choice, not denied.
    let r = get_api(&p).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["authorization"][0], "Bearer tok-1");
    p.shutdown().await;
}

#[tokio::test]
async fn tunnels_to_denied_addresses_are_refused_at_connect() {
    let (_idp, echo, p) = start(serde_json::json!(["127.0.0.0/8", "::1"])).await;
    let fwd = p.forward_addr().unwrap();
    let port = echo.addr.port();
    for authority in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let head = connect(fwd, &authority).await.unwrap_err();
        assert!(head.starts_with("HTTP/1.1 403"), "{authority}: {head}");
    }
    assert_eq!(denied_count(&p, "tunnel").await, 2);
    p.shutdown().await;
}

#[tokio::test]
async fn addresses_outside_the_list_pass_as_before() {
    let (_idp, echo, p) = start(serde_json::json!(["metadata", "private"])).await;
    let fwd = p.forward_addr().unwrap();
    let host = format!("localhost:{}", echo.addr.port());
    let r = get(fwd, &format!("http://{host}/x"), &host, "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json()["authorization"].as_array().unwrap().is_empty());
    let tunnel = connect(fwd, &format!("127.0.0.1:{}", echo.addr.port())).await;
    assert!(tunnel.is_ok(), "{tunnel:?}");
    assert_eq!(denied_count(&p, "passthrough").await, 0);
    p.shutdown().await;
}
