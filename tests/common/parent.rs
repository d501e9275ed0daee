//! A parent (corporate) proxy in-process, for fast exact tests of `proxy.upstream_proxy`:
//! Basic `Proxy-Authorization` required, `CONNECT` tunnels spliced, absolute-form requests
//! forwarded, every request head noted. Names under `.corp.test` resolve here only (to
//! 127.0.0.1), so a request that reaches one went through this parent. The end-to-end tests
//! use squid and tinyproxy instead.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokenproxy::body::{empty, full, Body};
use tokenproxy::serve as server;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Each request head: its line, and the Proxy-Authorization it carried.
type Heads = Arc<Mutex<Vec<(String, Option<String>)>>>;

#[derive(Clone)]
pub struct Parent {
    pub addr: SocketAddr,
    /// `CONNECT host:port` or `METHOD absolute-uri`, and the Proxy-Authorization it carried.
    pub seen: Heads,
    /// The `user:password` accepted.
    pub credentials: Arc<Mutex<String>>,
    /// CONNECT to these ports is refused with 403 (a corporate policy).
    pub forbidden_ports: Arc<Mutex<Vec<u16>>>,
    _stop: Arc<watch::Sender<bool>>,
}

impl Parent {
    pub async fn start(credentials: &str) -> Parent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, rx) = watch::channel(false);
        let parent = Parent {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            credentials: Arc::new(Mutex::new(credentials.to_string())),
            forbidden_ports: Arc::default(),
            _stop: Arc::new(stop),
        };
        let me = parent.clone();
        tokio::spawn(server::serve(
            listener,
            move |req| me.clone().answer(req),
            rx,
        ));
        parent
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines seen, in order.
    pub fn lines(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(l, _)| l.clone()).collect()
    }

    pub fn authorizations(&self) -> Vec<Option<String>> {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(_, a)| a.clone()).collect()
    }

    async fn answer(self, req: Request<Incoming>) -> Response<Body> {
        let auth = req
            .headers()
            .get(header::PROXY_AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_string());
        let line = format!("{} {}", req.method(), req.uri());
        self.seen.lock().unwrap().push((line, auth.clone()));
        let expected = format!(
            "Basic {}",
            super::base64_encode(&self.credentials.lock().unwrap())
        );
        if auth.as_deref() != Some(expected.as_str()) {
            let mut r = Response::new(full("proxy auth required"));
            *r.status_mut() = StatusCode::PROXY_AUTHENTICATION_REQUIRED;
            r.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                "Basic realm=\"corp\"".parse().unwrap(),
            );
            return r;
        }
        let authority = req.uri().authority().unwrap().clone();
        let port = authority.port_u16().unwrap_or(80);
        let Ok(server) = TcpStream::connect((resolve(authority.host()), port)).await else {
            return status(StatusCode::BAD_GATEWAY);
        };
        if req.method() == http::Method::CONNECT {
            if self.forbidden_ports.lock().unwrap().contains(&port) {
                return status(StatusCode::FORBIDDEN);
            }
            tokio::spawn(async move {
                let mut server = server;
                if let Ok(up) = hyper::upgrade::on(req).await {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(up), &mut server).await;
                }
            });
            return status(StatusCode::OK);
        }
        forward(req, server).await
    }
}

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = s;
    r
}

/// `*.corp.test` is 127.0.0.1 here, and nowhere else.
fn resolve(host: &str) -> &str {
    if host.ends_with(".corp.test") {
        "127.0.0.1"
    } else {
        host
    }
}

/// An absolute-form request sent on in origin form, without the parent's credential.
async fn forward(req: Request<Incoming>, server: TcpStream) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let body: Bytes = body.collect().await.unwrap().to_bytes();
    parts.headers.remove(header::PROXY_AUTHORIZATION);
    parts.uri = parts
        .uri
        .path_and_query()
        .unwrap()
        .as_str()
        .parse()
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(server))
        .await
        .unwrap();
    tokio::spawn(conn);
    match sender
        .send_request(Request::from_parts(parts, full(body)))
        .await
    {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            Response::from_parts(parts, full(body))
        }
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}
