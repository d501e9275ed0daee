//! The immutable state requests read: routes, upstreams, their clients and token sources.
//!
//! One [`Snapshot`] sits behind one `ArcSwap` in [`App`]; a request loads it once and uses it
//! to the end, so a reload (which builds a new snapshot and swaps it in) never shows a request
//! half of the old config and half of the new. Token sources whose token-relevant settings did
//! not change are carried over from the previous snapshot, so a reload never drops a good token.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, UpstreamConfig};
use crate::metrics::{Metrics, RequestMetrics};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use std::path::PathBuf;

use crate::proxy::client::{self, HttpClient};
use crate::proxy::pool::OriginPool;
use crate::proxy::route::Router;
use crate::token::source::Jitter;
use crate::token::{Endpoint, TokenSource};
use crate::StartError;

/// Everything shared by the listeners and the admin endpoints.
pub struct App {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// Request metrics of the `unmatched` label.
    pub unmatched: RequestMetrics,
    /// Set on the first stop signal: `/readyz` turns 503 at once.
    pub stopping: AtomicBool,
    /// The addresses tokenproxy itself listens on, so a passthrough or tunnel to one of them
    /// (which would loop back into the proxy) can be refused.
    pub own_addrs: std::sync::RwLock<Vec<SocketAddr>>,
}

pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, usize>,
    pub router: Router,
    /// For requests no upstream matches (`passthrough`); never carries a token.
    pub passthrough: HttpClient,
}

pub struct Upstream {
    pub name: Arc<str>,
    pub config: Arc<UpstreamConfig>,
    pub tokens: Arc<TokenSource>,
    pub route: Route,
    pub metrics: RequestMetrics,
}

/// Where an upstream's requests go.
pub enum Route {
    /// To its `url`, over its own connections.
    Url(Arc<OriginPool>),
    /// No `url` (forward mode only): to the target the app asked for.
    AsAsked(HttpClient),
}

impl App {
    /// Records the addresses of the listeners now running.
    pub fn set_own_addrs(
        &self,
        addrs: &std::collections::BTreeMap<crate::listeners::Role, SocketAddr>,
    ) {
        if let Ok(mut own) = self.own_addrs.write() {
            *own = addrs.values().copied().collect();
        }
    }

    /// True if `host:port` (a normalised host) reaches one of tokenproxy's own listeners.
    pub fn is_own_listener(&self, host: &str, port: u16) -> bool {
        self.own_addrs
            .read()
            .is_ok_and(|own| targets_own_listener(&own, host, port, crate::host::is_local_address))
    }
}

/// Whether `host:port` reaches one of the listeners at `own`: a loopback name with the port of
/// any of them, the exact address of one, or a local address of this machine (by `is_local`)
/// with the port of one that listens on all addresses, such as a pod IP. Other names are not
/// resolved here.
fn targets_own_listener(
    own: &[SocketAddr],
    host: &str,
    port: u16,
    is_local: impl Fn(IpAddr) -> bool,
) -> bool {
    let mut on_port = own.iter().filter(|a| a.port() == port).peekable();
    if on_port.peek().is_none() {
        return false;
    }
    if crate::host::is_loopback(host) {
        return true;
    }
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return false;
    };
    // A connection to 0.0.0.0 or :: reaches this machine too.
    ip.is_unspecified()
        || on_port.any(|a| a.ip() == ip || (a.ip().is_unspecified() && is_local(ip)))
}

impl Snapshot {
    /// Builds a snapshot, reusing the token sources of `previous` where nothing relevant
    /// changed. Starts fetching for every new source.
    pub fn build(
        config: Config,
        metrics: &Metrics,
        previous: Option<&Snapshot>,
        jitter: Jitter,
    ) -> Result<Snapshot, StartError> {
        let connect_timeout = config.proxy.connect_timeout;
        let same_token_settings_globally =
            previous.is_some_and(|p| p.config.tokens == config.tokens);
        // One TLS connector per distinct ca_file, shared by the pools and clients that use it.
        let mut connectors: HashMap<Option<PathBuf>, HttpsConnector<HttpConnector>> =
            HashMap::new();
        let mut connector = |ca_file: &Option<PathBuf>| -> Result<_, StartError> {
            if let Some(c) = connectors.get(ca_file) {
                return Ok(c.clone());
            }
            let c = client::connector(ca_file.as_deref(), connect_timeout)?;
            connectors.insert(ca_file.clone(), c.clone());
            Ok(c)
        };
        let passthrough = client::build(connector(&None)?);
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let reused = previous
                .and_then(|p| p.upstream(&u.name))
                .filter(|old| same_token_settings_globally && same_token_settings(&old.config, u))
                .map(|old| old.tokens.clone());
            let tokens = match reused {
                Some(t) => t,
                None => {
                    let endpoint = Endpoint::new(u.client.clone(), &u.request, &config.tokens)?;
                    Arc::new(TokenSource::spawn(
                        &u.name,
                        Arc::new(endpoint),
                        config.tokens.clone(),
                        metrics.clone(),
                        jitter,
                    ))
                }
            };
            let route = match &u.url {
                Some(url) => {
                    Route::Url(OriginPool::new(url, connector(&u.ca_file)?).map_err(|e| {
                        StartError::UpstreamUrl {
                            upstream: u.name.clone(),
                            reason: e.to_string(),
                        }
                    })?)
                }
                None => Route::AsAsked(client::build(connector(&u.ca_file)?)),
            };
            upstreams.push(Arc::new(Upstream {
                name: Arc::from(u.name.as_str()),
                route,
                metrics: RequestMetrics::new(metrics, &u.name),
                config: u.clone(),
                tokens,
            }));
        }
        let router = Router::new(config.upstreams.iter().map(|u| u.match_hosts.as_slice()));
        let by_name = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.to_string(), i))
            .collect();
        Ok(Snapshot {
            config: Arc::new(config),
            upstreams,
            by_name,
            router,
            passthrough,
        })
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name).and_then(|&i| self.upstreams.get(i))
    }
}

/// Whether a token fetched for `a` is right for `b` too.
fn same_token_settings(a: &UpstreamConfig, b: &UpstreamConfig) -> bool {
    a.client == b.client && a.request == b.request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners_are_recognised_by_loopback_exact_and_local_addresses() {
        let own: Vec<SocketAddr> = vec![
            "127.0.0.1:4000".parse().unwrap(),
            "0.0.0.0:4001".parse().unwrap(),
            "10.1.2.3:4002".parse().unwrap(),
        ];
        // Pretend 10.1.2.3 and 10.9.9.9 are this machine's, 10.0.0.1 is not.
        let local =
            |ip: IpAddr| ip.to_string().starts_with("10.1.") || ip.to_string() == "10.9.9.9";
        let own_listener = |host: &str, port| targets_own_listener(&own, host, port, local);
        assert!(own_listener("localhost", 4000));
        assert!(own_listener("127.0.0.2", 4001));
        assert!(own_listener("[::1]", 4002));
        assert!(own_listener("0.0.0.0", 4000));
        assert!(
            own_listener("10.9.9.9", 4001),
            "a pod IP reaches a listener on 0.0.0.0"
        );
        assert!(own_listener("10.1.2.3", 4002), "the exact address");
        assert!(
            !own_listener("10.9.9.9", 4002),
            "another local address, specific listener"
        );
        assert!(!own_listener("10.0.0.1", 4001), "not this machine");
        assert!(!own_listener("127.0.0.1", 4003), "not our port");
        assert!(
            !own_listener("api.example.com", 4001),
            "names are not resolved here"
        );
    }

    #[test]
    fn local_addresses_are_found_by_binding() {
        assert!(crate::host::is_local_address("127.0.0.1".parse().unwrap()));
        // TEST-NET-2 (RFC 5737) is assigned to no machine.
        assert!(!crate::host::is_local_address(
            "198.51.100.7".parse().unwrap()
        ));
    }
}
