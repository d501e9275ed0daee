//! Why a proxy could not start, or a new config could not be applied.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("upstream {upstream}: url cannot be used: {reason}")]
    UpstreamUrl { upstream: String, reason: String },
    #[error(transparent)]
    Intercept(#[from] crate::intercept::InterceptError),
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
    #[error(transparent)]
    Trace(#[from] crate::trace::ExportError),
    #[error("clients.{client}.dpop_key: {reason}")]
    DpopKey { client: String, reason: String },
    #[error("proxy.upstream_proxy.url {0} is one of tokenproxy's own listeners: every outbound connection would loop (is the app's HTTP_PROXY expanded into the config?)")]
    ParentLoop(String),
}
