//! One connection, served as HTTP/1.1 or HTTP/2 until it ends or the listener stops.
//!
//! HTTP/1.1 keeps upgrades (CONNECT, WebSocket) and hyper's header limits and read timeout
//! (on a [`LentTimer`], which moves one sleep from head to head instead of making one each).
//! HTTP/2 gets the limits that guard against its known attacks: a cap on concurrent streams,
//! on the header list (which also bounds a CONTINUATION flood), on streams reset before they
//! are served (rapid reset) and on streams reset for protocol errors; h2 itself bounds ping
//! and settings floods. Either way a stop shuts the connection down gracefully.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::idle::{tracked, Activity, IdleTimer};
use super::timer::{Clocked, LentTimer};
use super::StopSignal;
use crate::body::Body;
use crate::config::Limits;

/// The protocol a connection speaks, as its first bytes or TLS ALPN said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// Serves one connection (a TCP stream, or an intercepted TLS stream) until it ends, or shuts
/// it down gracefully once `stop` becomes true.
pub async fn connection<I, F, Fut>(
    io: I,
    handler: F,
    stop: watch::Receiver<bool>,
    limits: Limits,
    protocol: Protocol,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let io = TokioIo::new(io);
    let res = match protocol {
        Protocol::Http1 => {
            // Not an `async` block around the handler's future: the block would move that
            // future (kilobytes: the whole request pipeline) into itself on its first poll;
            // `Answered` polls it where hyper put it.
            let service = service_fn(move |req| Answered {
                answer: handler(req),
            });
            let conn = http1::Builder::new()
                .timer(LentTimer)
                .header_read_timeout(limits.header_read_timeout)
                .max_headers(limits.max_headers)
                .max_buf_size(limits.max_head_bytes)
                .serve_connection(io, service)
                .with_upgrades();
            let conn = Clocked::new(conn);
            until_stopped(conn, |c| c.conn().graceful_shutdown(), stop, None).await
        }
        Protocol::Http2 => {
            let activity = Activity::new();
            let streams = activity.clone();
            let service = service_fn(move |req| {
                let guard = streams.stream();
                // Boxed: hyper spawns each stream as a task and moves its future on the way;
                // a pointer moves for free, the request's whole state machine would not.
                let fut = Box::pin(handler(req));
                async move { Ok::<_, Infallible>(fut.await.map(|b| tracked(b, guard))) }
            });
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.http2_max_concurrent_streams)
                .max_header_list_size(limits.http2_max_header_list_size)
                .max_pending_accept_reset_streams(limits.http2_max_pending_reset_streams)
                .max_local_error_reset_streams(limits.http2_max_error_reset_streams)
                .serve_connection(io, service);
            let idle = IdleTimer::new(activity, limits.header_read_timeout);
            until_stopped(conn, |c| c.graceful_shutdown(), stop, Some(idle)).await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Drives `conn` to its end; on a stop (or, for HTTP/2, when idle) asks it to shut down
/// gracefully and drives it to the end of that. A stop's shutdown is bounded by the drain
/// deadline; an idle one by the idle timeout again, because an HTTP/2 graceful shutdown
/// waits for the client to answer a PING, and a client that never does would otherwise keep
/// its connection.
async fn until_stopped<C>(
    conn: C,
    shutdown: impl FnOnce(Pin<&mut C>),
    stop: watch::Receiver<bool>,
    mut idle: Option<IdleTimer>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let mut stop = StopSignal::new(stop);
    let ended = poll_fn(|cx| {
        if let Poll::Ready(res) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ended::Done(res));
        }
        if let Some(idle) = &mut idle {
            if idle.poll_expired(cx).is_ready() {
                return Poll::Ready(Ended::Idle(idle.timeout()));
            }
        }
        stop.poll_stopped(cx).map(|()| Ended::Stopped)
    })
    .await;
    match ended {
        Ended::Done(res) => res,
        Ended::Stopped => {
            shutdown(conn.as_mut());
            conn.await
        }
        Ended::Idle(grace) => {
            shutdown(conn.as_mut());
            // No stream is open, so nothing is lost by dropping it when the grace is over.
            tokio::time::timeout(grace, conn).await.unwrap_or(Ok(()))
        }
    }
}

enum Ended {
    Done(Result<(), hyper::Error>),
    Stopped,
    Idle(std::time::Duration),
}

pin_project_lite::pin_project! {
    /// The handler's answer as hyper's service wants it, polled in place.
    struct Answered<F> {
        #[pin]
        answer: F,
    }
}

impl<F: Future> Future for Answered<F> {
    type Output = Result<F::Output, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().answer.poll(cx).map(Ok)
    }
}
