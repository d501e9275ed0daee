//! The token sources of a snapshot being built: one per distinct token request
//! ([`SourceKey`]), taken over from the previous snapshot by the same key, and built in
//! dependency order: a client whose subject token is another client's token gets that
//! client's source first (a source of its own when no upstream uses it).

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::SharedCache;
use crate::config::{Config, TokenRequest, UpstreamConfig};
use crate::error::StartError;
use crate::metrics::Metrics;
use crate::token::sharing::SourceKey;
use crate::token::timing::Jitter;
use crate::token::{ClientDpop, Endpoint, Fetcher, TokenSource};
use crate::trace::Tracer;

/// Every source of a snapshot with its key: for the next snapshot to take over.
pub type Built = Vec<(SourceKey, Arc<TokenSource>)>;

pub(super) struct Sources<'a> {
    config: &'a Config,
    metrics: &'a Metrics,
    jitter: Jitter,
    /// Each upstream's key, in config order.
    keys: Vec<SourceKey>,
    carried: Built,
    pub built: Built,
    /// One token endpoint client per client, shared by its sources, and one limit on its
    /// token requests in flight at once.
    http: HashMap<String, (reqwest::Client, Arc<tokio::sync::Semaphore>)>,
    cache: Option<Arc<SharedCache>>,
    pub dpop: HashMap<String, Arc<ClientDpop>>,
    /// Each fetch is a span of this tracer's (`tracing`).
    pub tracer: Option<Tracer>,
}

/// Token requests of one client in flight at once. At start every source fetches; without a
/// limit, 200 sources would open 200 connections to the token endpoint at the same moment
/// (each costs about 25 KiB while open, memory the allocator then keeps) and count 200
/// requests against the server's rate limit in one burst.
const FETCHES_IN_FLIGHT: usize = 8;

impl<'a> Sources<'a> {
    pub fn new(
        config: &'a Config,
        metrics: &'a Metrics,
        jitter: Jitter,
        carried: Built,
        cache: Option<Arc<SharedCache>>,
    ) -> Self {
        Sources {
            config,
            metrics,
            jitter,
            keys: (config.upstreams.iter())
                .map(|u| SourceKey::of(u, &config.clients))
                .collect(),
            carried,
            built: Vec::new(),
            http: HashMap::new(),
            cache,
            dpop: HashMap::new(),
            tracer: None,
        }
    }

    /// The source for `u`: one this snapshot already has for the same token request, or the
    /// previous snapshot's, or a new one (which starts fetching at once). A source learns all
    /// the upstreams it serves before it is used, so its first fetch counts for each of them.
    pub fn for_upstream(&mut self, u: &UpstreamConfig) -> Result<Arc<TokenSource>, StartError> {
        self.for_key(SourceKey::of(u, &self.config.clients), &u.request)
    }

    fn for_key(
        &mut self,
        key: SourceKey,
        request: &TokenRequest,
    ) -> Result<Arc<TokenSource>, StartError> {
        if let Some((_, shared)) = self.built.iter().find(|(k, _)| *k == key) {
            return Ok(shared.clone());
        }
        let group: Vec<&str> = (self.config.upstreams.iter().zip(&self.keys))
            .filter(|(_, k)| **k == key)
            .map(|(o, _)| o.name.as_str())
            .collect();
        let source = match self.carried.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                let (_, source) = self.carried.swap_remove(i);
                source.serve(&group);
                source
            }
            None => {
                let subject = match &key.subject {
                    Some(s) => Some(self.for_key((**s).clone(), &s.request.clone())?),
                    None => None,
                };
                self.spawn(&key, request, &group, subject)?
            }
        };
        self.built.push((key, source.clone()));
        Ok(source)
    }

    fn spawn(
        &mut self,
        key: &SourceKey,
        request: &TokenRequest,
        group: &[&str],
        subject: Option<Arc<TokenSource>>,
    ) -> Result<Arc<TokenSource>, StartError> {
        let tokens = &self.config.tokens;
        let client = &key.client;
        let (http, in_flight) = match self.http.get(&client.name) {
            Some(http) => http.clone(),
            None => {
                let http = Endpoint::http_client(client, tokens)?;
                let limit = Arc::new(tokio::sync::Semaphore::new(FETCHES_IN_FLIGHT));
                self.http
                    .insert(client.name.clone(), (http.clone(), limit.clone()));
                (http, limit)
            }
        };
        let dpop = self.dpop.get(&client.name).cloned();
        let endpoint = Endpoint::with_http(client.clone(), request, tokens, self.metrics, http)
            .with_dpop(dpop.clone())
            .with_subject(subject)
            .with_limit(in_flight);
        let fetcher: Arc<dyn Fetcher> = match &self.cache {
            None => Arc::new(endpoint),
            Some(cache) => cache.fetcher(
                Arc::new(endpoint),
                client,
                request,
                tokens.fetch_timeout,
                dpop.as_ref().map(|d| &*d.key),
            ),
        };
        Ok(Arc::new(TokenSource::spawn(
            group,
            fetcher,
            tokens.clone(),
            self.metrics.clone(),
            self.jitter,
            dpop.map(|d| d.key.clone()),
            self.tracer.clone(),
        )))
    }
}
