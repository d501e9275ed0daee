//! tokenproxy: an OAuth 2.0 client-credentials sidecar.
//!
//! It obtains a token per upstream from an authorization server, keeps it fresh, and adds
//! `Authorization: Bearer <token>` to the app's outgoing requests. The layout follows the flow
//! of a request:
//!
//! - [`config`]: the YAML file, parsed then validated into one immutable [`Config`].
//! - [`snapshot`]: what requests read (routes, upstreams, token sources) behind one `ArcSwap`.
//! - [`token`]: the token endpoint client and the per-upstream cache with background refresh.
//! - [`proxy`]: the forward (`HTTP_PROXY`) and reverse listeners, header rules, forwarding.
//! - [`admin`]: `/metrics`, `/livez`, `/readyz`, `/status`.
//! - [`metrics`], [`tls`], [`host`]: Prometheus metrics, rustls setup, host matching rules.
//! - [`demo`]: the self-contained `tokenproxy demo`.
//!
//! [`start`] binds every listener and returns a [`Running`] proxy with its bound addresses, so
//! tests run the whole thing in-process on port 0; [`run`] is `start` plus a stop signal.

pub mod admin;
pub mod config;
pub mod demo;
pub mod host;
pub mod metrics;
pub mod proxy;
pub mod snapshot;
pub mod tls;
pub mod token;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
use metrics::Metrics;
use snapshot::{App, Snapshot};
use token::source::Jitter;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A started proxy: its bound addresses and the handle to stop it.
pub struct Running {
    pub forward_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    /// Reverse listeners by upstream name.
    pub reverse_addrs: BTreeMap<String, SocketAddr>,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    drain_timeout: Duration,
}

/// Production jitter: uniform in [0, 1).
pub fn random_jitter() -> f64 {
    rand::random::<f64>()
}

/// Binds every listener and starts fetching tokens.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, random_jitter).await
}

/// [`start`] with a chosen jitter source (tests pass a constant for exact timings).
pub async fn start_with(config: Config, jitter: Jitter) -> Result<Running, StartError> {
    let metrics = Metrics::new()?;
    let drain_timeout = config.proxy.drain_timeout;
    let snapshot = Snapshot::build(config, &metrics, None, jitter)?;
    let config = snapshot.config.clone();
    let app = Arc::new(App {
        snapshot: ArcSwap::from_pointee(snapshot),
        metrics,
        stopping: AtomicBool::new(false),
    });
    let (stop, stop_rx) = watch::channel(false);
    let mut running = Running {
        forward_addr: None,
        admin_addr: None,
        reverse_addrs: BTreeMap::new(),
        app: app.clone(),
        stop,
        servers: Vec::new(),
        drain_timeout,
    };
    if let Some(addr) = config.proxy.listen {
        if !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the forward listener is not on loopback: anyone who can reach it can spend this proxy's tokens");
        }
        let listener = bind(addr, "forward listener").await?;
        running.forward_addr = Some(listener.local_addr().unwrap_or(addr));
        let app = app.clone();
        let handler = move |req| proxy::forward::handle(app.clone(), req);
        running.servers.push(tokio::spawn(proxy::server::serve(
            listener,
            handler,
            stop_rx.clone(),
        )));
    }
    for u in &config.upstreams {
        let Some(addr) = u.listen else { continue };
        let listener = bind(addr, &format!("reverse listener of {}", u.name)).await?;
        running
            .reverse_addrs
            .insert(u.name.clone(), listener.local_addr().unwrap_or(addr));
        let (app, name): (_, Arc<str>) = (app.clone(), Arc::from(u.name.as_str()));
        let handler = move |req| proxy::reverse::handle(app.clone(), name.clone(), req);
        running.servers.push(tokio::spawn(proxy::server::serve(
            listener,
            handler,
            stop_rx.clone(),
        )));
    }
    if let Some(addr) = config.admin.listen {
        let listener = bind(addr, "admin listener").await?;
        running.admin_addr = Some(listener.local_addr().unwrap_or(addr));
        let app = app.clone();
        let handler = move |req| admin::handle(app.clone(), req);
        running.servers.push(tokio::spawn(proxy::server::serve(
            listener,
            handler,
            stop_rx.clone(),
        )));
    }
    tracing::info!(
        forward = ?running.forward_addr,
        admin = ?running.admin_addr,
        reverse = ?running.reverse_addrs,
        upstreams = config.upstreams.len(),
        "tokenproxy started"
    );
    Ok(running)
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr,
            what: what.to_string(),
            source,
        })
}

impl Running {
    /// Stops accepting, lets in-flight requests finish within the drain deadline.
    /// Returns true if everything drained in time.
    pub async fn shutdown(self) -> bool {
        self.app.stopping.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        let all = futures_util::future::join_all(self.servers);
        let drained = tokio::time::timeout(self.drain_timeout, all).await.is_ok();
        if drained {
            tracing::info!("stopped: all connections drained");
        } else {
            tracing::warn!(
                deadline_s = self.drain_timeout.as_secs(),
                "stopped: drain deadline passed with requests still in flight"
            );
        }
        drained
    }
}

/// Starts the proxy and runs it until `shutdown` resolves, then drains.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let running = start(config).await?;
    shutdown.await;
    tracing::info!("stop signal received; draining");
    running.shutdown().await;
    Ok(())
}
