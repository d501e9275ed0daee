//! A token as requests use it, and what a source tells about itself.

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;
use tokio::time::Instant;

use crate::jose::DpopKey;
use crate::trace::SpanContext;

/// A token in use.
#[derive(Debug)]
pub struct Token {
    pub(super) header: HeaderValue,
    /// After this the token is not sent (its lifetime less a small skew).
    pub usable_until: Instant,
    /// When the server said it expires (for `tokenproxy token --format json`).
    pub expires_at: SystemTime,
    /// A DPoP-bound token: the key its proofs are signed with.
    pub dpop: Option<Bound>,
    /// The traced fetch that brought it (`tracing`), for requests' spans to link to.
    pub fetched_by: Option<SpanContext>,
}

/// What a DPoP-bound token's proofs need: the key, and the token's `ath`.
#[derive(Debug)]
pub struct Bound {
    pub key: Arc<DpopKey>,
    pub ath: String,
}

impl Token {
    /// The `Authorization` header value, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// The token itself, without its scheme (a subject token to exchange).
    pub fn value(&self) -> &str {
        let text = self.header.to_str().unwrap_or_default();
        text.split_once(' ').map_or(text, |(_, token)| token)
    }
}

/// Why a request could not have a token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct Unavailable {
    pub reason: String,
    /// The last fetch failed for want of a usable assertion, subject or actor token.
    pub assertion: bool,
}

/// What `/status` shows about one token source. No token, no secret.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub last_refresh: Option<SystemTime>,
    pub last_error: Option<String>,
    pub next_attempt: Option<Instant>,
    pub fetches: u64,
    pub failures: u64,
    /// Failures since the last success; > 0 means requests without a token fail at once.
    pub consecutive_failures: u32,
    /// The last failure was a missing, unreadable or expired presented token.
    pub assertion_failing: bool,
    /// The `scope` the server granted with the current token, when it said.
    pub granted_scope: Option<String>,
}
