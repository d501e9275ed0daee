//! The training's origin and token endpoint: a token for `/token` (Bearer) and `/dpop-token`
//! (DPoP), an empty answer to OTLP exports, and for anything else 200 only with the token, on
//! HTTP/1.1, h2c and TLS listeners.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::PrivateKeyDer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::BoxError;

const TOKEN: &str = "train-token-0123456789";
pub static BIG: [u8; 65536] = [b'x'; 65536];

/// The origin and the token endpoint: a token for `/token` (Bearer) and `/dpop-token` (DPoP),
/// an empty answer to OTLP exports, and for anything else 200 only with the token.
async fn origin(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let auth = req.headers().get(AUTHORIZATION).cloned();
    let proof = req.headers().contains_key("dpop");
    let body = req.into_body().collect().await?.to_bytes();
    let token = |kind: &str| {
        Bytes::from(format!(
            r#"{{"access_token":"{TOKEN}","token_type":"{kind}","expires_in":3600}}"#
        ))
    };
    let authorized = auth.is_some_and(|a| {
        a.to_str().ok() == Some(&format!("Bearer {TOKEN}"))
            || (proof && a.to_str().ok() == Some(&format!("DPoP {TOKEN}")))
    });
    let (status, kind, out) = match path.as_str() {
        "/token" => (StatusCode::OK, "application/json", token("Bearer")),
        "/dpop-token" => (StatusCode::OK, "application/json", token("DPoP")),
        "/v1/traces" => (StatusCode::OK, "application/x-protobuf", Bytes::new()),
        _ if !authorized => (StatusCode::UNAUTHORIZED, "text/plain", Bytes::new()),
        "/big" => (StatusCode::OK, "text/plain", Bytes::from_static(&BIG)),
        "/post" => (
            StatusCode::OK,
            "text/plain",
            format!("{}\n", body.len()).into(),
        ),
        _ => (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
    };
    let mut resp = Response::new(Full::new(out));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(kind));
    Ok(resp)
}

/// Serves `origin` on every connection `listener` accepts: HTTP/1.1, over TLS with `tls`, or
/// HTTP/2 with prior knowledge (h2c) with `h2`.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, h2: bool) {
    while let Ok((tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = service_fn(origin);
            if h2 {
                let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
            } else if let Some(tls) = tls {
                if let Ok(stream) = tls.accept(tcp).await {
                    let builder = hyper::server::conn::http1::Builder::new();
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
            } else {
                let builder = hyper::server::conn::http1::Builder::new();
                let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
            }
        });
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The origin's TLS side: a self-signed certificate for 127.0.0.1, its PEM written to `pem`
/// for the upstream's `ca_file`.
pub fn origin_tls(pem: &Path) -> Result<TlsAcceptor, BoxError> {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
    std::fs::write(pem, key.cert.pem())?;
    let der = PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![key.cert.der().clone()], der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
