//! The pipeline's driver: resolve the request to a [`Plan`], run it, and finish at the edge,
//! where the metrics are recorded and an error becomes its answer, once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::error::ProxyError;
use super::facts::Facts;
use super::plan::{self, Entry, Plan};
use super::trail::Trail;
use super::{access, attempt, connect, grpc, intercept, send, upgrade};
use crate::body::Body;
use crate::host::split_port;
use crate::metrics::{ConnectOutcome, RequestMetrics, UNMATCHED};
use crate::snapshot::{App, Upstream};
use crate::trace::{RequestSpan, Tracer};
use crate::upstream::Wire;

/// Serves one request that came in on a proxy listener.
pub async fn handle(app: Arc<App>, entry: Entry, mut req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let snap = app.snapshot.load_full();
    let config = &snap.config;
    let log = config.access_log;
    let arrival = log
        .enabled
        .then(|| access::Start::of(&entry, &req, log.include_query));
    let mut trail = match log.enabled {
        true => Trail::recording(),
        false => Trail::default(),
    };
    if let Some(tracer) = &app.tracer {
        trail.trace = Some(server_span(tracer, &entry, &req, log.include_query));
    }
    let is_connect = req.method() == Method::CONNECT;
    let facts = Facts::of(req.headers());
    let caller = Caller::of(&req, &facts);
    let websocket = upgrade::take(&mut req, &facts);
    let wire = Wire::of(caller.grpc, websocket.is_some());
    let plan = plan::resolve(&app, &snap, &entry, &req, &facts);
    if let (Some(trace), Some(up)) = (&trail.trace, plan.upstream()) {
        trace.upstream(&up.name);
    }
    let (up, result) = match plan {
        Plan::Matched { up, uri } => {
            let sent = attempt::with_token(&up, (req, &facts), uri, config, wire, &mut trail);
            let result = sent.await;
            let result = match websocket {
                Some(client) => result.map(|r| upgrade::hand_over(&app, &up.name, client, r)),
                None => result,
            };
            (Some(up), result)
        }
        Plan::Passthrough(uri) => {
            let timeout = config.proxy.request_timeout;
            let clients = &snap.passthrough;
            let asked = (req, &facts);
            let result = send::passthrough(clients, asked, uri, timeout, wire, &mut trail).await;
            let result = match websocket {
                Some(client) => result.map(|r| upgrade::hand_over(&app, UNMATCHED, client, r)),
                None => result,
            };
            (None, result)
        }
        Plan::Tunnel(target) => {
            let parent = snap.parent.as_ref();
            let opened = connect::tunnel(req, target, &config.proxy, parent).await;
            let outcome = match opened {
                Ok(_) => ConnectOutcome::Tunnelled,
                Err(_) => ConnectOutcome::Refused,
            };
            app.metrics.intercept.connect(outcome);
            (None, opened)
        }
        Plan::Intercept { up, target } => {
            let opened = intercept::open(&app, req, target, handle_boxed);
            (Some(up), Ok(opened))
        }
        Plan::Refused { up, why } => {
            if is_connect {
                app.metrics.intercept.connect(ConnectOutcome::Refused);
            }
            (up, Err(why))
        }
    };
    match (&result, &up) {
        (Err(ProxyError::DestinationDenied(_)), _) => {
            let via = if is_connect { "tunnel" } else { "passthrough" };
            let denied = &app.metrics.destinations_denied;
            denied.with_label_values(&[via]).inc();
        }
        (Err(ProxyError::UpstreamProxyRefused(_)), up) => {
            let via = match (is_connect, up) {
                (true, None) => "tunnel",
                (_, Some(_)) => "upstream",
                (false, None) => "passthrough",
            };
            let refusals = &app.metrics.upstream_proxy_refusals;
            refusals.with_label_values(&[via]).inc();
        }
        (Err(ProxyError::UpstreamOverloaded(_)), Some(up)) => {
            let name: &str = &up.name;
            app.metrics
                .upstream_overloaded
                .with_label_values(&[name])
                .inc();
        }
        _ => {}
    }
    let (resp, error) = finish(&app.unmatched, up.as_deref(), started, result, caller);
    if let Some(trace) = trail.trace.take() {
        trace.end(resp.status().as_u16(), error);
    }
    match arrival {
        None => resp,
        Some(arrival) => {
            let label = up.map_or_else(|| Arc::from(UNMATCHED), |u| u.name.clone());
            access::attach(resp, &app.access_log, log, arrival, label, error, trail)
        }
    }
}

/// The server span of a request: which listener, and the host it is for (without the port).
fn server_span<B>(
    tracer: &Tracer,
    entry: &Entry,
    req: &Request<B>,
    include_query: bool,
) -> RequestSpan {
    let (listener, host) = match entry {
        Entry::Forward => ("forward", req.uri().host().unwrap_or_default()),
        Entry::Reverse(_) => {
            let header = req.headers().get(http::header::HOST);
            let host = header.and_then(|h| h.to_str().ok()).unwrap_or_default();
            ("reverse", split_port(host).map_or(host, |(h, _)| h))
        }
        Entry::Intercepted(target) => ("intercept", &*target.host),
    };
    // `server.address` is an IPv6 address without its brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    tracer.request(req, listener, host, include_query)
}

/// What the answer to an error must suit: a gRPC client reads only gRPC status, and HTTP/2
/// has no `Connection` header.
#[derive(Clone, Copy)]
struct Caller {
    grpc: bool,
    http2: bool,
}

impl Caller {
    fn of<B>(req: &Request<B>, facts: &Facts) -> Caller {
        Caller {
            grpc: facts.grpc(),
            http2: req.version() == Version::HTTP_2,
        }
    }
}

/// [`handle`] for requests inside an intercepted tunnel.
fn handle_boxed(
    app: Arc<App>,
    entry: Entry,
    req: Request<Incoming>,
) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
    Box::pin(handle(app, entry, req))
}

/// Records the request in the metrics and turns an error into its answer, returned with the
/// error's code.
fn finish(
    unmatched: &RequestMetrics,
    up: Option<&Upstream>,
    started: Instant,
    result: Result<Response<Body>, ProxyError>,
    caller: Caller,
) -> (Response<Body>, Option<&'static str>) {
    let label = up.map_or(UNMATCHED, |u| &u.name);
    let mut code = None;
    let resp = result.unwrap_or_else(|e| {
        code = Some(e.status_and_code().1);
        let (status, _) = e.status_and_code();
        if status.is_server_error() {
            tracing::warn!(upstream = label, error = %e, "request failed");
        } else {
            tracing::debug!(upstream = label, error = %e, "request refused");
        }
        if caller.grpc {
            grpc::error_response(&e)
        } else {
            e.into_response(label, caller.http2)
        }
    });
    let took = started.elapsed().as_secs_f64();
    let m = up.map_or(unmatched, |u| &u.metrics);
    m.observe(took);
    m.count(resp.status());
    (resp, code)
}
