//! `tokenproxy validate`: the config checked with its secrets read (exit 0, or each problem
//! with its line and exit 78). With `--online`, for each client, the token endpoint is found
//! (by discovery when the client names an issuer, with all its checks) and must answer HTTP.
//! No credentials are sent; without `--online`, validation never touches the network.

use std::path::Path;
use std::sync::Arc;

use crate::config::{Config, TokenRequest};
use crate::metrics::Metrics;
use crate::token::Endpoint;

use super::{load, Exit};

pub async fn run(path: &Path, online: bool) -> Exit {
    let config = match load(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    let (clients, upstreams) = (config.clients.len(), config.upstreams.len());
    println!(
        "{}: ok ({clients} clients, {upstreams} upstreams)",
        path.display()
    );
    if !online {
        return Exit::Ok;
    }
    let mut reachable = true;
    for (client, result) in check(&config).await {
        match result {
            Ok(url) => println!("  client {client}: token endpoint {url} answers"),
            Err(e) => {
                reachable = false;
                println!("  client {client}: {e}");
            }
        }
    }
    if reachable {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

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
