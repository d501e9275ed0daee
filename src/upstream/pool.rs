//! Connections to one upstream origin, in the HTTP version each request needs.
//!
//! An HTTP/1.1 connection does its I/O in a task of its own ([`Conn`]); the request takes it
//! from the pool, sends on it, and its response body puts it back when the body has ended. One
//! the upstream closed while idle is skipped when taken, and a request a reused connection
//! never sent is retried on a fresh one.
//!
//! HTTP/2 requests share the multiplexed connections of [`H2Conns`]. With `protocol: auto`
//! over TLS the first connection asks ALPN for either, and the server's choice is kept for the
//! origin. A WebSocket handshake gets a connection of its own, which is handed to the caller
//! once upgraded.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use futures_util::future::Either;
use http::header::{HeaderValue, HOST, PROXY_AUTHORIZATION};
use http::uri::InvalidUri;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::Connection as _;
use tower_service::Service;

use super::client::{Connector, Connectors};
use super::conn::{Conn, IdleConns, Io};
use super::error::PoolError;
use super::h2::H2Conns;
use super::pooled::{holding, PooledBody};
use super::reuse::{Report, Reuse};
use super::slots::{Slot, Slots};
use super::Wire;
use crate::body::{Body, BoxError};
use crate::config::{OriginLimits, Scheme, UpstreamProtocol, UpstreamUrl};
use crate::egress::Parent;
use crate::trace::Traced;

/// What `protocol: auto` over TLS has learnt of the origin from ALPN.
const ALPN_UNKNOWN: u8 = 0;
const ALPN_HTTP1: u8 = 1;
const ALPN_H2: u8 = 2;

/// How one request goes to the origin: decided once, before its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// HTTP/1.1 on a pooled connection.
    Http1,
    /// A stream on a shared HTTP/2 connection.
    Http2,
    /// The first request of `protocol: auto` over TLS, which asks ALPN.
    Probe,
    /// A WebSocket handshake, on a connection of its own.
    Upgrade,
}

/// The connections to one upstream `url` (`scheme://host:port/base`).
pub struct OriginPool {
    origin: Uri,
    /// The `Host` header for this origin (a bare connection sends none by itself).
    host: HeaderValue,
    /// Path prefix without a trailing slash ("" for none).
    base_path: String,
    connectors: Connectors,
    protocol: UpstreamProtocol,
    tls: bool,
    /// ALPN's answer so far, for `protocol: auto` over TLS.
    alpn: AtomicU8,
    idle: Arc<IdleConns>,
    h2: H2Conns,
    /// `max_connections` and `max_pending`.
    pub slots: Slots,
    /// The parent proxy HTTP/1.1 requests go to in absolute form (a plaintext origin it
    /// carries).
    forward: Option<Arc<Parent>>,
}

impl OriginPool {
    pub fn new(
        url: &UpstreamUrl,
        connectors: Connectors,
        protocol: UpstreamProtocol,
        limits: OriginLimits,
    ) -> Result<Arc<Self>, http::Error> {
        let authority = url.authority();
        let origin = Uri::builder()
            .scheme(url.scheme.as_str())
            .authority(authority.as_str())
            .path_and_query("/")
            .build()?;
        Ok(Arc::new(OriginPool {
            forward: connectors.forwards(&origin).cloned(),
            origin,
            host: HeaderValue::from_str(&authority)?,
            base_path: url.base_path.clone(),
            connectors,
            protocol,
            tls: url.scheme == Scheme::Https,
            alpn: AtomicU8::new(ALPN_UNKNOWN),
            idle: Arc::default(),
            h2: H2Conns::default(),
            slots: Slots::new(limits),
        }))
    }

    /// The origin-form target to send for an app request: the base path, then the request's
    /// own path and query.
    pub fn target(&self, uri: &Uri) -> Result<Uri, InvalidUri> {
        match uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') && self.base_path.is_empty() => {
                Ok(Uri::from(pq.clone()))
            }
            Some(pq) if pq.as_str().starts_with('/') => {
                Uri::try_from(format!("{}{}", self.base_path, pq.as_str()))
            }
            _ => Uri::try_from(format!("{}/", self.base_path)),
        }
    }

    /// `scheme://host:port` of the origin (what a DPoP proof's `htu` starts with).
    pub fn origin_str(&self) -> String {
        let scheme = self.origin.scheme_str().unwrap_or("http");
        format!("{scheme}://{}", self.host.to_str().unwrap_or(""))
    }

    /// Idle HTTP/1.1 connections now.
    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    async fn dial(&self, connector: &Connector) -> Result<Io, PoolError> {
        connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(PoolError::Connect)
    }

    async fn connect(&self, connector: &Connector) -> Result<Conn, PoolError> {
        let io = self.dial(connector).await?;
        Self::http1(io).await
    }

    /// An HTTP/1.1 connection on `io`. A plaintext one speaks on the bare TCP stream: its
    /// task then reads and writes without the TLS and parent wrappers' layers in between, as
    /// every request's answer passes through them.
    async fn http1(io: Io) -> Result<Conn, PoolError> {
        let io = match io {
            MaybeHttpsStream::Http(stream) => match stream.into_tcp() {
                Ok(tcp) => {
                    let (sender, connection) = http1::handshake(tcp).await?;
                    return Ok(Conn::spawn(sender, connection));
                }
                Err(stream) => MaybeHttpsStream::Http(stream),
            },
            tls => tls,
        };
        let (sender, connection) = http1::handshake(io).await?;
        Ok(Conn::spawn(sender, connection))
    }

    /// Sends `req` (its URI from [`OriginPool::target`]) in the HTTP version `wire` and the
    /// upstream's `protocol` call for, and returns the response. A WebSocket handshake's
    /// response carries the upgrade (`hyper::upgrade::on`).
    ///
    /// Not an `async fn`: the usual request (HTTP/1.1 to the origin, a slot free) is sent by
    /// [`OriginPool::send_h1`]'s own future, without a layer of state machine around it that
    /// every poll would pass through. Everything else (a wait for a slot, HTTP/2, a WebSocket
    /// handshake, the first request of `protocol: auto` over TLS) is boxed, so that its state
    /// does not enlarge every request's.
    #[inline]
    pub fn send<'a>(
        self: &'a Arc<Self>,
        req: Request<Body>,
        wire: Wire,
    ) -> impl Future<Output = Result<Response<Body>, PoolError>> + Send + 'a {
        let way = self.way(wire);
        if way == Way::Http1 {
            if let Some(slot) = self.slots.now() {
                return Either::Left(self.send_h1(req, None, slot));
            }
        }
        Either::Right(Box::pin(self.send_other(req, way)))
    }

    /// How a request with this `wire` need goes to the origin (ALPN's answer read once).
    fn way(&self, wire: Wire) -> Way {
        match (wire, self.protocol) {
            (Wire::Http1, _) => Way::Upgrade,
            (Wire::Http2, _) | (Wire::Default, UpstreamProtocol::Http2) => Way::Http2,
            (Wire::Default, UpstreamProtocol::Http1) => Way::Http1,
            (Wire::Default, UpstreamProtocol::Auto) if !self.tls => Way::Http1,
            (Wire::Default, UpstreamProtocol::Auto) => match self.alpn.load(Ordering::Relaxed) {
                ALPN_HTTP1 => Way::Http1,
                ALPN_H2 => Way::Http2,
                _ => Way::Probe,
            },
        }
    }

    /// [`OriginPool::send`] for the rest: waits for a slot if there is none, and sends `way`.
    async fn send_other(
        self: &Arc<Self>,
        req: Request<Body>,
        way: Way,
    ) -> Result<Response<Body>, PoolError> {
        let slot = match self.slots.now() {
            Some(slot) => slot,
            None => {
                // A traced request's wait is a span of its own, from here to its slot.
                let _span = req.extensions().get::<Traced>().map(Traced::queue_span);
                self.slots.queue().await?
            }
        };
        // A WebSocket handshake holds its slot until the answer; the upgraded connection is
        // not counted.
        match way {
            Way::Upgrade => self.upgrade(req).await,
            Way::Http1 => self.send_h1(req, None, slot).await,
            Way::Http2 => self.send_h2(req, &self.connectors.http2, slot).await,
            Way::Probe => Box::pin(self.probe(req, slot)).await,
        }
    }

    /// The first request of `protocol: auto` over TLS: connects offering both versions and
    /// keeps the server's choice.
    async fn probe(
        self: &Arc<Self>,
        req: Request<Body>,
        slot: Slot,
    ) -> Result<Response<Body>, PoolError> {
        let io = self.dial(&self.connectors.any).await?;
        if io.connected().is_negotiated_h2() {
            self.alpn.store(ALPN_H2, Ordering::Relaxed);
            let req = self.absolute(req)?;
            let resp = self.h2.send(|| async { Ok(io) }, req).await?;
            return Ok(holding(resp, slot));
        }
        self.alpn.store(ALPN_HTTP1, Ordering::Relaxed);
        let conn = Self::http1(io).await?;
        self.send_h1(req, Some(conn), slot).await
    }

    async fn send_h2(
        &self,
        req: Request<Body>,
        connector: &Connector,
        slot: Slot,
    ) -> Result<Response<Body>, PoolError> {
        let req = self.absolute(req)?;
        let resp = self.h2.send(|| self.dial(connector), req).await?;
        Ok(holding(resp, slot))
    }

    /// HTTP/2 names the target by `:scheme` and `:authority`, taken from an absolute URI; a
    /// `Host` header would only repeat it.
    fn absolute(&self, mut req: Request<Body>) -> Result<Request<Body>, PoolError> {
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let uri = Uri::builder()
            .scheme(self.origin.scheme_str().unwrap_or("http"))
            .authority(self.host.as_bytes())
            .path_and_query(path)
            .build()
            .map_err(|e| PoolError::Connect(e.into()))?;
        *req.uri_mut() = uri;
        req.headers_mut().remove(HOST);
        Ok(req)
    }

    /// A WebSocket handshake, on a connection of its own that is handed over once upgraded.
    async fn upgrade(&self, mut req: Request<Body>) -> Result<Response<Body>, PoolError> {
        req.headers_mut().insert(HOST, self.host.clone());
        let io = self.dial(&self.connectors.upgrade).await?;
        let (mut sender, conn) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream WebSocket connection ended with an error");
            }
        });
        let report = Report::asked(&req);
        let mut resp = sender.send_request(req).await?;
        if report {
            resp.extensions_mut().insert(Reuse::New);
        }
        Ok(resp.map(|b| b.map_err(BoxError::from).boxed_unsync()))
    }

    /// Sends `req` on `first`, an idle connection, or a new one, and returns the response
    /// whose body keeps driving the connection.
    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<Body>,
        mut first: Option<Conn>,
        slot: Slot,
    ) -> Result<Response<Body>, PoolError> {
        req.headers_mut().insert(HOST, self.host.clone());
        if self.forward.is_some() {
            let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let absolute = format!("http://{}{pq}", self.host.to_str().unwrap_or_default());
            *req.uri_mut() = absolute
                .parse()
                .map_err(|e: InvalidUri| PoolError::Connect(e.into()))?;
        }
        let report = Report::asked(&req);
        loop {
            let (mut conn, reused) = match first.take() {
                Some(conn) => (conn, false),
                None => match self.idle.take() {
                    Some(conn) => (conn, true),
                    // Boxed: connecting is rare, and inline its state (TLS handshake and all)
                    // would make every request's future kilobytes larger to move.
                    None => (Box::pin(self.connect(&self.connectors.http1)).await?, false),
                },
            };
            if let Some(parent) = &self.forward {
                if let Some(auth) = parent.forward_authorization()? {
                    req.headers_mut().insert(PROXY_AUTHORIZATION, auth);
                }
            }
            match poll_fn(|cx| conn.sender.poll_ready(cx)).await {
                Ok(()) => {}
                Err(_) if reused => continue, // it went stale while idle
                Err(e) => return Err(e.into()),
            }
            match conn.sender.try_send_request(req).await {
                Ok(mut resp) => {
                    if let Some(parent) = self.forward.as_ref().filter(|_| resp.status() == 407) {
                        let what = format!("a request to {}", self.origin_str());
                        return Err(parent.rejected(what).into());
                    }
                    if report {
                        let reuse = if reused { Reuse::Reused } else { Reuse::New };
                        resp.extensions_mut().insert(reuse);
                    }
                    let pool = self.idle.clone();
                    return Ok(resp.map(|body| {
                        PooledBody {
                            body,
                            conn: Some(conn),
                            pool,
                            slot: Some(slot),
                        }
                        .map_err(BoxError::from)
                        .boxed_unsync()
                    }));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: safe to send again on another connection.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pool(base_path: &str) -> Arc<OriginPool> {
        let url = UpstreamUrl {
            scheme: Scheme::Https,
            host: "api.example.com".into(),
            port: 8443,
            base_path: base_path.into(),
        };
        let connectors = Connectors::new(
            None,
            Duration::from_secs(1),
            None,
            crate::egress::Resolver::new(None),
            None,
        )
        .unwrap();
        OriginPool::new(
            &url,
            connectors,
            UpstreamProtocol::Auto,
            OriginLimits::default(),
        )
        .unwrap()
    }

    #[test]
    fn targets_are_origin_form_under_the_base_path() {
        let t = |p: &OriginPool, uri: &str| p.target(&uri.parse().unwrap()).unwrap().to_string();
        let plain = pool("");
        assert_eq!(t(&plain, "http://a.example/x?y=1"), "/x?y=1");
        assert_eq!(t(&plain, "/x"), "/x");
        assert_eq!(t(&plain, "http://a.example"), "/");
        let based = pool("/api/v1");
        assert_eq!(t(&based, "/items?q=a%20b"), "/api/v1/items?q=a%20b");
        assert_eq!(t(&based, "http://a.example"), "/api/v1/");
        assert_eq!(plain.host, "api.example.com:8443");
    }
}
