//! One connection, served as HTTP/1.1 or HTTP/2 until it ends or the listener stops.
//!
//! HTTP/1.1 keeps upgrades (CONNECT, WebSocket) and hyper's header limits. HTTP/2 gets the
//! limits that guard against its known attacks: a cap on concurrent streams, on the header
//! list (which also bounds a CONTINUATION flood), on streams reset before they are served
//! (rapid reset) and on streams reset for protocol errors; h2 itself bounds ping and settings
//! floods. Either way a connection idle for `header_read_timeout` (no request open: waiting for
//! a head, or a head that trickles in) is closed ([`super::idle`]), and a stop shuts it down
//! gracefully.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::idle::{Activity, Answered, IdleTimer};
use super::timer::Clocked;
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
    let activity = Activity::new();
    let requests = activity.clone();
    let idle = IdleTimer::new(activity, limits.header_read_timeout);
    let res = match protocol {
        Protocol::Http1 => {
            // The handler's future is polled where hyper put it (`Answered`), not moved.
            // hyper's own `header_read_timeout` is off: the idle timer covers it.
            let service = service_fn(move |req| Answered::new(handler(req), requests.open()));
            let conn = http1::Builder::new()
                .header_read_timeout(None)
                .max_headers(limits.max_headers)
                .max_buf_size(limits.max_head_bytes)
                .serve_connection(io, service)
                .with_upgrades();
            let conn = Clocked::new(conn);
            until_stopped(
                conn,
                |c| c.conn().graceful_shutdown(),
                stop,
                idle,
                WhenIdle::Close,
            )
            .await
        }
        Protocol::Http2 => {
            let service = service_fn(move |req| {
                // Boxed: hyper spawns each stream as a task and moves its future on the way;
                // a pointer moves for free, the request's whole state machine would not.
                Answered::new(Box::pin(handler(req)), requests.open())
            });
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.http2_max_concurrent_streams)
                .max_header_list_size(limits.http2_max_header_list_size)
                .max_pending_accept_reset_streams(limits.http2_max_pending_reset_streams)
                .max_local_error_reset_streams(limits.http2_max_error_reset_streams)
                .serve_connection(io, service);
            until_stopped(
                conn,
                |c| c.graceful_shutdown(),
                stop,
                idle,
                WhenIdle::GoAway,
            )
            .await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// What an idle connection gets.
enum WhenIdle {
    /// Closed at once (HTTP/1.1: whatever part of a head came is dropped, as the head read
    /// timeout does; an idle keep-alive connection just closes).
    Close,
    /// A graceful shutdown (HTTP/2's GOAWAY, which a client answers by opening a new
    /// connection when it next needs one), bounded by the idle timeout again, because it
    /// waits for the client to answer a PING and one that never does would otherwise keep
    /// its connection.
    GoAway,
}

/// Drives `conn` to its end; when it has been idle too long, ends it as `when_idle` says; on
/// a stop, asks it to shut down gracefully and drives it to the end of that (bounded by the
/// drain deadline).
async fn until_stopped<C>(
    conn: C,
    shutdown: impl FnOnce(Pin<&mut C>),
    stop: watch::Receiver<bool>,
    mut idle: IdleTimer,
    when_idle: WhenIdle,
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
        if idle.poll_expired(cx).is_ready() {
            return Poll::Ready(Ended::Idle);
        }
        stop.poll_stopped(cx).map(|()| Ended::Stopped)
    })
    .await;
    match (ended, when_idle) {
        (Ended::Done(res), _) => res,
        (Ended::Stopped, _) => {
            shutdown(conn.as_mut());
            conn.await
        }
        (Ended::Idle, WhenIdle::Close) => {
            tracing::debug!("connection idle past header_read_timeout: closed");
            Ok(())
        }
        (Ended::Idle, WhenIdle::GoAway) => {
            shutdown(conn.as_mut());
            // No stream is open, so nothing is lost by dropping it when the grace is over.
            let grace = idle.timeout();
            tokio::time::timeout(grace, conn).await.unwrap_or(Ok(()))
        }
    }
}

enum Ended {
    Done(Result<(), hyper::Error>),
    Stopped,
    Idle,
}
