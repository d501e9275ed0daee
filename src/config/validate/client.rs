//! The `clients` section: token endpoints and secret sources.

use std::path::PathBuf;

use super::super::raw::{RawClient, RawSecret};
use super::super::{ClientConfig, Grant, Secret, SecretSource, TokenType};
use super::Validator;
use crate::host::{is_loopback, normalize_host};

impl Validator<'_> {
    pub(super) fn client(&mut self, name: &str, c: &RawClient) -> Option<ClientConfig> {
        let path = |k| ["clients", name, k];
        let token_endpoint = c.token_endpoint.as_deref().and_then(|t| {
            let text = self.expand(&path("token_endpoint"), t);
            self.token_endpoint(&path("token_endpoint"), &text)
        });
        let issuer = c.issuer.as_deref().map(|i| {
            let text = self.expand(&path("issuer"), i);
            self.issuer(&path("issuer"), &text);
            text
        });
        // A jwt_bearer key file (Google's) may name the endpoint; checked with the key.
        if c.token_endpoint.is_none() && c.issuer.is_none() && c.grant != Grant::JwtBearer {
            self.problem(
                &["clients", name],
                "needs token_endpoint, or issuer to find it by discovery",
            );
        }
        let client_id = c
            .client_id
            .as_deref()
            .map(|id| self.expand(&path("client_id"), id));
        if client_id.as_deref() == Some("") {
            self.problem(&path("client_id"), "must not be empty");
        }
        let auth_method = self.auth_method(name, c);
        let client_secret = c
            .client_secret
            .as_ref()
            .map(|s| self.secret(&path("client_secret"), s));
        let ca_file = self.file(&path("ca_file"), c.ca_file.as_deref());
        let assertion = self.credentials(
            name,
            c,
            auth_method,
            client_secret.as_ref(),
            issuer.as_deref(),
        );
        let tls_client = self.tls_client(name, c, auth_method);
        let dpop_key = self.dpop_key(name, c);
        let client_assertion = self.client_assertion(name, c, auth_method);
        let exchange = self.exchange(name, c);
        self.jwt_bearer_keys(name, c);
        Some(ClientConfig {
            name: name.to_string(),
            token_endpoint,
            issuer,
            client_id,
            client_secret,
            auth_method,
            grant: c.grant,
            client_assertion,
            exchange,
            ca_file,
            assertion,
            tls_client,
            token_type: c.token_type,
            dpop_key,
            upstream_proxy: None, // set by the caller, from the proxy section
        })
    }

    /// `dpop_key`: only with `token_type: dpop`, and an asymmetric key when it is read.
    fn dpop_key(&mut self, name: &str, c: &RawClient) -> Option<SecretSource> {
        let path = ["clients", name, "dpop_key"];
        let raw = c.dpop_key.as_ref()?;
        if c.token_type != TokenType::Dpop {
            self.problem(&path, "dpop_key needs token_type: dpop");
        }
        let source = self.secret(&path, raw);
        if self.check_sources {
            if let Ok(text) = source.read() {
                if let Err(e) = crate::jose::DpopKey::from_text(text.expose(), None) {
                    self.problem(&path, format!("not a DPoP key: {e}"));
                }
            }
        }
        Some(source)
    }

    /// An issuer identifier (RFC 8414 §2): an https URL (http on loopback) with no query or
    /// fragment.
    fn issuer(&mut self, path: &[&str], text: &str) {
        let Some(url) = self.token_endpoint(path, text) else {
            return;
        };
        if url.query().is_some() || url.fragment().is_some() {
            self.problem(path, "an issuer has no query or fragment");
        }
    }

    pub(super) fn token_endpoint(&mut self, path: &[&str], text: &str) -> Option<reqwest::Url> {
        let url = match reqwest::Url::parse(text) {
            Ok(u) => u,
            Err(e) => {
                self.problem(path, format!("not a URL ({e})"));
                return None;
            }
        };
        let host = url.host_str().and_then(|h| normalize_host(h).ok());
        match (url.scheme(), host) {
            (_, None) => self.problem(path, "needs a valid host"),
            _ if !url.username().is_empty() || url.password().is_some() => {
                self.problem(path, "must not contain user info; put credentials in client_id/client_secret")
            }
            ("https", Some(_)) => {}
            ("http", Some(h)) if is_loopback(&h) => {}
            ("http", Some(_)) => self.problem(
                path,
                "an http:// token endpoint is only allowed on loopback: the client secret would cross the network in clear",
            ),
            (other, _) => self.problem(path, format!("scheme {other:?} is not http or https")),
        }
        Some(url)
    }

    pub(super) fn secret(&mut self, path: &[&str], s: &RawSecret) -> SecretSource {
        let source = match s {
            RawSecret::Literal(v) => SecretSource::Literal(Secret::new(self.expand(path, v))),
            RawSecret::Env(e) => SecretSource::Env(e.env.clone()),
            RawSecret::File(f) => SecretSource::File(PathBuf::from(self.expand(path, &f.file))),
        };
        if self.check_sources {
            if let Err(e) = source.read() {
                self.problem(path, e.to_string());
            }
        }
        source
    }
}
