//! Turns a [`RawConfig`] into a [`Config`], collecting every problem with its key and line.
//!
//! Each check records a [`Problem`] and carries on with a placeholder, so one run of
//! `tokenproxy validate` reports all mistakes in a file at once. One file per config section
//! (`proxy`, `client`, `upstream`), and `checks` for the rules that span sections; defaults
//! live in `config::defaults`.

mod assertion;
mod cache;
mod checks;
mod client;
mod federation;
mod parent;
mod proxy;
mod redis;
mod telemetry;
mod upstream;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use cache::encryption_key_bytes;
pub use federation::{ACTIONS_TOKEN, ACTIONS_URL};

use super::env::expand_env;
use super::locate::line_of;
use super::raw::RawConfig;
use super::*;

/// Parses and validates; with `check_sources`, also reads secret sources and checks that
/// referenced files exist (I/O that a pure parse leaves out).
pub fn from_yaml(text: &str, check_sources: bool) -> Result<Config, Vec<Problem>> {
    let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| {
        vec![Problem {
            path: String::new(),
            line: None,
            message: e.to_string(),
        }]
    })?;
    let mut v = Validator {
        text,
        check_sources,
        problems: Vec::new(),
    };
    let config = v.config(&raw);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        v.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(v.problems)
    }
}

/// The parent proxy of a client or upstream: the configured one unless it says
/// `upstream_proxy: false`.
fn parent_for(setting: Option<bool>, proxy: &ProxyConfig) -> Option<Arc<ParentProxyConfig>> {
    proxy
        .upstream_proxy
        .clone()
        .filter(|_| setting != Some(false))
}

struct Validator<'a> {
    text: &'a str,
    check_sources: bool,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, path: &[&str], message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.join("."),
            // A key inside a flow mapping (`sentinel: { nodes: [..] }`) has no line of its
            // own: the nearest enclosing key's line is the one to look at.
            line: (1..=path.len())
                .rev()
                .find_map(|n| line_of(self.text, &path[..n])),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: &RawConfig) -> Config {
        let proxy = self.proxy(&raw.proxy);
        let admin_listen = raw
            .admin
            .listen
            .as_deref()
            .unwrap_or(defaults::ADMIN_LISTEN);
        let admin = AdminConfig {
            listen: self.addr(&["admin", "listen"], admin_listen),
        };
        let tokens = self.tokens(&raw.tokens);
        let clients: BTreeMap<String, Arc<ClientConfig>> = raw
            .clients
            .iter()
            .filter_map(|(name, c)| {
                let mut client = self.client(name, c)?;
                client.upstream_proxy = parent_for(c.upstream_proxy, &proxy);
                Some((name.clone(), Arc::new(client)))
            })
            .collect();
        let upstreams = raw
            .upstreams
            .iter()
            .filter_map(|(name, u)| {
                let mut upstream = self.upstream(name, u, &clients, &raw.clients)?;
                upstream.upstream_proxy = parent_for(u.upstream_proxy, &proxy);
                Some(Arc::new(upstream))
            })
            .collect();
        let config = Config {
            proxy,
            admin,
            tokens,
            clients,
            upstreams,
            access_log: raw.access_log,
            cache: raw.cache.as_ref().and_then(|c| self.cache(c)),
            tracing: raw.tracing.as_ref().and_then(|t| self.tracing(t)),
        };
        self.check_subject_clients(&config.clients);
        self.check_listeners(&config);
        self.check_loops(&config);
        self.check_patterns(&config, raw);
        self.check_intercept(&config, raw);
        config
    }

    fn expand(&mut self, path: &[&str], s: &str) -> String {
        match expand_env(s) {
            Ok(v) => v,
            Err(var) => {
                self.problem(path, format!("environment variable {var} is not set"));
                s.to_string()
            }
        }
    }

    fn addr(&mut self, path: &[&str], s: &str) -> Option<SocketAddr> {
        let s = self.expand(path, s);
        if let Ok(a) = s.parse() {
            return Some(a);
        }
        // Allow "localhost:PORT"; resolve once, at load, preferring IPv4.
        match s.strip_prefix("localhost:").map(|_| s.to_socket_addrs()) {
            Some(Ok(mut addrs)) => addrs.find(SocketAddr::is_ipv4),
            _ => {
                self.problem(path, format!("{s:?} is not an IP:PORT address"));
                None
            }
        }
    }

    fn duration(&mut self, path: &[&str], value: &Option<String>, default: Duration) -> Duration {
        let Some(text) = value else {
            return default;
        };
        let text = self.expand(path, text);
        humantime::parse_duration(&text).unwrap_or_else(|e| {
            self.problem(
                path,
                format!("{text:?} is not a duration like 30s or 5m ({e})"),
            );
            default
        })
    }

    fn file(&mut self, path: &[&str], value: Option<&str>) -> Option<PathBuf> {
        let p = PathBuf::from(self.expand(path, value?));
        if !self.check_sources {
            return Some(p);
        }
        if let Err(e) = std::fs::metadata(&p) {
            self.problem(path, format!("cannot read {}: {}", p.display(), e.kind()));
        }
        Some(p)
    }
}
