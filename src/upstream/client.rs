//! The TLS connector (rustls) for upstream connections, and hyper-util's pooled client for the
//! requests whose destination is not fixed: passthrough and url-less upstreams. Requests to an
//! upstream's `url` go through `pool` instead.
//!
//! One connector (and client) per distinct `ca_file`, built once per snapshot.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::tls::{client_config_with, ReloadingClientCert, TlsError};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// TCP (no Nagle, bounded connect) plus TLS by rustls where the scheme is https, presenting
/// `client_cert` when the server asks (certificate-bound tokens).
pub fn connector(
    ca_file: Option<&Path>,
    connect_timeout: Duration,
    client_cert: Option<Arc<ReloadingClientCert>>,
) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(client_config_with(ca_file, client_cert)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

pub fn build(https: HttpsConnector<HttpConnector>) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(https)
}
