//! `tokenproxy token`: fetch one upstream's token, exactly as the proxy would (same client,
//! scopes, audience, resource, params and auth method), and print it for a script.
//!
//! The usual retries with backoff apply, bounded by `tokens.wait_timeout`, so a cron job never
//! hangs. The output is a credential: it is not printed to a terminal unless asked.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{ClientConfig, Config, TokenRequest};
use crate::error::StartError;
use crate::metrics::Metrics;
use crate::running::random_jitter;
use crate::token::sharing::subject_client;
use crate::token::{client_dpop, Endpoint, TokenSource};
use crate::trace::Tracer;

/// How long `token` waits for its spans to reach the collector before it exits.
const TRACE_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

use super::{load, Exit};

/// Prints the token of `upstream` in `format`; refuses a terminal unless `show`.
pub async fn run(path: &Path, upstream: &str, format: Format, show: bool) -> Exit {
    if std::io::stdout().is_terminal() && !show {
        eprintln!("tokenproxy token: the output is a credential; not printing it to a terminal (pipe it, or pass --show)");
        return Exit::Usage;
    }
    let config = match load(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    match fetch(&config, upstream, format).await {
        Ok(text) => {
            print!("{text}");
            Exit::Ok
        }
        Err(e) => {
            eprintln!("tokenproxy token: {e}");
            if e.is_config_error() {
                Exit::Config
            } else {
                Exit::NoToken
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no upstream named {name:?} in the config (upstreams: {known})")]
    UnknownUpstream { name: String, known: String },
    #[error(transparent)]
    Setup(#[from] StartError),
    #[error("no token for {upstream}: {reason}")]
    Unavailable { upstream: String, reason: String },
}

impl TokenError {
    /// A mistake in the config or the command line, as opposed to a failed fetch.
    pub fn is_config_error(&self) -> bool {
        matches!(self, TokenError::UnknownUpstream { .. })
    }
}

/// A token source for `client`'s `request`, and first one for the client whose token is its
/// subject token (`subject_token: {client: NAME}`), as the proxy would build them. Validation
/// has refused loops.
fn source_for(
    config: &Config,
    client: &Arc<ClientConfig>,
    request: &TokenRequest,
    upstream: &str,
    names: &[&str],
    metrics: &Metrics,
    tracer: Option<&Tracer>,
) -> Result<Arc<TokenSource>, TokenError> {
    let subject = match subject_client(client).and_then(|(n, r)| Some((config.clients.get(n)?, r)))
    {
        Some((other, r)) => Some(source_for(
            config,
            other,
            r,
            upstream,
            &[],
            metrics,
            tracer,
        )?),
        None => None,
    };
    let dpop = client_dpop(client).map_err(|e| TokenError::Unavailable {
        upstream: upstream.to_string(),
        reason: format!("clients.{}.dpop_key: {e}", client.name),
    })?;
    let endpoint = Endpoint::new(client.clone(), request, &config.tokens, metrics)
        .map_err(StartError::from)?
        .with_dpop(dpop.clone())
        .with_subject(subject);
    Ok(Arc::new(TokenSource::spawn(
        names,
        Arc::new(endpoint),
        config.tokens.clone(),
        metrics.clone(),
        random_jitter,
        dpop.map(|d| d.key.clone()),
        tracer.cloned(),
    )))
}

/// How to print the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The token and a newline.
    Raw,
    /// `Authorization: Bearer …`.
    Header,
    /// `{"access_token", "token_type", "expires_at"}`.
    Json,
}

/// Fetches a token for `upstream` and renders it in `format` (a trailing newline included).
pub async fn fetch(config: &Config, upstream: &str, format: Format) -> Result<String, TokenError> {
    let Some(up) = config.upstream(upstream) else {
        let known: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        return Err(TokenError::UnknownUpstream {
            name: upstream.to_string(),
            known: known.join(", "),
        });
    };
    let metrics = Metrics::new().map_err(StartError::from)?;
    let tracer = match &config.tracing {
        Some(t) => Some(Tracer::start(t, &metrics.trace).map_err(StartError::from)?),
        None => None,
    };
    let source = source_for(
        config,
        &up.client,
        &up.request,
        &up.name,
        &[&up.name],
        &metrics,
        tracer.as_ref(),
    )?;
    let deadline = Instant::now() + config.tokens.wait_timeout;
    let token = source.wait_until(deadline).await;
    // The fetch's span goes to the collector before the process exits.
    if let Some(tracer) = &tracer {
        tracer.flush(TRACE_FLUSH).await;
    }
    let token = token.map_err(|e| TokenError::Unavailable {
        upstream: up.name.clone(),
        reason: e.reason,
    })?;
    let header = token.header().to_str().unwrap_or_default();
    let bare = token.value();
    Ok(match format {
        Format::Raw => format!("{bare}\n"),
        Format::Header => format!("Authorization: {header}\n"),
        Format::Json => {
            let expires_at = humantime::format_rfc3339_seconds(token.expires_at);
            let json = serde_json::json!({
                "access_token": bare,
                "token_type": up.client.token_type.scheme(),
                "expires_at": expires_at.to_string(),
            });
            format!("{json}\n")
        }
    })
}
