//! Name resolution for outbound connections, with `proxy.deny_destinations` applied to the
//! addresses a name resolves to, at connect time: a name that resolves to a denied address
//! (DNS rebinding included) is never connected to. Upstream connections resolve without a
//! list; the passthrough client and opaque tunnels resolve with it. Through the parent proxy,
//! which resolves names itself, [`Resolver::refuse_denied`] checks what a name resolves to
//! here, where it resolves at all.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

use crate::host::DenyList;

/// Every address of a name was denied: the error a connect fails with, found again by the
/// request pipeline to answer `403 destination_denied`.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses in proxy.deny_destinations")]
pub struct Denied {
    pub host: String,
}

/// The system resolver, with the deny list applied when there is one.
#[derive(Clone)]
pub struct Resolver {
    gai: GaiResolver,
    deny: Option<Arc<DenyList>>,
}

impl Resolver {
    pub fn new(deny: Option<Arc<DenyList>>) -> Resolver {
        Resolver {
            gai: GaiResolver::new(),
            deny: deny.filter(|d| !d.is_empty()),
        }
    }

    /// For a destination the parent proxy connects to: [`refuse_denied`] with this
    /// resolver's list.
    pub async fn refuse_denied(&self, host: &str, port: u16) -> Result<(), Denied> {
        match &self.deny {
            Some(deny) => refuse_denied(deny, host, port).await,
            None => Ok(()),
        }
    }
}

/// For a destination the parent proxy connects to: `Denied` if `host` is an IP literal
/// `deny` names, or a name that resolves here only to addresses it names. A name that does
/// not resolve here is left to the parent (behind a corporate proxy, often only the proxy
/// can resolve outside names).
pub async fn refuse_denied(deny: &DenyList, host: &str, port: u16) -> Result<(), Denied> {
    if deny.is_empty() {
        return Ok(());
    }
    let denied = || Denied {
        host: host.to_string(),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return if deny.denies(ip) {
            Err(denied())
        } else {
            Ok(())
        };
    }
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((bare, port)).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => return Ok(()),
    };
    if !addrs.is_empty() && addrs.iter().all(|a| deny.denies(a.ip())) {
        return Err(denied());
    }
    Ok(())
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let mut gai = self.gai.clone();
        let deny = self.deny.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = gai.call(name).await?.collect();
            allowed(addrs, deny.as_deref(), &host).map(Vec::into_iter)
        })
    }
}

/// The addresses of `host` that `deny` lets through; `Denied` if it resolved to some and
/// none are left.
pub fn allowed(
    addrs: Vec<SocketAddr>,
    deny: Option<&DenyList>,
    host: &str,
) -> Result<Vec<SocketAddr>, BoxError> {
    let Some(deny) = deny else { return Ok(addrs) };
    let resolved = !addrs.is_empty();
    let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| !deny.denies(a.ip())).collect();
    if resolved && kept.is_empty() {
        return Err(Box::new(Denied {
            host: host.to_string(),
        }));
    }
    Ok(kept)
}

/// Whether `e`, or any error under it, is a [`Denied`].
pub fn denied_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Denied> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(d) = s.downcast_ref::<Denied>() {
            return Some(d);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_is_denied_when_loopback_is_and_resolved_otherwise() {
        let deny = Arc::new(DenyList::parse(["loopback"]).unwrap());
        let name: Name = "localhost".parse().unwrap();
        let err = Resolver::new(Some(deny))
            .call(name.clone())
            .await
            .unwrap_err();
        let found = denied_in(err.as_ref()).unwrap();
        assert_eq!(found.host, "localhost");
        let open = Resolver::new(None).call(name).await.unwrap();
        assert!(open.count() >= 1);
    }

    #[tokio::test]
    async fn through_the_parent_what_resolves_here_is_checked_and_the_rest_let_be() {
        let deny = Arc::new(DenyList::parse(["loopback", "metadata"]).unwrap());
        let r = Resolver::new(Some(deny));
        assert!(r.refuse_denied("localhost", 80).await.is_err());
        assert!(r.refuse_denied("169.254.169.254", 80).await.is_err());
        assert!(r.refuse_denied("[::1]", 443).await.is_err());
        assert!(r.refuse_denied("203.0.113.9", 443).await.is_ok());
        // `.invalid` never resolves (RFC 6761): the parent is left to decide.
        assert!(r.refuse_denied("api.example.invalid", 443).await.is_ok());
        assert!(Resolver::new(None)
            .refuse_denied("localhost", 80)
            .await
            .is_ok());
    }

    #[test]
    fn only_denied_addresses_are_dropped() {
        let deny = DenyList::parse(["169.254.0.0/16"]).unwrap();
        let a: SocketAddr = "169.254.169.254:80".parse().unwrap();
        let b: SocketAddr = "203.0.113.5:80".parse().unwrap();
        assert_eq!(allowed(vec![a, b], Some(&deny), "x").unwrap(), vec![b]);
        assert!(allowed(vec![a], Some(&deny), "x").is_err());
        assert_eq!(allowed(vec![a], None, "x").unwrap(), vec![a]);
    }
}
