//! Sending a request upstream: with a token (matched) or without (passthrough).
//!
//! For a matched request: drop hop-by-hop headers and `Host`, buffer a small body so it can
//! be replayed, wait for the token, inject it, send. If the upstream answers 401 with a Bearer
//! challenge, the token is dropped and, when the body could be kept, the request is replayed
//! once with a fresh token; otherwise the 401 goes back and the next request gets the new one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};

use super::answer::ProxyError;
use super::client::HttpClient;
use super::headers::{inject, strip_hop_by_hop};
use super::pool::{OriginPool, PoolError};
use super::{empty, full, incoming, Body, BoxError};
use crate::metrics::{RequestMetrics, UNMATCHED};
use crate::snapshot::{Route, Upstream};
use tokio::time::Instant;

/// A request reduced to what is sent upstream.
pub struct Outgoing {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Incoming,
}

impl Outgoing {
    /// The parts to send: `Host` (regenerated from the URI by the client) and hop-by-hop
    /// headers removed.
    fn into_clean_parts(self) -> (Method, Uri, HeaderMap, Incoming) {
        let Outgoing {
            method,
            uri,
            mut headers,
            body,
        } = self;
        headers.remove(header::HOST);
        strip_hop_by_hop(&mut headers);
        (method, uri, headers, body)
    }
}

enum Payload {
    Empty,
    Buffered(Bytes),
    Streamed(Incoming),
}

impl Payload {
    /// Buffers bodies up to `limit` bytes (known from Content-Length) so they can be replayed.
    async fn new(body: Incoming, limit: usize) -> Result<Payload, ProxyError> {
        if body.is_end_stream() {
            return Ok(Payload::Empty);
        }
        match body.size_hint().exact() {
            Some(n) if n <= limit as u64 => {
                let bytes = Limited::new(body, limit)
                    .collect()
                    .await
                    .map_err(|e| {
                        ProxyError::BadRequest(format!("request body could not be read: {e}"))
                    })?
                    .to_bytes();
                Ok(Payload::Buffered(bytes))
            }
            _ => Ok(Payload::Streamed(body)),
        }
    }

    /// The body for a send, keeping a copy for a replay when there is one.
    fn take(&mut self) -> Body {
        match std::mem::replace(self, Payload::Empty) {
            Payload::Empty => empty(),
            Payload::Buffered(b) => {
                *self = Payload::Buffered(b.clone());
                full(b)
            }
            Payload::Streamed(s) => incoming(s),
        }
    }

    fn replayable(&self) -> bool {
        !matches!(self, Payload::Streamed(_))
    }
}

/// Sends a matched request with its upstream's token.
pub async fn with_token(
    up: &Upstream,
    req: Outgoing,
    replay_limit: usize,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let (method, uri, mut headers, body) = req.into_clean_parts();
    let mut payload = Payload::new(body, replay_limit).await?;
    let token = up
        .tokens
        .get()
        .await
        .map_err(|e| ProxyError::TokenUnavailable(e.reason))?;
    let policy = up.config.existing_authorization;
    let replay = payload
        .replayable()
        .then(|| (method.clone(), uri.clone(), headers.clone()));
    let injected = inject(&mut headers, policy, token.header())?;
    let transport = Transport::of(up);
    let resp = send(
        transport,
        build(method, uri, headers, payload.take()),
        timeout,
    )
    .await?;
    // A 401 for the app's own credentials (`keep`) says nothing about our token.
    if !injected
        || resp.status() != StatusCode::UNAUTHORIZED
        || !bearer_invalid_token(resp.headers())
    {
        return Ok(resp);
    }
    tracing::info!(upstream = %up.name, "upstream refused the token (401); fetching a new one");
    let renewed = up.tokens.invalidate(&token);
    let Some((method, uri, mut headers)) = replay.filter(|_| renewed) else {
        return Ok(resp);
    };
    let token = up
        .tokens
        .get()
        .await
        .map_err(|e| ProxyError::TokenUnavailable(e.reason))?;
    inject(&mut headers, policy, token.header())?;
    send(
        transport,
        build(method, uri, headers, payload.take()),
        timeout,
    )
    .await
}

/// The target to send to an upstream's `url`: its base path, then the request's path and query.
pub fn target(pool: &OriginPool, uri: &Uri) -> Result<Uri, ProxyError> {
    pool.target(uri)
        .map_err(|_| ProxyError::BadRequest("request path cannot be forwarded".into()))
}

/// Records the request in the metrics and turns an error into its answer.
pub fn finish(
    unmatched: &RequestMetrics,
    up: Option<&Upstream>,
    started: Instant,
    result: Result<Response<Body>, ProxyError>,
) -> Response<Body> {
    let label = up.map_or(UNMATCHED, |u| &u.name);
    let resp = result.unwrap_or_else(|e| {
        let (status, _) = e.status_and_code();
        if status.is_server_error() {
            tracing::warn!(upstream = label, error = %e, "request failed");
        } else {
            tracing::debug!(upstream = label, error = %e, "request refused");
        }
        e.into_response(label)
    });
    let took = started.elapsed().as_secs_f64();
    let m = up.map_or(unmatched, |u| &u.metrics);
    m.duration.observe(took);
    m.count(resp.status());
    resp
}

/// Sends an unmatched request as it is, minus hop-by-hop headers: never a token.
pub async fn passthrough(
    client: &HttpClient,
    req: Outgoing,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let (method, uri, headers, body) = req.into_clean_parts();
    let req = build(method, uri, headers, incoming(body));
    send(Transport::Client(client), req, timeout).await
}

fn build(method: Method, uri: Uri, headers: HeaderMap, body: Body) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

/// How a request reaches its upstream.
#[derive(Clone, Copy)]
enum Transport<'a> {
    /// The upstream's own connections to its `url`.
    Pool(&'a Arc<OriginPool>),
    /// The shared pooled client, for wherever the request's URI points.
    Client(&'a HttpClient),
}

impl<'a> Transport<'a> {
    fn of(up: &'a Upstream) -> Transport<'a> {
        match &up.route {
            Route::Url(pool) => Transport::Pool(pool),
            Route::AsAsked(client) => Transport::Client(client),
        }
    }
}

async fn send(
    transport: Transport<'_>,
    req: Request<Body>,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let request = async {
        match transport {
            Transport::Pool(pool) => pool
                .send(req)
                .await
                .map(|r| r.map(|b| b.map_err(BoxError::from).boxed_unsync()))
                .map_err(|e| classify(&e, pool_error_is_user(&e))),
            Transport::Client(client) => client
                .request(req)
                .await
                .map(|r| r.map(incoming))
                .map_err(|e| classify(&e, legacy_error_is_user(&e))),
        }
    };
    let resp = tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| ProxyError::UpstreamTimeout(timeout))??;
    let (mut parts, body) = resp.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING)
        && parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        // Ambiguous framing (RFC 9112 §6.1): refuse rather than pick one reading of it.
        return Err(ProxyError::BadUpstreamResponse(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
}

/// A failure while streaming the app's request body (bad chunked framing, a client that went
/// away) is the app's fault, not the upstream's: 400, which also closes the connection.
fn classify(e: &dyn std::error::Error, user_body: bool) -> ProxyError {
    if user_body {
        ProxyError::BadRequest(format!(
            "request body could not be read: {}",
            error_chain(e)
        ))
    } else {
        ProxyError::UpstreamUnreachable(error_chain(e))
    }
}

fn legacy_error_is_user(e: &hyper_util::client::legacy::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_user)
}

fn pool_error_is_user(e: &PoolError) -> bool {
    matches!(e, PoolError::Http(h) if h.is_user())
}

/// A `Bearer` challenge that says the token is bad (or gives no reason). `insufficient_scope`
/// is a permissions problem a new token will not fix.
fn bearer_invalid_token(headers: &HeaderMap) -> bool {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .any(|v: &HeaderValue| {
            let v = v.to_str().unwrap_or("").trim_start();
            let is_bearer = v.len() >= 6 && v[..6].eq_ignore_ascii_case("bearer");
            is_bearer && (!v.contains("error=") || v.contains("invalid_token"))
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_invalid_token_challenges_cause_a_refresh() {
        let h = |v: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(WWW_AUTHENTICATE, HeaderValue::from_static(v));
            m
        };
        assert!(bearer_invalid_token(&h("Bearer")));
        assert!(bearer_invalid_token(&h(
            r#"Bearer realm="x", error="invalid_token""#
        )));
        assert!(bearer_invalid_token(&h("bearer realm=\"x\"")));
        assert!(!bearer_invalid_token(&h(
            r#"Bearer error="insufficient_scope""#
        )));
        assert!(!bearer_invalid_token(&h("Basic realm=\"x\"")));
        assert!(!bearer_invalid_token(&HeaderMap::new()));
    }
}
