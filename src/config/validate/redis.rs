//! `cache.redis`'s mode: exactly one of `url`, `sentinel` and `cluster`, and the node lists
//! of the last two.

use super::super::raw::{RawCluster, RawRedis, RawSentinel};
use super::super::{ClusterConfig, RedisMode, RedisNode, SentinelConfig};
use super::Validator;

/// Sentinel's and Redis's default ports, for a node given without one.
const SENTINEL_PORT: u16 = 26379;
const REDIS_PORT: u16 = 6379;

impl Validator<'_> {
    /// The mode, and whether it asks for TLS.
    pub(super) fn redis_mode(&mut self, r: &RawRedis) -> Option<(RedisMode, bool)> {
        let given = [r.url.is_some(), r.sentinel.is_some(), r.cluster.is_some()];
        match given.iter().filter(|g| **g).count() {
            0 => {
                self.problem(
                    &["cache", "redis"],
                    "redis needs one of url: redis://host:6379, sentinel: {master_name, nodes} or cluster: {nodes}",
                );
                return None;
            }
            1 => {}
            _ => {
                self.problem(
                    &["cache", "redis"],
                    "url, sentinel and cluster are three ways to reach Redis: give exactly one",
                );
                return None;
            }
        }
        if let Some(url) = &r.url {
            let url = self.expand(&["cache", "redis", "url"], url);
            let tls = self.redis_url(&url)?;
            return Some((RedisMode::Url(url), tls));
        }
        if let Some(s) = &r.sentinel {
            return self.sentinel(s);
        }
        r.cluster.as_ref().and_then(|c| self.cluster(c))
    }

    fn sentinel(&mut self, s: &RawSentinel) -> Option<(RedisMode, bool)> {
        let key = |k| ["cache", "redis", "sentinel", k];
        let master_name = s
            .master_name
            .as_ref()
            .map(|m| self.expand(&key("master_name"), m));
        match &master_name {
            None => self.problem(
                &["cache", "redis", "sentinel"],
                "sentinel needs master_name (the name in the sentinels' `sentinel monitor` line)",
            ),
            Some(m) if m.is_empty() || !m.bytes().all(|b| b.is_ascii_graphic()) => {
                self.problem(&key("master_name"), format!("{m:?}: a name without spaces"))
            }
            Some(_) => {}
        }
        let nodes = self.nodes(&key("nodes"), &s.nodes, SENTINEL_PORT);
        let username = s
            .username
            .as_ref()
            .map(|u| self.expand(&key("username"), u));
        if username.is_some() && s.password.is_none() {
            self.problem(&key("username"), "a sentinel username needs its password");
        }
        let password = s
            .password
            .as_ref()
            .map(|p| self.secret(&key("password"), p));
        let (nodes, tls) = nodes?;
        Some((
            RedisMode::Sentinel(SentinelConfig {
                master_name: master_name?,
                nodes,
                username,
                password,
                tls,
            }),
            tls,
        ))
    }

    fn cluster(&mut self, c: &RawCluster) -> Option<(RedisMode, bool)> {
        let (nodes, tls) = self.nodes(
            &["cache", "redis", "cluster", "nodes"],
            &c.nodes,
            REDIS_PORT,
        )?;
        Some((RedisMode::Cluster(ClusterConfig { nodes, tls }), tls))
    }

    /// `host:port`, `redis://host:port` or `rediss://host:port` (TLS), all of one kind.
    fn nodes(
        &mut self,
        path: &[&str],
        raw: &[String],
        default_port: u16,
    ) -> Option<(Vec<RedisNode>, bool)> {
        if raw.is_empty() {
            self.problem(
                path,
                "list at least one node (host:port); more, so that one down is not all down",
            );
            return None;
        }
        let mut nodes = Vec::new();
        let mut schemes = Vec::new();
        for text in raw {
            let text = self.expand(path, text);
            match parse_node(&text, default_port) {
                Ok((node, tls)) => {
                    nodes.push(node);
                    schemes.push(tls);
                }
                Err(why) => self.problem(path, format!("{text:?}: {why}")),
            }
        }
        if nodes.len() != raw.len() {
            return None;
        }
        let tls = schemes.first().copied().unwrap_or(false);
        if schemes.iter().any(|s| *s != tls) {
            self.problem(
                path,
                "mixes rediss:// and plaintext nodes: TLS is for all of them or none",
            );
            return None;
        }
        Some((nodes, tls))
    }
}

/// One node: its address, and whether it was given as `rediss://`.
fn parse_node(text: &str, default_port: u16) -> Result<(RedisNode, bool), String> {
    let full = if text.contains("://") {
        text.to_string()
    } else {
        format!("redis://{text}")
    };
    let url = reqwest::Url::parse(&full).map_err(|e| format!("not host:port ({e})"))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(format!(
                "scheme {other:?}: use host:port, redis:// or rediss://"
            ))
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("no credentials here: use the username and password keys".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("only host:port (a database number has no meaning here)".into());
    }
    let host = match url.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']'),
        _ => return Err("no host".into()),
    };
    let port = url.port().unwrap_or(default_port);
    Ok((
        RedisNode {
            host: host.to_string(),
            port,
        },
        tls,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_parse_with_default_ports_and_tls() {
        let node = |h: &str, p| RedisNode {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            parse_node("redis-0:6380", 6379),
            Ok((node("redis-0", 6380), false))
        );
        assert_eq!(
            parse_node("sentinel", 26379),
            Ok((node("sentinel", 26379), false))
        );
        assert_eq!(
            parse_node("rediss://r.example:6390", 6379),
            Ok((node("r.example", 6390), true))
        );
        assert_eq!(
            parse_node("[::1]:7000", 6379),
            Ok((node("::1", 7000), false))
        );
        assert_eq!(node("::1", 7000).to_string(), "[::1]:7000");
        assert!(parse_node("redis://u:p@h:1", 6379)
            .unwrap_err()
            .contains("credentials"));
        assert!(parse_node("redis://h:1/2", 6379)
            .unwrap_err()
            .contains("only host:port"));
        assert!(parse_node("http://h:1", 6379)
            .unwrap_err()
            .contains("scheme"));
        assert!(parse_node("h:notaport", 6379).is_err());
    }
}
