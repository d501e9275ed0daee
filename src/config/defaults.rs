//! Every default value of the config in one place: what a key means when it is left out.

use std::time::Duration;

use super::{Limits, TokenSettings};

/// `admin.listen` when the key is absent (`admin: {listen: null}` is not a thing: set it to
/// another address to move it).
pub const ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// `proxy.connect_timeout`: TCP and TLS set-up to an upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `proxy.request_timeout`: how long an upstream may take to send its response head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// `proxy.drain_timeout`: how long in-flight requests get after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// `proxy.shutdown_delay`: serve (not ready) this long after a stop signal.
pub const SHUTDOWN_DELAY: Duration = Duration::ZERO;

/// `proxy.intercept.leaf_lifetime`: how long a minted host certificate is valid.
pub const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The shortest and longest leaf lifetime accepted (browsers stop at 398 days).
pub const LEAF_LIFETIME_RANGE: (Duration, Duration) = (
    Duration::from_secs(3600),
    Duration::from_secs(397 * 24 * 3600),
);

/// `clients.*.assertion_lifetime`: how long a client assertion is valid.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);
/// The shortest and longest assertion lifetime accepted.
pub const ASSERTION_LIFETIME_RANGE: (Duration, Duration) =
    (Duration::from_secs(10), Duration::from_secs(600));

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_headers: 100,
            max_head_bytes: 64 * 1024,
            http2_max_concurrent_streams: 100,
            http2_max_header_list_size: 64 * 1024,
            http2_max_pending_reset_streams: 20,
            http2_max_error_reset_streams: 256,
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            default_lifetime: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(24 * 3600),
            min_refresh_interval: Duration::from_secs(1),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(10),
            replay_body_limit: 64 * 1024,
        }
    }
}

/// `cache.redis.key_prefix`.
pub const CACHE_KEY_PREFIX: &str = "tokenproxy";
/// `cache.redis.timeout`: a Redis on the same network answers in about a millisecond.
pub const CACHE_TIMEOUT: Duration = Duration::from_millis(100);

/// `tracing.sample_ratio`: every request without a context of its own, as OpenTelemetry's
/// SDKs do by default (`parentbased_always_on`).
pub const TRACE_SAMPLE_RATIO: f64 = 1.0;
/// `tracing.service_name`.
pub const TRACE_SERVICE_NAME: &str = "tokenproxy";
