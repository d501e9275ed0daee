//! `tokenproxy validate --online`: for each client, the token endpoint is found (by discovery
//! when the client names an issuer, with all its checks) and must answer HTTP. No credentials
//! are sent; without `--online`, validation never touches the network.

use std::sync::Arc;

use crate::config::{Config, TokenRequest};
use crate::metrics::Metrics;
use crate::token::Endpoint;

/// Each client's name and its token endpoint, or why it cannot be reached.
pub async fn check(config: &Config) -> Vec<(String, Result<String, String>)> {
    let Ok(metrics) = Metrics::new() else {
        return Vec::new();
    };
    let mut results = Vec::new();
    for client in config.clients.values() {
        let endpoint = Endpoint::new(
            Arc::clone(client),
            &TokenRequest::default(),
            &config.tokens,
            &metrics,
        );
        let result = match endpoint {
            Ok(e) => e
                .probe()
                .await
                .map(|u| u.to_string())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        results.push((client.name.clone(), result));
    }
    results
}
