//! The training's load: closed-loop connections through each of tokenproxy's paths, every
//! answer checked.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::origin::{provider, BIG};
use crate::BoxError;

/// A client trusting the CA tokenproxy generated for interception.
pub fn intercept_tls(ca: &Path) -> Result<TlsConnector, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// How the load reaches tokenproxy.
#[derive(Clone, Copy)]
pub enum Via {
    /// HTTP/1.1 to a reverse listener.
    Reverse(SocketAddr),
    /// HTTP/1.1 in absolute form to the forward listener, for this host.
    Forward(SocketAddr, &'static str),
    /// h2c with prior knowledge to a reverse listener.
    H2(SocketAddr),
    /// CONNECT to this host through the forward listener, then TLS and HTTP/1.1 inside.
    Intercept(SocketAddr, &'static str),
}

enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn open(via: Via, tls: &TlsConnector) -> Result<Conn, BoxError> {
    match via {
        Via::Reverse(addr) | Via::Forward(addr, _) => {
            let (send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp(addr).await?)).await?;
            tokio::spawn(conn);
            Ok(Conn::H1(send))
        }
        Via::H2(addr) => {
            let io = TokioIo::new(tcp(addr).await?);
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(Conn::H2(send))
        }
        Via::Intercept(proxy, host) => {
            let mut tcp = tcp(proxy).await?;
            let connect = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n");
            tcp.write_all(connect.as_bytes()).await?;
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                head.push(tcp.read_u8().await?);
            }
            if !head.starts_with(b"HTTP/1.1 200") {
                return Err("CONNECT refused".into());
            }
            let stream = tls.connect(ServerName::try_from(host)?, tcp).await?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok(Conn::H1(send))
        }
    }
}

/// The `i`th request of a connection, and the body its answer must have.
fn request(via: Via, i: u64) -> (Request<Full<Bytes>>, Bytes) {
    let (method, path, body, expect) = match i % 16 {
        0 => (Method::POST, "/post", &BIG[..1024], &b"1024\n"[..]),
        1 => (Method::GET, "/big", &[][..], &BIG[..]),
        _ => (Method::GET, "/", &[][..], &b"ok\n"[..]),
    };
    let (uri, host) = match via {
        Via::Forward(_, host) => (format!("http://{host}{path}"), host.to_string()),
        Via::Intercept(_, host) => (path.to_string(), host.to_string()),
        // HTTP/2 carries the target's scheme and authority as pseudo-headers.
        Via::H2(addr) => (format!("http://{addr}{path}"), addr.to_string()),
        Via::Reverse(addr) => (path.to_string(), addr.to_string()),
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(HOST, host)
        .body(Full::new(Bytes::from_static(body)))
        .expect("a valid request");
    (req, Bytes::from_static(expect))
}

async fn exchange(conn: &mut Conn, via: Via, i: u64) -> Result<(), BoxError> {
    let (req, expect) = request(via, i);
    let resp = match conn {
        Conn::H1(send) => {
            send.ready().await?;
            send.send_request(req).await?
        }
        Conn::H2(send) => {
            send.ready().await?;
            send.send_request(req).await?
        }
    };
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK || body != expect {
        return Err(format!("answer {status} with {} bytes", body.len()).into());
    }
    Ok(())
}

/// `connections` connections (each with `streams` concurrent requests on HTTP/2) sending
/// requests back to back for `seconds`: (requests answered as expected, failures).
pub async fn load(
    via: Via,
    connections: usize,
    streams: usize,
    tls: &TlsConnector,
    seconds: u64,
) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let mut failed = 0;
    for _ in 0..connections {
        let conn = match open(via, tls).await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("pgo_train: connecting: {e}");
                failed += 1;
                continue;
            }
        };
        let mut conns = vec![conn];
        if let Conn::H2(send) = &conns[0] {
            let send = send.clone();
            conns.extend((1..streams).map(|_| Conn::H2(send.clone())));
        }
        for mut conn in conns {
            tasks.spawn(async move {
                let (mut ok, mut i) = (0, 0);
                while Instant::now() < deadline {
                    if let Err(e) = exchange(&mut conn, via, i).await {
                        eprintln!("pgo_train: request: {e}");
                        return (ok, 1);
                    }
                    (ok, i) = (ok + 1, i + 1);
                }
                (ok, 0)
            });
        }
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        let (o, f) = done.unwrap_or((0, 1));
        (ok, failed) = (ok + o, failed + f);
    }
    (ok, failed)
}
