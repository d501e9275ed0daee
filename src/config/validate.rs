//! Turns a [`RawConfig`] into a [`Config`], collecting every problem with its key and line.
//!
//! Each check records a [`Problem`] and carries on with a placeholder, so one run of
//! `tokenproxy validate` reports all mistakes in a file at once.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::env::expand_env;
use super::locate::line_of;
use super::raw::{RawClient, RawConfig, RawProxy, RawSecret, RawTokens, RawUpstream};
use super::*;
use crate::host::{is_loopback, normalize_host, HostPattern};
use crate::proxy::server::Limits;

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
    let config = v.config(raw);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        v.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(v.problems)
    }
}

struct Validator<'a> {
    text: &'a str,
    check_sources: bool,
    problems: Vec<Problem>,
}

const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

impl Validator<'_> {
    fn problem(&mut self, path: &[&str], message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.join("."),
            line: line_of(self.text, path),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let proxy = ProxyConfig {
            listen: raw
                .proxy
                .listen
                .as_deref()
                .and_then(|s| self.addr(&["proxy", "listen"], s)),
            unmatched: raw.proxy.unmatched.unwrap_or_default(),
            connect_timeout: self.duration(
                &["proxy", "connect_timeout"],
                &raw.proxy.connect_timeout,
                5,
            ),
            request_timeout: self.duration(
                &["proxy", "request_timeout"],
                &raw.proxy.request_timeout,
                30,
            ),
            drain_timeout: self.duration(&["proxy", "drain_timeout"], &raw.proxy.drain_timeout, 20),
            shutdown_delay: self.duration(
                &["proxy", "shutdown_delay"],
                &raw.proxy.shutdown_delay,
                0,
            ),
            limits: self.limits(&raw.proxy),
        };
        let admin_listen = raw.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN);
        let admin = AdminConfig {
            listen: self.addr(&["admin", "listen"], admin_listen),
        };
        let tokens = self.tokens(&raw.tokens);
        let clients: BTreeMap<String, Arc<ClientConfig>> = raw
            .clients
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), Arc::new(self.client(name, c)?))))
            .collect();
        let upstreams = raw
            .upstreams
            .iter()
            .filter_map(|(name, u)| self.upstream(name, u, &clients, &raw.clients))
            .map(Arc::new)
            .collect();
        let config = Config {
            proxy,
            admin,
            tokens,
            clients,
            upstreams,
        };
        self.check_listeners(&config);
        self.check_loops(&config);
        self.check_patterns(&config);
        config
    }

    fn limits(&mut self, p: &RawProxy) -> Limits {
        let d = Limits::default();
        let limits = Limits {
            header_read_timeout: self.duration(
                &["proxy", "header_read_timeout"],
                &p.header_read_timeout,
                d.header_read_timeout.as_secs(),
            ),
            max_connections: p.max_connections.unwrap_or(d.max_connections),
            max_headers: p.max_headers.unwrap_or(d.max_headers),
            max_head_bytes: p.max_head_bytes.unwrap_or(d.max_head_bytes),
        };
        if limits.max_connections == 0 {
            self.problem(&["proxy", "max_connections"], "must be at least 1");
        }
        if limits.max_head_bytes < 8192 {
            self.problem(&["proxy", "max_head_bytes"], "must be at least 8192");
        }
        if limits.header_read_timeout.is_zero() {
            self.problem(&["proxy", "header_read_timeout"], "must be above zero");
        }
        limits
    }

    fn tokens(&mut self, t: &RawTokens) -> TokenSettings {
        let d = TokenSettings::default();
        let p = |k| ["tokens", k];
        let settings = TokenSettings {
            default_lifetime: self.duration(
                &p("default_lifetime"),
                &t.default_lifetime,
                d.default_lifetime.as_secs(),
            ),
            max_lifetime: self.duration(
                &p("max_lifetime"),
                &t.max_lifetime,
                d.max_lifetime.as_secs(),
            ),
            min_refresh_interval: self.duration(
                &p("min_refresh_interval"),
                &t.min_refresh_interval,
                d.min_refresh_interval.as_secs(),
            ),
            backoff_min: self.duration(&p("backoff_min"), &t.backoff_min, d.backoff_min.as_secs()),
            backoff_max: self.duration(&p("backoff_max"), &t.backoff_max, d.backoff_max.as_secs()),
            wait_timeout: self.duration(
                &p("wait_timeout"),
                &t.wait_timeout,
                d.wait_timeout.as_secs(),
            ),
            fetch_timeout: self.duration(
                &p("fetch_timeout"),
                &t.fetch_timeout,
                d.fetch_timeout.as_secs(),
            ),
            replay_body_limit: t
                .replay_body_limit
                .map_or(d.replay_body_limit, |n| n as usize),
        };
        if settings.backoff_min.is_zero() || settings.backoff_min > settings.backoff_max {
            self.problem(
                &p("backoff_min"),
                "must be above zero and at most backoff_max",
            );
        }
        if settings.default_lifetime.is_zero() || settings.default_lifetime > settings.max_lifetime
        {
            self.problem(
                &p("default_lifetime"),
                "must be above zero and at most max_lifetime",
            );
        }
        settings
    }

    fn client(&mut self, name: &str, c: &RawClient) -> Option<ClientConfig> {
        let path = |k| ["clients", name, k];
        let endpoint_text = self.expand(&path("token_endpoint"), &c.token_endpoint);
        let token_endpoint = self.token_endpoint(&path("token_endpoint"), &endpoint_text);
        let client_id = self.expand(&path("client_id"), &c.client_id);
        if client_id.is_empty() {
            self.problem(&path("client_id"), "must not be empty");
        }
        let client_secret = self.secret(&path("client_secret"), &c.client_secret);
        let ca_file = self.file(&path("ca_file"), c.ca_file.as_deref());
        Some(ClientConfig {
            name: name.to_string(),
            token_endpoint: token_endpoint?,
            client_id,
            client_secret,
            auth_method: c.auth_method,
            ca_file,
        })
    }

    fn token_endpoint(&mut self, path: &[&str], text: &str) -> Option<reqwest::Url> {
        let url = match reqwest::Url::parse(text) {
            Ok(u) => u,
            Err(e) => {
                self.problem(path, format!("not a URL ({e})"));
                return None;
            }
        };
        let host = url.host_str().and_then(|h| normalize_host(h).ok());
        match (url.scheme(), host) {
            (_, None) => self.problem(path, "needs a valid host"),
            _ if !url.username().is_empty() || url.password().is_some() => {
                self.problem(path, "must not contain user info; put credentials in client_id/client_secret")
            }
            ("https", Some(_)) => {}
            ("http", Some(h)) if is_loopback(&h) => {}
            ("http", Some(_)) => self.problem(
                path,
                "an http:// token endpoint is only allowed on loopback: the client secret would cross the network in clear",
            ),
            (other, _) => self.problem(path, format!("scheme {other:?} is not http or https")),
        }
        Some(url)
    }

    fn secret(&mut self, path: &[&str], s: &RawSecret) -> SecretSource {
        let source = match s {
            RawSecret::Literal(v) => SecretSource::Literal(Secret::new(self.expand(path, v))),
            RawSecret::Env(e) => SecretSource::Env(e.env.clone()),
            RawSecret::File(f) => SecretSource::File(PathBuf::from(self.expand(path, &f.file))),
        };
        if self.check_sources {
            if let Err(e) = source.read() {
                self.problem(path, e.to_string());
            }
        }
        source
    }

    fn upstream(
        &mut self,
        name: &str,
        u: &RawUpstream,
        clients: &BTreeMap<String, Arc<ClientConfig>>,
        raw_clients: &BTreeMap<String, RawClient>,
    ) -> Option<UpstreamConfig> {
        let path = |k| ["upstreams", name, k];
        let url = u.url.as_deref().and_then(|s| {
            let s = self.expand(&path("url"), s);
            self.upstream_url(&path("url"), &s, u.allow_plaintext)
        });
        let listen = u
            .listen
            .as_deref()
            .and_then(|s| self.addr(&path("listen"), s));
        if u.listen.is_some() && u.url.is_none() {
            self.problem(
                &path("listen"),
                "a reverse listener needs url: set where its requests are sent",
            );
        }
        let match_hosts = self.match_hosts(name, u, url.as_ref());
        let request = TokenRequest {
            scopes: self.scopes(name, &u.scopes),
            audience: u
                .audience
                .as_deref()
                .map(|a| self.expand(&path("audience"), a)),
            resource: u
                .resource
                .iter()
                .map(|r| self.expand(&path("resource"), r))
                .collect(),
            params: u
                .params
                .iter()
                .map(|(k, v)| (k.clone(), self.expand(&["upstreams", name, "params", k], v)))
                .collect(),
        };
        let ca_file = self.file(&path("ca_file"), u.ca_file.as_deref());
        let Some(client) = clients.get(&u.client) else {
            if raw_clients.contains_key(&u.client) {
                return None; // the client itself is invalid and already reported
            }
            let known: Vec<&str> = raw_clients.keys().map(String::as_str).collect();
            self.problem(
                &path("client"),
                format!(
                    "unknown client {:?} (defined: {})",
                    u.client,
                    known.join(", ")
                ),
            );
            return None;
        };
        Some(UpstreamConfig {
            name: name.to_string(),
            url,
            match_hosts,
            listen,
            client: client.clone(),
            request,
            existing_authorization: u.existing_authorization,
            allow_plaintext: u.allow_plaintext,
            ca_file,
        })
    }

    fn upstream_url(
        &mut self,
        path: &[&str],
        text: &str,
        allow_plaintext: bool,
    ) -> Option<UpstreamUrl> {
        let uri: http::Uri = match text.parse() {
            Ok(u) => u,
            Err(e) => {
                self.problem(path, format!("not a URL ({e})"));
                return None;
            }
        };
        let scheme = match uri.scheme_str() {
            Some("https") => Scheme::Https,
            Some("http") => Scheme::Http,
            _ => {
                self.problem(path, "must start with http:// or https://");
                return None;
            }
        };
        if uri.query().is_some() {
            self.problem(path, "must not have a query string");
        }
        let authority = uri.authority()?.as_str();
        let (host, port) = match crate::host::split_authority(authority, scheme.default_port()) {
            Ok(hp) => hp,
            Err(e) => {
                self.problem(path, e.to_string());
                return None;
            }
        };
        if scheme == Scheme::Http && !is_loopback(&host) && !allow_plaintext {
            self.problem(
                path,
                "tokens are only sent over http:// to loopback; use https:// or set allow_plaintext: true",
            );
        }
        Some(UpstreamUrl {
            scheme,
            host,
            port,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    fn match_hosts(
        &mut self,
        name: &str,
        u: &RawUpstream,
        url: Option<&UpstreamUrl>,
    ) -> Vec<HostPattern> {
        let Some(list) = &u.match_hosts else {
            return match url {
                Some(url) => vec![HostPattern {
                    host: url.host.clone(),
                    wildcard: false,
                    port: (url.port != url.scheme.default_port()).then_some(url.port),
                }],
                None if u.url.is_none() => {
                    self.problem(&["upstreams", name], "needs url, match, or both");
                    Vec::new()
                }
                None => Vec::new(),
            };
        };
        let path = ["upstreams", name, "match"];
        list.iter()
            .filter_map(|raw| {
                let raw = self.expand(&path, raw);
                HostPattern::parse(&raw)
                    .map_err(|e| self.problem(&path, e.to_string()))
                    .ok()
            })
            .collect()
    }

    fn scopes(&mut self, name: &str, scopes: &[String]) -> Vec<String> {
        let path = ["upstreams", name, "scopes"];
        scopes
            .iter()
            .map(|s| {
                let s = self.expand(&path, s);
                // RFC 6749 §3.3: scope tokens are %x21 / %x23-5B / %x5D-7E.
                let ok = |c: char| c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c);
                if s.is_empty() || !s.chars().all(ok) {
                    self.problem(&path, format!("scope {s:?} is not a valid scope token (no spaces, quotes or backslashes)"));
                }
                s
            })
            .collect()
    }

    /// An upstream `url` that is one of tokenproxy's own listeners would send every request
    /// round and round until connections run out.
    fn check_loops(&mut self, c: &Config) {
        let listens: Vec<SocketAddr> = c
            .proxy
            .listen
            .into_iter()
            .chain(c.admin.listen)
            .chain(c.upstreams.iter().filter_map(|u| u.listen))
            .filter(|a| a.port() != 0)
            .collect();
        for u in &c.upstreams {
            let Some(url) = &u.url else { continue };
            let ip = match url.host.as_str() {
                "localhost" => Some(std::net::IpAddr::from([127, 0, 0, 1])),
                h => h.trim_start_matches('[').trim_end_matches(']').parse().ok(),
            };
            let Some(ip) = ip else { continue };
            let hits = |l: &&SocketAddr| {
                l.port() == url.port
                    && (l.ip() == ip
                        || l.ip().is_unspecified()
                        || (ip.is_loopback() && l.ip().is_loopback()))
            };
            if let Some(l) = listens.iter().find(hits) {
                let msg = format!("points at tokenproxy's own listener {l}: requests would loop");
                self.problem(&["upstreams", &u.name, "url"], msg);
            }
        }
    }

    fn check_listeners(&mut self, c: &Config) {
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        let mut all: Vec<(Vec<String>, SocketAddr)> = Vec::new();
        all.extend(
            c.proxy
                .listen
                .map(|a| (vec!["proxy".into(), "listen".into()], a)),
        );
        all.extend(
            c.admin
                .listen
                .map(|a| (vec!["admin".into(), "listen".into()], a)),
        );
        for u in &c.upstreams {
            all.extend(
                u.listen
                    .map(|a| (vec!["upstreams".into(), u.name.clone(), "listen".into()], a)),
            );
        }
        for (path, addr) in all {
            if addr.port() == 0 {
                continue; // an ephemeral port never collides
            }
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match seen.get(&addr) {
                Some(other) => {
                    let msg = format!("{addr} is already used by {other}");
                    self.problem(&path, msg);
                }
                None => {
                    seen.insert(addr, path.join("."));
                }
            }
        }
    }

    fn check_patterns(&mut self, c: &Config) {
        let mut claimed: HashMap<(String, bool, u16), String> = HashMap::new();
        for u in &c.upstreams {
            for p in &u.match_hosts {
                let ports = p.port.map_or(vec![80, 443], |port| vec![port]);
                for port in ports {
                    let key = (p.host.clone(), p.wildcard, port);
                    match claimed.get(&key) {
                        Some(other) if other != &u.name => {
                            let key = if u.match_hosts.is_empty() {
                                "url"
                            } else {
                                "match"
                            };
                            let msg =
                                format!("{p} (port {port}) is already claimed by upstream {other}");
                            self.problem(&["upstreams", &u.name, key], msg);
                        }
                        _ => {
                            claimed.insert(key, u.name.clone());
                        }
                    }
                }
            }
        }
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

    fn duration(&mut self, path: &[&str], value: &Option<String>, default_secs: u64) -> Duration {
        let Some(text) = value else {
            return Duration::from_secs(default_secs);
        };
        let text = self.expand(path, text);
        humantime::parse_duration(&text).unwrap_or_else(|e| {
            self.problem(
                path,
                format!("{text:?} is not a duration like 30s or 5m ({e})"),
            );
            Duration::from_secs(default_secs)
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
