//! Serving HTTP on a listener until told to stop, then draining. Used by the proxy
//! listeners, the admin listener and the demo's built-in servers.
//!
//! Each accepted connection runs in its own task, which looks at the first bytes: the HTTP/2
//! preface is served as HTTP/2 (h2c, prior knowledge), anything else as HTTP/1.1
//! ([`conn`]). On stop the accept loop ends at once, every connection is asked to shut down
//! gracefully (an idle keep-alive connection closes, a busy one closes after its current
//! response, an HTTP/2 one gets GOAWAY and finishes its open streams), and [`serve`] returns
//! when the last one is gone. The caller bounds that wait with the drain deadline.

mod conn;
mod deadline;
mod idle;
mod timer;

pub use conn::{connection, Protocol};
pub use deadline::{within, Elapsed, Within};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::body::Body;
use crate::config::Limits;
use crate::sniff::{sniff, Opening, Prefixed};

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
                    let conn = sniffed(stream, handler.clone(), stop.clone(), limits);
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

/// Serves an accepted connection in the protocol its first bytes show. A client that sends
/// nothing within `header_read_timeout` is closed, as one that sends half a request head is.
async fn sniffed<F, Fut>(
    mut stream: TcpStream,
    handler: F,
    stop: watch::Receiver<bool>,
    limits: Limits,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let opening = tokio::time::timeout(limits.header_read_timeout, sniff(&mut stream)).await;
    let Ok(Ok((opening, seen))) = opening else {
        return;
    };
    let protocol = match opening {
        Opening::Http2Preface => Protocol::Http2,
        // hyper answers anything that is not HTTP/1 with 400.
        Opening::Http1 | Opening::Tls | Opening::Other => Protocol::Http1,
    };
    connection(Prefixed::new(seen, stream), handler, stop, limits, protocol).await;
}

/// A listener's stop signal as a connection task sees it, cheap to poll again. A connection
/// task is woken several times per request, and registering with the watch channel on every
/// wake-up cost more than the rest of the stop handling; once registered, the channel is
/// polled again only when its value has changed or the task's waker is a different one.
pub(crate) struct StopSignal {
    changes: watch::Receiver<bool>,
    stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
    registered: Option<Waker>,
}

impl StopSignal {
    pub(crate) fn new(mut stop: watch::Receiver<bool>) -> Self {
        let changes = stop.clone();
        StopSignal {
            changes,
            stopped: Box::pin(async move { stopped(&mut stop).await }),
            registered: None,
        }
    }

    /// Ready once the listener is told to stop (or its sender is gone).
    pub(crate) fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
