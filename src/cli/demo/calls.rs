//! The demo's own requests through the proxy, byte for byte: HTTP/1.1, HTTP/2 with prior
//! knowledge, and HTTPS through CONNECT (trusting the proxy's generated CA).

use std::sync::Arc;

use http::{Request, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::DemoError;
use super::peers::API_HOST;

/// A minimal HTTP/1.1 GET (what curl would send), returning the response body.
pub(super) async fn raw_get(
    addr: std::net::SocketAddr,
    target: &str,
    host: &str,
) -> Result<String, DemoError> {
    exchange(TcpStream::connect(addr).await?, target, host).await
}

/// What `curl --http2-prior-knowledge` does: HTTP/2 on a plain connection, one GET.
pub(super) async fn h2c_get(addr: std::net::SocketAddr, path: &str) -> Result<String, DemoError> {
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
pub(super) async fn https_get(
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
