//! What a token request carries to prove who the client is and what it is granted: the
//! client authentication of each `auth_method` (Basic, form, a signed or a presented
//! assertion, a TLS certificate, or none) and the parameters of the grant (a token
//! exchange's subject and actor tokens, a JWT-bearer grant's signed assertion). Every secret,
//! key and presented token is read from its source here, at each request.

use std::time::SystemTime;

use http::HeaderValue;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::endpoint::Endpoint;
use super::error::FetchError;
use super::external::{present, Role};
use super::wire::{basic_auth, ASSERTION_TYPE};
use crate::config::{AuthMethod, Grant, Secret, SecretError};
use crate::host::credential_safe;
use crate::jose::{key_file, x5t, Assertion, KeyError, SigningAlg, SigningKey};

/// The form pairs and the `Authorization` header of one request's credentials.
#[derive(Default)]
pub(super) struct Credentials {
    pub pairs: Vec<(&'static str, Secret)>,
    pub authorization: Option<HeaderValue>,
}

impl Credentials {
    fn push(&mut self, key: &'static str, value: impl Into<String>) {
        self.pairs.push((key, Secret::new(value)));
    }
}

impl Endpoint {
    /// The grant's parameters, then the client's authentication, read now.
    pub(super) async fn credentials(&self, url: &reqwest::Url) -> Result<Credentials, FetchError> {
        let mut c = Credentials::default();
        self.grant_params(url, &mut c).await?;
        self.client_auth(url, &mut c).await?;
        Ok(c)
    }

    async fn grant_params(
        &self,
        url: &reqwest::Url,
        c: &mut Credentials,
    ) -> Result<(), FetchError> {
        match self.client.grant {
            Grant::ClientCredentials => {}
            Grant::TokenExchange => {
                let Some(ex) = &self.client.exchange else {
                    return Ok(());
                };
                // A subject from another client: that client's current token (or why not).
                let from_client = match &self.subject {
                    Some(source) => Some(match source.get().await {
                        Ok(t) => Ok(t.value().to_string()),
                        Err(e) => Err(e.reason),
                    }),
                    None => None,
                };
                let subject = present(&ex.subject, Role::Subject, &self.http, from_client).await?;
                c.push("subject_token", subject.value.expose());
                c.push("subject_token_type", ex.subject.token_type.as_str());
                if let Some(actor) = &ex.actor {
                    let token = present(actor, Role::Actor, &self.http, None).await?;
                    c.push("actor_token", token.value.expose());
                    c.push("actor_token_type", actor.token_type.as_str());
                }
                if let Some(t) = &ex.requested_token_type {
                    c.push("requested_token_type", t.as_str());
                }
            }
            Grant::JwtBearer => {
                let assertion = self.grant_assertion(url)?;
                c.push("assertion", assertion);
            }
        }
        Ok(())
    }

    async fn client_auth(&self, url: &reqwest::Url, c: &mut Credentials) -> Result<(), FetchError> {
        let id = self.client.id();
        match self.client.auth_method {
            AuthMethod::ClientSecretBasic => {
                let secret = self.secret()?;
                let mut value = HeaderValue::try_from(basic_auth(id, secret.expose()))
                    .map_err(|_| FetchError::Secret(SecretError::Empty("unencodable".into())))?;
                value.set_sensitive(true);
                c.authorization = Some(value);
            }
            AuthMethod::ClientSecretPost => {
                let secret = self.secret()?;
                c.push("client_id", id);
                c.push("client_secret", secret.expose());
            }
            // The certificate in the handshake is the credential (RFC 8705 §2).
            AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {
                c.push("client_id", id);
                if let Some(tls) = &self.client.tls_client {
                    let pem = tls.certificate.read()?;
                    if let Ok(der) = CertificateDer::from_pem_slice(pem.expose().as_bytes()) {
                        self.note_expiry(&der);
                    }
                }
            }
            AuthMethod::ClientSecretJwt | AuthMethod::PrivateKeyJwt => {
                let assertion = self.assertion(url)?;
                c.push("client_id", id);
                c.push("client_assertion_type", ASSERTION_TYPE);
                c.push("client_assertion", assertion);
            }
            // A JWT someone else issued; the server may take the client from it.
            AuthMethod::ClientAssertion => {
                let Some(token) = &self.client.client_assertion else {
                    return Ok(());
                };
                let presented = present(token, Role::ClientAssertion, &self.http, None).await?;
                if !id.is_empty() {
                    c.push("client_id", id);
                }
                c.push("client_assertion_type", token.token_type.as_str());
                c.push("client_assertion", presented.value.expose());
            }
            // A public client names itself, if it has a name (RFC 6749 §3.2.1).
            AuthMethod::None => {
                if !id.is_empty() {
                    c.push("client_id", id);
                }
            }
        }
        Ok(())
    }

    /// `tokenproxy_client_certificate_expiry_timestamp_seconds` for the certificate in use.
    fn note_expiry(&self, der: &[u8]) {
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            self.cert_expiry
                .set(cert.validity().not_after.timestamp() as f64);
        }
    }

    fn secret(&self) -> Result<Secret, FetchError> {
        let source = self.client.client_secret.as_ref();
        Ok(source
            .ok_or(SecretError::Empty("client_secret".into()))?
            .read()?)
    }

    /// A new client assertion: the key (or secret) and certificate read now, so a rotated
    /// one is used at once; a new `jti` every time.
    fn assertion(&self, token_endpoint: &reqwest::Url) -> Result<String, FetchError> {
        let a = self.client.assertion.as_ref().ok_or(KeyError::Unreadable)?;
        let key = match &a.private_key {
            Some(source) => SigningKey::private(source.read()?.expose(), a.signing_alg)?,
            None => {
                let alg = a.signing_alg.unwrap_or(SigningAlg::HS256);
                SigningKey::secret(self.secret()?.expose().as_bytes(), alg)?
            }
        };
        let x5t = self.x5t()?;
        let audience = a
            .audience
            .clone()
            .unwrap_or_else(|| token_endpoint.to_string());
        let id = self.client.id();
        let assertion = Assertion {
            issuer: id,
            subject: id,
            audience: &audience,
            scope: None,
            lifetime: a.lifetime,
            kid: a.key_id.as_deref(),
            x5t,
        };
        Ok(assertion.sign(&key, SystemTime::now())?)
    }

    /// The JWT-bearer grant's assertion (RFC 7523 §2.1): `iss` the configured issuer, else
    /// the key file's `client_email`, else the client id; `sub` the configured subject, else
    /// the issuer; `kid` from the config, the key file or the JWK; `scope` when asked for.
    fn grant_assertion(&self, token_endpoint: &reqwest::Url) -> Result<String, FetchError> {
        let a = self.client.assertion.as_ref().ok_or(KeyError::Unreadable)?;
        let source = a.private_key.as_ref().ok_or(KeyError::Unreadable)?;
        let (key, facts) = key_file::load(source.read()?.expose(), a.signing_alg)?;
        let issuer = a
            .issuer
            .as_deref()
            .or(facts.client_email.as_deref())
            .unwrap_or(self.client.id());
        let audience = a
            .audience
            .clone()
            .unwrap_or_else(|| token_endpoint.to_string());
        let assertion = Assertion {
            issuer,
            subject: a.subject.as_deref().unwrap_or(issuer),
            audience: &audience,
            scope: self.scope_claim.as_deref(),
            lifetime: a.lifetime,
            kid: a.key_id.as_deref().or(facts.kid.as_deref()),
            x5t: self.x5t()?,
        };
        Ok(assertion.sign(&key, SystemTime::now())?)
    }

    /// `x5t#S256` and `x5t` of the configured certificate, if any.
    fn x5t(&self) -> Result<Option<(String, String)>, FetchError> {
        let Some(source) = self
            .client
            .assertion
            .as_ref()
            .and_then(|a| a.certificate.as_ref())
        else {
            return Ok(None);
        };
        let text = source.read()?;
        let der = CertificateDer::from_pem_slice(text.expose().as_bytes())
            .map_err(|_| SecretError::Empty("a PEM certificate".into()))?;
        self.note_expiry(&der);
        Ok(Some(x5t(&der)))
    }

    /// A JWT-bearer client with neither `token_endpoint` nor `issuer`: the key file's
    /// `token_uri` (a Google service-account key names it), https or loopback only.
    pub(super) fn key_file_endpoint(&self) -> Result<reqwest::Url, FetchError> {
        let none = || {
            FetchError::Discovery(
                "no token_endpoint, no issuer, and no token_uri in the key file".into(),
            )
        };
        let a = self.client.assertion.as_ref().ok_or_else(none)?;
        let source = a.private_key.as_ref().ok_or_else(none)?;
        let (_, facts) = key_file::load(source.read()?.expose(), a.signing_alg)?;
        let url = reqwest::Url::parse(&facts.token_uri.ok_or_else(none)?)
            .map_err(|_| FetchError::Discovery("the key file's token_uri is not a URL".into()))?;
        if credential_safe(url.scheme(), url.host_str()) {
            Ok(url)
        } else {
            Err(FetchError::Discovery(
                "the key file's token_uri must be https (or http on loopback)".into(),
            ))
        }
    }
}
