//! The Redis commands the shared cache needs, each bounded by `cache.redis.timeout`, behind a
//! circuit breaker.
//!
//! One multiplexed connection (redis-rs), made on first use and again after any failure, with
//! the password read from its source each time. A command that fails or runs out of time
//! opens the breaker: the cache is bypassed (every replica fetches its own tokens, as without
//! a cache), a warning is logged once, and a background task PINGs Redis with backoff (1 s
//! doubling to 30 s) until it answers, then closes the breaker and logs that once too. Writes
//! that must be atomic are Lua scripts: store unless the stored token expires later, delete
//! only the value we read, release only our own lock.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, Script, TlsCertificates};

use crate::config::RedisConfig;
use crate::metrics::CacheMetrics;

/// Why a Redis command did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot read the Redis password or CA: {0}")]
    Source(String),
}

/// Backoff of the breaker's probe.
const PROBE_MIN: Duration = Duration::from_secs(1);
const PROBE_MAX: Duration = Duration::from_secs(30);

/// Stores `ARGV[1]` under `KEYS[1]` for `ARGV[3]` ms unless the stored value's clear expiry
/// (`1:<ms>:…`) is at least `ARGV[2]`. Returns 1 when stored.
const PUT_IF_LATER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local e = tonumber(string.match(cur, '^1:(%d+):'))
  if e and e >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
";

/// Deletes `KEYS[1]` only if it still holds `ARGV[1]` (a lock we own, a value we rejected).
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct Redis {
    config: RedisConfig,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    open: AtomicBool,
    metrics: CacheMetrics,
    put_if_later: Script,
    delete_if: Script,
}

impl Redis {
    pub fn new(config: RedisConfig, metrics: CacheMetrics) -> Arc<Redis> {
        Arc::new(Redis {
            config,
            conn: tokio::sync::Mutex::new(None),
            open: AtomicBool::new(false),
            metrics,
            put_if_later: Script::new(PUT_IF_LATER),
            delete_if: Script::new(DELETE_IF),
        })
    }

    /// False while the breaker is open: the cache is bypassed.
    pub fn available(&self) -> bool {
        !self.open.load(Ordering::Relaxed)
    }

    pub fn timeout(&self) -> Duration {
        self.config.timeout
    }

    pub async fn get(self: &Arc<Self>, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let key = key.to_owned();
        self.run(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
    }

    /// Stores `value` (expiring at `expires_ms`) for `ttl`, unless a later token is there.
    pub async fn put_if_later(
        self: &Arc<Self>,
        key: &str,
        value: &str,
        expires_ms: u64,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let mut inv = self.put_if_later.key(key);
        inv.arg(value)
            .arg(expires_ms)
            .arg(ttl.as_millis().max(1) as u64);
        let stored: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(stored == 1)
    }

    /// Takes the lock `key` for `lease` with our random `owner`: true when taken.
    pub async fn lock(
        self: &Arc<Self>,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(lease.as_millis() as u64);
        let set: Option<String> = self
            .run(|mut c| async move { cmd.query_async(&mut c).await })
            .await?;
        Ok(set.is_some())
    }

    /// Deletes `key` if it still holds `value`.
    pub async fn delete_if(self: &Arc<Self>, key: &str, value: &[u8]) -> Result<(), RedisError> {
        let mut inv = self.delete_if.key(key);
        inv.arg(value);
        let _: i64 = self
            .run(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        Ok(())
    }

    /// Runs one command within the timeout; any failure opens the breaker.
    async fn run<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T, RedisError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let timeout = self.config.timeout;
        let result = tokio::time::timeout(timeout, async {
            let conn = self.connection().await?;
            f(conn).await.map_err(RedisError::from)
        })
        .await
        .unwrap_or(Err(RedisError::Timeout(timeout)));
        if let Err(e) = &result {
            *self.conn.lock().await = None;
            self.trip(e);
        }
        result
    }

    async fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let c = self.connect().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let cfg = &self.config;
        let info = cfg.url.as_str().into_connection_info()?;
        // No CLIENT SETINFO: one round trip less, and nothing for a tight ACL to refuse.
        let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
        if let Some(user) = &cfg.username {
            settings = settings.set_username(user);
        }
        if let Some(source) = &cfg.password {
            let password = source
                .read()
                .map_err(|e| RedisError::Source(e.to_string()))?;
            settings = settings.set_password(password.expose());
        }
        let info = info.set_redis_settings(settings);
        let client = match &cfg.ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| RedisError::Source(format!("{}: {e}", path.display())))?;
                let certs = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(info, certs)?
            }
            None => redis::Client::open(info)?,
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout));
        Ok(client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Opens the breaker (once) and starts probing.
    fn trip(self: &Arc<Self>, e: &RedisError) {
        if self.open.swap(true, Ordering::Relaxed) {
            return;
        }
        self.metrics.breaker_open.set(1);
        tracing::warn!(error = %e,
            "shared token cache unavailable; each replica fetches its own tokens until Redis answers again");
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = PROBE_MIN;
            loop {
                tokio::time::sleep(wait).await;
                let Some(redis) = me.upgrade() else { return };
                if redis.ping().await.is_ok() {
                    redis.open.store(false, Ordering::Relaxed);
                    redis.metrics.breaker_open.set(0);
                    tracing::info!("shared token cache available again");
                    return;
                }
                wait = (wait * 2).min(PROBE_MAX);
            }
        });
    }

    async fn ping(&self) -> Result<(), RedisError> {
        let timeout = self.config.timeout;
        let result = tokio::time::timeout(timeout, async {
            let mut c = self.connection().await?;
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
            Ok::<(), RedisError>(())
        })
        .await
        .unwrap_or(Err(RedisError::Timeout(timeout)));
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }
}
