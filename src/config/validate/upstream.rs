//! The `upstreams` section: where tokens go, how hosts match, what a token asks for.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::super::raw::{RawClient, RawUpstream};
use super::super::{ClientConfig, OriginLimits, Scheme, TokenRequest, UpstreamConfig, UpstreamUrl};
use super::Validator;
use crate::host::{is_loopback, HostPattern};

impl Validator<'_> {
    pub(super) fn upstream(
        &mut self,
        name: &str,
        u: &RawUpstream,
        clients: &BTreeMap<String, Arc<ClientConfig>>,
        raw_clients: &BTreeMap<String, RawClient>,
    ) -> Option<UpstreamConfig> {
        let path = |k| ["upstreams", name, k];
        let url = u.url.as_deref().and_then(|s| {
            let s = self.expand(&path("url"), s);
            self.upstream_url(&path("url"), &s, u.allow_plaintext)
        });
        let listen = u
            .listen
            .as_deref()
            .and_then(|s| self.addr(&path("listen"), s));
        if u.listen.is_some() && u.url.is_none() {
            self.problem(
                &path("listen"),
                "a reverse listener needs url: set where its requests are sent",
            );
        }
        let match_hosts = self.match_hosts(name, u, url.as_ref());
        let request = self.token_request(name, u);
        let ca_file = self.file(&path("ca_file"), u.ca_file.as_deref());
        let mtls = clients
            .get(&u.client)
            .is_some_and(|c| c.tls_client.is_some());
        if u.client_certificate && !mtls && clients.contains_key(&u.client) {
            self.problem(
                &path("client_certificate"),
                "a certificate-bound token needs a client with auth_method tls_client_auth or self_signed_tls_client_auth",
            );
        }
        let Some(client) = clients.get(&u.client) else {
            if raw_clients.contains_key(&u.client) {
                return None; // the client itself is invalid and already reported
            }
            let known: Vec<&str> = raw_clients.keys().map(String::as_str).collect();
            self.problem(
                &path("client"),
                format!(
                    "unknown client {:?} (defined: {})",
                    u.client,
                    known.join(", ")
                ),
            );
            return None;
        };
        Some(UpstreamConfig {
            name: name.to_string(),
            url,
            match_hosts,
            listen,
            client: client.clone(),
            request,
            existing_authorization: u.existing_authorization,
            allow_plaintext: u.allow_plaintext,
            ca_file,
            intercept: u.intercept.unwrap_or(true),
            client_certificate: u.client_certificate,
            protocol: u.protocol,
            limits: self.origin_limits(name, u),
            upstream_proxy: None, // set by the caller, from the proxy section
        })
    }

    fn origin_limits(&mut self, name: &str, u: &RawUpstream) -> OriginLimits {
        let d = OriginLimits::default();
        let limits = OriginLimits {
            max_connections: u.max_connections.unwrap_or(d.max_connections),
            max_pending: u.max_pending.unwrap_or(d.max_pending),
        };
        if limits.max_connections == 0 {
            let path = ["upstreams", name, "max_connections"];
            self.problem(&path, "must be at least 1");
        }
        if limits.max_connections > tokio::sync::Semaphore::MAX_PERMITS {
            let path = ["upstreams", name, "max_connections"];
            self.problem(&path, "is too large");
        }
        limits
    }

    /// What is asked for at the token endpoint on this upstream's behalf.
    fn token_request(&mut self, name: &str, u: &RawUpstream) -> TokenRequest {
        let path = |k| ["upstreams", name, k];
        TokenRequest {
            scopes: self.scopes(name, &u.scopes),
            audience: u
                .audience
                .as_deref()
                .map(|a| self.expand(&path("audience"), a)),
            resource: u
                .resource
                .iter()
                .map(|r| self.expand(&path("resource"), r))
                .collect(),
            params: u
                .params
                .iter()
                .map(|(k, v)| (k.clone(), self.expand(&["upstreams", name, "params", k], v)))
                .collect(),
        }
    }

    fn upstream_url(
        &mut self,
        path: &[&str],
        text: &str,
        allow_plaintext: bool,
    ) -> Option<UpstreamUrl> {
        let uri: http::Uri = match text.parse() {
            Ok(u) => u,
            Err(e) => {
                self.problem(path, format!("not a URL ({e})"));
                return None;
            }
        };
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => {
                self.problem(path, "must start with http:// or https://");
                return None;
            }
        };
        if uri.query().is_some() {
            self.problem(path, "must not have a query string");
        }
        let authority = uri.authority()?.as_str();
        let (host, port) = match crate::host::split_authority(authority, scheme.default_port()) {
            Ok(hp) => hp,
            Err(e) => {
                self.problem(path, e.to_string());
                return None;
            }
        };
        if scheme == Scheme::Http && !is_loopback(&host) && !allow_plaintext {
            self.problem(
                path,
                "tokens are only sent over http:// to loopback; use https:// or set allow_plaintext: true",
            );
        }
        Some(UpstreamUrl {
            scheme,
            host: host.into_owned(),
            port,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    fn match_hosts(
        &mut self,
        name: &str,
        u: &RawUpstream,
        url: Option<&UpstreamUrl>,
    ) -> Vec<HostPattern> {
        let Some(list) = &u.match_hosts else {
            return match url {
                Some(url) => vec![HostPattern::host(
                    url.host.clone(),
                    (url.port != url.scheme.default_port()).then_some(url.port),
                )],
                None if u.url.is_none() => {
                    self.problem(&["upstreams", name], "needs url, match, or both");
                    Vec::new()
                }
                None => Vec::new(),
            };
        };
        let path = ["upstreams", name, "match"];
        list.iter()
            .filter_map(|raw| {
                let raw = self.expand(&path, raw);
                HostPattern::parse(&raw)
                    .map_err(|e| self.problem(&path, e.to_string()))
                    .ok()
            })
            .collect()
    }

    fn scopes(&mut self, name: &str, scopes: &[String]) -> Vec<String> {
        let path = ["upstreams", name, "scopes"];
        scopes
            .iter()
            .map(|s| {
                let s = self.expand(&path, s);
                // RFC 6749 §3.3: scope tokens are %x21 / %x23-5B / %x5D-7E.
                let ok = |c: char| c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c);
                if s.is_empty() || !s.chars().all(ok) {
                    self.problem(&path, format!("scope {s:?} is not a valid scope token (no spaces, quotes or backslashes)"));
                }
                s
            })
            .collect()
    }
}
