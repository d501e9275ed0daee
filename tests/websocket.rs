//! WebSocket through each listener: the handshake carries the token, then bytes flow both
//! ways on the spliced connection until either side closes or the drain deadline passes.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::tunnel::{client, connect};
use common::*;
use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokenproxy::body::{empty, full, Body};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A stand-in WebSocket server: refuses a handshake without `Bearer tok-1`, then answers
/// every chunk it reads in upper case (framing is the app's business, not the proxy's).
async fn ws_upstream() -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(tokenproxy::serve::serve(listener, handshake, rx));
    (addr, stop)
}

async fn handshake(mut req: Request<Incoming>) -> Response<Body> {
    let h = |n: header::HeaderName| {
        req.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
    };
    if h(header::AUTHORIZATION).as_deref() != Some("bearer tok-1") {
        let mut resp = Response::new(full("no token"));
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return resp;
    }
    assert_eq!(h(header::UPGRADE).as_deref(), Some("websocket"));
    assert!(h(header::CONNECTION).unwrap().contains("upgrade"));
    assert!(
        h(header::SEC_WEBSOCKET_KEY).is_some(),
        "end-to-end headers kept"
    );
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let mut io = TokioIo::new(upgrade.await.unwrap());
        let mut buf = [0u8; 1024];
        loop {
            let n = io.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            let up = buf[..n].to_ascii_uppercase();
            if io.write_all(&up).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = resp.headers_mut();
    hs.insert(header::UPGRADE, "websocket".parse().unwrap());
    hs.insert(header::CONNECTION, "Upgrade".parse().unwrap());
    hs.insert(header::SEC_WEBSOCKET_ACCEPT, "x".parse().unwrap());
    resp
}

/// Sends a handshake for `target` and returns the status line and headers read.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, target: &str, host: &str) -> String {
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    io.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).to_ascii_lowercase()
}

async fn echo_round<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, text: &str) {
    io.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8(buf).unwrap(), text.to_ascii_uppercase());
}

#[tokio::test]
async fn websockets_get_the_token_and_flow_through_every_listener() {
    let idp = FakeIdp::start().await;
    let (ws, _stop) = ws_upstream().await;
    let trust = tempfile::tempdir().unwrap();
    let proxy = format!(
        "  listen: 127.0.0.1:0\n  intercept:\n    ca: generate\n    trust_dir: {}\n",
        trust.path().display()
    );
    let upstreams = format!(
        "  chat:\n    url: http://{ws}\n    match: [chat.example.com]\n    listen: 127.0.0.1:0\n    client: idp\n"
    );
    let p = tokenproxy::start(config(&idp, &proxy, &upstreams))
        .await
        .unwrap();

    // Reverse listener.
    let mut rev = TcpStream::connect(p.reverse_addr("chat").unwrap())
        .await
        .unwrap();
    let head = open(&mut rev, "/chat", "chat").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    echo_round(&mut rev, "hello").await;
    echo_round(&mut rev, "both ways, twice").await;

    // Forward listener, ws:// as an absolute-form request.
    let fwd = p.forward_addr().unwrap();
    let mut ws_fwd = TcpStream::connect(fwd).await.unwrap();
    let head = open(
        &mut ws_fwd,
        "http://chat.example.com/chat",
        "chat.example.com",
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_round(&mut ws_fwd, "forward").await;

    // wss://: CONNECT, then TLS with the interception CA.
    let tcp = connect(fwd, "chat.example.com:443").await.unwrap();
    let name = ServerName::try_from("chat.example.com").unwrap();
    let mut tls = client(trust.path(), true).connect(name, tcp).await.unwrap();
    let head = open(&mut tls, "/chat", "chat.example.com").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_round(&mut tls, "secure").await;

    // Unmatched, so passed through without a token: the server refuses the handshake.
    let mut c = TcpStream::connect(fwd).await.unwrap();
    let head = open(&mut c, &format!("http://{ws}/chat"), &ws.to_string()).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");

    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(
        m.contains(r#"tokenproxy_upgrades_total{upstream="chat"} 3"#),
        "{m}"
    );
    assert!(m.contains("tokenproxy_upgraded_connections 3"), "{m}");
    assert_eq!(idp.calls(), 1);
    // Either side closing ends the splice.
    drop((rev, ws_fwd, tls));
    let admin = p.admin_addr().unwrap();
    eventually_metric(admin, "tokenproxy_upgraded_connections 0").await;
    p.shutdown().await;
}

async fn eventually_metric(admin: SocketAddr, want: &str) {
    for _ in 0..100 {
        if get(admin, "/metrics", "x", "").await.body.contains(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("metrics never showed {want}");
}

#[tokio::test]
async fn a_websocket_keeps_working_while_draining_and_closes_at_the_deadline() {
    let idp = FakeIdp::start().await;
    let (ws, _stop) = ws_upstream().await;
    let upstreams =
        format!("  chat:\n    url: http://{ws}\n    listen: 127.0.0.1:0\n    client: idp\n");
    let p = tokenproxy::start(config(&idp, "  drain_timeout: 1s", &upstreams))
        .await
        .unwrap();
    let mut c = TcpStream::connect(p.reverse_addr("chat").unwrap())
        .await
        .unwrap();
    let head = open(&mut c, "/chat", "chat").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let started = Instant::now();
    let stopping = tokio::spawn(async move { p.shutdown().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_round(&mut c, "still open while draining").await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "closed by the drain deadline");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed only at the deadline: {took:?}"
    );
    stopping.await.unwrap();
}

#[tokio::test]
async fn without_a_token_a_handshake_gets_503_and_never_reaches_the_upstream() {
    let idp = FakeIdp::start().await;
    for _ in 0..50 {
        idp.push(Answer::json(500, r#"{"error":"server_error"}"#));
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws = listener.local_addr().unwrap();
    let upstreams =
        format!("  chat:\n    url: http://{ws}\n    listen: 127.0.0.1:0\n    client: idp\n");
    let p = tokenproxy::start(config(&idp, "", &upstreams))
        .await
        .unwrap();
    eventually(|| idp.calls() >= 1).await;
    let mut c = TcpStream::connect(p.reverse_addr("chat").unwrap())
        .await
        .unwrap();
    let head = open(&mut c, "/chat", "chat").await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the upstream was contacted without a token"
    );
    let m = get(p.admin_addr().unwrap(), "/metrics", "x", "").await.body;
    assert!(
        m.contains(r#"tokenproxy_upgrades_total{upstream="chat"} 0"#),
        "{m}"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn websocket_handshakes_are_routed_by_path_prefix() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let (ws, _stop) = ws_upstream().await;
    let c = TestConfig::new()
        .forward()
        .client("idp", &idp.url(), "s3cret")
        .upstream("site", &echo.url(), "chat.example.com", "idp")
        .upstream(
            "live",
            &format!("http://{ws}"),
            "chat.example.com/ws/*",
            "idp",
        );
    let p = tokenproxy::start(c.config()).await.unwrap();
    eventually(|| idp.calls() == 1).await;
    let fwd = p.forward_addr().unwrap();
    // Through the forward listener: /ws/ reaches the WebSocket server, which checks the token.
    let mut s = TcpStream::connect(fwd).await.unwrap();
    let head = open(
        &mut s,
        "http://chat.example.com/ws/room",
        "chat.example.com",
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_round(&mut s, "routed by path").await;
    // Another path on the same host goes to the other upstream (an HTTP echo: no 101).
    let mut s = TcpStream::connect(fwd).await.unwrap();
    let head = open(&mut s, "http://chat.example.com/room", "chat.example.com").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Inside a plaintext CONNECT tunnel (what Python websockets sends for ws://).
    let mut t = connect(fwd, "chat.example.com:80").await.unwrap();
    let head = open(&mut t, "/ws/room", "chat.example.com").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_round(&mut t, "through the tunnel").await;
    p.shutdown().await;
}
