//! The answers tokenproxy gives itself, and the one place errors become status codes.
//!
//! Every error on the request path is a [`ProxyError`]; [`ProxyError::into_response`] maps it
//! to a status and a JSON body `{"error", "upstream", "message"}`. Messages describe what went
//! wrong in words a user can act on and never contain a token or a secret.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::{full, Body};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no valid token could be had: {0}")]
    TokenUnavailable(String),
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream answered with a malformed response: {0}")]
    BadUpstreamResponse(&'static str),
    #[error("upstream did not answer within {}s", .0.as_secs())]
    UpstreamTimeout(Duration),
    #[error("no upstream matches {0} and unmatched requests are denied (proxy.unmatched: deny)")]
    UnmatchedDenied(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} gets tokens, and a CONNECT tunnel cannot carry one: call it with an http:// URL through the proxy and tokenproxy will speak TLS to the upstream")]
    TunnelRefused(String),
    #[error(
        "refusing to send a token over plain http to {0}; use https or set allow_plaintext: true"
    )]
    PlaintextRefused(String),
}

impl ProxyError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::TokenUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable")
            }
            ProxyError::UpstreamUnreachable(_) => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            ProxyError::BadUpstreamResponse(_) => {
                (StatusCode::BAD_GATEWAY, "bad_upstream_response")
            }
            ProxyError::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ProxyError::UnmatchedDenied(_) => (StatusCode::FORBIDDEN, "unmatched_denied"),
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ProxyError::TunnelRefused(_) => (StatusCode::FORBIDDEN, "tunnel_refused"),
            ProxyError::PlaintextRefused(_) => (StatusCode::FORBIDDEN, "plaintext_refused"),
        }
    }

    /// The answer the app gets. `upstream` is a config name or `unmatched`.
    pub fn into_response(self, upstream: &str) -> Response<Body> {
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
        if status == StatusCode::BAD_REQUEST {
            // After a malformed request the connection's framing cannot be trusted.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
