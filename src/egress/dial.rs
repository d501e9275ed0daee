//! The TCP connector under the TLS connectors: straight to the destination, or by the parent
//! proxy. Through the parent, an `https` destination is a `CONNECT` tunnel with TLS inside
//! (client certificates and verification exactly as direct); a plaintext one is either a
//! tunnel too ([`Plain::Tunnel`]: HTTP/2 prior knowledge, WebSocket handshakes) or a
//! connection to the parent marked as proxied ([`Plain::Forward`]), on which requests are
//! sent in absolute form with the parent's `Proxy-Authorization`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::parent::{Parent, ParentError};
use super::resolve::Resolver;
use super::tunnel::tunnel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a plaintext destination goes through the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// Requests in absolute form to the parent (what a proxy is for; CONNECT to port 80 is
    /// refused by most corporate proxies).
    Forward,
    /// A `CONNECT` tunnel: for traffic an absolute-form request cannot carry.
    Tunnel,
}

/// Connects to a destination URI, directly or through the parent.
#[derive(Clone)]
pub struct Dial {
    direct: HttpConnector<Resolver>,
    resolver: Resolver,
    parent: Option<Arc<Parent>>,
    plain: Plain,
    timeout: Duration,
}

impl Dial {
    /// `timeout` bounds a connection's opening: TCP, and through the parent the `CONNECT`.
    pub fn new(resolver: Resolver, timeout: Duration, parent: Option<Arc<Parent>>) -> Dial {
        let mut direct = HttpConnector::new_with_resolver(resolver.clone());
        direct.enforce_http(false);
        direct.set_nodelay(true);
        direct.set_connect_timeout(Some(timeout));
        Dial {
            direct,
            resolver,
            parent,
            plain: Plain::Forward,
            timeout,
        }
    }

    /// The same connector, taking plaintext destinations through the parent as `plain` says.
    pub fn with_plain(mut self, plain: Plain) -> Dial {
        self.plain = plain;
        self
    }

    /// The parent, if requests to `dst` are sent to it in absolute form over this connector.
    pub fn forwards(&self, dst: &Uri) -> Option<&Arc<Parent>> {
        let plain = dst.scheme() == Some(&http::uri::Scheme::HTTP);
        self.parent
            .as_ref()
            .filter(|p| plain && self.plain == Plain::Forward && p.carries(dst))
    }
}

type Dialing = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

impl Service<Uri> for Dial {
    type Response = Stream;
    type Error = BoxError;
    type Future = Dialing;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self.parent.clone().filter(|p| p.carries(&dst)) {
            None => {
                let connecting = self.direct.call(dst);
                Box::pin(async move { Ok(Stream::new(connecting.await?, Bytes::new(), false)) })
            }
            Some(parent) => {
                let (resolver, plain, timeout) = (self.resolver.clone(), self.plain, self.timeout);
                Box::pin(through(parent, resolver, plain, timeout, dst))
            }
        }
    }
}

/// A connection to `dst` by the parent. The deny list, if any, is applied to what the name
/// resolves to here; a name that does not resolve here is left to the parent.
async fn through(
    parent: Arc<Parent>,
    resolver: Resolver,
    plain: Plain,
    timeout: Duration,
    dst: Uri,
) -> Result<Stream, BoxError> {
    let host = dst.host().ok_or("the destination names no host")?;
    let tls = dst.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = dst.port_u16().unwrap_or(if tls { 443 } else { 80 });
    resolver.refuse_denied(host, port).await?;
    let opening = async {
        if !tls && plain == Plain::Forward {
            parent.authorization()?;
            let tcp = parent.connect().await?;
            Ok::<_, ParentError>(Stream::new(TokioIo::new(tcp), Bytes::new(), true))
        } else {
            let t = tunnel(&parent, host, port).await?;
            Ok(Stream::new(TokioIo::new(t.tcp), t.early, false))
        }
    };
    match tokio::time::timeout(timeout, opening).await {
        Ok(stream) => Ok(stream?),
        Err(_) => Err(Box::new(ParentError::Unreachable {
            parent: parent.authority().to_string(),
            reason: format!("no connection through it within {}s", timeout.as_secs_f32()),
        })),
    }
}

/// A TCP connection to the destination or the parent, with what the parent sent ahead of
/// the far side's first read, and whether requests on it go to the parent in absolute form.
pub struct Stream {
    io: TokioIo<TcpStream>,
    early: Bytes,
    proxied: bool,
}

impl Stream {
    fn new(io: TokioIo<TcpStream>, early: Bytes, proxied: bool) -> Stream {
        Stream { io, early, proxied }
    }

    /// The TCP connection alone, when the parent sent nothing ahead of the far side's first
    /// read: for a caller that keeps the connection's other facts itself, and would rather
    /// its reads did not pass through this wrapper. (Whether requests go in absolute form is
    /// then the caller's to remember.)
    pub fn into_tcp(self) -> Result<TokioIo<TcpStream>, Stream> {
        match self.early.is_empty() {
            true => Ok(self.io),
            false => Err(self),
        }
    }
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            self.early.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Stream {
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

    #[tokio::test]
    async fn the_bare_stream_is_given_only_when_nothing_was_read_ahead() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let direct = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        assert!(Stream::new(direct, Bytes::new(), true).into_tcp().is_ok());
        let tunnelled = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let early = Stream::new(tunnelled, Bytes::from_static(b"HTTP/1.1 200"), false);
        let kept = early
            .into_tcp()
            .expect_err("the parent's early bytes keep the wrapper");
        assert_eq!(
            &kept.early[..],
            b"HTTP/1.1 200",
            "and are still to be read first"
        );
    }
}
