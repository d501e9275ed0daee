//! The admin listener: read-only views for probes, scrapers and people.
//!
//! - `GET /metrics`: Prometheus text format.
//! - `GET /livez`: 200 while the process serves.
//! - `GET /readyz`: 200 when every upstream holds a usable token (and no stop is under way);
//!   else 503 with a JSON list of what is missing and why.
//! - `GET /status`: JSON, one entry per upstream: client, token state, seconds to expiry,
//!   last refresh, last error, next attempt, fetch and failure counts.
//!
//! Nothing here changes state, and nothing here ever shows a token or a secret.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::body::{full, Body};
use crate::snapshot::{App, Upstream};

pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "admin endpoints are read-only\n",
        );
    }
    match req.uri().path() {
        "/metrics" => {
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
    let upstreams: Vec<Value> = snap.upstreams.iter().map(|u| upstream_status(u)).collect();
    json!({ "version": env!("CARGO_PKG_VERSION"), "upstreams": upstreams })
}

fn upstream_status(u: &Upstream) -> Value {
    let now = Instant::now();
    let s = u.tokens.status();
    let token = u.tokens.current();
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
    })
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
