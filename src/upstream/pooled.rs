//! Response bodies that hold what their request took from an origin's pool: the HTTP/1.1
//! connection (put back when the body ends) and the slot, released after the connection is
//! back so that the next request finds it idle.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::conn::{Conn, IdleConns};
use super::slots::{Holding, Slot};
use crate::body::{Body, BoxError};

/// An HTTP/2 response whose body holds the stream's slot.
pub fn holding<B>(resp: Response<B>, slot: Slot) -> Response<Body>
where
    B: HttpBody<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    resp.map(|body| {
        let slot = Some(slot);
        Holding { body, slot }.map_err(Into::into).boxed_unsync()
    })
}

/// A response body that returns its connection to the pool at the end, then releases its slot
/// (in that order, so that the next request finds the connection idle).
pub struct PooledBody {
    pub body: Incoming,
    pub conn: Option<Conn>,
    pub pool: Arc<IdleConns>,
    pub slot: Option<Slot>,
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            if let Some(conn) = this.conn.take() {
                this.pool.put(conn, this.slot.take());
            }
            this.slot = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body that was complete (or empty) but never polled to its end still leaves a
        // reusable connection; one dropped half-read does not.
        if self.body.is_end_stream() {
            if let Some(conn) = self.conn.take() {
                self.pool.put(conn, self.slot.take());
            }
        }
    }
}
