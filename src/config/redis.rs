//! `cache.redis`: where the shared cache's Redis is (one URL, Sentinel discovery, or a
//! cluster), how to log in to it, and how long a command may take.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::SecretSource;

/// `cache.redis`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    pub mode: RedisMode,
    /// The ACL user and password for the data nodes (never the sentinels').
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    /// CA for TLS (`rediss://`), to every node the mode reaches.
    pub ca_file: Option<PathBuf>,
    pub key_prefix: String,
    /// For any one Redis command; past it the cache is bypassed.
    pub timeout: Duration,
}

/// How the primary is found.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisMode {
    /// `url`: `redis://` or `rediss://` (TLS), host, port, and optionally `/db`. No
    /// credentials in it.
    Url(String),
    /// `sentinel`: ask the sentinels for the primary of `master_name`, again after a failover.
    Sentinel(SentinelConfig),
    /// `cluster`: Redis Cluster, seeded from `nodes`; slots followed on `MOVED`/`ASK`.
    Cluster(ClusterConfig),
}

/// `cache.redis.sentinel`.
#[derive(Debug, Clone, PartialEq)]
pub struct SentinelConfig {
    pub master_name: String,
    pub nodes: Vec<RedisNode>,
    /// The sentinels' own login (`requirepass`/ACL in sentinel.conf), when they have one.
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    /// `rediss://` nodes: TLS to the sentinels and to the primary they name.
    pub tls: bool,
}

/// `cache.redis.cluster`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub nodes: Vec<RedisNode>,
    /// `rediss://` nodes: TLS to every node of the cluster.
    pub tls: bool,
}

/// One `host:port` of a sentinel or cluster node list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisNode {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl RedisMode {
    /// For `/status`: the mode's name and what it was configured with (no credential is
    /// ever part of it).
    pub fn describe(&self) -> (&'static str, String) {
        let list = |nodes: &[RedisNode]| {
            nodes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            RedisMode::Url(url) => ("url", url.clone()),
            RedisMode::Sentinel(s) => (
                "sentinel",
                format!("{} via {}", s.master_name, list(&s.nodes)),
            ),
            RedisMode::Cluster(c) => ("cluster", list(&c.nodes)),
        }
    }
}
