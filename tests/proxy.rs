//! In-process integration tests of the request path: a fake authorization server and an echo
//! upstream on port 0, the proxy started through the library.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use tokenproxy::Running;

const FWD: &str = "  listen: 127.0.0.1:0";

async fn start(idp: &FakeIdp, proxy: &str, upstreams: &str) -> Running {
    tokenproxy::start(config(idp, proxy, upstreams))
        .await
        .unwrap()
}

fn inventory(echo: &Echo, extra: &str) -> String {
    format!(
        "  inventory:\n    url: {}\n    match: [inventory.example.com]\n    client: idp\n    scopes: [inventory:read, inventory:write]\n{extra}",
        echo.url()
    )
}

#[tokio::test]
async fn forward_injects_the_token_routed_by_target_not_host_header() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    let fwd = p.forward_addr().unwrap();
    let r = get(
        fwd,
        "http://Inventory.Example.com./items?x=1",
        "evil.example.net",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["authorization"], serde_json::json!(["Bearer tok-1"]));
    assert_eq!(v["uri"], "/items?x=1");
    assert_eq!(
        v["host"],
        echo.addr.to_string(),
        "Host is regenerated from the upstream url"
    );
    let seen = idp.seen.lock().unwrap()[0].clone();
    assert_eq!(
        seen.authorization.as_deref(),
        Some("Basic b3JkZXJzOnMzY3JldA==")
    );
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        seen.body,
        "grant_type=client_credentials&scope=inventory%3Aread+inventory%3Awrite"
    );

    // The Host header naming a matched upstream does not route an unmatched target to it.
    let r = get(
        fwd,
        &format!("{}/other", echo.url()),
        "inventory.example.com",
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!([]),
        "passthrough carries no token"
    );
    assert_eq!(
        r.json()["host"],
        echo.addr.to_string(),
        "a passthrough's Host is its target's, not the one the app wrote"
    );
    assert_eq!(idp.calls(), 1);
    p.shutdown().await;
}

#[tokio::test]
async fn client_secret_post_sends_credentials_in_the_body_with_extra_params() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let config = TestConfig::new()
        .remove("tokens")
        .client("idp", &idp.url(), "p@ss:w+rd/=%&é")
        .set("clients.idp.client_id", "a b:c")
        .set("clients.idp.auth_method", "client_secret_post")
        .set(
            "upstreams.api",
            serde_json::json!({"url": echo.url(), "listen": "127.0.0.1:0", "client": "idp",
                "audience": "https://api.example.com",
                "resource": ["https://a.example.com", "https://b.example.com"],
                "params": {"tenant": "acme"}}),
        );
    let p = tokenproxy::start(config.config()).await.unwrap();
    let r = get(p.reverse_addr("api").unwrap(), "/x", "localhost", "").await;
    assert_eq!(r.status, 200);
    let seen = idp.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.authorization, None);
    assert_eq!(
        seen.body,
        "grant_type=client_credentials&audience=https%3A%2F%2Fapi.example.com&resource=https%3A%2F%2Fa.example.com&resource=https%3A%2F%2Fb.example.com&tenant=acme&client_id=a+b%3Ac&client_secret=p%40ss%3Aw%2Brd%2F%3D%25%26%C3%A9"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn reverse_listener_injects_and_rewrites_host() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(&idp, "", &inventory(&echo, "    listen: 127.0.0.1:0\n")).await;
    assert!(p.forward_addr().is_none());
    let r = get(
        p.reverse_addr("inventory").unwrap(),
        "/v1/items?q=a%20b",
        "127.0.0.1",
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["authorization"], serde_json::json!(["Bearer tok-1"]));
    assert_eq!(v["uri"], "/v1/items?q=a%20b");
    assert_eq!(v["host"], echo.addr.to_string());
    p.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_and_proxy_headers_are_not_forwarded() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    let extra = "Connection: X-Hop, Authorization\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-End: 2\r\n";
    let r = get(
        p.forward_addr().unwrap(),
        "http://inventory.example.com/",
        "inventory.example.com",
        extra,
    )
    .await;
    let v = r.json();
    let headers: Vec<String> = serde_json::from_value(v["headers"].clone()).unwrap();
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !headers.contains(&gone.to_string()),
            "{gone} was forwarded: {headers:?}"
        );
    }
    assert!(headers.contains(&"x-end".to_string()));
    assert!(!headers
        .iter()
        .any(|h| h.starts_with("x-forwarded") || h == "via"));
    assert_eq!(
        v["authorization"],
        serde_json::json!(["Bearer tok-1"]),
        "Connection: Authorization must not drop the token"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn existing_authorization_policies() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let ups = format!(
        "{}  keep:\n    url: {}\n    match: [keep.example.com]\n    client: idp\n    existing_authorization: keep\n  reject:\n    url: {}\n    match: [reject.example.com]\n    client: idp\n    existing_authorization: reject\n",
        inventory(&echo, ""),
        echo.url(),
        echo.url()
    );
    let p = start(&idp, FWD, &ups).await;
    let fwd = p.forward_addr().unwrap();
    let app_auth = "Authorization: Bearer from-app\r\n";
    let r = get(fwd, "http://inventory.example.com/", "x", app_auth).await;
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!(["Bearer tok-1"]),
        "overwrite leaves exactly one"
    );
    let r = get(fwd, "http://keep.example.com/", "x", app_auth).await;
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!(["Bearer from-app"])
    );
    let r = get(fwd, "http://keep.example.com/", "x", "").await;
    assert!(r.json()["authorization"][0]
        .as_str()
        .unwrap()
        .starts_with("Bearer tok-"));
    let r = get(fwd, "http://reject.example.com/", "x", app_auth).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "bad_request");
    assert_eq!(r.json()["upstream"], "reject");
    p.shutdown().await;
}

#[tokio::test]
async fn unmatched_passthrough_and_deny() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(
        &idp,
        "  listen: 127.0.0.1:0\n  unmatched: deny",
        &inventory(&echo, ""),
    )
    .await;
    let r = get(
        p.forward_addr().unwrap(),
        &format!("{}/x", echo.url()),
        "x",
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    let v = r.json();
    assert_eq!(
        (v["error"].as_str(), v["upstream"].as_str()),
        (Some("unmatched_denied"), Some("unmatched"))
    );
    assert_eq!(echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    let metrics = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(
        metrics.contains(r#"tokenproxy_requests_total{code="403",upstream="unmatched"} 1"#),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn single_flight_on_cold_start() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    *idp.default_delay.lock().unwrap() = Duration::from_millis(500);
    let p = start(&idp, "", &inventory(&echo, "    listen: 127.0.0.1:0\n")).await;
    let addr = p.reverse_addr("inventory").unwrap();
    let tasks: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/r{i}"), "x", "").await }))
        .collect();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.json()["authorization"],
            serde_json::json!(["Bearer tok-1"])
        );
    }
    assert_eq!(
        idp.calls(),
        1,
        "1000 concurrent requests must share one token fetch"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn connect_tunnels_unmatched_and_refuses_matched() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    let fwd = p.forward_addr().unwrap();
    // What Python requests sends for https:// through HTTPS_PROXY: HTTP/1.0, no Host header.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(fwd).await.unwrap();
    s.write_all(format!("CONNECT {} HTTP/1.0\r\n\r\n", echo.addr).as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 19];
    s.read_exact(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(
        head.starts_with("HTTP/1.") && head[8..].starts_with(" 200"),
        "{head}"
    );
    let mut rest = Vec::new();
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        rest.push(b[0]);
        if rest.ends_with(b"\r\n\r\n") || rest == b"\n" {
            break;
        }
    }
    s.write_all(b"GET /through-tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let r = parse_response(&buf);
    assert_eq!(r.json()["uri"], "/through-tunnel");
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!([]),
        "a tunnel carries no token"
    );

    let r = raw(fwd, "CONNECT inventory.example.com:443 HTTP/1.1\r\nHost: inventory.example.com:443\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "tunnel_refused");
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .contains("http:// URL"));
    p.shutdown().await;
}

#[tokio::test]
async fn upstream_401_refreshes_and_replays_once() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    echo.accepted.lock().unwrap().push("tok-2".into());
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    let fwd = p.forward_addr().unwrap();
    let body = "{\"a\":1}";
    let req = format!("POST http://inventory.example.com/401 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let r = raw(fwd, &req).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!(["Bearer tok-2"])
    );
    assert_eq!(r.json()["body"], body, "the buffered body is replayed");
    assert_eq!(idp.calls(), 2);
    let metrics = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(
        metrics.contains(r#"tokenproxy_upstream_auth_retries_total{upstream="inventory"} 1"#),
        "{metrics}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn upstream_that_always_says_401_causes_no_fetch_storm() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    let fwd = p.forward_addr().unwrap();
    for _ in 0..20 {
        let r = get(fwd, "http://inventory.example.com/401", "x", "").await;
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    }
    assert_eq!(
        idp.calls(),
        2,
        "one start fetch plus one forced refresh within the interval"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn token_unavailable_is_a_clear_503_and_not_forwarded() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    for _ in 0..50 {
        idp.push(Answer::json(500, r#"{"error":"server_error"}"#));
    }
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    eventually(|| idp.calls() >= 1).await;
    let r = get(
        p.forward_addr().unwrap(),
        "http://inventory.example.com/",
        "x",
        "",
    )
    .await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(v["error"], "token_unavailable");
    assert_eq!(v["upstream"], "inventory");
    assert!(v["message"].as_str().unwrap().contains("HTTP 500"), "{v}");
    assert_eq!(
        echo.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "never forwarded without its token"
    );
    let ready = get(p.admin_addr().unwrap(), "/readyz", "x", "").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["missing"][0]["upstream"], "inventory");
    p.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_map_to_502_504_and_redirects_are_relayed() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ups = format!(
        "{}  down:\n    url: http://{closed}\n    match: [down.example.com]\n    client: idp\n",
        inventory(&echo, "")
    );
    let p = start(
        &idp,
        "  listen: 127.0.0.1:0\n  request_timeout: 300ms",
        &ups,
    )
    .await;
    let fwd = p.forward_addr().unwrap();
    let r = get(fwd, "http://down.example.com/", "x", "").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (502, Some("upstream_unreachable"))
    );
    let r = get(fwd, "http://inventory.example.com/slow", "x", "").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (504, Some("upstream_timeout"))
    );
    let r = get(fwd, "http://inventory.example.com/redirect", "x", "").await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location").as_deref(),
        Some("http://elsewhere.example/")
    );
    p.shutdown().await;
}

#[tokio::test]
async fn bad_targets_get_400() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    let fwd = p.forward_addr().unwrap();
    for target in [
        "http://user:pass@inventory.example.com/",
        "/origin-form",
        "http://0x7f.1/",
    ] {
        let r = get(fwd, target, "inventory.example.com", "").await;
        assert_eq!(r.status, 400, "{target}: {r:?}");
    }
    let r = raw(fwd, "GET http://inventory.example.com/ HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.status, 400);
    assert_eq!(echo.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
    p.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    *idp.default_delay.lock().unwrap() = Duration::from_millis(300);
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    let admin = p.admin_addr().unwrap();
    let r = get(admin, "/readyz", "x", "").await;
    assert_eq!(r.status, 503, "not ready before the first token");
    assert_eq!(
        r.json()["missing"][0]["reason"],
        "waiting for the first token"
    );
    eventually(|| idp.calls() == 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(admin, "/readyz", "x", "").await.status, 200);
    assert_eq!(get(admin, "/livez", "x", "").await.status, 200);
    assert_eq!(
        get(
            p.forward_addr().unwrap(),
            "http://inventory.example.com/",
            "x",
            ""
        )
        .await
        .status,
        200
    );
    let status = get(admin, "/status", "x", "").await;
    let up = &status.json()["upstreams"][0];
    assert_eq!(up["upstream"], "inventory");
    assert_eq!(up["client"], "idp");
    assert_eq!(up["state"], "valid");
    assert_eq!(up["fetches"], 1);
    let secs = up["seconds_to_expiry"].as_u64().unwrap();
    assert!(secs > 3000 && secs <= 3600, "{secs}");
    assert!(!status.body.contains("tok-1") && !status.body.contains("s3cret"));
    let metrics = get(admin, "/metrics", "x", "").await.body;
    for name in [
        "tokenproxy_requests_total",
        "tokenproxy_request_duration_seconds",
        "tokenproxy_token_fetches_total",
        "tokenproxy_token_fetch_duration_seconds",
        "tokenproxy_token_expiry_timestamp_seconds",
        "tokenproxy_upstream_auth_retries_total",
        "tokenproxy_config_reloads_total",
        "tokenproxy_config_last_reload_successful",
        "tokenproxy_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics"
        );
    }
    assert!(!metrics.contains("tok-1") && !metrics.contains("s3cret"));
    assert_eq!(
        raw(
            admin,
            "POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .await
        .status,
        405
    );
    p.shutdown().await;
}

#[tokio::test]
async fn request_bodies_are_forwarded_small_and_large() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(&idp, "", &inventory(&echo, "    listen: 127.0.0.1:0\n")).await;
    let addr = p.reverse_addr("inventory").unwrap();
    for size in [10usize, 200 * 1024] {
        let body = "x".repeat(size);
        let req = format!("PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n{body}");
        let r = raw(addr, &req).await;
        assert_eq!(r.json()["body"].as_str().unwrap().len(), size);
    }
    let chunked = "PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_eq!(raw(addr, chunked).await.json()["body"], "abcde");
    p.shutdown().await;
}

#[tokio::test]
async fn bad_token_answers_are_counted_retried_and_never_injected() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    idp.push(Answer::json(200, "<html>maintenance</html>"));
    idp.push(Answer::json(
        200,
        r#"{"access_token":"evil\r\nX-Injected: 1","token_type":"Bearer"}"#,
    ));
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    // backoff_min is 100ms in the test config: two refusals, then a good token.
    eventually(|| idp.calls() == 3).await;
    let r = get(
        p.forward_addr().unwrap(),
        "http://inventory.example.com/",
        "x",
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!(["Bearer tok-3"])
    );
    let metrics = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(
        metrics.contains(
            r#"tokenproxy_token_fetches_total{outcome="invalid_response",upstream="inventory"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"tokenproxy_token_fetches_total{outcome="success",upstream="inventory"} 1"#));
    p.shutdown().await;
}

#[tokio::test]
async fn a_401_on_a_body_too_large_to_replay_is_returned_and_the_next_request_is_renewed() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    echo.accepted.lock().unwrap().push("tok-2".into());
    let p = start(&idp, FWD, &inventory(&echo, "")).await;
    let fwd = p.forward_addr().unwrap();
    let body = "x".repeat(70 * 1024);
    let req = format!("POST http://inventory.example.com/401 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let r = raw(fwd, &req).await;
    assert_eq!(r.status, 401, "a streamed body cannot be replayed");
    eventually(|| idp.calls() == 2).await;
    let r = get(fwd, "http://inventory.example.com/401", "x", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["authorization"],
        serde_json::json!(["Bearer tok-2"])
    );
    p.shutdown().await;
}

#[tokio::test]
async fn shutdown_turns_not_ready_at_once_serves_through_the_delay_then_closes_idle_keepalives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = std::sync::Arc::new(
        start(
            &idp,
            "  listen: 127.0.0.1:0\n  shutdown_delay: 500ms",
            &inventory(&echo, ""),
        )
        .await,
    );
    let (fwd, admin) = (p.forward_addr().unwrap(), p.admin_addr().unwrap());
    eventually(|| idp.calls() == 1).await;
    // A keep-alive connection that has served one request and sits idle.
    let mut idle = tokio::net::TcpStream::connect(fwd).await.unwrap();
    idle.write_all(b"GET http://inventory.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    let stopping = tokio::spawn({
        let p = p.clone();
        async move { p.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ready = get(admin, "/readyz", "x", "").await;
    assert_eq!(ready.status, 503, "not ready at once");
    assert_eq!(ready.json()["stopping"], true);
    let r = get(fwd, "http://inventory.example.com/", "x", "").await;
    assert_eq!(r.status, 200, "still serving during shutdown_delay");
    assert!(stopping.await.unwrap(), "drained in time");
    let n = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the idle keep-alive connection was closed");
    assert!(tokio::net::TcpStream::connect(fwd).await.is_err());
}

#[tokio::test]
async fn a_401_to_the_apps_own_credentials_does_not_refresh_our_token() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let p = start(
        &idp,
        FWD,
        &inventory(&echo, "    existing_authorization: keep\n"),
    )
    .await;
    let fwd = p.forward_addr().unwrap();
    eventually(|| idp.calls() == 1).await;
    let r = get(
        fwd,
        "http://inventory.example.com/401",
        "x",
        "Authorization: Bearer from-app\r\n",
    )
    .await;
    assert_eq!(r.status, 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(idp.calls(), 1, "our token was not the one refused");
    p.shutdown().await;
}

/// A raw upstream that answers every request with `response`, counts connections, and closes
/// each connection after `per_conn` answers (without saying so in the response).
async fn raw_upstream(
    response: &'static str,
    per_conn: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut pending = Vec::new();
                let mut answered = 0;
                while answered < per_conn {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        s.write_all(response.as_bytes()).await.unwrap();
                        answered += 1;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let empty = "HTTP/1.1 204 No Content\r\n\r\n";
    for response in ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", empty] {
        reused_for(response).await;
    }
}

async fn reused_for(response: &'static str) {
    let idp = FakeIdp::start().await;
    let (addr, conns) = raw_upstream(response, usize::MAX).await;
    let ups = format!("  api:\n    url: http://{addr}\n    listen: 127.0.0.1:0\n    client: idp\n");
    let p = start(&idp, "", &ups).await;
    let rev = p.reverse_addr("api").unwrap();
    for _ in 0..20 {
        let status = get(rev, "/x", "x", "").await.status;
        assert!(status == 200 || status == 204, "{status}");
    }
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream connection for 20 requests ({response:?})"
    );
    p.shutdown().await;
}

/// The upstream answers as soon as it has the head; the app sends the rest of its (chunked)
/// body 20 ms later. The connection is not ready when the answer ends, becomes ready once the
/// body is through (within the pool's 100 ms to settle), and is reused.
#[tokio::test]
async fn a_connection_whose_body_ends_after_the_answer_is_kept_once_it_settles() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that answers at once and reads the body meanwhile (hyper, so it frames it).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let service = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req.into_body();
                    tokio::spawn(async move { http_body_util::BodyExt::collect(body).await });
                    let ok = http_body_util::Full::new(bytes::Bytes::from_static(b"ok"));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(ok))
                },
            );
            let io = hyper_util::rt::TokioIo::new(s);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
        }
    });
    let idp = FakeIdp::start().await;
    let ups = format!("  api:\n    url: http://{addr}\n    listen: 127.0.0.1:0\n    client: idp\n");
    let p = start(&idp, "", &ups).await;
    let rev = p.reverse_addr("api").unwrap();
    let mut app = tokio::net::TcpStream::connect(rev).await.unwrap();
    // Chunked, so that it streams (a small sized body is read whole first, for a replay).
    let head = "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n";
    app.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = app.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.write_all(b"5\r\n67890\r\n0\r\n\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let next = get(rev, "/x", "x", "").await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "the settled connection was reused"
    );
    p.shutdown().await;
}

/// The upstream answers 413 after the head and reads none of the 32 MB body for a second (more
/// than socket buffers hold), so the connection is still busy sending it when the answer ends:
/// it is closed (its task aborted), not pooled, and the next request goes on a new connection.
#[tokio::test]
async fn a_connection_still_sending_a_body_when_answered_is_closed_not_pooled() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (conns, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, d) = (conns.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            let d = d.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                if first {
                    let answer = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n";
                    s.write_all(answer.as_bytes()).await.unwrap();
                    // Read nothing for a second, then drain until the proxy closes, counting.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let (mut sink, mut drained) = (vec![0u8; 65536], 0);
                    while let Ok(n @ 1..) = s.read(&mut sink).await {
                        drained += n;
                    }
                    d.store(drained + 1, Ordering::SeqCst);
                } else {
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    s.write_all(answer.as_bytes()).await.unwrap();
                    let mut sink = vec![0u8; 65536];
                    while s.read(&mut sink).await.unwrap_or(0) > 0 {}
                }
            });
        }
    });
    let idp = FakeIdp::start().await;
    let ups = format!("  api:\n    url: http://{addr}\n    listen: 127.0.0.1:0\n    client: idp\n");
    let p = start(&idp, "", &ups).await;
    let rev = p.reverse_addr("api").unwrap();
    // The app streams its body for as long as the proxy takes it.
    let mut app = tokio::net::TcpStream::connect(rev).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 33554432\r\n\r\n";
    app.write_all(head.as_bytes()).await.unwrap();
    let (mut app_read, mut app_write) = app.into_split();
    tokio::spawn(async move {
        let chunk = vec![b'a'; 65536];
        for _ in 0..512 {
            if app_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = vec![0u8; 1024];
    let n = app_read.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 413"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    let next = get(rev, "/x", "x", "").await;
    assert_eq!(next.status, 200, "{next:?}");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "the busy connection was not reused"
    );
    // Closed part-way: the upstream got less than the whole body (a connection left to finish
    // sending in the background would have delivered all of it).
    eventually(|| closed.load(Ordering::SeqCst) > 0).await;
    let drained = closed.load(Ordering::SeqCst) - 1;
    assert!(drained < 33554432, "{drained} bytes: the body was sent on");
    p.shutdown().await;
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_reused() {
    let idp = FakeIdp::start().await;
    // Closes after every answer without a `Connection: close`, like a server whose keep-alive
    // timeout is shorter than ours; and answers with an empty body (never polled to its end).
    let (addr, conns) = raw_upstream("HTTP/1.1 204 No Content\r\n\r\n", 1).await;
    let ups = format!("  api:\n    url: http://{addr}\n    listen: 127.0.0.1:0\n    client: idp\n");
    let p = start(&idp, "", &ups).await;
    let rev = p.reverse_addr("api").unwrap();
    for i in 0..200 {
        let r = get(rev, "/x", "x", "").await;
        assert_eq!(r.status, 204, "request {i}: {r:?}");
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 200);
    p.shutdown().await;
}

#[tokio::test]
async fn each_answer_on_a_keep_alive_connection_is_timed_from_its_own_start() {
    use http_body_util::{BodyExt, Empty};
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let proxy = "  listen: 127.0.0.1:0\n  request_timeout: 300ms";
    let p = start(&idp, proxy, &inventory(&echo, "")).await;
    let stream = tokio::net::TcpStream::connect(p.forward_addr().unwrap())
        .await
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let request = |path: &str| {
        http::Request::get(format!("http://inventory.example.com{path}"))
            .header("host", "inventory.example.com")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    // Answered in time: its deadline, 300 ms from its start, stays on the connection's timer.
    let r = sender.send_request(request("/fast")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The upstream takes 700 ms: a 504 at this request's own 300 ms, not at the last one's.
    let started = std::time::Instant::now();
    let r = sender.send_request(request("/slow")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    assert!(
        took >= Duration::from_millis(290),
        "timed out after {took:?}"
    );
    p.shutdown().await;
}
