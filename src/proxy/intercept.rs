//! An intercepted CONNECT: what the tunnel carries is served like a forward request.
//!
//! tokenproxy answers 200 and looks at the first bytes. A TLS ClientHello is answered with a
//! host certificate minted for the CONNECT host, but only when the SNI names that host (no SNI,
//! or another name, closes the tunnel); the decrypted HTTP is served through the request
//! pipeline, as HTTP/2 when ALPN chose `h2` and HTTP/1.1 otherwise. A plaintext HTTP/1
//! request line (what undici sends for `http://` through a proxy), or the HTTP/2 preface, is
//! served the same way without TLS. Anything else closes the tunnel. Every way it ends is
//! counted. The app's own client certificate is never asked for. Without `proxy.intercept`,
//! `proxy.connect_plaintext` opens the same tunnels for plaintext only: TLS in them is closed
//! (`not_intercepted`) with a log line that says how to get a token onto it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;

use super::plan::Entry;
use super::target::Target;
use crate::body::{empty, Body};
use crate::config::Scheme;
use crate::metrics::ConnectOutcome;
use crate::serve::Protocol;
use crate::snapshot::App;
use crate::sniff::{sniff, Opening, Prefixed};

/// What serves each request inside a tunnel: the pipeline's driver, handed in so that this
/// module and the driver do not import each other.
pub type Handler =
    fn(Arc<App>, Entry, Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Answers 200 to the CONNECT and serves the tunnel in a task of its own.
pub fn open(
    app: &Arc<App>,
    req: Request<Incoming>,
    target: Target<'static>,
    handler: Handler,
) -> Response<Body> {
    let app2 = app.clone();
    app.tunnels.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => serve(app2, TokioIo::new(upgraded), target, handler).await,
            Err(e) => tracing::debug!(error = %e, "CONNECT upgrade failed"),
        }
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}

async fn serve<I>(app: Arc<App>, mut io: I, mut target: Target<'static>, handler: Handler)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let wait = app.snapshot.load().config.proxy.limits.header_read_timeout;
    let (opening, seen) = match tokio::time::timeout(wait, sniff(&mut io)).await {
        Ok(Ok(sniffed)) => sniffed,
        Ok(Err(_)) => return refuse(&app, &target, "closed", "the app closed the tunnel"),
        Err(_) => return refuse(&app, &target, "timeout", "nothing arrived in the tunnel"),
    };
    let io = Prefixed::new(seen, io);
    match opening {
        Opening::Tls => tls(app, io, target, wait, handler).await,
        Opening::Http1 | Opening::Http2Preface => {
            count(&app, ConnectOutcome::Plaintext);
            target.scheme = Scheme::Http;
            let protocol = match opening {
                Opening::Http2Preface => Protocol::Http2,
                _ => Protocol::Http1,
            };
            http(app, io, target, handler, protocol).await;
        }
        Opening::Other => refuse(
            &app,
            &target,
            "not_tls",
            "the tunnel carried neither TLS nor HTTP/1",
        ),
    }
}

async fn tls<I>(app: Arc<App>, io: I, target: Target<'static>, wait: Duration, handler: Handler)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(interceptor) = app.interceptor.clone() else {
        // A plaintext-only tunnel (`proxy.connect_plaintext`) that carries TLS.
        tracing::warn!(target = %target.display(),
            "TLS inside a CONNECT tunnel to a host that gets tokens needs proxy.intercept (tokenproxy's CA), or have the app call http:// through the proxy");
        return refuse(
            &app,
            &target,
            "not_intercepted",
            "interception is not configured",
        );
    };
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(wait, acceptor).await {
        Ok(Ok(start)) => start,
        Ok(Err(e)) => return refuse(&app, &target, "tls_error", &e.to_string()),
        Err(_) => return refuse(&app, &target, "timeout", "no complete ClientHello in time"),
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(str::to_ascii_lowercase);
    match sni {
        None => {
            return refuse(
                &app,
                &target,
                "no_sni",
                "the ClientHello named no host (SNI)",
            )
        }
        Some(name) if name != target.host => {
            tracing::warn!(target = %target.display(), sni = %name,
                "refused an intercepted tunnel whose TLS server name differs from its CONNECT host");
            return refuse(
                &app,
                &target,
                "sni_mismatch",
                "the TLS server name differs from the CONNECT host",
            );
        }
        Some(_) => {}
    }
    let stream = match tokio::time::timeout(wait, start.into_stream(interceptor.tls.clone())).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return refuse(&app, &target, "tls_error", &e.to_string()),
        Err(_) => {
            return refuse(
                &app,
                &target,
                "timeout",
                "the TLS handshake did not finish in time",
            )
        }
    };
    count(&app, ConnectOutcome::Intercepted);
    let protocol = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Protocol::Http2,
        _ => Protocol::Http1,
    };
    http(app, stream, target, handler, protocol).await;
}

/// Serves HTTP inside the tunnel until it closes or the proxy drains.
async fn http<I>(
    app: Arc<App>,
    io: I,
    target: Target<'static>,
    handler: Handler,
    protocol: Protocol,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = app.snapshot.load().config.proxy.limits;
    let stop = app.draining.subscribe();
    let entry = Entry::Intercepted(Arc::new(target));
    let serve = move |req| handler(app.clone(), entry.clone(), req);
    crate::serve::connection(io, serve, stop, limits, protocol).await;
}

fn count(app: &App, outcome: ConnectOutcome) {
    app.metrics.intercept.connect(outcome);
}

/// Closes the tunnel (by returning), counting why.
fn refuse(app: &App, target: &Target<'_>, reason: &str, detail: &str) {
    count(app, ConnectOutcome::Refused);
    let m = &app.metrics.intercept.handshake_failures;
    m.with_label_values(&[reason]).inc();
    tracing::debug!(target = %target.display(), reason, detail, "intercepted tunnel closed");
}
