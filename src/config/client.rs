//! The validated settings of one client: how it authenticates, which grant it uses, and the
//! credentials it reads (secrets, keys, certificates, and the tokens it presents but did not
//! make). Shapes only; `validate` builds them and `token` uses them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{
    AuthMethod, Grant, ScopesIn, SecretError, SecretSource, SigningAlg, TokenRequest, TokenType,
};

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
    /// The parent proxy token requests (and discovery) go through; `None`: direct, by
    /// `upstream_proxy: false` or for want of `proxy.upstream_proxy`.
    pub upstream_proxy: Option<Arc<super::ParentProxyConfig>>,
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
    GithubActions {
        audience: Option<String>,
    },
    /// The current token of the client of that name, asked for with `request` (scopes and
    /// audience).
    Client {
        name: String,
        request: TokenRequest,
    },
}

impl JwtSource {
    /// `file`, `env`, `github_actions`, `client`: for `/status`.
    pub fn kind(&self) -> &'static str {
        match self {
            JwtSource::File(_) => "file",
            JwtSource::Env(_) => "env",
            JwtSource::GithubActions { .. } => "github_actions",
            JwtSource::Client { .. } => "client",
        }
    }

    /// The unverified claims of a file or environment token as it is now, for `/status` and
    /// the shared cache's key; `None` for the sources asked at each token request.
    pub fn peek_now(&self) -> Option<crate::jose::Peeked> {
        let text = match self {
            JwtSource::File(p) => std::fs::read_to_string(p).ok()?,
            JwtSource::Env(n) => std::env::var(n).ok()?,
            _ => return None,
        };
        crate::jose::peek(text.trim()).ok()
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
