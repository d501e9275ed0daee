//! Through the forward listener with CONNECT: open a tunnel, speak TLS in it trusting only a
//! given `ca.pem`, send one request.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{parse_response, RawResponse};

/// Opens a tunnel; returns the stream after the 200, or the proxy's answer.
pub async fn connect(proxy: SocketAddr, authority: &str) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 200") {
        Ok(s)
    } else {
        Err(head)
    }
}

/// A TLS client that trusts only `ca.pem` (and offers http/1.1).
pub fn client(trust: &Path, sni: bool) -> tokio_rustls::TlsConnector {
    client_offering(trust, sni, &[b"http/1.1"])
}

/// A TLS client that trusts only `ca.pem` and offers `alpn`.
pub fn client_offering(trust: &Path, sni: bool, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(trust.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(&pem) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni;
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub fn pem_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Sends one request on `io` and reads the whole answer.
pub async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: S,
    host: &str,
) -> RawResponse {
    let req = format!("GET /items?x=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = io.read_to_end(&mut buf).await;
    parse_response(&buf)
}
