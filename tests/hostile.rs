//! Hostile input from raw bytes on a socket: request smuggling and framing tricks, header
//! limits, slow clients, routing tricks. A capturing upstream records every request it gets,
//! so a test can check that nothing was smuggled through.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that records each request head it parses and answers 200 to each.
#[derive(Clone)]
struct Capture {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Capture {
    async fn start(response: &'static str) -> Capture {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = Capture {
            addr: l.local_addr().unwrap(),
            heads: Arc::default(),
        };
        let heads = c.heads.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve_capture(s, heads.clone(), response));
            }
        });
        c
    }
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn serve_capture(mut s: TcpStream, heads: Arc<Mutex<Vec<String>>>, response: &'static str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let lower = head.to_ascii_lowercase();
            let mut consumed = end + 4;
            if lower.contains("transfer-encoding: chunked") {
                match find(&buf[consumed..], b"0\r\n\r\n") {
                    Some(e) => consumed += e + 5,
                    None => break,
                }
            } else if let Some(cl) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
            {
                consumed += cl.trim().parse::<usize>().unwrap_or(0);
                if buf.len() < consumed {
                    break;
                }
            }
            heads.lock().unwrap().push(head);
            buf.drain(..consumed);
            if s.write_all(response.as_bytes()).await.is_err() {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

async fn proxy_to(capture: &Capture, extra: &str) -> (FakeIdp, tokenproxy::Running) {
    let idp = FakeIdp::start().await;
    let ups = format!(
        "  api:\n    url: http://{}\n    match: [api.example.com]\n    client: idp\n",
        capture.addr
    );
    let p = tokenproxy::start(config(
        &idp,
        &format!("  listen: 127.0.0.1:0\n{extra}"),
        &ups,
    ))
    .await
    .unwrap();
    (idp, p)
}

/// Sends raw bytes, returns everything read until the proxy closes (or 3 s pass).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).to_string(), closed)
}

const SMUGGLE: &str = "GET /smuggled HTTP/1.1\r\nHost: api.example.com\r\n\r\n";

#[tokio::test]
async fn framing_attacks_get_400_and_the_connection_closed_and_nothing_is_smuggled() {
    let capture = Capture::start(OK).await;
    let (_idp, p) = proxy_to(&capture, "").await;
    let fwd = p.forward_addr().unwrap();
    let line = "POST http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "CL then TE",
            format!(
                "{line}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLE}"
            ),
        ),
        (
            "TE then CL",
            format!(
                "{line}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{SMUGGLE}"
            ),
        ),
        (
            "duplicate CL",
            format!("{line}Content-Length: 5\r\nContent-Length: 41\r\n\r\nhello{SMUGGLE}"),
        ),
        (
            "CL list",
            format!("{line}Content-Length: 5, 41\r\n\r\nhello{SMUGGLE}"),
        ),
        (
            "CL plus sign",
            format!("{line}Content-Length: +5\r\n\r\nhello"),
        ),
        (
            "CL negative",
            format!("{line}Content-Length: -1\r\n\r\nhello"),
        ),
        ("CL hex", format!("{line}Content-Length: 0x5\r\n\r\nhello")),
        (
            "TE not chunked last",
            format!("{line}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{SMUGGLE}"),
        ),
        (
            "TE xchunked",
            format!("{line}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{SMUGGLE}"),
        ),
        (
            "TE twice",
            format!(
                "{line}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "TE gzip, chunked",
            format!("{line}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "obs-fold",
            format!("{line}X-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
        ),
        (
            "space before colon",
            format!("{line}Content-Length : 0\r\n\r\n"),
        ),
        (
            "NUL in value",
            format!("{line}X-A: a\0b\r\nContent-Length: 0\r\n\r\n"),
        ),
        (
            "bare CR in value",
            format!("{line}X-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
        ),
        (
            "oversized chunk size",
            format!(
                "{line}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\r\n0\r\n\r\n"
            ),
        ),
        (
            "bad chunk size",
            format!("{line}Transfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n"),
        ),
    ];
    for (name, req) in cases {
        let before = capture.heads().len();
        let (resp, closed) = exchange(fwd, req.as_bytes()).await;
        // With both CL and TE, hyper's parser follows RFC 9112 §6.3: Transfer-Encoding wins,
        // Content-Length is dropped and the connection is closed after the response, so the
        // request is answered (here 200) and the rest of the bytes are never read as a request.
        let answered_as_chunked = name.starts_with("CL then TE") || name.starts_with("TE then CL");
        let want_400 = resp.starts_with("HTTP/1.1 400");
        assert!(
            want_400 || answered_as_chunked && resp.starts_with("HTTP/1.1 200"),
            "{name}: {resp:?}"
        );
        assert!(
            closed,
            "{name}: the connection must be closed after a framing error"
        );
        let heads = capture.heads();
        assert!(
            heads.len() <= before + 1,
            "{name}: more than one request reached the upstream: {heads:?}"
        );
        assert!(
            !heads.iter().any(|h| h.contains("/smuggled")),
            "{name}: smuggled: {heads:?}"
        );
    }
    p.shutdown().await;
}

#[tokio::test]
async fn connection_naming_framing_headers_does_not_break_framing() {
    let capture = Capture::start(OK).await;
    let (_idp, p) = proxy_to(&capture, "").await;
    let req = "POST http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\nConnection: Content-Length, Transfer-Encoding, Host, Authorization\r\nContent-Length: 5\r\n\r\nhello";
    let (resp, _) = exchange(p.forward_addr().unwrap(), req.as_bytes()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let heads = capture.heads();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(head.contains("content-length: 5"), "{head}");
    assert!(head.contains("authorization: bearer tok-1"), "{head}");
    assert!(head.contains(&format!("host: {}", capture.addr)), "{head}");
    p.shutdown().await;
}

#[tokio::test]
async fn upstream_response_with_both_content_length_and_transfer_encoding_is_502() {
    let capture = Capture::start("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n").await;
    let (_idp, p) = proxy_to(&capture, "").await;
    let r = get(
        p.forward_addr().unwrap(),
        "http://api.example.com/",
        "x",
        "",
    )
    .await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["error"], "bad_upstream_response");
    p.shutdown().await;
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let capture = Capture::start(OK).await;
    let (_idp, p) = proxy_to(&capture, "  max_headers: 50\n  max_head_bytes: 16384\n").await;
    let fwd = p.forward_addr().unwrap();
    let many: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (resp, _) = exchange(
        fwd,
        format!("GET http://api.example.com/ HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    let big = "a".repeat(20_000);
    let (resp, _) = exchange(
        fwd,
        format!("GET http://api.example.com/ HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(capture.heads().is_empty());
    p.shutdown().await;
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off_by_the_header_read_timeout() {
    let capture = Capture::start(OK).await;
    let (_idp, p) = proxy_to(&capture, "  header_read_timeout: 300ms\n").await;
    let fwd = p.forward_addr().unwrap();
    // Slowloris: a head that never ends, one byte at a time.
    let mut s = TcpStream::connect(fwd).await.unwrap();
    let started = std::time::Instant::now();
    let mut closed = false;
    for b in b"GET http://api.example.com/ HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .cycle()
        .take(200)
    {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut probe = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), s.read(&mut probe)).await
        {
            closed = true;
            assert!(n == 0 || String::from_utf8_lossy(&probe[..n]).starts_with("HTTP/1.1 408"));
            break;
        }
    }
    assert!(closed, "a slowloris connection must be closed");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // An idle keep-alive connection after one request.
    let mut s = TcpStream::connect(fwd).await.unwrap();
    s.write_all(b"GET http://api.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "idle keep-alive closed");
    p.shutdown().await;
}

/// The header read timeout's sleep is reused from one request head to the next (serve/timer):
/// each head gets its own full timeout, not what is left of the first one's, and a head that
/// stalls after answered requests is still cut off.
#[tokio::test]
async fn every_request_head_gets_its_own_header_read_timeout() {
    let capture = Capture::start(OK).await;
    let (_idp, p) = proxy_to(&capture, "  header_read_timeout: 400ms\n").await;
    let mut s = TcpStream::connect(p.forward_addr().unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    // Eight requests 250 ms apart: 2 s on one connection, five times the timeout.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.write_all(b"GET http://api.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Then half a head, and nothing more: closed after about the timeout.
    s.write_all(b"GET http://api.example.com/ HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let stalled = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("a stalled head must be cut off")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    let waited = stalled.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    p.shutdown().await;
}

/// `header_read_timeout` is for a connection waiting for a request: an answer that takes
/// longer than it, and a body that streams for longer, are not cut; the idle connection after
/// them is.
#[tokio::test]
async fn a_slow_answer_and_a_long_body_outlast_the_header_read_timeout() {
    // An origin that answers after 700 ms, then sends five chunks 300 ms apart.
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let capture = Capture {
        addr: origin.local_addr().unwrap(),
        heads: Arc::default(),
    };
    tokio::spawn(async move {
        while let Ok((mut s, _)) = origin.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while find(&seen, b"\r\n\r\n").is_none() {
                    let Ok(n @ 1..) = s.read(&mut buf).await else {
                        return;
                    };
                    seen.extend_from_slice(&buf[..n]);
                }
                tokio::time::sleep(Duration::from_millis(700)).await;
                let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                s.write_all(head.as_bytes()).await.unwrap();
                for i in 0..5 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    s.write_all(format!("1\r\n{i}\r\n").as_bytes())
                        .await
                        .unwrap();
                }
                s.write_all(b"0\r\n\r\n").await.unwrap();
            });
        }
    });
    let (_idp, p) = proxy_to(&capture, "  header_read_timeout: 300ms\n").await;
    let mut s = TcpStream::connect(p.forward_addr().unwrap()).await.unwrap();
    s.write_all(b"GET http://api.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 4096];
    while find(&answer, b"\r\n0\r\n\r\n").is_none() {
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        let n = read.expect("the answer keeps coming").unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for i in 0..5 {
        assert!(
            answer.contains(&format!("\r\n1\r\n{i}\r\n")),
            "chunk {i}: {answer}"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(2_000));
    // Idle now: closed after about the timeout.
    let idle = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("the idle connection is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn the_connection_cap_holds_new_clients_until_one_leaves() {
    let capture = Capture::start(OK).await;
    let (_idp, p) = proxy_to(&capture, "  max_connections: 2\n").await;
    let fwd = p.forward_addr().unwrap();
    let a = TcpStream::connect(fwd).await.unwrap();
    let _b = TcpStream::connect(fwd).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = tokio::spawn(get(fwd, "http://api.example.com/", "x", ""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "a third connection is not served while two are open"
    );
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    p.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_distinct_hosts_add_no_metric_series() {
    let capture = Capture::start(OK).await;
    let (_idp, p) = proxy_to(&capture, "  unmatched: deny\n").await;
    let fwd = p.forward_addr().unwrap();
    let series = |m: &str| m.lines().filter(|l| l.starts_with("tokenproxy_")).count();
    let mut s = TcpStream::connect(fwd).await.unwrap();
    let mut buf = vec![0u8; 8192];
    for i in 0..10_000 {
        let req = format!("GET http://host{i}.example.net/ HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        while !(find(&got, b"\r\n\r\n").is_some() && got.ends_with(b"}")) {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        if i == 0 {
            let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
            assert!(m.contains(r#"tokenproxy_requests_total{code="403",upstream="unmatched"} 1"#));
        }
    }
    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(m.contains(r#"tokenproxy_requests_total{code="403",upstream="unmatched"} 10000"#));
    assert!(!m.contains("host1.example.net"));
    let before = series(&m);
    s.write_all(
        b"GET http://another.example.org/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let _ = s.read_to_end(&mut Vec::new()).await;
    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert_eq!(series(&m), before);
    p.shutdown().await;
}

#[tokio::test]
async fn routing_tricks_never_send_the_token_elsewhere() {
    let capture = Capture::start(OK).await;
    let idp = FakeIdp::start().await;
    let ups = format!(
        "  api:\n    url: http://{}\n    match: [\"*.example.com\"]\n    client: idp\n",
        capture.addr
    );
    let p = tokenproxy::start(config(
        &idp,
        "  listen: 127.0.0.1:0\n  unmatched: deny",
        &ups,
    ))
    .await
    .unwrap();
    let fwd = p.forward_addr().unwrap();
    for (target, want) in [
        ("http://a.example.com/", 200),
        ("http://A.EXAMPLE.COM./", 200),
        ("http://a.example.com:80/", 200),
        ("http://evilexample.com/", 403),
        ("http://example.com/", 403),
        ("http://a.example.com.evil.net/", 403),
        ("http://a.example.com:8080/", 403),
        ("http://a%2eexample.com/", 400),
        ("http://user@a.example.com/", 400),
        ("http://[::1]:1/", 403),
        ("http://2130706433/", 400),
    ] {
        let r = get(fwd, target, "a.example.com", "").await;
        assert_eq!(r.status, want, "{target}: {r:?}");
    }
    assert_eq!(capture.heads().len(), 3);
    p.shutdown().await;
}

#[tokio::test]
async fn requests_that_would_loop_back_into_the_proxy_are_refused() {
    let capture = Capture::start(OK).await;
    let (_idp, p) = proxy_to(&capture, "").await;
    let fwd = p.forward_addr().unwrap();
    let admin = p.admin_addr().unwrap();
    for target in [
        format!("http://127.0.0.1:{}/", fwd.port()),
        format!("http://localhost:{}/metrics", admin.port()),
    ] {
        let r = get(fwd, &target, "x", "").await;
        assert_eq!(r.status, 400, "{target}: {r:?}");
        assert!(r.json()["message"].as_str().unwrap().contains("loop"));
    }
    let r = raw(
        fwd,
        &format!(
            "CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            fwd.port()
        ),
    )
    .await;
    assert_eq!(r.status, 400);
    p.shutdown().await;
}
