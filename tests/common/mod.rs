//! Test peers on 127.0.0.1:0: a scripted authorization server that counts calls, an echo
//! upstream, and a raw HTTP/1.1 client (so tests control every byte they send).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokenproxy::body::{full, Body};
use tokenproxy::serve as server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub mod h2raw;
pub mod otlp;
pub mod parent;
pub mod tunnel;
pub mod yaml;

pub use yaml::TestConfig;

/// One scripted answer of the fake authorization server.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Answer {
    pub fn token(token: &str, expires_in: u64) -> Answer {
        Answer::json(
            200,
            &format!(
                r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#
            ),
        )
    }
    pub fn json(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.to_string(),
            headers: vec![],
            delay: Duration::ZERO,
        }
    }
}

/// A request the fake authorization server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
    /// The `DPoP` proof header, if any.
    pub dpop: Option<String>,
    /// The request target (path and query).
    pub uri: String,
}

/// Authorization server: answers from a script, then with fresh tokens `tok-N`.
#[derive(Clone)]
pub struct FakeIdp {
    pub addr: SocketAddr,
    pub calls: Arc<AtomicUsize>,
    pub script: Arc<Mutex<VecDeque<Answer>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub default_expires_in: Arc<Mutex<u64>>,
    pub default_delay: Arc<Mutex<Duration>>,
    /// When set, only `orders:<secret>` in HTTP Basic is accepted; else 401 invalid_client.
    pub required_secret: Arc<Mutex<Option<String>>>,
    /// Token requests being answered now, and the most there have been at once.
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    _stop: Arc<watch::Sender<bool>>,
}

impl FakeIdp {
    pub async fn start() -> FakeIdp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, rx) = watch::channel(false);
        let idp = FakeIdp {
            addr: listener.local_addr().unwrap(),
            calls: Arc::new(AtomicUsize::new(0)),
            script: Arc::new(Mutex::new(VecDeque::new())),
            seen: Arc::new(Mutex::new(Vec::new())),
            default_expires_in: Arc::new(Mutex::new(3600)),
            default_delay: Arc::new(Mutex::new(Duration::ZERO)),
            required_secret: Arc::new(Mutex::new(None)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: Arc::new(AtomicUsize::new(0)),
            _stop: Arc::new(stop),
        };
        let me = idp.clone();
        tokio::spawn(server::serve(
            listener,
            move |req| me.clone().answer(req),
            rx,
        ));
        idp
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn push(&self, a: Answer) {
        self.script.lock().unwrap().push_back(a);
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn answer(self, req: Request<Incoming>) -> Response<Body> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let h = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        let (authorization, content_type) = (h(header::AUTHORIZATION), h(header::CONTENT_TYPE));
        let dpop = h(http::HeaderName::from_static("dpop"));
        let uri = req.uri().to_string();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        self.seen.lock().unwrap().push(Seen {
            authorization,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
            dpop,
            uri,
        });
        let required = self.required_secret.lock().unwrap().clone();
        if let Some(secret) = required {
            let want = format!("Basic {}", base64_encode(&format!("orders:{secret}")));
            if self
                .seen
                .lock()
                .unwrap()
                .last()
                .and_then(|s| s.authorization.as_deref())
                != Some(want.as_str())
            {
                let mut resp = Response::new(full(r#"{"error":"invalid_client"}"#));
                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                return resp;
            }
        }
        let scripted = self.script.lock().unwrap().pop_front();
        let a = scripted.unwrap_or_else(|| {
            let mut a = Answer::token(
                &format!("tok-{n}"),
                *self.default_expires_in.lock().unwrap(),
            );
            a.delay = *self.default_delay.lock().unwrap();
            a
        });
        if !a.delay.is_zero() {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(a.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let mut resp = Response::new(full(a.body));
        *resp.status_mut() = StatusCode::from_u16(a.status).unwrap();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        for (k, v) in a.headers {
            resp.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        resp
    }
}

/// Upstream that answers with a JSON view of the request. Paths starting `/401` answer 401
/// with a Bearer challenge unless the token is in `accepted`.
#[derive(Clone)]
pub struct Echo {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    pub accepted: Arc<Mutex<Vec<String>>>,
    _stop: Arc<watch::Sender<bool>>,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, rx) = watch::channel(false);
        let echo = Echo {
            addr: listener.local_addr().unwrap(),
            requests: Arc::new(AtomicUsize::new(0)),
            accepted: Arc::new(Mutex::new(Vec::new())),
            _stop: Arc::new(stop),
        };
        let me = echo.clone();
        tokio::spawn(server::serve(
            listener,
            move |req| me.clone().answer(req),
            rx,
        ));
        echo
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn answer(self, req: Request<Incoming>) -> Response<Body> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = req.into_parts();
        let auth: Vec<String> = parts
            .headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let headers: Vec<String> = parts
            .headers
            .keys()
            .map(|k| k.as_str().to_string())
            .collect();
        let body: Bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let path = parts.uri.path().to_string();
        if path.contains("/dpop-nonce") {
            // A resource server that wants its nonce in the DPoP proof.
            let nonce = parts
                .headers
                .get("dpop")
                .and_then(|p| jws_claims(p.to_str().ok()?))
                .and_then(|c| c.get("nonce")?.as_str().map(String::from));
            if nonce.as_deref() != Some(UPSTREAM_NONCE) {
                let mut resp = Response::new(full("nonce please"));
                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    r#"DPoP error="use_dpop_nonce", error_description="nonce required""#
                        .parse()
                        .unwrap(),
                );
                resp.headers_mut()
                    .insert("dpop-nonce", UPSTREAM_NONCE.parse().unwrap());
                return resp;
            }
        }
        if path.starts_with("/401") {
            let ok = auth.len() == 1
                && self
                    .accepted
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|t| auth[0] == format!("Bearer {t}"));
            if !ok {
                let mut resp = Response::new(full("denied"));
                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    r#"Bearer error="invalid_token""#.parse().unwrap(),
                );
                return resp;
            }
        }
        if path.starts_with("/redirect") {
            let mut resp = Response::new(full(""));
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut().insert(
                header::LOCATION,
                "http://elsewhere.example/".parse().unwrap(),
            );
            return resp;
        }
        if path.starts_with("/slow") {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let view = serde_json::json!({
            "method": parts.method.as_str(),
            "version": format!("{:?}", parts.version),
            "uri": parts.uri.to_string(),
            "host": parts.headers.get(header::HOST).map(|v| v.to_str().unwrap().to_string()),
            "authority": parts.uri.authority().map(|a| a.to_string()),
            "authorization": auth,
            "dpop": parts.headers.get("dpop").map(|v| v.to_str().unwrap().to_string()),
            "traceparent": parts.headers.get("traceparent").map(|v| v.to_str().unwrap().to_string()),
            "tracestate": parts.headers.get("tracestate").map(|v| v.to_str().unwrap().to_string()),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        });
        let mut resp = Response::new(full(view.to_string()));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        resp
    }
}

/// The nonce the echo upstream asks for on `/dpop-nonce`.
pub const UPSTREAM_NONCE: &str = "up-nonce-1";

/// The claims of a compact JWS, unverified.
pub fn jws_claims(jws: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = jws.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A parsed HTTP/1.1 response from [`raw`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` bytes as they are and reads until the server closes (send `Connection: close`).
pub async fn raw(addr: SocketAddr, request: &str) -> RawResponse {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("response within 20s")
        .unwrap();
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    RawResponse {
        status,
        head: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `GET <target>` with `Connection: close` and extra header lines.
pub async fn get(addr: SocketAddr, target: &str, host: &str, extra: &str) -> RawResponse {
    raw(
        addr,
        &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
    )
    .await
}

/// `GET http://api.example.com/x` through the forward listener of `p` (the upstream most
/// in-process tests name `api`).
pub async fn get_api(p: &tokenproxy::Running) -> RawResponse {
    get(
        p.forward_addr().unwrap(),
        "http://api.example.com/x",
        "api.example.com",
        "",
    )
    .await
}

/// A config with one client at `idp` and the given upstreams block (YAML text, for tests
/// that spell the upstreams out).
pub fn config(idp: &FakeIdp, proxy: &str, upstreams: &str) -> tokenproxy::Config {
    let yaml = format!("proxy:\n{proxy}\nupstreams:\n{upstreams}");
    let mut value: serde_json::Value =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let mut c = TestConfig::new().client("idp", &idp.url(), "s3cret");
    for section in ["proxy", "upstreams"] {
        if let Some(v) = value.get_mut(section).map(std::mem::take) {
            if !v.is_null() {
                c = c.set(section, v);
            }
        }
    }
    c.config()
}

/// Polls `f` every 10 ms for up to 5 s.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5s");
}

pub fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A port that was free a moment ago (for configs that need a fixed address), never one
/// handed out before in this test process: the kernel may give a just-closed port again, and
/// two listeners of one config on one port make it invalid.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}
