//! The timing rules of a token source, as pure functions of their inputs: when a token stops
//! being sent before it expires, and how long to wait after a failed fetch.

use std::time::Duration;

use super::error::FetchError;
use crate::config::TokenSettings;

/// A uniform random number in [0, 1): the jitter. Tests pass a constant.
pub type Jitter = fn() -> f64;

/// Upper bound on a honoured `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long before the server's expiry a token stops being sent. Lifetime counts from when we
/// asked, and servers state `exp`/`expires_in` in whole seconds from their own clock, so a
/// tenth of the lifetime, at least 1 s and at most 30 s, but never more than half.
pub fn expiry_skew(lifetime: Duration) -> Duration {
    (lifetime / 10)
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
        .min(lifetime / 2)
}

/// Exponential backoff with full jitter between `backoff_min` and the doubling cap;
/// `Retry-After` wins when given; configuration errors wait the maximum.
pub fn retry_delay(s: &TokenSettings, e: &FetchError, failures: u32, jitter: Jitter) -> Duration {
    if let Some(ra) = e.retry_after() {
        return ra.clamp(s.backoff_min, MAX_RETRY_AFTER);
    }
    if e.is_config_error() {
        return s.backoff_max;
    }
    let exp = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    let cap = s.backoff_min.saturating_mul(exp).min(s.backoff_max);
    s.backoff_min + (cap - s.backoff_min).mul_f64(jitter().clamp(0.0, 1.0))
}
