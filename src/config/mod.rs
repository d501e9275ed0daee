//! Configuration: parse, then validate, then hand out one immutable [`Config`].
//!
//! `raw` mirrors the YAML file; `validate` turns it into the typed values below, expanding
//! `${VAR}`, parsing addresses and durations and cross-checking references, and names the key
//! and line of every problem it finds (all of them, not just the first). [`Config::from_yaml`]
//! does no I/O; [`Config::load`] reads a file and also checks that every secret source can be
//! read and every referenced file exists.

mod defaults;
mod env;
mod listeners;
mod locate;
pub mod raw;
pub mod secret;
mod validate;

pub use validate::{encryption_key_bytes, ACTIONS_TOKEN, ACTIONS_URL};

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::jose::SigningAlg;
pub use listeners::Role;
pub use raw::{
    AccessLog, AccessLogFormat, AuthMethod, ExistingAuthorization, Grant, ScopesIn, TokenType,
    Unmatched, UpstreamProtocol,
};
pub use secret::{Secret, SecretError, SecretSource};

use crate::host::HostPattern;

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
}

/// `cache`: a second-level token cache on Redis, shared by every replica that names it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub redis: RedisConfig,
    /// 32 bytes, base64: the AES-256-GCM key values are sealed with.
    pub encryption_key: SecretSource,
}

/// `cache.redis`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS), host, port, and optionally `/db`. No credentials in it.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    pub ca_file: Option<PathBuf>,
    pub key_prefix: String,
    /// For any one Redis command; past it the cache is bypassed.
    pub timeout: Duration,
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

/// Credentials at one authorization server.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    pub name: String,
    /// `None`: found in the issuer's metadata (discovery).
    pub token_endpoint: Option<reqwest::Url>,
    /// The issuer identifier, exactly as configured (metadata must name it byte for byte).
    pub issuer: Option<String>,
    /// `None` where the server takes the client from an assertion.
    pub client_id: Option<String>,
    /// For `client_secret_basic`, `client_secret_post` and `client_secret_jwt`.
    pub client_secret: Option<SecretSource>,
    pub auth_method: AuthMethod,
    pub grant: Grant,
    /// `auth_method: client_assertion`: the JWT presented, and its `client_assertion_type`.
    pub client_assertion: Option<ExternalToken>,
    /// `grant: token_exchange`: what is exchanged.
    pub exchange: Option<ExchangeConfig>,
    pub ca_file: Option<PathBuf>,
    /// How a client assertion is made (`client_secret_jwt`, `private_key_jwt`).
    pub assertion: Option<AssertionConfig>,
    /// The client certificate of the mutual-TLS methods.
    pub tls_client: Option<TlsClientConfig>,
    pub token_type: TokenType,
    /// `token_type: dpop`: the key's source; `None`: generated in memory at start.
    pub dpop_key: Option<SecretSource>,
}

/// A token tokenproxy reads rather than signs: a JWT credential issued by someone else, or
/// (for a subject token) another client's access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtSource {
    /// Read at every token request; kubelet swaps the `..data` symlink, so a read sees the
    /// old file or the new one, never half of either.
    File(PathBuf),
    Env(String),
    /// Asked of the GitHub Actions runner (`ACTIONS_ID_TOKEN_REQUEST_URL`, `_TOKEN`).
    GithubActions { audience: Option<String> },
    /// The current token of the client of that name.
    Client(String),
}

impl JwtSource {
    /// `file`, `env`, `github_actions`, `client`: for `/status`.
    pub fn kind(&self) -> &'static str {
        match self {
            JwtSource::File(_) => "file",
            JwtSource::Env(_) => "env",
            JwtSource::GithubActions { .. } => "github_actions",
            JwtSource::Client(_) => "client",
        }
    }
}

/// A token read from a [`JwtSource`] and the type it is sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalToken {
    pub source: JwtSource,
    /// `client_assertion_type`, `subject_token_type` or `actor_token_type`.
    pub token_type: String,
}

/// `grant: token_exchange` (RFC 8693).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeConfig {
    pub subject: ExternalToken,
    pub actor: Option<ExternalToken>,
    pub requested_token_type: Option<String>,
}

/// RFC 8693 §3 token type identifiers.
pub mod token_types {
    pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
    pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
    pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
    /// `client_assertion_type` for a JWT assertion (RFC 7523 §2.2).
    pub const CLIENT_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
}

impl ClientConfig {
    /// The client id, or `""` where none is configured (only methods that can do without one
    /// pass validation without it).
    pub fn id(&self) -> &str {
        self.client_id.as_deref().unwrap_or_default()
    }
}

/// A client certificate and its key (`tls_client_auth`, `self_signed_tls_client_auth`).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsClientConfig {
    pub certificate: SecretSource,
    pub private_key: SecretSource,
}

impl TlsClientConfig {
    /// A rustls client-certificate resolver that presents this certificate, read again when
    /// its text changes (the token endpoint client and bound upstreams share this shape).
    pub fn resolver(&self) -> Arc<crate::tls::ReloadingClientCert> {
        let tls = self.clone();
        let read: crate::tls::ReadPair = Box::new(move || tls.read().map_err(|e| e.to_string()));
        Arc::new(crate::tls::ReloadingClientCert::new(read))
    }

    /// The certificate and the key, read from their sources now.
    pub fn read(&self) -> Result<(String, String), SecretError> {
        let cert = self.certificate.read()?.expose().to_string();
        let key = self.private_key.read()?.expose().to_string();
        Ok((cert, key))
    }
}

/// The settings of a client assertion.
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionConfig {
    /// `private_key_jwt`'s key; `None` for `client_secret_jwt` (the secret is the key).
    pub private_key: Option<SecretSource>,
    /// The key's certificate, for the `x5t#S256` and `x5t` headers.
    pub certificate: Option<SecretSource>,
    /// `None`: the algorithm the key implies (HS256 for `client_secret_jwt`).
    pub signing_alg: Option<SigningAlg>,
    pub key_id: Option<String>,
    /// The `aud` claim; `None`: the token endpoint in use.
    pub audience: Option<String>,
    pub lifetime: Duration,
    /// `grant: jwt_bearer`: `iss` (default: the key file's `client_email`, else client_id).
    pub issuer: Option<String>,
    /// `grant: jwt_bearer`: `sub` (default: the issuer).
    pub subject: Option<String>,
    pub scopes_in: ScopesIn,
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
    /// CONNECT to this upstream's hosts is intercepted (needs `proxy.intercept`).
    pub intercept: bool,
    /// The client's mTLS certificate is presented to this upstream.
    pub client_certificate: bool,
    pub protocol: UpstreamProtocol,
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
