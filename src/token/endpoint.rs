//! The token endpoint client: one `client_credentials` request, answered or classified.
//!
//! Built on reqwest with the hardening the design asks for: no redirects followed, proxy
//! environment variables ignored, HTTP/1.1, a total timeout, and a cap on the body read.
//! Response bodies are never logged; only the RFC 6749 `error` code of a failure is kept.
//! The secret is read from its source at every fetch, so a rotated secret is used at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};

use super::discovery::Discovery;
pub use super::error::FetchError;
use super::error::{read_capped, transport};
use super::response::{parse_error_code, parse_success_as, InvalidResponse, Issued};
pub use super::wire::{basic_auth, form_body, retry_after, ASSERTION_TYPE, DPOP, DPOP_NONCE};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::dpop::ClientDpop;
use crate::config::{
    AuthMethod, ClientConfig, SecretError, TokenRequest, TokenSettings, TokenType,
};
use crate::jose::{x5t, Assertion, KeyError, SigningAlg, SigningKey};
use crate::metrics::{DpopServer, FetchOutcome, Metrics};
use crate::tls::{client_config_with, TlsError};

pub use super::error::MAX_BODY;

/// Makes token requests for one upstream (one client, one set of scopes).
pub struct Endpoint {
    http: reqwest::Client,
    client: Arc<ClientConfig>,
    form_base: String,
    default_lifetime: Duration,
    /// `tokenproxy_token_fetches_by_auth_method_total`.
    by_method: prometheus::IntCounterVec,
    /// `tokenproxy_client_certificate_expiry_timestamp_seconds` of this client.
    cert_expiry: prometheus::Gauge,
    /// The token endpoint from the issuer's metadata, when the config gives no `token_endpoint`.
    discovery: Option<Discovery>,
    /// `token_type: dpop`: the key proofs are signed with, and the server's nonce.
    dpop: Option<Arc<ClientDpop>>,
    /// Shared by the client's sources: how many of its token requests may be in flight.
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
    /// `tokenproxy_dpop_proofs_total` and `…_nonce_retries_total` of a DPoP client.
    dpop_counts: Option<(prometheus::IntCounter, prometheus::IntCounter)>,
}

impl Endpoint {
    pub fn new(
        client: Arc<ClientConfig>,
        request: &TokenRequest,
        settings: &TokenSettings,
        metrics: &Metrics,
    ) -> Result<Self, TlsError> {
        let http = Self::http_client(&client, settings)?;
        Ok(Self::with_http(client, request, settings, metrics, http))
    }

    /// The HTTP client for `client`'s token requests. Upstreams of one client share one: it
    /// holds the client's TLS configuration (trust, certificate, session cache) and its
    /// connections to the token endpoint.
    pub fn http_client(
        client: &ClientConfig,
        settings: &TokenSettings,
    ) -> Result<reqwest::Client, TlsError> {
        let client_cert = client.tls_client.as_ref().map(|t| t.resolver());
        let tls = client_config_with(client.ca_file.as_deref(), client_cert)?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .http1_only()
            // Token requests are rare (one per lifetime per source), but at start every source
            // fetches at once: without a cap, each of those connections would stay pooled
            // (about 25 KiB each) until the idle timeout.
            .pool_max_idle_per_host(2)
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            .user_agent(concat!("tokenproxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TlsError::CaFile {
                path: client.ca_file.clone().unwrap_or_default(),
                reason: e.to_string(),
            })
    }

    /// [`Endpoint::new`] on a client from [`Endpoint::http_client`].
    pub fn with_http(
        client: Arc<ClientConfig>,
        request: &TokenRequest,
        settings: &TokenSettings,
        metrics: &Metrics,
        http: reqwest::Client,
    ) -> Self {
        let dpop_counts = (client.token_type == TokenType::Dpop).then(|| {
            metrics
                .dpop
                .counters(DpopServer::TokenEndpoint, &client.name)
        });
        Endpoint {
            http,
            form_base: form_body(request),
            default_lifetime: settings.default_lifetime,
            by_method: {
                // The series of this method exist from the start, at zero.
                let by = &metrics.token_fetches_by_auth_method;
                for outcome in FetchOutcome::ALL {
                    by.with_label_values(&[client.auth_method.as_str(), outcome.as_str()]);
                }
                by.clone()
            },
            cert_expiry: metrics
                .client_certificate_expiry
                .with_label_values(&[&client.name]),
            discovery: Discovery::for_client(&client).filter(|_| client.token_endpoint.is_none()),
            client,
            dpop: None,
            in_flight: None,
            dpop_counts,
        }
    }

    /// Token requests carry DPoP proofs signed with the client's key (and ask for DPoP-bound
    /// tokens), with the server's nonce once it has sent one.
    pub fn with_dpop(mut self, dpop: Option<Arc<ClientDpop>>) -> Self {
        if let (Some(d), Some(discovery)) = (&dpop, &mut self.discovery) {
            discovery.dpop_alg = Some(d.key.alg());
        }
        self.dpop = dpop;
        self
    }

    /// At most as many token requests in flight as `limit` has permits (shared by the
    /// client's sources).
    pub fn with_limit(mut self, limit: Arc<tokio::sync::Semaphore>) -> Self {
        self.in_flight = Some(limit);
        self
    }

    /// One token request, counted by auth method.
    pub async fn fetch(&self) -> Result<Issued, FetchError> {
        let _permit = match &self.in_flight {
            Some(limit) => limit.acquire().await.ok(),
            None => None,
        };
        let result = self.request().await;
        let outcome = result
            .as_ref()
            .map_or_else(FetchError::outcome, |_| FetchOutcome::Success);
        let method = self.client.auth_method.as_str();
        self.by_method
            .with_label_values(&[method, outcome.as_str()])
            .inc();
        result
    }

    /// The token endpoint in use: configured, or from the issuer's metadata.
    async fn url(&self) -> Result<reqwest::Url, FetchError> {
        match (&self.client.token_endpoint, &self.discovery) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(d)) => d.token_endpoint(&self.http).await,
            (None, None) => Err(FetchError::Discovery(
                "no token_endpoint and no issuer".into(),
            )),
        }
    }

    /// For `validate --online`: finds the token endpoint (discovery and its checks included)
    /// and sees that it answers HTTP at all; sends no credentials.
    pub async fn probe(&self) -> Result<reqwest::Url, FetchError> {
        let url = self.url().await?;
        self.http
            .head(url.clone())
            .send()
            .await
            .map_err(transport)?;
        Ok(url)
    }

    async fn request(&self) -> Result<Issued, FetchError> {
        let url = self.url().await?;
        let result = self.request_to(&url).await;
        if let (Err(e), Some(d)) = (&result, &self.discovery) {
            if e.endpoint_suspect() {
                d.stale().await;
            }
        }
        result
    }

    /// One token request, and once more if a DPoP server asks for a nonce it has just sent
    /// (`400 use_dpop_nonce` with `DPoP-Nonce`, RFC 9449 §8).
    async fn request_to(&self, url: &reqwest::Url) -> Result<Issued, FetchError> {
        let origin = url.origin().ascii_serialization();
        let mut retried = false;
        loop {
            let (status, headers, body) = self.send(url, &origin).await?;
            let nonce = headers.get(DPOP_NONCE).and_then(|v| v.to_str().ok());
            if let (Some(dpop), Some(nonce)) = (&self.dpop, nonce) {
                dpop.nonces.set(&origin, nonce);
            }
            if status.is_redirection() {
                return Err(InvalidResponse::Redirect(status.as_u16()).into());
            }
            let code = (status != StatusCode::OK)
                .then(|| parse_error_code(&body))
                .flatten();
            if self.dpop.is_some()
                && !retried
                && status == StatusCode::BAD_REQUEST
                && code.as_deref() == Some("use_dpop_nonce")
                && headers.contains_key(DPOP_NONCE)
            {
                retried = true;
                if let Some((_, retries)) = &self.dpop_counts {
                    retries.inc();
                }
                continue;
            }
            if status != StatusCode::OK {
                return Err(FetchError::Http {
                    status: status.as_u16(),
                    code,
                    retry_after: retry_after(&headers),
                });
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let kind = self.client.token_type;
            return Ok(parse_success_as(
                &body,
                self.default_lifetime,
                now.as_secs(),
                kind,
            )?);
        }
    }

    /// Sends one token request (with a new assertion and proof) and reads the answer.
    async fn send(
        &self,
        url: &reqwest::Url,
        origin: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), FetchError> {
        let mut form = self.form_base.clone();
        let mut req = self
            .http
            .post(url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        {
            // The form is non-empty, so the pairs below are joined with &.
            let mut pairs = form_urlencoded::Serializer::for_suffix(&mut form, 0);
            match self.client.auth_method {
                AuthMethod::ClientSecretBasic => {
                    let secret = self.secret()?;
                    let mut value = http::HeaderValue::try_from(basic_auth(
                        &self.client.client_id,
                        secret.expose(),
                    ))
                    .map_err(|_| FetchError::Secret(SecretError::Empty("unencodable".into())))?;
                    value.set_sensitive(true);
                    req = req.header(AUTHORIZATION, value);
                }
                AuthMethod::ClientSecretPost => {
                    let secret = self.secret()?;
                    pairs
                        .append_pair("client_id", &self.client.client_id)
                        .append_pair("client_secret", secret.expose());
                }
                // The certificate in the handshake is the credential (RFC 8705 §2).
                AuthMethod::TlsClientAuth | AuthMethod::SelfSignedTlsClientAuth => {
                    pairs.append_pair("client_id", &self.client.client_id);
                    if let Some(tls) = &self.client.tls_client {
                        let pem = tls.certificate.read()?;
                        if let Ok(der) = CertificateDer::from_pem_slice(pem.expose().as_bytes()) {
                            self.note_expiry(&der);
                        }
                    }
                }
                AuthMethod::ClientSecretJwt | AuthMethod::PrivateKeyJwt => {
                    pairs
                        .append_pair("client_id", &self.client.client_id)
                        .append_pair("client_assertion_type", ASSERTION_TYPE)
                        .append_pair("client_assertion", &self.assertion(url)?);
                }
            }
        }
        if let Some(dpop) = &self.dpop {
            let nonce = dpop.nonces.get(origin);
            let proof = dpop
                .key
                .proof("POST", url.as_str(), None, nonce.as_deref())?;
            if let Some((proofs, _)) = &self.dpop_counts {
                proofs.inc();
            }
            req = req.header(DPOP, proof);
        }
        let resp = req.body(form).send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_capped(resp).await?;
        Ok((status, headers, body))
    }
}

impl Endpoint {
    /// `tokenproxy_client_certificate_expiry_timestamp_seconds` for the certificate in use.
    fn note_expiry(&self, der: &[u8]) {
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            self.cert_expiry
                .set(cert.validity().not_after.timestamp() as f64);
        }
    }

    fn secret(&self) -> Result<crate::config::Secret, FetchError> {
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
        let x5t = match &a.certificate {
            Some(source) => {
                let text = source.read()?;
                let der = CertificateDer::from_pem_slice(text.expose().as_bytes())
                    .map_err(|_| SecretError::Empty("a PEM certificate".into()))?;
                self.note_expiry(&der);
                Some(x5t(&der))
            }
            None => None,
        };
        let audience = a
            .audience
            .clone()
            .unwrap_or_else(|| token_endpoint.to_string());
        let assertion = Assertion {
            client_id: &self.client.client_id,
            audience: &audience,
            lifetime: a.lifetime,
            kid: a.key_id.as_deref(),
            x5t,
        };
        Ok(assertion.sign(&key, SystemTime::now())?)
    }
}
