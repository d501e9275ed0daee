//! The listening sockets, reconciled against the config.
//!
//! Each listener has a [`Role`]: the forward listener, the admin listener, or one upstream's
//! reverse listener. At start and after every reload, [`Listeners::reconcile`] compares the
//! roles and addresses the config wants with those running: a removed or moved listener stops
//! accepting at once (its connections drain in the background), then new and moved ones are
//! bound. Listeners whose role and address did not change keep running untouched; they read
//! the current snapshot per request, so their behaviour follows the new config anyway.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::{Config, Limits, Role};
use crate::error::StartError;
use crate::proxy::{self, Entry};
use crate::serve::serve_with;
use crate::snapshot::App;

/// Binds `addr` as tokio does (`SO_REUSEADDR`, a backlog of 1024), and with `SO_REUSEPORT`
/// when `TOKENPROXY_REUSE_PORT=1`: for benchmarks of one single-threaded process per core
/// sharing the ports (docs/performance.md, "Runtimes").
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    if std::env::var_os("TOKENPROXY_REUSE_PORT").is_some_and(|v| v == "1") {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

struct Server {
    /// The address (may have port 0) and limits as configured.
    configured: (SocketAddr, Limits),
    bound: SocketAddr,
    stop: watch::Sender<bool>,
    closed: Option<oneshot::Receiver<()>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
pub struct Listeners {
    running: BTreeMap<Role, Server>,
    /// Stopped listeners whose connections may still be draining.
    draining: Vec<JoinHandle<()>>,
}

impl Listeners {
    /// Makes the running listeners match `config` (a listener whose limits change is rebound
    /// too), then publishes the bound addresses in `app.listening`. On a bind error the other
    /// listeners are still reconciled; the first error is returned.
    pub async fn reconcile(&mut self, app: &Arc<App>, config: &Config) -> Result<(), StartError> {
        let result = self.reconcile_sockets(app, config).await;
        if let Ok(mut listening) = app.listening.write() {
            *listening = self.addrs();
        }
        result
    }

    async fn reconcile_sockets(
        &mut self,
        app: &Arc<App>,
        config: &Config,
    ) -> Result<(), StartError> {
        let want = config.listeners();
        let stale: Vec<Role> = self
            .running
            .iter()
            .filter(|(role, s)| want.get(role) != Some(&s.configured))
            .map(|(role, _)| role.clone())
            .collect();
        for role in stale {
            if let Some(mut server) = self.running.remove(&role) {
                tracing::info!(%role, addr = %server.bound, "stopping listener");
                let _ = server.stop.send(true);
                if let Some(closed) = server.closed.take() {
                    // Wait for the socket to close so a moved listener can take its address.
                    let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
                }
                self.draining.push(server.task);
            }
        }
        let mut first_error = None;
        for (role, configured) in want {
            if self.running.contains_key(&role) {
                continue;
            }
            match self.start(app, role.clone(), configured).await {
                Ok(server) => {
                    tracing::info!(%role, addr = %server.bound, "listening");
                    self.running.insert(role, server);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot start listener");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn start(
        &self,
        app: &Arc<App>,
        role: Role,
        (addr, limits): (SocketAddr, Limits),
    ) -> Result<Server, StartError> {
        let listener = bind(addr).map_err(|source| StartError::Bind {
            addr,
            what: role.to_string(),
            source,
        })?;
        let bound = listener.local_addr().unwrap_or(addr);
        if role == Role::Forward && !addr.ip().is_loopback() {
            tracing::warn!(%addr, "the forward listener is not on loopback: anyone who can reach it can spend this proxy's tokens");
        }
        let (stop, stop_rx) = watch::channel(false);
        let (closed_tx, closed) = oneshot::channel();
        let app = app.clone();
        let closed_tx = Some(closed_tx);
        let task = match role {
            Role::Forward => {
                let handler = move |req| proxy::handle(app.clone(), Entry::Forward, req);
                tokio::spawn(serve_with(listener, handler, stop_rx, closed_tx, limits))
            }
            Role::Admin => {
                let handler = move |req| admin::handle(app.clone(), req);
                tokio::spawn(serve_with(listener, handler, stop_rx, closed_tx, limits))
            }
            Role::Reverse(name) => {
                let name: Arc<str> = Arc::from(name.as_str());
                let handler =
                    move |req| proxy::handle(app.clone(), Entry::Reverse(name.clone()), req);
                tokio::spawn(serve_with(listener, handler, stop_rx, closed_tx, limits))
            }
        };
        Ok(Server {
            configured: (addr, limits),
            bound,
            stop,
            closed: Some(closed),
            task,
        })
    }

    /// Bound addresses by role.
    fn addrs(&self) -> BTreeMap<Role, SocketAddr> {
        self.running
            .iter()
            .map(|(r, s)| (r.clone(), s.bound))
            .collect()
    }

    /// Stops every listener and waits for all connections to end, up to `deadline`.
    pub async fn shutdown(&mut self, deadline: Duration) -> bool {
        for server in self.running.values() {
            let _ = server.stop.send(true);
        }
        let mut tasks: Vec<JoinHandle<()>> = std::mem::take(&mut self.draining);
        tasks.extend(
            std::mem::take(&mut self.running)
                .into_values()
                .map(|s| s.task),
        );
        tokio::time::timeout(deadline, futures_util::future::join_all(tasks))
            .await
            .is_ok()
    }
}
