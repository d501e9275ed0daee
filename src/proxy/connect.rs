//! CONNECT to a host no upstream matches: an opaque tunnel, bytes spliced both ways. No token
//! ever travels in one (`plan` refuses CONNECT to matched hosts).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::target::Target;
use crate::body::{empty, Body};
use crate::config::ProxyConfig;

/// Connects to the target, answers 200, and splices the upgraded connection to it.
pub async fn tunnel(
    req: Request<Incoming>,
    target: Target,
    proxy: &ProxyConfig,
) -> Result<Response<Body>, ProxyError> {
    let addr_host = target.host.trim_start_matches('[').trim_end_matches(']');
    let connecting = TcpStream::connect((addr_host, target.port));
    let mut server = match tokio::time::timeout(proxy.connect_timeout, connecting).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let msg = format!("{}: {e}", target.display());
            return Err(ProxyError::UpstreamUnreachable(msg));
        }
        Err(_) => return Err(ProxyError::UpstreamTimeout(proxy.connect_timeout)),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}
