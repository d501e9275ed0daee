//! Serving HTTP/1 on a listener until told to stop, then draining. Used by the proxy
//! listeners, the admin listener and the demo's built-in servers.
//!
//! Each accepted connection runs in its own task. On stop the accept loop ends at once, every
//! connection is asked to shut down gracefully (an idle keep-alive connection closes, a busy
//! one closes after its current response), and [`serve`] returns when the last one is gone.
//! The caller bounds that wait with the drain deadline.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::body::Body;
use crate::config::Limits;

/// Serves `listener` with `handler` until `stop` becomes true, then drains.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F, stop: watch::Receiver<bool>)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_with(listener, handler, stop, None, Limits::default()).await
}

/// [`serve`], telling `closed` as soon as the socket is closed (before the drain), so the
/// address can be bound again by a moved listener.
pub async fn serve_with<F, Fut>(
    listener: TcpListener,
    handler: F,
    mut stop: watch::Receiver<bool>,
    closed: Option<oneshot::Sender<()>>,
    limits: Limits,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    // Each connection task holds a sender; when all are dropped, `recv` returns None.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // At the connection cap, stop accepting until a connection ends.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = connection(stream, handler.clone(), stop.clone(), limits);
                    let alive = alive.clone();
                    tokio::spawn(async move {
                        conn.await;
                        drop((permit, alive));
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    if let Some(closed) = closed {
        let _ = closed.send(());
    }
    drop(alive);
    let _ = all_closed.recv().await;
}

/// Serves HTTP/1 on one connection (a TCP stream, or an intercepted TLS stream) until it
/// ends, or shuts it down gracefully once `stop` becomes true.
pub async fn connection<I, F, Fut>(io: I, handler: F, stop: watch::Receiver<bool>, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let fut = handler(req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_head_bytes)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stop = StopSignal::new(stop);
    let ended = poll_fn(|cx| {
        if let Poll::Ready(res) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(res));
        }
        stop.poll_stopped(cx).map(|()| None)
    })
    .await;
    let res = match ended {
        Some(res) => res,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A listener's stop signal as a connection task sees it, cheap to poll again. A connection
/// task is woken several times per request, and registering with the watch channel on every
/// wake-up cost more than the rest of the stop handling; once registered, the channel is
/// polled again only when its value has changed or the task's waker is a different one.
struct StopSignal {
    changes: watch::Receiver<bool>,
    stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    registered: Option<Waker>,
}

impl StopSignal {
    fn new(mut stop: watch::Receiver<bool>) -> Self {
        let changes = stop.clone();
        StopSignal {
            changes,
            stopped: Box::pin(async move { stopped(&mut stop).await }),
            registered: None,
        }
    }

    /// Ready once the listener is told to stop (or its sender is gone).
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let same_waker = self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if same_waker && !self.changes.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        self.registered = Some(cx.waker().clone());
        self.stopped.as_mut().poll(cx)
    }
}

/// Resolves once `stop` is true (at once if it already is).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
