//! tokenproxy: an OAuth 2.0 client-credentials sidecar.
//!
//! It obtains a token per upstream from an authorization server, keeps it fresh, and adds
//! `Authorization: Bearer <token>` to the app's outgoing requests. The modules are layers,
//! listed below lowest first; each imports only from the layers beneath it:
//!
//! - foundations: [`body`] (the one body type), [`host`] (host rules and the loop rule),
//!   [`jose`] (client assertions signed with ring), [`metrics`], [`pki`] (CA files),
//!   [`sniff`] (what a connection opens with), [`tls`] (rustls, one provider);
//! - [`config`]: the YAML file, parsed then validated into one immutable [`Config`];
//! - [`token`] (endpoint client, cache and refresh per distinct token request), [`upstream`] (connection
//!   pools, the shared client, the router), [`intercept`] (the interception CA, host
//!   certificates, trust files), [`serve`] (HTTP/1 and HTTP/2 serving and drain);
//! - [`cache`]: the token cache shared by replicas, on Redis, in front of the token endpoint;
//! - [`error`]: why a start or a reload failed ([`StartError`]);
//! - [`snapshot`]: what requests read, behind one `ArcSwap`;
//! - [`proxy`] (the request pipeline: plan, attempt, send, finish) and [`admin`];
//! - [`listeners`]: sockets reconciled against the config;
//! - [`running`]: [`start`] binds every listener and returns a [`Running`] proxy with its bound
//!   addresses, so tests run the whole thing in-process on port 0; [`Running::apply`] swaps in
//!   a new config and [`Running::shutdown`] drains;
//! - entry points: [`run`] (`start`, a config watcher and a stop signal), [`reload`],
//!   [`signals`], [`wait`], [`demo`], [`exec`] (a command beside an in-process proxy),
//!   [`print_token`] (`tokenproxy token`), [`status`] (`tokenproxy status`).

// The layers, lowest first, one group per layer (`tests/layers.rs` reads this list). A module
// imports only from modules in groups above its own; modules in one group are peers and do
// not import each other. The README draws the same picture.
//
// layer: foundations, no imports from the crate
pub mod body;
pub mod host;
pub mod jose;
pub mod metrics;
pub mod pki;
pub mod sniff;
pub mod tls;
// layer: the validated config
pub mod config;
// layer: tokens, upstream connections, interception certificates, HTTP serving
pub mod intercept;
pub mod serve;
pub mod token;
pub mod upstream;
// layer: the token cache shared by replicas
pub mod cache;
// layer: start-up errors
pub mod error;
// layer: what a request reads
pub mod snapshot;
// layer: the request pipeline and the admin views
pub mod admin;
pub mod proxy;
// layer: sockets reconciled against the config
pub mod listeners;
// layer: a started proxy
pub mod running;
// layer: entry points for the binary
pub mod demo;
pub mod exec;
pub mod online;
pub mod print_token;
pub mod reload;
pub mod signals;
pub mod wait;
// layer: commands built on the entry points
pub mod status;

use std::future::Future;
use std::sync::Arc;

pub use config::Config;
pub use error::StartError;
pub use running::{random_jitter, start, start_with, Running};

pub use reload::ConfigSource;

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
