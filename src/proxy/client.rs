//! The pooled HTTP/1.1 client that carries requests to upstreams, TLS by rustls.
//!
//! One client per distinct `ca_file` (plus the default), shared by every upstream that uses
//! it, so connections are pooled per origin across requests.

use std::path::Path;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::Body;
use crate::tls::{client_config, TlsError};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

pub fn build(ca_file: Option<&Path>, connect_timeout: Duration) -> Result<HttpClient, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_file)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(https))
}
