//! The shared token cache (`cache`): reads and lock outcomes, the circuit breaker, and the
//! token requests made on behalf of the fleet. No upstream label: the cache serves them all.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::register::{counter, counters, int_gauge, int_gauges};

/// How a read of the shared cache went, the values of the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRead {
    /// A fresh token, taken.
    Hit,
    /// Nothing there.
    Miss,
    /// A token due for refresh, or the one just refused by an upstream.
    Stale,
    /// A value that failed authentication, or could not be parsed: dropped.
    Rejected,
    /// Redis failed or was too slow.
    Error,
}

/// How a wait for the refresh lock ended, the values of the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheLock {
    /// This replica took the lock and fetched for the fleet.
    Acquired,
    /// Another replica held it, and its token arrived.
    Waited,
    /// Nothing arrived in time: this replica fetched for itself.
    TimedOut,
}

impl CacheRead {
    const ALL: [CacheRead; 5] = [
        CacheRead::Hit,
        CacheRead::Miss,
        CacheRead::Stale,
        CacheRead::Rejected,
        CacheRead::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheRead::Hit => "hit",
            CacheRead::Miss => "miss",
            CacheRead::Stale => "stale",
            CacheRead::Rejected => "rejected",
            CacheRead::Error => "error",
        }
    }
}

impl CacheLock {
    const ALL: [CacheLock; 3] = [CacheLock::Acquired, CacheLock::Waited, CacheLock::TimedOut];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheLock::Acquired => "acquired",
            CacheLock::Waited => "waited",
            CacheLock::TimedOut => "timed_out",
        }
    }
}

#[derive(Clone)]
pub struct CacheMetrics {
    reads: IntCounterVec,
    locks: IntCounterVec,
    /// 1 while Redis is bypassed (each replica fetches for itself).
    pub breaker_open: IntGauge,
    /// Token requests made while holding the lock, for every replica.
    pub fleet_fetches: IntCounter,
    /// 1 for the Redis primary the cache is connected to (each primary, for a cluster).
    pub primary: IntGaugeVec,
    /// Connections that found a primary other than the last one (failovers followed).
    pub failovers: IntCounter,
}

impl CacheMetrics {
    pub fn read(&self, outcome: CacheRead) {
        self.reads.with_label_values(&[outcome.as_str()]).inc();
    }

    pub fn lock(&self, outcome: CacheLock) {
        self.locks.with_label_values(&[outcome.as_str()]).inc();
    }

    pub(super) fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(CacheMetrics {
            reads: counters(r, "tokenproxy_cache_reads_total",
                "Reads of the shared token cache, by outcome.", &["outcome"])?,
            locks: counters(r, "tokenproxy_cache_locks_total",
                "Refreshes coordinated through the shared cache's lock, by outcome.", &["outcome"])?,
            breaker_open: int_gauge(r, "tokenproxy_cache_breaker_open",
                "1 while the shared cache is bypassed after Redis failed; 0 otherwise.")?,
            fleet_fetches: counter(r, "tokenproxy_cache_fleet_fetches_total",
                "Token requests made by this replica on behalf of every replica (holding the lock).")?,
            primary: int_gauges(r, "tokenproxy_cache_redis_primary",
                "1 for the address of the Redis primary the shared cache uses (each primary, for a cluster).",
                &["address"])?,
            failovers: counter(r, "tokenproxy_cache_redis_failovers_total",
                "Reconnections to the shared cache that found a new Redis primary (failovers followed).")?,
        })
    }

    /// Creates every series at zero (when a cache is configured).
    pub fn init(&self) {
        for o in CacheRead::ALL {
            self.reads.with_label_values(&[o.as_str()]);
        }
        for o in CacheLock::ALL {
            self.locks.with_label_values(&[o.as_str()]);
        }
    }
}
