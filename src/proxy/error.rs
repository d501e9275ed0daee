//! The answers tokenproxy gives itself, and the one place errors become status codes.
//!
//! Every refusal or failure on the request path is a [`ProxyError`], one variant per cause;
//! [`ProxyError::status_and_code`] is the single table from cause to status and error code,
//! and [`ProxyError::into_response`] renders the JSON body `{"error", "upstream", "message"}`.
//! Messages describe what went wrong in words a user can act on and never contain a token or
//! a secret.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{full, Body};
use crate::host::HostError;
use crate::upstream::RouteError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // The upstream side.
    #[error("no valid token could be had: {0}")]
    TokenUnavailable(String),
    #[error("no valid token could be had, for want of a usable assertion or subject token: {0}")]
    AssertionUnavailable(String),
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream refused the request unprocessed (HTTP/2 REFUSED_STREAM or GOAWAY): {0}")]
    UpstreamRefusedStream(String),
    #[error("upstream {0} is no longer configured")]
    UpstreamRemoved(String),
    #[error("upstream {0} has no url")]
    NoUrl(String),
    #[error("upstream answered with a malformed response: {0}")]
    BadUpstreamResponse(&'static str),
    #[error("upstream did not answer within {}s", .0.as_secs())]
    UpstreamTimeout(Duration),
    /// The parent proxy (`proxy.upstream_proxy`) answered 407 or refused the CONNECT.
    #[error("{0}")]
    UpstreamProxyRefused(String),

    // Refusals by policy.
    #[error("no upstream matches {0} and unmatched requests are denied (proxy.unmatched: deny)")]
    UnmatchedDenied(String),
    #[error(
        "the upstream is at its connection limit and its queue is full ({0}); try again shortly"
    )]
    UpstreamOverloaded(String),
    #[error("{0}: the destination is in proxy.deny_destinations")]
    DestinationDenied(String),
    #[error("{0} gets tokens, and a CONNECT tunnel cannot carry one: call it with an http:// URL through the proxy and tokenproxy will speak TLS to the upstream")]
    TunnelRefused(String),
    #[error(
        "refusing to send a token over plain http to {0}; use https or set allow_plaintext: true"
    )]
    PlaintextRefused(String),
    #[error("{host}:{port} is tokenproxy itself: the request would loop back into the proxy")]
    Loop { host: String, port: u16 },
    #[error(
        "this connection was opened (CONNECT) to {0}; a request on it may not name another host"
    )]
    Misdirected(String),

    // Malformed or unacceptable requests (400, and the connection is closed).
    #[error("request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error("request path cannot be forwarded")]
    PathNotForwardable,
    #[error("{0}")]
    BadPath(#[from] RouteError),
    #[error("scheme {0:?} is not proxied")]
    SchemeNotProxied(String),
    #[error("the forward listener takes absolute-form requests (http://host/path): use it as HTTP_PROXY, or give the upstream a reverse listener")]
    NotAbsoluteForm,
    #[error("request target has no host")]
    TargetWithoutHost,
    #[error("bad request target: {0}")]
    BadTarget(HostError),
    #[error("CONNECT needs host:port")]
    ConnectWithoutAuthority,
    #[error("bad CONNECT target: {0}")]
    BadConnectTarget(HostError),
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("unsupported Transfer-Encoding: only a single chunked coding is accepted")]
    UnsupportedTransferEncoding,
    #[error("more than one Authorization header")]
    DuplicateAuthorization,
    #[error("this upstream's token is added by tokenproxy; the request must not carry its own Authorization header (existing_authorization: reject)")]
    AuthorizationRejected,
}

impl ProxyError {
    /// The one mapping from cause to status and the `error` code of the JSON body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use ProxyError::*;
        match self {
            TokenUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable"),
            AssertionUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "assertion_unavailable"),
            UpstreamOverloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "upstream_overloaded"),
            UpstreamUnreachable(_) | UpstreamRefusedStream(_) | UpstreamRemoved(_) | NoUrl(_) => {
                (StatusCode::BAD_GATEWAY, "upstream_unreachable")
            }
            BadUpstreamResponse(_) => (StatusCode::BAD_GATEWAY, "bad_upstream_response"),
            UpstreamProxyRefused(_) => (StatusCode::BAD_GATEWAY, "upstream_proxy_refused"),
            UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            UnmatchedDenied(_) => (StatusCode::FORBIDDEN, "unmatched_denied"),
            TunnelRefused(_) => (StatusCode::FORBIDDEN, "tunnel_refused"),
            DestinationDenied(_) => (StatusCode::FORBIDDEN, "destination_denied"),
            PlaintextRefused(_) => (StatusCode::FORBIDDEN, "plaintext_refused"),
            Misdirected(_) => (StatusCode::MISDIRECTED_REQUEST, "misdirected_request"),
            Loop { .. }
            | BodyUnreadable(_)
            | PathNotForwardable
            | BadPath(_)
            | SchemeNotProxied(_)
            | NotAbsoluteForm
            | TargetWithoutHost
            | BadTarget(_)
            | ConnectWithoutAuthority
            | BadConnectTarget(_)
            | DuplicateHost
            | UnsupportedTransferEncoding
            | DuplicateAuthorization
            | AuthorizationRejected => (StatusCode::BAD_REQUEST, "bad_request"),
        }
    }

    /// A request that could not have its token.
    pub fn no_token(e: crate::token::Unavailable) -> ProxyError {
        if e.assertion {
            ProxyError::AssertionUnavailable(e.reason)
        } else {
            ProxyError::TokenUnavailable(e.reason)
        }
    }

    /// The answer the app gets. `upstream` is a config name or `unmatched`; `http2` says the
    /// request came over HTTP/2, where a stream, not the connection, ends with the answer.
    pub fn into_response(self, upstream: &str, http2: bool) -> Response<Body> {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({
            "error": code,
            "upstream": upstream,
            "message": self.to_string(),
        });
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if code == "upstream_overloaded" {
            // The queue drains in about one request time; a second is a polite first retry.
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        let closes = status == StatusCode::BAD_REQUEST || status == StatusCode::MISDIRECTED_REQUEST;
        if closes && !http2 {
            // After a malformed request the connection's framing cannot be trusted; after a
            // misdirected one, neither can the client's idea of where it is connected.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
