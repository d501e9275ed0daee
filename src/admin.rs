//! The admin listener: read-only views for probes, scrapers and people.
//!
//! - `GET /metrics`: Prometheus text format.
//! - `GET /livez`: 200 while the process serves.
//! - `GET /readyz`: 200 when every upstream holds a usable token (and no stop is under way);
//!   else 503 with a JSON list of what is missing and why.
//! - `GET /status`: JSON, one entry per upstream: client, token state, seconds to expiry,
//!   last refresh, last error, next attempt, fetch and failure counts, the client's auth
//!   method and, for assertions, its key thumbprint and certificate fingerprint and expiry.
//!
//! Nothing here changes state, and nothing here ever shows a token or a secret.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::body::{full, Body};
use crate::config::{ClientConfig, ExternalToken};
use crate::jose::key_file;
use crate::snapshot::{App, Upstream};
use crate::token::ClientDpop;
use crate::upstream::Route;

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin endpoints are read-only\n",
        );
    }
    match req.uri().path() {
        "/metrics" => {
            observe_pools(&app);
            let mut resp = Response::new(full(app.metrics.render()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" => readyz(&app),
        "/status" => json_response(StatusCode::OK, &status(&app)),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics /livez /readyz /status\n",
        ),
    }
}

fn readyz(app: &App) -> Response<Body> {
    if app.stopping.load(Ordering::Relaxed) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"ready": false, "stopping": true, "missing": []}),
        );
    }
    let snap = app.snapshot.load();
    let missing: Vec<Value> = snap
        .upstreams
        .iter()
        .filter(|u| u.tokens.current().is_none())
        .map(|u| {
            let status = u.tokens.status();
            let reason = status
                .last_error
                .unwrap_or_else(|| "waiting for the first token".into());
            json!({"upstream": &*u.name, "reason": reason})
        })
        .collect();
    let code = if missing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        code,
        &json!({"ready": missing.is_empty(), "missing": missing}),
    )
}

fn status(app: &App) -> Value {
    let snap = app.snapshot.load();
    let upstreams: Vec<Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let mut v = upstream_status(u);
            v["dpop"] = dpop_status(u, snap.dpop_keys.get(&u.config.client.name));
            v
        })
        .collect();
    let cache = snap.cache.as_ref().map(|c| c.status());
    json!({ "version": env!("CARGO_PKG_VERSION"), "upstreams": upstreams, "cache": cache })
}

/// The connection gauges, read from each upstream's pool as the scrape happens.
fn observe_pools(app: &App) {
    let m = &app.metrics;
    for u in &app.snapshot.load().upstreams {
        let Route::Url(pool) = &u.route else { continue };
        let name: &str = &u.name;
        let set = |state, n: usize| {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            m.upstream_connections
                .with_label_values(&[name, state])
                .set(n);
        };
        set("in_use", pool.slots.in_use());
        set("idle", pool.idle_count());
        let waiting = i64::try_from(pool.slots.waiting()).unwrap_or(i64::MAX);
        m.upstream_waiting.with_label_values(&[name]).set(waiting);
    }
}

/// An upstream's connection limits and what is in use now; `null` without a `url`.
fn connections(u: &Upstream) -> Value {
    let Route::Url(pool) = &u.route else {
        return Value::Null;
    };
    let limits = u.config.limits;
    json!({
        "in_use": pool.slots.in_use(),
        "idle": pool.idle_count(),
        "waiting": pool.slots.waiting(),
        "max_connections": limits.max_connections,
        "max_pending": limits.max_pending,
    })
}

fn upstream_status(u: &Upstream) -> Value {
    let now = Instant::now();
    let s = u.tokens.status();
    let token = u.tokens.current();
    let sharers = u.tokens.upstreams();
    let state = match (&token, s.consecutive_failures, s.fetches) {
        (Some(_), 0, _) => "valid",
        (Some(_), _, _) => "valid_refresh_failing",
        (None, _, 0) => "pending",
        (None, _, _) => "unavailable",
    };
    json!({
        "upstream": &*u.name,
        "client": u.config.client.name,
        "url": u.config.url.as_ref().map(|u| u.to_string()),
        "state": state,
        "seconds_to_expiry": token.map(|t| t.usable_until.saturating_duration_since(now).as_secs()),
        "last_refresh": s.last_refresh.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        "last_error": s.last_error,
        "next_attempt_in_seconds": s.next_attempt.map(|t| t.saturating_duration_since(now).as_secs()),
        "fetches": s.fetches,
        "failures": s.failures,
        "auth_method": u.config.client.auth_method.as_str(),
        "grant": u.config.client.grant.as_str(),
        "scopes": {
            "requested": &u.config.request.scopes,
            "granted": s.granted_scope.as_deref().map(|g| g.split(' ').filter(|x| !x.is_empty()).collect::<Vec<_>>()),
        },
        "connections": connections(u),
        "credential": credential(&u.config.client),
        "presented": presented(&u.config.client),
        // The upstreams whose token requests are the same share one token (and its fetches
        // and failures); the source is named after the first of them.
        "token_source": sharers.first(),
        "shares_token_with": sharers.iter().filter(|n| **n != *u.name).collect::<Vec<_>>(),
    })
}

/// A DPoP upstream's key thumbprint (`cnf.jkt` of its tokens) and whether the token
/// endpoint and the upstream have sent nonces; `null` for bearer tokens.
fn dpop_status(u: &Upstream, client: Option<&Arc<ClientDpop>>) -> Value {
    match (client, &u.dpop) {
        (Some(c), Some(d)) => json!({
            "jkt": c.key.thumbprint(),
            "alg": c.key.alg().as_str(),
            "token_endpoint_nonce": c.nonces.any(),
            "upstream_nonce": d.nonces.any(),
        }),
        _ => Value::Null,
    }
}

/// What identifies the client's key and certificate, never the key: the key's JWK thumbprint
/// (RFC 7638), the certificate's SHA-256 fingerprint and expiry. Read from the sources now,
/// as the next token request would.
fn credential(client: &ClientConfig) -> Value {
    if let Some(tls) = &client.tls_client {
        let cert = tls
            .certificate
            .read()
            .ok()
            .and_then(|t| cert_facts(t.expose()));
        return json!({
            "certificate_sha256": cert.as_ref().map(|c| &c.0),
            "certificate_expires": cert.as_ref().map(|c| &c.1),
        });
    }
    let Some(a) = &client.assertion else {
        return Value::Null;
    };
    let key = a.private_key.as_ref().map(|source| {
        source
            .read()
            .ok()
            .and_then(|text| key_file::load(text.expose(), a.signing_alg).ok())
            .and_then(|(k, _)| k.thumbprint())
            .unwrap_or_else(|| "unreadable".into())
    });
    let cert = a.certificate.as_ref().map(|source| {
        match source.read().ok().and_then(|t| cert_facts(t.expose())) {
            Some((sha256, expires)) => json!({"sha256": sha256, "expires": expires}),
            None => json!("unreadable"),
        }
    });
    json!({
        "signing_alg": a.signing_alg.map(|s| s.as_str()),
        "key_thumbprint": key,
        "certificate_sha256": cert.as_ref().and_then(|c| c.get("sha256")),
        "certificate_expires": cert.as_ref().and_then(|c| c.get("expires")),
    })
}

/// The tokens the client presents but did not make (a federated client assertion, a token
/// exchange's subject and actor): where each comes from and, for a file or a variable, its
/// unverified issuer, subject and expiry as they are now. Never the token.
fn presented(client: &ClientConfig) -> Value {
    let mut tokens: Vec<(&str, &ExternalToken)> = Vec::new();
    if let Some(t) = &client.client_assertion {
        tokens.push(("client_assertion", t));
    }
    if let Some(ex) = &client.exchange {
        tokens.push(("subject_token", &ex.subject));
        if let Some(actor) = &ex.actor {
            tokens.push(("actor_token", actor));
        }
    }
    if tokens.is_empty() {
        return Value::Null;
    }
    let entries: serde_json::Map<String, Value> = tokens
        .into_iter()
        .map(|(role, t)| {
            let now = t.source.peek_now();
            let expires = now.as_ref().and_then(|p| p.exp).map(|exp| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(exp);
                humantime::format_rfc3339_seconds(at).to_string()
            });
            let entry = json!({
                "source": t.source.kind(),
                "type": t.token_type,
                "issuer": now.as_ref().and_then(|p| p.iss.clone()),
                "subject": now.as_ref().and_then(|p| p.sub.clone()),
                "expires": expires,
            });
            (role.to_string(), entry)
        })
        .collect();
    Value::Object(entries)
}

/// The SHA-256 fingerprint (hex) and expiry (RFC 3339) of a PEM certificate.
fn cert_facts(pem: &str) -> Option<(String, String)> {
    let (sha256, not_after) = crate::pki::certificate_facts(pem)?;
    let expires =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(not_after).ok()?);
    Some((
        sha256,
        humantime::format_rfc3339_seconds(expires).to_string(),
    ))
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
