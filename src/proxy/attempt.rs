//! A matched request: wait for the token, inject it, send; then `retry` decides whether it
//! goes once more (after a 401, a refused stream, or a DPoP nonce request).
//!
//! A small body (up to `tokens.replay_body_limit`, known from Content-Length) is buffered so
//! the request can be replayed; a larger or unsized one streams. A kept request is also sent
//! once more when an HTTP/2 upstream refuses its stream unprocessed (`REFUSED_STREAM`, or left
//! out by a graceful `GOAWAY`). If the upstream answers 401
//! with a Bearer challenge that blames the token, the token is dropped (under the token
//! source's storm guard) and, when the body was kept, the request goes once more with the new
//! token; otherwise the 401 goes back and the next request gets the new one.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use super::dpop;
use super::error::ProxyError;
use super::facts::Facts;
use super::headers::inject;
use super::retry::{next_step, Retry, Sent, Spare, Spent, Step};
use super::send::{send, Head, Transport};
use super::trail::Trail;
use super::upgrade;
use crate::body::{empty, full, Body};
use crate::config::Config;
use crate::snapshot::Upstream;
use crate::token::Token;
use crate::upstream::Wire;

/// Sends a matched request (with the [`Facts`] read from its headers) to `uri` with its
/// upstream's token, replaying once if the upstream refuses the token and the request can be
/// sent again. `wire` says whether it is a WebSocket handshake (HTTP/1.1) or a gRPC call
/// (HTTP/2).
pub async fn with_token(
    up: &Upstream,
    (req, facts): (Request<Incoming>, &Facts),
    uri: Uri,
    config: &Config,
    wire: Wire,
    trail: &mut Trail,
) -> Result<Response<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    let mut head = Head::new(parts, uri, facts);
    if wire == Wire::Http1 {
        upgrade::restore(head.headers_mut());
    }
    // A gRPC call is never replayed (see `grpc`), so its body streams from the first byte.
    let keep = match wire {
        Wire::Http2 => 0,
        _ => config.tokens.replay_body_limit,
    };
    let mut payload = Payload::new(body, keep, trail).await?;
    let transport = Transport::of(up);
    let timeout = config.proxy.request_timeout;
    let mut spent = Spent::default();
    loop {
        let token = wait_for_token(up, trail).await?;
        // What a retry needs, kept only while one is still possible.
        let spare = (spent.may_retry() && payload.replayable()).then(|| Spare::of(&head));
        let injected = inject(
            head.headers_mut(),
            up.config.existing_authorization,
            token.header(),
        )?;
        let proved = match injected {
            true => dpop::prove(up, &token, &mut head, transport)?,
            false => None,
        };
        let request = head.with_body(payload.take());
        let result = send(transport, request, wire, timeout, trail).await;
        let sent = Sent {
            token: &token,
            injected,
            proved,
        };
        match next_step(up, wire, result, sent, spare, &spent)? {
            Step::Done(resp) => return Ok(resp),
            Step::Again(why, again) => {
                spent.spend(why);
                trail.replayed |= why == Retry::NewToken;
                trail.retry = Some(why.as_str());
                head = again;
            }
        }
    }
}

/// The upstream's token, the wait timed when the access log records it and a span when the
/// request is traced.
async fn wait_for_token(up: &Upstream, trail: &mut Trail) -> Result<Arc<Token>, ProxyError> {
    let waiting = trail.is_recording().then(Instant::now);
    let span = trail.trace.as_ref().and_then(|t| t.token_wait());
    let token = up.tokens.get().await;
    if let Some(waiting) = waiting {
        trail.waited(waiting.elapsed());
    }
    let token = token.map_err(ProxyError::no_token);
    if let Some(span) = span {
        match &token {
            Ok(t) => span.got(t.fetched_by.as_ref()),
            Err(e) => span.failed(e.status_and_code().1),
        }
    }
    token
}

enum Payload {
    Empty,
    Buffered(Bytes),
    Streamed(Body),
}

impl Payload {
    /// Buffers bodies up to `limit` bytes (known from Content-Length) so they can be replayed.
    async fn new(body: Incoming, limit: usize, trail: &Trail) -> Result<Payload, ProxyError> {
        if body.is_end_stream() {
            return Ok(Payload::Empty);
        }
        match body.size_hint().exact() {
            Some(n) if n <= limit as u64 => {
                let bytes = Limited::new(body, limit)
                    .collect()
                    .await
                    .map_err(|e| ProxyError::BodyUnreadable(e.to_string()))?
                    .to_bytes();
                trail.buffered(bytes.len());
                Ok(Payload::Buffered(bytes))
            }
            _ => Ok(Payload::Streamed(trail.request_body(body))),
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
            Payload::Streamed(s) => s,
        }
    }

    fn replayable(&self) -> bool {
        !matches!(self, Payload::Streamed(_))
    }
}
