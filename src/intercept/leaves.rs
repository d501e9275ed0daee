//! Host certificates, minted on demand per SNI name and cached.
//!
//! A handshake for a name seen before costs a map lookup; the first one for a name costs a key
//! generation and a signature (well under a millisecond with ring). A certificate is renewed
//! once two thirds of its lifetime have passed, and the cache is bounded.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::authority::Authority;
use crate::metrics::InterceptMetrics;

/// Host certificates kept at most; past that, the one that expires first makes room.
const MAX_CACHED: usize = 1024;

struct Leaf {
    key: Arc<CertifiedKey>,
    renew_at: Instant,
    not_after: i64,
}

pub struct Leaves {
    authority: Arc<Authority>,
    lifetime: Duration,
    cache: Mutex<HashMap<String, Leaf>>,
    metrics: InterceptMetrics,
}

impl fmt::Debug for Leaves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Leaves")
    }
}

impl Leaves {
    pub fn new(authority: Arc<Authority>, lifetime: Duration, metrics: InterceptMetrics) -> Self {
        Leaves {
            authority,
            lifetime,
            cache: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The certificate for `host`, minted if there is none or it is due for renewal.
    pub fn get(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(leaf) = cache.get(host).filter(|l| Instant::now() < l.renew_at) {
            return Some(leaf.key.clone());
        }
        let (key, not_after) = match self.authority.mint(host, self.lifetime) {
            Ok(minted) => minted,
            Err(e) => {
                tracing::error!(error = %e, "cannot mint a host certificate");
                return None;
            }
        };
        self.metrics.certificates_minted.inc();
        if cache.len() >= MAX_CACHED {
            let first = cache
                .iter()
                .min_by_key(|(_, l)| l.not_after)
                .map(|(h, _)| h.clone());
            if let Some(h) = first {
                cache.remove(&h);
            }
        }
        let key = Arc::new(key);
        let renew_at = Instant::now() + self.lifetime * 2 / 3;
        cache.insert(
            host.to_string(),
            Leaf {
                key: key.clone(),
                renew_at,
                not_after,
            },
        );
        if let Some(first) = cache.values().map(|l| l.not_after).min() {
            self.metrics.leaf_expiry.set(first as f64);
        }
        Some(key)
    }
}

impl ResolvesServerCert for Leaves {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // The SNI was checked against the CONNECT target before the handshake went on.
        self.get(&hello.server_name()?.to_ascii_lowercase())
    }
}
