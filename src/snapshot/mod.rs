//! The immutable state requests read: routes, upstreams, their clients and token sources.
//!
//! One [`Snapshot`] sits behind one `ArcSwap` in [`App`]; a request loads it once and uses it
//! to the end, so a reload (which builds a new snapshot and swaps it in) never shows a request
//! half of the old config and half of the new. Token sources whose token-relevant settings did
//! not change are carried over from the previous snapshot, so a reload never drops a good token.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

mod sources;

use sources::{Built, Sources};

use crate::cache::SharedCache;
use crate::config::{ClientConfig, Config, Role, TokenType, UpstreamConfig, UpstreamProtocol};
use crate::error::StartError;
use crate::host::{is_local_address, targets_own_listener};
use crate::intercept::Interceptor;
use crate::jose::Nonces;
use crate::metrics::{DpopServer, Metrics, RequestMetrics};
use crate::token::source::Jitter;
use crate::token::{client_dpop, ClientDpop, TokenSource};
use crate::upstream::{Clients, Connectors, OriginPool, Route, Router};

/// Everything shared by the listeners and the admin endpoints.
pub struct App {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Metrics,
    /// Request metrics of the `unmatched` label.
    pub unmatched: RequestMetrics,
    /// Set on the first stop signal: `/readyz` turns 503 at once.
    pub stopping: AtomicBool,
    /// The addresses tokenproxy listens on now, by role: the one copy, kept by `listeners`
    /// and read by the loop check and by [`crate::Running`].
    pub listening: RwLock<BTreeMap<Role, SocketAddr>>,
    /// The interception CA and TLS settings, made once at start (`proxy.intercept`).
    pub interceptor: Option<Arc<Interceptor>>,
    /// Intercepted connections outlive the CONNECT that opened them; they are tracked here,
    /// and told to finish by `draining`, so a graceful stop drains them like any listener.
    pub tunnels: TaskTracker,
    pub draining: watch::Sender<bool>,
}

pub struct Snapshot {
    pub config: Arc<Config>,
    pub upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, usize>,
    pub router: Router,
    /// For requests no upstream matches (`passthrough`); never carries a token.
    pub passthrough: Clients,
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

impl App {
    pub fn new(snapshot: Snapshot, metrics: Metrics, interceptor: Option<Interceptor>) -> App {
        App {
            snapshot: ArcSwap::from_pointee(snapshot),
            unmatched: RequestMetrics::new(&metrics, crate::metrics::UNMATCHED),
            metrics,
            stopping: AtomicBool::new(false),
            listening: RwLock::new(BTreeMap::new()),
            interceptor: interceptor.map(Arc::new),
            tunnels: TaskTracker::new(),
            draining: watch::channel(false).0,
        }
    }

    /// The bound address of one listener.
    pub fn listener(&self, role: &Role) -> Option<SocketAddr> {
        self.listening
            .read()
            .ok()
            .and_then(|l| l.get(role).copied())
    }

    /// True if `host:port` (a normalised host) reaches one of tokenproxy's own listeners.
    pub fn is_own_listener(&self, host: &str, port: u16) -> bool {
        self.listening
            .read()
            .is_ok_and(|l| targets_own_listener(l.values(), host, port, is_local_address))
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
        // One TLS connector per distinct ca_file (and client certificate), shared by the pools
        // and clients that use it.
        let mut connectors: HashMap<(Option<PathBuf>, Option<String>), Connectors> = HashMap::new();
        let mut connector =
            |ca_file: &Option<PathBuf>, cert: Option<&ClientConfig>| -> Result<_, StartError> {
                let id = (ca_file.clone(), cert.map(|c| c.name.clone()));
                if let Some(c) = connectors.get(&id) {
                    return Ok(c.clone());
                }
                let client_cert = cert
                    .and_then(|c| c.tls_client.as_ref())
                    .map(|t| t.resolver());
                let c = Connectors::new(ca_file.as_deref(), connect_timeout, client_cert)?;
                connectors.insert(id, c.clone());
                Ok(c)
            };
        let report = config.access_log.enabled;
        let passthrough = Clients::new(&connector(&None, None)?, UpstreamProtocol::Auto, report);
        let same_cache = previous.is_some_and(|p| p.config.cache == config.cache);
        let cache = match (&config.cache, previous) {
            (None, _) => None,
            (Some(_), Some(p)) if same_cache => p.cache.clone(),
            (Some(c), _) => Some(Arc::new(SharedCache::new(c, metrics.cache.clone())?)),
        };
        let carried = match previous {
            Some(p) if same_token_settings_globally && same_cache => p.sources(),
            _ => Vec::new(),
        };
        let dpop_keys = dpop_keys(&config, previous)?;
        let mut sources = Sources::new(&config, metrics, jitter, carried, cache.clone());
        sources.dpop = dpop_keys.clone();
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let tokens = sources.for_upstream(u)?;
            let cert = u.client_certificate.then_some(&*u.client);
            let route = match &u.url {
                Some(url) => Route::Url(
                    OriginPool::new(url, connector(&u.ca_file, cert)?, u.protocol).map_err(
                        |e| StartError::UpstreamUrl {
                            upstream: u.name.clone(),
                            reason: e.to_string(),
                        },
                    )?,
                ),
                None => Route::AsAsked(Box::new(Clients::new(
                    &connector(&u.ca_file, cert)?,
                    u.protocol,
                    report,
                ))),
            };
            upstreams.push(Arc::new(Upstream {
                name: Arc::from(u.name.as_str()),
                route,
                metrics: RequestMetrics::new(metrics, &u.name),
                config: u.clone(),
                tokens,
                dpop: (u.client.token_type == TokenType::Dpop).then(|| {
                    let (proofs, nonce_retries) =
                        metrics.dpop.counters(DpopServer::Upstream, &u.name);
                    UpstreamDpop {
                        nonces: Nonces::default(),
                        proofs,
                        nonce_retries,
                    }
                }),
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
            cache,
            dpop_keys,
            sources,
        })
    }

    /// The upstream a forward-mode target (normalised host and port) belongs to.
    pub fn route(&self, host: &str, port: u16) -> Option<&Arc<Upstream>> {
        self.router
            .route(host, port)
            .and_then(|i| self.upstreams.get(i))
    }

    /// Each distinct token source with its key, for the next snapshot to take over.
    fn sources(&self) -> Built {
        self.sources.clone()
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name).and_then(|&i| self.upstreams.get(i))
    }
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
