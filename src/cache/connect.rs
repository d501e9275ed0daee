//! Reaching the cache's Redis in its configured mode: one URL, the primary the sentinels
//! name, or a cluster. Each connect starts afresh (the password read from its source again,
//! the sentinels asked again), so after any failure the next connect finds the current
//! primary. Hands back one connection that every command goes through, and the address of
//! the primary (or, for a cluster, of every primary) it reached.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo, RedisFuture,
    TlsCertificates, TlsMode, Value,
};

use crate::config::{RedisConfig, RedisMode, RedisNode};

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

/// One connection for every command: multiplexed to a single node, or a cluster
/// connection that follows `MOVED`/`ASK` itself.
#[derive(Clone)]
pub enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection, and where it leads (addresses only, sorted).
pub struct Reached {
    pub conn: Conn,
    pub primaries: Vec<String>,
}

/// Connects in the configured mode; the caller bounds the time.
pub async fn connect(cfg: &RedisConfig) -> Result<Reached, RedisError> {
    let password = match &cfg.password {
        Some(source) => Some(
            source
                .read()
                .map_err(|e| RedisError::Source(e.to_string()))?,
        ),
        None => None,
    };
    let password = password.as_ref().map(|p| p.expose());
    let certs = match &cfg.ca_file {
        Some(path) => Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(
                std::fs::read(path)
                    .map_err(|e| RedisError::Source(format!("{}: {e}", path.display())))?,
            ),
        }),
        None => None,
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(cfg.timeout))
        .set_response_timeout(Some(cfg.timeout));
    match &cfg.mode {
        RedisMode::Url(url) => {
            let info = url.as_str().into_connection_info()?;
            // No CLIENT SETINFO: one round trip less, and nothing for a tight ACL to refuse.
            let mut settings = info.redis_settings().clone().set_skip_set_lib_name();
            if let Some(user) = &cfg.username {
                settings = settings.set_username(user);
            }
            if let Some(p) = password {
                settings = settings.set_password(p);
            }
            let info = info.set_redis_settings(settings);
            let client = match certs {
                Some(certs) => Client::build_with_tls(info, certs)?,
                None => Client::open(info)?,
            };
            single(client, &config).await
        }
        RedisMode::Sentinel(s) => {
            let addr = |n: &RedisNode| match s.tls {
                true => ConnectionAddr::TcpTls {
                    host: n.host.clone(),
                    port: n.port,
                    insecure: false,
                    tls_params: None,
                },
                false => ConnectionAddr::Tcp(n.host.clone(), n.port),
            };
            let mut b = SentinelClientBuilder::new(
                s.nodes.iter().map(addr),
                &s.master_name,
                SentinelServerType::Master,
            )?;
            if let Some(user) = &cfg.username {
                b = b.set_client_to_redis_username(user);
            }
            if let Some(p) = password {
                b = b.set_client_to_redis_password(p);
            }
            if let Some(user) = &s.username {
                b = b.set_client_to_sentinel_username(user);
            }
            if let Some(source) = &s.password {
                let p = source
                    .read()
                    .map_err(|e| RedisError::Source(e.to_string()))?;
                b = b.set_client_to_sentinel_password(p.expose());
            }
            if s.tls {
                b = b
                    .set_client_to_redis_tls_mode(TlsMode::Secure)
                    .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                if let Some(certs) = certs {
                    b = b
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs);
                }
            }
            // Asks the sentinels for the primary, and the primary whether it is one (ROLE).
            let client = b.build()?.async_get_client().await?;
            single(client, &config).await
        }
        RedisMode::Cluster(c) => {
            let scheme = if c.tls { "rediss" } else { "redis" };
            let seeds: Vec<String> = c.nodes.iter().map(|n| format!("{scheme}://{n}")).collect();
            let mut b = ClusterClientBuilder::new(seeds)
                .connection_timeout(cfg.timeout)
                .response_timeout(cfg.timeout);
            if let Some(user) = &cfg.username {
                b = b.username(user);
            }
            if let Some(p) = password {
                b = b.password(p);
            }
            if let Some(certs) = certs {
                b = b.certs(certs);
            }
            let mut conn = b.build()?.get_async_connection().await?;
            let slots: Value = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut conn)
                .await?;
            Ok(Reached {
                primaries: primaries_of(&slots),
                conn: Conn::Cluster(conn),
            })
        }
    }
}

async fn single(client: Client, config: &AsyncConnectionConfig) -> Result<Reached, RedisError> {
    let primary = client.get_connection_info().addr().to_string();
    let conn = client
        .get_multiplexed_async_connection_with_config(config)
        .await?;
    Ok(Reached {
        conn: Conn::Single(conn),
        primaries: vec![primary],
    })
}

/// The primaries' `host:port` from a `CLUSTER SLOTS` answer: each entry is
/// `[first slot, last slot, [host, port, id, ..], replicas..]`.
pub fn primaries_of(slots: &Value) -> Vec<String> {
    let Value::Array(entries) = slots else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(parts) => match parts.get(2) {
                Some(Value::Array(node)) => match (node.first(), node.get(1)) {
                    (Some(host), Some(Value::Int(port))) => {
                        let host = match host {
                            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                            Value::SimpleString(s) => s.clone(),
                            _ => return None,
                        };
                        Some(
                            RedisNode {
                                host,
                                port: u16::try_from(*port).ok()?,
                            }
                            .to_string(),
                        )
                    }
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64, id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(host.into()),
            Value::Int(port),
            Value::BulkString(id.into()),
        ])
    }

    #[test]
    fn cluster_slots_name_each_primary_once() {
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7001, "a"),
                node("127.0.0.1", 7004, "d"),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("127.0.0.1", 7000, "b"),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("127.0.0.1", 7001, "a"),
            ]),
            Value::Array(vec![Value::Int(1)]),
        ]);
        assert_eq!(
            primaries_of(&slots),
            vec!["127.0.0.1:7000".to_string(), "127.0.0.1:7001".to_string()]
        );
        assert!(primaries_of(&Value::Nil).is_empty());
    }
}
