//! The TLS connectors (rustls) for upstream connections, and hyper-util's pooled clients for
//! the requests whose destination is not fixed: passthrough and url-less upstreams. Requests
//! to an upstream's `url` go through `pool` instead.
//!
//! One set of connectors (and clients) per distinct `ca_file` and client certificate, built
//! once per snapshot. A set is one TLS configuration offered three ways by ALPN: HTTP/1.1
//! only, HTTP/2 only, and either (the server picks).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, PROXY_AUTHORIZATION};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::reuse::Marked;
use super::Wire;
use crate::body::Body;
use crate::config::UpstreamProtocol;
use crate::egress::{Dial, Parent, ParentError, Plain, Resolver};
use crate::tls::{client_config_with, ReloadingClientCert, TlsError};

pub type HttpClient = Client<Marked<Connector>, Body>;
pub type Connector = HttpsConnector<Dial>;

/// TCP (no Nagle, bounded connect) or a tunnel through the parent proxy, plus TLS by rustls
/// where the scheme is https, presenting the client certificate when the server asks
/// (certificate-bound tokens).
#[derive(Clone)]
pub struct Connectors {
    /// ALPN `http/1.1`; plaintext through the parent in absolute form.
    pub http1: Connector,
    /// ALPN `h2`; plaintext (h2c) through the parent in a tunnel.
    pub http2: Connector,
    /// ALPN `h2`, `http/1.1`; plaintext through the parent in absolute form.
    pub any: Connector,
    /// ALPN `http/1.1` for WebSocket handshakes: plaintext through the parent in a tunnel,
    /// since an absolute-form request cannot be upgraded through most proxies.
    pub upgrade: Connector,
    /// How plaintext HTTP/1.1 is sent: to the parent in absolute form, or direct.
    dial: Dial,
}

impl Connectors {
    /// `resolver` says which addresses may be connected to (all, for upstreams); `parent`,
    /// which proxy the connections go through (`None`: all direct).
    pub fn new(
        ca_file: Option<&Path>,
        connect_timeout: Duration,
        client_cert: Option<Arc<ReloadingClientCert>>,
        resolver: Resolver,
        parent: Option<Arc<Parent>>,
    ) -> Result<Connectors, TlsError> {
        let dial = Dial::new(resolver, connect_timeout, parent);
        let tunnel = dial.clone().with_plain(Plain::Tunnel);
        let tls = client_config_with(ca_file, client_cert)?;
        let builder = || {
            HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
        };
        Ok(Connectors {
            http1: builder().enable_http1().wrap_connector(dial.clone()),
            http2: builder().enable_http2().wrap_connector(tunnel.clone()),
            any: builder().enable_all_versions().wrap_connector(dial.clone()),
            upgrade: builder().enable_http1().wrap_connector(tunnel),
            dial,
        })
    }

    /// The parent, if HTTP/1.1 requests to `dst` go to it in absolute form (plaintext
    /// destinations it carries).
    pub fn forwards(&self, dst: &Uri) -> Option<&Arc<Parent>> {
        self.dial.forwards(dst)
    }
}

/// The pooled clients for requests sent where they ask to go, one per way of speaking.
pub struct Clients {
    /// HTTP/1.1, or what ALPN picks over TLS (`protocol: auto`), or the configured version.
    default: HttpClient,
    /// HTTP/1.1 only: WebSocket handshakes.
    http1: HttpClient,
    /// HTTP/2 only (h2c on plaintext): gRPC.
    http2: HttpClient,
    /// Whether `default` speaks HTTP/1.1 to plaintext destinations (not `protocol: http2`).
    default_http1: bool,
    connectors: Connectors,
}

/// Why a request through [`Clients`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Send(#[from] hyper_util::client::legacy::Error),
    /// The parent proxy refused an absolute-form request (407).
    #[error(transparent)]
    Parent(#[from] ParentError),
}

impl Clients {
    /// `report`: responses say whether their connection was new (for the access log).
    pub fn new(connectors: &Connectors, protocol: UpstreamProtocol, report: bool) -> Clients {
        let http1 = build(connectors.upgrade.clone(), false, report);
        let http2 = build(connectors.http2.clone(), true, report);
        let default = match protocol {
            UpstreamProtocol::Auto => build(connectors.any.clone(), false, report),
            UpstreamProtocol::Http1 => build(connectors.http1.clone(), false, report),
            UpstreamProtocol::Http2 => http2.clone(),
        };
        Clients {
            default,
            http1,
            http2,
            default_http1: protocol != UpstreamProtocol::Http2,
            connectors: connectors.clone(),
        }
    }

    /// Sends `req` (an absolute URI) over `wire`, with the `Host` the client writes from that
    /// URI in place of any the request had. A plaintext HTTP/1.1 request the parent proxy
    /// carries goes to it in absolute form with its `Proxy-Authorization`, and the parent's
    /// 407 is its refusal, not the destination's answer.
    pub async fn request(
        &self,
        mut req: Request<Body>,
        wire: Wire,
    ) -> Result<Response<Incoming>, ClientError> {
        req.headers_mut().remove(HOST);
        let client = match wire {
            Wire::Default => &self.default,
            Wire::Http1 => return Ok(self.http1.request(req).await?),
            Wire::Http2 => return Ok(self.http2.request(req).await?),
        };
        let parent = match self.default_http1 {
            true => self.connectors.forwards(req.uri()),
            false => None,
        };
        let Some(parent) = parent else {
            return Ok(client.request(req).await?);
        };
        let target = req.uri().authority().map(|a| a.to_string());
        if let Some(auth) = parent.forward_authorization()? {
            req.headers_mut().insert(PROXY_AUTHORIZATION, auth);
        }
        let resp = client.request(req).await?;
        if resp.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            let what = format!("a request to {}", target.unwrap_or_default());
            return Err(parent.rejected(what).into());
        }
        Ok(resp)
    }
}

fn build(https: Connector, http2_only: bool, report: bool) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .http2_only(http2_only)
        .build(Marked {
            inner: https,
            on: report,
        })
}
