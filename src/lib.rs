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
//! - [`listeners`], [`reload`]: sockets reconciled against the config; reload triggers.
//! - [`admin`]: `/metrics`, `/livez`, `/readyz`, `/status`.
//! - [`metrics`], [`tls`], [`host`]: Prometheus metrics, rustls setup, host matching rules.
//! - [`demo`]: the self-contained `tokenproxy demo`; [`wait`]: `tokenproxy wait` for probes.
//!
//! [`start`] binds every listener and returns a [`Running`] proxy with its bound addresses, so
//! tests run the whole thing in-process on port 0; [`Running::apply`] swaps in a new config and
//! [`Running::shutdown`] drains. [`run`] is `start`, a config watcher and a stop signal.

pub mod admin;
pub mod config;
pub mod demo;
pub mod host;
pub mod listeners;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod snapshot;
pub mod tls;
pub mod token;
pub mod wait;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

pub use config::Config;
use listeners::{Listeners, Role};
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
    #[error("upstream {upstream}: url cannot be used: {reason}")]
    UpstreamUrl { upstream: String, reason: String },
    #[error("metrics setup failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A started proxy: its bound addresses, reload and stop.
pub struct Running {
    pub app: Arc<App>,
    listeners: tokio::sync::Mutex<Listeners>,
    addrs: std::sync::Mutex<BTreeMap<Role, SocketAddr>>,
    jitter: Jitter,
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
    warn_about_secret_files(&config);
    let snapshot = Snapshot::build(config, &metrics, None, jitter)?;
    let config = snapshot.config.clone();
    let app = Arc::new(App {
        snapshot: ArcSwap::from_pointee(snapshot),
        unmatched: metrics::RequestMetrics::new(&metrics, metrics::UNMATCHED),
        metrics,
        stopping: AtomicBool::new(false),
        own_addrs: std::sync::RwLock::new(Vec::new()),
    });
    let mut listeners = Listeners::default();
    listeners.reconcile(&app, &config).await?;
    app.set_own_addrs(&listeners.addrs());
    let running = Running {
        app,
        addrs: std::sync::Mutex::new(listeners.addrs()),
        listeners: tokio::sync::Mutex::new(listeners),
        jitter,
    };
    tracing::info!(
        listeners = ?running.lock_addrs(),
        upstreams = config.upstreams.len(),
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "tokenproxy started"
    );
    Ok(running)
}

fn warn_about_secret_files(config: &Config) {
    for client in config.clients.values() {
        if let Some(path) = client.client_secret.file() {
            if config::secret::readable_by_others(path) {
                tracing::warn!(client = %client.name, path = %path.display(),
                    "the secret file is readable by other users; make it 0400, or 0440 with the process's group (Kubernetes: defaultMode: 0440 and fsGroup)");
            }
        }
    }
}

impl Running {
    fn lock_addrs(&self) -> std::sync::MutexGuard<'_, BTreeMap<Role, SocketAddr>> {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn addr(&self, role: &Role) -> Option<SocketAddr> {
        self.lock_addrs().get(role).copied()
    }

    pub fn forward_addr(&self) -> Option<SocketAddr> {
        self.addr(&Role::Forward)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.addr(&Role::Admin)
    }

    pub fn reverse_addr(&self, upstream: &str) -> Option<SocketAddr> {
        self.addr(&Role::Reverse(upstream.to_string()))
    }

    /// Applies a validated config: builds a new snapshot (carrying over token sources whose
    /// settings did not change), waits for the new sources' first fetch (bounded by
    /// `wait_timeout`) so requests never switch to an upstream without a token, swaps it in,
    /// then reconciles the listeners.
    pub async fn apply(&self, config: Config) -> Result<(), StartError> {
        let mut listeners = self.listeners.lock().await;
        let old = self.app.snapshot.load_full();
        let snap = Snapshot::build(config, &self.app.metrics, Some(&old), self.jitter)?;
        let wait = snap.config.tokens.wait_timeout;
        let fresh = snap.upstreams.iter().filter(|u| {
            !old.upstream(&u.name)
                .is_some_and(|o| Arc::ptr_eq(&o.tokens, &u.tokens))
        });
        let settled = futures_util::future::join_all(fresh.map(|u| u.tokens.settled()));
        let _ = tokio::time::timeout(wait, settled).await;
        for gone in old
            .upstreams
            .iter()
            .filter(|u| snap.upstream(&u.name).is_none())
        {
            self.app.metrics.forget_upstream(&gone.name);
        }
        let config = snap.config.clone();
        self.app.snapshot.store(Arc::new(snap));
        let result = listeners.reconcile(&self.app, &config).await;
        *self.lock_addrs() = listeners.addrs();
        self.app.set_own_addrs(&listeners.addrs());
        result
    }

    /// Graceful stop: `/readyz` turns 503 at once; after `proxy.shutdown_delay` the listeners
    /// stop accepting and in-flight requests get until `proxy.drain_timeout` to finish.
    /// Returns true if everything drained in time.
    pub async fn shutdown(&self) -> bool {
        self.app.stopping.store(true, Ordering::Relaxed);
        let proxy = self.app.snapshot.load().config.proxy.clone();
        if !proxy.shutdown_delay.is_zero() {
            tracing::info!(
                delay_s = proxy.shutdown_delay.as_secs_f64(),
                "not ready; waiting before closing listeners"
            );
            tokio::time::sleep(proxy.shutdown_delay).await;
        }
        let drained = self
            .listeners
            .lock()
            .await
            .shutdown(proxy.drain_timeout)
            .await;
        if drained {
            tracing::info!("stopped: all connections drained");
        } else {
            tracing::warn!(
                deadline_s = proxy.drain_timeout.as_secs(),
                "stopped: drain deadline passed with requests still in flight"
            );
        }
        drained
    }
}

/// Where the running config came from, for reloads: the file and the text that was loaded.
pub struct ConfigSource {
    pub path: std::path::PathBuf,
    pub loaded: String,
}

/// Starts the proxy and runs it until `shutdown` resolves, then drains. With a `source`, the
/// file is watched and reloaded on change or SIGHUP.
pub async fn run(
    config: Config,
    source: Option<ConfigSource>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let hup = source.as_ref().map(|_| reload::hangup());
    let running = Arc::new(start(config).await?);
    let (stop_watch, watch_stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = source.map(|src| {
        let stopped = async move {
            let _ = watch_stopped.await;
        };
        let hup = hup.unwrap_or_else(reload::Hangup::never);
        let poll = reload::POLL_INTERVAL;
        tokio::spawn(reload::watch(
            running.clone(),
            src.path,
            Some(src.loaded),
            poll,
            hup,
            stopped,
        ))
    });
    shutdown.await;
    tracing::info!("stop signal received; draining");
    let _ = stop_watch.send(());
    if let Some(w) = watcher {
        let _ = w.await;
    }
    running.shutdown().await;
    Ok(())
}
