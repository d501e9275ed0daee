//! Upstreams whose token requests are the same share one token: one fetch at start and per
//! lifetime for the group, one refresh after a 401 from any of them, carried over a reload;
//! metrics and /status stay per upstream.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;

/// `a` and `b` ask for the same scopes in another order; `c` for another scope; `d` adds an
/// audience; `e` is `a` again. Each has its own host.
fn upstreams(echo: &Echo, with_e: bool) -> String {
    let up = |name: &str, extra: &str| {
        format!(
            "  {name}:\n    url: {}\n    match: [{name}.example.com]\n    client: idp\n{extra}",
            echo.url()
        )
    };
    let mut all = up("a", "    scopes: [read, write]\n")
        + &up("b", "    scopes: [write, read]\n")
        + &up("c", "    scopes: [read]\n")
        + &up(
            "d",
            "    scopes: [read, write]\n    audience: https://d.example.com\n",
        );
    if with_e {
        all += &up("e", "    scopes: [read, write]\n");
    }
    all
}

/// The `/status` entry of one upstream.
async fn status_row(p: &tokenproxy::Running, name: &str) -> serde_json::Value {
    let status = get(p.admin_addr().unwrap(), "/status", "x", "")
        .await
        .json();
    let rows = status["upstreams"].as_array().unwrap().clone();
    rows.into_iter().find(|u| u["upstream"] == name).unwrap()
}

/// The proxy with upstreams a to d, once their three tokens are in.
async fn start() -> (FakeIdp, Echo, tokenproxy::Running) {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let yaml = config(&idp, "  listen: 127.0.0.1:0", &upstreams(&echo, false));
    let p = tokenproxy::start(yaml).await.unwrap();
    eventually(|| idp.calls() == 3).await;
    (idp, echo, p)
}

async fn metrics(p: &tokenproxy::Running) -> String {
    get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body
}

#[tokio::test]
async fn identical_token_requests_share_one_token_and_its_refreshes() {
    let (idp, _echo, p) = start().await;
    let fwd = p.forward_addr().unwrap();
    let token = |host: &'static str| async move {
        let r = get(fwd, &format!("http://{host}/x"), host, "").await;
        assert_eq!(r.status, 200, "{r:?}");
        r.json()["authorization"][0].as_str().unwrap().to_string()
    };
    let (a, b, c, d) = (
        token("a.example.com").await,
        token("b.example.com").await,
        token("c.example.com").await,
        token("d.example.com").await,
    );
    assert_eq!(a, b, "same token request, same token");
    assert_ne!(a, c);
    assert_ne!(a, d);
    assert_ne!(c, d);
    assert_eq!(idp.calls(), 3, "one token request per distinct request");
    let bodies: Vec<String> = idp
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect();
    assert!(bodies.iter().any(|b| b.contains("audience=")), "{bodies:?}");

    // /status: per upstream, naming the shared source.
    let row = |name: &'static str| status_row(&p, name);
    assert_eq!(row("b").await["token_source"], "a");
    assert_eq!(
        row("a").await["shares_token_with"],
        serde_json::json!(["b"])
    );
    assert_eq!(row("c").await["shares_token_with"], serde_json::json!([]));
    let m = metrics(&p).await;
    for name in ["a", "b"] {
        let want =
            format!(r#"tokenproxy_token_fetches_total{{outcome="success",upstream="{name}"}} 1"#);
        assert!(m.contains(&want), "{want}\n{m}");
    }

    // A 401 from b refreshes the group's token once; a gets the new one too.
    let before = idp.calls();
    let r = get(fwd, "http://b.example.com/401", "b.example.com", "").await;
    assert_eq!(r.status, 401);
    eventually(|| idp.calls() == before + 1).await;
    let fresh = token("a.example.com").await;
    assert_ne!(fresh, a);
    assert_eq!(token("b.example.com").await, fresh);
    assert_eq!(
        token("c.example.com").await,
        c,
        "another group is untouched"
    );
    assert_eq!(idp.calls(), before + 1);
    let m = metrics(&p).await;
    assert!(
        m.contains(r#"tokenproxy_upstream_auth_retries_total{upstream="b"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"tokenproxy_upstream_auth_retries_total{upstream="a"} 0"#),
        "{m}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_reload_carries_sources_over_by_their_token_request() {
    let (idp, echo, p) = start().await;
    let fwd = p.forward_addr().unwrap();
    let a = get(fwd, "http://a.example.com/x", "a.example.com", "")
        .await
        .json();
    // e is new, and asks for what a asks for: it joins a's source, no new fetch.
    p.apply(config(
        &idp,
        "  listen: 127.0.0.1:0",
        &upstreams(&echo, true),
    ))
    .await
    .unwrap();
    let e = get(fwd, "http://e.example.com/x", "e.example.com", "")
        .await
        .json();
    assert_eq!(e["authorization"], a["authorization"]);
    assert_eq!(idp.calls(), 3);
    let e_row = status_row(&p, "e").await;
    assert_eq!(e_row["token_source"], "a");
    assert_eq!(e_row["shares_token_with"], serde_json::json!(["a", "b"]));
    p.shutdown().await;
}

#[tokio::test]
async fn a_shared_source_refreshes_once_per_lifetime_for_its_group() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    // 4 s tokens, usable for 3 s (the last second is never used): refreshed at 2.7 s, so
    // between 2.7 s and 5.4 s each source has fetched twice.
    *idp.default_expires_in.lock().unwrap() = 4;
    let started = std::time::Instant::now();
    let p = tokenproxy::start(config(
        &idp,
        "  listen: 127.0.0.1:0",
        &upstreams(&echo, false),
    ))
    .await
    .unwrap();
    eventually(|| idp.calls() >= 6).await;
    tokio::time::sleep(std::time::Duration::from_millis(4200).saturating_sub(started.elapsed()))
        .await;
    assert_eq!(
        idp.calls(),
        6,
        "3 sources (not 4 upstreams) x (start + one refresh)"
    );
    p.shutdown().await;
}

/// 20 distinct token requests of one client at start: at most 8 in flight at once (not a
/// burst of 20 connections and requests), and every one of them made.
#[tokio::test(flavor = "multi_thread")]
async fn a_clients_token_requests_at_start_are_at_most_eight_at_once() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    *idp.default_delay.lock().unwrap() = std::time::Duration::from_millis(150);
    let ups: String = (0..20)
        .map(|i| {
            format!(
                "  api{i}:\n    url: {}\n    match: [api{i}.example.com]\n    client: idp\n    scopes: [s{i}]\n",
                echo.url()
            )
        })
        .collect();
    let p = tokenproxy::start(config(&idp, "  listen: 127.0.0.1:0", &ups))
        .await
        .unwrap();
    for _ in 0..100 {
        if idp.calls() == 20 && idp.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(idp.calls(), 20);
    let most = idp.max_in_flight.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(most, 8, "token requests in flight at once");
    p.shutdown().await;
}
