//! What a token request puts on the wire besides credentials: the form, HTTP Basic
//! encoding, the DPoP header names, and reading `Retry-After`.

use std::time::{Duration, SystemTime};

use base64::Engine;
use http::header::RETRY_AFTER;
use http::HeaderMap;

use crate::config::{Grant, TokenRequest};

/// The proof header (RFC 9449 §4.1), and the nonce a server hands out (§8).
pub const DPOP: &str = "dpop";
pub const DPOP_NONCE: &str = "dpop-nonce";

/// `client_assertion_type` for a JWT assertion (RFC 7523 §2.2).
pub const ASSERTION_TYPE: &str = crate::config::token_types::CLIENT_ASSERTION;

/// `grant_type`, `scope` (unless the scopes go in the grant's assertion), `audience`,
/// `resource` and extra params, form-encoded. RFC 8693 §2.1 names `audience`, `resource`
/// and `scope` alike, so a token exchange carries them the same way.
pub fn form_body(grant: Grant, request: &TokenRequest, scope_in_form: bool) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", grant.grant_type());
    if scope_in_form && !request.scopes.is_empty() {
        form.append_pair("scope", &request.scopes.join(" "));
    }
    if let Some(aud) = &request.audience {
        form.append_pair("audience", aud);
    }
    for r in &request.resource {
        form.append_pair("resource", r);
    }
    for (k, v) in &request.params {
        form.append_pair(k, v);
    }
    form.finish()
}

/// RFC 6749 §2.3.1: id and secret are form-urlencoded before being joined and base64'd.
pub fn basic_auth(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let joined = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(joined)
    )
}

/// `Retry-After` as delay-seconds or an HTTP-date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let got = basic_auth("a b:c", "p@ss:w+rd/=%&é");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(got.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            "a+b%3Ac:p%40ss%3Aw%2Brd%2F%3D%25%26%C3%A9"
        );
        assert_eq!(basic_auth("id", "s"), "Basic aWQ6cw==");
    }

    #[test]
    fn form_has_scope_audience_and_repeated_resource() {
        let req = TokenRequest {
            scopes: vec!["api:read".into(), "api:write".into()],
            audience: Some("https://api".into()),
            resource: vec!["https://a".into(), "https://b".into()],
            params: [("tenant".to_string(), "acme".to_string())].into(),
        };
        assert_eq!(
            form_body(Grant::ClientCredentials, &req, true),
            "grant_type=client_credentials&scope=api%3Aread+api%3Awrite&audience=https%3A%2F%2Fapi&resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb&tenant=acme"
        );
        assert_eq!(
            form_body(Grant::JwtBearer, &req, false),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&audience=https%3A%2F%2Fapi&resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb&tenant=acme"
        );
        assert!(form_body(Grant::TokenExchange, &req, true)
            .starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&scope=api%3Aread+api%3Awrite&audience="));
    }

    #[test]
    fn retry_after_both_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
