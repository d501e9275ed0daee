//! What a token source reports after each fetch: the fetch metrics per upstream, the
//! status `/status` shows, the log lines, and a grant broader than asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::current::Status;
use super::error::FetchError;
use super::sharing::Upstreams;
use crate::metrics::{FetchOutcome, Metrics};

/// Least privilege (the seed's security notes): a grant broader than the request is counted
/// per upstream and logged once per source. Scopes are not secrets.
pub(super) fn note_broader(
    metrics: &Metrics,
    upstreams: &Upstreams,
    warned: &AtomicBool,
    granted: Option<&str>,
) {
    let counter = &metrics.token_scope_broader;
    for name in upstreams.names() {
        counter.with_label_values(&[&name]).inc();
    }
    if !warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(upstream = %upstreams.label(), granted = granted.unwrap_or_default(),
            "the authorization server granted scopes beyond those asked for; narrow the client's grant at the server (least privilege)");
    }
}

pub(super) fn record_failure(
    upstreams: &Upstreams,
    status: &Mutex<Status>,
    e: &FetchError,
    failures: u32,
) {
    if e.is_config_error() {
        tracing::error!(upstream = %upstreams.label(), error = %e, consecutive_failures = failures,
            "token request refused; check the client's credentials and the upstream's scopes");
    } else {
        tracing::warn!(upstream = %upstreams.label(), error = %e, consecutive_failures = failures, "token fetch failed");
    }
    let mut status = lock(status);
    status.last_error = Some(e.to_string());
    status.assertion_failing = e.outcome() == FetchOutcome::AssertionUnavailable;
    status.fetches += 1;
    status.failures += 1;
    status.consecutive_failures = failures;
}

pub(super) fn record_metrics(
    m: &Metrics,
    upstreams: &Upstreams,
    outcome: FetchOutcome,
    took: Duration,
) {
    for name in upstreams.names() {
        m.token_fetches
            .with_label_values(&[&name, outcome.as_str()])
            .inc();
        m.token_fetch_duration
            .with_label_values(&[&name])
            .observe(took.as_secs_f64());
    }
}

/// Locks a mutex, taking the data even if a panicking thread poisoned it (the state is plain
/// data that stays consistent).
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
