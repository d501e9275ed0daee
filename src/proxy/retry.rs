//! What to do after one send of a matched request: answer, or send once more, and why.
//!
//! [`next_step`] looks at what a send came to and returns a [`Step`]: the answer for the app,
//! or [`Step::Again`] with the head to send and the [`Retry`] that justifies it. Each kind of
//! retry is spent at most once per request ([`Spent`]), and a retry needs the request head
//! kept before the send ([`Spare`]), which exists only while the body could be sent again. A
//! new retry case is one more `Retry` variant and one more arm here.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Method, Response, StatusCode, Uri};

use super::dpop;
use super::error::ProxyError;
use super::grpc;
use super::send::Head;
use crate::body::Body;
use crate::snapshot::Upstream;
use crate::token::Token;
use crate::upstream::Wire;

/// Why a request goes to the upstream once more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// An HTTP/2 upstream refused the stream unprocessed (`REFUSED_STREAM`, or a graceful
    /// `GOAWAY` left it out): the same request, on another stream.
    RefusedStream,
    /// A DPoP upstream asked for the nonce it has just sent: a new proof with it.
    DpopNonce,
    /// The upstream refused the token (401 with a challenge that blames it): a new token.
    NewToken,
}

impl Retry {
    /// `tokenproxy.retry_reason` on the span of the attempt that follows.
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::RefusedStream => "refused_stream",
            Retry::DpopNonce => "dpop_nonce",
            Retry::NewToken => "new_token",
        }
    }
}

/// What one send came to.
pub enum Step {
    /// The answer the app gets.
    Done(Response<Body>),
    /// Send `Head` again, for this reason.
    Again(Retry, Head),
}

/// The retries a request has used; each kind at most once.
#[derive(Debug, Default)]
pub struct Spent {
    refused_stream: bool,
    dpop_nonce: bool,
    new_token: bool,
}

impl Spent {
    fn allows(&self, r: Retry) -> bool {
        !match r {
            Retry::RefusedStream => self.refused_stream,
            Retry::DpopNonce => self.dpop_nonce,
            Retry::NewToken => self.new_token,
        }
    }

    pub fn spend(&mut self, r: Retry) {
        match r {
            Retry::RefusedStream => self.refused_stream = true,
            Retry::DpopNonce => self.dpop_nonce = true,
            Retry::NewToken => self.new_token = true,
        }
    }

    /// After a replay with a new token the request is not sent again for any reason, so no
    /// head needs keeping.
    pub fn may_retry(&self) -> bool {
        !self.new_token
    }
}

/// How a request was sent: its token, whether the token was injected (not under
/// `existing_authorization: keep` with the app's own), and the origin of a DPoP proof.
pub struct Sent<'a> {
    pub token: &'a Arc<Token>,
    pub injected: bool,
    pub proved: Option<String>,
}

/// The one decision after a send. Inlined into the request's future: the answer is moved
/// through it on every request, and a call would copy it twice (callgrind: +1%).
#[inline(always)]
pub fn next_step(
    up: &Upstream,
    wire: Wire,
    result: Result<Response<Body>, ProxyError>,
    sent: Sent<'_>,
    spare: Option<Spare>,
    spent: &Spent,
) -> Result<Step, ProxyError> {
    let mut spare = spare;
    let resp = match result {
        Err(ProxyError::UpstreamRefusedStream(why)) => {
            let Some(s) = spare.filter(|_| spent.allows(Retry::RefusedStream)) else {
                return Err(ProxyError::UpstreamRefusedStream(why));
            };
            tracing::debug!(upstream = %up.name, reason = %why,
                "upstream refused the stream unprocessed; sending it again");
            return Ok(Step::Again(Retry::RefusedStream, s.into_head()));
        }
        other => other?,
    };
    // `nonce_asked` also keeps the nonce the upstream sent, whatever happens next.
    let proved = sent.proved.as_deref();
    if proved.is_some_and(|origin| dpop::nonce_asked(up, origin, &resp))
        && spent.allows(Retry::DpopNonce)
    {
        if let Some(s) = spare.take() {
            dpop::count_retry(up);
            return Ok(Step::Again(Retry::DpopNonce, s.into_head()));
        }
    }
    if wire == Wire::Http2 && sent.injected {
        return Ok(Step::Done(grpc::watch(resp, up, sent.token.clone())));
    }
    // A 401 for the app's own credentials (`keep`) says nothing about our token.
    let scheme = up.config.client.token_type.scheme();
    if !spent.allows(Retry::NewToken) || !sent.injected || !token_refused(&resp, scheme) {
        return Ok(Step::Done(resp));
    }
    tracing::info!(upstream = %up.name, "upstream refused the token (401); fetching a new one");
    let renewed = up.tokens.invalidate(sent.token, &up.name);
    Ok(match spare.filter(|_| renewed) {
        Some(s) => Step::Again(Retry::NewToken, s.into_head()),
        None => Step::Done(resp),
    })
}

/// A request head kept for a replay. Every replayable request pays for one, and almost none
/// is used, so it is a single allocation of name/value pairs (a `HeaderMap` clone is two),
/// made back into a map only when a replay really happens.
pub struct Spare {
    method: Method,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Spare {
    pub fn of(head: &Head) -> Spare {
        let headers = head
            .headers()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Spare {
            method: head.method().clone(),
            uri: head.uri().clone(),
            headers,
        }
    }

    fn into_head(self) -> Head {
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (k, v) in self.headers {
            headers.append(k, v);
        }
        Head::of(self.method, self.uri, headers)
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

    #[test]
    fn each_retry_is_spent_once_and_a_new_token_ends_all_retries() {
        let mut spent = Spent::default();
        for r in [Retry::RefusedStream, Retry::DpopNonce, Retry::NewToken] {
            assert!(spent.allows(r));
        }
        spent.spend(Retry::RefusedStream);
        assert!(!spent.allows(Retry::RefusedStream));
        assert!(spent.allows(Retry::DpopNonce) && spent.may_retry());
        spent.spend(Retry::NewToken);
        assert!(!spent.may_retry());
    }
}
