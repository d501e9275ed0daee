//! Config reload: what triggers it, and what a reload does.
//!
//! Triggers: a change in the config file's directory (the directory, not the file, is watched,
//! so Kubernetes' swap of the `..data` symlink of a mounted ConfigMap is seen), SIGHUP, and a
//! slow poll for filesystems that send no events. Every trigger re-reads the file; only a text
//! that differs from the last one seen (or a SIGHUP) is applied.
//!
//! A reload reads, validates (secrets included) and applies the new config through
//! [`Running::apply`]. An invalid config leaves the old one serving, is logged with every
//! problem and its line, and counts as `tokenproxy_config_reloads_total{outcome="failure"}`
//! with `tokenproxy_config_last_reload_successful` set to 0.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError};
use crate::error::StartError;
use crate::running::Running;

/// How often the file is read when no event arrives.
pub const POLL_INTERVAL: Duration = Duration::from_secs(15);
/// Events come in bursts (a symlink swap is several); wait this long for the burst to end.
const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("config applied, but: {0}")]
    Apply(#[from] StartError),
}

/// Reads, validates and applies `path`, recording the outcome in the metrics.
pub async fn reload_file(running: &Running, path: &Path) -> Result<(), ReloadError> {
    let result = match Config::load(path) {
        Ok(config) => running.apply(config).await.map_err(ReloadError::from),
        Err(e) => Err(e.into()),
    };
    let m = &running.app.metrics;
    match &result {
        Ok(()) => {
            tracing::info!(path = %path.display(), "config reloaded");
            m.config_reloads.with_label_values(&["success"]).inc();
            m.config_last_reload_successful.set(1);
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "config reload failed; the previous config stays in use");
            m.config_reloads.with_label_values(&["failure"]).inc();
            m.config_last_reload_successful.set(0);
        }
    }
    result
}

/// Watches `path` and reloads on change, SIGHUP or poll, until `stop` resolves. `loaded` is
/// the text the running config came from: a file that changed before the watch began is
/// reloaded at once.
pub async fn watch(
    running: Arc<Running>,
    path: PathBuf,
    loaded: Option<String>,
    poll: Duration,
    mut hup: Hangup,
    stop: impl std::future::Future<Output = ()>,
) {
    let (tx, mut events) = mpsc::channel::<()>(16);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; polling only");
            None
        }
    };
    let mut last = loaded;
    let mut tick = tokio::time::interval(poll);
    tokio::pin!(stop);
    loop {
        let forced = tokio::select! {
            Some(()) = events.recv() => {
                tokio::time::sleep(DEBOUNCE).await;
                while events.try_recv().is_ok() {}
                false
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                true
            }
            _ = tick.tick() => false,
            _ = &mut stop => return,
        };
        let text = std::fs::read_to_string(&path).ok();
        if forced || text != last {
            last = text;
            let _ = reload_file(&running, &path).await;
        }
    }
}

/// Where the running config came from, for reloads: the file and the text that was loaded.
pub struct ConfigSource {
    pub path: PathBuf,
    pub loaded: String,
}

impl ConfigSource {
    /// Reads and validates a config file (secret sources included), keeping its text so a
    /// reload can tell whether the file changed.
    pub fn load(path: &Path) -> Result<(Config, ConfigSource), ConfigError> {
        let loaded = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::from_yaml_checked(&loaded)?;
        let path = path.to_path_buf();
        Ok((config, ConfigSource { path, loaded }))
    }
}

/// SIGHUP as a stream. Create it before the process announces it is up: from then on a
/// SIGHUP no longer terminates the process (its default action).
pub struct Hangup(Option<tokio::signal::unix::Signal>);

/// Starts listening for SIGHUP.
pub fn hangup() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Hangup(Some(s)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            Hangup(None)
        }
    }
}

impl Hangup {
    /// A stream that never fires (tests that drive reloads by file changes only).
    pub fn never() -> Hangup {
        Hangup(None)
    }

    async fn recv(&mut self) {
        match &mut self.0 {
            Some(s) => {
                if s.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}
