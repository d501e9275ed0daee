//! [`App`]: what the listeners and the admin endpoints share for the life of the process:
//! the current [`Snapshot`] behind one `ArcSwap`, the metrics, the bound listener addresses,
//! the interception CA, and the drain of intercepted tunnels.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::Snapshot;
use crate::config::Role;
use crate::host::{is_local_address, targets_own_listener};
use crate::intercept::Interceptor;
use crate::metrics::{Metrics, RequestMetrics};
use crate::sink::Sink;
use crate::trace::Tracer;

/// Everything shared by the listeners and the admin endpoints.
pub struct App {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// Request metrics of the `unmatched` label.
    pub unmatched: RequestMetrics,
    /// Set on the first stop signal: `/readyz` turns 503 at once.
    pub stopping: AtomicBool,
    /// The addresses tokenproxy listens on now, by role: the one copy, kept by `listeners`
    /// and read by the loop check and by [`crate::Running`].
    pub listening: RwLock<BTreeMap<Role, SocketAddr>>,
    /// The interception CA and TLS settings, made once at start (`proxy.intercept`).
    pub interceptor: Option<Arc<Interceptor>>,
    /// Intercepted connections outlive the CONNECT that opened them; they are tracked here,
    /// and told to finish by `draining`, so a graceful stop drains them like any listener.
    pub tunnels: TaskTracker,
    pub draining: watch::Sender<bool>,
    /// The access log's lines, batched, written where this proxy was told to.
    pub access_log: Sink,
    /// Spans of requests and token fetches (`tracing`), made once at start.
    pub tracer: Option<Tracer>,
}

impl App {
    pub fn new(
        snapshot: Snapshot,
        metrics: Metrics,
        interceptor: Option<Interceptor>,
        access_log: Sink,
        tracer: Option<Tracer>,
    ) -> App {
        App {
            snapshot: ArcSwap::from_pointee(snapshot),
            unmatched: RequestMetrics::new(&metrics, crate::metrics::UNMATCHED),
            metrics,
            stopping: AtomicBool::new(false),
            listening: RwLock::new(BTreeMap::new()),
            interceptor: interceptor.map(Arc::new),
            tunnels: TaskTracker::new(),
            draining: watch::channel(false).0,
            access_log,
            tracer,
        }
    }

    /// The bound address of one listener.
    pub fn listener(&self, role: &Role) -> Option<SocketAddr> {
        self.listening
            .read()
            .ok()
            .and_then(|l| l.get(role).copied())
    }

    /// True if `host:port` (a normalised host) reaches one of tokenproxy's own listeners.
    pub fn is_own_listener(&self, host: &str, port: u16) -> bool {
        self.listening
            .read()
            .is_ok_and(|l| targets_own_listener(l.values(), host, port, is_local_address))
    }
}
