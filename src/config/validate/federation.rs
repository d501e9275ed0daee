//! Credentials that are not long-lived secrets: `client_assertion` (a JWT issued by someone
//! else), the `token_exchange` grant's subject and actor tokens, and which keys belong to
//! which grant. A subject taken from another client must not lead back to itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::super::raw::{RawClient, RawJwtSource};
use super::super::{
    token_types, AuthMethod, ClientConfig, ExchangeConfig, ExternalToken, Grant, JwtSource,
    TokenRequest, TokenType,
};
use super::Validator;

/// The runner's variables a `github_actions` source reads.
pub const ACTIONS_URL: &str = "ACTIONS_ID_TOKEN_REQUEST_URL";
pub const ACTIONS_TOKEN: &str = "ACTIONS_ID_TOKEN_REQUEST_TOKEN";

impl Validator<'_> {
    /// `auth_method` with its grant's default, and whether it fits the grant.
    pub(super) fn auth_method(&mut self, name: &str, c: &RawClient) -> AuthMethod {
        let default = match c.grant {
            Grant::JwtBearer => AuthMethod::None,
            _ => AuthMethod::ClientSecretBasic,
        };
        let method = c.auth_method.unwrap_or(default);
        let at = ["clients", name, "auth_method"];
        match (c.grant, method) {
            (Grant::ClientCredentials, AuthMethod::None) => self.problem(
                &at,
                "none is only allowed with grant token_exchange or jwt_bearer: a client_credentials request must authenticate",
            ),
            (
                Grant::JwtBearer,
                AuthMethod::PrivateKeyJwt
                | AuthMethod::ClientSecretJwt
                | AuthMethod::TlsClientAuth
                | AuthMethod::SelfSignedTlsClientAuth,
            ) => self.problem(
                &at,
                format!(
                    "{} is not used with grant jwt_bearer (private_key signs the grant itself): use none, client_secret_basic, client_secret_post or client_assertion",
                    method.as_str()
                ),
            ),
            _ => {}
        }
        let needs_id = !matches!(method, AuthMethod::ClientAssertion | AuthMethod::None);
        if needs_id && c.client_id.is_none() {
            self.problem(
                &["clients", name],
                format!("{} needs client_id", method.as_str()),
            );
        }
        method
    }

    /// `client_assertion` and `client_assertion_type`: present exactly with that method.
    pub(super) fn client_assertion(
        &mut self,
        name: &str,
        c: &RawClient,
        method: AuthMethod,
    ) -> Option<ExternalToken> {
        let key = |k| ["clients", name, k];
        let wanted = method == AuthMethod::ClientAssertion;
        match (&c.client_assertion, wanted) {
            (None, true) => {
                self.problem(
                    &key("auth_method"),
                    "client_assertion needs client_assertion: { file | env | github_actions }",
                );
                None
            }
            (Some(_), false) => {
                self.problem(
                    &key("client_assertion"),
                    "only used with auth_method: client_assertion",
                );
                None
            }
            (None, false) => {
                if c.client_assertion_type.is_some() {
                    self.problem(
                        &key("client_assertion_type"),
                        "only used with auth_method: client_assertion",
                    );
                }
                None
            }
            (Some(raw), true) => {
                let source = self.jwt_source(&key("client_assertion"), raw, false)?;
                let token_type = c
                    .client_assertion_type
                    .as_deref()
                    .map(|t| self.expand(&key("client_assertion_type"), t))
                    .unwrap_or_else(|| token_types::CLIENT_ASSERTION.to_string());
                Some(ExternalToken { source, token_type })
            }
        }
    }

    /// The `token_exchange` settings; the other grants must not set them.
    pub(super) fn exchange(&mut self, name: &str, c: &RawClient) -> Option<ExchangeConfig> {
        let key = |k| ["clients", name, k];
        if c.grant != Grant::TokenExchange {
            let set = [
                ("subject_token", c.subject_token.is_some()),
                ("subject_token_type", c.subject_token_type.is_some()),
                ("actor_token", c.actor_token.is_some()),
                ("actor_token_type", c.actor_token_type.is_some()),
                ("requested_token_type", c.requested_token_type.is_some()),
            ];
            for (k, _) in set.iter().filter(|(_, s)| *s) {
                self.problem(&key(k), "only used with grant: token_exchange");
            }
            return None;
        }
        let Some(raw) = &c.subject_token else {
            self.problem(
                &key("grant"),
                "token_exchange needs subject_token: { file | env | github_actions | client }",
            );
            return None;
        };
        let subject = self.jwt_source(&key("subject_token"), raw, true)?;
        let default_type = default_for(&subject);
        let subject_type = self.token_type(&key("subject_token_type"), &c.subject_token_type);
        let actor = match (&c.actor_token, &c.actor_token_type) {
            (Some(raw), t) => {
                let source = self.jwt_source(&key("actor_token"), raw, false);
                let token_type = self.token_type(&key("actor_token_type"), t);
                source.map(|source| ExternalToken {
                    token_type: token_type.unwrap_or_else(|| default_for(&source).into()),
                    source,
                })
            }
            (None, Some(_)) => {
                self.problem(&key("actor_token_type"), "needs actor_token");
                None
            }
            (None, None) => None,
        };
        let requested_token_type =
            self.token_type(&key("requested_token_type"), &c.requested_token_type);
        Some(ExchangeConfig {
            subject: ExternalToken {
                token_type: subject_type.unwrap_or_else(|| default_type.into()),
                source: subject,
            },
            actor,
            requested_token_type,
        })
    }

    /// The keys of `grant: jwt_bearer` are not set for the other grants.
    pub(super) fn jwt_bearer_keys(&mut self, name: &str, c: &RawClient) {
        if c.grant == Grant::JwtBearer {
            if c.private_key.is_none() {
                self.problem(
                    &["clients", name, "grant"],
                    "jwt_bearer needs private_key (PEM, JWK, or a Google service-account JSON key): it signs the grant",
                );
            }
            return;
        }
        for (k, set) in [
            ("assertion_issuer", c.assertion_issuer.is_some()),
            ("assertion_subject", c.assertion_subject.is_some()),
            ("scopes_in", c.scopes_in.is_some()),
        ] {
            if set {
                self.problem(&["clients", name, k], "only used with grant: jwt_bearer");
            }
        }
    }

    /// A token type identifier: an absolute URI (RFC 8693 §3).
    fn token_type(&mut self, path: &[&str], value: &Option<String>) -> Option<String> {
        let text = self.expand(path, value.as_deref()?);
        if !text.contains(':') {
            self.problem(
                path,
                format!("{text:?} is not a token type URI like {}", token_types::JWT),
            );
        }
        Some(text)
    }

    /// Exactly one of `file`, `env`, `github_actions` (and `client` where allowed).
    fn jwt_source(
        &mut self,
        path: &[&str],
        raw: &RawJwtSource,
        client_allowed: bool,
    ) -> Option<JwtSource> {
        let choices = [
            raw.file.is_some(),
            raw.env.is_some(),
            raw.github_actions.is_some(),
            raw.client.is_some(),
        ];
        let allowed = if client_allowed {
            "file, env, github_actions or client"
        } else {
            "file, env or github_actions"
        };
        if choices.iter().filter(|c| **c).count() != 1 {
            self.problem(path, format!("needs exactly one of {allowed}"));
            return None;
        }
        let asks = raw.scopes.is_some() || raw.audience.is_some() || raw.resource.is_some();
        if raw.client.is_none() && asks {
            self.problem(
                path,
                "scopes, audience and resource are only used with client",
            );
        }
        if let Some(f) = &raw.file {
            let mut p = path.to_vec();
            p.push("file");
            return Some(JwtSource::File(self.expand(&p, f).into()));
        }
        if let Some(e) = &raw.env {
            if e.is_empty() {
                self.problem(path, "env needs a variable name");
            }
            return Some(JwtSource::Env(e.clone()));
        }
        if let Some(gh) = &raw.github_actions {
            if self.check_sources {
                for var in [ACTIONS_URL, ACTIONS_TOKEN] {
                    if std::env::var_os(var).is_none() {
                        self.problem(
                            path,
                            format!("github_actions: {var} is not set (the job needs `permissions: id-token: write`)"),
                        );
                    }
                }
            }
            let mut p = path.to_vec();
            p.extend(["github_actions", "audience"]);
            let audience = gh.audience.as_deref().map(|a| self.expand(&p, a));
            return Some(JwtSource::GithubActions { audience });
        }
        match &raw.client {
            Some(other) if client_allowed => {
                let mut p = path.to_vec();
                p.push("audience");
                let audience = raw.audience.as_deref().map(|a| self.expand(&p, a));
                let request = TokenRequest {
                    scopes: raw.scopes.clone().unwrap_or_default(),
                    audience,
                    resource: raw.resource.clone().unwrap_or_default(),
                    ..TokenRequest::default()
                };
                Some(JwtSource::Client {
                    name: other.clone(),
                    request,
                })
            }
            _ => {
                self.problem(path, format!("needs exactly one of {allowed}"));
                None
            }
        }
    }

    /// A subject taken from another client: that client exists, is not DPoP-bound (its
    /// token cannot be presented without a proof), and the chain does not come back.
    pub(super) fn check_subject_clients(&mut self, clients: &BTreeMap<String, Arc<ClientConfig>>) {
        for (name, c) in clients {
            let Some(JwtSource::Client { name: first, .. }) =
                c.exchange.as_ref().map(|e| &e.subject.source)
            else {
                continue;
            };
            let at = ["clients", name.as_str(), "subject_token"];
            let mut seen = vec![name.as_str()];
            let mut next = first.as_str();
            loop {
                let Some(other) = clients.get(next) else {
                    self.problem(&at, format!("no client named {next:?}"));
                    break;
                };
                if next == first && other.token_type == TokenType::Dpop {
                    self.problem(&at, format!("client {next:?} has DPoP-bound tokens, which cannot be exchanged without a proof"));
                }
                if seen.contains(&next) {
                    self.problem(
                        &at,
                        format!("subject tokens loop: {} -> {next}", seen.join(" -> ")),
                    );
                    break;
                }
                seen.push(next);
                match other.exchange.as_ref().map(|e| &e.subject.source) {
                    Some(JwtSource::Client { name: n, .. }) => next = n,
                    _ => break,
                }
            }
        }
    }
}

fn default_for(source: &JwtSource) -> &'static str {
    match source {
        JwtSource::Client { .. } => token_types::ACCESS_TOKEN,
        _ => token_types::JWT,
    }
}
