//! Whether a response came over a new upstream connection or a reused one (for the access
//! log).
//!
//! The pools of this module say so by a [`Reuse`] in the response's extensions, when the
//! request carries a [`Report`] mark. hyper-util's
//! pooled client cannot, so its connector wraps each connection it makes with a flag that the
//! client copies into the extensions of every response on that connection; the first response
//! to see the flag is the one that opened it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Response, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

/// Put in a request's extensions to have its pool note [`Reuse`] on the response. Only the
/// access log reads it, so without the mark nothing is noted (an extension costs an
/// allocation per response).
#[derive(Debug, Clone, Copy)]
pub struct Report;

impl Report {
    /// Whether `req` asks for a [`Reuse`] note.
    pub fn asked<B>(req: &http::Request<B>) -> bool {
        req.extensions().get::<Report>().is_some()
    }
}

/// How the request reached the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// On a connection opened for it.
    New,
    /// On a connection that had carried requests before.
    Reused,
}

impl Reuse {
    /// What the pool that sent `resp` noted, if anything.
    pub fn of<B>(resp: &Response<B>) -> Option<Reuse> {
        let ext = resp.extensions();
        if let Some(reuse) = ext.get::<Reuse>() {
            return Some(*reuse);
        }
        ext.get::<FirstUse>()
            .map(|first| match first.0.swap(true, Ordering::Relaxed) {
                false => Reuse::New,
                true => Reuse::Reused,
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reuse::New => "new",
            Reuse::Reused => "reused",
        }
    }
}

/// Set once a response on the connection has been seen.
#[derive(Clone)]
struct FirstUse(Arc<AtomicBool>);

/// A connector whose connections tell the first response apart from the rest, when `on`
/// (the access log is): the client copies the flag into every response's extensions, an
/// allocation per response that nothing reads otherwise.
#[derive(Clone)]
pub struct Marked<C> {
    pub inner: C,
    pub on: bool,
}

impl<C> Service<Uri> for Marked<C>
where
    C: Service<Uri> + Send,
    C::Future: Send + 'static,
{
    type Response = MarkedIo<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let first = self.on.then(|| FirstUse(Arc::new(AtomicBool::new(false))));
        Box::pin(async move {
            Ok(MarkedIo {
                io: connecting.await?,
                first,
            })
        })
    }
}

/// A connection carrying its [`FirstUse`] flag, if marking is on.
pub struct MarkedIo<I> {
    io: I,
    first: Option<FirstUse>,
}

impl<I: Connection> Connection for MarkedIo<I> {
    fn connected(&self) -> Connected {
        match &self.first {
            Some(first) => self.io.connected().extra(first.clone()),
            None => self.io.connected(),
        }
    }
}

impl<I: Read + Unpin> Read for MarkedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for MarkedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_response_on_a_marked_connection_is_new_and_the_rest_reused() {
        let first = FirstUse(Arc::new(AtomicBool::new(false)));
        let resp = || {
            let mut r = Response::new(());
            r.extensions_mut().insert(first.clone());
            r
        };
        assert_eq!(Reuse::of(&resp()), Some(Reuse::New));
        assert_eq!(Reuse::of(&resp()), Some(Reuse::Reused));
        let mut pooled = Response::new(());
        pooled.extensions_mut().insert(Reuse::Reused);
        assert_eq!(Reuse::of(&pooled), Some(Reuse::Reused));
        assert_eq!(Reuse::of(&Response::new(())), None);
    }
}
