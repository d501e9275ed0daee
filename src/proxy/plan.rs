//! Step one of every request: what is it, and where does it go? Decided before any I/O.
//!
//! The forward listener (`HTTP_PROXY`) routes absolute-form requests by their target (host,
//! port and, where a pattern has one, path prefix), never by the Host header: a matched one
//! goes to its upstream's `url` with the token, an unmatched one is passed through or denied.
//! `CONNECT` to an unmatched host becomes an opaque tunnel under `passthrough`; to a matched
//! host it is intercepted, served as plaintext, or refused. Inside such a tunnel each request
//! is routed by its path like a forward one. A reverse listener serves one upstream, named by
//! the listener: the request's path and query are appended to that upstream's `url`.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::HOST;
use http::{Method, Request, Uri};

use super::error::ProxyError;
use super::facts::Facts;
use super::target::Target;
use crate::config::{Scheme, Unmatched};
use crate::host::{is_loopback, split_authority};
use crate::snapshot::{App, Snapshot, Upstream};
use crate::upstream::Route;

/// The listener a request came in on.
#[derive(Clone)]
pub enum Entry {
    /// The `HTTP_PROXY` listener.
    Forward,
    /// The reverse listener of the named upstream.
    Reverse(Arc<str>),
    /// Inside an intercepted CONNECT tunnel to this target (its scheme: `https` for TLS,
    /// `http` for a plaintext tunnel).
    Intercepted(Arc<Target<'static>>),
}

/// What to do with a request.
pub enum Plan {
    /// Send to a matched upstream with its token; `uri` is the target to send.
    Matched { up: Arc<Upstream>, uri: Uri },
    /// No upstream matched: forward without a token, as asked or to this URI (a normalised
    /// path, or the absolute form of a request inside a tunnel).
    Passthrough(Option<Uri>),
    /// CONNECT to an unmatched host: splice bytes both ways.
    Tunnel(Target<'static>),
    /// CONNECT to a matched host that can be intercepted: serve what the tunnel carries.
    Intercept {
        up: Arc<Upstream>,
        target: Target<'static>,
    },
    /// Answer with an error; `up` is the upstream it is counted under, if one matched.
    Refused {
        up: Option<Arc<Upstream>>,
        why: ProxyError,
    },
}

impl Plan {
    /// The upstream the request matched, if any.
    pub fn upstream(&self) -> Option<&Arc<Upstream>> {
        match self {
            Plan::Matched { up, .. } | Plan::Intercept { up, .. } => Some(up),
            Plan::Refused { up, .. } => up.as_ref(),
            Plan::Passthrough(_) | Plan::Tunnel(_) => None,
        }
    }
}

/// Decides what `req`, which came in on `entry` and whose headers told `facts`, is.
pub fn resolve<B>(
    app: &App,
    snap: &Snapshot,
    entry: &Entry,
    req: &Request<B>,
    facts: &Facts,
) -> Plan {
    let plan = match entry {
        Entry::Reverse(name) => Ok(reverse(snap, name, req, facts)),
        Entry::Intercepted(tunnel) => intercepted(app, snap, tunnel, req, facts),
        Entry::Forward if req.method() == Method::CONNECT => connect(app, snap, req.uri()),
        Entry::Forward => forward(app, snap, req, facts),
    };
    plan.unwrap_or_else(|why| Plan::Refused { up: None, why })
}

fn reverse<B>(snap: &Snapshot, name: &str, req: &Request<B>, facts: &Facts) -> Plan {
    let Some(up) = snap.upstream(name) else {
        let why = ProxyError::UpstreamRemoved(name.to_string());
        return Plan::Refused { up: None, why };
    };
    let uri = facts.check(req.headers()).and_then(|()| match &up.route {
        Route::Url(pool) => pool
            .target(req.uri())
            .map_err(|_| ProxyError::PathNotForwardable),
        Route::AsAsked(_) => Err(ProxyError::NoUrl(name.to_string())),
    });
    matched(up, uri)
}

fn forward<B>(
    app: &App,
    snap: &Snapshot,
    req: &Request<B>,
    facts: &Facts,
) -> Result<Plan, ProxyError> {
    facts.check(req.headers())?;
    let (scheme, authority) = Target::split(req.uri())?;
    if let Some((host, port, up)) = snap.route_written(authority, scheme.default_port()) {
        let target = Target {
            scheme,
            host: Cow::Borrowed(host),
            port,
        };
        let uri = req.uri();
        return Ok(matched(
            up,
            upstream_uri(up, &target, uri, || Ok(uri.clone())),
        ));
    }
    let target = Target::of(scheme, authority)?;
    let (up, path) = snap.route(&target.host, target.port, req.uri().path())?;
    let uri = with_path(req.uri(), path)?;
    let Some(up) = up else {
        unmatched(app, snap, &target)?;
        return Ok(Plan::Passthrough(owned(uri)));
    };
    let uri = upstream_uri(up, &target, &uri, || Ok(uri.clone().into_owned()));
    Ok(matched(up, uri))
}

fn connect(app: &App, snap: &Snapshot, uri: &Uri) -> Result<Plan, ProxyError> {
    let target = Target::connect(uri)?;
    if let Some(up) = snap.claim(&target.host, target.port) {
        let interceptor = app.interceptor.as_ref();
        let served = up.config.intercept;
        if served && interceptor.is_some_and(|i| i.covers(&target.host)) {
            let up = up.clone();
            return Ok(Plan::Intercept { up, target });
        }
        // No CA: a tunnel that will carry plaintext HTTP (Python websockets and undici send
        // CONNECT host:80 for ws:// and http://) is served all the same; port 443 is TLS's,
        // and gets the clear refusal below rather than a tunnel closed at the ClientHello.
        let plaintext = snap.config.proxy.connect_plaintext && target.port != 443;
        if served && interceptor.is_none() && plaintext {
            let up = up.clone();
            return Ok(Plan::Intercept { up, target });
        }
        let authority = target.display();
        tracing::warn!(upstream = %up.name, target = %authority,
            "refused CONNECT to a host that gets tokens: have the app call http://{authority}/... through the proxy; tokenproxy speaks TLS upstream");
        let why = ProxyError::TunnelRefused(authority);
        return Ok(Plan::Refused {
            up: Some(up.clone()),
            why,
        });
    }
    unmatched(app, snap, &target)?;
    Ok(Plan::Tunnel(target))
}

/// A request inside an intercepted tunnel is routed by its path among the upstreams of the
/// host the CONNECT named, and may not name another host (domain fronting): `Host`, or an
/// absolute-form target, must be the tunnel's host and port. A path no upstream claims is
/// passed through like an unmatched forward request.
fn intercepted<B>(
    app: &App,
    snap: &Snapshot,
    tunnel: &Target<'_>,
    req: &Request<B>,
    facts: &Facts,
) -> Result<Plan, ProxyError> {
    facts.check(req.headers())?;
    let Some(claimed) = snap
        .claim(&tunnel.host, tunnel.port)
        .filter(|u| u.config.intercept)
    else {
        return Err(ProxyError::UpstreamRemoved(tunnel.display()));
    };
    let named = match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(HOST).and_then(|h| h.to_str().ok()),
    };
    let same = named
        .and_then(|n| split_authority(n, tunnel.scheme.default_port()).ok())
        .is_some_and(|(host, port)| host == tunnel.host && port == tunnel.port);
    if !same {
        let why = ProxyError::Misdirected(tunnel.display());
        return Ok(Plan::Refused {
            up: Some(claimed.clone()),
            why,
        });
    }
    let (up, path) = snap.route(&tunnel.host, tunnel.port, req.uri().path())?;
    let uri = with_path(req.uri(), path)?;
    let Some(up) = up else {
        unmatched(app, snap, tunnel)?;
        return Ok(Plan::Passthrough(Some(absolute(tunnel, &uri)?)));
    };
    let uri = upstream_uri(up, tunnel, &uri, || absolute(tunnel, &uri));
    Ok(matched(up, uri))
}

/// `uri` with its path replaced by the normalised one routing chose, query kept.
fn with_path(uri: &Uri, path: Option<String>) -> Result<Cow<'_, Uri>, ProxyError> {
    let Some(path) = path else {
        return Ok(Cow::Borrowed(uri));
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.try_into().map_err(|_| ProxyError::PathNotForwardable)?);
    Uri::from_parts(parts)
        .map(Cow::Owned)
        .map_err(|_| ProxyError::PathNotForwardable)
}

fn owned(uri: Cow<'_, Uri>) -> Option<Uri> {
    match uri {
        Cow::Owned(uri) => Some(uri),
        Cow::Borrowed(_) => None,
    }
}

/// Where a matched forward-mode request goes: under the upstream's `url`, or, for an upstream
/// without one, where the app asked (`as_asked`), but only where a token may travel: over
/// https, to loopback, or with `allow_plaintext`.
fn upstream_uri(
    up: &Upstream,
    target: &Target<'_>,
    uri: &Uri,
    as_asked: impl FnOnce() -> Result<Uri, ProxyError>,
) -> Result<Uri, ProxyError> {
    match &up.route {
        Route::Url(pool) => pool.target(uri).map_err(|_| ProxyError::PathNotForwardable),
        Route::AsAsked(_)
            if target.scheme == Scheme::Https
                || is_loopback(&target.host)
                || up.config.allow_plaintext =>
        {
            as_asked()
        }
        Route::AsAsked(_) => Err(ProxyError::PlaintextRefused(target.host.to_string())),
    }
}

/// `scheme://host:port/path?query` for a url-less upstream reached through a tunnel.
fn absolute(tunnel: &Target<'_>, uri: &Uri) -> Result<Uri, ProxyError> {
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let text = format!("{}://{}{path}", tunnel.scheme.as_str(), tunnel.display());
    Uri::try_from(text).map_err(|_| ProxyError::PathNotForwardable)
}

/// The rules for a target no upstream matches: denied by config, or refused because it is
/// tokenproxy itself.
fn unmatched(app: &App, snap: &Snapshot, target: &Target<'_>) -> Result<(), ProxyError> {
    if snap.config.proxy.unmatched == Unmatched::Deny {
        return Err(ProxyError::UnmatchedDenied(target.display()));
    }
    // A name is checked on the addresses it resolves to, when connecting; an IP literal is
    // never resolved, so it is checked here.
    if snap
        .config
        .proxy
        .deny_destinations
        .denies_literal(&target.host)
    {
        return Err(ProxyError::DestinationDenied(target.display()));
    }
    if app.is_own_listener(&target.host, target.port) {
        return Err(ProxyError::Loop {
            host: target.host.to_string(),
            port: target.port,
        });
    }
    Ok(())
}

fn matched(up: &Arc<Upstream>, uri: Result<Uri, ProxyError>) -> Plan {
    match uri {
        Ok(uri) => Plan::Matched {
            up: up.clone(),
            uri,
        },
        Err(why) => Plan::Refused {
            up: Some(up.clone()),
            why,
        },
    }
}
