//! Configuration: parse, then validate, then hand out one immutable [`Config`].
//!
//! `raw` mirrors the YAML file; `validate` turns it into the typed values below, expanding
//! `${VAR}`, parsing addresses and durations and cross-checking references, and names the key
//! and line of every problem it finds (all of them, not just the first). [`Config::from_yaml`]
//! does no I/O; [`Config::load`] reads a file and also checks that every secret source can be
//! read and every referenced file exists.

mod client;
mod defaults;
mod env;
mod listeners;
mod locate;
mod raw;
mod raw_client;
mod redis;
mod secret;
mod validate;

pub use validate::{encryption_key_bytes, ACTIONS_TOKEN, ACTIONS_URL};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::jose::SigningAlg;
pub use client::{
    token_types, AssertionConfig, ClientConfig, ExchangeConfig, ExternalToken, JwtSource,
    TlsClientConfig,
};
pub use listeners::Role;
pub use raw::{
    AccessLog, AccessLogFormat, AuthMethod, ExistingAuthorization, Grant, ScopesIn, TokenType,
    Unmatched, UpstreamProtocol,
};
pub use redis::{ClusterConfig, RedisConfig, RedisMode, RedisNode, SentinelConfig};
pub use secret::{readable_by_others, Secret, SecretError, SecretSource};

use crate::host::{DenyList, HostPattern};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub proxy: ProxyConfig,
    pub admin: AdminConfig,
    pub tokens: TokenSettings,
    pub clients: BTreeMap<String, Arc<ClientConfig>>,
    pub upstreams: Vec<Arc<UpstreamConfig>>,
    pub access_log: AccessLog,
    /// The token cache shared by replicas (`cache`); `None`: each process on its own.
    pub cache: Option<CacheConfig>,
    /// OpenTelemetry traces (`tracing`); `None`: no tracing work at all.
    pub tracing: Option<TracingConfig>,
}

/// `tracing`: spans exported over OTLP/HTTP (protobuf) to a collector.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans are posted: `otlp_endpoint` with `/v1/traces` added when it has no path.
    pub traces_url: String,
    /// Of the requests that arrive without a trace context, the share that is traced; a
    /// context from the app decides for its own request (parent-based).
    pub sample_ratio: f64,
    /// `service.name` of every span.
    pub service_name: String,
}

/// `cache`: a second-level token cache on Redis, shared by every replica that names it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub redis: RedisConfig,
    /// 32 bytes, base64: the AES-256-GCM key values are sealed with.
    pub encryption_key: SecretSource,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// The forward (`HTTP_PROXY`) listener; `None` runs reverse listeners only.
    pub listen: Option<SocketAddr>,
    pub unmatched: Unmatched,
    pub connect_timeout: Duration,
    /// How long an upstream may take to send its response head.
    pub request_timeout: Duration,
    /// How long in-flight requests may take to finish after a stop signal.
    pub drain_timeout: Duration,
    /// How long to keep serving (not ready) after a stop signal before closing listeners.
    pub shutdown_delay: Duration,
    /// Per-listener limits (all listeners, admin included).
    pub limits: Limits,
    /// TLS interception of CONNECT to matched hosts; `None`: CONNECT to them is refused.
    pub intercept: Option<InterceptConfig>,
    /// Without `intercept`: a CONNECT to a matched host (other than port 443) is answered and
    /// a plaintext HTTP/1 or HTTP/2 request inside it is served with the token; TLS inside is
    /// closed with a log line that says to configure interception.
    pub connect_plaintext: bool,
    /// Addresses that passthrough requests and opaque tunnels may not connect to (checked on
    /// the resolved address); matched upstreams are not subject to it.
    pub deny_destinations: DenyList,
    /// The parent (corporate) proxy outbound connections go through; `None`: all go direct.
    pub upstream_proxy: Option<Arc<ParentProxyConfig>>,
}

/// `proxy.upstream_proxy`: an HTTP proxy every outbound connection but Redis goes through,
/// unless `no_proxy` names its destination or its client or upstream says
/// `upstream_proxy: false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProxyConfig {
    /// Normalised host (IPv6 in brackets).
    pub host: String,
    pub port: u16,
    /// With `password`: `Proxy-Authorization: Basic`, sent to the parent only.
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    /// Destinations that go direct, with `NO_PROXY`'s meaning: host names (and their
    /// subdomains), `.domain` suffixes, IPs, CIDRs, or `*`.
    pub no_proxy: Vec<String>,
}

/// `max_connections` and `max_pending` of an upstream: HTTP/1.1 connections busy with a
/// request plus HTTP/2 streams open, at most; requests waiting for one, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginLimits {
    pub max_connections: usize,
    pub max_pending: usize,
}

impl Default for OriginLimits {
    /// Envoy's circuit-breaker defaults: far above what one app sends, low enough to stop a
    /// runaway client from opening thousands of connections to one backend.
    fn default() -> Self {
        OriginLimits {
            max_connections: 1024,
            max_pending: 1024,
        }
    }
}

/// `proxy.intercept`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptConfig {
    pub ca: CaSource,
    /// Where `ca.pem`, `bundle.pem` and `truststore.p12` are written at start.
    pub trust_dir: Option<PathBuf>,
    /// Lifetime of the certificates minted per host.
    pub leaf_lifetime: Duration,
}

/// Where the interception CA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A root and a name-constrained intermediate made at start, in memory only.
    Generate,
    /// A CA certificate and its key, in PEM files.
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

/// Per-listener limits against slow or greedy clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request head; also how long an idle keep-alive
    /// connection stays open (hyper starts the clock when it waits for the next request).
    pub header_read_timeout: Duration,
    /// Open connections at most; further clients wait in the accept backlog.
    pub max_connections: usize,
    /// Request header fields at most (more → 431).
    pub max_headers: usize,
    /// Read buffer, and so the largest request head (larger → 431).
    pub max_head_bytes: usize,
    /// HTTP/2: streams one client connection may have open at once (SETTINGS).
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2: the largest decoded header list a client may send (SETTINGS); also bounds a
    /// header block split over CONTINUATION frames.
    pub http2_max_header_list_size: u32,
    /// HTTP/2: streams a client may open and reset before they are served, at once; more is
    /// the rapid-reset attack (CVE-2023-44487) and ends the connection with GOAWAY.
    pub http2_max_pending_reset_streams: usize,
    /// HTTP/2: streams tokenproxy may have to reset because the client broke the protocol on
    /// them; more ends the connection with GOAWAY.
    pub http2_max_error_reset_streams: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
}

/// Token lifetime and retry settings, shared by all upstreams.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSettings {
    /// Lifetime assumed when the answer has neither `expires_in` nor a JWT `exp`.
    pub default_lifetime: Duration,
    /// Longest lifetime believed, whatever the server says.
    pub max_lifetime: Duration,
    /// Shortest time between two refreshes of one token (stops refresh loops).
    pub min_refresh_interval: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a request waits for a token before `503 token_unavailable`.
    pub wait_timeout: Duration,
    /// Total time allowed for one token request.
    pub fetch_timeout: Duration,
    /// Request bodies up to this size are buffered so they can be replayed after a 401.
    pub replay_body_limit: usize,
}

/// What is asked for in a token request on behalf of one upstream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequest {
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub resource: Vec<String>,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// An upstream's `url`: where its requests are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    /// Normalised host (IPv6 in brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash ("" for none).
    pub base_path: String,
}

impl UpstreamUrl {
    /// `host` or `host:port` when the port is not the scheme's default: the Host header value.
    pub fn authority(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.base_path
        )
    }
}

/// One upstream API that gets tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    /// Where requests go; `None` sends a forward-mode request to the target the app asked for.
    pub url: Option<UpstreamUrl>,
    pub match_hosts: Vec<HostPattern>,
    pub listen: Option<SocketAddr>,
    pub client: Arc<ClientConfig>,
    pub request: TokenRequest,
    pub existing_authorization: ExistingAuthorization,
    pub allow_plaintext: bool,
    pub ca_file: Option<PathBuf>,
    /// CONNECT to this upstream's hosts is served inside the proxy: TLS intercepted (with
    /// `proxy.intercept`) or plaintext (`proxy.connect_plaintext`); `false` refuses it.
    pub intercept: bool,
    /// The client's mTLS certificate is presented to this upstream.
    pub client_certificate: bool,
    /// How many requests may be on the wire to the `url` at once, and wait for that.
    pub limits: OriginLimits,
    pub protocol: UpstreamProtocol,
    /// The parent proxy this upstream's connections go through (`None`: direct, by
    /// `upstream_proxy: false` or for want of `proxy.upstream_proxy`).
    pub upstream_proxy: Option<Arc<ParentProxyConfig>>,
}

/// One thing wrong with a config, located as precisely as possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted YAML path, e.g. `upstreams.inventory.client` (empty when unknown).
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config:\n{}", render(.0))]
    Invalid(Vec<Problem>),
}

fn render(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    lines.join("\n")
}

impl Config {
    /// Parses and validates YAML text, without touching secret sources or files.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        validate::from_yaml(text, false).map_err(ConfigError::Invalid)
    }

    /// Like [`Config::from_yaml`], and also reads every secret source and checks every
    /// referenced file, so a missing secret is reported with its line before start.
    pub fn from_yaml_checked(text: &str) -> Result<Config, ConfigError> {
        validate::from_yaml(text, true).map_err(ConfigError::Invalid)
    }

    /// Reads a config file and validates it with [`Config::from_yaml_checked`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml_checked(&text)
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<UpstreamConfig>> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}
