//! DPoP: proofs signed and nonce retries, by the kind of server (`token_endpoint` or
//! `upstream`) and the config name it is reached through (the client's for the token
//! endpoint, the upstream's otherwise). Hostnames are never label values.

use prometheus::{IntCounter, IntCounterVec, Registry};

use super::register::counters;

/// The `server` label: where a proof went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopServer {
    TokenEndpoint,
    Upstream,
}

impl DpopServer {
    pub fn as_str(self) -> &'static str {
        match self {
            DpopServer::TokenEndpoint => "token_endpoint",
            DpopServer::Upstream => "upstream",
        }
    }
}

#[derive(Clone)]
pub struct DpopMetrics {
    proofs: IntCounterVec,
    nonce_retries: IntCounterVec,
}

impl DpopMetrics {
    /// The counters for proofs to `server` through `name`, created at zero.
    pub fn counters(&self, server: DpopServer, name: &str) -> (IntCounter, IntCounter) {
        let labels = [server.as_str(), name];
        (
            self.proofs.with_label_values(&labels),
            self.nonce_retries.with_label_values(&labels),
        )
    }

    pub(super) fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(DpopMetrics {
            proofs: counters(
                r,
                "tokenproxy_dpop_proofs_total",
                "DPoP proofs signed, by server kind and client or upstream name.",
                &["server", "name"],
            )?,
            nonce_retries: counters(
                r,
                "tokenproxy_dpop_nonce_retries_total",
                "Requests sent again with the nonce a server asked for (use_dpop_nonce).",
                &["server", "name"],
            )?,
        })
    }
}
