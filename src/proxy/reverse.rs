//! Reverse listeners: `http://127.0.0.1:8081/path` goes to one upstream's `url`.
//!
//! For apps that take a base URL and ignore proxy variables. The request's path and query
//! are appended to the upstream's `url`; the Host header is regenerated from it.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::answer::ProxyError;
use super::dispatch::{self, Outgoing};
use super::headers::check_request;
use super::Body;
use crate::snapshot::{App, Route};

pub async fn handle(app: Arc<App>, name: Arc<str>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let snap = app.snapshot.load_full();
    let Some(up) = snap.upstream(&name).cloned() else {
        let gone =
            ProxyError::UpstreamUnreachable(format!("upstream {name} is no longer configured"));
        return dispatch::finish(&app.unmatched, None, started, Err(gone));
    };
    let (parts, body) = req.into_parts();
    let uri = check_request(&parts.headers).and_then(|()| match &up.route {
        Route::Url(pool) => dispatch::target(pool, &parts.uri),
        Route::AsAsked(_) => Err(ProxyError::UpstreamUnreachable(format!(
            "upstream {name} has no url"
        ))),
    });
    let result = match uri {
        Ok(uri) => {
            let out = Outgoing {
                method: parts.method,
                uri,
                headers: parts.headers,
                body,
            };
            let cfg = &snap.config;
            dispatch::with_token(
                &up,
                out,
                cfg.tokens.replay_body_limit,
                cfg.proxy.request_timeout,
            )
            .await
        }
        Err(e) => Err(e),
    };
    dispatch::finish(&app.unmatched, Some(&up), started, result)
}
