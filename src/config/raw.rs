//! The config file's shape, exactly as a user writes it.
//!
//! These types only mirror the YAML (`deny_unknown_fields` everywhere, so a typo is an error
//! with its line rather than a silently ignored key). Strings stay strings here: environment
//! expansion, address and duration parsing and cross-checks happen in `validate`, which can
//! name the key and line of each problem.

use std::collections::BTreeMap;

use serde::Deserialize;

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
    pub username: Option<String>,
    pub password: Option<RawSecret>,
    pub ca_file: Option<String>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
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
pub struct RawClient {
    /// Optional with `issuer` (then found by discovery); overrides discovery when given.
    pub token_endpoint: Option<String>,
    /// The authorization server's issuer identifier (used as an assertion audience).
    pub issuer: Option<String>,
    /// Optional where the server takes the client from an assertion (`client_assertion`,
    /// and the `token_exchange` and `jwt_bearer` grants).
    pub client_id: Option<String>,
    pub client_secret: Option<RawSecret>,
    /// Default: `client_secret_basic`; `none` for `grant: jwt_bearer`.
    pub auth_method: Option<AuthMethod>,
    /// `client_credentials` (default), `token_exchange` (RFC 8693), `jwt_bearer` (RFC 7523 §2.1).
    #[serde(default)]
    pub grant: Grant,
    /// `auth_method: client_assertion`: a JWT someone else issued (a projected service-account
    /// token, a SPIFFE JWT-SVID, a GitHub Actions OIDC token).
    pub client_assertion: Option<RawJwtSource>,
    pub client_assertion_type: Option<String>,
    /// `grant: token_exchange`: the token exchanged, and the optional actor token.
    pub subject_token: Option<RawJwtSource>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<RawJwtSource>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    /// `grant: jwt_bearer`: the assertion's `iss` and `sub`, and where the scopes go.
    pub assertion_issuer: Option<String>,
    pub assertion_subject: Option<String>,
    pub scopes_in: Option<ScopesIn>,
    pub ca_file: Option<String>,
    /// `private_key_jwt`: PEM (PKCS#8, PKCS#1) or JWK.
    pub private_key: Option<RawSecret>,
    /// PEM certificate of `private_key`, for the `x5t#S256`/`x5t` assertion headers.
    pub certificate: Option<RawSecret>,
    pub signing_alg: Option<crate::jose::SigningAlg>,
    /// The assertion's `kid` header.
    pub key_id: Option<String>,
    /// `token_endpoint` (default), `issuer`, or a literal URL.
    pub assertion_audience: Option<String>,
    pub assertion_lifetime: Option<String>,
    /// `bearer` (default) or `dpop` (RFC 9449).
    #[serde(default)]
    pub token_type: TokenType,
    /// The DPoP key (PEM or JWK); absent: one generated in memory at start (ES256).
    pub dpop_key: Option<RawSecret>,
}

/// A token tokenproxy reads rather than makes: exactly one of `file`, `env`,
/// `github_actions` (and, for `subject_token`, `client`). A struct rather than an untagged
/// enum, so that a mistake is named by key and line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtSource {
    pub file: Option<String>,
    pub env: Option<String>,
    pub github_actions: Option<RawGithubActions>,
    /// `subject_token` only: the current token of another client.
    pub client: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGithubActions {
    pub audience: Option<String>,
}

/// The grant a client's token requests use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    #[default]
    ClientCredentials,
    /// RFC 8693: a token (the subject) exchanged for an access token.
    TokenExchange,
    /// RFC 7523 §2.1: a JWT tokenproxy signs is the grant.
    JwtBearer,
}

impl Grant {
    /// The name in config, metrics and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::TokenExchange => "token_exchange",
            Grant::JwtBearer => "jwt_bearer",
        }
    }

    /// The `grant_type` form parameter.
    pub fn grant_type(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            Grant::JwtBearer => "urn:ietf:params:oauth:grant-type:jwt-bearer",
        }
    }
}

/// Where a `jwt_bearer` client's scopes go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopesIn {
    /// The `scope` form parameter.
    #[default]
    Request,
    /// A `scope` claim in the assertion (Google's service accounts).
    Assertion,
}

/// What kind of access token a client asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    #[default]
    Bearer,
    /// Bound to a key of tokenproxy's: each request carries a proof signed with it.
    Dpop,
}

impl TokenType {
    /// The `token_type` of the answer and the `Authorization` scheme (RFC 6750, RFC 9449).
    pub fn scheme(self) -> &'static str {
        match self {
            TokenType::Bearer => "Bearer",
            TokenType::Dpop => "DPoP",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSecret {
    Literal(String),
    Env(EnvRef),
    File(FileRef),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvRef {
    pub env: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub file: String,
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
    /// Intercept CONNECT to this upstream's hosts (default: true when `proxy.intercept` is set).
    pub intercept: Option<bool>,
    /// Present the client's mTLS certificate to the upstream (certificate-bound tokens).
    #[serde(default)]
    pub client_certificate: bool,
    /// How to speak to the upstream: `auto`, `http1`, `http2`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
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

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
    /// A JWT signed with the client secret (HS256/384/512).
    ClientSecretJwt,
    /// A JWT signed with the client's private key.
    PrivateKeyJwt,
    /// Mutual TLS with a certificate from a PKI the server trusts (RFC 8705 §2.1).
    TlsClientAuth,
    /// Mutual TLS with a self-signed certificate registered at the server (RFC 8705 §2.2).
    SelfSignedTlsClientAuth,
    /// A JWT issued by someone else (RFC 7523 §2.2): workload identity federation.
    ClientAssertion,
    /// No client authentication (public STS endpoints; `token_exchange` and `jwt_bearer` only).
    None,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretJwt => "client_secret_jwt",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
            AuthMethod::ClientAssertion => "client_assertion",
            AuthMethod::None => "none",
        }
    }

    /// The name in `token_endpoint_auth_methods_supported` (RFC 8414): a federated assertion
    /// is presented exactly as `private_key_jwt` is.
    pub fn metadata_name(self) -> &'static str {
        match self {
            AuthMethod::ClientAssertion => "private_key_jwt",
            other => other.as_str(),
        }
    }

    /// The methods that authenticate with a client certificate in the TLS handshake.
    pub fn uses_mtls(self) -> bool {
        matches!(
            self,
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth
        )
    }

    /// The methods that send a signed assertion instead of the secret.
    pub fn uses_assertion(self) -> bool {
        matches!(
            self,
            AuthMethod::ClientSecretJwt | AuthMethod::PrivateKeyJwt
        )
    }
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
