//! The demo's peers: a tiny authorization server that checks the demo client's Basic
//! credentials and issues random tokens (DPoP-bound when asked), and an echo upstream that
//! answers with the `Authorization` header (and a DPoP proof's claims) it received.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Limited};
use ring::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey};

use super::error::DemoError;
use crate::body::{full, Body};
use crate::jose::SigningKey;

pub(super) const CLIENT_ID: &str = "demo-client";
pub(super) const CLIENT_SECRET: &str = "demo-secret-not-for-production";
pub(super) const API_HOST: &str = "api.demo.internal";
/// An upstream whose client asks for DPoP-bound tokens.
pub(super) const BOUND_HOST: &str = "bound.demo.internal";
/// An upstream whose client holds no secret: a platform-issued token is its credential.
pub(super) const FED_HOST: &str = "federated.demo.internal";

/// The demo's stand-in for a platform identity (a Kubernetes projected service-account
/// token): a key that signs the token file, and checks the assertions made from it.
pub(super) struct Platform {
    key: SigningKey,
    public: Vec<u8>,
}

impl Platform {
    pub(super) fn new() -> Result<Platform, DemoError> {
        let rng = ring::rand::SystemRandom::new();
        let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let unusable = || DemoError::Check("cannot make the demo platform key".into());
        let der = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| unusable())?;
        let pair = EcdsaKeyPair::from_pkcs8(alg, der.as_ref(), &rng).map_err(|_| unusable())?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
        let key = SigningKey::private(&pem, None).map_err(|e| DemoError::Check(e.to_string()))?;
        Ok(Platform {
            key,
            public: pair.public_key().as_ref().to_vec(),
        })
    }

    /// A token as kubelet would write it for the pod's service account (ten minutes).
    pub(super) fn token(&self) -> Result<String, DemoError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = serde_json::json!({"iss": PLATFORM_ISSUER, "sub": PLATFORM_SUBJECT,
            "aud": ["demo-idp"], "iat": now, "exp": now + 600});
        let header = serde_json::json!({"alg": "ES256", "kid": "demo-platform"});
        self.key
            .sign(&header, &claims)
            .map_err(|e| DemoError::Check(e.to_string()))
    }

    /// The assertion is this platform's token: signature, issuer and expiry.
    fn accepts(&self, jwt: &str) -> bool {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = jwt.split('.').collect();
        let [h, c, sig] = parts[..] else { return false };
        let key = UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &self.public);
        let signed = b64
            .decode(sig)
            .is_ok_and(|sig| key.verify(format!("{h}.{c}").as_bytes(), &sig).is_ok());
        let claims: Option<serde_json::Value> = b64
            .decode(c)
            .ok()
            .and_then(|c| serde_json::from_slice(&c).ok());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        signed
            && claims.is_some_and(|c| {
                c["iss"] == PLATFORM_ISSUER && c["exp"].as_u64().is_some_and(|exp| exp > now)
            })
    }
}

const PLATFORM_ISSUER: &str = "https://kubernetes.demo.internal";
const PLATFORM_SUBJECT: &str = "system:serviceaccount:demo:orders";

/// The demo authorization server: checks Basic credentials, or a client assertion from the
/// demo platform, and issues a random token.
pub(super) async fn token_endpoint(
    issued: Arc<AtomicU64>,
    platform: Arc<Platform>,
    req: Request<Incoming>,
) -> Response<Body> {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == expected.as_str());
    if req.method() != Method::POST || req.uri().path() != "/token" {
        return reply(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into());
    }
    let dpop = req.headers().contains_key("dpop");
    let body = Limited::new(req.into_body(), 64 * 1024).collect().await;
    let body = body.map(|b| b.to_bytes()).unwrap_or_default();
    let assertion = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "client_assertion")
        .map(|(_, v)| v.into_owned());
    let federated = assertion.is_some_and(|a| platform.accepts(&a));
    if !(basic || federated) {
        return reply(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#.into(),
        );
    }
    let n = issued.fetch_add(1, Ordering::Relaxed) + 1;
    let prefix = if federated { "demo-fed-" } else { "demo-" };
    let token = format!("{prefix}{:016x}{n:04}", rand::random::<u64>());
    // A request with a DPoP proof gets a token bound to its key (the demo trusts the proof).
    let kind = match dpop {
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
