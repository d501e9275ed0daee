//! One token: fetched at start, cached, refreshed before expiry, shared by all requests of
//! the upstreams it serves (those whose token requests are the same, see `sharing`).
//!
//! A single background task owns fetching, so a thousand requests on a cold start cause one
//! token request (single-flight by construction). Requests read the current token lock-free
//! (`ArcSwapOption`); one that finds none waits on a `watch` channel for the task's next
//! result, bounded by `wait_timeout`. The task refreshes at 75–80% of the lifetime (jittered),
//! never sooner than `min_refresh_interval` after the last fetch (so a server that hands out
//! the same or very short-lived tokens cannot make it spin), and backs off exponentially with
//! full jitter on failure, honouring `Retry-After`. An old token stays in use until it expires,
//! less a small skew. All times are on tokio's clock, so tests run on a paused one.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::current::{Bound, Status, Token, Unavailable};
use super::error::FetchError;
use super::fetcher::{Ask, Fetcher};
use super::report::{lock, note_broader, record_failure, record_metrics};
use super::response::Issued;
use super::sharing::Upstreams;
use super::timing::{expiry_skew, retry_delay, Jitter};
use crate::config::TokenSettings;
use crate::jose::DpopKey;
use crate::metrics::{FetchOutcome, Metrics};
use crate::trace::{FutureExt as _, SpanContext, Tracer};

struct Shared {
    upstreams: Upstreams,
    /// The DPoP key of the client, when its tokens are bound to one.
    dpop: Option<Arc<DpopKey>>,
    settings: TokenSettings,
    current: ArcSwapOption<Token>,
    /// Bumped after every fetch, good or bad, to wake waiting requests.
    changed: watch::Sender<u64>,
    refresh_now: Notify,
    /// When a 401 last forced a refresh.
    last_forced: Mutex<Option<Instant>>,
    /// The token that 401 refused, until the next fetch is asked not to bring it back.
    refused: Mutex<Option<HeaderValue>>,
    /// A broader grant than asked for has been logged (once per source).
    warned_broader: AtomicBool,
    status: Mutex<Status>,
    metrics: Metrics,
    /// Each fetch is a `token fetch` span when tracing is on.
    tracer: Option<Tracer>,
}

/// Handle to one upstream's token. Dropping it stops the background task.
pub struct TokenSource {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// At most this often a 401 from the upstream may force a new token.
pub const FORCED_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

impl TokenSource {
    /// Starts fetching at once in a background task; with a `tracer`, each fetch is a span.
    pub fn spawn(
        upstreams: &[&str],
        fetcher: Arc<dyn Fetcher>,
        settings: TokenSettings,
        metrics: Metrics,
        jitter: Jitter,
        dpop: Option<Arc<DpopKey>>,
        tracer: Option<Tracer>,
    ) -> Self {
        for name in upstreams {
            metrics.init_upstream(name);
        }
        let shared = Arc::new(Shared {
            upstreams: Upstreams::new(upstreams),
            dpop,
            settings,
            current: ArcSwapOption::empty(),
            changed: watch::channel(0).0,
            refresh_now: Notify::new(),
            last_forced: Mutex::new(None),
            refused: Mutex::new(None),
            warned_broader: AtomicBool::new(false),
            status: Mutex::new(Status::default()),
            metrics,
            tracer,
        });
        let task = tokio::spawn(refresh_loop(shared.clone(), fetcher, jitter));
        TokenSource { shared, task }
    }

    /// The current token if it is still usable.
    pub fn current(&self) -> Option<Arc<Token>> {
        self.shared
            .current
            .load_full()
            .filter(|t| t.usable_until > Instant::now())
    }

    /// A usable token, waiting for the next fetch if there is none (bounded by
    /// `wait_timeout`). While fetches are failing, a request waits for at most one more
    /// attempt, and fails at once when that attempt is not due before its deadline, so an
    /// outage answers quickly instead of holding every request for `wait_timeout`.
    pub async fn get(&self) -> Result<Arc<Token>, Unavailable> {
        if let Some(t) = self.current() {
            return Ok(t);
        }
        let deadline = Instant::now() + self.shared.settings.wait_timeout;
        let mut rx = self.shared.changed.subscribe();
        let mut saw_attempt = false;
        loop {
            if let Some(t) = self.current() {
                return Ok(t);
            }
            if let Some((err, next)) = self.failing() {
                if saw_attempt || next.is_none_or(|n| n > deadline) {
                    return Err(err);
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => saw_attempt = true,
                Ok(Err(_)) => return Err(self.unavailable("token source stopped")),
                Err(_) => return Err(self.unavailable("timed out waiting for a token")),
            }
        }
    }

    /// A usable token, waiting through failed attempts (with the usual backoff) until
    /// `deadline`: for one-shot callers (`tokenproxy token`, `exec`) that would rather wait
    /// than fail fast. Gives up early when the next attempt is not due before the deadline.
    pub async fn wait_until(&self, deadline: Instant) -> Result<Arc<Token>, Unavailable> {
        let mut rx = self.shared.changed.subscribe();
        loop {
            if let Some(t) = self.current() {
                return Ok(t);
            }
            if let Some((err, next)) = self.failing() {
                if next.is_none_or(|n| n > deadline) {
                    return Err(err);
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(self.unavailable("token source stopped")),
                Err(_) => return Err(self.unavailable("timed out waiting for a token")),
            }
        }
    }

    /// Resolves once the first fetch attempt has finished, well or badly.
    pub async fn settled(&self) {
        let mut rx = self.shared.changed.subscribe();
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    /// The last error and the next attempt, while fetches are failing.
    fn failing(&self) -> Option<(Unavailable, Option<Instant>)> {
        let status = self.lock_status();
        (status.consecutive_failures > 0).then(|| {
            let last = status.last_error.as_deref().unwrap_or("token fetch failed");
            let err = Unavailable {
                reason: format!("no valid token; last error: {last}"),
                assertion: status.assertion_failing,
            };
            (err, status.next_attempt)
        })
    }

    fn unavailable(&self, what: &str) -> Unavailable {
        let status = self.lock_status();
        let reason = match &status.last_error {
            Some(e) => format!("{what}; last error: {e}"),
            None => what.to_string(),
        };
        Unavailable {
            reason,
            assertion: status.assertion_failing,
        }
    }

    /// Called after the upstream refused `token` with 401: drops it and asks for a new one,
    /// unless a fetch happened less than [`FORCED_REFRESH_INTERVAL`] ago (so an upstream that
    /// always says 401 cannot cause a fetch storm). Returns whether a new token is coming.
    pub fn invalidate(&self, token: &Arc<Token>, by: &str) -> bool {
        let current = self.shared.current.load();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, token)) {
            // Already replaced (or dropped by a concurrent 401): the next `get` has the new one.
            return true;
        }
        let now = Instant::now();
        {
            let mut last = lock(&self.shared.last_forced);
            if last.is_some_and(|t| now < t + FORCED_REFRESH_INTERVAL) {
                return false;
            }
            // Claim the slot so concurrent 401s cause one refresh between them.
            *last = Some(now);
        }
        *lock(&self.shared.refused) = Some(token.header.clone());
        self.shared.current.compare_and_swap(&*current, None);
        self.shared
            .metrics
            .upstream_auth_retries
            .with_label_values(&[by])
            .inc();
        self.shared.refresh_now.notify_one();
        true
    }

    /// The upstreams this source serves, in config order.
    pub fn upstreams(&self) -> Vec<String> {
        self.shared.upstreams.names()
    }

    /// Serves these upstreams from now on (a reload taking this source over).
    pub fn serve(&self, upstreams: &[&str]) {
        for name in upstreams {
            self.shared.metrics.init_upstream(name);
        }
        self.shared.upstreams.set(upstreams);
    }

    pub fn status(&self) -> Status {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        lock(&self.shared.status)
    }
}

async fn refresh_loop(shared: Arc<Shared>, fetcher: Arc<dyn Fetcher>, jitter: Jitter) {
    let s = &shared.settings;
    let mut failures: u32 = 0;
    let mut retried_invalid_client = false;
    loop {
        let started = Instant::now();
        let refused = lock(&shared.refused).take();
        let held = shared.current.load_full();
        let replacing = refused.as_ref().or(held.as_ref().map(|t| &t.header));
        let ask = Ask {
            replacing,
            refused: refused.is_some(),
        };
        let span = shared
            .tracer
            .as_ref()
            .map(|t| t.fetch_span(&shared.upstreams.label(), failures));
        let result = match &span {
            None => fetcher.fetch(ask).await,
            Some((cx, _)) => fetcher.fetch(ask).with_context(cx.clone()).await,
        };
        let outcome = result
            .as_ref()
            .map_or_else(FetchError::outcome, |_| FetchOutcome::Success);
        record_metrics(
            &shared.metrics,
            &shared.upstreams,
            outcome,
            started.elapsed(),
        );
        let fetched_by = span.map(|(cx, id)| {
            let error = result.as_ref().err().map(ToString::to_string);
            crate::trace::finish_fetch(&cx, outcome.as_str(), error);
            id
        });
        let wait = match result {
            Ok(issued) => {
                failures = 0;
                retried_invalid_client = false;
                store(&shared, issued, started, jitter, fetched_by)
            }
            Err(e) => {
                failures += 1;
                let wait = if e.oauth_code() == Some("invalid_client") && !retried_invalid_client {
                    // The secret may have been rotated: the next fetch re-reads it.
                    retried_invalid_client = true;
                    Duration::ZERO
                } else {
                    retry_delay(s, &e, failures, jitter)
                };
                record_failure(&shared.upstreams, &shared.status, &e, failures);
                wait
            }
        };
        let wait = wait.max(s.min_refresh_interval);
        lock(&shared.status).next_attempt = Some(Instant::now() + wait);
        shared.changed.send_modify(|n| *n += 1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.refresh_now.notified() => {
                // Forced by a 401; still never two fetches closer than the floor.
                tokio::time::sleep_until(started + s.min_refresh_interval).await;
            }
        }
    }
}

/// Publishes a new token; returns when to refresh it.
fn store(
    shared: &Shared,
    issued: Issued,
    started: Instant,
    jitter: Jitter,
    fetched_by: Option<SpanContext>,
) -> Duration {
    let s = &shared.settings;
    let lifetime = issued.lifetime.min(s.max_lifetime);
    let usable = lifetime - expiry_skew(lifetime);
    let same = shared
        .current
        .load()
        .as_ref()
        .is_some_and(|t| issued.same_token_header(&t.header));
    let dpop = match (&shared.dpop, issued.token.ath()) {
        (Some(key), Some(ath)) => Some(Bound {
            key: key.clone(),
            ath: ath.to_owned(),
        }),
        _ => None,
    };
    shared.current.store(Some(Arc::new(Token {
        header: issued.token.header().clone(),
        usable_until: started + usable,
        expires_at: SystemTime::now() + lifetime.saturating_sub(started.elapsed()),
        dpop,
        fetched_by,
    })));
    // The server's expiry (counted from the request), in Unix time for dashboards and alerts.
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let remaining = (started + lifetime).saturating_duration_since(Instant::now());
    for name in shared.upstreams.names() {
        let gauge = shared.metrics.expiry_gauge(&name);
        gauge.set((now_unix + remaining).as_secs_f64());
    }
    {
        let mut status = lock(&shared.status);
        status.last_refresh = Some(SystemTime::now());
        status.last_error = None;
        status.fetches += 1;
        status.consecutive_failures = 0;
        status.assertion_failing = false;
        status.granted_scope = issued.scope.clone();
    }
    if issued.broader {
        note_broader(
            &shared.metrics,
            &shared.upstreams,
            &shared.warned_broader,
            issued.scope.as_deref(),
        );
    }
    tracing::info!(upstream = %shared.upstreams.label(), expires_in_s = lifetime.as_secs(), same_token = same, "token obtained");
    // 75-80% of the lifetime, and in any case well before the token stops being usable.
    lifetime
        .mul_f64(0.75 + 0.05 * jitter())
        .min(usable.mul_f64(0.9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_skew_is_a_tenth_clamped() {
        let s = Duration::from_secs;
        assert_eq!(expiry_skew(s(100)), s(10));
        assert_eq!(expiry_skew(s(4)), s(1));
        assert_eq!(expiry_skew(s(3600)), s(30));
        assert_eq!(expiry_skew(s(1)), Duration::from_millis(500));
    }
}
