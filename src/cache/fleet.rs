//! A token source's fetcher with the fleet in front of the token endpoint: take a fresh
//! token another replica stored, or take the lock and fetch for everyone, or wait briefly for
//! the replica that holds it.
//!
//! Each time its source wants a token (at start, at 75–80% of the lifetime, after a 401):
//! 1. Read the shared value. A fresh one (less than 70% of its lifetime gone, not expired,
//!    and not the token an upstream has just refused) is taken. A refused one is deleted.
//! 2. Otherwise take the lock (`SET NX PX`, a lease of `tokens.fetch_timeout` plus a
//!    second, with a random owner). Under it, read once more (another replica may have just
//!    written), then fetch, store (never over a token that expires later), and release (only
//!    our own lock).
//! 3. If another replica holds the lock, poll the value every 50 ms until the lease would have
//!    run out; then fetch for ourselves (a lost holder costs one lease at most).
//!
//! Any Redis failure falls back to fetching from the token endpoint directly, as without a
//! cache. The source's own rules (refresh-ahead, backoff, stale until expiry, the 401 storm
//! guard) stay where they are: this only decides where a token comes from.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use tokio::time::Instant;

use super::key::Keys;
use super::redis::{Redis, RedisError};
use super::seal::{Entry, Sealer};
use crate::config::TokenType;
use crate::metrics::{CacheLock, CacheMetrics, CacheRead};
use crate::token::{AccessToken, Ask, FetchError, Fetcher, Fetching, Issued};

/// How often a replica waiting for the lock holder looks for its token.
const POLL: Duration = Duration::from_millis(50);

/// What one token source shares with the fleet.
pub struct FleetFetcher {
    pub(super) inner: Arc<dyn Fetcher>,
    /// Bearer or DPoP: a value of the other kind is rejected.
    pub(super) kind: TokenType,
    pub(super) redis: Arc<Redis>,
    pub(super) sealer: Arc<Sealer>,
    pub(super) keys: Keys,
    pub(super) metrics: CacheMetrics,
    /// How long a lock holder may take: the token request's own timeout, and a margin.
    pub(super) lease: Duration,
}

/// What a read found.
enum Found {
    Take(Issued),
    Nothing,
}

impl Fetcher for FleetFetcher {
    fn fetch<'a>(&'a self, ask: Ask<'a>) -> Fetching<'a> {
        Box::pin(async move {
            if !self.redis.available() {
                return self.inner.fetch(ask).await;
            }
            match self.through_fleet(ask).await {
                Ok(result) => result,
                // Redis failed (the breaker is open now): on our own, as without a cache.
                Err(_) => self.inner.fetch(ask).await,
            }
        })
    }
}

impl FleetFetcher {
    async fn through_fleet(&self, ask: Ask<'_>) -> Result<Result<Issued, FetchError>, RedisError> {
        if let Found::Take(issued) = self.read(ask, true).await? {
            return Ok(Ok(issued));
        }
        let owner = owner();
        let deadline = Instant::now() + self.lease;
        loop {
            if self.redis.lock(&self.keys.lock, &owner, self.lease).await? {
                self.metrics.lock(CacheLock::Acquired);
                return self.holding_lock(ask, &owner).await;
            }
            tokio::time::sleep(POLL).await;
            if let Found::Take(issued) = self.read(ask, false).await? {
                self.metrics.lock(CacheLock::Waited);
                return Ok(Ok(issued));
            }
            if Instant::now() >= deadline {
                self.metrics.lock(CacheLock::TimedOut);
                tracing::warn!(
                    "no token from the replica holding the shared cache's lock in time; fetching here"
                );
                return Ok(self.fetch_and_store(ask).await);
            }
        }
    }

    /// Under the lock: read again, else fetch and store; release in any case.
    async fn holding_lock(
        &self,
        ask: Ask<'_>,
        owner: &str,
    ) -> Result<Result<Issued, FetchError>, RedisError> {
        let result = match self.read(ask, false).await {
            Ok(Found::Take(issued)) => Ok(Ok(issued)),
            Ok(Found::Nothing) => {
                self.metrics.fleet_fetches.inc();
                Ok(self.fetch_and_store(ask).await)
            }
            Err(e) => Err(e),
        };
        // A lock we fail to release lapses at the end of its lease.
        let _ = self
            .redis
            .delete_if(&self.keys.lock, owner.as_bytes())
            .await;
        result
    }

    /// Fetches from the token endpoint and offers the token to the fleet.
    async fn fetch_and_store(&self, ask: Ask<'_>) -> Result<Issued, FetchError> {
        let issued = self.inner.fetch(ask).await?;
        if let Err(e) = self.store(&issued).await {
            tracing::debug!(error = %e, "could not store the token in the shared cache");
        }
        Ok(issued)
    }

    async fn store(&self, issued: &Issued) -> Result<(), RedisError> {
        let header = issued.token.header().to_str().unwrap_or("");
        let Some((token_type, token)) = header.split_once(' ') else {
            return Ok(());
        };
        let now = now_ms();
        let lifetime = issued.lifetime.as_millis() as u64;
        let entry = Entry {
            token: token.to_owned(),
            token_type: token_type.to_owned(),
            iat: now,
            exp: now + lifetime,
        };
        let Ok(value) = self.sealer.seal(&self.keys.token, &entry) else {
            return Ok(());
        };
        self.redis
            .put_if_later(&self.keys.token, &value, entry.exp, issued.lifetime)
            .await?;
        Ok(())
    }

    /// Reads the shared value; `count` says whether this read is counted (polls are not).
    async fn read(&self, ask: Ask<'_>, count: bool) -> Result<Found, RedisError> {
        let raw = match self.redis.get(&self.keys.token).await {
            Ok(raw) => raw,
            Err(e) => {
                self.metrics.read(CacheRead::Error);
                return Err(e);
            }
        };
        let Some(raw) = raw else {
            if count {
                self.note(CacheRead::Miss);
            }
            return Ok(Found::Nothing);
        };
        let (outcome, found) = match self.judge(&raw, ask) {
            Judged::Fresh(issued) => (CacheRead::Hit, Found::Take(issued)),
            Judged::Stale => (CacheRead::Stale, Found::Nothing),
            Judged::Refused => {
                self.redis.delete_if(&self.keys.token, &raw).await?;
                (CacheRead::Stale, Found::Nothing)
            }
            Judged::Rejected(why) => {
                tracing::warn!(reason = %why, key = %self.keys.token,
                    "rejected a value in the shared token cache; it is deleted and a token fetched");
                self.redis.delete_if(&self.keys.token, &raw).await?;
                (CacheRead::Rejected, Found::Nothing)
            }
        };
        if count || matches!(found, Found::Take(_)) || outcome == CacheRead::Rejected {
            self.note(outcome);
        }
        Ok(found)
    }

    /// Counts a read, and puts its outcome on the fetch's span when it is traced.
    fn note(&self, outcome: CacheRead) {
        self.metrics.read(outcome);
        crate::trace::annotate(|| {
            vec![crate::trace::KeyValue::new(
                "tokenproxy.cache.read",
                outcome.as_str(),
            )]
        });
    }

    fn judge(&self, raw: &[u8], ask: Ask<'_>) -> Judged {
        let entry = match self.sealer.open(&self.keys.token, raw) {
            Ok(e) => e,
            Err(e) => return Judged::Rejected(e.to_string()),
        };
        judge(
            entry,
            now_ms(),
            ask.replacing.filter(|_| ask.refused),
            self.kind,
        )
    }
}

/// What a value read is worth.
#[derive(Debug)]
enum Judged {
    Fresh(Issued),
    /// Due for refresh: someone fetches a new one.
    Stale,
    /// The token an upstream has just refused.
    Refused,
    Rejected(String),
}

/// Judges an opened entry at `now_ms`. `refused` is the token an upstream has just refused;
/// `kind` the kind of token the source asks for.
fn judge(entry: Entry, now_ms: u64, refused: Option<&HeaderValue>, kind: TokenType) -> Judged {
    if entry.exp <= now_ms {
        return Judged::Rejected("the token in the value has expired".into());
    }
    let wanted = kind.scheme();
    if entry.token_type != wanted {
        return Judged::Rejected(format!("token_type {:?} is not {wanted}", entry.token_type));
    }
    let token = match AccessToken::parse_as(&entry.token, kind) {
        Ok(t) => t,
        Err(e) => return Judged::Rejected(e.to_string()),
    };
    if refused.is_some_and(|r| r == token.header()) {
        return Judged::Refused;
    }
    let lifetime = entry.exp.saturating_sub(entry.iat);
    let left = entry.exp - now_ms;
    // Fresh: under 70% of the lifetime gone, so that a replica whose own refresh is due
    // (at 75–80%) never takes the token it is replacing.
    if left.saturating_mul(10) <= lifetime.saturating_mul(3) {
        return Judged::Stale;
    }
    Judged::Fresh(Issued::new(token, Duration::from_millis(left)))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random lock owner, so that only the holder releases its lock.
fn owner() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token: &str, iat: u64, exp: u64) -> Entry {
        Entry {
            token: token.into(),
            token_type: "Bearer".into(),
            iat,
            exp,
        }
    }

    #[test]
    fn fresh_stale_refused_and_expired() {
        let e = || entry("tok-a", 1_000_000, 1_100_000);
        match judge(e(), 1_050_000, None, TokenType::Bearer) {
            Judged::Fresh(i) => assert_eq!(i.lifetime, Duration::from_secs(50)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(e(), 1_075_000, None, TokenType::Bearer),
            Judged::Stale
        ));
        let refused = HeaderValue::from_static("Bearer tok-a");
        assert!(matches!(
            judge(e(), 1_010_000, Some(&refused), TokenType::Bearer),
            Judged::Refused
        ));
        let other = HeaderValue::from_static("Bearer tok-b");
        assert!(matches!(
            judge(e(), 1_010_000, Some(&other), TokenType::Bearer),
            Judged::Fresh(_)
        ));
        assert!(matches!(
            judge(e(), 1_100_000, None, TokenType::Bearer),
            Judged::Rejected(_)
        ));
        let mut dpop = e();
        dpop.token_type = "DPoP".into();
        assert!(matches!(
            judge(dpop, 1_010_000, None, TokenType::Bearer),
            Judged::Rejected(_)
        ));
        assert!(matches!(
            judge(
                entry("bad token", 1_000_000, 1_100_000),
                1_010_000,
                None,
                TokenType::Bearer
            ),
            Judged::Rejected(_)
        ));
    }
}
