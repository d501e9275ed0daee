//! The forward listener: what an app reaches through `HTTP_PROXY`.
//!
//! Absolute-form requests (`GET http://host/path`) are routed by their target, never by the
//! Host header. A matched one goes to its upstream's `url` with the token; an unmatched one is
//! passed through untouched or denied. `CONNECT` to an unmatched host becomes an opaque
//! tunnel under `passthrough`; to a matched host it is refused, because a tunnel cannot carry
//! a token until TLS interception exists.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::answer::ProxyError;
use super::dispatch::{self, Outgoing};
use super::headers::check_request;
use super::{empty, Body};
use crate::config::{Scheme, Unmatched};
use crate::host::{is_loopback, split_authority};
use crate::snapshot::{App, Route, Snapshot, Upstream};

type Routed = (Option<Arc<Upstream>>, Result<Response<Body>, ProxyError>);

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let snap = app.snapshot.load_full();
    let (up, result) = if req.method() == Method::CONNECT {
        connect(&app, &snap, req).await
    } else {
        forward(&app, &snap, req).await
    };
    dispatch::finish(&app.unmatched, up.as_deref(), started, result)
}

/// The scheme, normalised host and port of an absolute-form target.
struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
}

impl Target {
    fn parse(uri: &Uri) -> Result<Target, ProxyError> {
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => return Err(ProxyError::BadRequest(format!("scheme {other:?} is not proxied"))),
            None => {
                return Err(ProxyError::BadRequest(
                    "the forward listener takes absolute-form requests (http://host/path): use it as HTTP_PROXY, or give the upstream a reverse listener".into(),
                ))
            }
        };
        let authority = uri
            .authority()
            .ok_or_else(|| ProxyError::BadRequest("request target has no host".into()))?;
        let (host, port) = split_authority(authority.as_str(), scheme.default_port())
            .map_err(|e| ProxyError::BadRequest(format!("bad request target: {e}")))?;
        Ok(Target { scheme, host, port })
    }
}

async fn forward(app: &App, snap: &Snapshot, req: Request<Incoming>) -> Routed {
    let (parts, body) = req.into_parts();
    let target = match check_request(&parts.headers).and_then(|()| Target::parse(&parts.uri)) {
        Ok(t) => t,
        Err(e) => return (None, Err(e)),
    };
    let proxy = &snap.config.proxy;
    let Some(up) = snap
        .router
        .route(&target.host, target.port)
        .and_then(|i| snap.upstreams.get(i))
    else {
        if proxy.unmatched == Unmatched::Deny {
            return (
                None,
                Err(ProxyError::UnmatchedDenied(format!(
                    "{}:{}",
                    target.host, target.port
                ))),
            );
        }
        if app.is_own_listener(&target.host, target.port) {
            return (None, Err(loop_error(&target.host, target.port)));
        }
        let out = Outgoing {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        };
        return (
            None,
            dispatch::passthrough(&snap.passthrough, out, proxy.request_timeout).await,
        );
    };
    let uri = match &up.route {
        Route::Url(pool) => dispatch::target(pool, &parts.uri),
        // No `url`: the token goes where the app asked, if that is safe.
        Route::AsAsked(_)
            if target.scheme == Scheme::Https
                || is_loopback(&target.host)
                || up.config.allow_plaintext =>
        {
            Ok(parts.uri)
        }
        Route::AsAsked(_) => Err(ProxyError::PlaintextRefused(target.host.clone())),
    };
    let out = match uri {
        Ok(uri) => Outgoing {
            method: parts.method,
            uri,
            headers: parts.headers,
            body,
        },
        Err(e) => return (Some(up.clone()), Err(e)),
    };
    let limit = snap.config.tokens.replay_body_limit;
    let result = dispatch::with_token(up, out, limit, proxy.request_timeout).await;
    (Some(up.clone()), result)
}

async fn connect(app: &App, snap: &Snapshot, req: Request<Incoming>) -> Routed {
    let Some(authority) = req.uri().authority().map(|a| a.as_str().to_string()) else {
        return (
            None,
            Err(ProxyError::BadRequest("CONNECT needs host:port".into())),
        );
    };
    let (host, port) = match split_authority(&authority, 443) {
        Ok(hp) => hp,
        Err(e) => {
            return (
                None,
                Err(ProxyError::BadRequest(format!("bad CONNECT target: {e}"))),
            )
        }
    };
    if let Some(up) = snap
        .router
        .route(&host, port)
        .and_then(|i| snap.upstreams.get(i))
    {
        tracing::warn!(upstream = %up.name, target = %authority,
            "refused CONNECT to a host that gets tokens: have the app call http://{authority}/... through the proxy; tokenproxy speaks TLS upstream");
        return (Some(up.clone()), Err(ProxyError::TunnelRefused(authority)));
    }
    let proxy = &snap.config.proxy;
    if proxy.unmatched == Unmatched::Deny {
        return (None, Err(ProxyError::UnmatchedDenied(authority)));
    }
    if app.is_own_listener(&host, port) {
        return (None, Err(loop_error(&host, port)));
    }
    let addr_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let stream =
        match tokio::time::timeout(proxy.connect_timeout, TcpStream::connect((addr_host, port)))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return (
                    None,
                    Err(ProxyError::UpstreamUnreachable(format!("{authority}: {e}"))),
                )
            }
            Err(_) => {
                return (
                    None,
                    Err(ProxyError::UpstreamTimeout(proxy.connect_timeout)),
                )
            }
        };
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut server = stream;
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    (None, Ok(resp))
}

fn loop_error(host: &str, port: u16) -> ProxyError {
    ProxyError::BadRequest(format!(
        "{host}:{port} is tokenproxy itself: the request would loop back into the proxy"
    ))
}
