//! The token endpoint client: one token request (any grant), answered or classified.
//!
//! Built on reqwest with the hardening the design asks for: no redirects followed, proxy
//! environment variables ignored, HTTP/1.1, a total timeout, and a cap on the body read.
//! Response bodies are never logged; only the RFC 6749 `error` code of a failure is kept.
//! The secret is read from its source at every fetch, so a rotated secret is used at once;
//! what a request carries to prove the client and the grant is built in `credentials`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, StatusCode};

use super::discovery::Discovery;
use super::error::FetchError;
use super::error::InvalidResponse;
use super::error::{read_capped, transport};
use super::response::{
    broader_than, check_issued_token_type, parse_error_code, parse_success_as, Issued,
};
use super::wire::{form_body, retry_after, DPOP, DPOP_NONCE};

use super::dpop::ClientDpop;
use super::fetcher::{Ask, Fetcher, Fetching};
use super::parent;
use super::source::TokenSource;
use crate::config::{ClientConfig, Grant, ScopesIn, TokenRequest, TokenSettings, TokenType};
use crate::metrics::{DpopServer, FetchOutcome, Metrics};
use crate::tls::{client_config_with, TlsError};
use crate::trace::KeyValue;

/// Makes token requests for one upstream (one client, one set of scopes).
pub struct Endpoint {
    pub(super) http: reqwest::Client,
    pub(super) client: Arc<ClientConfig>,
    form_base: String,
    /// `grant: jwt_bearer` with `scopes_in: assertion`: the `scope` claim.
    pub(super) scope_claim: Option<String>,
    /// The scopes asked for, to tell a broader grant.
    requested: Vec<String>,
    default_lifetime: Duration,
    /// `tokenproxy_token_fetches_by_auth_method_total`.
    by_method: prometheus::IntCounterVec,
    /// `tokenproxy_token_fetches_by_grant_total`.
    by_grant: prometheus::IntCounterVec,
    /// `tokenproxy_client_certificate_expiry_timestamp_seconds` of this client.
    pub(super) cert_expiry: prometheus::Gauge,
    /// `subject_token: {client: NAME}`: that client's token source.
    pub(super) subject: Option<Arc<TokenSource>>,
    /// The token endpoint from the issuer's metadata, when the config gives no `token_endpoint`.
    discovery: Option<Discovery>,
    /// `token_type: dpop`: the key proofs are signed with, and the server's nonce.
    dpop: Option<Arc<ClientDpop>>,
    /// Shared by the client's sources: how many of its token requests may be in flight.
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
    /// `tokenproxy_dpop_proofs_total` and `…_nonce_retries_total` of a DPoP client.
    dpop_counts: Option<(prometheus::IntCounter, prometheus::IntCounter)>,
    /// `tokenproxy_upstream_proxy_refusals_total{via="token"}`.
    proxy_refusals: prometheus::IntCounter,
    /// How long one token request may take (also bounds asking the parent why it refused).
    fetch_timeout: Duration,
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
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(proxy) = parent::reqwest_proxy(client) {
            builder = builder.proxy(proxy);
        }
        builder
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
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
        let scopes_in = client.assertion.as_ref().map(|a| a.scopes_in);
        let in_assertion =
            client.grant == Grant::JwtBearer && scopes_in == Some(ScopesIn::Assertion);
        let scope_claim =
            (in_assertion && !request.scopes.is_empty()).then(|| request.scopes.join(" "));
        // The series of this method and grant exist from the start, at zero.
        for outcome in FetchOutcome::ALL {
            let o = outcome.as_str();
            metrics
                .token_fetches_by_auth_method
                .with_label_values(&[client.auth_method.as_str(), o]);
            metrics
                .token_fetches_by_grant
                .with_label_values(&[client.grant.as_str(), o]);
        }
        Endpoint {
            http,
            form_base: form_body(client.grant, request, !in_assertion),
            scope_claim,
            requested: request.scopes.clone(),
            default_lifetime: settings.default_lifetime,
            by_method: metrics.token_fetches_by_auth_method.clone(),
            by_grant: metrics.token_fetches_by_grant.clone(),
            subject: None,
            cert_expiry: metrics
                .client_certificate_expiry
                .with_label_values(&[&client.name]),
            discovery: Discovery::for_client(&client).filter(|_| client.token_endpoint.is_none()),
            client,
            dpop: None,
            in_flight: None,
            dpop_counts,
            proxy_refusals: metrics
                .upstream_proxy_refusals
                .with_label_values(&["token"]),
            fetch_timeout: settings.fetch_timeout,
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

    /// `subject_token: {client: NAME}`: the token source of that client.
    pub fn with_subject(mut self, subject: Option<Arc<TokenSource>>) -> Self {
        self.subject = subject;
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
        crate::trace::annotate(|| {
            vec![
                KeyValue::new("tokenproxy.grant", self.client.grant.as_str()),
                KeyValue::new("tokenproxy.auth_method", self.client.auth_method.as_str()),
                KeyValue::new("tokenproxy.client", self.client.name.clone()),
            ]
        });
        let result = self.request().await;
        let outcome = result
            .as_ref()
            .map_or_else(FetchError::outcome, |_| FetchOutcome::Success);
        let method = self.client.auth_method.as_str();
        self.by_method
            .with_label_values(&[method, outcome.as_str()])
            .inc();
        self.by_grant
            .with_label_values(&[self.client.grant.as_str(), outcome.as_str()])
            .inc();
        result
    }

    /// The token endpoint in use: configured, or from the issuer's metadata.
    async fn url(&self) -> Result<reqwest::Url, FetchError> {
        match (&self.client.token_endpoint, &self.discovery) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(d)) => d.token_endpoint(&self.http).await,
            (None, None) => self.key_file_endpoint(),
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
        let url = match self.url().await {
            Ok(url) => url,
            Err(e) => {
                let issuer = self.client.issuer.as_deref().map(reqwest::Url::parse);
                return Err(self
                    .explained(e, issuer.and_then(Result::ok).as_ref())
                    .await);
            }
        };
        let result = match self.request_to(&url).await {
            Err(e) => Err(self.explained(e, Some(&url)).await),
            ok => ok,
        };
        if let (Err(e), Some(d)) = (&result, &self.discovery) {
            if e.endpoint_suspect() {
                d.stale().await;
            }
        }
        result
    }

    /// A transport error to `url` through the parent proxy is the parent's refusal if it
    /// refuses a CONNECT there; refusals are counted.
    async fn explained(&self, e: FetchError, url: Option<&reqwest::Url>) -> FetchError {
        let e = match (&e, url) {
            (FetchError::Transport(_), Some(url)) => {
                let said = parent::refusal(&self.client, url, self.fetch_timeout).await;
                said.unwrap_or(e)
            }
            _ => e,
        };
        if let FetchError::UpstreamProxy { .. } = e {
            self.proxy_refusals.inc();
        }
        e
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
            if status == StatusCode::PROXY_AUTHENTICATION_REQUIRED
                && self.client.upstream_proxy.is_some()
            {
                return Err(FetchError::UpstreamProxy {
                    status: 407,
                    message: format!("parent proxy refused the request to {origin}: HTTP 407 (Proxy Authentication Required: check proxy.upstream_proxy username and password)"),
                });
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
            if self.client.grant == Grant::TokenExchange {
                check_issued_token_type(&body)?;
            }
            let mut issued = parse_success_as(&body, self.default_lifetime, now.as_secs(), kind)?;
            issued.broader = broader_than(&self.requested, issued.scope.as_deref());
            return Ok(issued);
        }
    }

    /// Sends one token request (with new credentials and proof) and reads the answer.
    async fn send(
        &self,
        url: &reqwest::Url,
        origin: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), FetchError> {
        let credentials = self.credentials(url).await?;
        let mut form = self.form_base.clone();
        {
            // The form is non-empty, so the pairs below are joined with &.
            let mut pairs = form_urlencoded::Serializer::for_suffix(&mut form, 0);
            for (k, v) in &credentials.pairs {
                pairs.append_pair(k, v.expose());
            }
        }
        let mut req = self
            .http
            .post(url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(value) = credentials.authorization {
            req = req.header(AUTHORIZATION, value);
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
        let host = || {
            KeyValue::new(
                "server.address",
                url.host_str().unwrap_or_default().to_owned(),
            )
        };
        crate::trace::annotate(|| vec![host()]);
        // The request itself is a child of the fetch: a DPoP nonce retry shows as a second.
        let mut span = crate::trace::child("POST", || {
            let mut attributes = vec![KeyValue::new("http.request.method", "POST"), host()];
            attributes.extend(
                url.port()
                    .map(|p| KeyValue::new("server.port", i64::from(p))),
            );
            attributes
        });
        let resp = match req.body(form).send().await {
            Ok(resp) => resp,
            Err(e) => {
                if let Some(span) = &mut span {
                    span.failed("the token endpoint could not be reached".into());
                }
                return Err(transport(e));
            }
        };
        let status = resp.status();
        let code = || KeyValue::new("http.response.status_code", i64::from(status.as_u16()));
        if let Some(span) = &mut span {
            span.set(code());
        }
        crate::trace::annotate(|| vec![code()]);
        let headers = resp.headers().clone();
        let body = read_capped(resp).await?;
        Ok((status, headers, body))
    }
}

impl Fetcher for Endpoint {
    fn fetch<'a>(&'a self, _ask: Ask<'a>) -> Fetching<'a> {
        Box::pin(Endpoint::fetch(self))
    }
}
