//! Which upstreams may share one token: those whose token requests are the same.
//!
//! Two upstreams share a token source when they use the same client (everything about it:
//! endpoint or issuer, client id, credentials, auth method, key or certificate) and ask for
//! the same thing: the same scopes as a set, audience, resources as a set, and extra params.
//! Anything else sent to the token endpoint differing means two sources. A shared source
//! reports its fetches, expiry and 401 refreshes under every upstream that uses it, so the
//! metrics and `/status` stay per upstream. A subject client's token (`subject_token:
//! {client: NAME, scopes, audience}`) has a source of its own, shared like any other.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::{ClientConfig, JwtSource, TokenRequest, UpstreamConfig};

/// What makes two upstreams' tokens interchangeable. A client whose subject token is
/// another client's token (`subject_token: {client: NAME}`) includes that client's key, so a
/// change to it makes a new source for both.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceKey {
    pub client: Arc<ClientConfig>,
    pub request: TokenRequest,
    pub subject: Option<Box<SourceKey>>,
}

impl SourceKey {
    pub fn of(
        upstream: &UpstreamConfig,
        clients: &BTreeMap<String, Arc<ClientConfig>>,
    ) -> SourceKey {
        SourceKey::new(upstream.client.clone(), &upstream.request, clients)
    }

    /// `clients` resolves a subject client by name (validation refuses loops; a chain is
    /// followed at most as deep as there are clients).
    pub fn new(
        client: Arc<ClientConfig>,
        request: &TokenRequest,
        clients: &BTreeMap<String, Arc<ClientConfig>>,
    ) -> SourceKey {
        SourceKey::at_depth(client, request, clients, clients.len())
    }

    fn at_depth(
        client: Arc<ClientConfig>,
        request: &TokenRequest,
        clients: &BTreeMap<String, Arc<ClientConfig>>,
        depth: usize,
    ) -> SourceKey {
        let mut request = request.clone();
        request.scopes.sort();
        request.scopes.dedup();
        request.resource.sort();
        request.resource.dedup();
        let subject = subject_client(&client)
            .and_then(|(name, req)| Some((clients.get(name)?, req)))
            .filter(|_| depth > 0)
            .map(|(c, req)| Box::new(SourceKey::at_depth(c.clone(), req, clients, depth - 1)));
        SourceKey {
            client,
            request,
            subject,
        }
    }
}

/// The client whose token is this client's subject token, and what it is asked for.
pub fn subject_client(client: &ClientConfig) -> Option<(&str, &TokenRequest)> {
    match client.exchange.as_ref().map(|e| &e.subject.source) {
        Some(JwtSource::Client { name, request }) => Some((name, request)),
        _ => None,
    }
}

/// The names of the upstreams a token source serves (in config order).
#[derive(Debug)]
pub struct Upstreams(RwLock<Vec<String>>);

impl Upstreams {
    pub fn new(names: &[&str]) -> Upstreams {
        Upstreams(RwLock::new(names.iter().map(|n| n.to_string()).collect()))
    }

    /// All of them, in config order.
    pub fn names(&self) -> Vec<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the list (a reload taking the source over).
    pub fn set(&self, names: &[&str]) {
        let names = names.iter().map(|n| n.to_string()).collect();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = names;
    }

    /// For log lines: `a`, or `a,b,c`; a source no upstream uses directly (another client's
    /// subject token) says so.
    pub fn label(&self) -> String {
        let names = self.names();
        if names.is_empty() {
            return "(a subject token for an exchange)".into();
        }
        names.join(",")
    }
}
