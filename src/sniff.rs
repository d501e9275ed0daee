//! What a client sends first on a connection (a listener's, or a CONNECT tunnel's), and a
//! stream that gives those bytes back.
//!
//! Only the first bytes are looked at, never parsed as a protocol: a TLS handshake record
//! starts with 0x16; an HTTP/1 request with a method token and a space; the HTTP/2
//! prior-knowledge preface with `PRI * HTTP/2.0`. TLS and HTTP themselves are parsed by
//! rustls and hyper, which read the sniffed bytes again through [`Prefixed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What the tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    Tls,
    Http1,
    Http2Preface,
    Other,
}

/// Reads until the opening is known (a few bytes), returning it and the bytes read.
pub async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Opening, Bytes)> {
    // Whatever the first read brings is given back, so one read usually holds a whole
    // request head and the protocol that follows does not need a second.
    let mut seen = Vec::with_capacity(1024);
    loop {
        if let Some(opening) = classify(&seen) {
            return Ok((opening, Bytes::from(seen)));
        }
        if io.read_buf(&mut seen).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The opening, once enough bytes are there to tell; `None` to read more.
pub fn classify(seen: &[u8]) -> Option<Opening> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let first = *seen.first()?;
    if first == 0x16 {
        return Some(Opening::Tls);
    }
    if seen.len() < PREFACE.len() && PREFACE.starts_with(seen) {
        return None;
    }
    if seen.starts_with(PREFACE) {
        return Some(Opening::Http2Preface);
    }
    // A method token (RFC 9110 §9: upper-case letters in practice) up to its space.
    match seen.iter().position(|&b| b == b' ') {
        Some(0) => Some(Opening::Other),
        Some(n) if seen[..n].iter().all(u8::is_ascii_uppercase) => Some(Opening::Http1),
        Some(_) => Some(Opening::Other),
        None if seen.len() < 16 && seen.iter().all(u8::is_ascii_uppercase) => None,
        None => Some(Opening::Other),
    }
}

/// An I/O stream that first yields `prefix`, then reads from `inner`.
pub struct Prefixed<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: Bytes, inner: I) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if !self.prefix.has_remaining() {
                // Give the sniff buffer back now, not when the connection ends.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings_are_told_apart_from_their_first_bytes() {
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Opening::Tls));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Opening::Http1));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Opening::Http1));
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM"),
            Some(Opening::Http2Preface)
        );
        assert_eq!(
            classify(b"PR"),
            None,
            "could still be the preface or a method"
        );
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"\x00\x01garbage"), Some(Opening::Other));
        assert_eq!(classify(b" GET"), Some(Opening::Other));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Opening::Other));
        assert_eq!(
            classify(b"ABCDEFGHIJKLMNOPQRS"),
            Some(Opening::Other),
            "no endless method"
        );
        assert_eq!(classify(b""), None);
    }

    #[tokio::test]
    async fn the_sniffed_bytes_are_read_again() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET /x HTTP/1.1\r\n")
            .await
            .unwrap();
        drop(a);
        let mut b = b;
        let (opening, seen) = sniff(&mut b).await.unwrap();
        assert_eq!(opening, Opening::Http1);
        let mut all = String::new();
        Prefixed::new(seen, b)
            .read_to_string(&mut all)
            .await
            .unwrap();
        assert_eq!(all, "GET /x HTTP/1.1\r\n");
    }
}
