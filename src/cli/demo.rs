//! `tokenproxy demo`: a self-contained demonstration on loopback. Demo only.
//!
//! Starts a tiny built-in authorization server (client `demo-client`, throwaway secret), an
//! echo upstream that answers with the `Authorization` header it received, and the proxy with
//! a forward and a reverse listener, all on ephemeral 127.0.0.1 ports. It sends one request
//! through each listener, and one `https://` request through the forward listener, which
//! tokenproxy intercepts with a certificate from its generated CA, and one to an upstream whose
//! tokens are DPoP-bound; it prints what the upstream saw, and `curl` lines to try.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::body::{full, Body};
use crate::config::Config;
use crate::error::StartError;
use crate::serve;

const CLIENT_ID: &str = "demo-client";
const CLIENT_SECRET: &str = "demo-secret-not-for-production";
const API_HOST: &str = "api.demo.internal";
/// An upstream whose client asks for DPoP-bound tokens.
const BOUND_HOST: &str = "bound.demo.internal";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo could not bind a loopback port: {0}")]
    Io(#[from] std::io::Error),
    #[error("demo config is invalid: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("demo self-check failed: {0}")]
    Check(String),
}

/// Runs the demo; with `once`, exits after the self-check instead of serving until `stop`.
pub async fn run(once: bool, stop: impl std::future::Future<Output = ()>) -> Result<(), DemoError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let issued = Arc::new(AtomicU64::new(0));
    let idp = TcpListener::bind("127.0.0.1:0").await?;
    let idp_addr = idp.local_addr()?;
    let counter = issued.clone();
    tokio::spawn(serve::serve(
        idp,
        move |req| token_endpoint(counter.clone(), req),
        stop_rx.clone(),
    ));
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_addr = echo.local_addr()?;
    tokio::spawn(serve::serve(
        echo,
        |req| async move { echo_handler(req) },
        stop_rx.clone(),
    ));

    let trust_dir = std::env::temp_dir().join(format!("tokenproxy-demo-{}", std::process::id()));
    let trust = trust_dir.display();
    let yaml = format!(
        "proxy:\n  listen: 127.0.0.1:0\n  unmatched: deny\n  intercept:\n    ca: generate\n    trust_dir: {trust}\nadmin:\n  listen: 127.0.0.1:0\n\
         clients:\n  demo-idp:\n    token_endpoint: http://{idp_addr}/token\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n\
           \x20 demo-dpop:\n    token_endpoint: http://{idp_addr}/token\n    client_id: {CLIENT_ID}\n    client_secret: {CLIENT_SECRET}\n    token_type: dpop\n\
         upstreams:\n  demo-api:\n    url: http://{echo_addr}\n    match: [{API_HOST}]\n    listen: 127.0.0.1:0\n    client: demo-idp\n    scopes: [api:read, api:write]\n\
           \x20 demo-bound:\n    url: http://{echo_addr}\n    match: [{BOUND_HOST}]\n    client: demo-dpop\n    scopes: [api:read]\n"
    );
    let proxy = crate::running::start(Config::from_yaml(&yaml)?).await?;
    let addrs = (
        proxy.forward_addr(),
        proxy.admin_addr(),
        proxy.reverse_addr("demo-api"),
    );
    let (Some(fwd), Some(admin), Some(rev)) = addrs else {
        return Err(DemoError::Check("listeners did not start".into()));
    };

    println!(
        "tokenproxy demo: DEMONSTRATION ONLY, everything on 127.0.0.1 with throwaway credentials\n"
    );
    println!("  authorization server  http://{idp_addr}/token   (built in, client_id {CLIENT_ID})");
    println!("  echo upstream         http://{echo_addr}        (answers with the Authorization header it got)");
    println!("  forward listener      {fwd}            (use as HTTP_PROXY; {API_HOST} is routed to the echo upstream)");
    println!("  reverse listener      http://{rev}     (upstream demo-api)");
    println!("  admin                 http://{admin}\n");

    let via_forward = raw_get(fwd, &format!("http://{API_HOST}/orders?id=42"), API_HOST).await?;
    println!("$ curl -x http://{fwd} http://{API_HOST}/orders?id=42\n{via_forward}\n");
    let via_reverse = raw_get(rev, "/inventory", &rev.to_string()).await?;
    println!("$ curl http://{rev}/inventory\n{via_reverse}\n");
    let via_h2 = h2c_get(rev, "/inventory?via=h2").await?;
    println!("$ curl --http2-prior-knowledge http://{rev}/inventory?via=h2\n{via_h2}");
    println!("  (HTTP/2 from the app, with prior knowledge; HTTP/1.1 to this upstream)\n");
    let ca = proxy
        .app
        .interceptor
        .as_ref()
        .map(|i| i.authority.trust_anchor.clone());
    let ca = ca.ok_or_else(|| DemoError::Check("interception did not start".into()))?;
    let via_tls = https_get(fwd, ca, "/orders?id=42").await?;
    println!("$ curl --proxy http://{fwd} --cacert {trust}/ca.pem https://{API_HOST}/orders?id=42\n{via_tls}");
    println!("  (HTTPS intercepted: tokenproxy answered the CONNECT with a certificate for {API_HOST} from its generated CA)\n");
    let bound = raw_get(
        fwd,
        &format!("http://{BOUND_HOST}/orders?id=42"),
        BOUND_HOST,
    )
    .await?;
    println!("$ curl -x http://{fwd} http://{BOUND_HOST}/orders?id=42\n{bound}");
    println!("  (a DPoP-bound token: the upstream gets a new proof with each request, signed with a key only tokenproxy holds)\n");
    let bearer = [&via_forward, &via_reverse, &via_h2, &via_tls]
        .iter()
        .all(|r| r.contains("Bearer demo-"));
    let dpop = bound.contains("DPoP demo-") && bound.contains(r#""htm":"GET""#);
    if !(bearer && dpop) {
        return Err(DemoError::Check(
            "the upstream did not receive a bearer token and a DPoP-bound one".into(),
        ));
    }
    let metrics = String::from_utf8_lossy(&proxy.app.metrics.render()).to_string();
    println!("Token requests made to the authorization server: {} (one per client and token lifetime, shared by all requests)", issued.load(Ordering::Relaxed));
    for line in metrics.lines().filter(|l| {
        l.starts_with("tokenproxy_requests_total")
            || l.starts_with("tokenproxy_token_fetches_total{") && !l.ends_with(" 0")
    }) {
        println!("  {line}");
    }
    println!("\nTry it yourself:");
    println!("  curl -x http://{fwd} http://{API_HOST}/hello");
    println!("  curl http://{rev}/hello");
    println!("  curl --http2-prior-knowledge http://{rev}/hello");
    println!("  curl --proxy http://{fwd} --cacert {trust}/ca.pem https://{API_HOST}/hello");
    println!("  curl http://{admin}/status");
    println!("  curl -s http://{admin}/metrics | grep ^tokenproxy_");
    if !once {
        println!("\nServing until Ctrl-C.");
        stop.await;
    }
    proxy.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = std::fs::remove_dir_all(&trust_dir);
    Ok(())
}

/// The demo authorization server: checks Basic credentials, issues a random token.
async fn token_endpoint(issued: Arc<AtomicU64>, req: Request<Incoming>) -> Response<Body> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == expected.as_str());
    if req.method() != Method::POST || req.uri().path() != "/token" {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into());
    }
    if !authorized {
        return reply(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#.into(),
        );
    }
    let n = issued.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("demo-{:016x}{n:04}", rand::random::<u64>());
    // A request with a DPoP proof gets a token bound to its key (the demo trusts the proof).
    let kind = match req.headers().contains_key("dpop") {
        true => "DPoP",
        false => "Bearer",
    };
    reply(
        StatusCode::OK,
        format!(
            r#"{{"access_token":"{token}","token_type":"{kind}","expires_in":300,"scope":"api:read api:write"}}"#
        ),
    )
}

fn echo_handler(req: Request<Incoming>) -> Response<Body> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)");
    let mut body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().to_string(),
        "host": req.headers().get(header::HOST).and_then(|v| v.to_str().ok()),
        "authorization": auth,
    });
    if let Some(claims) = req.headers().get("dpop").and_then(proof_claims) {
        body["dpop_proof_claims"] = claims;
    }
    reply(StatusCode::OK, body.to_string())
}

/// The claims of a DPoP proof, unverified (the demo only shows them).
fn proof_claims(proof: &http::HeaderValue) -> Option<serde_json::Value> {
    let payload = proof.to_str().ok()?.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn reply(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A minimal HTTP/1.1 GET (what curl would send), returning the response body.
async fn raw_get(
    addr: std::net::SocketAddr,
    target: &str,
    host: &str,
) -> Result<String, DemoError> {
    exchange(TcpStream::connect(addr).await?, target, host).await
}

/// What `curl --http2-prior-knowledge` does: HTTP/2 on a plain connection, one GET.
async fn h2c_get(addr: std::net::SocketAddr, path: &str) -> Result<String, DemoError> {
    let failed = |e: hyper::Error| DemoError::Check(format!("HTTP/2: {e}"));
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(failed)?;
    tokio::spawn(conn);
    let req = Request::get(format!("http://{addr}{path}"))
        .body(crate::body::empty())
        .map_err(|e| DemoError::Check(e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(failed)?;
    if resp.status() != StatusCode::OK || resp.version() != http::Version::HTTP_2 {
        let (status, version) = (resp.status(), resp.version());
        return Err(DemoError::Check(format!("got {status} over {version:?}")));
    }
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(failed)?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// What `curl --proxy ... https://` does: CONNECT, then TLS trusting only `ca`, then a GET.
async fn https_get(
    proxy: std::net::SocketAddr,
    ca: rustls_pki_types::CertificateDer<'static>,
    target: &str,
) -> Result<String, DemoError> {
    let mut tcp = TcpStream::connect(proxy).await?;
    let connect = format!("CONNECT {API_HOST}:443 HTTP/1.1\r\nHost: {API_HOST}:443\r\n\r\n");
    tcp.write_all(connect.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await?);
    }
    let mut roots = rustls::RootCertStore::empty();
    let tls_err = |e: rustls::Error| DemoError::Check(e.to_string());
    roots.add(ca).map_err(tls_err)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(API_HOST)
        .map_err(|e| DemoError::Check(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    exchange(tls, target, API_HOST).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    target: &str,
    host: &str,
) -> Result<String, DemoError> {
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| DemoError::Check("malformed response".into()))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(DemoError::Check(format!(
            "got {}: {body}",
            head.lines().next().unwrap_or("")
        )));
    }
    Ok(body.to_string())
}
