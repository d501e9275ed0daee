//! Connections to one upstream origin, driven inside the request's own task.
//!
//! hyper-util's pooled client runs every connection in a task of its own, so a request crosses
//! tasks on the way out, again on the way back, and once more for each body chunk. Here the
//! task serving the app's request polls the upstream connection itself while it waits for the
//! response head and while the response body streams, and puts the connection back in the pool
//! when the body has ended. Idle connections are not polled: one the upstream closed meanwhile
//! is noticed when it is taken, and a request it never sent is retried on a fresh connection.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::uri::InvalidUri;
use http::{Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tower_service::Service;

use crate::body::{Body, BoxError};
use crate::config::UpstreamUrl;

type Io = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Idle connections kept per origin.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect: {0}")]
    Connect(BoxError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("connection closed before the request could be sent")]
    Closed,
}

/// One HTTP/1.1 connection: the handle to send on and the future that does its I/O.
struct Conn {
    sender: SendRequest<Body>,
    /// `None` once the connection has ended (a finished future must not be polled again).
    driver: Option<Pin<Box<Connection<Io, Body>>>>,
    idle_since: Instant,
}

impl Conn {
    /// Lets the connection do its I/O; notes when it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver {
            if driver.as_mut().poll(cx).is_ready() {
                self.driver = None;
            }
        }
    }

    fn alive(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }
}

/// The connections to one upstream `url` (`scheme://host:port/base`).
pub struct OriginPool {
    origin: Uri,
    /// The `Host` header for this origin (a bare connection sends none by itself).
    host: HeaderValue,
    /// Path prefix without a trailing slash ("" for none).
    base_path: String,
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Vec<Conn>>,
}

impl OriginPool {
    pub fn new(
        url: &UpstreamUrl,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Arc<Self>, http::Error> {
        let authority = url.authority();
        Ok(Arc::new(OriginPool {
            origin: Uri::builder()
                .scheme(url.scheme.as_str())
                .authority(authority.as_str())
                .path_and_query("/")
                .build()?,
            host: HeaderValue::from_str(&authority)?,
            base_path: url.base_path.clone(),
            connector,
            idle: Mutex::new(Vec::new()),
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

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.alive() && conn.idle_since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps a connection for reuse if it is open and idle; one still busy (say, sending a
    /// request body the upstream answered without reading) is closed instead.
    fn put(&self, mut conn: Conn) {
        if !conn.alive() || !conn.sender.is_ready() {
            return;
        }
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, PoolError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (sender, driver) = http1::handshake(io).await?;
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver)),
            idle_since: Instant::now(),
        })
    }

    /// Sends `req` (its URI from [`OriginPool::target`]; `Host` is set to the origin's) on an
    /// idle connection, or a new one, and returns the response whose body keeps driving it.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
    ) -> Result<Response<PooledBody>, PoolError> {
        req.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                // Boxed: connecting is rare, and inline its state (TLS handshake and all)
                // would make every request's future kilobytes larger to move.
                None => (Box::pin(self.connect()).await?, false),
            };
            let ready = poll_fn(|cx| {
                conn.drive(cx);
                if !conn.alive() {
                    return Poll::Ready(Err(PoolError::Closed));
                }
                conn.sender.poll_ready(cx).map_err(PoolError::from)
            })
            .await;
            match ready {
                Ok(()) => {}
                Err(_) if reused => continue, // it went stale while idle
                Err(e) => return Err(e),
            }
            let mut sent = Box::pin(conn.sender.try_send_request(req));
            let result = poll_fn(|cx| {
                conn.drive(cx);
                sent.as_mut().poll(cx)
            })
            .await;
            match result {
                Ok(resp) => {
                    let pool = self.clone();
                    return Ok(resp.map(|body| PooledBody {
                        body,
                        conn: Some(conn),
                        pool,
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

/// A response body that drives its connection and returns it to the pool at the end.
pub struct PooledBody {
    body: Incoming,
    conn: Option<Conn>,
    pool: Arc<OriginPool>,
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(conn) = &mut this.conn {
            conn.drive(cx);
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            if let Some(conn) = this.conn.take() {
                this.pool.put(conn);
            }
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
                self.pool.put(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scheme;

    fn pool(base_path: &str) -> Arc<OriginPool> {
        let url = UpstreamUrl {
            scheme: Scheme::Https,
            host: "api.example.com".into(),
            port: 8443,
            base_path: base_path.into(),
        };
        let connector =
            crate::upstream::client::connector(None, Duration::from_secs(1), None).unwrap();
        OriginPool::new(&url, connector).unwrap()
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
