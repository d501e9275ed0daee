//! A matched request: wait for the token, inject it, send; replay once after a 401.
//!
//! A small body (up to `tokens.replay_body_limit`, known from Content-Length) is buffered so
//! the request can be replayed; a larger or unsized one streams. A kept request is also sent
//! once more when an HTTP/2 upstream refuses its stream unprocessed (`REFUSED_STREAM`, or left
//! out by a graceful `GOAWAY`). If the upstream answers 401
//! with a Bearer challenge that blames the token, the token is dropped (under the token
//! source's storm guard) and, when the body was kept, the request goes once more with the new
//! token; otherwise the 401 goes back and the next request gets the new one.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use tokio::time::Instant;

use super::answer::ProxyError;
use super::dpop;
use super::grpc;
use super::headers::inject;
use super::send::{send, Head, Transport};
use super::trail::Trail;
use super::upgrade;
use crate::body::{empty, full, Body};
use crate::config::Config;
use crate::snapshot::Upstream;
use crate::upstream::Wire;

/// Sends a matched request to `uri` with its upstream's token, replaying once if the
/// upstream refuses the token and the request can be sent again. `wire` says whether it is a
/// WebSocket handshake (HTTP/1.1) or a gRPC call (HTTP/2).
pub async fn with_token(
    up: &Upstream,
    req: Request<Incoming>,
    uri: Uri,
    config: &Config,
    wire: Wire,
    trail: &mut Trail,
) -> Result<Response<Body>, ProxyError> {
    let (parts, body) = req.into_parts();
    let mut head = Head::new(parts.method, uri, parts.headers);
    if wire == Wire::Http1 {
        upgrade::restore(&mut head.headers);
    }
    // A gRPC call is never replayed (see `grpc`), so its body streams from the first byte.
    let keep = match wire {
        Wire::Http2 => 0,
        _ => config.tokens.replay_body_limit,
    };
    let mut payload = Payload::new(body, keep, trail).await?;
    let transport = Transport::of(up);
    let timeout = config.proxy.request_timeout;
    let mut replaying = false;
    let mut resent = false;
    let mut nonce_sent = false;
    loop {
        let waiting = trail.is_recording().then(Instant::now);
        let token = up.tokens.get().await;
        if let Some(waiting) = waiting {
            trail.waited(waiting.elapsed());
        }
        let token = token.map_err(ProxyError::no_token)?;
        // What a replay needs, kept only while one is still possible.
        let spare = (!replaying && payload.replayable()).then(|| Spare::of(&head));
        let injected = inject(
            &mut head.headers,
            up.config.existing_authorization,
            token.header(),
        )?;
        let proved = match injected {
            true => dpop::prove(up, &token, &mut head, transport)?,
            false => None,
        };
        let sent = send(
            transport,
            head.with_body(payload.take()),
            wire,
            timeout,
            trail,
        )
        .await;
        let (resp, spare) = match (sent, spare) {
            // Refused unprocessed: once more, on another stream, if the body was kept.
            (Err(ProxyError::UpstreamRefusedStream(why)), Some(spare)) if !resent => {
                tracing::debug!(upstream = %up.name, reason = %why,
                    "upstream refused the stream unprocessed; sending it again");
                (head, resent) = (spare.into_head(), true);
                continue;
            }
            (sent, spare) => (sent?, spare),
        };
        // The upstream wants a DPoP nonce it has just sent: once more, with it.
        if let Some(origin) = &proved {
            if dpop::nonce_asked(up, origin, &resp) && !nonce_sent {
                if let Some(spare) = spare {
                    (head, nonce_sent) = (spare.into_head(), true);
                    dpop::count_retry(up);
                    continue;
                }
            }
        }
        if wire == Wire::Http2 && injected {
            return Ok(grpc::watch(resp, up, token));
        }
        // A 401 for the app's own credentials (`keep`) says nothing about our token.
        let scheme = up.config.client.token_type.scheme();
        if replaying || !injected || !token_refused(&resp, scheme) {
            return Ok(resp);
        }
        tracing::info!(upstream = %up.name, "upstream refused the token (401); fetching a new one");
        let renewed = up.tokens.invalidate(&token, &up.name);
        match spare.filter(|_| renewed) {
            Some(spare) => {
                (head, replaying) = (spare.into_head(), true);
                trail.replayed = true;
            }
            None => return Ok(resp),
        }
    }
}

/// A request head kept for a replay. Every replayable request pays for one, and almost none
/// is used, so it is a single allocation of name/value pairs (a `HeaderMap` clone is two),
/// made back into a map only when a replay really happens.
struct Spare {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Spare {
    fn of(head: &Head) -> Spare {
        let headers = head
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Spare {
            method: head.method.clone(),
            uri: head.uri.clone(),
            headers,
        }
    }

    fn into_head(self) -> Head {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (k, v) in self.headers {
            headers.append(k, v);
        }
        Head {
            method: self.method,
            uri: self.uri,
            headers,
        }
    }
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

/// A 401 whose challenge (of the token's `scheme`, `bearer` or `dpop`) blames our token.
fn token_refused(resp: &Response<Body>, scheme: &str) -> bool {
    resp.status() == StatusCode::UNAUTHORIZED && invalid_token(resp.headers(), scheme)
}

/// A challenge of `scheme` that says the token is bad (or gives no reason).
/// `insufficient_scope` is a permissions problem a new token will not fix, and
/// `use_dpop_nonce` asks for a nonce, not a token.
fn invalid_token(headers: &HeaderMap, scheme: &str) -> bool {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .any(|v: &HeaderValue| {
            let v = v.to_str().unwrap_or("");
            dpop::has_scheme(v, scheme) && (!v.contains("error=") || v.contains("invalid_token"))
        })
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
        let bearer = |m: &HeaderMap| invalid_token(m, "bearer");
        assert!(bearer(&h("Bearer")));
        assert!(bearer(&h(r#"Bearer realm="x", error="invalid_token""#)));
        assert!(bearer(&h("bearer realm=\"x\"")));
        assert!(!bearer(&h(r#"Bearer error="insufficient_scope""#)));
        assert!(!bearer(&h("Basic realm=\"x\"")));
        assert!(!bearer(&HeaderMap::new()));
        let dpop = |m: &HeaderMap| invalid_token(m, "dpop");
        assert!(dpop(&h(r#"DPoP error="invalid_token", algs="ES256""#)));
        assert!(
            !dpop(&h(r#"DPoP error="use_dpop_nonce""#)),
            "a nonce, not a token"
        );
        assert!(
            !dpop(&h(r#"Bearer error="invalid_token""#)),
            "another scheme"
        );
    }
}
