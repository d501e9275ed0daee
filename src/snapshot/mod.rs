//! The immutable state requests read: routes, upstreams, their clients and token sources.
//! `app` holds the [`App`] that shares it; `sources` builds the token sources.
//!
//! One [`Snapshot`] sits behind one `ArcSwap` in [`App`]; a request loads it once and uses it
//! to the end, so a reload (which builds a new snapshot and swaps it in) never shows a request
//! half of the old config and half of the new. Token sources whose token-relevant settings did
//! not change are carried over from the previous snapshot, so a reload never drops a good token.

mod app;
mod sources;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use app::App;
use sources::{Built, Sources};

use crate::cache::SharedCache;
use crate::config::{ClientConfig, Config, TokenType, UpstreamConfig, UpstreamProtocol};
use crate::egress::{Parent, Resolver};
use crate::error::StartError;
use crate::jose::Nonces;
use crate::metrics::{DpopServer, Metrics, RequestMetrics};
use crate::token::timing::Jitter;
use crate::token::{client_dpop, ClientDpop, TokenSource};
use crate::trace::Tracer;
use crate::upstream::{Clients, Connectors, OriginPool, Route, RouteError, Router};

pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstreams: Vec<Arc<Upstream>>,
    by_name: fnv::FnvHashMap<String, usize>,
    pub router: Router,
    /// For requests no upstream matches (`passthrough`); never carries a token.
    pub passthrough: Clients,
    /// The parent proxy (`proxy.upstream_proxy`): passthrough, opaque tunnels, and the
    /// upstreams that do not say `upstream_proxy: false` go through it.
    pub parent: Option<Arc<Parent>>,
    /// The token cache shared by replicas (`cache`), kept across reloads that leave it be.
    pub cache: Option<Arc<SharedCache>>,
    /// The DPoP key of each `token_type: dpop` client, by name, kept across reloads that
    /// leave the client be (its tokens are bound to it).
    pub dpop_keys: HashMap<String, Arc<ClientDpop>>,
    /// Every token source with its key (those of upstreams, and of subject clients).
    sources: Built,
}

pub struct Upstream {
    pub name: Arc<str>,
    pub config: Arc<UpstreamConfig>,
    pub tokens: Arc<TokenSource>,
    pub route: Route,
    pub metrics: RequestMetrics,
    /// `token_type: dpop`: the upstream's nonces and proof counters.
    pub dpop: Option<UpstreamDpop>,
}

/// What the request path keeps for an upstream whose tokens are DPoP-bound.
pub struct UpstreamDpop {
    pub nonces: Nonces,
    /// `tokenproxy_dpop_proofs_total{server="upstream"}` of this upstream.
    pub proofs: prometheus::IntCounter,
    pub nonce_retries: prometheus::IntCounter,
}

impl Snapshot {
    /// Builds a snapshot, reusing the token sources of `previous` where nothing relevant
    /// changed. Starts fetching for every new source.
    pub fn build(
        config: Config,
        metrics: &Metrics,
        tracer: Option<&Tracer>,
        previous: Option<&Snapshot>,
        jitter: Jitter,
    ) -> Result<Snapshot, StartError> {
        let parent = config.proxy.upstream_proxy.as_deref().map(Parent::new);
        let parent = parent.map(Arc::new);
        let mut connectors = ConnectorCache::new(config.proxy.connect_timeout, parent.clone());
        let report = config.access_log.enabled;
        // Passthrough has connectors of its own: they resolve through the deny list.
        let deny = Arc::new(config.proxy.deny_destinations.clone());
        let guarded = Connectors::new(
            None,
            config.proxy.connect_timeout,
            None,
            Resolver::new(Some(deny)),
            parent.clone(),
        )?;
        let passthrough = Clients::new(&guarded, UpstreamProtocol::Auto, report);
        let (cache, same_cache) = shared_cache(&config, metrics, previous)?;
        let carried = match previous {
            Some(p) if same_cache && p.config.tokens == config.tokens => p.sources.clone(),
            _ => Vec::new(),
        };
        let dpop_keys = dpop_keys(&config, previous)?;
        let mut sources = Sources::new(&config, metrics, jitter, carried, cache.clone());
        sources.dpop = dpop_keys.clone();
        sources.tracer = tracer.cloned();
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            upstreams.push(Arc::new(Upstream {
                name: Arc::from(u.name.as_str()),
                route: route(u, &mut connectors, report)?,
                metrics: RequestMetrics::new(metrics, &u.name),
                config: u.clone(),
                tokens: sources.for_upstream(u)?,
                dpop: upstream_dpop(u, metrics),
            }));
        }
        let router = Router::new(config.upstreams.iter().map(|u| u.match_hosts.as_slice()));
        let by_name = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.to_string(), i))
            .collect();
        let sources = sources.built;
        Ok(Snapshot {
            config: Arc::new(config),
            upstreams,
            by_name,
            router,
            passthrough,
            parent,
            cache,
            dpop_keys,
            sources,
        })
    }

    /// The upstream a forward-mode target (normalised host and port, and the request's path)
    /// belongs to, with the normalised path to send if routing changed it.
    pub fn route(
        &self,
        host: &str,
        port: u16,
        path: &str,
    ) -> Result<(Option<&Arc<Upstream>>, Option<String>), RouteError> {
        let routed = self.router.route(host, port, path)?;
        let up = routed.index.and_then(|i| self.upstreams.get(i));
        Ok((up, routed.path))
    }

    /// The route of a forward-mode target written in normal form to a host whose upstream
    /// does not depend on the path, found by one lookup of `authority` as written: its host
    /// (a prefix of `authority`), port and upstream. `None`: take [`Snapshot::route`].
    pub fn route_written<'a>(
        &self,
        authority: &'a str,
        default_port: u16,
    ) -> Option<(&'a str, u16, &Arc<Upstream>)> {
        let written = self.router.written(authority, default_port)?;
        let up = self.upstreams.get(written.index)?;
        Some((authority.get(..written.host_len)?, written.port, up))
    }

    /// The upstream that claims a host and port at all (a CONNECT names no path).
    pub fn claim(&self, host: &str, port: u16) -> Option<&Arc<Upstream>> {
        self.router
            .claim(host, port)
            .and_then(|i| self.upstreams.get(i))
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name).and_then(|&i| self.upstreams.get(i))
    }
}

/// One TLS connector per distinct `ca_file`, client certificate and way out (direct or by
/// the parent proxy), shared by the pools and clients that use it.
struct ConnectorCache {
    connect_timeout: std::time::Duration,
    parent: Option<Arc<Parent>>,
    made: HashMap<(Option<PathBuf>, Option<String>, bool), Connectors>,
}

impl ConnectorCache {
    fn new(connect_timeout: std::time::Duration, parent: Option<Arc<Parent>>) -> Self {
        ConnectorCache {
            connect_timeout,
            parent,
            made: HashMap::new(),
        }
    }

    /// The connectors for `ca_file`, presenting `cert`'s client certificate if given, and
    /// going through the parent proxy if `proxied`.
    fn get(
        &mut self,
        ca_file: &Option<PathBuf>,
        cert: Option<&ClientConfig>,
        proxied: bool,
    ) -> Result<Connectors, StartError> {
        let id = (ca_file.clone(), cert.map(|c| c.name.clone()), proxied);
        if let Some(c) = self.made.get(&id) {
            return Ok(c.clone());
        }
        let client_cert = cert
            .and_then(|c| c.tls_client.as_ref())
            .map(|t| t.resolver());
        let resolver = Resolver::new(None);
        let parent = self.parent.clone().filter(|_| proxied);
        let c = Connectors::new(
            ca_file.as_deref(),
            self.connect_timeout,
            client_cert,
            resolver,
            parent,
        )?;
        self.made.insert(id, c.clone());
        Ok(c)
    }
}

/// How an upstream's requests travel: its `url`'s pool, or the target as asked.
fn route(
    u: &UpstreamConfig,
    connectors: &mut ConnectorCache,
    report: bool,
) -> Result<Route, StartError> {
    let cert = u.client_certificate.then_some(&*u.client);
    let connector = connectors.get(&u.ca_file, cert, u.upstream_proxy.is_some())?;
    Ok(match &u.url {
        Some(url) => Route::Url(
            OriginPool::new(url, connector, u.protocol, u.limits).map_err(|e| {
                StartError::UpstreamUrl {
                    upstream: u.name.clone(),
                    reason: e.to_string(),
                }
            })?,
        ),
        None => Route::AsAsked(Box::new(Clients::new(&connector, u.protocol, report))),
    })
}

/// The shared token cache: the previous snapshot's when `cache` did not change (and whether
/// it did not), else a new one.
fn shared_cache(
    config: &Config,
    metrics: &Metrics,
    previous: Option<&Snapshot>,
) -> Result<(Option<Arc<SharedCache>>, bool), StartError> {
    let same = previous.is_some_and(|p| p.config.cache == config.cache);
    let cache = match (&config.cache, previous) {
        (None, _) => None,
        (Some(_), Some(p)) if same => p.cache.clone(),
        (Some(c), _) => Some(Arc::new(SharedCache::new(c, metrics.cache.clone())?)),
    };
    Ok((cache, same))
}

/// The nonces and proof counters of an upstream whose tokens are DPoP-bound.
fn upstream_dpop(u: &UpstreamConfig, metrics: &Metrics) -> Option<UpstreamDpop> {
    (u.client.token_type == TokenType::Dpop).then(|| {
        let (proofs, nonce_retries) = metrics.dpop.counters(DpopServer::Upstream, &u.name);
        UpstreamDpop {
            nonces: Nonces::default(),
            proofs,
            nonce_retries,
        }
    })
}

/// Each DPoP client's key: the previous snapshot's if the client is unchanged, else read
/// from `dpop_key` or generated.
fn dpop_keys(
    config: &Config,
    previous: Option<&Snapshot>,
) -> Result<HashMap<String, Arc<ClientDpop>>, StartError> {
    let mut keys = HashMap::new();
    for (name, client) in &config.clients {
        let kept = previous.and_then(|p| {
            let same = p.config.clients.get(name) == Some(client);
            p.dpop_keys.get(name).filter(|_| same).cloned()
        });
        let key = match kept {
            Some(k) => Some(k),
            None => client_dpop(client).map_err(|e| StartError::DpopKey {
                client: name.clone(),
                reason: e.to_string(),
            })?,
        };
        if let Some(k) = key {
            keys.insert(name.clone(), k);
        }
    }
    Ok(keys)
}
