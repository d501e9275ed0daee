//! The Redis commands the shared cache needs, each bounded by `cache.redis.timeout`, behind a
//! circuit breaker.
//!
//! One connection ([`connect`](super::connect)), made on first use and again after any
//! failure, with the password read from its source and the primary looked up each time. A
//! command that fails because the connection broke or the node is no longer a primary
//! (`READONLY`) is sent once more on a new connection within the same timeout: after a
//! failover that is the promoted node, and the failover costs nothing. A command that still
//! fails or runs out of time opens the breaker: the cache is bypassed (every replica fetches
//! its own tokens, as without a cache), a warning is logged once, and a background task PINGs
//! Redis with backoff (1 s doubling to 30 s) until it answers, then closes the breaker and
//! logs that once too. Writes that must be atomic are Lua scripts: store unless the stored
//! token expires later, delete only the value we read, release only our own lock.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{ErrorKind, Script, ServerErrorKind};

pub use super::connect::RedisError;
use super::connect::{connect, primaries_of, Conn};
use crate::config::{RedisConfig, RedisMode};
use crate::metrics::CacheMetrics;
use crate::trace::KeyValue;

/// How often a cluster's primaries are listed again, while commands flow.
const RELIST: Duration = Duration::from_secs(5);

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
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// Where the last connection led: the primary (every primary, for a cluster).
    primaries: Mutex<Vec<String>>,
    open: AtomicBool,
    /// When a cluster's primaries were last listed (the cluster connection follows slot moves
    /// by itself, so a failover shows only in a fresh `CLUSTER SLOTS`).
    listed: Mutex<Option<Instant>>,
    metrics: CacheMetrics,
    put_if_later: Script,
    delete_if: Script,
}

impl Redis {
    pub fn new(config: RedisConfig, metrics: CacheMetrics) -> Arc<Redis> {
        Arc::new(Redis {
            config,
            conn: tokio::sync::Mutex::new(None),
            primaries: Mutex::new(Vec::new()),
            open: AtomicBool::new(false),
            listed: Mutex::new(None),
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

    /// The primary (or a cluster's primaries) last connected to: addresses only.
    pub fn primaries(&self) -> Vec<String> {
        self.primaries.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub async fn get(self: &Arc<Self>, key: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let cmd = &cmd;
        self.run(
            "redis GET",
            |mut c| async move { cmd.query_async(&mut c).await },
        )
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
        let inv = &inv;
        let stored: i64 = self
            .run("redis EVALSHA put_if_later", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
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
        let cmd = &cmd;
        let set: Option<String> = self
            .run("redis SET NX", |mut c| async move {
                cmd.query_async(&mut c).await
            })
            .await?;
        Ok(set.is_some())
    }

    /// Deletes `key` if it still holds `value`.
    pub async fn delete_if(self: &Arc<Self>, key: &str, value: &[u8]) -> Result<(), RedisError> {
        let mut inv = self.delete_if.key(key);
        inv.arg(value);
        let inv = &inv;
        let _: i64 = self
            .run("redis EVALSHA delete_if", |mut c| async move {
                inv.invoke_async(&mut c).await
            })
            .await?;
        Ok(())
    }

    /// Runs one command within the timeout, a second time on a new connection if the first
    /// found it broken or on a demoted primary; a failure then opens the breaker. Inside a
    /// traced token fetch the command is a span named `name` (no key, no value on it).
    async fn run<T, F, Fut>(self: &Arc<Self>, name: &'static str, f: F) -> Result<T, RedisError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let mut span = crate::trace::child(name, || vec![KeyValue::new("db.system.name", "redis")]);
        let timeout = self.config.timeout;
        let result = tokio::time::timeout(timeout, async {
            let conn = self.connection().await?;
            match f(conn).await {
                Err(e) if rediscover(&e) => {
                    *self.conn.lock().await = None;
                    let conn = self.connection().await?;
                    f(conn).await.map_err(RedisError::from)
                }
                other => other.map_err(RedisError::from),
            }
        })
        .await
        .unwrap_or(Err(RedisError::Timeout(timeout)));
        match &result {
            Err(e) => {
                if let Some(span) = &mut span {
                    let kind = match e {
                        RedisError::Timeout(_) => "timeout",
                        _ => "error",
                    };
                    span.set(KeyValue::new("error.type", kind));
                    span.failed(kind.to_owned());
                }
                *self.conn.lock().await = None;
                self.trip(e);
            }
            Ok(_) => self.list_primaries(),
        }
        result
    }

    /// For a cluster, at most every [`RELIST`]: lists the primaries again in the background,
    /// to show and count a failover the connection followed without an error.
    fn list_primaries(self: &Arc<Self>) {
        if !matches!(self.config.mode, RedisMode::Cluster(_)) {
            return;
        }
        let Ok(mut listed) = self.listed.lock() else {
            return;
        };
        let now = Instant::now();
        if listed.is_some_and(|at| now.duration_since(at) < RELIST) {
            return;
        }
        *listed = Some(now);
        let me = self.clone();
        tokio::spawn(async move {
            let Some(mut conn) = me.conn.lock().await.clone() else {
                return;
            };
            let slots = tokio::time::timeout(
                me.config.timeout,
                redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn),
            )
            .await;
            if let Ok(Ok(slots)) = slots {
                me.arrived(primaries_of(&slots));
            }
        });
    }

    async fn connection(&self) -> Result<Conn, RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let reached = connect(&self.config).await?;
        // A cluster's connect has just listed its primaries.
        if let Ok(mut listed) = self.listed.lock() {
            *listed = Some(Instant::now());
        }
        self.arrived(reached.primaries);
        *slot = Some(reached.conn.clone());
        Ok(reached.conn)
    }

    /// Notes where a new connection led; a primary other than the last one is a failover.
    fn arrived(&self, now: Vec<String>) {
        let Ok(mut last) = self.primaries.lock() else {
            return;
        };
        // An empty slot map (a cluster between states) names no primary: not a change.
        if *last == now || now.is_empty() {
            return;
        }
        if !last.is_empty() {
            self.metrics.failovers.inc();
            tracing::info!(from = %last.join(","), to = %now.join(","),
                "shared token cache: Redis primary changed (failover)");
        }
        for address in last.iter() {
            let _ = self.metrics.primary.remove_label_values(&[address]);
        }
        for address in &now {
            self.metrics.primary.with_label_values(&[address]).set(1);
        }
        *last = now;
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
            // A cluster answers from every primary: any answer will do.
            let _: redis::Value = redis::cmd("PING").query_async(&mut c).await?;
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

/// Whether a failed command may succeed on a new connection: the old one broke, or its node
/// is no longer the primary (a failover; the next connect asks where the primary is now).
fn rediscover(e: &redis::RedisError) -> bool {
    e.is_connection_dropped()
        || e.is_io_error()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}
