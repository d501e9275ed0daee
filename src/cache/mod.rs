//! The token cache shared by replicas (`cache`), on Redis: one token request per lifetime for
//! the whole fleet, not one per replica.
//!
//! It sits only on the token path. Each token source keeps its token in memory as before
//! (requests never wait on Redis while it holds a valid one); what changes is where the
//! source's fetches go ([`fleet`]): to a fresh token another replica stored, or to the token
//! endpoint under a lock that the other replicas wait on. Values are sealed ([`seal`]) under
//! keys derived from the token request ([`key`]); Redis failures open a breaker and each
//! replica fetches on its own until Redis answers again ([`redis`]).

mod connect;
mod fleet;
pub mod key;
pub mod redis;
pub mod seal;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{encryption_key_bytes, CacheConfig, ClientConfig, TokenRequest};
use crate::jose::DpopKey;
use crate::metrics::CacheMetrics;
use crate::token::Fetcher;

pub use fleet::FleetFetcher;
pub use key::Keys;

/// Why the cache could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache.encryption_key: {0}")]
    Key(String),
}

/// One Redis, one sealing key, shared by every token source of a process.
pub struct SharedCache {
    pub config: CacheConfig,
    redis: Arc<redis::Redis>,
    sealer: Arc<seal::Sealer>,
    metrics: CacheMetrics,
}

impl SharedCache {
    /// Reads the encryption key and prepares the connection (made on first use).
    pub fn new(config: &CacheConfig, metrics: CacheMetrics) -> Result<SharedCache, CacheError> {
        let key = encryption_key_bytes(&config.encryption_key).map_err(CacheError::Key)?;
        let sealer = seal::Sealer::new(&key).map_err(|e| CacheError::Key(e.to_string()))?;
        metrics.init();
        Ok(SharedCache {
            config: config.clone(),
            redis: redis::Redis::new(config.redis.clone(), metrics.clone()),
            sealer: Arc::new(sealer),
            metrics,
        })
    }

    /// `inner` (the token endpoint) with the fleet in front of it, for one token request.
    pub fn fetcher(
        &self,
        inner: Arc<dyn Fetcher>,
        client: &ClientConfig,
        request: &TokenRequest,
        fetch_timeout: Duration,
        dpop: Option<&DpopKey>,
    ) -> Arc<dyn Fetcher> {
        let jkt = dpop.map(DpopKey::thumbprint);
        Arc::new(FleetFetcher {
            inner,
            kind: client.token_type,
            redis: self.redis.clone(),
            sealer: self.sealer.clone(),
            keys: Keys::new(&self.config.redis.key_prefix, client, request, jkt),
            metrics: self.metrics.clone(),
            lease: fetch_timeout + Duration::from_secs(1),
        })
    }

    /// For `/status`: whether the fleet is shared now, and where (never a credential).
    pub fn status(&self) -> Value {
        let state = if self.redis.available() {
            "shared"
        } else {
            "bypassed"
        };
        let (mode, target) = self.config.redis.mode.describe();
        json!({
            "state": state,
            "mode": mode,
            mode: target,
            "primaries": self.redis.primaries(),
            "failovers": self.metrics.failovers.get(),
            "key_prefix": self.config.redis.key_prefix,
            "timeout_ms": self.redis.timeout().as_millis() as u64,
        })
    }
}
