//! Traces (`tracing:`), exact, against an in-process OTLP/HTTP collector that decodes the
//! protobuf: the app's trace continues through tokenproxy to the upstream, spans have the
//! right parents and attributes, a token wait links to the fetch, a 401 replay is a second
//! attempt, a queued request shows its wait, an unsampled parent makes no spans, a dead
//! collector changes nothing, and no secret, token, header value or query reaches a span.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::otlp::{Collector, Span, CLIENT, SERVER};
use common::*;
use serde_json::json;
use tokenproxy::Running;

const SECRET: &str = "CANARY-SECRET-91f3";
const TOKEN: &str = "CANARY-TOKEN-3c07";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

async fn start(idp: &FakeIdp, echo: &Echo, endpoint: &str, extra: serde_json::Value) -> Running {
    let config = config_for(idp, echo, endpoint, extra);
    tokenproxy::start(config).await.unwrap()
}

fn config_for(
    idp: &FakeIdp,
    echo: &Echo,
    endpoint: &str,
    extra: serde_json::Value,
) -> tokenproxy::Config {
    let mut c = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), SECRET)
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .set(
            "tracing",
            json!({"otlp_endpoint": endpoint, "service_name": "sidecar-a"}),
        );
    if let serde_json::Value::Object(map) = extra {
        for (k, v) in map {
            c = c.set(&k, v);
        }
    }
    c.config()
}

/// `target` through the forward listener with the app's `traceparent` (`flags`: 01 sampled,
/// 00 not) and `tracestate`, and `extra` header lines.
async fn send_traced(p: &Running, target: &str, flags: &str, extra: &str) -> RawResponse {
    let headers =
        format!("traceparent: 00-{TRACE}-{PARENT}-{flags}\r\ntracestate: vendor=1\r\n{extra}");
    get(
        p.forward_addr().unwrap(),
        target,
        "api.example.com",
        &headers,
    )
    .await
}

async fn peers() -> (FakeIdp, Echo, Collector) {
    (
        FakeIdp::start().await,
        Echo::start().await,
        Collector::start().await,
    )
}

async fn spans_of(collector: &Collector, trace: &str, n: usize) -> Vec<Span> {
    for _ in 0..500 {
        let spans = collector.in_trace(trace);
        if spans.len() >= n {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} spans: {:#?}", collector.spans());
}

fn one<'a>(spans: &'a [Span], what: &str, f: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {spans:#?}");
    found[0]
}

#[tokio::test]
async fn the_apps_trace_continues_to_the_upstream_with_token_wait_linked_to_the_fetch() {
    let (idp, echo, collector) = peers().await;
    idp.push(Answer::token(TOKEN, 3600));
    let p = start(&idp, &echo, &collector.url(), json!({})).await;
    let r = send_traced(
        &p,
        "http://api.example.com/orders/7?sig=CANARY-QUERY-55",
        "01",
        "X-Api-Key: CANARY-HEADER-8d\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["authorization"], json!([format!("Bearer {TOKEN}")]));
    let sent = v["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", TRACE, "01"),
        "{sent}"
    );
    assert_ne!(
        parts[2], PARENT,
        "the upstream's parent is tokenproxy's span, not the app's"
    );
    assert_eq!(v["tracestate"], "vendor=1");

    let spans = spans_of(&collector, TRACE, 3).await;
    let server = one(&spans, "server span", |s| s.kind == SERVER);
    assert_eq!(server.parent, PARENT);
    assert_eq!(server.name, "GET");
    assert_eq!(server.service, "sidecar-a");
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("tokenproxy.upstream"), Some("api"));
    assert_eq!(server.attr("tokenproxy.listener"), Some("forward"));
    assert_eq!(server.attr("server.address"), Some("api.example.com"));
    assert_eq!(server.attr("url.path"), Some("/orders/7"));
    assert_eq!(
        server.attr("url.query"),
        None,
        "no query unless include_query"
    );
    let attempt = one(&spans, "attempt", |s| s.kind == CLIENT);
    assert_eq!(attempt.parent, server.span_id);
    assert_eq!(
        attempt.span_id, parts[2],
        "the upstream's parent is the attempt span"
    );
    assert_eq!(attempt.attr("http.response.status_code"), Some("200"));
    assert_eq!(attempt.attr("http.request.resend_count"), None);
    let wait = one(&spans, "token wait", |s| s.name == "token wait");
    assert_eq!(wait.parent, server.span_id);

    let fetches = collector.named("token fetch");
    let fetch = one(&fetches, "token fetch", |_| true);
    assert_eq!(fetch.parent, "", "a fetch is a root");
    assert_eq!(
        wait.links,
        vec![fetch.span_id.clone()],
        "the wait links to its fetch"
    );
    assert_eq!(fetch.attr("tokenproxy.outcome"), Some("success"));
    assert_eq!(fetch.attr("tokenproxy.grant"), Some("client_credentials"));
    assert_eq!(
        fetch.attr("tokenproxy.auth_method"),
        Some("client_secret_basic")
    );
    assert_eq!(fetch.attr("server.address"), Some("127.0.0.1"));
    assert_eq!(fetch.attr("http.response.status_code"), Some("200"));
    let posts = collector.in_trace(&fetch.trace_id);
    let post = one(&posts, "the token request", |s| s.name == "POST");
    assert_eq!(post.parent, fetch.span_id);
    assert_eq!(
        (post.kind, post.attr("http.response.status_code")),
        (CLIENT, Some("200"))
    );
    assert_eq!(collector.paths.lock().unwrap()[0], "/v1/traces");

    // (`tracestate` is the trace's own, exported with each span as OTLP says.)
    let raw = String::from_utf8_lossy(&collector.raw.lock().unwrap()).into_owned();
    for canary in [SECRET, TOKEN, "CANARY-QUERY-55", "CANARY-HEADER-8d"] {
        assert!(!raw.contains(canary), "{canary} reached a span");
    }
}

#[tokio::test]
async fn an_unsampled_parent_is_followed_and_nothing_of_its_request_is_exported() {
    let (idp, echo, collector) = peers().await;
    let p = start(&idp, &echo, &collector.url(), json!({})).await;
    let r = send_traced(&p, "http://api.example.com/x", "00", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let sent = r.json()["traceparent"].as_str().unwrap().to_string();
    assert!(
        sent.starts_with(&format!("00-{TRACE}-")) && sent.ends_with("-00"),
        "{sent}"
    );
    // A request without a context is sampled (ratio 1): its spans are the marker that the
    // exporter has sent what came before.
    let r = get(
        p.forward_addr().unwrap(),
        "http://api.example.com/y",
        "api.example.com",
        "",
    )
    .await;
    let mine = r.json()["traceparent"]
        .as_str()
        .unwrap()
        .split('-')
        .nth(1)
        .unwrap()
        .to_string();
    spans_of(&collector, &mine, 3).await;
    assert!(
        collector.in_trace(TRACE).is_empty(),
        "{:#?}",
        collector.spans()
    );
}

#[tokio::test]
async fn sample_ratio_zero_traces_no_request_but_every_token_fetch() {
    let (idp, echo, collector) = peers().await;
    let p = start(
        &idp,
        &echo,
        &collector.url(),
        json!({"tracing.sample_ratio": 0.0}),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(get_api(&p).await.status, 200);
    }
    p.shutdown().await;
    // The fetch and its token request, in the fetch's trace; nothing of the requests.
    let spans = collector.spans();
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["POST", "token fetch"], "{spans:#?}");
    assert!(
        spans.iter().all(|s| s.trace_id == spans[0].trace_id),
        "{spans:#?}"
    );
}

#[tokio::test]
async fn a_refused_token_is_a_second_attempt_that_says_why() {
    let (idp, echo, collector) = peers().await;
    echo.accepted.lock().unwrap().push("tok-2".into());
    let p = start(&idp, &echo, &collector.url(), json!({})).await;
    let r = send_traced(&p, "http://api.example.com/401/x", "01", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let spans = spans_of(&collector, TRACE, 5).await;
    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    attempts.sort_by_key(|s| {
        s.attr("http.request.resend_count")
            .unwrap_or("0")
            .to_string()
    });
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert_eq!(attempts[0].attr("http.response.status_code"), Some("401"));
    assert_eq!(attempts[1].attr("http.request.resend_count"), Some("1"));
    assert_eq!(
        attempts[1].attr("tokenproxy.retry_reason"),
        Some("new_token")
    );
    assert_eq!(attempts[1].attr("http.response.status_code"), Some("200"));
    let waits: Vec<&Span> = spans.iter().filter(|s| s.name == "token wait").collect();
    assert_eq!(waits.len(), 2);
    // The second wait links to the second fetch, the one the 401 caused.
    let fetches = collector.named("token fetch");
    assert_eq!(fetches.len(), 2, "{fetches:#?}");
    let linked: std::collections::BTreeSet<&String> = waits.iter().flat_map(|w| &w.links).collect();
    assert_eq!(
        linked.len(),
        2,
        "each wait links to the fetch of its token: {waits:#?}"
    );
}

#[tokio::test]
async fn a_request_that_waits_for_a_connection_shows_the_queue() {
    let (idp, echo, collector) = peers().await;
    let limit = json!({"upstreams.api.max_connections": 1});
    let p = start(&idp, &echo, &collector.url(), limit).await;
    assert_eq!(get_api(&p).await.status, 200);
    let fwd = p.forward_addr().unwrap();
    let slow = |_| get(fwd, "http://api.example.com/slow", "api.example.com", "");
    let answers = futures_util::future::join_all((0..2).map(slow)).await;
    assert!(answers.iter().all(|r| r.status == 200), "{answers:?}");
    // The attempt ends after its queue span: wait for both.
    let mut found = None;
    for _ in 0..300 {
        let queued = collector.named("connection queue");
        let spans = collector.spans();
        let attempt = queued
            .first()
            .and_then(|q| spans.iter().find(|s| s.span_id == q.parent));
        if let Some(a) = attempt {
            found = Some((queued.len(), a.kind));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        found,
        Some((1, CLIENT)),
        "queued under its attempt: {:#?}",
        collector.spans()
    );
}

#[tokio::test]
async fn a_dead_collector_changes_nothing_and_the_lost_spans_are_counted() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let p = start(&idp, &echo, &dead, json!({})).await;
    for _ in 0..20 {
        let r = send_traced(&p, "http://api.example.com/x", "01", "").await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    let trace = &p.app.metrics.trace;
    eventually(|| trace.dropped_export_failed.get() >= 61).await;
    assert_eq!(trace.exported.get(), 0);
    assert_eq!(trace.dropped_queue_full.get(), 0);
}

#[tokio::test]
async fn the_query_is_on_a_span_only_while_the_access_log_includes_it() {
    let (idp, echo, collector) = peers().await;
    let with = json!({"access_log.include_query": true});
    let p = start(&idp, &echo, &collector.url(), with).await;
    let r = send_traced(&p, "http://api.example.com/first?page=2", "01", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    // A reload turns it off: the next request's span has no query.
    let without = config_for(&idp, &echo, &collector.url(), json!({}));
    p.apply(without).await.unwrap();
    let r = send_traced(&p, "http://api.example.com/second?page=3", "01", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let spans = spans_of(&collector, TRACE, 6).await;
    let servers: Vec<&Span> = spans.iter().filter(|s| s.kind == SERVER).collect();
    let query = |path: &str| {
        let server = servers.iter().find(|s| s.attr("url.path") == Some(path));
        server.map(|s| s.attr("url.query").map(str::to_owned))
    };
    assert_eq!(query("/first"), Some(Some("page=2".into())), "{servers:#?}");
    assert_eq!(query("/second"), Some(None), "{servers:#?}");
}
