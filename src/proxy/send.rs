//! The last step: a request onto the wire and its response head back.
//!
//! A matched request goes over its upstream's own pool (to its `url`) or the shared client (no
//! `url`); a passthrough always over the shared client. Either way the upstream gets
//! `request_timeout` to answer, an ambiguously framed response is refused, and hop-by-hop
//! headers are removed from the response.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::header::HeaderMap;
use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::error::ProxyError;
use super::facts::Facts;
use super::headers::{strip_hop_by_hop, strip_request_hop_by_hop};
use super::trail::Trail;
use crate::body::{incoming, Body};
use crate::egress::{denied_in, refused_in};
use crate::snapshot::Upstream;
use crate::upstream::{ClientError, Clients, OriginPool, PoolError, Route, Wire};

/// How a request reaches its upstream.
#[derive(Clone, Copy)]
pub enum Transport<'a> {
    /// The upstream's own connections to its `url`.
    Pool(&'a Arc<OriginPool>),
    /// The shared pooled clients, for wherever the request's URI points.
    Client(&'a Clients),
}

impl<'a> Transport<'a> {
    pub fn of(up: &'a Upstream) -> Transport<'a> {
        match &up.route {
            Route::Url(pool) => Transport::Pool(pool),
            Route::AsAsked(client) => Transport::Client(client),
        }
    }
}

/// The request head as it goes upstream: hop-by-hop headers removed, except `TE: trailers`.
/// The app's `Host` stays until the transport replaces it with the target's (the upstream's
/// pool) or removes it for the client to write from the URI (the shared clients, HTTP/2).
/// The app's own version and extensions do not go on: the upstream connection has its own.
pub struct Head(Parts);

impl Head {
    /// The head of a request whose headers told `facts`, stripped, for `uri`. Kept as the
    /// request's own `Parts`, so that sending it builds no new request around them.
    pub fn new(mut parts: Parts, uri: Uri, facts: &Facts) -> Head {
        strip_request_hop_by_hop(&mut parts.headers, facts);
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        parts.extensions.clear();
        Head(parts)
    }

    /// A head made of its pieces (a replay's, from what was kept).
    pub fn of(method: Method, uri: Uri, headers: HeaderMap) -> Head {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = method;
        parts.uri = uri;
        parts.headers = headers;
        Head(parts)
    }

    pub fn method(&self) -> &Method {
        &self.0.method
    }

    pub fn uri(&self) -> &Uri {
        &self.0.uri
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.0.headers
    }

    pub fn with_body(self, body: Body) -> Request<Body> {
        Request::from_parts(self.0, body)
    }
}

/// Sends an unmatched request (with the [`Facts`] read from its headers) as it is (to `uri`
/// if given), minus hop-by-hop headers: never a token.
pub async fn passthrough(
    clients: &Clients,
    (req, facts): (Request<Incoming>, &Facts),
    uri: Option<Uri>,
    timeout: Duration,
    wire: Wire,
    trail: &mut Trail,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let uri = uri.unwrap_or_else(|| std::mem::take(&mut parts.uri));
    let mut head = Head::new(parts, uri, facts);
    if wire == Wire::Http1 {
        super::upgrade::restore(head.headers_mut());
    }
    send(
        Transport::Client(clients),
        head.with_body(trail.request_body(body)),
        wire,
        timeout,
        trail,
    )
    .await
}

/// Sends `req` and returns the response head, checked, with hop-by-hop headers removed.
/// When the request is traced, the send is an attempt span whose context goes upstream.
///
/// Not an `async fn`: an untraced request is [`send_once`]'s future itself, one layer fewer
/// for each poll to pass; a traced one is boxed (its span's state is large).
#[inline]
pub fn send<'a>(
    transport: Transport<'a>,
    req: Request<Body>,
    wire: Wire,
    timeout: Duration,
    trail: &'a mut Trail,
) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send + 'a {
    match trail.trace {
        None => Either::Left(send_once(transport, req, wire, timeout, trail)),
        Some(_) => Either::Right(Box::pin(send_traced(transport, req, wire, timeout, trail))),
    }
}

async fn send_traced(
    transport: Transport<'_>,
    mut req: Request<Body>,
    wire: Wire,
    timeout: Duration,
    trail: &mut Trail,
) -> Result<Response<Body>, ProxyError> {
    // `send` calls this only with a trace; without one it is a plain send all the same.
    let Some(trace) = &trail.trace else {
        return send_once(transport, req, wire, timeout, trail).await;
    };
    let attempt = trace.attempt(req.method(), req.uri(), trail.sends, trail.retry.take());
    trail.sends += 1;
    attempt.inject(req.headers_mut());
    if let Some(parent) = attempt.parent() {
        req.extensions_mut().insert(parent);
    }
    let result = send_once(transport, req, wire, timeout, trail).await;
    match &result {
        Ok(resp) => attempt.answered(resp.status().as_u16()),
        Err(e) => attempt.failed(e.status_and_code().1),
    }
    result
}

async fn send_once(
    transport: Transport<'_>,
    req: Request<Body>,
    wire: Wire,
    timeout: Duration,
    trail: &mut Trail,
) -> Result<Response<Body>, ProxyError> {
    let mut req = req;
    trail.departing(&mut req);
    let request = async {
        match transport {
            Transport::Pool(pool) => pool.send(req, wire).await.map_err(|e| match e {
                PoolError::Overloaded(_) => ProxyError::UpstreamOverloaded(e.to_string()),
                PoolError::Parent(p) => ProxyError::UpstreamProxyRefused(p.to_string()),
                e => classify(&e, pool_error_is_user(&e)),
            }),
            // Boxed: the legacy client's future is large, and unboxed it would make every
            // pooled request's future (moved into the timeout below) as large.
            Transport::Client(clients) => Box::pin(clients.request(req, wire))
                .await
                .map(|r| r.map(incoming))
                .map_err(|e| match e {
                    ClientError::Parent(p) => ProxyError::UpstreamProxyRefused(p.to_string()),
                    ClientError::Send(e) => classify(&e, legacy_error_is_user(&e)),
                }),
        }
    };
    // Pinned where it is: the deadline then holds a pointer, and the request's (large) state
    // is not copied into it, and out again, on every request. The deadline's timer is the
    // serving connection's spare where it has one (`serve::within`).
    let request = std::pin::pin!(request);
    let resp = crate::serve::within(timeout, request)
        .await
        .map_err(|_| ProxyError::UpstreamTimeout(timeout))??;
    trail.arrived(&resp);
    let (mut parts, body) = resp.into_parts();
    let facts = Facts::of(&parts.headers);
    if facts.ambiguous_framing() {
        // Refused rather than read one way here and maybe another by the app.
        return Err(ProxyError::BadUpstreamResponse(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    strip_hop_by_hop(&mut parts.headers, &facts);
    Ok(Response::from_parts(parts, body))
}

/// A failure while streaming the app's request body (bad chunked framing, a client that went
/// away) is the app's fault, not the upstream's: 400, which also closes the connection.
fn classify(e: &(dyn std::error::Error + 'static), user_body: bool) -> ProxyError {
    if let Some(denied) = denied_in(e) {
        ProxyError::DestinationDenied(denied.host.clone())
    } else if let Some(parent) = refused_in(e).filter(|p| p.status().is_some()) {
        ProxyError::UpstreamProxyRefused(parent.to_string())
    } else if user_body {
        ProxyError::BodyUnreadable(error_chain(e))
    } else if never_processed(e) {
        ProxyError::UpstreamRefusedStream(error_chain(e))
    } else {
        ProxyError::UpstreamUnreachable(error_chain(e))
    }
}

/// An HTTP/2 stream the upstream refused before doing anything with it: `REFUSED_STREAM`, or
/// a graceful `GOAWAY` (NO_ERROR) that left it out. Such a request may be sent again.
fn never_processed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            let reason = h2.reason();
            return reason == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote() && reason == Some(h2::Reason::NO_ERROR));
        }
        source = s.source();
    }
    false
}

fn legacy_error_is_user(e: &hyper_util::client::legacy::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_user)
}

fn pool_error_is_user(e: &PoolError) -> bool {
    matches!(e, PoolError::Http(h) if h.is_user())
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
