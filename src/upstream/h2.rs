//! Multiplexed HTTP/2 connections to one origin.
//!
//! Every request to the origin shares a few connections: a request takes the first one with
//! fewer than [`STREAMS_PER_CONN`] of its streams open, and a new connection is made only when
//! all are that busy (at most [`MAX_CONNS`]; past that, the least busy one takes the stream and
//! h2 queues it until the server's concurrency limit allows). One request at a time connects,
//! so a burst at start makes one connection, not one per request. Each connection's I/O runs in
//! a task of its own, as a multiplexed connection must; a closed one is dropped when next seen.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::PoolError;
use super::reuse::{Report, Reuse};
use crate::body::Body;

/// Streams of ours open on one connection before another is made.
pub const STREAMS_PER_CONN: usize = 100;
/// Connections per origin at most.
pub const MAX_CONNS: usize = 8;

struct Conn {
    sender: SendRequest<Body>,
    open: Arc<AtomicUsize>,
}

/// The HTTP/2 connections to one origin.
#[derive(Default)]
pub struct H2Conns {
    conns: Mutex<Vec<Conn>>,
    connecting: tokio::sync::Mutex<()>,
}

impl H2Conns {
    /// A connection with room for another stream, if there is one (dropping closed ones).
    fn pick(&self) -> Option<(SendRequest<Body>, Arc<AtomicUsize>)> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| !c.sender.is_closed());
        let roomy = conns
            .iter()
            .find(|c| c.open.load(Ordering::Relaxed) < STREAMS_PER_CONN);
        let chosen = match roomy {
            Some(c) => Some(c),
            None if conns.len() >= MAX_CONNS => {
                conns.iter().min_by_key(|c| c.open.load(Ordering::Relaxed))
            }
            None => None,
        };
        chosen.map(|c| (c.sender.clone(), c.open.clone()))
    }

    /// Sends `req` (an absolute URI, for `:scheme` and `:authority`) on a shared connection,
    /// connecting through `connect` when every connection is busy.
    pub async fn send<C, Fut, Io>(
        &self,
        connect: C,
        req: Request<Body>,
    ) -> Result<Response<H2Body>, PoolError>
    where
        C: FnOnce() -> Fut,
        Fut: Future<Output = Result<Io, PoolError>>,
        Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let ((mut sender, open), reuse) = match self.pick() {
            Some(found) => (found, Reuse::Reused),
            None => {
                let _one_at_a_time = self.connecting.lock().await;
                match self.pick() {
                    Some(found) => (found, Reuse::Reused),
                    // Boxed: connecting is rare, and its state (the handshake) inline would
                    // make every request's future kilobytes larger.
                    None => {
                        let made = Box::pin(async { self.connect(connect().await?).await });
                        (made.await?, Reuse::New)
                    }
                }
            }
        };
        open.fetch_add(1, Ordering::Relaxed);
        let stream = Stream(open);
        let report = Report::asked(&req);
        let mut resp = sender.send_request(req).await?;
        if report {
            resp.extensions_mut().insert(reuse);
        }
        Ok(resp.map(|body| H2Body {
            body,
            _stream: stream,
        }))
    }

    async fn connect<Io>(&self, io: Io) -> Result<(SendRequest<Body>, Arc<AtomicUsize>), PoolError>
    where
        Io: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        let open = Arc::new(AtomicUsize::new(0));
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.push(Conn {
            sender: sender.clone(),
            open: open.clone(),
        });
        Ok((sender, open))
    }
}

/// One of our streams open on a connection, until its response body is done or dropped.
struct Stream(Arc<AtomicUsize>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body from a shared HTTP/2 connection.
pub struct H2Body {
    body: Incoming,
    _stream: Stream,
}

impl HttpBody for H2Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
