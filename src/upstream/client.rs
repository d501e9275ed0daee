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

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::resolve::Resolver;
use super::reuse::Marked;
use super::Wire;
use crate::body::Body;
use crate::config::UpstreamProtocol;
use crate::tls::{client_config_with, ReloadingClientCert, TlsError};

pub type HttpClient = Client<Marked<Connector>, Body>;
pub type Connector = HttpsConnector<HttpConnector<Resolver>>;

/// TCP (no Nagle, bounded connect) plus TLS by rustls where the scheme is https, presenting
/// the client certificate when the server asks (certificate-bound tokens).
#[derive(Clone)]
pub struct Connectors {
    /// ALPN `http/1.1`.
    pub http1: Connector,
    /// ALPN `h2`.
    pub http2: Connector,
    /// ALPN `h2`, `http/1.1`.
    pub any: Connector,
}

impl Connectors {
    /// `resolver` says which addresses may be connected to (all, for upstreams).
    pub fn new(
        ca_file: Option<&Path>,
        connect_timeout: Duration,
        client_cert: Option<Arc<ReloadingClientCert>>,
        resolver: Resolver,
    ) -> Result<Connectors, TlsError> {
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let tls = client_config_with(ca_file, client_cert)?;
        let builder = || {
            HttpsConnectorBuilder::new()
                .with_tls_config(tls.clone())
                .https_or_http()
        };
        Ok(Connectors {
            http1: builder().enable_http1().wrap_connector(http.clone()),
            http2: builder().enable_http2().wrap_connector(http.clone()),
            any: builder().enable_all_versions().wrap_connector(http),
        })
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
}

impl Clients {
    /// `report`: responses say whether their connection was new (for the access log).
    pub fn new(connectors: &Connectors, protocol: UpstreamProtocol, report: bool) -> Clients {
        let http1 = build(connectors.http1.clone(), false, report);
        let http2 = build(connectors.http2.clone(), true, report);
        let default = match protocol {
            UpstreamProtocol::Auto => build(connectors.any.clone(), false, report),
            UpstreamProtocol::Http1 => http1.clone(),
            UpstreamProtocol::Http2 => http2.clone(),
        };
        Clients {
            default,
            http1,
            http2,
        }
    }

    /// The client for a request that must go over `wire`.
    pub fn for_wire(&self, wire: Wire) -> &HttpClient {
        match wire {
            Wire::Default => &self.default,
            Wire::Http1 => &self.http1,
            Wire::Http2 => &self.http2,
        }
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
