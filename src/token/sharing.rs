//! Which upstreams may share one token: those whose token requests are the same.
//!
//! Two upstreams share a token source when they use the same client (everything about it:
//! endpoint or issuer, client id, credentials, auth method, key or certificate) and ask for
//! the same thing: the same scopes as a set, audience, resources as a set, and extra params.
//! Anything else sent to the token endpoint differing means two sources. A shared source
//! reports its fetches, expiry and 401 refreshes under every upstream that uses it, so the
//! metrics and `/status` stay per upstream.

use std::sync::{Arc, RwLock};

use crate::config::{ClientConfig, TokenRequest, UpstreamConfig};

/// What makes two upstreams' tokens interchangeable.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceKey {
    client: Arc<ClientConfig>,
    request: TokenRequest,
}

impl SourceKey {
    pub fn of(upstream: &UpstreamConfig) -> SourceKey {
        SourceKey::new(upstream.client.clone(), &upstream.request)
    }

    pub fn new(client: Arc<ClientConfig>, request: &TokenRequest) -> SourceKey {
        let mut request = request.clone();
        request.scopes.sort();
        request.scopes.dedup();
        request.resource.sort();
        request.resource.dedup();
        SourceKey { client, request }
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

    /// For log lines: `a`, or `a,b,c`.
    pub fn label(&self) -> String {
        self.names().join(",")
    }
}
