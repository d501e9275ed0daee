//! HTTP/2 through the listeners and to upstreams: h2c in, token per stream, `protocol:
//! http2` out over shared connections, gRPC trailers and status both ways.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokenproxy::body::{full, Body};
use tokenproxy::serve::{connection, Protocol};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// An h2c (prior knowledge) client connection to `addr`.
async fn h2c(addr: std::net::SocketAddr) -> SendRequest<Body> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn json(resp: Response<Incoming>) -> serde_json::Value {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{body:?}"))
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(full("")).unwrap()
}

#[tokio::test]
async fn h2c_requests_through_reverse_and_forward_listeners_carry_the_token() {
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let upstreams = format!(
        "  inventory:\n    url: {}\n    match: [inventory.example.com]\n    listen: 127.0.0.1:0\n    client: idp\n",
        echo.url()
    );
    let p = tokenproxy::start(config(&idp, "  listen: 127.0.0.1:0", &upstreams))
        .await
        .unwrap();
    let rev = p.reverse_addr("inventory").unwrap();
    let mut c = h2c(rev).await;
    // Several streams at once on one connection, each with the token.
    let sends = (0..10).map(|i| c.send_request(get(&format!("http://{rev}/items/{i}?q=1"))));
    for (i, resp) in futures_util::future::join_all(sends)
        .await
        .into_iter()
        .enumerate()
    {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let v = json(resp).await;
        assert_eq!(v["authorization"], serde_json::json!(["Bearer tok-1"]));
        assert_eq!(v["uri"], format!("/items/{i}?q=1"));
        // protocol: auto on plaintext speaks HTTP/1.1 to the upstream.
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["host"], echo.addr.to_string());
    }
    let fwd = p.forward_addr().unwrap();
    let mut c = h2c(fwd).await;
    let resp = c
        .send_request(get("http://inventory.example.com/x"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = json(resp).await;
    assert_eq!(v["authorization"], serde_json::json!(["Bearer tok-1"]));
    assert_eq!(idp.calls(), 1);
    // An error answer on HTTP/2 ends the stream, not the connection.
    let resp = c
        .send_request(get("http://unknown.example.net:1/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let resp = c
        .send_request(get("http://inventory.example.com/y"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the connection is still usable");
    p.shutdown().await;
}

/// An HTTP/2-only upstream (h2c prior knowledge) that counts its connections. `/grpc/*`
/// answers like a gRPC server: a message, then trailers with the status the path names.
struct H2Upstream {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    _stop: watch::Sender<bool>,
}

impl H2Upstream {
    async fn start() -> H2Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (stop, rx) = watch::channel(false);
        let count = connections.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let limits = tokenproxy::config::Limits::default();
                tokio::spawn(connection(tcp, answer, rx.clone(), limits, Protocol::Http2));
            }
        });
        H2Upstream {
            addr,
            connections,
            _stop: stop,
        }
    }
}

async fn answer(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let auth = parts.headers.get(header::AUTHORIZATION).cloned();
    let te = parts.headers.get(header::TE).cloned();
    let _ = body.collect().await;
    let path = parts.uri.path().to_string();
    if let Some(code) = path.strip_prefix("/grpc/") {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", code.parse().unwrap());
        trailers.insert("grpc-message", "from%20upstream".parse().unwrap());
        trailers.insert("x-trailing-meta", "kept".parse().unwrap());
        let frames = vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames))
            .map_err(|e| match e {})
            .boxed_unsync();
        let mut resp = Response::new(body);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        return resp;
    }
    let view = serde_json::json!({
        "version": format!("{:?}", parts.version),
        "authority": parts.uri.authority().map(|a| a.to_string()),
        "authorization": auth.map(|a| a.to_str().unwrap().to_string()),
        "te": te.map(|a| a.to_str().unwrap().to_string()),
    });
    Response::new(full(view.to_string()))
}

fn http2_upstream(up: &H2Upstream, protocol: &str) -> String {
    format!(
        "  api:\n    url: http://{}\n    match: [api.example.com]\n    listen: 127.0.0.1:0\n    client: idp\n    protocol: {protocol}\n",
        up.addr
    )
}

#[tokio::test]
async fn protocol_http2_shares_a_few_upstream_connections() {
    let (idp, up) = (FakeIdp::start().await, H2Upstream::start().await);
    let p = tokenproxy::start(config(
        &idp,
        "  listen: 127.0.0.1:0",
        &http2_upstream(&up, "http2"),
    ))
    .await
    .unwrap();
    let rev = p.reverse_addr("api").unwrap();
    // 40 app connections (HTTP/1.1), 5 requests each, all at once.
    let calls = (0..40).map(|_| async move {
        for _ in 0..5 {
            let r = common::get(rev, "/x", "api", "").await;
            assert_eq!(r.status, 200, "{r:?}");
            let v = r.json();
            assert_eq!(v["version"], "HTTP/2.0");
            assert_eq!(v["authorization"], "Bearer tok-1");
            assert_eq!(v["authority"], up.addr.to_string());
        }
    });
    futures_util::future::join_all(calls).await;
    let n = up.connections.load(Ordering::SeqCst);
    assert!(
        n <= 2,
        "200 requests from 40 connections used {n} upstream connections"
    );
    p.shutdown().await;
}

#[tokio::test]
async fn grpc_goes_over_http2_with_trailers_both_ways() {
    let (idp, up) = (FakeIdp::start().await, H2Upstream::start().await);
    // protocol: auto on plaintext is HTTP/1.1, but a gRPC call needs HTTP/2 (h2c).
    let p = tokenproxy::start(config(
        &idp,
        "  listen: 127.0.0.1:0",
        &http2_upstream(&up, "auto"),
    ))
    .await
    .unwrap();
    let rev = p.reverse_addr("api").unwrap();
    let mut c = h2c(rev).await;
    let call = |path: &str| {
        Request::post(format!("http://{rev}{path}"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .body(full(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap()
    };
    let resp = c.send_request(call("/grpc/0")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "from%20upstream");
    assert_eq!(trailers["x-trailing-meta"], "kept");
    assert_eq!(collected.to_bytes().as_ref(), b"\0\0\0\0\x02hi");
    assert_eq!(idp.calls(), 1);

    // UNAUTHENTICATED in the trailers drops the token: the next call gets a new one.
    let resp = c.send_request(call("/grpc/16")).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "16");
    eventually(|| idp.calls() == 2).await;

    // The plain JSON view shows the upstream saw HTTP/2 and TE: trailers.
    let req = Request::post(format!("http://{rev}/view"))
        .header(header::CONTENT_TYPE, "application/grpc+proto")
        .header(header::TE, "trailers")
        .body(full(""))
        .unwrap();
    let v = json(c.send_request(req).await.unwrap()).await;
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["te"], "trailers");
    assert_eq!(v["authorization"], "Bearer tok-2");
    p.shutdown().await;
}

#[tokio::test]
async fn tokenproxys_own_errors_reach_grpc_clients_as_grpc_status() {
    let idp = FakeIdp::start().await;
    for _ in 0..50 {
        idp.push(Answer::json(500, r#"{"error":"server_error"}"#));
    }
    let up = H2Upstream::start().await;
    let p = tokenproxy::start(config(
        &idp,
        "  listen: 127.0.0.1:0\n  unmatched: deny",
        &http2_upstream(&up, "http2"),
    ))
    .await
    .unwrap();
    eventually(|| idp.calls() >= 1).await;
    let grpc = |uri: String| {
        Request::post(uri)
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(full(""))
            .unwrap()
    };
    let mut c = h2c(p.reverse_addr("api").unwrap()).await;
    let resp = c
        .send_request(grpc("http://api/grpc/0".into()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/grpc");
    assert_eq!(resp.headers()["grpc-status"], "14", "UNAVAILABLE");
    let msg = resp.headers()["grpc-message"].to_str().unwrap().to_string();
    assert!(msg.starts_with("token_unavailable: "), "{msg}");
    assert_eq!(up.connections.load(Ordering::SeqCst), 0, "never forwarded");

    let mut c = h2c(p.forward_addr().unwrap()).await;
    let resp = c
        .send_request(grpc("http://elsewhere.example.net/svc/M".into()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "7", "PERMISSION_DENIED");
    p.shutdown().await;
}

#[tokio::test]
async fn intercepted_tunnels_speak_http2_by_alpn_or_prior_knowledge() {
    use common::tunnel::{client_offering, connect};
    let (idp, echo) = (FakeIdp::start().await, Echo::start().await);
    let trust = tempfile::tempdir().unwrap();
    let proxy = format!(
        "  listen: 127.0.0.1:0\n  intercept:\n    ca: generate\n    trust_dir: {}\n",
        trust.path().display()
    );
    let upstreams = format!(
        "  api:\n    url: {}\n    match: [api.example.com]\n    client: idp\n",
        echo.url()
    );
    let p = tokenproxy::start(config(&idp, &proxy, &upstreams))
        .await
        .unwrap();
    let fwd = p.forward_addr().unwrap();

    // https:// with ALPN h2.
    let tcp = connect(fwd, "api.example.com:443").await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("api.example.com").unwrap();
    let tls = client_offering(trust.path(), true, &[b"h2", b"http/1.1"])
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut c, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = c
        .send_request(get("https://api.example.com/a"))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let v = json(resp).await;
    assert_eq!(v["authorization"], serde_json::json!(["Bearer tok-1"]));
    assert_eq!(v["uri"], "/a");
    // Another :authority on this connection is refused (domain fronting).
    let resp = c
        .send_request(get("https://other.example.com/a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);

    // http:// through a tunnel with the h2c preface.
    let tcp = connect(fwd, "api.example.com:80").await.unwrap();
    let (mut c, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = c
        .send_request(get("http://api.example.com/b"))
        .await
        .unwrap();
    let v = json(resp).await;
    assert_eq!(v["authorization"], serde_json::json!(["Bearer tok-1"]));
    assert_eq!(v["uri"], "/b");
    p.shutdown().await;
}

#[tokio::test]
async fn a_stream_refused_unprocessed_is_sent_again_when_its_body_was_kept() {
    let idp = FakeIdp::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = streams.clone();
    // An HTTP/2 server that refuses streams 1 and 3 of its first connection unprocessed.
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 || n == 3 {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
            } else {
                respond.send_response(Response::new(()), true).unwrap();
            }
        }
    });
    let upstreams = format!(
        "  api:\n    url: http://{addr}\n    listen: 127.0.0.1:0\n    client: idp\n    protocol: http2\n"
    );
    let p = tokenproxy::start(config(&idp, "", &upstreams))
        .await
        .unwrap();
    let rev = p.reverse_addr("api").unwrap();
    let r = common::get(rev, "/x", "api", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        streams.load(Ordering::SeqCst),
        2,
        "refused once, then sent again"
    );
    // A streamed body was not kept, so it cannot be sent again: 502.
    let r = raw(
        rev,
        "POST /x HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["error"], "upstream_unreachable");
    assert_eq!(streams.load(Ordering::SeqCst), 3);
    p.shutdown().await;
}
