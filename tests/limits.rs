//! `max_connections` and `max_pending` per upstream: a slow upstream that records how many
//! connections (HTTP/1.1) or requests (HTTP/2 streams) it has at once. The cap holds, queued
//! requests are served in turn, a full queue gives `503 upstream_overloaded` with
//! `Retry-After` at once, and a queued request gives up at `request_timeout`: nothing hangs.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An upstream that answers every request after `delay`, speaking HTTP/1.1 and h2c, and keeps
/// the most connections and requests it had open at once.
#[derive(Clone, Default)]
struct Slow {
    conns: Arc<AtomicUsize>,
    max_conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    max_requests: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

fn enter(now: &AtomicUsize, max: &AtomicUsize) {
    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(n, Ordering::SeqCst);
}

impl Slow {
    async fn start(delay: Duration) -> (Slow, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow = Slow::default();
        let me = slow.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let me = me.clone();
                tokio::spawn(async move {
                    enter(&me.conns, &me.max_conns);
                    let served = me.clone();
                    let service = hyper::service::service_fn(move |_req| {
                        let s = served.clone();
                        async move {
                            enter(&s.requests, &s.max_requests);
                            tokio::time::sleep(delay).await;
                            s.requests.fetch_sub(1, Ordering::SeqCst);
                            s.served.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"slow ok"),
                            )))
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    me.conns.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (slow, addr)
    }
}

async fn start(
    delay: Duration,
    limits: serde_json::Value,
    extra: &[(&str, serde_json::Value)],
) -> (FakeIdp, Slow, tokenproxy::Running) {
    let idp = FakeIdp::start().await;
    let (slow, addr) = Slow::start(delay).await;
    let mut c = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), "s3cret")
        .upstream("api", &format!("http://{addr}"), "api.example.com", "idp")
        .merge("upstreams.api", &limits.to_string());
    for (path, value) in extra {
        c = c.set(path, value.clone());
    }
    let p = tokenproxy::start(c.config()).await.unwrap();
    eventually(|| idp.calls() == 1).await;
    (idp, slow, p)
}

/// `n` requests at once through the forward listener; their statuses and Retry-After values.
async fn burst(p: &tokenproxy::Running, n: usize) -> Vec<(u16, Option<String>, String)> {
    let fwd = p.forward_addr().unwrap();
    let calls = (0..n).map(|i| {
        tokio::spawn(async move {
            let r = get(
                fwd,
                &format!("http://api.example.com/{i}"),
                "api.example.com",
                "",
            )
            .await;
            let retry = r.header("retry-after");
            (r.status, retry, r.body)
        })
    });
    let mut out = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        out.push(c.await.unwrap());
    }
    out
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn the_cap_holds_and_queued_requests_are_served_in_turn() {
    let limits = serde_json::json!({"max_connections": 4, "max_pending": 100});
    let (_idp, slow, p) = start(Duration::from_millis(40), limits, &[]).await;
    let results = burst(&p, 40).await;
    assert!(results.iter().all(|(s, ..)| *s == 200), "{results:?}");
    assert_eq!(slow.served.load(Ordering::SeqCst), 40);
    let most = slow.max_conns.load(Ordering::SeqCst);
    assert!(most <= 4, "the upstream saw {most} connections at once");
    assert_eq!(most, 4, "the cap was reached, so the test tested it");
    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert_eq!(
        metric(
            &m,
            r#"tokenproxy_upstream_waiting_requests{upstream="api"}"#
        ),
        0
    );
    let in_use = r#"tokenproxy_upstream_connections{state="in_use",upstream="api"}"#;
    assert_eq!(metric(&m, in_use), 0);
    let idle = metric(
        &m,
        r#"tokenproxy_upstream_connections{state="idle",upstream="api"}"#,
    );
    assert!((1..=4).contains(&idle), "{idle} idle connections");
    p.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_is_503_upstream_overloaded_with_retry_after_at_once() {
    let limits = serde_json::json!({"max_connections": 2, "max_pending": 3});
    let (_idp, slow, p) = start(Duration::from_millis(600), limits, &[]).await;
    let started = std::time::Instant::now();
    let results = burst(&p, 10).await;
    let ok = results.iter().filter(|(s, ..)| *s == 200).count();
    let refused: Vec<_> = results.iter().filter(|(s, ..)| *s == 503).collect();
    assert_eq!((ok, refused.len()), (5, 5), "{results:?}");
    for (_, retry, body) in &refused {
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(body.contains("\"upstream_overloaded\""), "{body}");
    }
    assert!(slow.max_conns.load(Ordering::SeqCst) <= 2);
    assert!(started.elapsed() < Duration::from_secs(5));
    let status = get(p.admin_addr().unwrap(), "/status", "x", "")
        .await
        .json();
    let c = &status["upstreams"][0]["connections"];
    assert_eq!(
        (c["max_connections"].as_u64(), c["max_pending"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(c["waiting"], 0);
    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert_eq!(
        metric(
            &m,
            r#"tokenproxy_upstream_overloaded_total{upstream="api"}"#
        ),
        5
    );
    p.shutdown().await;
}

#[tokio::test]
async fn a_queued_request_gives_up_at_request_timeout() {
    let limits = serde_json::json!({"max_connections": 1});
    let timeout = [("proxy.request_timeout", serde_json::json!("300ms"))];
    let (_idp, _slow, p) = start(Duration::from_secs(2), limits, &timeout).await;
    let results = burst(&p, 3).await;
    assert!(results.iter().all(|(s, ..)| *s == 504), "{results:?}");
    let status = get(p.admin_addr().unwrap(), "/status", "x", "")
        .await
        .json();
    assert_eq!(status["upstreams"][0]["connections"]["waiting"], 0);
    p.shutdown().await;
}

#[tokio::test]
async fn http2_streams_count_against_the_same_cap() {
    let limits = serde_json::json!({"max_connections": 3, "protocol": "http2"});
    let (_idp, slow, p) = start(Duration::from_millis(40), limits, &[]).await;
    let fwd = p.forward_addr().unwrap();
    // One HTTP/2 client connection to the proxy carrying 20 streams at once.
    let stream = tokio::net::TcpStream::connect(fwd).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut send = send.clone();
            tokio::spawn(async move {
                let req = http::Request::get(format!("http://api.example.com/{i}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                let status = resp.status();
                resp.into_body().collect().await.unwrap();
                status
            })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    let most = slow.max_requests.load(Ordering::SeqCst);
    assert_eq!(most, 3, "streams open at once upstream");
    p.shutdown().await;
}

#[tokio::test]
async fn a_401_replay_at_max_connections_1_gets_its_slot_back() {
    // The refused answer's slot must be given back before the replay asks for one, or the
    // replay would wait behind itself until request_timeout.
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    echo.accepted.lock().unwrap().push("tok-2".into());
    let c = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), "s3cret")
        .upstream("api", &echo.url(), "api.example.com", "idp")
        .merge(
            "upstreams.api",
            r#"{"max_connections": 1, "max_pending": 0}"#,
        )
        .set("proxy.request_timeout", "5s");
    let p = tokenproxy::start(c.config()).await.unwrap();
    eventually(|| idp.calls() == 1).await;
    let started = std::time::Instant::now();
    let fwd = p.forward_addr().unwrap();
    let r = get(fwd, "http://api.example.com/401/x", "api.example.com", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["authorization"][0], "Bearer tok-2");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    p.shutdown().await;
}
