//! Why a token request (or a metadata request) failed, and the reqwest helpers that classify
//! and bound what comes back. Display never includes a secret, a token or a response body.

use std::time::Duration;

use crate::config::SecretError;
use crate::jose::{KeyError, ShapeError};
use crate::metrics::FetchOutcome;
use std::path::PathBuf;

/// Largest token response body read.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a fetch failed. Display never includes a secret, a token or a response body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("token endpoint answered HTTP {status}{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Http {
        status: u16,
        code: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("invalid token response: {0}")]
    Invalid(#[from] InvalidResponse),
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    #[error("client credential unavailable: {0}")]
    Secret(#[from] SecretError),
    #[error("client assertion cannot be signed: {0}")]
    Key(#[from] KeyError),
    #[error("authorization server metadata: {0}")]
    Discovery(String),
    /// A client assertion, subject or actor token that cannot be read or is expired.
    #[error("{0}")]
    Assertion(#[from] AssertionError),
    /// The parent proxy (`proxy.upstream_proxy`) answered 407, or refused the CONNECT.
    #[error("{message}")]
    UpstreamProxy { status: u16, message: String },
}

/// Which token could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ClientAssertion,
    Subject,
    Actor,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::ClientAssertion => "client assertion",
            Role::Subject => "subject token",
            Role::Actor => "actor token",
        }
    }
}

/// Why a presented token is unavailable. Never quotes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {problem}", role.as_str())]
pub struct AssertionError {
    pub role: Role,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("file {0} cannot be read: {1}")]
    File(PathBuf, String),
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    #[error("is empty")]
    Empty,
    #[error("is not usable: {0}")]
    Shape(#[from] ShapeError),
    #[error("has no exp claim")]
    NoExp,
    #[error("expired {0} s ago; waiting for a fresh one")]
    Expired(u64),
    #[error("expires in {0} s, too soon to be sent; waiting for a fresh one")]
    ExpiresSoon(u64),
    #[error("from GitHub Actions: {0}")]
    Github(String),
    #[error("from client {0}: {1}")]
    Client(String, String),
}

impl FetchError {
    pub fn outcome(&self) -> FetchOutcome {
        match self {
            FetchError::Http { .. } => FetchOutcome::HttpError,
            FetchError::Invalid(_) | FetchError::Discovery(_) => FetchOutcome::InvalidResponse,
            FetchError::Transport(_) => FetchOutcome::TransportError,
            FetchError::Secret(_) | FetchError::Key(_) => FetchOutcome::SecretUnavailable,
            FetchError::Assertion(_) => FetchOutcome::AssertionUnavailable,
            FetchError::UpstreamProxy { .. } => FetchOutcome::UpstreamProxyRefused,
        }
    }

    /// The OAuth `error` code, for the ones that change how we retry.
    pub fn oauth_code(&self) -> Option<&str> {
        match self {
            FetchError::Http { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Refusals that only a config or credential change can fix: retried slowly.
    pub fn is_config_error(&self) -> bool {
        matches!(self, FetchError::Discovery(_))
            || matches!(
                self.oauth_code(),
                Some("invalid_scope" | "unauthorized_client" | "invalid_client")
            )
    }

    /// Failures that say the token endpoint may have moved: refetch the metadata.
    pub fn endpoint_suspect(&self) -> bool {
        match self {
            FetchError::Transport(_) => true,
            FetchError::Http { status, .. } => matches!(status, 404 | 405 | 410 | 500..),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The body, up to [`MAX_BODY`].
pub async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, FetchError> {
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(InvalidResponse::TooLarge(MAX_BODY).into());
    }
    let mut body = Vec::new();
    // The server has answered; a body that stalls or breaks is a bad answer, not a transport
    // failure. The client's total timeout bounds a slow drip.
    let unreadable = |e: reqwest::Error| match transport(e) {
        FetchError::Transport(msg) => FetchError::Invalid(InvalidResponse::BodyUnreadable(msg)),
        other => other,
    };
    while let Some(chunk) = resp.chunk().await.map_err(unreadable)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(InvalidResponse::TooLarge(MAX_BODY).into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// reqwest's message plus its causes ("connection refused"), never a body.
pub fn transport(e: reqwest::Error) -> FetchError {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    FetchError::Transport(msg)
}

/// Why a token answer was refused. Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidResponse {
    #[error("body is not a JSON object")]
    NotJson,
    #[error("access_token is missing or not a string")]
    MissingToken,
    #[error("access_token is empty")]
    EmptyToken,
    #[error("access_token is {0} bytes, over the 8 KiB cap")]
    TokenTooLong(usize),
    #[error("access_token has characters outside RFC 6750 b64token")]
    TokenSyntax,
    #[error("token_type is missing")]
    MissingTokenType,
    #[error("token_type {0:?} is not {1}")]
    WrongTokenType(String, &'static str),
    #[error("expires_in is not a positive whole number of seconds")]
    BadExpiresIn,
    #[error("the JWT exp claim is in the past")]
    ExpiredJwt,
    #[error("body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("answered with redirect {0}; redirects are not followed")]
    Redirect(u16),
    #[error("body could not be read in time: {0}")]
    BodyUnreadable(String),
    #[error("issued_token_type is missing (RFC 8693 §2.2.1 requires it)")]
    MissingIssuedTokenType,
    #[error(
        "issued_token_type {0:?} is not an access token (access_token or jwt); nothing to inject"
    )]
    NotAnAccessToken(String),
}
