//! `tokenproxy run`: the proxy from a config file, the file watched and applied on change or
//! SIGHUP, until a stop signal; then it drains.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use super::Exit;
use crate::config::Config;
use crate::error::StartError;
use crate::reload::{self, ConfigSource};
use crate::running::start;

/// Loads `path` and serves until `stop` resolves.
pub async fn run(path: &Path, stop: impl Future<Output = ()>) -> Exit {
    let (config, source) = match ConfigSource::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Exit::Config;
        }
    };
    match serve(config, Some(source), stop).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            tracing::error!(error = %e, "tokenproxy failed to start");
            Exit::Failed
        }
    }
}

/// Starts the proxy and runs it until `shutdown` resolves, then drains. With a `source`, the
/// file is watched and reloaded on change or SIGHUP.
pub async fn serve(
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
