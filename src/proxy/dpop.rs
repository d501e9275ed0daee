//! DPoP on the request path (RFC 9449 §7): a new proof with every request that carries a
//! DPoP-bound token, and the nonce each upstream asks for.
//!
//! The proof names the method and the URL the request really goes to (the upstream's `url`
//! and the path, for a reverse or matched request; the target, for a url-less upstream),
//! without query or fragment, and carries the token's `ath`. An upstream may send a
//! `DPoP-Nonce` on any answer; the newest is used from then on. A `401` whose `DPoP`
//! challenge says `use_dpop_nonce` is answered by sending the request once more with the
//! nonce, when its body was kept (the same rule as the 401 replay).

use http::header::{HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode, Uri};

use super::error::ProxyError;
use super::send::{Head, Transport};
use crate::body::Body;
use crate::snapshot::Upstream;
use crate::token::Token;

const DPOP: HeaderName = HeaderName::from_static("dpop");
const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Adds a new proof for `head` when `token` is DPoP-bound. Returns the origin the request
/// goes to (whose nonce was used), or `None` for a bearer token.
pub fn prove(
    up: &Upstream,
    token: &Token,
    head: &mut Head,
    transport: Transport<'_>,
) -> Result<Option<String>, ProxyError> {
    let (Some(bound), Some(dpop)) = (&token.dpop, &up.dpop) else {
        return Ok(None);
    };
    let (origin, path) = target(transport, head.uri());
    let htu = format!("{origin}{path}");
    let nonce = dpop.nonces.get(&origin);
    let proof = bound
        .key
        .proof(
            head.method().as_str(),
            &htu,
            Some(&bound.ath),
            nonce.as_deref(),
        )
        .map_err(|e| ProxyError::TokenUnavailable(format!("cannot sign a DPoP proof: {e}")))?;
    let value = HeaderValue::try_from(proof)
        .map_err(|_| ProxyError::TokenUnavailable("unencodable DPoP proof".into()))?;
    head.headers_mut().insert(DPOP, value);
    dpop.proofs.inc();
    Ok(Some(origin))
}

/// Keeps a nonce the upstream at `origin` sent; true when `resp` is a 401 asking for one.
pub fn nonce_asked(up: &Upstream, origin: &str, resp: &Response<Body>) -> bool {
    let Some(dpop) = &up.dpop else {
        return false;
    };
    let Some(nonce) = resp.headers().get(DPOP_NONCE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    dpop.nonces.set(origin, nonce);
    resp.status() == StatusCode::UNAUTHORIZED
        && resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| has_scheme(v, "dpop") && v.contains("use_dpop_nonce"))
}

/// Counts a request sent once more with the nonce its upstream asked for.
pub fn count_retry(up: &Upstream) {
    if let Some(dpop) = &up.dpop {
        dpop.nonce_retries.inc();
    }
}

/// Whether a challenge is of `scheme` (case-insensitive, RFC 9110 §11.1).
pub fn has_scheme(challenge: &str, scheme: &str) -> bool {
    let v = challenge.trim_start();
    let (Some(head), Some(rest)) = (v.get(..scheme.len()), v.get(scheme.len()..)) else {
        return false;
    };
    head.eq_ignore_ascii_case(scheme) && rest.chars().next().is_none_or(|c| c == ' ' || c == ',')
}

/// The origin (`scheme://authority`) and path a request to `uri` really goes to.
fn target(transport: Transport<'_>, uri: &Uri) -> (String, String) {
    let path = uri.path().to_owned();
    match transport {
        Transport::Pool(pool) => (pool.origin_str(), path),
        Transport::Client(_) => {
            let scheme = uri.scheme_str().unwrap_or("http");
            let authority = uri.authority().map_or("", |a| a.as_str());
            (format!("{scheme}://{authority}"), path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_schemes_are_matched_whole_and_case_insensitively() {
        assert!(has_scheme(r#"DPoP error="use_dpop_nonce""#, "dpop"));
        assert!(has_scheme("dpop", "dpop"));
        assert!(has_scheme(r#"Bearer realm="x""#, "bearer"));
        assert!(!has_scheme(r#"DPoPx error="x""#, "dpop"));
        assert!(!has_scheme("Basic", "dpop"));
        assert!(!has_scheme("dé", "dpop"), "no panic inside a character");
    }
}
