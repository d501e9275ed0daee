//! gRPC on the request path: tokenproxy's own errors as gRPC status, and `UNAUTHENTICATED`
//! from the upstream treated like a 401.
//!
//! A gRPC client cannot read an HTTP error status or a JSON body: it wants HTTP 200 with
//! `grpc-status` and `grpc-message` (a "trailers-only" response). The status follows the
//! error's class: 14 `UNAVAILABLE` for `token_unavailable` and `upstream_*` (worth a retry),
//! 7 `PERMISSION_DENIED` for policy refusals, 13 `INTERNAL` for a malformed request (gRPC's own
//! mapping of HTTP 400). The message starts with tokenproxy's error code.
//!
//! An upstream's `grpc-status: 16` (`UNAUTHENTICATED`), in the headers of a trailers-only
//! answer or in the trailers, drops the token under the token source's storm guard, as a 401
//! does. The call itself is not replayed: by the time trailers arrive the response has
//! streamed to the app, and a trailers-only answer to a streaming call cannot be told from
//! one to a unary call. The app's gRPC retry (or its next call) gets the new token.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::error::ProxyError;
use crate::body::{empty, Body, BoxError};
use crate::snapshot::Upstream;
use crate::token::Token;
use crate::token::TokenSource;

/// The gRPC status code for one of tokenproxy's own errors.
pub fn status_for(e: &ProxyError) -> u8 {
    let (status, _) = e.status_and_code();
    match status {
        StatusCode::FORBIDDEN | StatusCode::MISDIRECTED_REQUEST => 7, // PERMISSION_DENIED
        StatusCode::BAD_REQUEST => 13,                                // INTERNAL
        _ => 14,                                                      // UNAVAILABLE
    }
}

/// The trailers-only answer a gRPC client gets for `e`.
pub fn error_response(e: &ProxyError) -> Response<Body> {
    let (_, code) = e.status_and_code();
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(u16::from(status_for(e))));
    let message = percent_encode(&format!("{code}: {e}"));
    if let Ok(v) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", v);
    }
    resp
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unauthenticated(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"16")
}

/// Watches a gRPC response for `UNAUTHENTICATED` and drops `token` when it comes.
pub fn watch(resp: Response<Body>, up: &Upstream, token: Arc<Token>) -> Response<Body> {
    if unauthenticated(resp.headers()) {
        refused(&up.tokens, &token, &up.name);
        return resp;
    }
    let (tokens, name) = (up.tokens.clone(), up.name.clone());
    resp.map(|body| {
        Watched {
            body,
            token: Some((tokens, token, name)),
        }
        .boxed_unsync()
    })
}

fn refused(tokens: &TokenSource, token: &Arc<Token>, upstream: &str) {
    tracing::info!(
        upstream,
        "upstream answered gRPC UNAUTHENTICATED; fetching a new token"
    );
    tokens.invalidate(token, upstream);
}

struct Watched {
    body: Body,
    token: Option<(Arc<TokenSource>, Arc<Token>, Arc<str>)>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(trailers) = f.trailers_ref() {
                if unauthenticated(trailers) {
                    if let Some((tokens, token, upstream)) = self.token.take() {
                        refused(&tokens, &token, &upstream);
                    }
                }
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }

    #[test]
    fn own_errors_map_to_grpc_codes() {
        let unavailable = ProxyError::TokenUnavailable("idp down".into());
        assert_eq!(status_for(&unavailable), 14);
        assert_eq!(status_for(&ProxyError::UnmatchedDenied("x".into())), 7);
        assert_eq!(status_for(&ProxyError::DuplicateHost), 13);
        let resp = error_response(&unavailable);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/grpc");
        let msg = resp.headers()["grpc-message"].to_str().unwrap();
        assert!(msg.starts_with("token_unavailable: "), "{msg}");
    }
}
