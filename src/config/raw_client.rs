//! The `clients` section's shape: credentials (secret sources too), grants and the tokens a
//! client presents, as a user writes them (see `raw` for the conventions).

use serde::Deserialize;

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
    /// `false`: token requests and discovery go direct, not through `proxy.upstream_proxy`.
    pub upstream_proxy: Option<bool>,
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
    /// `subject_token` only: the current token of another client, asked for with these
    /// scopes and audience.
    pub client: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<String>,
    pub resource: Option<Vec<String>>,
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
