//! CONNECT to a host no upstream matches: an opaque tunnel, bytes spliced both ways. No token
//! ever travels in one. `proxy.deny_destinations` is applied to the addresses the host
//! resolves to, and only an allowed one is connected to.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{lookup_host, TcpStream};

use super::error::ProxyError;
use super::target::Target;
use crate::body::{empty, Body};
use crate::config::ProxyConfig;
use crate::host::DenyList;
use crate::upstream::resolve::allowed;

/// Connects to the target, answers 200, and splices the upgraded connection to it.
pub async fn tunnel(
    req: Request<Incoming>,
    target: Target,
    proxy: &ProxyConfig,
) -> Result<Response<Body>, ProxyError> {
    let connecting = open(&target, &proxy.deny_destinations);
    let mut server = match tokio::time::timeout(proxy.connect_timeout, connecting).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e),
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

/// Resolves the target, drops the addresses `deny` names, and connects to the first of the
/// rest that answers: the address checked is the one connected to.
async fn open(target: &Target, deny: &DenyList) -> Result<TcpStream, ProxyError> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let unreachable = |e: &dyn std::fmt::Display| {
        ProxyError::UpstreamUnreachable(format!("{}: {e}", target.display()))
    };
    let addrs: Vec<_> = lookup_host((host, target.port))
        .await
        .map_err(|e| unreachable(&e))?
        .collect();
    let deny = (!deny.is_empty()).then_some(deny);
    let addrs =
        allowed(addrs, deny, host).map_err(|_| ProxyError::DestinationDenied(target.display()))?;
    TcpStream::connect(&addrs[..])
        .await
        .map_err(|e| unreachable(&e))
}
