//! The demo's peers: a tiny authorization server that checks the demo client's Basic
//! credentials and issues random tokens (DPoP-bound when asked), and an echo upstream that
//! answers with the `Authorization` header (and a DPoP proof's claims) it received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{full, Body};

pub(super) const CLIENT_ID: &str = "demo-client";
pub(super) const CLIENT_SECRET: &str = "demo-secret-not-for-production";
pub(super) const API_HOST: &str = "api.demo.internal";
/// An upstream whose client asks for DPoP-bound tokens.
pub(super) const BOUND_HOST: &str = "bound.demo.internal";

/// The demo authorization server: checks Basic credentials, issues a random token.
pub(super) async fn token_endpoint(
    issued: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Response<Body> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == expected.as_str());
    if req.method() != Method::POST || req.uri().path() != "/token" {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into());
    }
    if !authorized {
        return reply(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#.into(),
        );
    }
    let n = issued.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("demo-{:016x}{n:04}", rand::random::<u64>());
    // A request with a DPoP proof gets a token bound to its key (the demo trusts the proof).
    let kind = match req.headers().contains_key("dpop") {
        true => "DPoP",
        false => "Bearer",
    };
    reply(
        StatusCode::OK,
        format!(
            r#"{{"access_token":"{token}","token_type":"{kind}","expires_in":300,"scope":"api:read api:write"}}"#
        ),
    )
}

pub(super) fn echo_handler(req: Request<Incoming>) -> Response<Body> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)");
    let mut body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().to_string(),
        "host": req.headers().get(header::HOST).and_then(|v| v.to_str().ok()),
        "authorization": auth,
    });
    if let Some(claims) = req.headers().get("dpop").and_then(proof_claims) {
        body["dpop_proof_claims"] = claims;
    }
    reply(StatusCode::OK, body.to_string())
}

/// The claims of a DPoP proof, unverified (the demo only shows them).
fn proof_claims(proof: &http::HeaderValue) -> Option<serde_json::Value> {
    let payload = proof.to_str().ok()?.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn reply(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
