//! What happened to a request on its way, for the access log and the trace: the time spent
//! waiting for a token, a 401 replay, the upstream connection, the request bytes sent on,
//! and the request's spans (`tracing`).
//!
//! `attempt` and `send` fill it in; `dispatch` hands it to `access` at the edge. With the
//! access log and tracing off it is a few plain fields that nobody reads, and request bodies
//! are not wrapped to be counted.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::{incoming, Body};
use crate::trace::RequestSpan;
use crate::upstream::{Report, Reuse};

#[derive(Default)]
pub struct Trail {
    /// Time spent waiting for a token (summed over a replay's second wait).
    pub token_wait: Option<Duration>,
    /// The request went a second time after the upstream refused the token.
    pub replayed: bool,
    /// The connection the (last) response came over.
    pub reuse: Option<Reuse>,
    /// Request body bytes sent on; `None` when nobody will read them.
    bytes_in: Option<Arc<AtomicU64>>,
    /// The request's server span, when tracing is on.
    pub trace: Option<RequestSpan>,
    /// Sends so far (the next attempt's `http.request.resend_count`), and why the next one.
    pub sends: u32,
    pub retry: Option<&'static str>,
}

impl Trail {
    /// A trail for the access log: request bodies are counted.
    pub fn recording() -> Trail {
        Trail {
            bytes_in: Some(Arc::default()),
            ..Trail::default()
        }
    }

    /// Whether the access log will read this trail.
    pub fn is_recording(&self) -> bool {
        self.bytes_in.is_some()
    }

    pub fn waited(&mut self, took: Duration) {
        *self.token_wait.get_or_insert(Duration::ZERO) += took;
    }

    /// Asks the pool that sends `req` to note its connection, when the access log will read it.
    pub fn departing<B>(&self, req: &mut Request<B>) {
        if self.is_recording() {
            req.extensions_mut().insert(Report);
        }
    }

    /// Notes the connection `resp` came over, when the access log will read it.
    pub fn arrived<B>(&mut self, resp: &Response<B>) {
        if self.is_recording() {
            self.reuse = Reuse::of(resp);
        }
    }

    /// The app's request body as sent on, counted when recording.
    pub fn request_body(&self, body: Incoming) -> Body {
        match &self.bytes_in {
            None => incoming(body),
            Some(n) => Counted { body, n: n.clone() }.boxed_unsync(),
        }
    }

    /// A body already read whole: `len` bytes.
    pub fn buffered(&self, len: usize) {
        if let Some(n) = &self.bytes_in {
            n.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Request body bytes sent on so far. A streamed body still being sent is counted when
    /// the log line is written, which is when the response has ended.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
            .as_ref()
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// A request body that counts its data bytes as they pass.
struct Counted {
    body: Incoming,
    n: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame {
            if let Some(data) = f.data_ref() {
                self.n.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        frame.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
