//! CONNECT to a host no upstream matches: an opaque tunnel, bytes spliced both ways. No token
//! ever travels in one. `proxy.deny_destinations` is applied to the addresses the host
//! resolves to, and only an allowed one is connected to. Through the parent proxy the tunnel
//! is chained: a `CONNECT` of our own to the parent, whose refusal is the app's answer.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{lookup_host, TcpStream};

use super::error::ProxyError;
use super::target::Target;
use crate::body::{empty, Body};
use crate::config::ProxyConfig;
use crate::egress::{allowed, refuse_denied, tunnel as chain, Parent};
use crate::host::DenyList;

/// Connects to the target, answers 200, and splices the upgraded connection to it.
pub async fn tunnel(
    req: Request<Incoming>,
    target: Target<'static>,
    proxy: &ProxyConfig,
    parent: Option<&Arc<Parent>>,
) -> Result<Response<Body>, ProxyError> {
    let deny = &proxy.deny_destinations;
    let connecting = async {
        match parent.filter(|p| p.carries_host(&target.host, target.port)) {
            Some(parent) => through(parent, &target, deny).await,
            None => Ok((open(&target, deny).await?, Bytes::new())),
        }
    };
    let (mut server, early) = match tokio::time::timeout(proxy.connect_timeout, connecting).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ProxyError::UpstreamTimeout(proxy.connect_timeout)),
    };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                // What the far side said before the parent's 200 was read goes first.
                let spliced = async {
                    client.write_all(&early).await?;
                    tokio::io::copy_bidirectional(&mut client, &mut server).await
                };
                if let Err(e) = spliced.await {
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
async fn open(target: &Target<'_>, deny: &DenyList) -> Result<TcpStream, ProxyError> {
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

/// A tunnel to the target inside one to the parent. The deny list is applied to what the
/// name resolves to here, where it resolves at all.
async fn through(
    parent: &Parent,
    target: &Target<'_>,
    deny: &DenyList,
) -> Result<(TcpStream, Bytes), ProxyError> {
    refuse_denied(deny, &target.host, target.port)
        .await
        .map_err(|_| ProxyError::DestinationDenied(target.display()))?;
    match chain(parent, &target.host, target.port).await {
        Ok(t) => Ok((t.tcp, t.early)),
        Err(e) if e.status().is_some() => Err(ProxyError::UpstreamProxyRefused(e.to_string())),
        Err(e) => Err(ProxyError::UpstreamUnreachable(e.to_string())),
    }
}
