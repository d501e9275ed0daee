//! The immutable state requests read: routes, upstreams, their clients and token sources.
//!
//! One [`Snapshot`] sits behind one `ArcSwap` in [`App`]; a request loads it once and uses it
//! to the end, so a reload (which builds a new snapshot and swaps it in) never shows a request
//! half of the old config and half of the new. Token sources whose token-relevant settings did
//! not change are carried over from the previous snapshot, so a reload never drops a good token.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, UpstreamConfig};
use crate::metrics::{Metrics, RequestMetrics};
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
    /// Ports tokenproxy itself listens on, so a passthrough to one of them on loopback (which
    /// would loop back into the proxy until connections run out) can be refused.
    pub own_ports: std::sync::RwLock<Vec<u16>>,
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
    /// Connections to `url`, when there is one.
    pub pool: Option<Arc<OriginPool>>,
    /// For a url-less upstream: requests go wherever the app asked.
    pub client: HttpClient,
    /// Where requests go: `Some` exactly when the upstream has a `url`; the request's path
    /// is appended.
    pub origin: Option<Origin>,
    pub metrics: RequestMetrics,
}

/// An upstream `url`, pre-parsed so building each request's URI copies no strings.
pub struct Origin {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Path prefix without a trailing slash ("" for none).
    pub base_path: String,
}

impl Origin {
    fn new(url: &crate::config::UpstreamUrl) -> Result<Origin, http::Error> {
        let scheme = match url.scheme {
            crate::config::Scheme::Http => http::uri::Scheme::HTTP,
            crate::config::Scheme::Https => http::uri::Scheme::HTTPS,
        };
        Ok(Origin {
            scheme,
            authority: http::uri::Authority::try_from(url.authority())?,
            base_path: url.base_path.clone(),
        })
    }
}

impl App {
    /// Records the ports of the listeners now running.
    pub fn set_own_ports(
        &self,
        addrs: &std::collections::BTreeMap<crate::listeners::Role, std::net::SocketAddr>,
    ) {
        if let Ok(mut ports) = self.own_ports.write() {
            *ports = addrs.values().map(std::net::SocketAddr::port).collect();
        }
    }

    /// True if `host:port` is one of tokenproxy's own listeners on loopback.
    pub fn is_own_listener(&self, host: &str, port: u16) -> bool {
        crate::host::is_loopback(host)
            && self
                .own_ports
                .read()
                .is_ok_and(|ports| ports.contains(&port))
    }
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
        let default_client = client::build(None, connect_timeout)?;
        let mut clients: HashMap<Option<std::path::PathBuf>, HttpClient> = HashMap::new();
        clients.insert(None, default_client.clone());
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let client = match clients.get(&u.ca_file) {
                Some(c) => c.clone(),
                None => {
                    let c = client::build(u.ca_file.as_deref(), connect_timeout)?;
                    clients.insert(u.ca_file.clone(), c.clone());
                    c
                }
            };
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
            let origin = match &u.url {
                Some(url) => Some(Origin::new(url).map_err(|e| StartError::UpstreamUrl {
                    upstream: u.name.clone(),
                    reason: e.to_string(),
                })?),
                None => None,
            };
            let pool = match &origin {
                Some(o) => {
                    let connector = client::connector(u.ca_file.as_deref(), connect_timeout)?;
                    let pool =
                        OriginPool::new(&o.scheme, &o.authority, connector).map_err(|e| {
                            StartError::UpstreamUrl {
                                upstream: u.name.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                    Some(pool)
                }
                None => None,
            };
            upstreams.push(Arc::new(Upstream {
                name: Arc::from(u.name.as_str()),
                pool,
                origin,
                metrics: RequestMetrics::new(metrics, &u.name),
                config: u.clone(),
                tokens,
                client,
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
            passthrough: default_client,
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
