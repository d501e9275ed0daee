//! A started proxy: [`start`] binds every listener and starts fetching tokens; the
//! [`Running`] it returns applies new configs and drains on stop.
//!
//! Tests call [`start`] with a config whose listeners are on port 0 and read the bound
//! addresses back, so the whole proxy runs in-process.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::{Config, Role};
use crate::error::StartError;
use crate::intercept::Interceptor;
use crate::listeners::Listeners;
use crate::metrics::Metrics;
use crate::sink::{Destination, Sink};
use crate::snapshot::{App, Snapshot};
use crate::token::timing::Jitter;
use crate::trace::Tracer;

/// How long a stop waits for the last spans to reach the collector.
const TRACE_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// A started proxy: its bound addresses, reload and stop.
pub struct Running {
    pub app: Arc<App>,
    listeners: tokio::sync::Mutex<Listeners>,
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
    start_logging_to(config, jitter, Destination::Stdout).await
}

/// [`start_with`], the access log written to `access_log` (`exec` keeps stdout for its
/// command; tests read the lines from memory).
pub async fn start_logging_to(
    config: Config,
    jitter: Jitter,
    access_log: Destination,
) -> Result<Running, StartError> {
    let metrics = Metrics::new()?;
    warn_about_secret_files(&config);
    let interceptor = Interceptor::from_config(&config, &metrics.intercept)?;
    let tracer = match &config.tracing {
        None => None,
        Some(t) => Some(Tracer::start(t, &metrics.trace)?),
    };
    let snapshot = Snapshot::build(config, &metrics, tracer.as_ref(), None, jitter)?;
    let config = snapshot.config.clone();
    let app = Arc::new(App::new(
        snapshot,
        metrics,
        interceptor,
        Sink::new(access_log),
        tracer,
    ));
    let mut listeners = Listeners::default();
    listeners.reconcile(&app, &config).await?;
    if let Some(parent) = &config.proxy.upstream_proxy {
        // Listeners on port 0 are known only now (`exec --ephemeral`); fixed ones were
        // checked with the config.
        if app.is_own_listener(&parent.host, parent.port) {
            return Err(StartError::ParentLoop(format!(
                "{}:{}",
                parent.host, parent.port
            )));
        }
    }
    let running = Running {
        app,
        listeners: tokio::sync::Mutex::new(listeners),
        jitter,
    };
    tracing::info!(
        listeners = ?running.app.listening.read().map(|l| l.clone()).unwrap_or_default(),
        upstreams = config.upstreams.len(),
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        runtime = runtime_name(),
        "tokenproxy started"
    );
    Ok(running)
}

/// The runtime serving traffic: `current_thread` (one worker) or `multi_thread`.
fn runtime_name() -> &'static str {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    }
}

fn warn_about_secret_files(config: &Config) {
    for client in config.clients.values() {
        let sources = [client.client_secret.as_ref()].into_iter().chain([client
            .assertion
            .as_ref()
            .and_then(|a| a.private_key.as_ref())]);
        for path in sources.flatten().filter_map(|s| s.file()) {
            if crate::config::readable_by_others(path) {
                tracing::warn!(client = %client.name, path = %path.display(),
                    "the secret file is readable by other users; make it 0400, or 0440 with the process's group (Kubernetes: defaultMode: 0440 and fsGroup)");
            }
        }
    }
}

/// The interception CA is made once, at start: a reload cannot change it, and a generated one
/// cannot sign for names added later (its root key is gone). Say so instead of failing.
fn warn_about_interception_changes(app: &App, old: &Config, new: &Config) {
    if old.proxy.intercept != new.proxy.intercept {
        tracing::warn!("proxy.intercept changed: the interception CA and its settings take effect at the next restart");
    }
    let Some(interceptor) = &app.interceptor else {
        return;
    };
    for name in crate::intercept::intercepted_names(new) {
        if !interceptor.covers(&name) {
            tracing::warn!(host = %name, "not intercepted until the next restart: the running interception CA was made before this host was configured");
        }
    }
}

impl Running {
    pub fn addr(&self, role: &Role) -> Option<SocketAddr> {
        self.app.listener(role)
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
        let tracer = self.app.tracer.as_ref();
        let snap = Snapshot::build(config, &self.app.metrics, tracer, Some(&old), self.jitter)?;
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
        warn_about_interception_changes(&self.app, &old.config, &snap.config);
        if old.config.tracing != snap.config.tracing {
            tracing::warn!("tracing changed: the trace exporter and its settings take effect at the next restart");
        }
        let config = snap.config.clone();
        self.app.snapshot.store(Arc::new(snap));
        listeners.reconcile(&self.app, &config).await
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
        // Intercepted connections finish their current request and close, like listeners'.
        self.app.draining.send_replace(true);
        self.app.tunnels.close();
        let mut listeners = self.listeners.lock().await;
        let tunnels = tokio::time::timeout(proxy.drain_timeout, self.app.tunnels.wait());
        let (drained, tunnels) = tokio::join!(listeners.shutdown(proxy.drain_timeout), tunnels);
        let drained = drained && tunnels.is_ok();
        self.app.access_log.flush();
        if let Some(tracer) = &self.app.tracer {
            tracer.flush(TRACE_FLUSH).await;
        }
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
