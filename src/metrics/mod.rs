//! Prometheus metrics, registered into a registry owned by the caller.
//!
//! Every label value comes from the config (upstream names) or from a small fixed set
//! (status codes, fetch outcomes), never from a request: forwarding to ten thousand distinct
//! hosts adds no series. Nothing here ever holds a token or a secret.

mod cache;
mod dpop;
mod outcome;
mod register;
mod trace;

pub use outcome::FetchOutcome;
use register::{counter, counters, gauge, gauges, histograms, int_gauge, int_gauges};

use std::sync::OnceLock;

pub use cache::{CacheLock, CacheMetrics, CacheRead};
pub use dpop::{DpopMetrics, DpopServer};
pub use trace::TraceMetrics;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `upstream` label for requests that no upstream matched.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub token_fetches: IntCounterVec,
    pub token_fetch_duration: HistogramVec,
    /// Token requests by client authentication method and outcome.
    pub token_fetches_by_auth_method: IntCounterVec,
    /// Token requests by grant and outcome.
    pub token_fetches_by_grant: IntCounterVec,
    /// When each client's certificate (`clients.*.certificate`) expires.
    pub client_certificate_expiry: GaugeVec,
    pub token_expiry: GaugeVec,
    pub upstream_auth_retries: IntCounterVec,
    /// Tokens granted with scopes beyond those asked for.
    pub token_scope_broader: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_successful: IntGauge,
    pub intercept: InterceptMetrics,
    /// WebSocket connections upgraded, by upstream (`unmatched` for passthrough).
    pub upgrades: IntCounterVec,
    /// Upgraded connections open now.
    pub upgraded_open: IntGauge,
    /// Connection slots of an upstream's `url` (`state`: `in_use`, HTTP/1.1 connections busy
    /// and HTTP/2 streams open; `idle`, HTTP/1.1 connections kept for reuse), set at scrape.
    pub upstream_connections: IntGaugeVec,
    /// Requests waiting for a connection slot, by upstream, set at scrape.
    pub upstream_waiting: IntGaugeVec,
    /// Requests refused because `max_pending` were already waiting, by upstream.
    pub upstream_overloaded: IntCounterVec,
    /// Passthrough requests and tunnels refused by `deny_destinations`, by `via`.
    pub destinations_denied: IntCounterVec,
    pub upstream_proxy_refusals: IntCounterVec,
    pub cache: CacheMetrics,
    pub dpop: DpopMetrics,
    pub trace: TraceMetrics,
}

/// TLS interception: CONNECTs by outcome, certificates minted, failed handshakes, expiries.
#[derive(Clone)]
pub struct InterceptMetrics {
    /// `outcome`: `intercepted`, `plaintext`, `tunnelled` or `refused`.
    pub connects: IntCounterVec,
    pub certificates_minted: IntCounter,
    /// `reason`: `no_sni`, `sni_mismatch`, `not_tls`, `tls_error`, `timeout`, `closed`.
    pub handshake_failures: IntCounterVec,
    pub ca_expiry: Gauge,
    /// The earliest expiry among the host certificates in use.
    pub leaf_expiry: Gauge,
}

/// How a CONNECT ended, the values of the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    Intercepted,
    Plaintext,
    Tunnelled,
    Refused,
}

impl ConnectOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectOutcome::Intercepted => "intercepted",
            ConnectOutcome::Plaintext => "plaintext",
            ConnectOutcome::Tunnelled => "tunnelled",
            ConnectOutcome::Refused => "refused",
        }
    }
}

impl InterceptMetrics {
    /// Counts one CONNECT by how it ended.
    pub fn connect(&self, outcome: ConnectOutcome) {
        self.connects.with_label_values(&[outcome.as_str()]).inc();
    }

    fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let m = InterceptMetrics {
            connects: counters(
                r,
                "tokenproxy_connects_total",
                "CONNECT requests on the forward listener, by outcome.",
                &["outcome"],
            )?,
            certificates_minted: counter(
                r,
                "tokenproxy_intercept_certificates_minted_total",
                "Host certificates minted for intercepted connections.",
            )?,
            handshake_failures: counters(
                r,
                "tokenproxy_intercept_handshake_failures_total",
                "Intercepted tunnels closed before a request could be served, by reason.",
                &["reason"],
            )?,
            ca_expiry: gauge(
                r,
                "tokenproxy_intercept_ca_expiry_timestamp_seconds",
                "Unix time at which the interception CA's signing certificate expires.",
            )?,
            leaf_expiry: gauge(
                r,
                "tokenproxy_intercept_leaf_expiry_timestamp_seconds",
                "Unix time at which the first of the minted host certificates expires.",
            )?,
        };
        for o in ["intercepted", "plaintext", "tunnelled", "refused"] {
            m.connects.with_label_values(&[o]);
        }
        let reasons = [
            "no_sni",
            "sni_mismatch",
            "not_tls",
            "tls_error",
            "timeout",
            "closed",
            "not_intercepted",
        ];
        for r in reasons {
            m.handshake_failures.with_label_values(&[r]);
        }
        Ok(m)
    }
}

impl Metrics {
    /// Creates the metrics on a registry of their own (plus `process_*` where supported).
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::register(Registry::new())
    }

    /// Creates the metrics and registers them on `registry`, which `render` then exposes.
    pub fn register(registry: Registry) -> Result<Self, prometheus::Error> {
        let r = &registry;
        let m = Metrics {
            requests: counters(r, "tokenproxy_requests_total",
                "Requests answered, by upstream and status code.", &["upstream", "code"])?,
            request_duration: histograms(r, "tokenproxy_request_duration_seconds",
                "Time to answer a request (response head), by upstream.", &["upstream"])?,
            token_fetches: counters(r, "tokenproxy_token_fetches_total",
                "Token requests made, by upstream and outcome.", &["upstream", "outcome"])?,
            token_fetch_duration: histograms(r, "tokenproxy_token_fetch_duration_seconds",
                "Duration of token requests, by upstream.", &["upstream"])?,
            token_fetches_by_auth_method: counters(r, "tokenproxy_token_fetches_by_auth_method_total",
                "Token requests made, by client authentication method and outcome.",
                &["auth_method", "outcome"])?,
            token_fetches_by_grant: counters(r, "tokenproxy_token_fetches_by_grant_total",
                "Token requests made, by grant (client_credentials, token_exchange, jwt_bearer) and outcome.",
                &["grant", "outcome"])?,
            client_certificate_expiry: gauges(r, "tokenproxy_client_certificate_expiry_timestamp_seconds",
                "Unix time at which the client's certificate expires, by client.", &["client"])?,
            token_expiry: gauges(r, "tokenproxy_token_expiry_timestamp_seconds",
                "Unix time at which the current token expires, by upstream.", &["upstream"])?,
            upstream_auth_retries: counters(r, "tokenproxy_upstream_auth_retries_total",
                "Upstream 401 answers that made tokenproxy fetch a new token.", &["upstream"])?,
            token_scope_broader: counters(r, "tokenproxy_token_scope_broader_total",
                "Tokens the authorization server granted with scopes beyond those asked for, by upstream.",
                &["upstream"])?,
            config_reloads: counters(r, "tokenproxy_config_reloads_total",
                "Config reloads, by outcome.", &["outcome"])?,
            config_last_reload_successful: int_gauge(r, "tokenproxy_config_last_reload_successful",
                "1 if the last config reload succeeded, else 0.")?,
            upgrades: counters(r, "tokenproxy_upgrades_total",
                "Connections upgraded (WebSocket) after the upstream answered 101, by upstream.",
                &["upstream"])?,
            upgraded_open: int_gauge(r, "tokenproxy_upgraded_connections",
                "Upgraded (WebSocket) connections open now.")?,
            upstream_connections: int_gauges(r, "tokenproxy_upstream_connections",
                "Connections to an upstream's url, by state: in_use (HTTP/1.1 connections serving a request plus open HTTP/2 streams, bounded by max_connections) and idle.",
                &["upstream", "state"])?,
            upstream_waiting: int_gauges(r, "tokenproxy_upstream_waiting_requests",
                "Requests waiting for a connection to an upstream (max_connections reached), bounded by max_pending.",
                &["upstream"])?,
            upstream_overloaded: counters(r, "tokenproxy_upstream_overloaded_total",
                "Requests answered 503 upstream_overloaded because max_pending requests were already waiting, by upstream.",
                &["upstream"])?,
            destinations_denied: counters(r, "tokenproxy_destinations_denied_total",
                "Passthrough requests (via=passthrough) and CONNECT tunnels (via=tunnel) refused by proxy.deny_destinations.",
                &["via"])?,
            upstream_proxy_refusals: counters(r, "tokenproxy_upstream_proxy_refusals_total",
                "Refusals by the parent proxy (proxy.upstream_proxy: a 407, or a CONNECT answered other than 2xx), by what was refused: token (token endpoint and discovery requests), upstream, passthrough, tunnel.",
                &["via"])?,
            intercept: InterceptMetrics::register(r)?,
            cache: CacheMetrics::register(r)?,
            dpop: DpopMetrics::register(r)?,
            trace: TraceMetrics::register(r)?,
            registry: registry.clone(),
        };
        let build_info = IntGaugeVec::new(
            Opts::new(
                "tokenproxy_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(Box::new(build_info))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        m.config_last_reload_successful.set(1);
        for outcome in ["success", "failure"] {
            m.config_reloads.with_label_values(&[outcome]);
        }
        for via in ["passthrough", "tunnel"] {
            m.destinations_denied.with_label_values(&[via]);
        }
        for via in ["token", "upstream", "passthrough", "tunnel"] {
            m.upstream_proxy_refusals.with_label_values(&[via]);
        }
        Ok(m)
    }

    /// Creates the per-upstream series at zero, so dashboards and alerts see them from start.
    pub fn init_upstream(&self, upstream: &str) {
        for outcome in FetchOutcome::ALL {
            self.token_fetches
                .with_label_values(&[upstream, outcome.as_str()]);
        }
        self.upstream_auth_retries.with_label_values(&[upstream]);
        self.token_scope_broader.with_label_values(&[upstream]);
        self.upgrades.with_label_values(&[upstream]);
        self.upstream_overloaded.with_label_values(&[upstream]);
        self.token_expiry.with_label_values(&[upstream]);
        self.token_fetch_duration.with_label_values(&[upstream]);
    }

    /// Drops the series of an upstream that a reload removed.
    pub fn forget_upstream(&self, upstream: &str) {
        let _ = self.token_expiry.remove_label_values(&[upstream]);
        let _ = self.upstream_waiting.remove_label_values(&[upstream]);
        for state in ["in_use", "idle"] {
            let _ = self
                .upstream_connections
                .remove_label_values(&[upstream, state]);
        }
    }

    pub fn expiry_gauge(&self, upstream: &str) -> Gauge {
        self.token_expiry.with_label_values(&[upstream])
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec fails only on invalid metric families, which we never build.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

/// One upstream's request counters and latency histogram, resolved once instead of hashing
/// label values on every request.
pub struct RequestMetrics {
    upstream: String,
    requests: IntCounterVec,
    /// The counters of the common status codes, resolved once each (a label lookup hashes);
    /// a slot per code from 100 to 599 would be 8 KiB per upstream.
    by_code: Box<[OnceLock<IntCounter>]>,
    durations: HistogramVec,
    /// Made at the first request: an upstream that has seen none has no histogram on the
    /// metrics page (a histogram is 14 series).
    duration: OnceLock<Histogram>,
}

const COMMON_CODES: usize = 16;

/// The slot of a common status code in [`RequestMetrics`]'s table.
fn common_code_slot(code: u16) -> Option<usize> {
    let slot = match code {
        101 => 0,
        200 => 1,
        201 => 2,
        204 => 3,
        206 => 4,
        301 => 5,
        302 => 6,
        304 => 7,
        400 => 8,
        401 => 9,
        403 => 10,
        404 => 11,
        429 => 12,
        500 => 13,
        502 => 14,
        503 => 15,
        _ => return None,
    };
    Some(slot)
}

impl RequestMetrics {
    pub fn new(metrics: &Metrics, upstream: &str) -> Self {
        RequestMetrics {
            upstream: upstream.to_string(),
            requests: metrics.requests.clone(),
            by_code: (0..COMMON_CODES).map(|_| OnceLock::new()).collect(),
            durations: metrics.request_duration.clone(),
            duration: OnceLock::new(),
        }
    }

    /// Records how long a request took to answer.
    pub fn observe(&self, seconds: f64) {
        self.duration
            .get_or_init(|| self.durations.with_label_values(&[&self.upstream]))
            .observe(seconds);
    }

    /// Counts one answered request with `status`.
    pub fn count(&self, status: http::StatusCode) {
        let make = || {
            self.requests
                .with_label_values(&[&self.upstream, status.as_str()])
        };
        match common_code_slot(status.as_u16()).and_then(|i| self.by_code.get(i)) {
            Some(slot) => slot.get_or_init(make).inc(),
            None => make().inc(),
        }
    }
}
