//! `tokenproxy exec`: run one command with the proxy beside it, in this process.
//!
//! For batch jobs, cron jobs and scripts, where a daemon is the wrong shape. The proxy starts
//! from the config with its forward and reverse listeners (on ephemeral loopback ports with
//! `--ephemeral`, so two jobs on one host never collide; no admin listener), waits until every
//! upstream holds a token (bounded by `tokens.wait_timeout`; otherwise the command is not run),
//! then runs the command with the proxy variables, the trust variables of the interception
//! CA, and one `TOKENPROXY_URL_<UPSTREAM>` per reverse listener. SIGINT, SIGTERM and SIGHUP
//! are passed on to the command; when it exits, the proxy drains and `exec` exits with the
//! command's status (128+N if it died of signal N).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::process::{kill_process, Pid, Signal};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use crate::config::{Config, Role};
use crate::error::StartError;
use crate::running::{random_jitter, start_logging_to, Running};
use crate::sink::Destination;

use super::{load, Exit};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("not running the command: no token for {0}")]
    NoToken(String),
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

impl ExecError {
    /// How `exec` ends.
    pub fn exit(&self) -> Exit {
        match self {
            ExecError::Start(_) => Exit::Failed,
            ExecError::NoToken(_) => Exit::NoToken,
            ExecError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Exit::NotFound
            }
            ExecError::Spawn { .. } => Exit::CannotRun,
        }
    }
}

/// `tokenproxy exec`: the config loaded, then [`run`]; ends with the command's status.
pub async fn command(path: &Path, ephemeral: bool, command: &[OsString]) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    match run(config, ephemeral, command).await {
        Ok(status) => Exit::Child(u8::try_from(status).unwrap_or(1)),
        Err(e) => {
            eprintln!("tokenproxy exec: {e}");
            e.exit()
        }
    }
}

/// Runs `command` beside a proxy started from `config`; returns its exit status.
pub async fn run(
    mut config: Config,
    ephemeral: bool,
    command: &[OsString],
) -> Result<i32, ExecError> {
    let scratch = prepare(&mut config, ephemeral);
    let result = supervise(config, command).await;
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// Listeners for a job: no admin listener, and with `ephemeral` every other one on an
/// ephemeral loopback port. The interception trust files go to a private directory unless the
/// config names one (always, with `ephemeral`: a generated CA is this job's alone). Returns
/// the directory to remove afterwards.
fn prepare(config: &mut Config, ephemeral: bool) -> Option<PathBuf> {
    let any: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin.listen = None;
    if ephemeral {
        config.proxy.listen = config.proxy.listen.map(|_| any);
        for u in &mut config.upstreams {
            if u.listen.is_some() {
                Arc::make_mut(u).listen = Some(any);
            }
        }
    }
    let intercept = config.proxy.intercept.as_mut()?;
    if intercept.trust_dir.is_some() && !ephemeral {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tokenproxy-exec-{}", std::process::id()));
    intercept.trust_dir = Some(dir.clone());
    Some(dir)
}

async fn supervise(config: Config, command: &[OsString]) -> Result<i32, ExecError> {
    let wait = config.tokens.wait_timeout;
    let proxy = start_logging_to(config, random_jitter, Destination::Stderr).await?;
    if let Err(missing) = ready(&proxy, Instant::now() + wait).await {
        proxy.shutdown().await;
        return Err(ExecError::NoToken(missing));
    }
    let env = environment(&proxy);
    let result = child(command, env).await;
    proxy.shutdown().await;
    result
}

/// Waits for every upstream's token; on failure, says which are missing and why.
async fn ready(proxy: &Running, deadline: Instant) -> Result<(), String> {
    let snap = proxy.app.snapshot.load_full();
    let waits = snap.upstreams.iter().map(|u| async move {
        u.tokens
            .wait_until(deadline)
            .await
            .map_err(|e| format!("{} ({})", u.name, e.reason))
    });
    let missing: Vec<String> = futures_util::future::join_all(waits)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// The variables the command gets, on top of this process's environment.
pub fn environment(proxy: &Running) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let snap = proxy.app.snapshot.load();
    if let Some(fwd) = proxy.forward_addr() {
        let url = format!("http://{fwd}");
        for name in ["HTTP_PROXY", "http_proxy"] {
            env.push((name.to_string(), url.clone()));
        }
        if snap.config.proxy.intercept.is_some() {
            for name in ["HTTPS_PROXY", "https_proxy"] {
                env.push((name.to_string(), url.clone()));
            }
        }
        let loopback = "localhost,127.0.0.1,::1";
        for name in ["NO_PROXY", "no_proxy"] {
            let no_proxy = match std::env::var(name) {
                Ok(v) if !v.is_empty() => format!("{v},{loopback}"),
                _ => loopback.to_string(),
            };
            env.push((name.to_string(), no_proxy));
        }
    }
    if let Some(dir) = snap
        .config
        .proxy
        .intercept
        .as_ref()
        .and_then(|i| i.trust_dir.as_ref())
    {
        let bundle = dir.join("bundle.pem").display().to_string();
        for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
            env.push((name.to_string(), bundle.clone()));
        }
        env.push((
            "NODE_EXTRA_CA_CERTS".into(),
            dir.join("ca.pem").display().to_string(),
        ));
        env.push((
            "TOKENPROXY_TRUSTSTORE".into(),
            dir.join("truststore.p12").display().to_string(),
        ));
    }
    for u in &snap.upstreams {
        if let Some(addr) = proxy.addr(&Role::Reverse(u.name.to_string())) {
            env.push((url_variable(&u.name), format!("http://{addr}")));
        }
    }
    env
}

/// `TOKENPROXY_URL_` and the upstream's name in upper case, every character that is not an
/// ASCII letter or digit made `_`: `inventory-v2` gives `TOKENPROXY_URL_INVENTORY_V2`.
pub fn url_variable(upstream: &str) -> String {
    let name: String = upstream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("TOKENPROXY_URL_{name}")
}

/// Runs the command, passing SIGINT, SIGTERM and SIGHUP on to it; returns its exit status.
async fn child(command: &[OsString], env: Vec<(String, String)>) -> Result<i32, ExecError> {
    let Some((program, args)) = command.split_first() else {
        return Ok(0);
    };
    let spawn_error = |source| ExecError::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    };
    let mut forward = Forwarder::listen().map_err(spawn_error)?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(env)
        .spawn()
        .map_err(spawn_error)?;
    let pid = child.id();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(spawn_error)?,
            sig = forward.next() => {
                let pid = pid.and_then(|p| i32::try_from(p).ok()).and_then(Pid::from_raw);
                if let Some(pid) = pid {
                    let _ = kill_process(pid, sig);
                }
            }
        }
    };
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The signals passed on to the command.
struct Forwarder {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Forwarder {
    fn listen() -> std::io::Result<Self> {
        Ok(Forwarder {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal to pass on.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::INT,
            _ = self.term.recv() => Signal::TERM,
            _ = self.hup.recv() => Signal::HUP,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_variables_are_upper_case_with_underscores() {
        assert_eq!(url_variable("inventory"), "TOKENPROXY_URL_INVENTORY");
        assert_eq!(url_variable("inventory-v2"), "TOKENPROXY_URL_INVENTORY_V2");
        assert_eq!(url_variable("a.b c"), "TOKENPROXY_URL_A_B_C");
    }
}
