//! The config file's shape, exactly as a user writes it.
//!
//! These types only mirror the YAML (`deny_unknown_fields` everywhere, so a typo is an error
//! with its line rather than a silently ignored key). Strings stay strings here: environment
//! expansion, address and duration parsing and cross-checks happen in `validate`, which can
//! name the key and line of each problem.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::raw_client::{
    AuthMethod, Grant, RawClient, RawJwtSource, RawSecret, ScopesIn, TokenType,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub proxy: RawProxy,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub tokens: RawTokens,
    #[serde(default)]
    pub clients: BTreeMap<String, RawClient>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub access_log: AccessLog,
    pub cache: Option<RawCache>,
    pub tracing: Option<RawTracing>,
}

/// `tracing`: OpenTelemetry traces over OTLP/HTTP, off when absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
}

/// `cache`: the token cache shared by replicas.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub redis: Option<RawRedis>,
    pub encryption_key: Option<RawSecret>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<String>,
    pub sentinel: Option<RawSentinel>,
    pub cluster: Option<RawCluster>,
    pub username: Option<String>,
    pub password: Option<RawSecret>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
}

/// `cache.redis.sentinel`: the primary of `master_name`, as the sentinels say.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master_name: Option<String>,
    #[serde(default)]
    pub nodes: Vec<String>,
    pub username: Option<String>,
    pub password: Option<RawSecret>,
}

/// `cache.redis.cluster`: seed nodes of a Redis Cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    #[serde(default)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    pub listen: Option<String>,
    pub unmatched: Option<Unmatched>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub shutdown_delay: Option<String>,
    pub header_read_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_head_bytes: Option<usize>,
    pub http2_max_concurrent_streams: Option<u32>,
    pub http2_max_header_list_size: Option<u32>,
    pub http2_max_pending_reset_streams: Option<usize>,
    pub http2_max_error_reset_streams: Option<usize>,
    pub intercept: Option<RawIntercept>,
    /// CONNECT to a matched host carrying plaintext HTTP is served without a CA (default true).
    pub connect_plaintext: Option<bool>,
    /// CIDRs and words (`metadata`, `private`, `loopback`) passthrough and tunnels may not reach.
    #[serde(default)]
    pub deny_destinations: Vec<String>,
    /// The parent (corporate) HTTP proxy for every outbound connection but Redis.
    pub upstream_proxy: Option<RawParentProxy>,
}

/// `proxy.upstream_proxy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawParentProxy {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<RawSecret>,
    #[serde(default)]
    pub no_proxy: RawNoProxy,
}

/// `no_proxy`: a list, or one comma-separated string as in `NO_PROXY` (so that
/// `no_proxy: ${NO_PROXY}` works).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawNoProxy {
    List(Vec<String>),
    Text(String),
}

impl Default for RawNoProxy {
    fn default() -> Self {
        RawNoProxy::List(Vec::new())
    }
}

/// `proxy.intercept`: TLS interception of CONNECT to matched hosts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntercept {
    pub ca: RawCa,
    pub trust_dir: Option<String>,
    pub leaf_lifetime: Option<String>,
}

/// `generate`, or a CA certificate and key from files.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCa {
    Generate(String),
    Files(RawCaFiles),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaFiles {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    pub default_lifetime: Option<String>,
    pub min_refresh_interval: Option<String>,
    pub max_lifetime: Option<String>,
    pub backoff_min: Option<String>,
    pub backoff_max: Option<String>,
    pub wait_timeout: Option<String>,
    pub fetch_timeout: Option<String>,
    pub replay_body_limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    #[serde(rename = "match")]
    pub match_hosts: Option<Vec<String>>,
    pub listen: Option<String>,
    pub client: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    #[serde(default)]
    pub resource: Vec<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub existing_authorization: ExistingAuthorization,
    #[serde(default)]
    pub allow_plaintext: bool,
    pub ca_file: Option<String>,
    /// Serve CONNECT to this upstream's hosts inside the proxy (default true); `false` refuses it.
    pub intercept: Option<bool>,
    /// Present the client's mTLS certificate to the upstream (certificate-bound tokens).
    #[serde(default)]
    pub client_certificate: bool,
    /// How to speak to the upstream: `auto`, `http1`, `http2`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Connections (HTTP/1.1) or streams (HTTP/2) to the `url` at once; more requests queue.
    pub max_connections: Option<usize>,
    /// Requests queued for a connection at most; more get 503 upstream_overloaded.
    pub max_pending: Option<usize>,
    /// `false`: this upstream's connections go direct, not through `proxy.upstream_proxy`.
    pub upstream_proxy: Option<bool>,
}

/// `access_log`: one line per request through a proxy listener, off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub format: AccessLogFormat,
    /// The query string can carry secrets (API keys, signatures), so it is left out unless
    /// asked for.
    #[serde(default)]
    pub include_query: bool,
}

/// How an access-log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs, for reading in a terminal.
    Text,
}

/// What happens to requests that no upstream matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    #[default]
    Passthrough,
    Deny,
}

/// The HTTP version spoken to an upstream. `auto`: HTTP/2 when TLS ALPN agrees, HTTP/1.1 on
/// plaintext; `http2` on plaintext is h2c with prior knowledge. gRPC always goes over HTTP/2
/// and a WebSocket handshake over HTTP/1.1, whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Auto,
    Http1,
    Http2,
}

/// What to do when the app already sent an `Authorization` header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingAuthorization {
    #[default]
    Overwrite,
    Keep,
    Reject,
}
