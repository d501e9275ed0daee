//! Authorization server metadata (RFC 8414, then OpenID Connect Discovery): the token endpoint
//! of a client that gives `issuer` instead of `token_endpoint`.
//!
//! `/.well-known/oauth-authorization-server` is tried first, with the issuer's path inserted
//! after it (RFC 8414 §3.1), then `/.well-known/openid-configuration` appended to the issuer.
//! The answer's `issuer` must be byte-identical to the configured one, and the client's auth
//! method (and signing algorithm, and a DPoP client's proof algorithm) must be among those
//! advertised, when they are. Metadata is
//! cached per `Cache-Control: max-age`, clamped to between 5 minutes and 24 hours, and fetched
//! again on the token path (a background task) once stale; a failed refetch keeps the last
//! good metadata, and a failed token request makes the next one refetch.

use std::time::Duration;

use reqwest::header::CACHE_CONTROL;
use reqwest::{StatusCode, Url};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::{read_capped, transport, FetchError};
use crate::config::{AuthMethod, ClientConfig, Grant, SigningAlg};

/// The shortest and longest time metadata is kept.
pub const MAX_AGE_RANGE: (Duration, Duration) =
    (Duration::from_secs(300), Duration::from_secs(86400));

/// One issuer's metadata, fetched on demand and cached.
pub struct Discovery {
    issuer: String,
    method: AuthMethod,
    grant: Grant,
    alg: Option<SigningAlg>,
    /// The algorithm of the client's DPoP proofs, for a `token_type: dpop` client.
    pub dpop_alg: Option<SigningAlg>,
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    token_endpoint: Url,
    fresh_until: Instant,
}

impl Discovery {
    /// For a client that names an issuer; `None` otherwise.
    pub fn for_client(client: &ClientConfig) -> Option<Discovery> {
        let issuer = client.issuer.clone()?;
        let alg = client.assertion.as_ref().and_then(|a| a.signing_alg);
        Some(Discovery {
            issuer,
            method: client.auth_method,
            grant: client.grant,
            alg,
            dpop_alg: None,
            cached: Mutex::new(None),
        })
    }

    /// The token endpoint: cached, or fetched now. A failed fetch falls back to stale
    /// metadata when there is some.
    pub async fn token_endpoint(&self, http: &reqwest::Client) -> Result<Url, FetchError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.fresh_until) {
            return Ok(c.token_endpoint.clone());
        }
        match self.fetch(http).await {
            Ok((token_endpoint, max_age)) => {
                let fresh_until = Instant::now() + max_age;
                *cached = Some(Cached {
                    token_endpoint: token_endpoint.clone(),
                    fresh_until,
                });
                Ok(token_endpoint)
            }
            Err(e) => match cached.as_ref() {
                Some(stale) => {
                    tracing::warn!(issuer = %self.issuer, error = %e, "metadata refresh failed; keeping the last good metadata");
                    Ok(stale.token_endpoint.clone())
                }
                None => Err(e),
            },
        }
    }

    /// After a failed token request: fetch the metadata again next time.
    pub async fn stale(&self) {
        if let Some(c) = self.cached.lock().await.as_mut() {
            c.fresh_until = Instant::now();
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<(Url, Duration), FetchError> {
        let issuer = Url::parse(&self.issuer).map_err(|e| discovery(format!("issuer: {e}")))?;
        let mut last = None;
        for url in well_known_urls(&issuer) {
            let resp = http
                .get(url.clone())
                .header("accept", "application/json")
                .send()
                .await
                .map_err(transport)?;
            let status = resp.status();
            let max_age = max_age(resp.headers());
            let body = read_capped(resp).await?;
            if status == StatusCode::NOT_FOUND {
                last = Some(format!("{url}: 404"));
                continue;
            }
            if status != StatusCode::OK {
                return Err(discovery(format!(
                    "{url} answered HTTP {}",
                    status.as_u16()
                )));
            }
            let meta: Value =
                serde_json::from_slice(&body).map_err(|_| discovery(format!("{url}: not JSON")))?;
            return Ok((self.check(&meta)?, max_age));
        }
        Err(discovery(format!(
            "no metadata ({})",
            last.unwrap_or_default()
        )))
    }

    /// The checks RFC 8414 §3.3 asks for, and the client's method and algorithm.
    fn check(&self, meta: &Value) -> Result<Url, FetchError> {
        let got = meta
            .get("issuer")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if got != self.issuer {
            return Err(discovery(format!(
                "the metadata names issuer {got:?}, not {:?}",
                self.issuer
            )));
        }
        let listed = |key: &str, want: &str| {
            meta.get(key)
                .and_then(Value::as_array)
                .is_none_or(|list| list.iter().any(|v| v.as_str() == Some(want)))
        };
        if !listed(
            "token_endpoint_auth_methods_supported",
            self.method.metadata_name(),
        ) {
            return Err(discovery(format!(
                "the server does not list {} in token_endpoint_auth_methods_supported",
                self.method.metadata_name()
            )));
        }
        if self.grant != Grant::ClientCredentials
            && !listed("grant_types_supported", self.grant.grant_type())
        {
            return Err(discovery(format!(
                "the server does not list {} in grant_types_supported",
                self.grant.grant_type()
            )));
        }
        if let Some(alg) = self.alg.filter(|_| self.method.uses_assertion()) {
            if !listed(
                "token_endpoint_auth_signing_alg_values_supported",
                alg.as_str(),
            ) {
                return Err(discovery(format!("the server does not list {alg} in token_endpoint_auth_signing_alg_values_supported")));
            }
        }
        if let Some(alg) = self.dpop_alg {
            if !listed("dpop_signing_alg_values_supported", alg.as_str()) {
                return Err(discovery(format!("the server does not list {alg} in dpop_signing_alg_values_supported: give dpop_key a key it takes")));
            }
        }
        let endpoint = meta
            .get("token_endpoint")
            .and_then(Value::as_str)
            .ok_or_else(|| discovery("no token_endpoint in the metadata".into()))?;
        let url = Url::parse(endpoint)
            .map_err(|_| discovery(format!("token_endpoint {endpoint:?} is not a URL")))?;
        let loopback = url.host_str().is_some_and(crate::host::is_loopback);
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err(discovery(format!("token_endpoint {endpoint} is not https")));
        }
        Ok(url)
    }
}

fn discovery(reason: String) -> FetchError {
    FetchError::Discovery(reason)
}

/// Where the metadata may be: RFC 8414 §3.1 (the well-known segment between the host and the
/// issuer's path), then OpenID Connect Discovery §4 (appended to the issuer).
pub fn well_known_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    vec![rfc8414, oidc]
}

/// `Cache-Control: max-age`, clamped; the shortest when there is none.
fn max_age(headers: &reqwest::header::HeaderMap) -> Duration {
    let (min, max) = MAX_AGE_RANGE;
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        .map(Duration::from_secs)
        .next()
        .map_or(min, |d| d.clamp(min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dpop_proof_algorithm_the_server_does_not_list_is_refused() {
        let mut d = Discovery {
            issuer: "https://idp.example".into(),
            method: AuthMethod::ClientSecretBasic,
            grant: Grant::ClientCredentials,
            alg: None,
            dpop_alg: Some(SigningAlg::ES384),
            cached: Mutex::new(None),
        };
        let meta = serde_json::json!({
            "issuer": "https://idp.example",
            "token_endpoint": "https://idp.example/token",
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        });
        let err = d.check(&meta).unwrap_err().to_string();
        assert!(
            err.contains("ES384") && err.contains("dpop_signing_alg_values_supported"),
            "{err}"
        );
        d.dpop_alg = Some(SigningAlg::ES256);
        assert!(d.check(&meta).is_ok());
        let unlisted = serde_json::json!({"issuer": "https://idp.example", "token_endpoint": "https://idp.example/token"});
        d.dpop_alg = Some(SigningAlg::ES384);
        assert!(
            d.check(&unlisted).is_ok(),
            "a server that lists nothing is not second-guessed"
        );
    }

    #[test]
    fn well_known_urls_follow_rfc_8414_then_oidc() {
        let urls = |i: &str| -> Vec<String> {
            well_known_urls(&Url::parse(i).unwrap())
                .iter()
                .map(Url::to_string)
                .collect()
        };
        assert_eq!(
            urls("https://idp.example.com"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            urls("https://idp.example.com/"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration"
            ],
            "a trailing slash is no path"
        );
        assert_eq!(
            urls("https://login.example.com/tenant-1/v2.0"),
            [
                "https://login.example.com/.well-known/oauth-authorization-server/tenant-1/v2.0",
                "https://login.example.com/tenant-1/v2.0/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            urls("https://idp.example.com:8443/realms/a/"),
            [
                "https://idp.example.com:8443/.well-known/oauth-authorization-server/realms/a",
                "https://idp.example.com:8443/realms/a/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn max_age_is_clamped() {
        let h = |v: &str| {
            let mut m = reqwest::header::HeaderMap::new();
            m.insert(CACHE_CONTROL, v.parse().unwrap());
            max_age(&m)
        };
        assert_eq!(h("public, max-age=3600"), Duration::from_secs(3600));
        assert_eq!(h("max-age=10"), Duration::from_secs(300));
        assert_eq!(h("max-age=999999"), Duration::from_secs(86400));
        assert_eq!(
            max_age(&reqwest::header::HeaderMap::new()),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn a_federated_assertion_is_listed_as_private_key_jwt_and_the_grant_must_be_listed() {
        let d = Discovery {
            issuer: "https://idp.example".into(),
            method: AuthMethod::ClientAssertion,
            grant: Grant::TokenExchange,
            alg: None,
            dpop_alg: None,
            cached: Mutex::new(None),
        };
        let meta = |methods: &[&str], grants: &[&str]| {
            serde_json::json!({
                "issuer": "https://idp.example",
                "token_endpoint": "https://idp.example/token",
                "token_endpoint_auth_methods_supported": methods,
                "grant_types_supported": grants,
            })
        };
        let exchange = "urn:ietf:params:oauth:grant-type:token-exchange";
        assert!(d.check(&meta(&["private_key_jwt"], &[exchange])).is_ok());
        let err = d
            .check(&meta(&["client_secret_basic"], &[exchange]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("private_key_jwt"), "{err}");
        let err = d
            .check(&meta(&["private_key_jwt"], &["client_credentials"]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("grant_types_supported") && err.contains(exchange),
            "{err}"
        );
    }
}
